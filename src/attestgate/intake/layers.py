"""Stream one layer blob: decompress, walk its tar, bound it, and collect its changes.

One pass over the blob does everything: the compressed bytes are hashed for
the layer digest, the decompressed bytes for the ``diff_id``, and every
regular member streams to a :class:`MemberHandler` for scanning. The walk is
bounded in members, in expanded bytes, in compression ratio and in time, and
Python's tarfile is kept from buffering oversized long-name and pax headers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from attestgate.findings import Finding, Severity
from attestgate.intake.identity import Readable, display_path, image_finding
from attestgate.intake.oci import Layer
from attestgate.intake.rootfs import (
    DIRECTORY,
    FILE,
    HARDLINK,
    OPAQUE_MARKER,
    RESERVED_PREFIX,
    SPECIAL,
    SYMLINK,
    WHITEOUT_PREFIX,
    FsEntry,
    LayerChanges,
    link_escapes,
    normalize_member_name,
)
from attestgate.scanners.interface import Limits, MiB

logger = logging.getLogger(__name__)

CHUNK = MiB
# GNU long names and pax headers larger than this are rejected; real ones are
# a few hundred bytes.
MAX_EXTENSION_BYTES = MiB
# The compression ratio bound applies once a layer has expanded this far, so
# that small, highly compressible layers (empty files, text) pass.
RATIO_FLOOR_BYTES = 64 * MiB
# Every member of every layer counts towards this bound on one image.
MAX_IMAGE_MEMBERS = 1_000_000
_EXTENSION_TYPES = frozenset(
    {
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
    }
)


class LayerLimitError(Exception):
    """A bound was reached while reading a layer; the message names it."""


class ExtensionHeaderTooLarge(tarfile.TarError):
    """A long-name or pax header is larger than the gate buffers."""


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized extension headers before tarfile reads them whole.

    NOTE: this overrides ``TarInfo._proc_member``, a private method whose
    behaviour is unchanged from Python 3.8 to 3.13; check it when the
    supported Python versions change.
    """

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _EXTENSION_TYPES and self.size > MAX_EXTENSION_BYTES:
            raise ExtensionHeaderTooLarge(
                f"an extension header of {self.size} bytes is larger than {MAX_EXTENSION_BYTES}"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class HashingReader:
    """Reads from ``inner``, hashing and counting what passes, with an optional check per read."""

    def __init__(self, inner: IO[bytes] | HashingReader | Any, algorithm: str = "sha256") -> None:
        self.inner = inner
        self.hasher = hashlib.new(algorithm)
        self.count = 0
        self.check: Any = None
        self.progress: Any = None

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self.inner.read(CHUNK if size is None or size < 0 else size)
        self.hasher.update(data)
        self.count += len(data)
        if self.check is not None:
            self.check(self.count)
        if self.progress is not None and data:
            self.progress(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, /) -> int:
        # gzip seeks only to rewind, which a hashing pass must never do.
        raise io.UnsupportedOperation("a layer stream is read once, front to back")


@dataclass
class ImageBudget:
    """Bounds shared by all layers of one image."""

    limits: Limits
    deadline: float = 0.0
    members: int = 0
    expanded: int = 0

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.limits.file_time_budget

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


@dataclass
class LayerReport:
    """The result of walking one layer: its changes, findings, counts and digests."""

    layer: Layer
    changes: LayerChanges = field(default_factory=LayerChanges)
    findings: list[Finding] = field(default_factory=list)
    members: int = 0
    files: int = 0
    expanded: int = 0
    compressed: int = 0
    compression: str = "none"
    digest: str = ""
    diff_digest: str = ""
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "digest": self.layer.descriptor.digest or self.digest,
            "media_type": self.layer.descriptor.media_type,
            "size": self.compressed,
            "compression": self.compression,
            "members": self.members,
            "files": self.files,
            "expanded_bytes": self.expanded,
            "whiteouts": len(self.changes.whiteouts),
            "opaque_directories": len(self.changes.opaque),
            "complete": self.complete,
        }
        if self.layer.diff_id:
            out["diff_id"] = self.layer.diff_id
        if self.layer.member:
            out["archive_member"] = self.layer.member
        return out


class MemberHandler(Protocol):
    """Receives each regular member's bytes while the layer streams past."""

    def regular(
        self, layer: Layer, path: str, location: str, size: int, stream: Readable
    ) -> bytes | None:
        """Read ``stream`` to its end; return the SHA-256 of its bytes if computed."""


def _compression(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def _decompressor(kind: str, raw: HashingReader) -> Any:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "zstd":
        module = _zstd_module()
        if module is None:
            raise LayerLimitError(
                "the layer is zstd-compressed and no zstd decompressor is installed "
                "(backports.zstd on Python before 3.14)"
            )
        return module.ZstdFile(raw, "rb")
    return raw


def _zstd_module() -> Any:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return __import__(name, fromlist=["ZstdFile"])
        except ImportError:
            continue
    return None


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        tarfile.TarError,
        EOFError,
        OSError,
        zlib.error,
        ValueError,
        UnicodeError,
    ]
    module = _zstd_module()
    if module is not None:
        errors.append(module.ZstdError)
    return tuple(errors)


