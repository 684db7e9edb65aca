"""Check compressed streams, tar archives and 7z archives, and scan what they hold.

Single-stream compression (gzip, bzip2, xz, zstd, and the zlib, LZMA-alone,
lz4 and ``ZF`` streams that joblib writes) is decompressed incrementally in
``feed``, under a bound on the expanded bytes and on the compression ratio.
The expanded stream is sniffed from its first 512 bytes: a tar is walked
member by member (``archive_tar``), anything else goes to the scanner for its
format, located ``<file>:<inner name>``.

Tar members are checked for names that leave the extraction folder, links,
device and FIFO members and the member count, and each regular member is
sniffed and scanned as ``<file>:<member path>``. Nothing is unpacked to disk;
only members whose scanner rereads them (zip, 7z, Parquet, Arrow) are spooled
to a temporary file once they outgrow memory.

7z archives cannot be read as a stream, so they are parsed in ``close``
through ``read_at`` (``archive_7z``).

A container the gate cannot open (unknown compression, corrupt or truncated
data, too deep a nesting) yields a finding, so it never passes unread.
"""

from __future__ import annotations

import bz2
import importlib
import logging
import lzma
import re
import zlib
from typing import Any, Protocol

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import SNIFF_BYTES, Format, is_zfile_length, sniff
from attestgate.scanners import base_name
from attestgate.scanners.archive_7z import SevenZipReader
from attestgate.scanners.archive_members import (
    RECOPY,
    TAR_LOOKALIKES,
    UNPACK,
    MemberSink,
    is_tar_header,
    list_names,
    shorten,
)
from attestgate.scanners.archive_tar import TarWalker
from attestgate.scanners.interface import MiB, ReadAt, ScanContext, Scanner, ScanResult

__all__ = ["ArchiveScanner", "compression_kind"]

logger = logging.getLogger(__name__)

# Compressed input is decompressed in slices of this size, aligned on
# multiples of it in the file, so the result never depends on how the input
# was chunked. Each slice is drained in steps of at most _OUTPUT_STEP bytes,
# and the bounds are checked after every step.
_INPUT_SLICE = 64 * 1024
_OUTPUT_STEP = 1 * MiB
# The ratio is judged once this much has been expanded, so that a small,
# very regular file (a run of zeros) passes.
_RATIO_MIN_BYTES = 1 * MiB
# The first input bytes are kept for the gzip header's file name.
_GZIP_HEAD_BYTES = 4096
# Bytes needed to recognise a compression by content: a joblib ZF header is
# "ZF" and the length in hex padded to 19 characters.
_KIND_BYTES = 21
_MAX_FACT_NAMES = 100
# The stream header chooses the LZMA dictionary size (up to 4 GiB), and
# liblzma allocates it up front. The xz -9 preset needs 65 MiB to decompress
# (xz(1), preset table), and a stream that needs more than this limit is
# reported as corrupt.
_LZMA_MEMORY_LIMIT = 256 * MiB

# The magic that starts the next stream of a multi-stream file (pigz,
# pbzip2, xz and zstd all write them), per compression kind.
_NEXT_STREAM_MAGIC: dict[str, tuple[bytes, ...]] = {
    "gzip": (b"\x1f\x8b",),
    "bzip2": (b"BZh",),
    "xz": (b"\xfd7zXZ\x00",),
    # A zstd frame, or a skippable frame (magic 0x184D2A50 to 0x184D2A5F).
    "zstd": (b"\x28\xb5\x2f\xfd", *(bytes([0x50 + n, 0x2A, 0x4D, 0x18]) for n in range(16))),
    "lz4": (b"\x04\x22\x4d\x18",),
}
_FORMAT_KINDS = {
    Format.GZIP: "gzip",
    Format.BZIP2: "bzip2",
    Format.XZ: "xz",
    Format.ZSTD: "zstd",
}
_CODEC_PACKAGES = {"zstd": "the backports.zstd package", "lz4": "the lz4 package"}
# Suffixes replaced in the file name to name the expanded stream when the
# gzip header carries no name.
_SUFFIXES = {
    ".tgz": ".tar",
    ".taz": ".tar",
    ".tbz": ".tar",
    ".tbz2": ".tar",
    ".txz": ".tar",
    ".tzst": ".tar",
    ".gz": "",
    ".bz2": "",
    ".xz": "",
    ".zst": "",
    ".zstd": "",
    ".lzma": "",
    ".lz4": "",
    ".z": "",
}

