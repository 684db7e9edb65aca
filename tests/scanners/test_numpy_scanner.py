"""Tests for the NumPy .npy scanner."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.pipeline import admit, inspect
from attestgate.scanners.interface import ScanContext, ScanResult
from attestgate.scanners.numpy_scanner import MAX_HEADER_BYTES, NpyScanner


def npy(array: np.ndarray[Any, Any], version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array, allow_pickle=True)
    else:
        np.lib.format.write_array(buffer, array, version=version, allow_pickle=True)
    return buffer.getvalue()


def raw_npy(header: str | bytes, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """Build an .npy file byte by byte, with any header text."""
    text = header.encode("latin-1") if isinstance(header, str) else header
    length = struct.pack("<H" if version[0] == 1 else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + data


def scan(data: bytes, chunk: int = 0, name: str = "a.npy") -> ScanResult:
    scanner = NpyScanner(ScanContext(name, len(data)), Format.NUMPY)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    return scanner.close(lambda offset, length: data[offset : offset + length])


def rules(result: ScanResult) -> list[str]:
    return sorted(finding.rule for finding in result.findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


class Hostile:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo owned",))


def hostile_pickle() -> bytes:
    return pickle.dumps(Hostile(), protocol=2)


# --- Clean arrays ---------------------------------------------------------------

CLEAN_ARRAYS = {
    "float32": np.arange(12, dtype=np.float32),
    "int64-2d": np.arange(12, dtype=np.int64).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    "big-endian": np.arange(5, dtype=">i4"),
    "bool": np.array([True, False, True]),
    "complex": np.ones(3, dtype=np.complex128),
    "unicode": np.array(["ab", "cde"]),
    "bytes": np.array([b"ab", b"c"]),
    "datetime": np.arange(3).astype("datetime64[ns]"),
    "timedelta": np.arange(3).astype("timedelta64[s]"),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 5), dtype=np.float16),
    "structured": np.zeros(4, dtype=[("x", "<i4"), ("y", "<f8", (2,)), ("z", "S3")]),
    "nested": np.zeros(2, dtype=[("a", [("b", "<u2"), ("c", "?")]), ("d", "<f4")]),
    "aligned": np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "<i8")], align=True)),
    "void": np.zeros(2, dtype="V7"),
}


@pytest.mark.parametrize("case", sorted(CLEAN_ARRAYS))
def test_clean_array_no_findings(case: str) -> None:
    assert scan(npy(CLEAN_ARRAYS[case])).findings == []


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_clean_versions(version: tuple[int, int]) -> None:
    array = np.zeros(3, dtype=[("größe", "<f4")]) if version == (3, 0) else np.ones(4)
    result = scan(npy(array, version))
    assert result.findings == []
    assert result.facts["npy_version"] == f"{version[0]}.{version[1]}"


@pytest.mark.parametrize("chunk", [1, 3, 11, 64])
def test_chunked_feed_same_result(chunk: int) -> None:
    data = npy(CLEAN_ARRAYS["structured"]) + b"extra"
    assert rules(scan(data, chunk)) == rules(scan(data))
    assert scan(data, chunk).facts == scan(data).facts


def test_facts() -> None:
    facts = scan(npy(np.zeros((2, 3), dtype="<f4"))).facts
    assert facts["dtype"] == "<f4"
    assert facts["shape"] == ["2", "3"]
    assert facts["fortran_order"] is False
    assert facts["object"] is False
    assert facts["data_bytes"] == 24


def test_format_is_sniffed_as_numpy() -> None:
    data = npy(np.ones(3))
    assert sniff(data[:512], len(data), "x.npy") is Format.NUMPY


# --- Object arrays --------------------------------------------------------------


def test_object_array_reported() -> None:
    data = npy(np.array(["a", 1, None], dtype=object))
    finding = only(scan(data), "numpy.object-array")
    assert finding.severity is Severity.MEDIUM
    assert finding.file == "a.npy"


def test_object_array_clean_pickle_stays_medium() -> None:
    result = scan(npy(np.array(["a", "b"], dtype=object)))
    assert max(finding.severity for finding in result.findings) is Severity.MEDIUM


def test_structured_object_field_reported() -> None:
    data = npy(np.zeros(2, dtype=[("a", "O"), ("b", "<i4")]))
    assert "numpy.object-array" in rules(scan(data))


def test_nested_object_field_reported() -> None:
    header = "{'descr': [('a', [('b', '|O')])], 'fortran_order': False, 'shape': (1,), }"
    assert "numpy.object-array" in rules(scan(raw_npy(header, hostile_pickle())))


def test_hostile_payload_located() -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    result = scan(raw_npy(header, hostile_pickle()), name="evil.npy")
    finding = only(result, "pickle.unsafe-global")
    assert finding.file == "evil.npy:pickle-payload"
    assert finding.severity is Severity.CRITICAL


@pytest.mark.parametrize("chunk", [1, 5])
def test_hostile_payload_chunked(chunk: int) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    result = scan(raw_npy(header, hostile_pickle()), chunk)
    assert "pickle.unsafe-global" in rules(result)


@pytest.mark.parametrize("descr", ["'O'", "'O8'", "'<O'", "'object'", "'i4,O'"])
def test_object_spellings_scanned(descr: str) -> None:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}"
    result = scan(raw_npy(header, hostile_pickle()))
    assert "pickle.unsafe-global" in rules(result)


# --- Size checks ------------------------------------------------------------------


def test_truncated_data_size_mismatch() -> None:
    data = npy(np.arange(10, dtype=np.float64))[:-8]
    finding = only(scan(data), "numpy.size-mismatch")
    assert finding.severity is Severity.HIGH


def test_trailing_bytes_reported() -> None:
    data = npy(np.arange(10, dtype=np.float64)) + b"hidden"
    finding = only(scan(data), "numpy.trailing-bytes")
    assert finding.severity is Severity.MEDIUM
    assert finding.details["trailing"] == 6


def test_huge_shape_no_overflow() -> None:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }"
    finding = only(scan(raw_npy(header, b"\x00" * 16)), "numpy.size-mismatch")
    assert finding.details["expected"] == str(2**124 * 8)


def test_unknown_dtype_medium() -> None:
    header = "{'descr': 'float32', 'fortran_order': False, 'shape': (2,), }"
    finding = only(scan(raw_npy(header, b"\x00" * 8)), "numpy.unknown-dtype")
    assert finding.severity is Severity.MEDIUM


# --- Malformed headers --------------------------------------------------------------

MALFORMED_HEADERS = {
    "call": "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': __import__('os')}",
    "not-literal": "os.system('id')",
    "list": "['descr', 'fortran_order', 'shape']",
    "missing-key": "{'descr': '<f4', 'shape': (1,)}",
    "extra-key": "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
    "negative-dim": "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
    "shape-list": "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
    "float-dim": "{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,)}",
    "fortran-int": "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
    "deep": "(" * 5000 + ")" * 5000,
    "rank-65": "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1," * 65 + ")}",
    "huge-int": "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",)}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_HEADERS))
def test_malformed_header_high(case: str) -> None:
    finding = only(scan(raw_npy(MALFORMED_HEADERS[case], b"\x00" * 4)), "numpy.malformed-header")
    assert finding.severity is Severity.HIGH


def test_unsupported_version_malformed() -> None:
    data = raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", b"", (4, 0))
    assert rules(scan(data)) == ["numpy.malformed-header"]


def test_truncated_header_malformed() -> None:
    data = npy(np.ones(3))[:30]
    assert rules(scan(data)) == ["numpy.malformed-header"]


def test_truncated_length_field_malformed() -> None:
    assert rules(scan(b"\x93NUMPY\x01")) == ["numpy.malformed-header"]


def test_header_over_limit_not_buffered() -> None:
    data = b"\x93NUMPY\x02\x00" + struct.pack("<I", MAX_HEADER_BYTES + 1) + b"{" * 100
    finding = only(scan(data), "numpy.malformed-header")
    assert str(MAX_HEADER_BYTES) in finding.message


def test_invalid_utf8_v3_malformed() -> None:
    data = raw_npy(b"{'descr': '\xff'}", b"", (3, 0))
    assert rules(scan(data)) == ["numpy.malformed-header"]


# --- Through the pipeline -------------------------------------------------------------


def evil_npy() -> bytes:
    return raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", hostile_pickle())


def test_npz_object_member_located(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arr_0.npy", evil_npy())
        archive.writestr("arr_1.npy", npy(np.ones(3)))
    findings = inspect(path).findings
    located = {(finding.rule, finding.file) for finding in findings}
    assert ("pickle.unsafe-global", "arrays.npz:arr_0.npy:pickle-payload") in located
    assert ("numpy.object-array", "arrays.npz:arr_0.npy") in located


def test_npz_from_numpy_clean(tmp_path: Path) -> None:
    path = tmp_path / "clean.npz"
    np.savez(path, a=np.ones(3), b=np.arange(4))
    findings = [f for f in inspect(path).findings if f.severity >= Severity.MEDIUM]
    assert findings == []


def test_admit_blocks_hostile_npy(tmp_path: Path) -> None:
    path = tmp_path / "evil.npy"
    path.write_bytes(evil_npy())
    admission = admit(path, home=tmp_path / "home")
    assert admission.action == "block"
