"""Scan a container image: every layer's files, the config and history, installed packages.

``inspect_image`` takes these steps:

1. Resolve the layout or archive into images, manifests, configs and layers
   (:mod:`attestgate.intake.oci`); the digest that names the artifact is fixed here.
2. Search the config and the build history of each image for secrets.
3. Walk each image's layers in order (:mod:`attestgate.intake.layers`). Every
   regular file of every layer is read, including files a later layer
   deletes, because those bytes are still in the image. Model files,
   dependency lists and Hugging Face configs go to the format scanners, files
   up to 2 MiB are searched for secrets, and RECORD files are kept.
4. Apply each layer's whiteouts and entries to the root filesystem model, and
   mark findings in files that a later layer deleted or replaced.
5. Check installed Python distributions against their RECORD files.

Members are located as ``sha256:ab12cd34:/app/model.pkl``: the short digest
of the layer, then the path in the image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import SNIFF_BYTES, Format, sniff
from attestgate.identify.stream import FileReport
from attestgate.intake.config import config_findings
from attestgate.intake.dists import RecordCollector, check_installed, needs_digest
from attestgate.intake.identity import (
    IntakeError,
    IntakeIdentity,
    Readable,
    display_path,
    image_finding,
)
from attestgate.intake.layers import (
    CHUNK,
    HashingReader,
    ImageBudget,
    LayerReport,
    LayerWalker,
    digest_findings,
)
from attestgate.intake.oci import Image, ImageFormatError, ImageSet, Layer, open_source
from attestgate.intake.rootfs import DELETED, FsEntry, RootFilesystem
from attestgate.intake.secrets import (
    MAX_SECRET_FILE_BYTES,
    find_secrets,
    is_library_fixture,
    secret_finding,
)
from attestgate.scanners import base_name, open_probed_scanner
from attestgate.scanners.interface import Limits, ScanContext, ScanResult

logger = logging.getLogger(__name__)

# Formats that are model or dataset files whatever their name.
_MODEL_FORMATS = frozenset(
    {
        Format.PICKLE,
        Format.SAFETENSORS,
        Format.GGUF,
        Format.NUMPY,
        Format.HDF5,
        Format.PARQUET,
        Format.ARROW,
    }
)
# Formats whose magic bytes are short or shared with other files, scanned only
# under a model, archive or wheel file name.
_NAMED_FORMATS = frozenset(
    {
        Format.MAYBE_PICKLE,
        Format.ZIP,
        Format.ONNX,
        Format.TF_SAVEDMODEL,
        Format.TAR,
        Format.GZIP,
        Format.BZIP2,
        Format.XZ,
        Format.ZSTD,
        Format.SEVENZIP,
    }
)
_MODEL_SUFFIXES = (
    ".pkl",
    ".pickle",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".joblib",
    ".dill",
    ".sav",
    ".npy",
    ".npz",
    ".keras",
    ".h5",
    ".hdf5",
    ".onnx",
    ".pb",
    ".safetensors",
    ".gguf",
    ".msgpack",
    ".tflite",
    ".mar",
    ".nemo",
    ".zip",
    ".whl",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.xz",
    ".tar.zst",
    ".7z",
)
# JSON files that Hugging Face loaders act on (auto_map, chat templates).
_HF_CONFIG_NAMES = frozenset(
    {
        "config.json",
        "tokenizer_config.json",
        "chat_template.json",
        "processor_config.json",
        "preprocessor_config.json",
        "generation_config.json",
    }
)
# Dependency lists that the name registry routes to the dependency scanners.
_DEPENDENCY_NAMES = (
    "requirements",
    "constraints",
    "pylock",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "environment.yml",
    "environment.yaml",
)


@dataclass
class ImageInspection:
    """The identify-and-scan result for an image, shaped like the pipeline's Inspection."""

    artifact: IntakeIdentity
    findings: list[Finding]
    timings: dict[str, float]


def wants_format_scan(path: str, fmt: Format) -> bool:
    """Tell whether a layer file goes to the format scanners (model, package or config file)."""
    name = base_name(path)
    library = is_library_path(path)
    if fmt in _MODEL_FORMATS:
        return True
    if fmt in _NAMED_FORMATS:
        return name.lower().endswith(_MODEL_SUFFIXES) and not path.startswith("/usr/share/")
    if fmt is Format.JSON and name in _HF_CONFIG_NAMES:
        return not library
    return name.startswith(_DEPENDENCY_NAMES) and not library


