"""The single streaming pass: hash each file and feed its scanner together.

Every byte of a file is read once. The same buffer goes to SHA-256 and to the
scanner picked from the file's first bytes, so identifying and scanning an
artifact cost about one read and one hash. Files are processed on a few
threads because ``hashlib`` releases the GIL while it hashes large buffers.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import CHECK_FAILED, Finding, Severity
from attestgate.identify.extensions import check_extension
from attestgate.identify.formats import SNIFF_BYTES, Format, sniff
from attestgate.identify.walk import Entry
from attestgate.scanners import GuardedScanner, open_scanner
from attestgate.scanners.interface import Limits, MiB, ScanContext, ScanResult
from attestgate.scanners.pickle_scanner import with_pickle_probe
from attestgate.scanners.zip_scanner import AppendedZipScanner

logger = logging.getLogger(__name__)

CHUNK_SIZE = 4 * MiB
_ARCHIVES = frozenset(
    {
        Format.ZIP,
        Format.TAR,
        Format.GZIP,
        Format.BZIP2,
        Format.XZ,
        Format.ZSTD,
        Format.SEVENZIP,
    }
)
CHECK = "identify"

Progress = Callable[[int], None]


@dataclass
class FileReport:
    """The digest, format, findings and timings of one file from the pass."""

    path: str
    size: int
    sha256: str
    format: Format
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    scanner: str = ""
    scanner_version: str = ""
    read_seconds: float = 0.0
    scan_seconds: float = 0.0
    # False when the bytes could not be read in full, so the digest does
    # not describe the file.
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "digest": {"sha256": self.sha256},
            "format": self.format.value,
        }
        if self.scanner:
            out["scanner"] = {"name": self.scanner, "version": self.scanner_version}
        if self.facts:
            out["facts"] = self.facts
        return out


def _unreadable(entry: Entry, exc: OSError) -> FileReport:
    finding = Finding(
        "identify.unreadable",
        Severity.MEDIUM,
        entry.path,
        f"{entry.path} could not be read: {exc.strerror or exc}",
        "Make the file readable by the gate and admit the artifact again.",
        check=CHECK,
    )
    return FileReport(entry.path, 0, "", Format.UNKNOWN, [finding], complete=False)


def _special(entry: Entry) -> FileReport:
    finding = Finding(
        "identify.special-file",
        Severity.MEDIUM,
        entry.path,
        f"{entry.path} stopped being a regular file before it was opened; it was not read",
        "Stop other processes from changing the artifact and admit it again.",
        check=CHECK,
    )
    return FileReport(entry.path, 0, "", Format.UNKNOWN, [finding], complete=False)


def _replaced(entry: Entry) -> FileReport:
    finding = Finding(
        "identify.file-changed",
        Severity.HIGH,
        entry.path,
        f"{entry.path} was replaced by another file between the listing of the "
        "artifact and its reading, so it was not read",
        "Admit the artifact again once nothing is writing to it; copy it into a "
        "private intake directory first if other processes write there.",
        check=CHECK,
    )
    return FileReport(entry.path, 0, "", Format.UNKNOWN, [finding], complete=False)


def _changed(entry: Entry, before: os.stat_result, after: os.stat_result, read: int) -> Finding:
    return Finding(
        "identify.file-changed",
        Severity.HIGH,
        entry.path,
        f"{entry.path} changed while it was read (size {before.st_size} -> "
        f"{after.st_size}, {read} bytes read), so its digest and scan describe "
        "bytes that are no longer there",
        "Admit the artifact again once nothing is writing to it; copy it into a "
        "private intake directory first if other processes write there.",
        check=CHECK,
    )


def _same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


def process_file(
    entry: Entry,
    limits: Limits,
    progress: Progress | None = None,
) -> FileReport:
    """Hash and scan one file in a single pass."""
    try:
        # O_NONBLOCK keeps open() from waiting on a FIFO that replaced the
        # file after the walk; regular files ignore the flag. O_NOFOLLOW
        # refuses a link that replaced it: the walk resolved links already.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(entry.location, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _replaced(entry)
        return _unreadable(entry, exc)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return _special(entry)
        if entry.identity is not None and entry.identity != (before.st_dev, before.st_ino):
            return _replaced(entry)
        return _read_and_scan(fd, entry, before, limits, progress)
    except OSError as exc:
        return _unreadable(entry, exc)
    finally:
        os.close(fd)


def _read_and_scan(
    fd: int,
    entry: Entry,
    before: os.stat_result,
    limits: Limits,
    progress: Progress | None,
) -> FileReport:
    started = time.perf_counter()
    hasher = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    scan_seconds = 0.0
    total = 0

    n = os.readv(fd, [view])
    head = bytes(view[: min(n, SNIFF_BYTES)])
    fmt = sniff(head, before.st_size if n else 0, entry.path)
    ctx = ScanContext(file=entry.path, size=before.st_size, limits=limits)
    scanner = with_pickle_probe(open_scanner(fmt, ctx), fmt, head, ctx)
    # Archives and compressed streams are unpacked by their own scanners.
    appended = None if fmt in _ARCHIVES else GuardedScanner(AppendedZipScanner(ctx, fmt), ctx)
    timed_out = False
    while n:
        chunk = view[:n]
        hasher.update(chunk)
        total += n
        if appended is not None:
            appended.feed(chunk)
        if scanner is not None and not timed_out:
            t0 = time.perf_counter()
            scanner.feed(chunk)
            scan_seconds += time.perf_counter() - t0
            timed_out = ctx.expired()
        if progress is not None:
            progress(n)
        if total > before.st_size:
            # The file grows while it is read: stop, or a writer that keeps
            # appending would keep the pass reading forever.
            break
        n = os.readv(fd, [view])

    findings: list[Finding] = []
    after_read = os.fstat(fd)
    if total != before.st_size or not _same_file_state(before, after_read):
        findings.append(_changed(entry, before, after_read, total))

    result = ScanResult()
    if scanner is not None:
        t0 = time.perf_counter()
        result = scanner.close(_reader(fd, total))
        scan_seconds += time.perf_counter() - t0
        if not _same_file_state(before, os.fstat(fd)) and not findings:
            findings.append(_changed(entry, before, os.fstat(fd), total))
    if appended is not None:
        result.findings.extend(appended.close(_reader(fd, total)).findings)
    if timed_out:
        findings.append(
            Finding(
                "scan.timeout",
                Severity.MEDIUM,
                entry.path,
                f"scanning {entry.path} took longer than {limits.file_time_budget:.0f} s; "
                "the scan stopped early and its result is incomplete",
                "Have a reviewer inspect the file, or raise the time budget for this artifact.",
                check=scanner.check if scanner else CHECK,
            )
        )
    findings.extend(result.findings)
    if scanner is None and fmt is Format.UNKNOWN:
        findings.append(
            Finding(
                "identify.unscanned",
                Severity.LOW,
                entry.path,
                f"{entry.path} is in no format the gate recognises, so no scanner read "
                "it beyond hashing",
                "Check what the file is. If a loader deserializes it, convert it to a "
                "format the gate scans (safetensors for weights), or have a reviewer "
                "inspect it; a policy can map identify.unscanned to quarantine.",
                check=CHECK,
            )
        )
    mismatch = check_extension(entry.path, result.format or fmt)
    if mismatch is not None:
        findings.append(mismatch)
    read_seconds = time.perf_counter() - started - scan_seconds
    return FileReport(
        path=entry.path,
        size=total,
        sha256=hasher.hexdigest(),
        format=result.format or fmt,
        findings=findings,
        facts=result.facts,
        scanner=scanner.check if scanner else "",
        scanner_version=scanner.version if scanner else "",
        read_seconds=read_seconds,
        scan_seconds=scan_seconds,
    )


def _reader(fd: int, size: int) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset > size:
            raise ValueError(f"read of {length} bytes at {offset} is outside the file")
        return os.pread(fd, min(length, size - offset), offset)

    return read_at


def process_files(
    entries: list[Entry],
    limits: Limits,
    progress: Progress | None = None,
    workers: int | None = None,
) -> list[FileReport]:
    """Process every file, in parallel threads, and return reports in path order."""
    if not entries:
        return []
    if workers is None:
        workers = min(4, max(1, os.cpu_count() or 1))
    if len(entries) == 1 or workers == 1:
        return [_guarded(e, limits, progress) for e in entries]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attestgate-identify") as pool:
        reports = list(pool.map(lambda e: _guarded(e, limits, progress), entries))
    return reports


def _guarded(entry: Entry, limits: Limits, progress: Progress | None) -> FileReport:
    # A bug in the pass must not drop the file from the decision: it becomes
    # a check failure on that file, which the policy never allows.
    try:
        return process_file(entry, limits, progress)
    except Exception as exc:  # any bug becomes a check failure, never a skip
        logger.exception("identify pass failed on %s", entry.path)
        finding = Finding(
            CHECK_FAILED,
            Severity.HIGH,
            entry.path,
            f"the identify pass failed on {entry.path}: {type(exc).__name__}: {exc}",
            "Report the error to the attestgate maintainers; until it is fixed a "
            "reviewer must inspect the file by hand.",
            check=CHECK,
        )
        return FileReport(entry.path, 0, "", Format.UNKNOWN, [finding], complete=False)


def root_digest(reports: list[FileReport]) -> str:
    """Return the OpenSSF Model Signing digest of a directory's files.

    SHA-256 over the concatenated raw SHA-256 digests of the files, in sorted
    relative-path order.
    """
    outer = hashlib.sha256()
    for report in sorted(reports, key=lambda r: r.path):
        outer.update(bytes.fromhex(report.sha256))
    return outer.hexdigest()
