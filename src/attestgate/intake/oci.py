"""Read OCI image layouts and ``docker save`` archives: index, manifests, configs, blobs.

Resolving an image source takes these steps:

1. Read the top-level list: ``index.json`` of an OCI layout (also inside a
   Docker 25+ archive) or ``manifest.json`` of a legacy ``docker save`` archive.
2. Name the artifact. One entry in ``index.json`` names it by that
   manifest's digest (``oci-manifest-sha256``); several entries by the digest
   of ``index.json`` itself. A legacy archive with one image is named by its
   config digest, the image ID (``docker-image-id``); with several, by the
   digest of ``manifest.json``.
3. Read every manifest, nested index and config the list reaches, bounded in
   size, count and depth, and check each blob's bytes against its digest.
   Attestation manifests that ``docker buildx`` attaches are listed, not
   walked.

Only a failure in step 1 or 2 raises, because then there is nothing to name.
Everything after that becomes a finding, so the decision still records which
image failed and why.
"""

from __future__ import annotations

import abc
import gzip
import hashlib
import json
import os
import re
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from attestgate.findings import Finding, Severity
from attestgate.intake.identity import (
    DOCKER_ARCHIVE_MANIFEST,
    DOCKER_IMAGE_ID,
    OCI_LAYOUT_INDEX,
    OCI_MANIFEST,
    Readable,
    display_path,
    image_finding,
    short_digest,
)
from attestgate.intake.rootfs import normalize_member_name
from attestgate.scanners.interface import Limits, MiB

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST_TYPE, DOCKER_MANIFEST})
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
TITLE_ANNOTATION = "org.opencontainers.image.title"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type"

# The distribution registry rejects manifests over 4 MiB; so does the gate.
MAX_MANIFEST_BYTES = 4 * MiB
MAX_IMAGES = 64
MAX_INDEX_DEPTH = 4
MAX_LAYERS = 512
DIGEST = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")

# The OCI digest algorithm names and their hashlib names.
_ALGORITHMS = {"sha256": "sha256", "sha512": "sha512"}


class ImageFormatError(Exception):
    """The image source is malformed at a point that stops reading it."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: a manifest's or index's reference to one blob."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: str = ""
    artifact_type: str = ""

    @classmethod
    def from_json(cls, value: Any, where: str) -> Descriptor:
        if not isinstance(value, dict):
            raise ImageFormatError(f"{where} is not a JSON object")
        digest = value.get("digest")
        size = value.get("size")
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise ImageFormatError(f"{where} has an invalid digest {str(digest)[:80]!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageFormatError(f"{where} has an invalid size {str(size)[:40]!r}")
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, dict):
            annotations = {}
        return cls(
            media_type=str(value.get("mediaType", "")),
            digest=digest,
            size=size,
            annotations={str(k): str(v) for k, v in list(annotations.items())[:64]},
            platform=_platform_text(value.get("platform")),
            artifact_type=str(value.get("artifactType", "")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"media_type": self.media_type, "digest": self.digest}
        out["size"] = self.size
        if self.platform:
            out["platform"] = self.platform
        if self.artifact_type:
            out["artifact_type"] = self.artifact_type
        return out


@dataclass
class Layer:
    index: int
    descriptor: Descriptor
    # The digest of the uncompressed tar that the config's rootfs.diff_ids lists.
    diff_id: str | None = None
    # The archive member that contains the blob, for legacy docker save archives.
    member: str = ""

    @property
    def short(self) -> str:
        return short_digest(self.descriptor.digest) if self.descriptor.digest else self.member


@dataclass
class Image:
    """One image manifest with its config and layers, or an OCI artifact whose layers are files."""

    manifest: Descriptor | None
    config: Descriptor
    config_document: dict[str, Any]
    layers: list[Layer]
    platform: str
    container: bool  # False for an OCI artifact: its layers are files, not tars

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.manifest is not None:
            out["manifest"] = self.manifest.to_json()
        out["config"] = self.config.to_json()
        out["kind"] = "container-image" if self.container else "artifact"
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass
class ImageSet:
    """Everything an image source names, and the digest that names it."""

    source: str  # "oci-layout" or "docker-archive"
    digest: str  # "sha256:<hex>"
    method: str
    media_type: str
    images: list[Image] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


class BlobStore(abc.ABC):
    """The source of an image's blobs: a layout directory or an archive."""

    label: str

    @abc.abstractmethod
    def open_digest(self, digest: str) -> IO[bytes] | None:
        """Open the blob with ``digest``, or return None when the source lacks it."""

    def open_member(self, name: str) -> IO[bytes] | None:
        """Open an archive member by name (legacy docker archives only)."""
        return None

    def close(self) -> None:
        return None


