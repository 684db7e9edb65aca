"""Check zip archives and the model formats built on zip.

The scanner classifies an archive as a PyTorch checkpoint, a TorchScript
archive, a Keras 3 model, a NumPy ``.npz``, a wheel or a plain zip.

``torch.save`` (since PyTorch 1.6) and ``torch.jit.save`` write members with
data descriptors (general-purpose flag bit 3) and zero sizes in the local
headers, so members cannot be delimited while the file streams past. The
scanner therefore only counts bytes in ``feed``. In ``close`` it rereads the
same file through ``read_at``. It bounds and checks the end of central
directory record and the central directory itself, and then reads members
through the standard library's ``zipfile``.
"""

from __future__ import annotations

import copy
import lzma
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import SNIFF_BYTES, Format, sniff
from attestgate.scanners import open_scanner
from attestgate.scanners.interface import MiB, ReadAt, ScanContext, Scanner, ScanResult
from attestgate.scanners.pickle_scanner import with_pickle_probe

# Compressed members up to this size are kept in memory while they are
# scanned, so that their scanner can reread them. A larger compressed archive
# nested inside is reported instead of parsed.
MAX_MEMBER_BYTES = 256 * MiB
# A central directory entry is 46 bytes plus name, extra field and comment.
# silero_vad.jit, written by torch.jit.save, uses 112 bytes per entry. zipfile
# reads the whole directory in one call, so the directory may take at most
# this many bytes per allowed member.
_DIRECTORY_BYTES_PER_MEMBER = 1024
# The compression ratio is judged only for members that expand to at least
# this much, so that small, very regular files (a run of zeros) pass.
_RATIO_MIN_BYTES = 1 * MiB
_STREAM_CHUNK = 1 * MiB
_MAX_LISTED = 20
# Scan results that show a member was a pickle.
_PICKLE_RESULTS = frozenset({Format.PICKLE, Format.PYTORCH_LEGACY})
_MAX_FACT_NAMES = 100

_SUPPORTED_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_FLAG_ENCRYPTED = 0x1
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
_S_IFMT = 0o170000
_S_IFLNK = 0o120000

# Record layouts, the same as the struct formats in CPython 3.11's zipfile.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_CENTRAL_ENTRY = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_MAX_COMMENT = 0xFFFF

# Errors that zipfile and the decompressors raise on damaged or unsupported
# members. RuntimeError is zipfile's "password required" error.
_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
    struct.error,
)

_REVIEW_ARCHIVE = (
    "Do not extract or load this archive. Obtain a clean copy from the producer, "
    "or re-export the model from a trusted copy (for PyTorch weights, prefer "
    "safetensors.torch.save_file) and admit the new file."
)
_RECOPY = (
    "The archive is damaged or uses features the gate cannot read. Copy it again "
    "from its source and compare its digest with the published one; if it stays "
    "unreadable, re-export it with zipfile or torch.save."
)


# Rules about single central directory entries: severity, message for one
# member and for several, and remediation. One finding per rule lists every
# member that it applies to.
_ENTRY_RULES: dict[str, tuple[Severity, tuple[str, str], str]] = {
    "zip.path-traversal": (
        Severity.HIGH,
        (
            "a member name leaves the extraction folder through a '..' part, an "
            "absolute path, a drive letter, a backslash or a NUL byte: {names}",
            "{count} member names leave the extraction folder through a '..' "
            "part, an absolute path, a drive letter, a backslash or a NUL byte: "
            "{names}",
        ),
        _REVIEW_ARCHIVE,
    ),
    "zip.encrypted": (
        Severity.MEDIUM,
        (
            "a member is encrypted, so the gate cannot inspect it: {names}",
            "{count} members are encrypted, so the gate cannot inspect them: {names}",
        ),
        "Ask the producer for an unencrypted archive, because the gate admits "
        "only content that it can read.",
    ),
    "zip.unsupported-compression": (
        Severity.MEDIUM,
        (
            "a member uses a compression method other than stored, deflate, "
            "bzip2 or lzma, so the gate cannot inspect it: {names}",
            "{count} members use a compression method other than stored, "
            "deflate, bzip2 or lzma, so the gate cannot inspect them: {names}",
        ),
        _RECOPY,
    ),
    "zip.link": (
        Severity.MEDIUM,
        (
            "a member is a symbolic link, which can point outside the "
            "extraction folder when unpacked: {names}",
            "{count} members are symbolic links, which can point outside the "
            "extraction folder when unpacked: {names}",
        ),
        "Replace the links with the files they point to, or have a reviewer "
        "check every link target before the archive is unpacked.",
    ),
    "zip.duplicate-name": (
        Severity.HIGH,
        (
            "a member name appears more than once, so different tools can read "
            "different content under the same name: {names}",
            "{count} member names appear more than once, so different tools can "
            "read different content under the same name: {names}",
        ),
        _REVIEW_ARCHIVE,
    ),
}


