"""Tests for the Parquet, Arrow IPC and JSON Lines scanner."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import arro3.core
import arro3.io
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.pipeline import inspect
from attestgate.scanners.dataset_scanner import SAMPLE_LINES, DatasetScanner
from attestgate.scanners.interface import Limits, ScanContext, ScanResult


def table(rows: int = 100) -> arro3.core.Table:
    return arro3.core.Table.from_pydict(
        {
            "id": np.arange(rows, dtype=np.int64),
            "score": np.linspace(0, 1, rows, dtype=np.float32),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("datasets")
    data = table(100)
    three = arro3.core.Table.from_batches(data.to_batches() * 3)
    arro3.io.write_parquet(data, str(folder / "t.parquet"))
    arro3.io.write_ipc(three, str(folder / "t.arrow"))
    arro3.io.write_ipc_stream(three, str(folder / "t.arrows"))
    lines = "".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(1500))
    (folder / "t.jsonl").write_text(lines)
    return {
        name: (folder / f"t.{name}").read_bytes()
        for name in ("parquet", "arrow", "arrows", "jsonl")
    }


def scan(
    data: bytes, chunk: int = 0, limits: Limits | None = None, reread: bool = True
) -> ScanResult:
    fmt = sniff(data[:512], len(data), "data")
    scanner = DatasetScanner(ScanContext("data", len(data), limits or Limits()), fmt)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    read_at = (lambda offset, length: data[offset : offset + length]) if reread else None
    return scanner.close(read_at)


def rules(result: ScanResult) -> list[str]:
    return sorted(finding.rule for finding in result.findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


# --- Clean files ----------------------------------------------------------------

SNIFFED = {"parquet": Format.PARQUET, "arrow": Format.ARROW, "arrows": Format.ARROW}


@pytest.mark.parametrize("name", ["parquet", "arrow", "arrows", "jsonl"])
def test_clean_no_findings(files: dict[str, bytes], name: str) -> None:
    assert scan(files[name]).findings == []


@pytest.mark.parametrize("name", sorted(SNIFFED))
def test_binary_formats_sniffed(files: dict[str, bytes], name: str) -> None:
    data = files[name]
    assert sniff(data[:512], len(data), "x") is SNIFFED[name]


@pytest.mark.parametrize("name", ["parquet", "arrow", "arrows", "jsonl"])
@pytest.mark.parametrize("chunk", [1, 7])
def test_chunked_same_result(files: dict[str, bytes], name: str, chunk: int) -> None:
    whole = scan(files[name])
    pieces = scan(files[name], chunk)
    assert pieces.findings == whole.findings
    assert pieces.facts == whole.facts


def test_parquet_facts(files: dict[str, bytes]) -> None:
    facts = scan(files["parquet"]).facts
    assert facts["rows"] == 100
    assert facts["row_groups"] == 1
    assert facts["columns"] == 2
    assert facts["column_names"] == ["id", "score"]


def test_parquet_without_reread_only_framing(files: dict[str, bytes]) -> None:
    result = scan(files["parquet"], reread=False)
    assert result.findings == []
    assert "rows" not in result.facts


def test_arrow_file_facts(files: dict[str, bytes]) -> None:
    facts = scan(files["arrow"]).facts
    assert facts["ipc"] == "file"
    assert facts["record_batches"] == 3
    assert facts["rows"] == 300
    assert facts["column_names"] == ["id", "score"]


def test_arrow_stream_facts(files: dict[str, bytes]) -> None:
    facts = scan(files["arrows"]).facts
    assert facts["ipc"] == "stream"
    assert facts["record_batches"] == 3
    assert facts["rows"] == 300
    assert facts["columns"] == 2


def test_jsonl_facts(files: dict[str, bytes]) -> None:
    facts = scan(files["jsonl"]).facts
    assert facts["rows"] == 1500
    assert facts["sampled_rows"] == SAMPLE_LINES
    assert facts["column_names"] == ["id", "text"]


# --- Malformed Parquet --------------------------------------------------------------


def test_parquet_truncated(files: dict[str, bytes]) -> None:
    finding = only(scan(files["parquet"][:-3]), "dataset.malformed")
    assert finding.severity is Severity.MEDIUM


def test_parquet_footer_length_outside(files: dict[str, bytes]) -> None:
    data = files["parquet"][:-8] + struct.pack("<I", len(files["parquet"])) + b"PAR1"
    finding = only(scan(data), "dataset.malformed")
    assert "footer length" in finding.message


def test_parquet_garbage_footer(files: dict[str, bytes]) -> None:
    data = b"PAR1" + b"\x00" * 64 + b"\x19\xfc\xff\xff" + struct.pack("<I", 4) + b"PAR1"
    assert rules(scan(data)) == ["dataset.malformed"]


def test_parquet_too_short() -> None:
    assert rules(scan(b"PAR1PAR1")) == ["dataset.malformed"]


def test_parquet_encrypted_footer_fact() -> None:
    data = b"PAR1" + b"\x01" * 20 + struct.pack("<I", 20) + b"PARE"
    result = scan(data)
    assert result.findings == []
    assert result.facts["encrypted_footer"] is True


def test_parquet_hostile_list_size() -> None:
    # FileMetaData field 2 (schema) as a list claiming 2**60 structs.
    footer = b"\x19\xfc" + b"\x80" * 8 + b"\x10"
    data = b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1"
    assert rules(scan(data)) == ["dataset.malformed"]


# --- Malformed Arrow ------------------------------------------------------------------


def test_arrow_file_truncated(files: dict[str, bytes]) -> None:
    assert rules(scan(files["arrow"][:-100])) == ["dataset.malformed"]


def test_arrow_file_bad_footer_length(files: dict[str, bytes]) -> None:
    data = files["arrow"][:-10] + struct.pack("<i", 10**8) + b"ARROW1"
    assert rules(scan(data)) == ["dataset.malformed"]


def test_arrow_file_corrupt_footer(files: dict[str, bytes]) -> None:
    length = struct.unpack("<i", files["arrow"][-10:-6])[0]
    start = len(files["arrow"]) - 10 - length
    data = files["arrow"][:start] + b"\xff" * length + files["arrow"][-10:]
    assert rules(scan(data)) == ["dataset.malformed"]


def test_arrow_stream_truncated(files: dict[str, bytes]) -> None:
    finding = only(scan(files["arrows"][:-200]), "dataset.malformed")
    assert "truncated" in finding.message


def test_arrow_stream_data_after_end(files: dict[str, bytes]) -> None:
    finding = only(scan(files["arrows"] + b"hidden"), "dataset.malformed")
    assert "end-of-stream" in finding.message


def test_arrow_stream_huge_header() -> None:
    data = b"\xff\xff\xff\xff" + struct.pack("<I", 0x7FFFFFF0) + b"\x00" * 16
    assert rules(scan(data)) == ["dataset.malformed"]


# --- Malformed JSON Lines ---------------------------------------------------------------


def test_jsonl_invalid_line() -> None:
    data = b'{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n'
    finding = only(scan(data), "dataset.malformed")
    assert "(line 3)" in finding.message


def test_jsonl_invalid_utf8() -> None:
    data = b'{"a": 1}\n{"a": "\xff"}\n'
    assert rules(scan(data)) == ["dataset.malformed"]


def test_jsonl_long_line_bounded() -> None:
    data = b'{"a": 1}\n{"a": "' + b"x" * 500 + b'"}\n{"a": 3}\n'
    finding = only(scan(data, limits=Limits(max_json_bytes=100)), "dataset.malformed")
    assert "line 2" in finding.message


def test_jsonl_blank_lines_and_bom_ok() -> None:
    data = b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\n   \n{"a": 3}'
    result = scan(data)
    assert result.findings == []
    assert result.facts["rows"] == 5


def test_jsonl_counts_past_sample() -> None:
    data = b'{"a": 1}\n' * (SAMPLE_LINES + 10) + b"not json\n"
    result = scan(data)
    assert result.findings == []
    assert result.facts["rows"] == SAMPLE_LINES + 11


# --- Robustness -----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_never_raise(files: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["parquet", "arrow", "arrows"]))
    original = bytearray(files[name])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    result = scan(bytes(original[:cut]) if cut > 12 else bytes(original))
    assert all(finding.rule == "dataset.malformed" for finding in result.findings)


# --- Through the pipeline -----------------------------------------------------------------


def test_dataset_repository_flags_only_script(tmp_path: Path, files: dict[str, bytes]) -> None:
    (tmp_path / "data.jsonl").write_bytes(files["jsonl"])
    (tmp_path / "train.parquet").write_bytes(files["parquet"])
    (tmp_path / "my_dataset.py").write_text(
        "import datasets\n\n\nclass MyDataset(datasets.GeneratorBasedBuilder):\n    pass\n"
    )
    findings = inspect(tmp_path).findings
    flagged = {finding.file for finding in findings if finding.severity >= Severity.MEDIUM}
    assert "my_dataset.py" in flagged
    assert "data.jsonl" not in flagged
    assert "train.parquet" not in flagged
    assert any(f.rule == "hf.embedded-code" and f.file == "my_dataset.py" for f in findings)