class LayerWalker:
    """Walks one layer at a time, sharing an :class:`ImageBudget` across the image's layers."""

    def __init__(self, handler: MemberHandler, budget: ImageBudget, progress: Any = None) -> None:
        self.handler = handler
        self.budget = budget
        self.progress = progress

    def walk(self, layer: Layer, blob: IO[bytes]) -> LayerReport:
        """Read ``blob`` (a seekable stream of the layer) to its end and report on it."""
        report = LayerReport(layer)
        algorithm = (layer.descriptor.digest or "sha256:").partition(":")[0] or "sha256"
        head = blob.read(8)
        blob.seek(0)
        report.compression = _compression(head)
        raw = HashingReader(blob, algorithm)
        raw.progress = self.progress
        expanded = HashingReader(None)
        limits = self.budget.limits
        started_expanded = self.budget.expanded

        def check(count: int) -> None:
            self.budget.expanded = started_expanded + count
            if self.budget.expanded > limits.max_expanded_bytes:
                raise LayerLimitError(
                    f"the image expands to more than {limits.max_expanded_bytes} bytes"
                )
            ratio_bound = limits.max_compression_ratio * max(raw.count, 1)
            if count > RATIO_FLOOR_BYTES and report.compression != "none" and count > ratio_bound:
                raise LayerLimitError(
                    f"the layer expands more than {limits.max_compression_ratio} times "
                    "its compressed size"
                )

        expanded.check = check
        try:
            expanded.inner = _decompressor(report.compression, raw)
            leftover = self._walk_tar(layer, expanded, report)
            self._drain(layer, expanded, leftover, report)
        except LayerLimitError as exc:
            report.complete = False
            report.findings.append(_limit_finding(layer, str(exc)))
        except _read_errors() as exc:
            report.complete = False
            report.findings.append(_malformed_layer(layer, exc))
        _finish_raw(raw)
        report.compressed = raw.count
        report.digest = f"{algorithm}:{raw.hasher.hexdigest()}"
        report.expanded = expanded.count
        report.diff_digest = f"sha256:{expanded.hasher.hexdigest()}" if report.complete else ""
        report.findings.extend(digest_findings(layer, report))
        return report

    def _walk_tar(self, layer: Layer, stream: HashingReader, report: LayerReport) -> bytes:
        """Walk the members; return the bytes tarfile read past the end but did not use."""
        limits = self.budget.limits
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo) as tar:  # type: ignore[call-overload]
            while True:
                if self.budget.expired():
                    raise LayerLimitError(
                        f"the image took longer than {limits.file_time_budget:.0f} s to read"
                    )
                member = tar.next()
                if member is None:
                    # tarfile reads ahead in blocks of bufsize; what it buffered after
                    # the end marker is in its private stream buffer.
                    return bytes(getattr(tar.fileobj, "buf", b""))
                forget_members(tar)
                report.members += 1
                self.budget.members += 1
                if report.members > limits.max_archive_members:
                    raise LayerLimitError(
                        f"the layer has more than {limits.max_archive_members} members"
                    )
                if self.budget.members > MAX_IMAGE_MEMBERS:
                    raise LayerLimitError(f"the image has more than {MAX_IMAGE_MEMBERS} members")
                self._member(layer, tar, member, report)

    def _member(
        self, layer: Layer, tar: tarfile.TarFile, member: tarfile.TarInfo, report: LayerReport
    ) -> None:
        path, escaped = normalize_member_name(member.name)
        location = f"{layer.short}:{display_path(member.name if escaped else path)}"
        if escaped:
            report.findings.append(_traversal(layer, location, member.name, "name"))
        directory, _, base = path.rpartition("/")
        if not escaped and base.startswith(WHITEOUT_PREFIX):
            self._whiteout(layer, directory or "/", base, location, report)
            return
        if member.isreg():
            report.files += 1
            stream = tar.extractfile(member)
            digest = None
            if stream is not None:
                digest = self.handler.regular(layer, path, location, member.size, stream)
            if not escaped:
                report.changes.entries.append(
                    (path, FsEntry(layer.index, FILE, digest, member.size))
                )
            return
        if escaped:
            return
        if member.isdir():
            report.changes.entries.append((path, FsEntry(layer.index, DIRECTORY)))
        elif member.issym():
            if link_escapes(path, member.linkname):
                report.findings.append(_traversal(layer, location, member.linkname, "link"))
            report.changes.entries.append(
                (path, FsEntry(layer.index, SYMLINK, link=member.linkname))
            )
        elif member.islnk():
            target, target_escaped = normalize_member_name(member.linkname)
            if target_escaped:
                report.findings.append(_traversal(layer, location, member.linkname, "link"))
                return
            report.changes.entries.append((path, FsEntry(layer.index, HARDLINK, link=target)))
        else:
            report.changes.entries.append((path, FsEntry(layer.index, SPECIAL)))

    def _whiteout(
        self, layer: Layer, directory: str, base: str, location: str, report: LayerReport
    ) -> None:
        if base == OPAQUE_MARKER:
            report.changes.opaque.append(directory)
            return
        if base.startswith(RESERVED_PREFIX):
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            report.findings.append(
                image_finding(
                    "image.malformed-whiteout",
                    Severity.MEDIUM,
                    location,
                    f"layer {layer.short} has the whiteout {display_path(base)}, which names "
                    "no file; runtimes may disagree on what it deletes",
                    "Rebuild the image with a standard builder.",
                    layer=layer.descriptor.digest,
                )
            )
            return
        report.changes.whiteouts.append(f"{directory.rstrip('/')}/{name}")

    def _drain(
        self, layer: Layer, stream: HashingReader, leftover: bytes, report: LayerReport
    ) -> None:
        """Read what follows the end-of-archive marker, so the diff_id covers the whole tar."""
        trailing = len(leftover.strip(b"\0"))
        while chunk := stream.read(CHUNK):
            trailing += len(chunk.strip(b"\0"))
        if trailing:
            report.findings.append(
                image_finding(
                    "image.trailing-data",
                    Severity.HIGH,
                    f"{layer.short}:",
                    f"layer {layer.short} has {trailing} non-zero bytes after the tar's end "
                    "marker or after a header Python's tarfile could not read; other tar "
                    "readers may unpack files from them that the gate did not see",
                    "Rebuild the image with a standard builder; do not run an image whose layers "
                    "different tar readers unpack differently.",
                    layer=layer.descriptor.digest,
                )
            )