_REVIEW_MEMBERS = (
    "Do not unpack this archive. Ask the producer for an archive whose members "
    "are plain files with relative names inside one folder, or have a reviewer "
    "inspect every listed member before approving this digest."
)
# Rules about single members, keyed by rule and severity: the message for
# one member and for several, and the remediation. One finding per key lists
# every member it applies to.
_MEMBER_RULES: dict[tuple[str, Severity], tuple[str, str, str]] = {
    ("archive.path-traversal", Severity.HIGH): (
        "a member name leaves the extraction folder through a '..' part or an "
        "absolute path: {names}",
        "{count} member names leave the extraction folder through a '..' part "
        "or an absolute path: {names}",
        _REVIEW_MEMBERS,
    ),
    ("archive.link", Severity.HIGH): (
        "a member is a link whose target lies outside the extraction folder: {names}",
        "{count} members are links whose targets lie outside the extraction folder: {names}",
        _REVIEW_MEMBERS,
    ),
    ("archive.link", Severity.MEDIUM): (
        "a member is a symbolic or hard link, which unpacks as a reference to "
        "another file: {names}",
        "{count} members are symbolic or hard links, which unpack as references "
        "to other files: {names}",
        "Replace the links with the files they point to, or have a reviewer "
        "check every link target before the archive is unpacked.",
    ),
    ("archive.special-member", Severity.MEDIUM): (
        "a member is a device file or FIFO, which no model needs: {names}",
        "{count} members are device files or FIFOs, which no model needs: {names}",
        _REVIEW_MEMBERS,
    ),
}


def compression_kind(head: bytes) -> str | None:
    """Return the compression of a stream from its first bytes, or None.

    Besides the formats that ``sniff`` detects, this recognises the streams
    that joblib writes: raw zlib (``compress=True`` or a level), LZMA-alone
    (``compress='lzma'``), lz4 frames and the ``ZF`` files of joblib before 0.10.
    """
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:4] == b"\x04\x22\x4d\x18":
        return "lz4"
    if head[:2] == b"ZF" and is_zfile_length(head[2:_KIND_BYTES]):
        return "zfile"
    if head[:2] == b"\x5d\x00":
        # LZMA-alone properties byte 0x5d (lc=3, lp=0, pb=2), then a
        # little-endian dictionary size that xz and joblib keep small.
        return "lzma"
    # A zlib header: deflate with a window of at most 32 KiB, no preset
    # dictionary, and a check value that makes the first two bytes a
    # multiple of 31 (RFC 1950).
    if (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and (head[0] << 8 | head[1]) % 31 == 0
        and not head[1] & 0x20
    ):
        return "zlib"
    return None