class LayoutStore(BlobStore):
    """The blobs of an OCI image layout directory, ``blobs/<algorithm>/<hex>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.label = root.name

    def open_digest(self, digest: str) -> IO[bytes] | None:
        if not DIGEST.match(digest):
            return None
        algorithm, _, hex_digest = digest.partition(":")
        path = os.path.realpath(self.root / "blobs" / algorithm / hex_digest)
        # A blob that is a link out of the layout is treated as missing.
        if not path.startswith(self.real_root.rstrip(os.sep) + os.sep):
            return None
        try:
            # O_NONBLOCK keeps open() from waiting on a FIFO put in a blob's place.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")

    def read_index(self) -> bytes:
        return _read_file(self.root / "index.json", "index.json")


class ArchiveStore(BlobStore):
    """The members of a ``docker save`` tar, decompressed to a temporary file when gzipped."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.label = path.name
        self._spool: IO[bytes] | None = None
        self._tar = self._open(path, limits)
        self.members: dict[str, tarfile.TarInfo] = {}
        self.findings: list[Finding] = []
        self._list(limits)

    def _open(self, path: Path, limits: Limits) -> tarfile.TarFile:
        with path.open("rb") as fh:
            magic = fh.read(2)
        if magic != b"\x1f\x8b":
            return tarfile.open(path, "r:")
        # Reading members in manifest order needs seeks, which a gzip stream
        # can only do by decompressing again from the start, so decompress once.
        self._spool = tempfile.TemporaryFile(prefix="attestgate-image-")  # noqa: SIM115 - close() closes it
        compressed = path.stat().st_size
        try:
            with gzip.open(path, "rb") as source:
                _copy_bounded(source, self._spool, limits, compressed)
        except (OSError, EOFError, zlib.error) as exc:
            self.close()
            raise ImageFormatError(f"the archive is not valid gzip: {exc}") from exc
        self._spool.seek(0)
        return tarfile.open(fileobj=self._spool, mode="r:")

    def _list(self, limits: Limits) -> None:
        while True:
            member = self._tar.next()
            if member is None:
                break
            if len(self.members) >= limits.max_archive_members:
                raise ImageFormatError(
                    f"the archive has more than {limits.max_archive_members} members"
                )
            name, escaped = normalize_member_name(member.name)
            if escaped:
                self.findings.append(_traversal_in_archive(self.label, member.name))
                continue
            self.members[name.lstrip("/")] = member

    def open_digest(self, digest: str) -> IO[bytes] | None:
        if not DIGEST.match(digest):
            return None
        algorithm, _, hex_digest = digest.partition(":")
        return self.open_member(f"blobs/{algorithm}/{hex_digest}")

    def open_member(self, name: str) -> IO[bytes] | None:
        member = self.members.get(name.removeprefix("./").lstrip("/"))
        if member is None or not member.isfile():
            return None
        return self._tar.extractfile(member)

    def read_member(self, name: str, limit: int) -> bytes | None:
        stream = self.open_member(name)
        if stream is None:
            return None
        with stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise ImageFormatError(f"{name} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        self._tar.close()
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _copy_bounded(source: Readable, target: IO[bytes], limits: Limits, compressed: int) -> None:
    total = 0
    while chunk := source.read(MiB):
        total += len(chunk)
        if total > limits.max_expanded_bytes:
            raise ImageFormatError(
                f"the archive expands to more than {limits.max_expanded_bytes} bytes"
            )
        if total > 64 * MiB and total > limits.max_compression_ratio * max(compressed, 1):
            raise ImageFormatError(
                f"the archive expands more than {limits.max_compression_ratio} times its size"
            )
        target.write(chunk)


def _read_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ImageFormatError(f"{what} could not be read: {exc.strerror or exc}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise ImageFormatError(f"{what} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def _platform_text(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    parts = [str(value.get(k, "")) for k in ("os", "architecture", "variant")]
    return "/".join(p for p in parts if p)


def _traversal_in_archive(label: str, name: str) -> Finding:
    shown = display_path(name)
    return image_finding(
        "image.path-traversal",
        Severity.HIGH,
        f"{label}:{shown}",
        f"the image archive {label} has a member named {shown}, which climbs out of the "
        "folder it is unpacked into; the member was not read",
        "Rebuild the archive with `docker save` or `skopeo copy`; a hostile archive writes "
        "such members to overwrite files on the machine that unpacks it.",
        member=shown,
    )


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ImageFormatError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ImageFormatError(f"{what} is not a JSON object")
    return document


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(_ALGORITHMS[algorithm], data).hexdigest()}"


def read_blob(store: BlobStore, descriptor: Descriptor, limit: int, what: str) -> bytes:
    """Read a small blob whole and check its size and digest against ``descriptor``."""
    if descriptor.size > limit:
        raise ImageFormatError(
            f"{what} {descriptor.digest} is {descriptor.size} bytes, over the {limit}-byte bound"
        )
    stream = store.open_digest(descriptor.digest)
    if stream is None:
        raise ImageFormatError(f"{what} {descriptor.digest} is missing from {store.label}")
    with stream:
        data = stream.read(limit + 1)
    if len(data) != descriptor.size:
        raise ImageFormatError(
            f"{what} {descriptor.digest} is {len(data)} bytes, not the {descriptor.size} "
            "its descriptor states"
        )
    algorithm = descriptor.digest.partition(":")[0]
    if digest_of(data, algorithm) != descriptor.digest:
        raise ImageFormatError(f"{what} {descriptor.digest} does not match its digest")
    return data


@contextmanager
def open_source(path: Path, limits: Limits) -> Iterator[tuple[BlobStore, ImageSet]]:
    """Open an OCI layout directory or an image archive and resolve what it names."""
    store: BlobStore
    if path.is_dir():
        store = LayoutStore(path)
        try:
            images = _resolve_layout(store, store.read_index(), "oci-layout", limits)
        except Exception:
            store.close()
            raise
    else:
        archive = ArchiveStore(path, limits)
        store = archive
        try:
            images = _resolve_archive(archive, limits)
        except Exception:
            archive.close()
            raise
        images.findings[:0] = archive.findings
    try:
        yield store, images
    finally:
        store.close()


def _resolve_archive(store: ArchiveStore, limits: Limits) -> ImageSet:
    if "index.json" in store.members and "oci-layout" in store.members:
        index = store.read_member("index.json", MAX_MANIFEST_BYTES) or b""
        images = _resolve_layout(store, index, "docker-archive", limits)
        manifest = store.read_member("manifest.json", MAX_MANIFEST_BYTES)
        if manifest is not None:
            images.tags = _legacy_tags(manifest)
        return images
    data = store.read_member("manifest.json", MAX_MANIFEST_BYTES)
    if data is None:
        raise ImageFormatError("the archive has neither index.json nor manifest.json")
    return _resolve_legacy(store, data, limits)


def _resolve_layout(store: BlobStore, index_bytes: bytes, source: str, limits: Limits) -> ImageSet:
    index = parse_json(index_bytes, "index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ImageFormatError("index.json lists no manifests")
    if len(entries) > MAX_IMAGES:
        raise ImageFormatError(f"index.json lists more than {MAX_IMAGES} manifests")
    descriptors = [
        Descriptor.from_json(e, f"index.json manifests[{i}]") for i, e in enumerate(entries)
    ]
    tags = [
        d.annotations[REF_NAME_ANNOTATION]
        for d in descriptors
        if REF_NAME_ANNOTATION in d.annotations
    ]
    if len(descriptors) == 1:
        root = descriptors[0]
        images = ImageSet(source, root.digest, OCI_MANIFEST, root.media_type, tags=tags)
        _expand(store, root, images, 0, limits)
    else:
        digest = digest_of(index_bytes)
        images = ImageSet(source, digest, OCI_LAYOUT_INDEX, OCI_INDEX, tags=tags)
        for descriptor in descriptors:
            _expand(store, descriptor, images, 1, limits)
    return images


def _expand(
    store: BlobStore, descriptor: Descriptor, images: ImageSet, depth: int, limits: Limits
) -> None:
    """Add the images of the manifest or index that ``descriptor`` names; problems are findings."""
    if descriptor.annotations.get(DOCKER_REFERENCE_TYPE) == "attestation-manifest":
        images.skipped.append({**descriptor.to_json(), "reason": "attestation manifest"})
        return
    if len(images.images) >= MAX_IMAGES:
        images.findings.append(
            _malformed(store, descriptor, f"more than {MAX_IMAGES} images; the rest were not read")
        )
        return
    try:
        data = read_blob(store, descriptor, MAX_MANIFEST_BYTES, "manifest")
        document = parse_json(data, f"manifest {descriptor.digest}")
    except ImageFormatError as exc:
        images.findings.append(_malformed(store, descriptor, str(exc)))
        return
    media_type = str(document.get("mediaType") or descriptor.media_type)
    if media_type in INDEX_TYPES or (not media_type and "manifests" in document):
        if depth >= MAX_INDEX_DEPTH:
            images.findings.append(
                _malformed(
                    store, descriptor, f"indexes are nested more than {MAX_INDEX_DEPTH} deep"
                )
            )
            return
        children = document.get("manifests")
        if not isinstance(children, list):
            images.findings.append(_malformed(store, descriptor, "the index has no manifests list"))
            return
        for position, child in enumerate(children[: MAX_IMAGES + 1]):
            try:
                child_descriptor = Descriptor.from_json(child, f"manifests[{position}]")
            except ImageFormatError as exc:
                images.findings.append(_malformed(store, descriptor, str(exc)))
                continue
            _expand(store, child_descriptor, images, depth + 1, limits)
        return
    if media_type in MANIFEST_TYPES or (not media_type and "layers" in document):
        try:
            images.images.append(_image(store, descriptor, document, limits))
        except ImageFormatError as exc:
            images.findings.append(_malformed(store, descriptor, str(exc)))
        return
    images.skipped.append(
        {**descriptor.to_json(), "reason": f"media type {media_type or 'unknown'}"}
    )


def _image(
    store: BlobStore, descriptor: Descriptor, document: dict[str, Any], limits: Limits
) -> Image:
    config = Descriptor.from_json(document.get("config"), f"manifest {descriptor.digest} config")
    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list):
        raise ImageFormatError(f"manifest {descriptor.digest} has no layers list")
    if len(raw_layers) > MAX_LAYERS:
        raise ImageFormatError(f"manifest {descriptor.digest} lists more than {MAX_LAYERS} layers")
    layers = [
        Layer(i, Descriptor.from_json(item, f"manifest {descriptor.digest} layers[{i}]"))
        for i, item in enumerate(raw_layers)
    ]
    container = config.media_type in IMAGE_CONFIG_TYPES
    config_document: dict[str, Any] = {}
    if container:
        data = read_blob(store, config, limits.max_json_bytes, "config")
        config_document = parse_json(data, f"config {config.digest}")
        _attach_diff_ids(layers, config_document)
    platform = descriptor.platform or _platform_text(config_document)
    return Image(descriptor, config, config_document, layers, platform, container)


def _attach_diff_ids(layers: list[Layer], config: dict[str, Any]) -> None:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        return
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        if isinstance(diff_id, str) and DIGEST.match(diff_id):
            layer.diff_id = diff_id


def _resolve_legacy(store: ArchiveStore, data: bytes, limits: Limits) -> ImageSet:
    try:
        entries = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ImageFormatError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries or len(entries) > MAX_IMAGES:
        raise ImageFormatError("manifest.json must list between 1 and 64 images")
    configs = [e.get("Config") if isinstance(e, dict) else None for e in entries]
    if not all(isinstance(c, str) for c in configs):
        raise ImageFormatError("an entry of manifest.json names no Config file")
    config_bytes = [store.read_member(str(c), limits.max_json_bytes) for c in configs]
    if any(b is None for b in config_bytes):
        raise ImageFormatError("a Config file that manifest.json names is missing")
    if len(entries) == 1:
        digest, method = digest_of(config_bytes[0] or b""), DOCKER_IMAGE_ID
    else:
        digest, method = digest_of(data), DOCKER_ARCHIVE_MANIFEST
    images = ImageSet("docker-archive", digest, method, "", tags=_legacy_tags(data))
    for entry, name, raw in zip(entries, configs, config_bytes, strict=True):
        try:
            images.images.append(_legacy_image(entry, str(name), raw or b""))
        except ImageFormatError as exc:
            images.findings.append(
                image_finding(
                    "image.malformed",
                    Severity.HIGH,
                    f"{store.label}:{display_path(str(name))}",
                    f"an image in {store.label} could not be read: {exc}",
                    "Save the image again with `docker save` and admit the new archive.",
                )
            )
    return images


def _legacy_image(entry: dict[str, Any], name: str, raw: bytes) -> Image:
    config_digest = digest_of(raw)
    expected = name.removeprefix("blobs/sha256/").removesuffix(".json")
    if re.fullmatch(r"[0-9a-f]{64}", expected) and f"sha256:{expected}" != config_digest:
        raise ImageFormatError(f"config {name} does not match the digest in its name")
    config_document = parse_json(raw, f"config {name}")
    names = entry.get("Layers")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ImageFormatError(f"the entry for {name} has no Layers list")
    if len(names) > MAX_LAYERS:
        raise ImageFormatError(f"the entry for {name} lists more than {MAX_LAYERS} layers")
    layers = [
        Layer(i, Descriptor(DOCKER_LAYER_TAR, "", 0), member=str(layer_name))
        for i, layer_name in enumerate(names)
    ]
    _attach_diff_ids(layers, config_document)
    for layer in layers:
        # A legacy layer blob is the uncompressed tar, so its digest is the diff_id.
        if layer.diff_id:
            layer.descriptor = Descriptor(DOCKER_LAYER_TAR, layer.diff_id, 0)
    config = Descriptor("application/vnd.docker.container.image.v1+json", config_digest, len(raw))
    return Image(None, config, config_document, layers, _platform_text(config_document), True)


def _legacy_tags(data: bytes) -> list[str]:
    try:
        entries = json.loads(data)
    except (ValueError, RecursionError):
        return []
    tags: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        repo_tags = entry.get("RepoTags") if isinstance(entry, dict) else None
        if isinstance(repo_tags, list):
            tags.extend(str(t) for t in repo_tags[:16])
    return tags[:64]


def _malformed(store: BlobStore, descriptor: Descriptor, problem: str) -> Finding:
    where = f"{store.label}:{short_digest(descriptor.digest)}"
    return image_finding(
        "image.malformed",
        Severity.HIGH,
        where,
        f"manifest {descriptor.digest} in {store.label} could not be read in full: {problem}; "
        "what it describes was not scanned",
        "Export or pull the image again so that every manifest, config and layer is present "
        "and matches its digest, then admit it again.",
        digest=descriptor.digest,
    )
