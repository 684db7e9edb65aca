"""7z archives for the archive scanner, read with py7zr through ``read_at``.

A 7z archive keeps its member list at the end, so it cannot be read as a
stream: the scanner counts the bytes in ``feed`` and parses the archive in
``close``. The member list is checked before anything is decompressed, and
py7zr then decompresses the members one at a time, in archive order, into
writers that stream each member into its scanner without keeping it.
"""

from __future__ import annotations

import io
import stat
import struct
from typing import IO, Any, cast

from attestgate.findings import Severity
from attestgate.scanners.archive_members import (
    UNPACK,
    ArchiveReport,
    MemberSink,
    display_name,
    leaves_folder,
    link_escapes,
    shorten,
)
from attestgate.scanners.interface import MiB, ReadAt

_SIGNATURE = b"7z\xbc\xaf\x27\x1c"
# py7zr reads the member list into memory, so a larger one is not parsed.
MAX_HEADER_BYTES = 64 * MiB
# The declared sizes are judged by ratio once they add up to this much.
_RATIO_MIN_BYTES = 1 * MiB
_MAX_LINK_TARGET = 4096
# The largest LZMA dictionary py7zr may allocate. The xz -9 preset uses 64 MiB
# (xz(1), preset table).
MAX_DICTIONARY_BYTES = 256 * MiB
_LZMA = b"\x03\x01\x01"
_LZMA2 = b"\x21"


class _StopExtraction(Exception):
    """Raised from a member writer to end py7zr's extraction early."""


