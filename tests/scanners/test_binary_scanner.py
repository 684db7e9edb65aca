"""Tests for the native executable scanner (ELF, Mach-O, PE)."""

from __future__ import annotations

import glob
import os
import platform
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.pipeline import admit, inspect
from attestgate.scanners.binary_scanner import NativeExecutableScanner
from attestgate.scanners.interface import ScanContext, ScanResult

ARCHITECTURES = {"x86_64": "x86-64", "aarch64": "AArch64", "arm64": "AArch64"}
DOS_STUB = b"This program cannot be run in DOS mode.\r\r\n$"


def scan(data: bytes, chunk: int = 0, reread: bool = True) -> ScanResult:
    scanner = NativeExecutableScanner(ScanContext("lib", len(data)), Format.NATIVE_EXECUTABLE)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    read_at = (lambda offset, length: data[offset : offset + length]) if reread else None
    return scanner.close(read_at)


def single(result: ScanResult) -> Finding:
    assert len(result.findings) == 1, [f.rule for f in result.findings]
    return result.findings[0]


def pip_launcher(name: str) -> bytes:
    import pip

    path = Path(pip.__file__).parent / "_vendor" / "distlib" / name
    if not path.exists():
        pytest.skip(f"pip in this environment ships no {name} launcher")
    return path.read_bytes()


def elf_header(bits: int, order: str, e_type: int, machine: int) -> bytes:
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if order == "<" else 2, 1]) + bytes(9)
    return ident + struct.pack(order + "HHI", e_type, machine, 1) + bytes(64)


def macho_header(cpu: int, file_type: int) -> bytes:
    return b"\xcf\xfa\xed\xfe" + struct.pack("<iiIIII", cpu, 3, file_type, 0, 0, 0) + bytes(16)


def pe_file(machine: int, characteristics: int, magic: int = 0x20B) -> bytes:
    dos = bytearray(0x80)
    dos[:2] = b"MZ"
    dos[0x3C:0x40] = struct.pack("<I", 0x80)
    dos[0x40 : 0x40 + len(DOS_STUB)] = DOS_STUB
    coff = struct.pack("<4sHHIIIHH", b"PE\x00\x00", machine, 1, 0, 0, 0, 240, characteristics)
    return bytes(dos) + coff + struct.pack("<H", magic) + bytes(238)


# --- Real binaries ----------------------------------------------------------------


def test_python_interpreter_executable() -> None:
    data = Path(os.path.realpath(sys.executable)).read_bytes()
    finding = single(scan(data))
    assert finding.rule == "binary.native-executable"
    assert finding.severity is Severity.MEDIUM
    assert finding.details["binary_format"] == "ELF"
    assert finding.details["kind"] in ("executable", "position-independent executable")
    assert finding.details["architecture"] == ARCHITECTURES.get(platform.machine())


def test_numpy_extension_shared_library() -> None:
    extension = glob.glob(str(Path(np.__file__).parent / "_core" / "_multiarray_umath*.so"))
    if not extension:
        pytest.skip("numpy's extension module is not an ELF .so here")
    finding = single(scan(Path(extension[0]).read_bytes()))
    assert finding.details["kind"] == "shared library"
    assert finding.details["bits"] == 64


@pytest.mark.parametrize(
    ("name", "architecture", "bits"),
    [("t64.exe", "x86-64", 64), ("w32.exe", "x86", 32), ("t64-arm.exe", "ARM64", 64)],
)
def test_windows_launchers(name: str, architecture: str, bits: int) -> None:
    data = pip_launcher(name)
    assert sniff(data[:512], len(data), name) is Format.NATIVE_EXECUTABLE
    finding = single(scan(data))
    assert finding.details["binary_format"] == "PE"
    assert finding.details["architecture"] == architecture
    assert finding.details["bits"] == bits
    assert finding.details["kind"] == "executable"


# --- Built headers ------------------------------------------------------------------


