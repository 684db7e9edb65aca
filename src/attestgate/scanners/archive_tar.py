"""An incremental tar reader for the archive scanner.

The reader takes the archive's bytes in any chunks, parses each 512-byte
header (POSIX ustar, GNU and pax extensions, v7), checks the member's name,
type and link target, and streams each regular member's data into a
``MemberSink``. It keeps one header block, and at most ``_MAX_EXTENSION_BYTES``
of a GNU long name or pax record, in memory.

Members are read the way Python's tarfile (3.11) reads them, because that is
how most ML tooling unpacks: the archive ends at the first zero block, and
unknown member types are regular files.
"""

from __future__ import annotations

from attestgate.findings import Severity
from attestgate.scanners.archive_members import (
    RECOPY,
    TAR_BLOCK,
    UNPACK,
    ArchiveReport,
    MemberSink,
    display_name,
    leaves_folder,
    link_escapes,
    shorten,
    tar_checksum_ok,
    tar_number,
)
from attestgate.scanners.interface import MiB, ScanContext

# GNU long names and pax extended headers are buffered up to this size.
_MAX_EXTENSION_BYTES = 1 * MiB
_ZERO_BLOCK = bytes(TAR_BLOCK)
# A size of more than 20 decimal digits exceeds any file, so it is invalid.
_MAX_SIZE_DIGITS = 20
# Links, directories, devices and FIFOs carry no data in tarfile. Every
# other type, known or not, is followed by ``size`` bytes.
_NO_DATA_TYPES = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})
_SPECIAL_TYPES = {b"3": "character device", b"4": "block device", b"6": "FIFO"}
_GNU_LONG_NAME = b"L"
_GNU_LONG_LINK = b"K"
_EXTENSION_TYPES = frozenset({_GNU_LONG_NAME, _GNU_LONG_LINK, b"x", b"X", b"g"})
_GNU_SPARSE = b"S"
_VOLUME_LABEL = b"V"