class SevenZipReader:
    """Lists a 7z archive, checks the list, then scans the members one at a time."""

    def __init__(self, owner: ArchiveReport, size: int) -> None:
        self.owner = owner
        self.size = size

    def scan(self, read_at: ReadAt | None) -> None:
        """Scan the archive through ``read_at``.

        1. Check the signature header, so that py7zr never reads past the end
           of the file or an oversized member list.
        2. Open the archive with py7zr; an encrypted header or corrupt data is
           a finding.
        3. Check the member count, names, special files and declared sizes.
        4. Decompress the members that pass into their scanners, under the
           expansion bounds, and check each symbolic link's target.
        """
        owner = self.owner
        if read_at is None:
            owner.stop(
                "archive.unscanned",
                "the 7z archive arrived as a stream that cannot be read twice, so "
                "its members were not inspected",
                "Admit the archive as a file on disk, or unpack it and admit its files.",
            )
            return
        if not self._check_signature(read_at(0, 32)):
            return
        try:
            import py7zr
        except ImportError:
            owner.stop(
                "archive.unsupported-compression",
                "the file is a 7z archive, but py7zr is not installed, so its "
                "members were not inspected",
                "Install py7zr next to attestgate and admit the file again, or have "
                "a reviewer inspect it.",
            )
            return

        source = cast(IO[bytes], _ReadAtFile(read_at, self.size))
        try:
            archive = py7zr.SevenZipFile(source, mode="r")
        except py7zr.PasswordRequired:
            self._encrypted("its header is encrypted, so not even the member names can be read")
            return
        except Exception as exc:  # noqa: BLE001 - py7zr raises many types on hostile input
            owner.stop("archive.corrupt", f"the 7z archive cannot be opened: {_error(exc)}")
            return
        with archive:
            targets = self._check_members(list(archive.files))
            if targets and not owner.stopped and self._check_dictionaries(archive):
                self._extract(archive, targets)

    def _check_signature(self, header: bytes) -> bool:
        owner = self.owner
        if len(header) < 32 or header[:6] != _SIGNATURE:
            owner.stop("archive.truncated", "the 7z archive is shorter than its 32-byte header")
            return False
        list_offset, list_size = struct.unpack_from("<QQ", header, 12)
        end = 32 + list_offset + list_size
        if end > self.size:
            owner.stop(
                "archive.truncated",
                f"the 7z header places the member list at bytes {32 + list_offset} to "
                f"{end}, past the end of the {self.size}-byte file, so the archive is "
                "truncated",
            )
            return False
        if list_size > MAX_HEADER_BYTES:
            owner.stop(
                "archive.corrupt",
                f"the 7z member list is {list_size} bytes, over the {MAX_HEADER_BYTES} "
                "bytes the gate reads",
                UNPACK,
            )
            return False
        return True

    def _check_members(self, files: list[Any]) -> dict[str, Any]:
        """Check every listed member; return the members to extract, by plain name."""
        owner = self.owner
        limits = owner.ctx.limits
        if len(files) > limits.max_archive_members:
            owner.stop(
                "archive.too-many-members",
                f"the 7z archive lists {len(files)} members, over the limit of "
                f"{limits.max_archive_members}, so none was inspected",
                UNPACK,
            )
            return {}
        owner.note("members", len(files))

        declared = sum(int(f.uncompressed or 0) for f in files if not f.is_directory)
        if declared > limits.max_expanded_bytes:
            owner.bomb(
                f"the members declare {declared} bytes in total, over the limit of "
                f"{limits.max_expanded_bytes} bytes for one file"
            )
            return {}
        if declared >= _RATIO_MIN_BYTES and declared > limits.max_compression_ratio * self.size:
            owner.bomb(
                f"the {self.size}-byte archive declares {declared} bytes of members, "
                f"a ratio over the limit of {limits.max_compression_ratio}"
            )
            return {}

        targets: dict[str, Any] = {}
        for member in files:
            name = str(member.filename)
            display = display_name(name)
            special = _special_kind(member)
            if leaves_folder(name):
                # py7zr refuses to extract such a name, so it is reported only.
                owner.flag("archive.path-traversal", Severity.HIGH, display)
            elif special is not None:
                owner.flag("archive.special-member", Severity.MEDIUM, f"{display} ({special})")
            elif not member.is_directory:
                targets[_plain_name(name)] = member
        return targets

    def _check_dictionaries(self, archive: Any) -> bool:
        """Refuse LZMA dictionaries that would exhaust memory; return whether to go on.

        py7zr 1.1 decodes LZMA as FORMAT_RAW, which takes no memory limit, so
        liblzma would allocate whatever dictionary size the header declares.
        """
        largest = _largest_dictionary(archive)
        if largest <= MAX_DICTIONARY_BYTES:
            return True
        self.owner.stop(
            "archive.unsupported-compression",
            f"the 7z archive uses an LZMA dictionary of {largest} bytes, over the "
            f"{MAX_DICTIONARY_BYTES} bytes the gate lets the decompressor allocate",
            "Ask the producer to compress with a smaller dictionary (7z -md=64m), or "
            "unpack the archive in a sandbox and admit its files directly.",
            dictionary=largest,
        )
        return False

    def _extract(self, archive: Any, targets: dict[str, Any]) -> None:
        import py7zr

        factory = _WriterFactory(self.owner, targets, self.size)
        names = [str(member.filename) for member in targets.values()]
        try:
            archive.extract(targets=names, factory=factory)
        except _StopExtraction:
            pass
        except py7zr.PasswordRequired:
            self._encrypted("its members are encrypted")
        except Exception as exc:  # noqa: BLE001 - py7zr raises many types on hostile input
            self.owner.stop("archive.corrupt", f"a 7z member cannot be decompressed: {_error(exc)}")
        finally:
            factory.finish()

    def _encrypted(self, reason: str) -> None:
        self.owner.stop(
            "archive.encrypted",
            f"the 7z archive is encrypted ({reason}), so the gate cannot inspect it",
            "Ask the producer for an unencrypted archive, because the gate admits "
            "only content that it can read.",
        )


class _ReadAtFile(io.RawIOBase):
    """A read-only, seekable file over ``read_at``, for py7zr."""

    def __init__(self, read_at: ReadAt, size: int) -> None:
        super().__init__()
        self._read_at = read_at
        self._size = size
        self._position = 0
        self.name = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        position = bases[whence] + offset
        if position < 0:
            raise OSError(f"seek to {position}, before the start of the archive")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        length = min(len(view), max(self._size - self._position, 0))
        data = self._read_at(self._position, length) if length else b""
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