class ArchiveScanner(Scanner):
    """Decompresses, walks and scans gzip, bzip2, xz, zstd, tar and 7z archives."""

    check = "archive"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._findings: list[Finding] = []
        self._flagged: dict[tuple[str, Severity], list[str]] = {}
        self._facts: dict[str, Any] = {}
        self._formats: dict[str, int] = {}
        self._total = 0
        self.expanded = 0
        self.stopped = False
        self._too_deep = ctx.depth > ctx.limits.max_nesting_depth
        self._tar: TarWalker | None = None
        self._stream: _Stream | None = None
        if fmt is Format.TAR:
            self._tar = TarWalker(self, ctx)
        elif fmt is not Format.SEVENZIP:
            self._stream = _Stream(self, _FORMAT_KINDS.get(fmt))

    def feed(self, chunk: memoryview) -> None:
        self._total += len(chunk)
        if self._too_deep or self.stopped:
            return
        if self._tar is not None:
            self._tar.write(chunk)
        elif self._stream is not None:
            self._stream.feed(chunk)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Finish the walk and report what the archive held.

        1. Refuse an archive nested deeper than the limit, unopened.
        2. Finish decompressing and walking, or parse a 7z archive through
           ``read_at``.
        3. Add one finding per member rule, listing every member it applies to.
        """
        result = ScanResult(format=self.format, facts=self._facts)
        if self._too_deep:
            self.add(
                "archive.too-deep",
                Severity.MEDIUM,
                f"the archive is nested {self.ctx.depth} containers deep, over the "
                f"limit of {self.ctx.limits.max_nesting_depth}, so it was not opened",
                UNPACK,
                depth=self.ctx.depth,
            )
            result.findings = self._findings
            return result

        if self._tar is not None:
            self._tar.finish()
        elif self._stream is not None:
            self._stream.finish()
        else:
            SevenZipReader(self, self._total).scan(read_at)

        self._facts["archive_bytes"] = self._total
        if self.expanded:
            self._facts["expanded_bytes"] = self.expanded
        if self._formats:
            self._facts["member_formats"] = dict(sorted(self._formats.items()))
        result.findings = self._findings + self._member_findings()
        return result

    # --- The ArchiveReport interface, for the stream, tar and 7z readers ------

    def add(
        self,
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        **details: Any,
    ) -> None:
        self._findings.append(
            self.finding(rule, severity, message, remediation, offset=offset, **details)
        )

    def extend(self, findings: list[Finding]) -> None:
        self._findings.extend(findings)

    def flag(self, rule: str, severity: Severity, member: str) -> None:
        """Record a member for a member rule; ``close`` reports each rule once."""
        self._flagged.setdefault((rule, severity), []).append(member)

    def note(self, key: str, value: Any) -> None:
        """Record a fact about the archive for the decision record."""
        self._facts[key] = value

    def count_format(self, fmt: Format) -> None:
        if fmt is not Format.EMPTY:
            self._formats[fmt.value] = self._formats.get(fmt.value, 0) + 1

    def expand(self, count: int, consumed: int) -> bool:
        """Count expanded bytes; report a bomb and stop once a bound is passed.

        ``consumed`` is the compressed input used so far. Returns whether
        expansion may go on.
        """
        self.expanded += count
        if self.stopped:
            return False
        limits = self.ctx.limits
        if self.expanded > limits.max_expanded_bytes:
            self.bomb(
                f"the archive expands to more than {limits.max_expanded_bytes} bytes, "
                "the limit for one file"
            )
        elif (
            self.expanded >= _RATIO_MIN_BYTES
            and self.expanded > limits.max_compression_ratio * max(consumed, 1)
        ):
            self.bomb(
                f"{consumed} compressed bytes expanded to {self.expanded} bytes, a "
                f"ratio over the limit of {limits.max_compression_ratio}"
            )
        return not self.stopped

    def bomb(self, message: str) -> None:
        self.stopped = True
        self.add(
            "archive.bomb",
            Severity.HIGH,
            f"{message}, so the gate stopped expanding it and did not inspect the rest",
            "Do not unpack this archive: it is built to exhaust disk or memory. "
            "If the content is legitimate, ask the producer for the files "
            "uncompressed or split into smaller archives.",
            expanded=self.expanded,
        )

    def stop(
        self,
        rule: str,
        message: str,
        remediation: str = RECOPY,
        *,
        offset: int | None = None,
        **details: Any,
    ) -> None:
        """Report a MEDIUM problem that ends the walk, such as corrupt or truncated data."""
        self.stopped = True
        self.add(rule, Severity.MEDIUM, message, remediation, offset=offset, **details)

    def timed_out(self) -> bool:
        """Report once that the time budget ran out; return whether the walk is over."""
        if self.ctx.expired() and not self.stopped:
            self.stop(
                "archive.timeout",
                "the scan ran out of time, so the rest of the archive was not inspected",
                "Have a reviewer inspect the archive, or raise the time budget for "
                "this file and admit it again.",
            )
        return self.stopped

    def _member_findings(self) -> list[Finding]:
        findings = []
        for (rule, severity), names in self._flagged.items():
            one, several, remediation = _MEMBER_RULES[(rule, severity)]
            template = one if len(names) == 1 else several
            findings.append(
                self.finding(
                    rule,
                    severity,
                    template.format(count=len(names), names=list_names(names)),
                    remediation,
                    members=names[:_MAX_FACT_NAMES],
                    member_count=len(names),
                )
            )
        return findings


# --- Decompressors ----------------------------------------------------------------


class _Codec(Protocol):
    """The incremental decompressor interface of bz2, lzma and compression.zstd."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes: ...