def test_elf_big_endian_mips() -> None:
    details = single(scan(elf_header(32, ">", 2, 0x08))).details
    assert details["architecture"] == "MIPS"
    assert details["endianness"] == "big"
    assert details["bits"] == 32
    assert details["kind"] == "executable"


def test_elf_relocatable_riscv() -> None:
    details = single(scan(elf_header(64, "<", 1, 0xF3))).details
    assert details["architecture"] == "RISC-V"
    assert details["kind"] == "relocatable object"


def test_elf_unknown_machine_named_by_number() -> None:
    details = single(scan(elf_header(64, "<", 3, 0x1234))).details
    assert details["architecture"] == "machine 0x1234"


def test_elf_program_headers_past_head_read_again() -> None:
    # A shared object whose PT_INTERP program header lies 100 KiB in.
    header = bytearray(elf_header(64, "<", 3, 0x3E))
    struct.pack_into("<Q", header, 32, 100 * 1024)
    struct.pack_into("<HH", header, 54, 56, 1)
    data = bytes(header) + bytes(100 * 1024 - len(header)) + struct.pack("<I", 3) + bytes(52)
    assert single(scan(data)).details["kind"] == "position-independent executable"
    assert single(scan(data, reread=False)).details["kind"] == "shared library"


def test_elf_truncated_still_reported() -> None:
    finding = single(scan(b"\x7fELF\x02"))
    assert finding.rule == "binary.native-executable"
    assert "header_problem" in finding.details


def test_macho_dylib_arm64() -> None:
    details = single(scan(macho_header(0x0100000C, 6))).details
    assert details["binary_format"] == "Mach-O"
    assert details["architecture"] == "ARM64"
    assert details["kind"] == "shared library"


def test_macho_bundle_x86_64() -> None:
    details = single(scan(macho_header(0x01000007, 8))).details
    assert details["kind"] == "bundle (loadable plug-in)"


def test_macho_universal_slices() -> None:
    first = macho_header(0x01000007, 2)
    table = struct.pack(">4sI", b"\xca\xfe\xba\xbe", 2)
    table += struct.pack(">iiIII", 0x01000007, 3, 4096, len(first), 12)
    table += struct.pack(">iiIII", 0x0100000C, 0, 8192, len(first), 14)
    data = table + bytes(4096 - len(table)) + first + bytes(8192 - 4096 - len(first)) + first
    details = single(scan(data)).details
    assert details["binary_format"] == "Mach-O universal"
    assert details["architecture"] == "x86-64 + ARM64"
    assert details["kind"] == "executable"
    assert details["slices"] == 2


def test_java_class_file() -> None:
    finding = single(scan(b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(32)))
    assert finding.rule == "binary.java-class"
    assert finding.severity is Severity.MEDIUM
    assert "52.0" in finding.message


def test_pe_dll() -> None:
    data = pe_file(0x8664, 0x2022)
    assert sniff(data[:512], len(data), "x.dll") is Format.NATIVE_EXECUTABLE
    details = single(scan(data)).details
    assert details["kind"] == "dynamic-link library"
    assert details["architecture"] == "x86-64"


def test_pe_header_outside_file() -> None:
    data = bytearray(pe_file(0x14C, 0x0002))
    data[0x3C:0x40] = struct.pack("<I", 10**9)
    details = single(scan(bytes(data))).details
    assert details["binary_format"] == "MS-DOS"


@pytest.mark.parametrize("chunk", [1, 5])
def test_chunked_same_result(chunk: int) -> None:
    data = pe_file(0xAA64, 0x0002, 0x20B)
    assert scan(data, chunk).findings == scan(data).findings


# --- Through the pipeline ---------------------------------------------------------


def test_model_directory_with_library(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    library = Path(os.path.realpath(sys.executable)).read_bytes()
    (model / "libcustom_ops.so").write_bytes(library)
    findings = inspect(model).findings
    located = {(finding.rule, finding.file) for finding in findings}
    assert ("binary.native-executable", "libcustom_ops.so") in located
    assert admit(model, home=tmp_path / "home").action != "allow"