class TarWalker:
    """Walks a tar archive as it streams past, checking and scanning each member.

    Member locations are ``ctx.member(<member path>)``, so a tar read from
    ``model.tar.gz`` places its members at ``model.tar.gz:<member path>``.
    """

    def __init__(self, owner: ArchiveReport, ctx: ScanContext) -> None:
        self.owner = owner
        self.ctx = ctx
        self.block = bytearray()
        self.offset = 0
        # What the next bytes are: "header", "sparse" (GNU sparse extension
        # blocks), "data", "extension", "skip", "padding", or "end".
        self.state = "header"
        self.remaining = 0
        self.padding = 0
        self.sink: MemberSink | None = None
        self.extension = bytearray()
        self.extension_type = b""
        self.long_name: str | None = None
        self.long_link: str | None = None
        self.pax: dict[str, str] = {}
        self.global_pax: dict[str, str] = {}
        self.members = 0
        # True once the walk stopped at a limit or a corrupt header.
        self.done = False
        self.trailing = False

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        position = 0
        while position < len(view) and not self.done and not self.owner.stopped:
            if self.state == "end":
                self._after_end(view[position:])
                return
            if self.state in ("header", "sparse"):
                taken = view[position : position + TAR_BLOCK - len(self.block)]
                self.block += taken
                position += len(taken)
                if len(self.block) == TAR_BLOCK:
                    block = bytes(self.block)
                    self.block.clear()
                    self.offset += TAR_BLOCK
                    self._on_block(block)
                continue
            step = min(self.remaining, len(view) - position)
            self._content(view[position : position + step])
            self.remaining -= step
            position += step
            self.offset += step
            if not self.remaining:
                self._end_content()

    def _after_end(self, view: memoryview) -> None:
        data = bytes(view)
        content = data.lstrip(b"\x00")
        if content and not self.trailing:
            self.trailing = True
            where = self.offset + len(data) - len(content)
            self.owner.add(
                "archive.trailing-data",
                Severity.MEDIUM,
                f"data follows the end-of-archive marker, at offset {where}; tar and "
                "Python's tarfile stop before it, so it can carry content that no "
                "tool shows",
                RECOPY,
                offset=where,
            )
        self.offset += len(data)

    def _on_block(self, block: bytes) -> None:
        if self.state == "sparse":
            # Old GNU sparse headers continue while byte 504 is set.
            if not block[504]:
                self._begin_content("data")
            return
        if block == _ZERO_BLOCK:
            self.state = "end"
            return
        self._header(block)

    def _header(self, block: bytes) -> None:
        where = self.offset - TAR_BLOCK
        size = tar_number(block[124:136])
        if not tar_checksum_ok(block) or size is None or size < 0:
            field = "checksum" if not tar_checksum_ok(block) else "size field"
            self.done = True
            self.owner.stop(
                "archive.corrupt",
                f"the tar header at offset {where} has an invalid {field}, so the "
                "rest of the archive cannot be read",
                offset=where,
            )
            return

        type_flag = block[156:157]
        if type_flag in _EXTENSION_TYPES:
            self._start_extension(type_flag, size)
            return
        name, link, size = self._apply_extensions(block, size)
        if type_flag == _VOLUME_LABEL:
            self.remaining = size
            self._begin_content("skip")
            return

        self.members += 1
        limit = self.ctx.limits.max_archive_members
        if self.members > limit:
            self.done = True
            self.owner.stop(
                "archive.too-many-members",
                f"the archive has more than {limit} members, the limit, so the rest "
                "was not inspected",
                UNPACK,
            )
            return
        if self.owner.timed_out():
            self.done = True
            return
        self._member(block, type_flag, name, link, size)

    def _apply_extensions(self, block: bytes, size: int) -> tuple[str, str, int]:
        """Return the member's name, link target and size after pax and GNU records."""
        name = _text(block[0:100])
        if block[257:263] == b"ustar\x00" and block[345]:
            # POSIX ustar keeps the leading directories in the prefix field.
            name = _text(block[345:500]) + "/" + name
        link = _text(block[157:257])
        pax = {**self.global_pax, **self.pax}
        name = pax.get("path", self.long_name or name)
        link = pax.get("linkpath", self.long_link or link)
        if "size" in pax:
            size = _pax_size(pax["size"])
        self.long_name = self.long_link = None
        self.pax = {}
        return name, link, size

    def _member(self, block: bytes, type_flag: bytes, name: str, link: str, size: int) -> None:
        """Check one member's name, type and link, then route its data."""
        display = display_name(name)
        if leaves_folder(name):
            self.owner.flag("archive.path-traversal", Severity.HIGH, display)

        if type_flag in (b"1", b"2"):
            symbolic = type_flag == b"2"
            escapes = link_escapes(name, link, symbolic=symbolic)
            severity = Severity.HIGH if escapes else Severity.MEDIUM
            described = f"-> {link}" if symbolic else f"(hard link to {link})"
            self.owner.flag("archive.link", severity, f"{display} {shorten(described)}")
        elif type_flag in _SPECIAL_TYPES:
            kind = _SPECIAL_TYPES[type_flag]
            self.owner.flag("archive.special-member", Severity.MEDIUM, f"{display} ({kind})")

        if type_flag in _NO_DATA_TYPES:
            return
        self.remaining = size
        if size > 0:
            self.sink = MemberSink(self.owner, self.ctx.member(display, size), display)
        if type_flag == _GNU_SPARSE and block[482]:
            self.state = "sparse"
            return
        self._begin_content("data")

    def _start_extension(self, type_flag: bytes, size: int) -> None:
        if size > _MAX_EXTENSION_BYTES:
            self.done = True
            self.owner.stop(
                "archive.corrupt",
                f"a {size}-byte extended header at offset {self.offset - TAR_BLOCK} is "
                f"over the {_MAX_EXTENSION_BYTES} bytes the gate reads",
                offset=self.offset - TAR_BLOCK,
            )
            return
        self.extension_type = type_flag
        self.remaining = size
        self._begin_content("extension")

    def _begin_content(self, state: str) -> None:
        self.padding = -self.remaining % TAR_BLOCK
        self.state = state
        if not self.remaining:
            self._end_content()

    def _content(self, data: memoryview) -> None:
        if self.state == "data" and self.sink is not None:
            self.sink.write(data)
        elif self.state == "extension":
            self.extension += data

    def _end_content(self) -> None:
        if self.state == "data":
            self._close_sink()
        elif self.state == "extension":
            self._end_extension(bytes(self.extension))
            self.extension.clear()
        if self.state == "padding" or not self.padding:
            self.state = "header"
            return
        self.remaining, self.padding = self.padding, 0
        self.state = "padding"

    def _end_extension(self, data: bytes) -> None:
        if self.extension_type == _GNU_LONG_NAME:
            self.long_name = _text(data)
        elif self.extension_type == _GNU_LONG_LINK:
            self.long_link = _text(data)
        elif self.extension_type == b"g":
            self.global_pax.update(_pax_records(data))
        else:
            self.pax = _pax_records(data)

    def _close_sink(self) -> None:
        if self.sink is not None:
            self.owner.extend(self.sink.close())
            self.sink = None

    def finish(self) -> None:
        """Report a walk that ended inside a header or a member, and close the member."""
        inside = self.block or self.state in ("data", "extension", "skip", "sparse", "padding")
        if inside and not self.done and not self.owner.stopped:
            self.owner.stop(
                "archive.truncated",
                f"the tar archive ends after {self.offset + len(self.block)} bytes, "
                "inside a header or a member, so it is truncated",
                offset=self.offset,
            )
        self._close_sink()
        self.owner.note("members", self.members)


def _text(data: bytes) -> str:
    return data.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _pax_size(value: str) -> int:
    """Parse a pax size record; like tarfile, an unparsable size counts as 0."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_SIZE_DIGITS:
        return 0
    return int(text)


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse pax records, ``"<length> <key>=<value>\\n"``, stopping at the first bad one."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        digits = data[position:space]
        if space < 0 or not digits.isdigit() or len(digits) > _MAX_SIZE_DIGITS:
            break
        length = int(data[position:space])
        record = data[space + 1 : position + length]
        if length <= space - position or not record.endswith(b"\n") or b"=" not in record:
            break
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        position += length
    return records