class _MemberWriter:
    """The py7zr output for one member, which writes into the member's sink."""

    def __init__(self, factory: _WriterFactory, sink: MemberSink, link: bool) -> None:
        self.factory = factory
        self.sink = sink
        self.link = link
        self.target = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray) -> int:
        if self.link:
            # A symbolic link's content is its target path.
            self.target += data[: _MAX_LINK_TARGET - len(self.target)]
            return len(data)
        if not self.factory.owner.expand(len(data), self.factory.archive_size):
            raise _StopExtraction
        self.sink.write(memoryview(data))
        return len(data)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self.sink.size

    def close(self) -> None:
        self.factory.finish_member(self)


class _WriterFactory:
    """Creates a member writer when py7zr reaches each member, in archive order.

    py7zr calls ``create`` and the writer's methods by name, so no py7zr base
    class is needed. It names the output by the sanitized member path, which
    ``_plain_name`` maps back to the listed member.
    """

    def __init__(self, owner: ArchiveReport, targets: dict[str, Any], archive_size: int) -> None:
        self.owner = owner
        self.targets = targets
        self.archive_size = archive_size
        self.current: _MemberWriter | None = None

    def create(self, filename: str) -> _MemberWriter:
        # py7zr before 1.1 never calls close(), so the previous member is
        # finished here at the latest.
        if self.current is not None:
            self.finish_member(self.current)
        if self.owner.timed_out():
            raise _StopExtraction
        member = self.targets.get(_plain_name(filename))
        name = display_name(str(member.filename) if member is not None else filename)
        link = bool(member is not None and member.is_symlink)
        size = int(member.uncompressed) if member is not None else None
        sink = MemberSink(self.owner, self.owner.ctx.member(name, size), name)
        self.current = _MemberWriter(self, sink, link)
        return self.current

    def finish_member(self, writer: _MemberWriter) -> None:
        if writer.closed:
            return
        writer.closed = True
        if not writer.link:
            self.owner.extend(writer.sink.close())
            return
        target = writer.target.decode("utf-8", "replace")
        escapes = link_escapes(writer.sink.name, target, symbolic=True)
        severity = Severity.HIGH if escapes else Severity.MEDIUM
        self.owner.flag("archive.link", severity, f"{writer.sink.name} -> {shorten(target)}")

    def finish(self) -> None:
        if self.current is not None:
            self.finish_member(self.current)
            self.current = None


def _largest_dictionary(archive: Any) -> int:
    """Return the largest LZMA or LZMA2 dictionary that the archive's folders declare.

    Reads py7zr's parsed header (``header.main_streams``), which is not public
    API; a layout it does not recognise counts as no dictionary.
    """
    streams = getattr(getattr(archive, "header", None), "main_streams", None)
    folders = getattr(getattr(streams, "unpackinfo", None), "folders", None) or []
    largest = 0
    for folder in folders:
        for coder in getattr(folder, "coders", None) or []:
            method = coder.get("method")
            properties = coder.get("properties") or b""
            if method == _LZMA and len(properties) == 5:
                largest = max(largest, int.from_bytes(properties[1:5], "little"))
            elif method == _LZMA2 and len(properties) == 1:
                largest = max(largest, _lzma2_dictionary(properties[0]))
    return largest


def _lzma2_dictionary(code: int) -> int:
    """Decode an LZMA2 dictionary size byte (xz file format, section 5.3.1)."""
    if code >= 40:
        return 0xFFFFFFFF
    return (2 | (code & 1)) << (code // 2 + 11)


def _special_kind(member: Any) -> str | None:
    mode = getattr(member, "st_fmt", None)
    if mode is None:
        return None
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


def _plain_name(name: str) -> str:
    """Normalise a member name the way py7zr names its output (no '.', no leading '/')."""
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    return "/".join(parts)


def _error(exc: BaseException) -> str:
    return shorten(f"{type(exc).__name__}: {exc}")