class _ZlibCodec:
    """Adapts zlib's decompressobj to the bz2 and lzma decompressor interface."""

    def __init__(self, wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)

    @property
    def eof(self) -> bool:
        return self._inner.eof

    @property
    def needs_input(self) -> bool:
        return not self._inner.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._inner.unused_data

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes:
        tail = self._inner.unconsumed_tail
        if tail:
            data = tail + bytes(data)
        return self._inner.decompress(data, max(max_length, 0))


class _ZFileCodec(_ZlibCodec):
    """joblib's ZF files: ``ZF``, the length in hex padded to 19 characters, then zlib."""

    def __init__(self) -> None:
        super().__init__(zlib.MAX_WBITS)
        self._header = bytearray()

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes:
        if len(self._header) <= _KIND_BYTES:
            taken = data[: _KIND_BYTES + 1 - len(self._header)]
            self._header += taken
            data = data[len(taken) :]
            if len(self._header) <= _KIND_BYTES:
                return b""
            # Files from joblib 0.8.4 and older pad the length one character
            # wider; zlib data never starts with a space.
            if self._header[_KIND_BYTES:] != b" ":
                data = bytes(self._header[_KIND_BYTES:]) + bytes(data)
        return super().decompress(data, max_length)


def _open_codec(kind: str) -> _Codec | None:
    """Return a fresh decompressor for ``kind``, or None when none is installed."""
    if kind == "gzip":
        return _ZlibCodec(16 + zlib.MAX_WBITS)
    if kind == "zlib":
        return _ZlibCodec(zlib.MAX_WBITS)
    if kind == "zfile":
        return _ZFileCodec()
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_LZMA_MEMORY_LIMIT)
    if kind == "lzma":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=_LZMA_MEMORY_LIMIT)
    if kind == "zstd":
        return _zstd_decompressor()
    if kind == "lz4":
        return _lz4_decompressor()
    return None