class _CorruptArchive(Exception):
    """The end of central directory record or the directory is invalid."""


@dataclass(frozen=True)
class _Directory:
    """Position of the central directory, computed the way zipfile does.

    ``start`` is the offset at which zipfile reads the directory, right
    before the end records. The ``declared`` fields are the offsets that the
    end records state. Readers such as miniz read the directory there.
    """

    start: int
    size: int
    declared_start: int
    declared_entries: int
    zip64_start: int | None = None
    zip64_declared_start: int | None = None


@dataclass
class _Member:
    """A central directory entry with what the local header added."""

    info: zipfile.ZipInfo
    data_start: int = -1
    readable: bool = True
    flagged: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.info.orig_filename


class _ReadAtFile:
    """A read-only, seekable file over a ``ReadAt`` of known size, for zipfile."""

    def __init__(self, read_at: ReadAt, size: int) -> None:
        self._read_at = read_at
        self._size = size
        self._position = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._size}[whence]
        if base + offset < 0:
            # zipfile relies on OSError for a seek before the start.
            raise OSError(f"seek to {base + offset} before the start of the archive")
        self._position = base + offset
        return self._position

    def read(self, size: int = -1) -> bytes:
        remaining = max(self._size - self._position, 0)
        length = remaining if size is None or size < 0 else min(size, remaining)
        data = self._read_at(self._position, length) if length else b""
        self._position += len(data)
        return data

    def close(self) -> None:
        return None


