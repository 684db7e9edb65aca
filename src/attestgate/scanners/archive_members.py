"""Archive members: the sink that scans each one, and the checks on member names.

The archive scanner's stream, tar and 7z readers share these. A reader
reports through the ``ArchiveReport`` interface, which ``ArchiveScanner``
implements, so that one scanner collects the findings of every level.
"""

from __future__ import annotations

import posixpath
import re
import struct
import tempfile
from typing import IO, Any, Protocol

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import SNIFF_BYTES, Format, sniff
from attestgate.scanners import open_probed_scanner
from attestgate.scanners.interface import MiB, ScanContext, Scanner

# Members whose scanner rereads them are kept in memory up to this size,
# then spooled to a temporary file.
SPOOL_MEMORY = 16 * MiB
REREAD_FORMATS = frozenset({Format.ZIP, Format.SEVENZIP, Format.PARQUET, Format.ARROW})
# Formats that a tar without the ustar magic (the v7 format) sniffs as. A
# valid header checksum identifies it as a tar.
TAR_LOOKALIKES = frozenset({Format.UNKNOWN, Format.TEXT, Format.MAYBE_PICKLE})
TAR_BLOCK = 512
MAX_TEXT = 200
_MAX_LISTED = 20
_DRIVE = re.compile(r"^[A-Za-z]:")

RECOPY = (
    "Copy the archive again from its source and compare its digest with the "
    "published one. If it stays unreadable, ask the producer for an archive "
    "that standard tools (tar, gzip, xz, 7z) read without errors."
)
UNPACK = (
    "Unpack the archive with standard tools in a sandbox and admit its files "
    "directly, or have a reviewer inspect it by hand."
)


class ArchiveReport(Protocol):
    """Interface through which an archive's readers report to the scanner that owns them."""

    ctx: ScanContext
    stopped: bool

    def add(
        self,
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        **details: Any,
    ) -> None: ...

    def extend(self, findings: list[Finding]) -> None: ...

    def flag(self, rule: str, severity: Severity, member: str) -> None: ...

    def note(self, key: str, value: Any) -> None: ...

    def count_format(self, fmt: Format) -> None: ...

    def expand(self, count: int, consumed: int) -> bool: ...

    def bomb(self, message: str) -> None: ...

    def stop(
        self,
        rule: str,
        message: str,
        remediation: str = RECOPY,
        *,
        offset: int | None = None,
        **details: Any,
    ) -> None: ...

    def timed_out(self) -> bool: ...


class MemberSink:
    """Sniffs a member's first bytes, then streams the member into its scanner."""

    def __init__(self, owner: ArchiveReport, ctx: ScanContext, name: str) -> None:
        self.owner = owner
        self.ctx = ctx
        self.name = name
        self.head = bytearray()
        self.size = 0
        self.scanner: Scanner | None = None
        self.spool: IO[bytes] | None = None
        self.started = False

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if not self.started:
            taken = data[: SNIFF_BYTES - len(self.head)]
            self.head += taken
            if len(self.head) < SNIFF_BYTES:
                return
            self._start(self.ctx.size or self.owner.ctx.limits.max_expanded_bytes)
            data = data[len(taken) :]
        if len(data):
            self._pass(data)

    def _start(self, size_hint: int) -> None:
        self.started = True
        head = bytes(self.head)
        fmt = sniff(head, size_hint if head else 0, self.name)
        if fmt in TAR_LOOKALIKES and is_tar_header(head):
            fmt = Format.TAR
        self.owner.count_format(fmt)
        self.scanner = open_probed_scanner(fmt, self.ctx, head)
        if self.scanner is not None and fmt in REREAD_FORMATS:
            # Closed in close(), once the scanner has reread the member.
            self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        if head:
            self._pass(head)

    def _pass(self, data: bytes | memoryview) -> None:
        if self.scanner is None:
            return
        self.scanner.feed(memoryview(data))
        if self.spool is not None:
            self.spool.write(data)

    def close(self) -> list[Finding]:
        """End the member and return its scanner's findings."""
        if not self.started:
            self._start(self.size)
        if self.scanner is None:
            return []
        spool = self.spool
        if spool is None:
            return self.scanner.close(None).findings

        def read_at(offset: int, length: int) -> bytes:
            spool.seek(offset)
            return spool.read(length)

        try:
            return self.scanner.close(read_at).findings
        finally:
            spool.close()


def is_tar_header(head: bytes) -> bool:
    """Tell whether ``head`` starts with a tar header that has a valid checksum."""
    block = head[:TAR_BLOCK]
    return len(block) == TAR_BLOCK and block[0] != 0 and tar_checksum_ok(block)


def tar_checksum_ok(block: bytes) -> bool:
    """Check a header checksum, counting the checksum field as spaces (POSIX ustar)."""
    stored = tar_number(block[148:156])
    if stored is None:
        return False
    unsigned = 256 + sum(struct.unpack_from("148B8x356B", block))
    # Some old tar implementations summed signed bytes, and tarfile accepts both.
    signed = 256 + sum(struct.unpack_from("148b8x356b", block))
    return stored in (unsigned, signed)


def tar_number(field: bytes) -> int | None:
    """Parse a numeric header field: octal text, or GNU base-256 when the top bit is set."""
    if field[:1] and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] & 0x40:
            # Negative base-256 numbers (two's complement), seen only in mtime.
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        return None
    return int(text, 8)


def display_name(name: str) -> str:
    """Return the member name used in locations: without a leading ``./``."""
    while name.startswith("./"):
        name = name[2:]
    return shorten(name) or "."


def leaves_folder(name: str) -> bool:
    """Tell whether unpacking ``name`` writes outside the extraction folder."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return True
    return ".." in re.split(r"[/\\]", name)


def link_escapes(name: str, target: str, *, symbolic: bool) -> bool:
    """Tell whether a link's target resolves outside the extraction folder.

    A symbolic link's target is relative to the link's folder; a hard link's
    target is a member path, relative to the archive root.
    """
    target = target.replace("\\", "/")
    if not target:
        return False
    if target.startswith("/") or _DRIVE.match(target):
        return True
    base = posixpath.dirname(name.replace("\\", "/")) if symbolic else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    return resolved == ".." or resolved.startswith(("../", "/"))


def list_names(names: list[str]) -> str:
    shown = ", ".join(repr(shorten(name)) for name in names[:_MAX_LISTED])
    hidden = len(names) - _MAX_LISTED
    return shown + (f" and {hidden} more" if hidden > 0 else "")


def shorten(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"... ({len(text)} characters)"