def _zstd_decompressor() -> _Codec | None:
    # compression.zstd is in the standard library from Python 3.14, and
    # backports.zstd provides it for older versions (py7zr depends on it).
    # The zstandard package is not used: its decompressobj cannot bound the
    # output of one call.
    for module_name in ("compression.zstd", "backports.zstd"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        codec: _Codec = module.ZstdDecompressor()
        return codec
    return None


def _lz4_decompressor() -> _Codec | None:
    try:
        module = importlib.import_module("lz4.frame")
    except ImportError:
        return None
    codec: _Codec = module.LZ4FrameDecompressor()
    return codec


def _codec_errors() -> tuple[type[BaseException], ...]:
    # lz4.frame reports corrupt frames as RuntimeError.
    errors: list[type[BaseException]] = [
        zlib.error,
        OSError,
        lzma.LZMAError,
        EOFError,
        ValueError,
        RuntimeError,
    ]
    for module_name in ("compression.zstd", "backports.zstd"):
        try:
            errors.append(importlib.import_module(module_name).ZstdError)
        except ImportError:
            continue
    return tuple(errors)


_CODEC_ERRORS = _codec_errors()


# --- Single-stream decompression ---------------------------------------------------


class _Stream:
    """Decompresses one compressed stream and passes the output to its reader."""

    def __init__(self, owner: ArchiveScanner, kind: str | None) -> None:
        self.owner = owner
        self.kind = kind
        self.codec: _Codec | None = None
        self.started = False
        self.input_head = bytearray()
        self.pending = bytearray()
        self.consumed = 0
        self.streams = 0
        self.gap = bytearray()
        self.ignoring = False
        self.output_head = bytearray()
        self.reader: TarWalker | MemberSink | None = None

    def feed(self, chunk: memoryview) -> None:
        if len(self.input_head) < _GZIP_HEAD_BYTES:
            self.input_head += chunk[: _GZIP_HEAD_BYTES - len(self.input_head)]
        view = chunk
        if self.pending:
            taken = view[: _INPUT_SLICE - len(self.pending)]
            self.pending += taken
            view = view[len(taken) :]
            if len(self.pending) < _INPUT_SLICE:
                return
            self._slice(memoryview(bytes(self.pending)))
            self.pending.clear()
        while len(view) >= _INPUT_SLICE:
            self._slice(view[:_INPUT_SLICE])
            view = view[_INPUT_SLICE:]
        self.pending += view

    def _slice(self, piece: memoryview) -> None:
        """Decompress one input slice; slices start at multiples of _INPUT_SLICE."""
        if self.owner.stopped or self.ignoring or self.owner.timed_out():
            return
        if not self.started and not self._begin():
            return
        self.consumed += len(piece)
        data: bytes | memoryview = piece
        while len(data) and not self.owner.stopped and not self.ignoring:
            if self.codec is None:
                data = self._between_streams(data)
            else:
                data = self._decompress(self.codec, data)

    def _begin(self) -> bool:
        """Pick the codec from the format or the first bytes; return whether it opened."""
        self.started = True
        if self.kind is None:
            self.kind = compression_kind(bytes(self.input_head))
        if self.kind is None:
            self.owner.stop(
                "archive.unsupported-compression",
                "the file is compressed with a method the gate does not recognise, "
                "so its content was not inspected",
                UNPACK,
            )
            return False
        self.owner.note("compression", self.kind)
        self.codec = _open_codec(self.kind)
        if self.codec is None:
            package = _CODEC_PACKAGES.get(self.kind, f"a {self.kind} decompressor")
            self.owner.stop(
                "archive.unsupported-compression",
                f"the file is {self.kind}-compressed, but no {self.kind} "
                "decompressor is installed, so its content was not inspected",
                f"Install {package} next to attestgate and admit the file again, or "
                "have a reviewer inspect it.",
                compression=self.kind,
            )
            return False
        return True

    def _decompress(self, codec: _Codec, data: bytes | memoryview) -> bytes:
        """Decompress input; return the bytes that follow the end of the stream."""
        out = self._call(codec, data)
        while out:
            self._emit(out)
            if self.owner.stopped or codec.eof:
                break
            if len(out) < _OUTPUT_STEP and codec.needs_input:
                break
            out = self._call(codec, b"")
        if out is None or not codec.eof:
            return b""
        self.codec = None
        self.streams += 1
        return bytes(codec.unused_data)

    def _call(self, codec: _Codec, data: bytes | memoryview) -> bytes | None:
        """Run the decompressor once; report corrupt data and return None on failure."""
        try:
            return codec.decompress(data, _OUTPUT_STEP)
        except _CODEC_ERRORS as exc:
            self.owner.stop(
                "archive.corrupt",
                f"the {self.kind} data is corrupt within the first {self.consumed} "
                f"compressed bytes: {type(exc).__name__}: {shorten(str(exc))}",
                offset=self.consumed,
            )
            return None

    def _between_streams(self, data: bytes | memoryview) -> bytes:
        """Start the next stream of a multi-stream file, or report trailing data."""
        self.gap += data
        content = bytes(self.gap).lstrip(b"\x00")
        magics = _NEXT_STREAM_MAGIC.get(self.kind or "", ())
        if not content:
            # Zero padding between or after streams is ignored, as gzip does.
            self.gap.clear()
            return b""
        if any(content.startswith(magic) for magic in magics):
            self.gap.clear()
            self.codec = _open_codec(self.kind or "")
            return content
        if any(magic.startswith(content) for magic in magics):
            self.gap = bytearray(content)
            return b""
        self._trailing()
        return b""

    def _trailing(self) -> None:
        self.ignoring = True
        self.owner.add(
            "archive.trailing-data",
            Severity.MEDIUM,
            f"bytes that are not {self.kind} data follow the end of the compressed "
            "stream; decompressors ignore them, so they can carry content that no "
            "tool shows",
            RECOPY,
        )

    def _emit(self, data: bytes) -> None:
        if not self.owner.expand(len(data), self.consumed):
            return
        if self.reader is None:
            taken = data[: SNIFF_BYTES - len(self.output_head)]
            self.output_head += taken
            if len(self.output_head) < SNIFF_BYTES:
                return
            self._open_reader()
            data = data[len(taken) :]
        if data:
            self._write(data)

    def _open_reader(self) -> None:
        """Pick the reader of the expanded stream from its first bytes."""
        head = bytes(self.output_head)
        name = self._inner_name()
        limits = self.owner.ctx.limits
        size_hint = len(head) if len(head) < SNIFF_BYTES else limits.max_expanded_bytes
        fmt = sniff(head, size_hint, name)
        if fmt is Format.TAR or (fmt in TAR_LOOKALIKES and is_tar_header(head)):
            # A compressed tar: its members are located in this file directly.
            self.reader = TarWalker(self.owner, self.owner.ctx)
        else:
            self.reader = MemberSink(self.owner, self.owner.ctx.member(name, None), name)
        self.owner.note("inner_name", name)
        self._write(head)

    def _write(self, data: bytes | memoryview) -> None:
        assert self.reader is not None
        self.reader.write(data)
        if isinstance(self.reader, TarWalker) and self.reader.done:
            # The walk stopped at a limit or a corrupt header: stop expanding too.
            self.ignoring = True

    def _inner_name(self) -> str:
        stored = _gzip_name(bytes(self.input_head)) if self.kind == "gzip" else None
        if stored:
            return stored
        name = base_name(self.owner.ctx.file)
        lower = name.lower()
        for suffix, replacement in _SUFFIXES.items():
            if lower.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)] + replacement
        return name

    def finish(self) -> None:
        """Decompress the last partial slice, report truncation, and close the reader."""
        owner = self.owner
        if self.pending or not self.started:
            self._slice(memoryview(bytes(self.pending)))
            self.pending.clear()
        if self.codec is not None and not owner.stopped and not self.ignoring:
            owner.stop(
                "archive.truncated",
                f"the {self.kind} stream ends after {self.consumed} compressed bytes, "
                "before its end marker, so the file is truncated",
                offset=self.consumed,
            )
        elif self.gap and not self.ignoring and not owner.stopped:
            self._trailing()

        if self.reader is None and self.output_head:
            self._open_reader()
        if isinstance(self.reader, TarWalker):
            self.reader.finish()
        elif self.reader is not None:
            owner.extend(self.reader.close())
        owner.note("streams", self.streams)


def _gzip_name(head: bytes) -> str | None:
    """Return the file name stored in a gzip header (RFC 1952, FNAME), if any."""
    if len(head) < 10 or not head[3] & 0x08:
        return None
    position = 10
    if head[3] & 0x04:
        if len(head) < 12:
            return None
        position += 2 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\x00", position)
    if end < 0:
        return None
    # Only the last path component names the stream; the stored name is
    # never used as a path.
    name = re.split(r"[/\\]", head[position:end].decode("latin-1"))[-1]
    return shorten(name) or None
