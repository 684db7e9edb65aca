"""Format scanners and the registry that picks one for each stream."""

from __future__ import annotations

import fnmatch
import importlib
import logging
import traceback

from attestgate.findings import CHECK_FAILED, Finding, Severity
from attestgate.identify.formats import SNIFF_BYTES, Format, sniff
from attestgate.scanners.interface import (
    Limits,
    ReadAt,
    ScanContext,
    Scanner,
    ScanResult,
)

__all__ = [
    "GuardedScanner",
    "Limits",
    "ReadAt",
    "ScanContext",
    "ScanResult",
    "Scanner",
    "open_probed_scanner",
    "open_scanner",
    "scan_bytes",
]

logger = logging.getLogger(__name__)

# Format -> "module:class". Modules load on first use so that start-up stays
# cheap and a broken optional scanner cannot break the others.
_REGISTRY: dict[Format, str] = {
    Format.PICKLE: "attestgate.scanners.pickle_scanner:PickleScanner",
    Format.MAYBE_PICKLE: "attestgate.scanners.pickle_scanner:PickleScanner",
    Format.SAFETENSORS: "attestgate.scanners.safetensors_scanner:SafetensorsScanner",
    Format.ZIP: "attestgate.scanners.zip_scanner:ZipScanner",
    Format.JSON: "attestgate.scanners.huggingface:JsonConfigScanner",
    Format.PYTHON: "attestgate.scanners.huggingface:PythonCodeScanner",
    Format.GGUF: "attestgate.scanners.gguf_scanner:GgufScanner",
    Format.ONNX: "attestgate.scanners.onnx_scanner:OnnxScanner",
    Format.TF_SAVEDMODEL: "attestgate.scanners.savedmodel_scanner:SavedModelScanner",
    Format.HDF5: "attestgate.scanners.keras_scanner:Hdf5Scanner",
    Format.NUMPY: "attestgate.scanners.numpy_scanner:NpyScanner",
    Format.GZIP: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.BZIP2: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.XZ: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.ZSTD: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.COMPRESSED: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.TAR: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.SEVENZIP: "attestgate.scanners.archive_scanner:ArchiveScanner",
    Format.PARQUET: "attestgate.scanners.dataset_scanner:DatasetScanner",
    Format.ARROW: "attestgate.scanners.dataset_scanner:DatasetScanner",
    Format.JSON_LINES: "attestgate.scanners.dataset_scanner:DatasetScanner",
    Format.NATIVE_EXECUTABLE: "attestgate.scanners.binary_scanner:NativeExecutableScanner",
}