def is_library_path(path: str) -> bool:
    """Tell whether ``path`` belongs to an installed library or the OS, not the application."""
    return (
        "/site-packages/" in path
        or "/dist-packages/" in path
        or "/node_modules/" in path
        or path.startswith(("/usr/lib/", "/usr/share/", "/usr/local/lib/python", "/lib/"))
    )


class _MemberScanner:
    """Reads each regular layer member once: hash, format scan, secret search, RECORD capture."""

    def __init__(
        self, limits: Limits, fs: RootFilesystem, progress: Callable[[int], None] | None
    ) -> None:
        self.limits = limits
        self.fs = fs
        self.progress = progress
        self.records = RecordCollector()
        self.reports: list[FileReport] = []
        self.findings: list[Finding] = []
        # (layer index, path) -> positions in self.findings, to mark deleted files later.
        self.located: dict[tuple[int, str], list[int]] = {}
        self.scan_seconds = 0.0
        self.secret_files = 0

    def regular(
        self, layer: Layer, path: str, location: str, size: int, stream: Readable
    ) -> bytes | None:
        first = stream.read(CHUNK)
        fmt = sniff(first[:SNIFF_BYTES], size, path)
        scan = wants_format_scan(path, fmt)
        search = size <= MAX_SECRET_FILE_BYTES
        keep_record = self.records.wants(path, size)
        hasher = hashlib.sha256() if scan or needs_digest(path) else None
        buffer = bytearray() if search or keep_record else None
        found: list[Finding] = []
        with contextlib.ExitStack() as stack:
            spool = None
            if scan:
                spool = stack.enter_context(tempfile.TemporaryFile(prefix="attestgate-member-"))
            total = self._read(first, stream, hasher, buffer, spool)
            if spool is not None and hasher is not None:
                found += self._format_scan(layer, location, fmt, total, hasher, spool)
        if buffer is not None:
            if search:
                self.secret_files += 1
                found += [
                    secret_finding(m, location, path, layer=layer.descriptor.digest)
                    for m in find_secrets(bytes(buffer), path)
                ]
            if keep_record:
                self.records.keep(path, layer.index, location, bytes(buffer))
        self._add(layer.index, path, found)
        return hasher.digest() if hasher is not None else None

    def _read(
        self,
        chunk: bytes,
        stream: Readable,
        hasher: Any,
        buffer: bytearray | None,
        spool: IO[bytes] | None,
    ) -> int:
        total = 0
        while chunk:
            total += len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            if buffer is not None and len(buffer) <= MAX_SECRET_FILE_BYTES:
                buffer += chunk
            if spool is not None:
                spool.write(chunk)
            chunk = stream.read(CHUNK)
        return total

    def _format_scan(
        self, layer: Layer, location: str, fmt: Format, size: int, hasher: Any, spool: IO[bytes]
    ) -> list[Finding]:
        # The member is spooled to a temporary file because several scanners
        # reread parts of a file (zip central directories, dataset footers).
        started = time.perf_counter()
        ctx = ScanContext(file=location, size=size, limits=self.limits)
        spool.seek(0)
        scanner = open_probed_scanner(fmt, ctx, spool.read(SNIFF_BYTES))
        result = ScanResult()
        if scanner is not None:
            spool.seek(0)
            while chunk := spool.read(CHUNK):
                scanner.feed(memoryview(chunk))
            fd = spool.fileno()

            def read_at(offset: int, length: int) -> bytes:
                if offset < 0 or length < 0 or offset > size:
                    raise ValueError(f"read of {length} bytes at {offset} is outside the member")
                return os.pread(fd, min(length, size - offset), offset)

            result = scanner.close(read_at)
        seconds = time.perf_counter() - started
        self.scan_seconds += seconds
        findings = list(result.findings)
        if ctx.expired():
            findings.append(
                image_finding(
                    "scan.timeout",
                    Severity.MEDIUM,
                    location,
                    f"scanning {location} took longer than "
                    f"{self.limits.file_time_budget:.0f} s; the result is incomplete",
                    "Have a reviewer inspect the file, or raise the time budget.",
                )
            )
        self.reports.append(
            FileReport(
                path=location,
                size=size,
                sha256=hasher.hexdigest(),
                format=result.format or fmt,
                findings=findings,
                facts={**result.facts, "layer": layer.descriptor.digest},
                scanner=scanner.check if scanner else "",
                scanner_version=scanner.version if scanner else "",
                scan_seconds=seconds,
            )
        )
        return findings

    def _add(self, layer: int, path: str, found: list[Finding]) -> None:
        if not found:
            return
        key = (layer, path)
        positions = self.located.setdefault(key, [])
        for finding in found:
            positions.append(len(self.findings))
            self.findings.append(finding)
        self.fs.watch(layer, path)