def forget_members(tar: tarfile.TarFile) -> None:
    """Drop the TarInfo list that tarfile keeps, so memory stays flat over many members.

    Only the current member is used, and extractfile of a regular member does
    not consult the list.
    """
    members = getattr(tar, "members", None)
    if isinstance(members, list):
        members.clear()


def _finish_raw(raw: HashingReader) -> None:
    """Hash the rest of the blob: a decompressor or a stopped walk may leave bytes unread."""
    while raw.read(CHUNK):
        pass


def _traversal(layer: Layer, location: str, value: str, what: str) -> Finding:
    shown = display_path(value)
    subject = "its name" if what == "name" else f"its link target {shown}"
    return image_finding(
        "image.path-traversal",
        Severity.HIGH,
        location,
        f"a member of layer {layer.short} climbs out of the image root through {subject}",
        "Do not unpack this layer with a tool that lacks a root boundary. Rebuild the "
        "image with a standard builder; layers with such members are made to overwrite "
        "files outside the container's filesystem.",
        layer=layer.descriptor.digest,
        member=shown,
    )


def _limit_finding(layer: Layer, problem: str) -> Finding:
    return image_finding(
        "image.limit-exceeded",
        Severity.MEDIUM,
        f"{layer.short}:",
        f"reading layer {layer.short} stopped early: {problem}; the rest of the image was "
        "not scanned",
        "Have a reviewer inspect the image. If it is legitimately this large, raise the "
        "limits for this admission; an unusual expansion ratio is also how decompression "
        "bombs look.",
        layer=layer.descriptor.digest,
    )


def _malformed_layer(layer: Layer, exc: BaseException) -> Finding:
    return image_finding(
        "image.malformed-layer",
        Severity.HIGH,
        f"{layer.short}:",
        f"layer {layer.short} could not be read to its end ({type(exc).__name__}: {exc}); "
        "members after that point were not scanned",
        "Export or pull the image again; if the layer stays unreadable, rebuild the image. "
        "A runtime may unpack files from a malformed layer that the gate never saw.",
        layer=layer.descriptor.digest,
    )


def digest_findings(layer: Layer, report: LayerReport) -> list[Finding]:
    findings: list[Finding] = []
    expected = layer.descriptor.digest
    if expected and report.digest != expected:
        findings.append(_mismatch(layer, "blob digest", expected, report.digest))
    if layer.diff_id and report.diff_digest and report.diff_digest != layer.diff_id:
        findings.append(_mismatch(layer, "diff_id", layer.diff_id, report.diff_digest))
    return findings


def _mismatch(layer: Layer, what: str, expected: str, actual: str) -> Finding:
    return image_finding(
        "image.digest-mismatch",
        Severity.HIGH,
        f"{layer.short}:",
        f"layer {layer.short} does not match its {what}: expected {expected}, got {actual}; "
        "the bytes scanned are not the bytes the image names",
        "Export or pull the image again from its source; a layer that does not match its "
        "digest was altered or corrupted after the image was built.",
        layer=layer.descriptor.digest,
        expected=expected,
        actual=actual,
    )