# File-name patterns for files whose bytes are plain text, so that only the
# name says what they are (dependency lists, chat templates). A name match
# never replaces the scanner chosen from the bytes: both run.
_NAME_REGISTRY: tuple[tuple[str, str], ...] = (
    ("requirements*.txt", "attestgate.scanners.deps_scanner:RequirementsScanner"),
    ("requirements*.in", "attestgate.scanners.deps_scanner:RequirementsScanner"),
    ("constraints*.txt", "attestgate.scanners.deps_scanner:RequirementsScanner"),
    ("pylock.toml", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("pylock.*.toml", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("uv.lock", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("poetry.lock", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("Pipfile.lock", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("environment.yml", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("environment.yaml", "attestgate.scanners.deps_scanner:LockFileScanner"),
    ("*.jinja", "attestgate.scanners.chat_template:ChatTemplateFileScanner"),
    # Protobuf does not fix field order, and loaders accept reordered files
    # that the byte sniffing cannot recognise, so these names also route.
    ("*.onnx", "attestgate.scanners.onnx_scanner:OnnxScanner"),
    ("saved_model.pb", "attestgate.scanners.savedmodel_scanner:SavedModelScanner"),
    ("keras_metadata.pb", "attestgate.scanners.savedmodel_scanner:KerasMetadataScanner"),
)


def base_name(location: str) -> str:
    """Return the file name at the end of a location such as ``a.zip:dir/b.txt``."""
    return location.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _load(spec: str) -> type[Scanner]:
    module_name, _, class_name = spec.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Scanner] = getattr(module, class_name)
    return cls


def _start(spec: str, fmt: Format, ctx: ScanContext) -> Scanner:
    try:
        cls = _load(spec)
        return GuardedScanner(cls(ctx, fmt), ctx)
    except Exception as exc:  # a scanner that cannot start is a check failure
        logger.error("scanner for %s failed to start on %s: %s", fmt, ctx.file, exc)
        logger.debug("traceback", exc_info=True)
        return FailedScanner(ctx, fmt, exc)


def open_scanner(fmt: Format, ctx: ScanContext) -> Scanner | None:
    """Return a guarded scanner for ``fmt``, or None when no scanner applies."""
    specs = []
    if fmt in _REGISTRY:
        specs.append(_REGISTRY[fmt])
    name = base_name(ctx.file)
    for pattern, spec in _NAME_REGISTRY:
        if fnmatch.fnmatchcase(name, pattern) and spec not in specs:
            specs.append(spec)
            break
    scanners = [_start(spec, fmt, ctx) for spec in specs]
    if not scanners:
        return None
    if len(scanners) == 1:
        return scanners[0]
    return MultiScanner(ctx, fmt, scanners)


def open_probed_scanner(fmt: Format, ctx: ScanContext, head: bytes) -> Scanner | None:
    """Return the scanner for ``fmt``, plus a quiet pickle probe when ``head`` could start one.

    Bytes can be two formats at once (a tar or a gzip whose first bytes are
    also pickle opcodes), and a loader that unpickles them runs what the
    other format's scanner never looks at.
    """
    from attestgate.scanners.pickle_scanner import with_pickle_probe

    return with_pickle_probe(open_scanner(fmt, ctx), fmt, head, ctx)


def scan_bytes(data: bytes, ctx: ScanContext, name: str = "") -> tuple[Format, ScanResult]:
    """Sniff and scan an in-memory buffer, such as a small archive member."""
    fmt = sniff(data[:SNIFF_BYTES], len(data), name)
    scanner = open_probed_scanner(fmt, ctx, data[:SNIFF_BYTES])
    if scanner is None:
        return fmt, ScanResult()
    scanner.feed(memoryview(data))

    def read_at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return fmt, scanner.close(read_at)


def _failure(ctx: ScanContext, check: str, exc: BaseException) -> Finding:
    return Finding(
        rule=CHECK_FAILED,
        severity=Severity.HIGH,
        file=ctx.file,
        message=f"the {check} check failed before finishing: {type(exc).__name__}: {exc}",
        remediation=(
            "The gate could not inspect this file, so it cannot vouch for it. "
            "Report the error with the file's format to the attestgate maintainers; "
            "until then a reviewer must inspect the file by hand."
        ),
        check=check,
        details={
            "error": type(exc).__name__,
            "traceback": traceback.format_exc(limit=5),
        },
    )


def _partial(scanner: Scanner) -> list[Finding]:
    try:
        return scanner.partial_findings()
    except Exception:  # the scanner is already broken; its failure is reported
        logger.debug("partial findings unavailable", exc_info=True)
        return []


class GuardedScanner(Scanner):
    """Wraps a scanner so that its exceptions become ``check.failed`` findings."""

    check = "guard"

    def __init__(self, inner: Scanner, ctx: ScanContext) -> None:
        super().__init__(ctx, inner.format)
        self.inner = inner
        self.check = inner.check
        self.version = inner.version
        self._error: Finding | None = None
        self._partial: list[Finding] = []

    def feed(self, chunk: memoryview) -> None:
        if self._error is not None:
            return
        try:
            self.inner.feed(chunk)
        except Exception as exc:  # fail closed, see class docstring
            logger.error("%s check failed on %s: %s", self.check, self.ctx.file, exc)
            logger.debug("traceback", exc_info=True)
            self._error = _failure(self.ctx, self.check, exc)
            self._partial = _partial(self.inner)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        if self._error is not None:
            return ScanResult(findings=[*self._partial, self._error])
        try:
            return self.inner.close(read_at)
        except Exception as exc:  # fail closed, see class docstring
            logger.error("%s check failed on %s: %s", self.check, self.ctx.file, exc)
            logger.debug("traceback", exc_info=True)
            failure = _failure(self.ctx, self.check, exc)
            return ScanResult(findings=[*_partial(self.inner), failure])


class FailedScanner(Scanner):
    """Stands in for a scanner that could not be created."""

    check = "registry"

    def __init__(self, ctx: ScanContext, fmt: Format, exc: Exception) -> None:
        super().__init__(ctx, fmt)
        self._finding = _failure(ctx, f"{fmt} scanner", exc)

    def feed(self, chunk: memoryview) -> None:
        return None

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        return ScanResult(findings=[self._finding])


class MultiScanner(Scanner):
    """Feeds one stream to several scanners and merges their results."""

    check = "multi"

    def __init__(self, ctx: ScanContext, fmt: Format, scanners: list[Scanner]) -> None:
        super().__init__(ctx, fmt)
        self.scanners = scanners
        self.check = "+".join(s.check for s in scanners)
        self.version = "+".join(s.version for s in scanners)

    def feed(self, chunk: memoryview) -> None:
        for scanner in self.scanners:
            scanner.feed(chunk)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        merged = ScanResult()
        for scanner in self.scanners:
            result = scanner.close(read_at)
            merged.findings.extend(result.findings)
            merged.facts.update(result.facts)
            merged.format = merged.format or result.format
        return merged