def inspect_image(
    layout_or_archive: Path,
    limits: Limits | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImageInspection:
    """Identify and scan an OCI image layout directory or a ``docker save`` archive.

    Raises :class:`~attestgate.intake.identity.IntakeError` only when the
    source cannot be read far enough to name the image; every later problem
    is a finding.
    """
    limits = limits or Limits()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        with open_source(layout_or_archive, limits) as (store, images):
            timings["intake"] = time.perf_counter() - started
            walk_started = time.perf_counter()
            inspection = _scan_images(layout_or_archive, store, images, limits, progress)
    except (ImageFormatError, OSError) as exc:
        raise IntakeError(
            f"image {layout_or_archive} could not be read: {exc}",
            hint="export the image again with `docker save` or `skopeo copy ... oci:DIR`",
        ) from exc
    elapsed = time.perf_counter() - walk_started
    scan = min(inspection.timings.pop("scan", 0.0), elapsed)
    timings["scan"] = scan
    timings["identify"] = elapsed - scan
    inspection.timings = timings
    return inspection


@dataclass
class _ImageResult:
    reports: list[LayerReport] = field(default_factory=list)
    dists: dict[str, Any] = field(default_factory=dict)


def _scan_images(
    path: Path,
    store: Any,
    images: ImageSet,
    limits: Limits,
    progress: Callable[[int], None] | None,
) -> ImageInspection:
    if not images.digest.startswith("sha256:"):
        raise IntakeError(
            f"image {path} is named by {images.digest}; only sha256 digests name artifacts",
            hint="copy the image with a tool that writes sha256 digests, such as skopeo",
        )
    findings: list[Finding] = list(images.findings)
    budget = ImageBudget(limits)
    reports: list[FileReport] = []
    scan_seconds = 0.0
    summaries: list[dict[str, Any]] = []
    blob_sizes: dict[str, int] = {}
    secret_files = 0
    for image in images.images:
        fs = RootFilesystem()
        scanner = _MemberScanner(limits, fs, progress)
        findings += config_findings(image)
        result = _walk_layers(image, store, fs, scanner, budget, progress)
        _mark_removed(scanner, fs, image.layers)
        findings += scanner.findings
        for report in result.reports:
            findings += report.findings
        dist_findings, result.dists = check_installed(scanner.records, fs)
        findings += dist_findings
        reports += scanner.reports
        scan_seconds += scanner.scan_seconds
        secret_files += scanner.secret_files
        summaries.append(_image_summary(image, result))
        for report in result.reports:
            blob_sizes[report.layer.descriptor.digest or report.layer.member] = report.compressed
        blob_sizes[image.config.digest] = image.config.size
        if image.manifest is not None:
            blob_sizes[image.manifest.digest] = image.manifest.size
    if not images.images:
        findings.append(_empty(path, images))
    artifact = IntakeIdentity(
        path=str(path.resolve()),
        kind="image",
        sha256=images.digest.partition(":")[2],
        files=sorted(reports, key=lambda r: r.path),
        method=images.method,
        image={
            "source": images.source,
            "digest": images.digest,
            "media_type": images.media_type,
            "tags": images.tags,
            "images": summaries,
            "skipped": images.skipped,
            "secret_search": {"files": secret_files},
        },
        total_size=sum(blob_sizes.values()),
    )
    return ImageInspection(artifact, findings, {"scan": scan_seconds})


def _walk_layers(
    image: Image,
    store: Any,
    fs: RootFilesystem,
    scanner: _MemberScanner,
    budget: ImageBudget,
    progress: Callable[[int], None] | None,
) -> _ImageResult:
    result = _ImageResult()
    walker = LayerWalker(scanner, budget, progress)
    for layer in image.layers:
        if budget.expired():
            result.reports.append(_unscanned(layer, budget))
            continue
        blob = _open_layer(store, layer)
        if blob is None:
            report = LayerReport(layer, complete=False)
            report.findings.append(_missing_layer(layer))
            result.reports.append(report)
            continue
        with blob:
            if image.container:
                report = walker.walk(layer, blob)
            else:
                report = _artifact_file(layer, blob, scanner, progress)
        fs.apply(layer.index, report.changes)
        result.reports.append(report)
    return result


def _open_layer(store: Any, layer: Layer) -> IO[bytes] | None:
    if layer.member:
        blob: IO[bytes] | None = store.open_member(layer.member)
        return blob
    opened: IO[bytes] | None = store.open_digest(layer.descriptor.digest)
    return opened


def _artifact_file(
    layer: Layer, blob: IO[bytes], scanner: _MemberScanner, progress: Callable[[int], None] | None
) -> LayerReport:
    """Scan a layer of an OCI artifact, which is one file named by its title annotation."""
    from attestgate.intake.rootfs import FILE, normalize_member_name

    title = layer.descriptor.annotations.get("org.opencontainers.image.title", "")
    path, _ = normalize_member_name(title or layer.descriptor.digest.replace(":", "-"))
    location = f"{layer.short}:{display_path(path)}"
    algorithm = layer.descriptor.digest.partition(":")[0]
    reader = HashingReader(blob, algorithm)
    reader.progress = progress
    report = LayerReport(layer, members=1, files=1)
    digest = scanner.regular(layer, path, location, layer.descriptor.size, reader)
    while reader.read(CHUNK):
        pass
    report.compressed = report.expanded = reader.count
    report.digest = f"{algorithm}:{reader.hasher.hexdigest()}"
    report.findings.extend(digest_findings(layer, report))
    report.changes.entries.append((path, FsEntry(layer.index, FILE, digest, reader.count)))
    return report


def _mark_removed(scanner: _MemberScanner, fs: RootFilesystem, layers: list[Layer]) -> None:
    """Add to each finding in a file that a later layer removed which layer removed it."""
    for removal in fs.removals:
        positions = scanner.located.get((removal.layer, removal.path), [])
        if removal.by_layer == removal.layer:
            continue
        origin = layers[removal.layer].short
        by = layers[removal.by_layer]
        verb = "deletes" if removal.how == DELETED else "replaces"
        for position in positions:
            finding = scanner.findings[position]
            scanner.findings[position] = dataclasses.replace(
                finding,
                message=(
                    f"{finding.message}; layer {by.short} {verb} {removal.path} later, but "
                    f"its bytes stay in layer {origin}, which anyone who pulls the image "
                    "can read"
                ),
                details={
                    **finding.details,
                    "removed_by_layer": by.descriptor.digest or by.member,
                    "removal": removal.how,
                },
            )


def _image_summary(image: Image, result: _ImageResult) -> dict[str, Any]:
    summary = image.to_json()
    summary["layers"] = [r.to_json() for r in result.reports]
    runtime = image.config_document.get("config")
    if isinstance(runtime, dict) and runtime.get("User"):
        summary["user"] = str(runtime["User"])[:64]
    history = image.config_document.get("history")
    if isinstance(history, list):
        summary["history_entries"] = len(history)
    if result.dists.get("count"):
        summary["python_distributions"] = result.dists
    return summary


def _unscanned(layer: Layer, budget: ImageBudget) -> LayerReport:
    report = LayerReport(layer, complete=False)
    report.findings.append(
        image_finding(
            "image.limit-exceeded",
            Severity.MEDIUM,
            f"{layer.short}:",
            f"layer {layer.short} was not read because the image took longer than "
            f"{budget.limits.file_time_budget:.0f} s to scan",
            "Have a reviewer inspect the image, or raise the time budget for this admission.",
            layer=layer.descriptor.digest or layer.member,
        )
    )
    return report


def _missing_layer(layer: Layer) -> Finding:
    return image_finding(
        "image.missing-blob",
        Severity.HIGH,
        f"{layer.short}:",
        f"layer {layer.descriptor.digest or layer.member} is not in the image source, so its "
        "files were not scanned",
        "Export or pull the image again with every layer (skopeo copy keeps foreign layers "
        "with --preserve-digests), then admit it again.",
        layer=layer.descriptor.digest or layer.member,
    )


def _empty(path: Path, images: ImageSet) -> Finding:
    return image_finding(
        "image.empty",
        Severity.MEDIUM,
        path.name,
        f"{path.name} names {images.digest} but holds no image that could be read, so "
        "nothing was scanned",
        "Check that the layout or archive holds the image you meant to admit.",
    )


__all__ = ["ImageInspection", "inspect_image", "is_library_fixture", "wants_format_scan"]
