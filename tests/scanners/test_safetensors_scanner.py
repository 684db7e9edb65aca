"""Tests for the safetensors header and layout scanner."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners import open_scanner
from attestgate.scanners.interface import Limits, MiB, ScanContext, ScanResult
from attestgate.scanners.safetensors_scanner import DTYPE_BITS, SafetensorsScanner


def scan(data: bytes, chunk: int = 0, limits: Limits | None = None) -> ScanResult:
    ctx = ScanContext("model.safetensors", len(data), limits or Limits())
    scanner = SafetensorsScanner(ctx, Format.SAFETENSORS)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    return scanner.close()


def build(header: dict[str, Any] | bytes, data: bytes = b"", length: int = -1) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    declared = len(raw) if length < 0 else length
    return struct.pack("<Q", declared) + raw + data


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def rules(result: ScanResult) -> list[str]:
    return sorted(finding.rule for finding in result.findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


# --- Clean files --------------------------------------------------------------


@pytest.fixture
def numpy_file(tmp_path: Path) -> bytes:
    path = tmp_path / "model.safetensors"
    tensors = {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bias": np.ones(3, dtype=np.float16),
        "ids": np.arange(4, dtype=np.int64),
        "mask": np.array([True, False]),
        "small": np.arange(5, dtype=np.uint8),
        "empty": np.zeros((0,), dtype=np.float64),
    }
    save_file(tensors, str(path), metadata={"format": "np", "note": "x" * 300})
    return path.read_bytes()


def test_numpy_file_clean(numpy_file: bytes) -> None:
    assert scan(numpy_file).findings == []


def test_numpy_file_facts(numpy_file: bytes) -> None:
    facts = scan(numpy_file).facts
    assert facts["tensor_count"] == 6
    assert facts["parameters"] == 6 + 3 + 4 + 2 + 5
    assert facts["dtypes"] == {"BOOL": 1, "F16": 1, "F32": 1, "F64": 1, "I64": 1, "U8": 1}
    assert facts["metadata_keys"] == ["format", "note"]


def test_numpy_file_format(numpy_file: bytes) -> None:
    assert scan(numpy_file).format is Format.SAFETENSORS


@pytest.mark.torch
def test_torch_file_clean(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    path = tmp_path / "model.safetensors"
    tensors = {
        "bf16": torch.ones(4, 3, dtype=torch.bfloat16),
        "f8": torch.zeros(8, dtype=torch.float8_e4m3fn),
        "f8b": torch.zeros(2, 2, dtype=torch.float8_e5m2),
        "i32": torch.arange(7, dtype=torch.int32),
        "u16": torch.zeros(3, dtype=torch.uint16),
        "c64": torch.zeros(2, dtype=torch.complex64),
        "empty": torch.zeros(0, 5),
    }
    save_torch(tensors, str(path))
    result = scan(path.read_bytes())
    assert result.findings == []
    assert result.facts["dtypes"]["BF16"] == 1


@pytest.mark.parametrize("name", ["silero_safetensors", "minilm_dir"])
def test_real_file_clean(real_artifacts: dict[str, Path], name: str) -> None:
    path = real_artifacts[name]
    if path.is_dir():
        path = path / "model.safetensors"
    assert scan(path.read_bytes(), chunk=8 * MiB).findings == []


def test_open_scanner_registered(numpy_file: bytes) -> None:
    scanner = open_scanner(Format.SAFETENSORS, ScanContext("m", len(numpy_file)))
    assert scanner is not None
    scanner.feed(memoryview(numpy_file))
    assert scanner.close().findings == []


def test_space_padding_allowed() -> None:
    header = json.dumps({"a": tensor("U8", [2], 0, 2)}).encode() + b"    "
    assert scan(build(header, b"xy")).findings == []


def test_empty_header_clean() -> None:
    assert scan(build({})).findings == []


def test_subbyte_dtype_whole_bytes() -> None:
    assert scan(build({"a": tensor("F4", [2, 3], 0, 3)}, b"abc")).findings == []


def test_dtype_table_complete() -> None:
    assert len(DTYPE_BITS) == 22


# --- Hostile headers ------------------------------------------------------------


def test_duplicate_top_level_key() -> None:
    entry = json.dumps(tensor("U8", [1], 0, 1))
    raw = f'{{"a": {entry}, "a": {entry}}}'.encode()
    finding = only(scan(build(raw, b"x")), "safetensors.invalid-header")
    assert "'a' appears more than once" in finding.message


def test_duplicate_nested_key() -> None:
    raw = b'{"a": {"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]}}'
    finding = only(scan(build(raw, b"x")), "safetensors.invalid-header")
    assert "'dtype'" in finding.message


def test_duplicate_metadata_key() -> None:
    raw = b'{"__metadata__": {"k": "1", "k": "2"}}'
    assert rules(scan(build(raw))) == ["safetensors.invalid-header"]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nonfinite_number_rejected(constant: bytes) -> None:
    raw = b'{"a": {"dtype": "U8", "shape": [' + constant + b'], "data_offsets": [0, 1]}}'
    finding = only(scan(build(raw, b"x")), "safetensors.invalid-header")
    assert constant.decode() in finding.message


def test_non_utf8_header() -> None:
    raw = b'{"\xff\xfe": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    finding = only(scan(build(raw, b"x")), "safetensors.invalid-header")
    assert "UTF-8" in finding.message


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"text"',
        b" {}",
        b"{}\n",
        b"{} x",
        b"{",
        b"",
        b"\xef\xbb\xbf{}",
        b'{"a": 1}',
        b'{"a": {"dtype": "U8", "shape": [1]}}',
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}',
        b'{"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 1]}}',
        b'{"a": {"dtype": "U8", "shape": [true], "data_offsets": [0, 1]}}',
        b'{"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}',
        b'{"a": {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}}',
        b'{"a": {"dtype": "U8", "shape": 1, "data_offsets": [0, 1]}}',
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}}',
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}',
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, "1"]}}',
        b'{"__metadata__": {"k": 1}}',
        b'{"__metadata__": ["k"]}',
        b"[" * 100_000,
    ],
)
def test_malformed_header(raw: bytes) -> None:
    result = scan(build(raw, b"x"))
    assert "safetensors.invalid-header" in rules(result)


def test_malformed_entry_names_tensor() -> None:
    raw = b'{"layer.0": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}'
    finding = only(scan(build(raw, b"x")), "safetensors.invalid-header")
    assert "'layer.0'" in finding.message


def test_rank_over_limit() -> None:
    header = {"a": tensor("U8", [1] * 65, 0, 1)}
    finding = only(scan(build(header, b"x")), "safetensors.invalid-header")
    assert "65 dimensions" in finding.message


def test_rank_at_limit_clean() -> None:
    assert scan(build({"a": tensor("U8", [1] * 64, 0, 1)}, b"x")).findings == []


def test_huge_integer_rejected() -> None:
    raw = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1' + b"0" * 5000
    raw += b"]}}"
    assert rules(scan(build(raw, b"x"))) == ["safetensors.invalid-header"]


def test_unknown_dtype() -> None:
    finding = only(scan(build({"w": tensor("Q7", [2], 0, 2)}, b"ab")), "safetensors.unknown-dtype")
    assert finding.severity is Severity.MEDIUM
    assert "'Q7'" in finding.message


def test_size_mismatch() -> None:
    result = scan(build({"w": tensor("F32", [2, 3], 0, 20)}, b"x" * 20))
    finding = only(result, "safetensors.size-mismatch")
    assert finding.severity is Severity.HIGH
    assert "'w'" in finding.message
    assert "24 bytes" in finding.message
    assert "span 20 bytes" in finding.message


def test_size_mismatch_offset() -> None:
    data = build({"w": tensor("F32", [2], 0, 4)}, b"x" * 4)
    finding = only(scan(data), "safetensors.size-mismatch")
    assert finding.offset == len(data) - 4


def test_subbyte_dtype_partial_byte() -> None:
    result = scan(build({"a": tensor("F4", [3], 0, 2)}, b"ab"))
    finding = only(result, "safetensors.size-mismatch")
    assert "12 bits" in finding.message


def test_huge_shape_mismatch() -> None:
    header = {"a": tensor("U8", [2**62] * 64, 0, 1)}
    finding = only(scan(build(header, b"x")), "safetensors.size-mismatch")
    assert "more bytes than the whole data section" in finding.message


def test_overlapping_ranges() -> None:
    header = {"a": tensor("U8", [8], 0, 8), "b": tensor("U8", [8], 4, 12)}
    result = scan(build(header, b"x" * 12))
    finding = only(result, "safetensors.overlap")
    assert finding.severity is Severity.HIGH
    assert "'a'" in finding.message
    assert "'b'" in finding.message


def test_identical_ranges_overlap() -> None:
    header = {"a": tensor("U8", [4], 0, 4), "b": tensor("I8", [4], 0, 4)}
    assert rules(scan(build(header, b"x" * 4))) == ["safetensors.overlap"]


def test_empty_range_inside_other() -> None:
    header = {"a": tensor("U8", [8], 0, 8), "e": tensor("U8", [0], 4, 4)}
    assert rules(scan(build(header, b"x" * 8))) == ["safetensors.overlap"]


def test_hole_in_data() -> None:
    header = {"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [4], 8, 12)}
    finding = only(scan(build(header, b"x" * 12)), "safetensors.gap")
    assert finding.severity is Severity.MEDIUM
    assert "4 to 8" in finding.message


def test_hole_at_start() -> None:
    header = {"a": tensor("U8", [4], 4, 8)}
    assert rules(scan(build(header, b"x" * 8))) == ["safetensors.gap"]


def test_trailing_bytes() -> None:
    data = build({"a": tensor("U8", [4], 0, 4)}, b"x" * 4 + b"payload")
    finding = only(scan(data), "safetensors.trailing-bytes")
    assert finding.severity is Severity.MEDIUM
    assert "last 7 bytes" in finding.message
    assert finding.offset == len(data) - 7


def test_data_without_tensors() -> None:
    assert rules(scan(build({}, b"hidden"))) == ["safetensors.trailing-bytes"]


def test_truncated_data() -> None:
    data = build({"a": tensor("U8", [4], 0, 4), "b": tensor("U8", [8], 4, 12)}, b"x" * 6)
    finding = only(scan(data), "safetensors.truncated")
    assert finding.severity is Severity.HIGH
    assert "'b'" in finding.message
    assert "12" in finding.message


def test_file_shorter_than_length_field() -> None:
    finding = only(scan(b"\x10\x00\x00"), "safetensors.truncated")
    assert "3 bytes" in finding.message


def test_empty_file() -> None:
    assert rules(scan(b"")) == ["safetensors.truncated"]


def test_header_length_beyond_file() -> None:
    data = build({"a": tensor("U8", [1], 0, 1)}, b"x", length=500)
    finding = only(scan(data), "safetensors.invalid-header")
    assert "500" in finding.message


def test_header_length_absurd() -> None:
    data = build({}, length=2**63)
    finding = only(scan(data), "safetensors.header-too-large")
    assert str(2**63) in finding.message


def test_header_over_limit() -> None:
    data = build({"a": tensor("U8", [1], 0, 1)}, b"x")
    result = scan(data, limits=Limits(max_safetensors_header=16))
    assert rules(result) == ["safetensors.header-too-large"]


def test_too_many_tensors() -> None:
    header = {f"t{i}": tensor("U8", [1], i, i + 1) for i in range(5)}
    result = scan(build(header, b"x" * 5), limits=Limits(max_safetensors_tensors=4))
    assert rules(result) == ["safetensors.too-many-tensors"]


def test_findings_capped_per_rule() -> None:
    header = {f"t{i}": tensor("U8", [2], i, i + 1) for i in range(30)}
    result = scan(build(header, b"x" * 30))
    mismatches = [f for f in result.findings if f.rule == "safetensors.size-mismatch"]
    assert len(mismatches) == 21
    assert "10 more" in mismatches[-1].message


def test_long_name_shortened() -> None:
    name = "n" * 10_000
    finding = only(scan(build({name: tensor("Q7", [1], 0, 1)}, b"x")), "safetensors.unknown-dtype")
    assert len(finding.message) < 400


# --- Streaming --------------------------------------------------------------------

STREAM_CASES = [
    build({"a": tensor("U8", [4], 0, 4), "b": tensor("F32", [1], 4, 8)}, b"x" * 8),
    build({"a": tensor("U8", [4], 0, 4)}, b"x" * 9),
    build({"a": tensor("U8", [8], 0, 8)}, b"x" * 3),
    build({}, length=2**63),
    build(b'{"a": 1, "a": 2}'),
    b"\x05\x00",
]


@pytest.mark.parametrize("data", STREAM_CASES)
def test_bytewise_feed_matches(data: bytes) -> None:
    whole = scan(data)
    bytewise = scan(data, chunk=1)
    assert bytewise.findings == whole.findings
    assert bytewise.facts == whole.facts


def test_bytewise_feed_real_file(numpy_file: bytes) -> None:
    assert scan(numpy_file, chunk=1).facts == scan(numpy_file).facts


def test_feed_copies_chunk() -> None:
    data = bytearray(build({"a": tensor("U8", [1], 0, 1)}, b"x"))
    scanner = SafetensorsScanner(ScanContext("m", len(data)), Format.SAFETENSORS)
    scanner.feed(memoryview(data))
    data[8:] = b"\x00" * (len(data) - 8)
    assert scanner.close().findings == []


# --- Fuzzing --------------------------------------------------------------------

CLOSE_SECONDS = 2.0


def timed_scan(data: bytes) -> float:
    start = time.monotonic()
    result = scan(data)
    assert isinstance(result, ScanResult)
    return time.monotonic() - start


@settings(max_examples=300, deadline=None)
@given(header=st.binary(max_size=2048), data=st.binary(max_size=64))
def test_fuzz_header_bytes(header: bytes, data: bytes) -> None:
    assert timed_scan(build(header, data)) < CLOSE_SECONDS


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
ENTRIES = (
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from([*DTYPE_BITS, "Q7"]),
            "shape": st.lists(st.integers(min_value=-1, max_value=2**70), max_size=70),
            "data_offsets": st.lists(st.integers(min_value=-1, max_value=2**70), max_size=3),
        }
    )
    | JSON_VALUES
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.dictionaries(st.text(max_size=6), ENTRIES, max_size=5),
    data=st.binary(max_size=64),
    length_delta=st.integers(min_value=-4, max_value=4),
)
def test_fuzz_structured_header(header: dict[str, Any], data: bytes, length_delta: int) -> None:
    raw = json.dumps(header).encode()
    length = max(len(raw) + length_delta, 0)
    assert timed_scan(build(raw, data, length=length)) < CLOSE_SECONDS


# --- Memory ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_gib_stream_memory(tmp_path: Path) -> None:
    data_len = 2 * 1024 * MiB
    header = json.dumps({"blob": tensor("U8", [data_len], 0, data_len)}).encode()
    path = tmp_path / "big.safetensors"
    with path.open("wb") as stream:
        stream.write(build(header))
        stream.truncate(8 + len(header) + data_len)

    size = path.stat().st_size
    tracemalloc.start()
    try:
        scanner = SafetensorsScanner(ScanContext("big", size), Format.SAFETENSORS)
        buffer = bytearray(8 * MiB)
        view = memoryview(buffer)
        with path.open("rb", buffering=0) as stream:
            while count := stream.readinto(buffer):
                scanner.feed(view[:count])
        result = scanner.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.findings == []
    assert result.facts["parameters"] == data_len
    assert peak < 64 * MiB