class ZipScanner(Scanner):
    """Checks archive safety and scans the pickles and code members inside."""

    check = "zip"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._size = 0
        self._findings: list[Finding] = []
        self._facts: dict[str, Any] = {}
        self._directory: _Directory | None = None
        self._timed_out = False

    def feed(self, chunk: memoryview) -> None:
        self._size += len(chunk)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        """Parse the archive through ``read_at`` and scan its members.

        1. Reject archives nested deeper than the limit and streams that
           cannot be reread.
        2. Locate the central directory and count its entries before zipfile
           reads it, so that a hostile directory cannot exhaust memory.
        3. Check every entry's name, flags, method and declared sizes.
        4. Compare each local header with its directory entry, and check that
           no two members share bytes.
        5. Classify the archive, report TorchScript code, and scan every
           member that a scanner applies to (pickles, JSON, Python, nested
           archives and the rest), except tensor data and TorchScript code.
        """
        result = ScanResult(findings=self._findings, facts=self._facts)
        limits = self.ctx.limits
        if self.ctx.depth > limits.max_nesting_depth:
            self._add(
                "zip.too-deep",
                Severity.MEDIUM,
                f"the archive is nested {self.ctx.depth} containers deep, over "
                f"the limit of {limits.max_nesting_depth}, so it was not opened",
                "Unpack the outer archives and admit the inner files directly, "
                "or have a reviewer inspect the nested archive by hand.",
                depth=self.ctx.depth,
            )
            return result
        if read_at is None:
            self._add(
                "zip.unreadable",
                Severity.MEDIUM,
                "the archive arrived as a stream that cannot be read twice, so "
                "its central directory and members were not inspected",
                "Admit the archive as a file on disk so that the gate can read "
                "its central directory.",
            )
            return result

        members = self._open(read_at)
        if members is None:
            return result
        zf, entries = members
        with zf:
            kind = _classify([member.name for member in entries])
            result.format = kind
            self._facts.update(members=len(entries), archive_kind=kind.value)
            self._check_entries(entries)
            self._check_local_headers(read_at, entries)
            if kind is Format.TORCHSCRIPT:
                self._report_code(entries)
            if kind is Format.KERAS:
                self._scan_keras_config(zf, entries)
            if kind is Format.WHEEL:
                self._scan_wheel(zf, entries)
            self._scan_members(zf, read_at, entries, kind)
        return result

    # --- Step 2: the central directory ---------------------------------------

    def _open(self, read_at: ReadAt) -> tuple[zipfile.ZipFile, list[_Member]] | None:
        limits = self.ctx.limits
        try:
            directory = _locate_directory(read_at, self._size)
            allowance = limits.max_archive_members * _DIRECTORY_BYTES_PER_MEMBER
            if directory.size > allowance:
                self._too_many(
                    f"the central directory is {directory.size} bytes, more than "
                    f"the {allowance} bytes allowed for "
                    f"{limits.max_archive_members} members"
                )
                return None
            count = _count_entries(read_at, directory, limits.max_archive_members)
            if count > limits.max_archive_members:
                self._too_many(
                    f"the archive has more than {limits.max_archive_members} members, the limit"
                )
                return None
            zf = zipfile.ZipFile(_ReadAtFile(read_at, self._size))
        except (_CorruptArchive, *_MEMBER_ERRORS) as exc:
            self._add(
                "zip.corrupt",
                Severity.MEDIUM,
                f"the archive cannot be parsed: {exc}",
                _RECOPY,
            )
            return None

        self._directory = directory
        self._check_end_records(directory, count)
        return zf, [_Member(info) for info in zf.infolist()]

    def _check_end_records(self, directory: _Directory, count: int) -> None:
        """Report end records that readers can interpret in different ways."""
        placements = [(directory.declared_start, directory.start, "central directory")]
        if directory.zip64_start is not None:
            assert directory.zip64_declared_start is not None
            placements.append(
                (directory.zip64_declared_start, directory.zip64_start, "zip64 record")
            )
        for declared, actual, record in placements:
            if declared != actual:
                self._add(
                    "zip.header-mismatch",
                    Severity.HIGH,
                    f"the end records place the {record} at offset {declared}, but "
                    f"it sits at offset {actual}; readers that trust the declared "
                    "offset and readers that search from the end, as zipfile "
                    "does, see different members",
                    _REVIEW_ARCHIVE,
                    offset=actual,
                    declared=declared,
                )
        if directory.declared_entries != count:
            self._add(
                "zip.corrupt",
                Severity.MEDIUM,
                f"the end record declares {directory.declared_entries} members, "
                f"but the central directory holds {count}",
                _RECOPY,
            )

    def _too_many(self, message: str) -> None:
        self._add(
            "zip.too-many-members",
            Severity.MEDIUM,
            message + ", so its members were not inspected",
            "Split the content into smaller archives, or have a reviewer "
            "inspect this archive by hand.",
        )

    # --- Step 3: names, flags, methods and declared sizes ---------------------

    def _check_entries(self, entries: list[_Member]) -> None:
        flagged: dict[str, list[str]] = {rule: [] for rule in _ENTRY_RULES}
        seen: set[str] = set()
        for member in entries:
            info = member.info
            if _unsafe_name(member.name):
                flagged["zip.path-traversal"].append(member.name)
            if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
                flagged["zip.encrypted"].append(member.name)
                member.readable = False
            if info.compress_type not in _SUPPORTED_METHODS:
                label = f"{member.name} (method {info.compress_type})"
                flagged["zip.unsupported-compression"].append(label)
                member.readable = False
            if (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
                flagged["zip.link"].append(member.name)
            if member.name in seen:
                flagged["zip.duplicate-name"].append(member.name)
            seen.add(member.name)

        for rule, names in flagged.items():
            severity, templates, remediation = _ENTRY_RULES[rule]
            self._report_names(rule, severity, names, templates, remediation)
        self._check_sizes(entries)

    def _check_sizes(self, entries: list[_Member]) -> None:
        limits = self.ctx.limits
        compressed = [m for m in entries if m.info.compress_type != zipfile.ZIP_STORED]
        bombs: list[str] = []
        for member in compressed:
            info = member.info
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= _RATIO_MIN_BYTES and ratio > limits.max_compression_ratio:
                member.flagged.add("zip.bomb")
                bombs.append(
                    f"{member.name} ({info.file_size} bytes from "
                    f"{info.compress_size}, ratio {ratio:.0f})"
                )
        self._report_names(
            "zip.bomb",
            Severity.HIGH,
            bombs,
            (
                "a member declares a compression ratio over the limit of "
                f"{limits.max_compression_ratio}: {{names}}",
                "{count} members declare a compression ratio over the limit of "
                f"{limits.max_compression_ratio}: {{names}}",
            ),
            _REVIEW_ARCHIVE,
        )

        expanded = sum(member.info.file_size for member in compressed)
        if expanded > limits.max_expanded_bytes:
            for member in compressed:
                member.flagged.add("zip.bomb")
            self._add(
                "zip.bomb",
                Severity.HIGH,
                f"the compressed members declare {expanded} bytes in total, over "
                f"the limit of {limits.max_expanded_bytes} bytes",
                _REVIEW_ARCHIVE,
                expanded=expanded,
            )

    # --- Step 4: local headers and overlaps -----------------------------------

    def _check_local_headers(self, read_at: ReadAt, entries: list[_Member]) -> None:
        problems: dict[str, list[str]] = {"zip.header-mismatch": [], "zip.corrupt": []}
        for member in entries:
            problem = _read_local_header(read_at, member)
            if problem is not None:
                member.readable = False
                rule, text = problem
                problems[rule].append(f"{member.name} ({text})")

        self._report_names(
            "zip.header-mismatch",
            Severity.HIGH,
            problems["zip.header-mismatch"],
            (
                "a local header disagrees with the central directory, so tools "
                "that read the archive front to back see a different member: "
                "{names}",
                "{count} local headers disagree with the central directory, so "
                "tools that read the archive front to back see different "
                "members: {names}",
            ),
            _REVIEW_ARCHIVE,
        )
        self._report_names(
            "zip.corrupt",
            Severity.MEDIUM,
            problems["zip.corrupt"],
            (
                "a member has a damaged local header: {names}",
                "{count} members have damaged local headers: {names}",
            ),
            _RECOPY,
        )
        self._check_overlaps(entries)

    def _check_overlaps(self, entries: list[_Member]) -> None:
        """Check that member spans are disjoint and end before the directory."""
        assert self._directory is not None
        directory_start = self._directory.start
        placed = [m for m in entries if m.data_start >= 0]
        placed.sort(key=lambda m: (m.info.header_offset, m.data_start))
        overlaps: list[str] = []
        overruns: list[str] = []
        cursor = 0
        owner: _Member | None = None
        for member in placed:
            end = member.data_start + member.info.compress_size
            if owner is not None and member.info.header_offset < cursor:
                owner.flagged.add("zip.bomb")
                member.flagged.add("zip.bomb")
                overlaps.append(f"{owner.name} and {member.name}")
            if end > directory_start:
                # miniz, which torch.load uses, reads such a member anyway.
                overruns.append(f"{member.name} (ends at offset {end})")
            if owner is None or end > cursor:
                cursor, owner = end, member

        self._report_names(
            "zip.bomb",
            Severity.HIGH,
            overlaps,
            (
                "two members share archive bytes, which is how some zip bombs "
                "reach huge sizes: {names}",
                "{count} pairs of members share archive bytes, which is how some "
                "zip bombs reach huge sizes: {names}",
            ),
            _REVIEW_ARCHIVE,
        )
        self._report_names(
            "zip.corrupt",
            Severity.MEDIUM,
            overruns,
            (
                f"a member runs into the central directory at offset {directory_start}: {{names}}",
                "{count} members run into the central directory at offset "
                f"{directory_start}: {{names}}",
            ),
            _RECOPY,
        )

    # --- Step 5: classification and member scans ------------------------------

    def _report_code(self, entries: list[_Member]) -> None:
        code = [m.name for m in entries if _is_torchscript_code(m.name)]
        if not code:
            return
        self._add(
            "torchscript.embedded-code",
            Severity.MEDIUM,
            f"the TorchScript archive contains {len(code)} code members that the "
            "TorchScript runtime compiles and runs when the model is loaded: " + _list_names(code),
            "Prefer a safetensors or ONNX export of this model, which carries no "
            "code. If TorchScript is required, have a reviewer read the listed "
            "code members and approve this digest.",
            code_members=code[:_MAX_FACT_NAMES],
            code_member_count=len(code),
        )

    def _scan_keras_config(self, zf: zipfile.ZipFile, entries: list[_Member]) -> None:
        # Imported here, so that a failure in the Keras module affects only
        # .keras archives.
        from attestgate.scanners.keras_scanner import scan_keras_zip_members

        by_name = {member.name: member for member in reversed(entries)}
        limit = self.ctx.limits.max_json_bytes

        def read_member(name: str) -> bytes | None:
            member = by_name.get(name)
            if member is None or not member.readable or member.flagged:
                return None
            if member.info.file_size > limit:
                return None
            try:
                with zf.open(member.info) as stream:
                    return stream.read(limit)
            except _MEMBER_ERRORS as exc:
                self._corrupt_member(member, exc)
                return None

        keras = scan_keras_zip_members(list(by_name), read_member, self.ctx)
        self._findings.extend(keras.findings)
        self._facts["keras"] = keras.facts

    def _scan_wheel(self, zf: zipfile.ZipFile, entries: list[_Member]) -> None:
        # Imported here, so that a failure in the wheel checks affects only wheels.
        from attestgate.deps.wheel import scan_wheel_members

        by_name = {member.name: member for member in reversed(entries)}

        def read_member(name: str) -> bytes:
            member = by_name[name]
            if not member.readable or member.flagged:
                raise ValueError(f"member {name} was not read: it failed an earlier check")
            with zf.open(member.info) as stream:
                # RECORD hashes cover whole members; the member-count and
                # expansion limits were checked before this point.
                return stream.read()

        self._findings.extend(scan_wheel_members(list(by_name), read_member, self.ctx))

    def _scan_members(
        self,
        zf: zipfile.ZipFile,
        read_at: ReadAt,
        entries: list[_Member],
        kind: Format,
    ) -> None:
        pickles: list[str] = []
        scanned = 0
        for member in entries:
            if self._timed_out:
                break
            if self.ctx.expired():
                self._timeout(f"after {scanned} of {len(entries)} members")
                break
            if not member.readable or member.flagged or _skip_member(member, kind):
                continue

            sniffed = self._member_format(zf, member)
            if sniffed is None:
                continue
            fmt, head = sniffed
            result = self._scan_member(zf, read_at, member, fmt, head, kind)
            if result is None or (fmt is Format.MAYBE_PICKLE and result.format is None):
                # Nothing ran, or the maybe-pickle scan found text.
                continue
            scanned += 1
            if fmt is Format.PICKLE or result.format in _PICKLE_RESULTS:
                pickles.append(member.name)

        self._facts["members_scanned"] = scanned
        self._facts["pickle_members_scanned"] = pickles[:_MAX_FACT_NAMES]

    def _member_format(self, zf: zipfile.ZipFile, member: _Member) -> tuple[Format, bytes] | None:
        """Sniff a member's first bytes; return the format to scan it as and the bytes."""
        try:
            with zf.open(_without_crc(member.info)) as stream:
                head = stream.read(SNIFF_BYTES)
        except _MEMBER_ERRORS as exc:
            self._corrupt_member(member, exc)
            return None

        fmt = sniff(head, member.info.file_size, member.name)
        # torch.load finds data.pkl with miniz, which compares names without
        # regard to case, so DATA.PKL is loaded too. pickle.load reads
        # whatever bytes such a member holds.
        if member.name.lower().endswith(".pkl") and fmt is not Format.PICKLE:
            fmt = Format.MAYBE_PICKLE
        return fmt, head

    def _scan_member(
        self,
        zf: zipfile.ZipFile,
        read_at: ReadAt,
        member: _Member,
        fmt: Format,
        head: bytes,
        kind: Format,
    ) -> ScanResult | None:
        """Stream one member through its scanners; return the result, or None if none ran.

        A stored member is reread straight from the archive, so it never
        lives in memory. A compressed member of at most MAX_MEMBER_BYTES is
        kept in memory, so that its scanner can reread it. A larger one is
        streamed without ``read_at``. A larger nested archive is reported
        instead, because it cannot be parsed without ``read_at``.

        torch.load reads members without checking their CRC-32, so the member
        is read without the check too. A damaged or truncated member is still
        scanned up to where it breaks, and its findings stand beside the
        zip.corrupt finding instead of being replaced by it.
        """
        info = member.info
        ctx = self.ctx.member(member.name, info.file_size, kind.value)
        scanner = with_pickle_probe(open_scanner(fmt, ctx), fmt, head, ctx)
        if scanner is None:
            return None

        stored = info.compress_type == zipfile.ZIP_STORED
        in_memory = not stored and info.file_size <= MAX_MEMBER_BYTES
        if not stored and not in_memory and fmt is Format.ZIP:
            self._add(
                "zip.member-too-large",
                Severity.MEDIUM,
                f"nested archive {member.name!r} expands to {info.file_size} "
                f"bytes, over the {MAX_MEMBER_BYTES} bytes the gate reads into "
                "memory, so it was not inspected",
                "Store the nested archive uncompressed, or unpack it and admit its files directly.",
                member=member.name,
            )
            return None

        buffered = bytearray()
        crc = 0
        error: BaseException | None = None
        try:
            for chunk in _member_chunks(zf, info):
                if self.ctx.expired():
                    self._timeout(f"while reading member {member.name!r}")
                    break
                scanner.feed(memoryview(chunk))
                crc = zlib.crc32(chunk, crc)
                if in_memory:
                    buffered += chunk
        except _MEMBER_ERRORS as exc:
            error = exc

        member_read_at: ReadAt | None = None
        if stored:
            member_read_at = _slice_read_at(read_at, member.data_start, info.compress_size)
        elif in_memory:
            member_read_at = _slice_read_at(_bytes_read_at(buffered), 0, len(buffered))
        result = scanner.close(member_read_at)
        self._findings.extend(result.findings)
        if error is not None:
            self._corrupt_member(member, error)
        elif not self._timed_out and crc != info.CRC:
            self._add(
                "zip.corrupt",
                Severity.MEDIUM,
                f"member {member.name!r} fails its CRC-32 check: the directory "
                f"records {info.CRC:08x}, its content gives {crc:08x}",
                _RECOPY,
                member=member.name,
            )
        return result

    def _timeout(self, where: str) -> None:
        self._timed_out = True
        self._add(
            "zip.timeout",
            Severity.MEDIUM,
            f"the scan ran out of time {where}, so the rest of the archive was not inspected",
            "Have a reviewer inspect the archive, or raise the time budget for "
            "this file and admit it again.",
        )

    def _corrupt_member(self, member: _Member, exc: BaseException) -> None:
        self._add(
            "zip.corrupt",
            Severity.MEDIUM,
            f"member {member.name!r} cannot be read: {exc}",
            _RECOPY,
            member=member.name,
        )

    # --- Findings ---------------------------------------------------------------

    def _report_names(
        self,
        rule: str,
        severity: Severity,
        names: list[str],
        templates: tuple[str, str],
        remediation: str,
    ) -> None:
        """Report one finding that lists ``names``, if there are any.

        ``templates`` contains the message for one name and the message for
        several, with the ``{count}`` and ``{names}`` fields.
        """
        if names:
            template = templates[0] if len(names) == 1 else templates[1]
            self._add(
                rule,
                severity,
                template.format(count=len(names), names=_list_names(names)),
                remediation,
                members=names[:_MAX_FACT_NAMES],
                member_count=len(names),
            )

    def _add(
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


class AppendedZipScanner(ZipScanner):
    """Finds a zip archive appended to a file whose first bytes are something else.

    zipfile, unzip and the loaders built on them (Keras) look for the end of
    central directory record near the end of a file and accept any bytes
    before the archive. Text, a safetensors file or a native binary with a
    zip at its end is therefore a zip to them. The archive is reported and its
    members are scanned; a tail that only looks like an end record, but
    leads to no central directory that zipfile reads, is not reported.
    """

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, Format.ZIP)
        self._tail = b""

    def feed(self, chunk: memoryview) -> None:
        super().feed(chunk)
        keep = _EOCD.size + _MAX_COMMENT
        if len(chunk) >= keep:
            self._tail = bytes(chunk[-keep:])
        else:
            self._tail = (self._tail + bytes(chunk))[-keep:]

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        signature = self._tail.rfind(_EOCD_SIGNATURE)
        if read_at is None or signature < 0 or signature + _EOCD.size > len(self._tail):
            return ScanResult()
        archive = super().close(read_at)
        if "members" not in archive.facts:
            return ScanResult()
        appended = self.finding(
            "zip.appended",
            Severity.MEDIUM,
            f"a zip archive with {archive.facts['members']} members is appended to the "
            "file: zipfile, unzip and Keras read it, although the file does not start "
            "like an archive",
            "Ask the producer why the file carries an archive, and admit the archive's "
            "content as separate files if it is needed.",
        )
        return ScanResult(
            findings=[appended, *archive.findings], facts={"appended_zip": archive.facts}
        )


def _locate_directory(read_at: ReadAt, size: int) -> _Directory:
    """Find the central directory the way zipfile 3.11 does.

    zipfile first expects the end of central directory record in the last 22
    bytes, then searches the last 64 KiB for its signature, and takes zip64
    values from a zip64 record right before the locator. It reads the
    directory right before those records, whatever offset they declare.
    """
    if size < _EOCD.size:
        raise _CorruptArchive(f"the file has only {size} bytes")
    tail_start = max(size - _EOCD.size - _MAX_COMMENT, 0)
    tail = read_at(tail_start, size - tail_start)
    position = len(tail) - _EOCD.size
    at_end = tail[position : position + 4] == _EOCD_SIGNATURE
    if not (at_end and tail.endswith(b"\0\0")):
        position = tail.rfind(_EOCD_SIGNATURE)
        if position < 0 or position + _EOCD.size > len(tail):
            raise _CorruptArchive("no end of central directory record was found")
    fields = _EOCD.unpack_from(tail, position)
    location = tail_start + position
    entries, directory_size, directory_offset = fields[4], fields[5], fields[6]

    zip64 = _read_zip64_record(read_at, location)
    zip64_start = zip64_declared = None
    if zip64 is not None:
        entries, directory_size, directory_offset, zip64_declared = zip64
        location -= _ZIP64_EOCD.size + _ZIP64_LOCATOR.size
        zip64_start = location

    start = location - directory_size
    if start < 0:
        raise _CorruptArchive(
            f"the central directory of {directory_size} bytes does not fit "
            f"before its end record at offset {location}"
        )
    return _Directory(
        start=start,
        size=directory_size,
        declared_start=directory_offset,
        declared_entries=entries,
        zip64_start=zip64_start,
        zip64_declared_start=zip64_declared,
    )


def _read_zip64_record(read_at: ReadAt, location: int) -> tuple[int, int, int, int] | None:
    """Return the zip64 record's entries, size, offset and declared position."""
    locator_at = location - _ZIP64_LOCATOR.size
    if locator_at < 0:
        return None
    locator = read_at(locator_at, _ZIP64_LOCATOR.size)
    if len(locator) != _ZIP64_LOCATOR.size:
        return None
    signature, disk, declared_at, disks = _ZIP64_LOCATOR.unpack(locator)
    if signature != _ZIP64_LOCATOR_SIGNATURE:
        return None
    if disk != 0 or disks > 1:
        raise _CorruptArchive("archives that span several disks are not supported")

    record_at = locator_at - _ZIP64_EOCD.size
    record = read_at(record_at, _ZIP64_EOCD.size) if record_at >= 0 else b""
    if len(record) != _ZIP64_EOCD.size:
        return None
    fields = _ZIP64_EOCD.unpack(record)
    if fields[0] != _ZIP64_EOCD_SIGNATURE:
        return None
    return fields[7], fields[8], fields[9], declared_at


def _count_entries(read_at: ReadAt, directory: _Directory, limit: int) -> int:
    """Count central directory entries, stopping once the count passes ``limit``.

    The walk consumes entries until ``directory.size`` bytes are used, as
    zipfile does, so the count bounds the ZipInfo objects that zipfile builds.
    """
    data = read_at(directory.start, directory.size)
    consumed = 0
    count = 0
    while consumed < directory.size and count <= limit:
        entry = data[consumed : consumed + _CENTRAL_ENTRY.size]
        if len(entry) != _CENTRAL_ENTRY.size:
            raise _CorruptArchive(f"the central directory ends inside entry {count + 1}")
        fields = _CENTRAL_ENTRY.unpack(entry)
        if fields[0] != _CENTRAL_SIGNATURE:
            raise _CorruptArchive(
                f"central directory entry {count + 1} at offset "
                f"{directory.start + consumed} has no entry signature"
            )
        consumed += _CENTRAL_ENTRY.size + fields[12] + fields[13] + fields[14]
        count += 1
    return count


def _read_local_header(read_at: ReadAt, member: _Member) -> tuple[str, str] | None:
    """Read a member's local header and return (rule, problem), or None.

    Sets ``member.data_start``. The rule is ``zip.header-mismatch`` when the
    local header disagrees with the central directory and ``zip.corrupt``
    when it cannot be read.
    """
    info = member.info
    raw = read_at(info.header_offset, _LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        return (
            "zip.corrupt",
            f"its local header offset {info.header_offset} lies beyond the archive",
        )
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_SIGNATURE:
        return "zip.corrupt", f"no local header signature at offset {info.header_offset}"
    flags, method, name_length, extra_length = fields[3], fields[4], fields[10], fields[11]
    raw_name = read_at(info.header_offset + _LOCAL_HEADER.size, name_length)
    member.data_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length

    encoding = "utf-8" if flags & _FLAG_UTF8 else "cp437"
    local_name = raw_name.decode(encoding, errors="replace")
    if local_name != info.orig_filename:
        return "zip.header-mismatch", f"the local header names it {local_name!r}"
    if method != info.compress_type:
        return "zip.header-mismatch", (
            f"the local header gives compression method {method}, the central "
            f"directory {info.compress_type}"
        )
    return None


def _classify(names: list[str]) -> Format:
    """Tell the archive kinds that loaders treat differently from a plain zip.

    PyTorch and TorchScript archives keep everything under one top-level
    folder. A Keras 3 ``.keras`` file has ``config.json``, ``metadata.json``
    and ``model.weights.*`` at the top; ``numpy.savez`` writes only ``.npy``
    members; a wheel has ``*.dist-info/WHEEL`` and ``RECORD``.
    """
    files = [name for name in names if not name.endswith("/")]
    present = set(files)
    if {"config.json", "metadata.json"} <= present and any(
        name.startswith("model.weights.") for name in files
    ):
        return Format.KERAS
    if files and all(name.endswith(".npy") for name in files):
        return Format.NUMPY_NPZ
    dist_info = {name.split("/")[0] for name in files if _DIST_INFO.fullmatch(name)}
    if any(f"{folder}/RECORD" in present for folder in dist_info):
        return Format.WHEEL

    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or any("/" not in name for name in names):
        return Format.ZIP
    top = tops.pop()
    has_code = any(name.startswith(f"{top}/code/") for name in names)
    if has_code and f"{top}/constants.pkl" in present:
        return Format.TORCHSCRIPT
    has_version = f"{top}/version" in present or f"{top}/.data/version" in present
    if f"{top}/data.pkl" in present and has_version:
        return Format.PYTORCH_ZIP
    return Format.ZIP


_KERAS_CONFIG_MEMBERS = frozenset({"config.json", "metadata.json"})
_DIST_INFO = re.compile(r"[^/]+\.dist-info/WHEEL")
# Tensor storages of PyTorch and TorchScript archives: raw bytes that the
# loader never unpickles, already hashed by the identify step.
_TENSOR_DATA = re.compile(r"[^/]+/data/\d+")


def _skip_member(member: _Member, kind: Format) -> bool:
    if member.name.endswith("/"):
        return True
    if kind is Format.KERAS:
        # The Keras configuration check has read these already.
        return member.name in _KERAS_CONFIG_MEMBERS
    if kind in (Format.PYTORCH_ZIP, Format.TORCHSCRIPT):
        if _TENSOR_DATA.fullmatch(member.name):
            return True
        # TorchScript code is reported as a whole by torchscript.embedded-code,
        # because it is not Python that a Python loader would import.
        return kind is Format.TORCHSCRIPT and _is_torchscript_code(member.name)
    return False


def _is_torchscript_code(name: str) -> bool:
    parts = name.split("/")
    return len(parts) > 2 and parts[1] == "code" and name.endswith(".py")


def _unsafe_name(name: str) -> bool:
    if "\\" in name or "\0" in name or name.startswith("/"):
        return True
    if re.match(r"[A-Za-z]:", name):
        return True
    return ".." in name.split("/")


def _without_crc(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    # zipfile checks the CRC-32 only when the ZipInfo has one, and raises on
    # the read that reaches the end, which drops that read's bytes.
    clone = copy.copy(info)
    del clone.CRC
    return clone


def _member_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    with zf.open(_without_crc(info)) as stream:
        while chunk := stream.read(_STREAM_CHUNK):
            yield chunk


def _bytes_read_at(data: bytearray) -> ReadAt:
    def read_at(offset: int, length: int) -> bytes:
        return bytes(data[offset : offset + length])

    return read_at


def _slice_read_at(read_at: ReadAt, start: int, length: int) -> ReadAt:
    """Return a ``ReadAt`` confined to ``length`` bytes from ``start``."""

    def member_read_at(offset: int, count: int) -> bytes:
        if offset < 0 or count <= 0 or offset >= length:
            return b""
        return read_at(start + offset, min(count, length - offset))

    return member_read_at


def _list_names(names: list[str]) -> str:
    listed = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        listed += f" and {len(names) - _MAX_LISTED} more"
    return listed
