"""Report native executables and libraries (ELF, Mach-O, PE) inside an artifact.

No model loader needs machine code from a model directory, and anything that
loads it (``ctypes``, ``torch.ops.load_library``, a custom operator) runs it
with the loader's privileges. Every such file is reported with the
architecture and the type (executable or library) that its header names, so
that a reviewer can see what was shipped.

Headers are read with ``struct`` from the first bytes of the stream, and from
``read_at`` for the ELF program headers and Mach-O slices that lie further in.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Severity
from attestgate.identify.formats import Format
from attestgate.scanners.interface import ReadAt, ScanContext, Scanner, ScanResult

__all__ = ["NativeExecutableScanner"]

logger = logging.getLogger(__name__)

# Bytes kept from the start of the stream. In files that real linkers write,
# every header field read below lies inside them.
HEAD_BYTES = 64 * 1024
# Program headers read to tell a position-independent executable from a
# shared library. Real binaries have about a dozen.
_MAX_PROGRAM_HEADERS = 512
# Slices listed from a Mach-O universal binary. Real ones have two to four.
_MAX_FAT_ARCHS = 32
_PT_INTERP = 3
_PE_DLL = 0x2000

_ELF_MACHINES: dict[int, str] = {
    0x02: "SPARC",
    0x03: "x86",
    0x08: "MIPS",
    0x14: "PowerPC",
    0x15: "PowerPC 64",
    0x16: "S/390",
    0x28: "ARM",
    0x2B: "SPARC V9",
    0x32: "IA-64",
    0x3E: "x86-64",
    0xB7: "AArch64",
    0xF3: "RISC-V",
    0xF7: "BPF",
    0x102: "LoongArch",
}
_ELF_TYPES: dict[int, str] = {
    1: "relocatable object",
    2: "executable",
    3: "shared library",
    4: "core dump",
}
_MACHO_CPUS: dict[int, str] = {
    7: "x86",
    0x01000007: "x86-64",
    12: "ARM",
    0x0100000C: "ARM64",
    0x0200000C: "ARM64_32",
    18: "PowerPC",
    0x01000012: "PowerPC 64",
}
_MACHO_TYPES: dict[int, str] = {
    1: "relocatable object",
    2: "executable",
    6: "shared library",
    7: "dynamic linker",
    8: "bundle (loadable plug-in)",
    0xB: "kernel extension",
}
# Mach-O magic numbers as they appear in the file: byte order, word size.
_MACHO_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xfe\xed\xfa\xce": (">", 32),
    b"\xce\xfa\xed\xfe": ("<", 32),
    b"\xfe\xed\xfa\xcf": (">", 64),
    b"\xcf\xfa\xed\xfe": ("<", 64),
}
_FAT_MAGIC = b"\xca\xfe\xba\xbe"
_FAT_MAGIC_64 = b"\xca\xfe\xba\xbf"
# Java class files share the universal-binary magic. The next word is their
# version (at least 45), while universal binaries list a handful of slices.
_FAT_MAX_PLAUSIBLE = 30
_PE_MACHINES: dict[int, str] = {
    0x014C: "x86",
    0x8664: "x86-64",
    0x01C0: "ARM",
    0x01C4: "ARM Thumb-2",
    0xAA64: "ARM64",
    0x0200: "IA-64",
    0x5064: "RISC-V 64",
    0x0EBC: "EFI byte code",
}

_REMOVE = (
    "Native code has no place in a model artifact: no model loader needs it, and "
    "whatever loads it runs with the loader's privileges. Remove the file from "
    "the artifact. If the model truly needs a custom operator library, ship it "
    "as a separately built, reviewed and signed package instead."
)

Read = Callable[[int, int], bytes]


@dataclass
class _Binary:
    """Header facts of an executable file."""

    container: str
    kind: str = "unknown type"
    architecture: str = "unknown architecture"
    bits: int | None = None
    endianness: str | None = None
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "binary_format": self.container,
            "kind": self.kind,
            "architecture": self.architecture,
        }
        if self.bits is not None:
            facts["bits"] = self.bits
        if self.endianness is not None:
            facts["endianness"] = self.endianness
        if self.problem is not None:
            facts["header_problem"] = self.problem
        facts.update(self.extra)
        return facts


class NativeExecutableScanner(Scanner):
    """Reports ELF, Mach-O and PE files with their architecture and type."""

    check = "binary"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._head = bytearray()
        self._total = 0

    def feed(self, chunk: memoryview) -> None:
        self._total += len(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        head = bytes(self._head)
        binary = _parse(head, _reader(head, read_at, self._total))
        if binary.container == "Java class":
            finding = self.finding(
                "binary.java-class",
                Severity.MEDIUM,
                f"the file is a Java class file ({binary.kind}), compiled code that "
                "a JVM runs when it loads the class",
                _REMOVE,
                offset=0,
                **binary.facts(),
            )
        else:
            finding = self.finding(
                "binary.native-executable",
                Severity.MEDIUM,
                f"the file is a native {binary.container} {binary.kind} for "
                f"{binary.architecture}" + (f" ({binary.problem})" if binary.problem else ""),
                _REMOVE,
                offset=0,
                **binary.facts(),
            )
        return ScanResult(findings=[finding], format=Format.NATIVE_EXECUTABLE, facts=binary.facts())


def _reader(head: bytes, read_at: ReadAt | None, total: int) -> Read:
    """Return a function that reads from the kept head, or through ``read_at`` past it."""

    def read(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            return b""
        if offset + length <= len(head) or read_at is None:
            return head[offset : offset + length]
        if offset >= total:
            return b""
        return read_at(offset, min(length, total - offset))

    return read


def _parse(head: bytes, read: Read) -> _Binary:
    if head[:4] == b"\x7fELF":
        return _parse_elf(head, read)
    if head[:4] in _MACHO_MAGICS:
        return _parse_macho(read, 0)
    if head[:4] in (_FAT_MAGIC, _FAT_MAGIC_64):
        return _parse_fat(head, read)
    if head[:2] == b"MZ":
        return _parse_pe(read)
    return _Binary("executable", problem="the magic number is not one the gate knows")


def _unpack(fmt: str, data: bytes, offset: int = 0) -> tuple[Any, ...] | None:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        return None


def _parse_elf(head: bytes, read: Read) -> _Binary:
    binary = _Binary("ELF")
    if len(head) < 20 or head[4] not in (1, 2) or head[5] not in (1, 2):
        binary.problem = "the ELF identification bytes are truncated or invalid"
        return binary
    binary.bits = 32 if head[4] == 1 else 64
    order = "<" if head[5] == 1 else ">"
    binary.endianness = "little" if order == "<" else "big"

    fields = _unpack(order + "HH", head, 16)
    assert fields is not None
    e_type, machine = fields
    binary.architecture = _ELF_MACHINES.get(machine, f"machine {machine:#x}")
    binary.kind = _ELF_TYPES.get(e_type, f"type {e_type:#x}")
    binary.extra["machine"] = machine
    if e_type == 3 and _elf_has_interpreter(head, read, order, binary.bits):
        # A shared object with a program interpreter is a PIE executable.
        binary.kind = "position-independent executable"
    return binary


def _elf_has_interpreter(head: bytes, read: Read, order: str, bits: int) -> bool:
    if bits == 64:
        fields = _unpack(order + "Q", head, 32)
        sizes = _unpack(order + "HH", head, 54)
    else:
        fields = _unpack(order + "I", head, 28)
        sizes = _unpack(order + "HH", head, 42)
    if fields is None or sizes is None:
        return False
    (phoff,) = fields
    entry_size, count = sizes
    if entry_size < 4:
        return False
    for index in range(min(count, _MAX_PROGRAM_HEADERS)):
        p_type = _unpack(order + "I", read(phoff + index * entry_size, 4))
        if p_type is None:
            return False
        if p_type[0] == _PT_INTERP:
            return True
    return False


def _parse_macho(read: Read, offset: int) -> _Binary:
    binary = _Binary("Mach-O")
    magic = read(offset, 4)
    order, bits = _MACHO_MAGICS.get(magic, ("<", 0))
    fields = _unpack(order + "iiI", read(offset + 4, 12))
    if not bits or fields is None:
        binary.problem = "the Mach-O header is truncated or invalid"
        return binary
    binary.bits = bits
    binary.endianness = "little" if order == "<" else "big"
    cpu, _subtype, file_type = fields
    binary.architecture = _MACHO_CPUS.get(cpu, f"CPU type {cpu:#x}")
    binary.kind = _MACHO_TYPES.get(file_type, f"file type {file_type:#x}")
    return binary


def _parse_fat(head: bytes, read: Read) -> _Binary:
    count_field = _unpack(">I", head, 4)
    if count_field is None:
        return _Binary("Mach-O universal", problem="the header is truncated")
    (count,) = count_field
    if count > _FAT_MAX_PLAUSIBLE and head[:4] == _FAT_MAGIC:
        return _parse_java(head)

    binary = _Binary("Mach-O universal")
    wide = head[:4] == _FAT_MAGIC_64
    entry_size = 32 if wide else 20
    architectures: list[str] = []
    first_offset: int | None = None
    for index in range(min(count, _MAX_FAT_ARCHS)):
        entry = _unpack(">iiQ" if wide else ">iiI", read(8 + index * entry_size, 16))
        if entry is None:
            binary.problem = "the slice table is truncated"
            break
        cpu, _subtype, offset = entry
        architectures.append(_MACHO_CPUS.get(cpu, f"CPU type {cpu:#x}"))
        if first_offset is None:
            first_offset = offset
    binary.architecture = " + ".join(architectures) or binary.architecture
    binary.extra["slices"] = count
    if first_offset is not None:
        slice_binary = _parse_macho(read, first_offset)
        binary.kind = slice_binary.kind
    return binary


def _parse_java(head: bytes) -> _Binary:
    versions = _unpack(">HH", head, 4)
    assert versions is not None
    minor, major = versions
    return _Binary(
        "Java class",
        kind=f"class file version {major}.{minor}",
        architecture="the Java virtual machine",
    )


def _parse_pe(read: Read) -> _Binary:
    binary = _Binary("PE")
    pointer = _unpack("<I", read(0x3C, 4))
    if pointer is None:
        binary.container = "MS-DOS"
        binary.problem = "the MS-DOS header is truncated"
        return binary
    (pe_offset,) = pointer
    header = read(pe_offset, 26)
    if header[:4] != b"PE\x00\x00" or len(header) < 26:
        binary.container = "MS-DOS"
        binary.kind = "executable"
        binary.problem = "no PE header follows the MS-DOS stub"
        return binary

    fields = _unpack("<HHIIIHH", header, 4)
    assert fields is not None
    machine, _sections, _stamp, _symbols, _count, _optional_size, characteristics = fields
    binary.architecture = _PE_MACHINES.get(machine, f"machine {machine:#x}")
    binary.kind = "dynamic-link library" if characteristics & _PE_DLL else "executable"
    binary.endianness = "little"
    magic = _unpack("<H", read(pe_offset + 24, 2))
    if magic is not None:
        binary.bits = {0x10B: 32, 0x20B: 64}.get(magic[0])
    binary.extra["machine"] = machine
    return binary
