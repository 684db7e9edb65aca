"""Tests for the GGUF header, metadata, layout and chat-template scanner."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.pipeline import inspect
from attestgate.scanners import gguf_scanner as module
from attestgate.scanners import open_scanner
from attestgate.scanners.gguf_scanner import GGML_TYPES, GgufLimits, GgufScanner
from attestgate.scanners.interface import MiB, ScanContext, ScanResult

BENIGN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
HOSTILE_TEMPLATE = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"

STRING, ARRAY, UINT32 = 8, 9, 4


def scan(data: bytes, chunk: int = 0, limits: GgufLimits | None = None) -> ScanResult:
    ctx = ScanContext("model.gguf", len(data))
    scanner = GgufScanner(ctx, Format.GGUF, limits or GgufLimits())
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    return scanner.close()


def rules(result: ScanResult) -> list[str]:
    return sorted(finding.rule for finding in result.findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


# --- Fixtures written with the gguf package -----------------------------------


def write_model(path: Path, template: str | None = BENIGN_TEMPLATE, **kwargs: object) -> bytes:
    writer = gguf.GGUFWriter(path, "llama", **kwargs)  # type: ignore[arg-type]
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"token{i}" for i in range(300)])
    writer.add_token_scores([0.0] * 300)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.ones((8, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((32,), dtype=np.float16))
    # A Q8_0 tensor of 2 rows x 64 values: two 34-byte blocks per row.
    writer.add_tensor(
        "blk.0.attn_q.weight",
        np.zeros((2, 68), dtype=np.uint8),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def clean_model(tmp_path: Path) -> bytes:
    return write_model(tmp_path / "model.gguf")


def test_clean_model_has_no_findings(clean_model):
    assert scan(clean_model).findings == []


def test_clean_model_facts(clean_model):
    facts = scan(clean_model).facts
    assert facts["gguf_version"] == 3
    assert facts["tensor_count"] == 3
    assert facts["kv_count"] == 7
    assert facts["architecture"] == "llama"
    assert facts["tensor_types"] == {"F16": 1, "F32": 1, "Q8_0": 1}
    assert facts["chat_templates"] == ["tokenizer.chat_template"]
    assert facts["parameters"] == 8 * 32 + 32 + 2 * 64


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_small_chunks_give_same_result(clean_model, chunk):
    assert scan(clean_model, chunk=chunk).findings == []


def test_registry_opens_scanner(clean_model):
    scanner = open_scanner(Format.GGUF, ScanContext("model.gguf", len(clean_model)))
    assert scanner is not None
    scanner.feed(memoryview(clean_model))
    assert scanner.close().facts["tensor_count"] == 3


def test_hostile_template_located_in_gguf(tmp_path):
    data = write_model(tmp_path / "model.gguf", HOSTILE_TEMPLATE)
    result = scan(data)
    finding = next(f for f in result.findings if f.rule == "chat-template.dunder-access")
    assert finding.severity is Severity.CRITICAL
    assert finding.file == "model.gguf:tokenizer.chat_template"
    assert finding.offset is not None
    template = HOSTILE_TEMPLATE.encode()
    assert data[finding.offset : finding.offset + len(template)] == template


def test_hostile_template_gadget_reported(tmp_path):
    data = write_model(tmp_path / "model.gguf", HOSTILE_TEMPLATE)
    assert "chat-template.gadget" in rules(scan(data))


def test_named_template_variant_analysed(tmp_path):
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_string("tokenizer.chat_template.tool_use", "{{ x['__globals__'] }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    finding = only(scan(path.read_bytes()), "chat-template.dunder-access")
    assert finding.file == "model.gguf:tokenizer.chat_template.tool_use"


def test_big_endian_model_parsed(tmp_path):
    data = write_model(tmp_path / "model.gguf", endianess=gguf.GGUFEndian.BIG)
    result = scan(data)
    assert rules(result) == ["gguf.big-endian"]
    assert only(result, "gguf.big-endian").severity is Severity.LOW
    assert result.facts["byte_order"] == "big"
    assert result.facts["tensor_count"] == 3


def test_pipeline_reports_template_in_gguf(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    write_model(model / "model.gguf", HOSTILE_TEMPLATE)
    findings = inspect(model).findings
    located = {f.file for f in findings if f.rule == "chat-template.dunder-access"}
    assert located == {"model.gguf:tokenizer.chat_template"}


def test_type_table_matches_gguf_package():
    package = {
        int(kind): (kind.name, *sizes) for kind, sizes in gguf.constants.GGML_QUANT_SIZES.items()
    }
    assert {k: package[k] for k in GGML_TYPES} == GGML_TYPES


# --- Files built byte by byte -------------------------------------------------


def u32(value: int, order: str = "<") -> bytes:
    return struct.pack(order + "I", value)


def u64(value: int, order: str = "<") -> bytes:
    return struct.pack(order + "Q", value)


def string(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return u64(len(raw) if length is None else length) + raw


def kv_string(key: str, value: str) -> bytes:
    return string(key) + u32(STRING) + string(value)


def kv_u32(key: str, value: int) -> bytes:
    return string(key) + u32(UINT32) + u32(value)


def tensor_info(name: str, dims: list[int], type_id: int = 0, offset: int = 0) -> bytes:
    return (
        string(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(type_id) + u64(offset)
    )


def build(
    kvs: list[bytes] = (),  # type: ignore[assignment]
    tensors: list[bytes] = (),  # type: ignore[assignment]
    data: bytes = b"",
    *,
    version: int = 3,
    kv_count: int | None = None,
    tensor_count: int | None = None,
    alignment: int = 32,
) -> bytes:
    out = b"GGUF" + u32(version)
    out += u64(len(tensors) if tensor_count is None else tensor_count)
    out += u64(len(kvs) if kv_count is None else kv_count)
    out += b"".join(kvs) + b"".join(tensors)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def f32_tensor(name: str, count: int, offset: int = 0) -> bytes:
    return tensor_info(name, [count], 0, offset)


def test_byte_built_clean_file():
    data = build([kv_string("general.architecture", "llama")], [f32_tensor("a", 8)], b"\0" * 32)
    assert scan(data).findings == []


def test_huge_kv_count():
    result = scan(build(kv_count=2**40))
    limit = only(result, "gguf.limit-exceeded")
    assert limit.severity is Severity.MEDIUM
    assert only(result, "gguf.malformed").severity is Severity.HIGH


def test_kv_count_beyond_file_truncated():
    result = scan(build([kv_string("a", "b")], kv_count=5))
    assert only(result, "gguf.truncated").severity is Severity.HIGH


def test_huge_tensor_count():
    result = scan(build(tensor_count=2**33))
    assert "gguf.limit-exceeded" in rules(result)
    assert "gguf.malformed" in rules(result)


def test_string_length_beyond_file():
    kv = string("general.name", length=1000) + b"short"
    result = scan(build([kv]))
    assert only(result, "gguf.truncated").severity is Severity.HIGH


def test_string_length_over_limit():
    kv = string("general.architecture") + u32(STRING) + u64(2**62)
    result = scan(build([kv]))
    assert only(result, "gguf.limit-exceeded").severity is Severity.MEDIUM
    assert only(result, "gguf.malformed").severity is Severity.HIGH


def test_string_length_not_buffered_beyond_limit():
    limits = GgufLimits(max_string_bytes=100)
    kv = string("general.name") + u32(STRING) + string("x" * 200)
    result = scan(build([kv]), limits=limits)
    assert rules(result) == ["gguf.limit-exceeded"]


def test_tensor_offset_beyond_file():
    data = build([], [f32_tensor("a", 8, offset=1 << 20)], b"\0" * 32)
    finding = only(scan(data), "gguf.tensor-out-of-bounds")
    assert finding.severity is Severity.HIGH


def test_tensor_data_cut_short():
    data = build([], [f32_tensor("a", 64)], b"\0" * 100)
    assert "gguf.tensor-out-of-bounds" in rules(scan(data))


def test_tensor_size_overflows_int64():
    data = build([], [tensor_info("a", [2**40, 2**40])], b"")
    assert "gguf.malformed" in rules(scan(data))


def test_overlapping_tensors():
    tensors = [f32_tensor("a", 16, 0), f32_tensor("b", 16, 32)]
    finding = only(scan(build([], tensors, b"\0" * 96)), "gguf.tensor-overlap")
    assert finding.severity is Severity.HIGH
    assert finding.details["tensors"] == ["a", "b"]


def test_adjacent_tensors_do_not_overlap():
    tensors = [f32_tensor("a", 8, 0), f32_tensor("b", 8, 32)]
    assert scan(build([], tensors, b"\0" * 64)).findings == []


def test_misaligned_offset():
    tensors = [f32_tensor("a", 1, 4)]
    assert "gguf.malformed" in rules(scan(build([], tensors, b"\0" * 32)))


@pytest.mark.parametrize("cut", range(1, 80, 3))
def test_truncated_header(cut):
    data = build([kv_string("general.architecture", "llama")], [f32_tensor("a", 8)])
    result = scan(data[:cut])
    assert "gguf.truncated" in rules(result)


def test_truncated_finding_is_high():
    data = build([kv_string("general.architecture", "llama")])
    assert only(scan(data[:30]), "gguf.truncated").severity is Severity.HIGH


def test_unknown_value_type():
    kv = string("general.thing") + u32(99) + u32(0)
    finding = only(scan(build([kv])), "gguf.malformed")
    assert finding.severity is Severity.HIGH
    assert finding.details["value_type"] == 99


def test_unknown_array_element_type():
    kv = string("general.thing") + u32(ARRAY) + u32(77) + u64(1)
    assert rules(scan(build([kv]))) == ["gguf.malformed"]


def nested(depth: int) -> bytes:
    value = u32(UINT32) + u64(0)
    for _ in range(depth):
        value = u32(ARRAY) + u64(1) + value
    return value


def test_deeply_nested_arrays():
    kv = string("general.nested") + u32(ARRAY) + nested(50)
    result = scan(build([kv]))
    assert only(result, "gguf.limit-exceeded").severity is Severity.MEDIUM


def test_shallow_nested_arrays_accepted():
    kv = string("general.nested") + u32(ARRAY) + nested(3)
    assert scan(build([kv])).findings == []


def test_array_length_over_limit():
    kv = string("tokenizer.ggml.tokens") + u32(ARRAY) + u32(STRING) + u64(2**50)
    assert "gguf.limit-exceeded" in rules(scan(build([kv])))


def test_fixed_size_array_skipped_across_chunks():
    values = b"".join(u32(i) for i in range(10_000))
    kv = string("tokenizer.ggml.token_type") + u32(ARRAY) + u32(UINT32) + u64(10_000) + values
    data = build([kv, kv_string("general.architecture", "llama")], [f32_tensor("a", 8)], b"\0" * 32)
    result = scan(data, chunk=999)
    assert result.findings == []
    assert result.facts["architecture"] == "llama"


def test_string_array_element_budget():
    items = b"".join(string("t") for _ in range(50))
    kv = string("tokenizer.ggml.tokens") + u32(ARRAY) + u32(STRING) + u64(50) + items
    result = scan(build([kv]), limits=GgufLimits(max_elements=10))
    assert rules(result) == ["gguf.limit-exceeded"]


@pytest.mark.parametrize("version", [1, 4, 0xDEADBEEF])
def test_unsupported_version(version):
    result = scan(build(version=version))
    finding = only(result, "gguf.unsupported-version")
    assert finding.severity is Severity.MEDIUM


def test_bad_magic():
    assert rules(scan(b"GGUX" + b"\0" * 40)) == ["gguf.malformed"]


def test_empty_stream_truncated():
    assert rules(scan(b"")) == ["gguf.truncated"]


def test_duplicate_key():
    kvs = [kv_string("general.name", "a"), kv_string("general.name", "b")]
    assert only(scan(build(kvs)), "gguf.duplicate-key").severity is Severity.HIGH


def test_duplicate_tensor_name():
    tensors = [f32_tensor("a", 8, 0), f32_tensor("a", 8, 32)]
    finding = only(scan(build([], tensors, b"\0" * 64)), "gguf.duplicate-tensor")
    assert finding.severity is Severity.HIGH


def test_long_tensor_name():
    data = build([], [f32_tensor("n" * 65, 8)], b"\0" * 32)
    assert rules(scan(data)) == ["gguf.malformed"]


def test_too_many_dimensions():
    data = build([], [tensor_info("a", [1] * 9)], b"\0" * 32)
    assert rules(scan(data)) == ["gguf.malformed"]


def test_block_size_must_divide_first_dimension():
    q4_0 = 2
    data = build([], [tensor_info("a", [33], q4_0)], b"\0" * 64)
    assert rules(scan(data)) == ["gguf.malformed"]


def test_unknown_tensor_type(monkeypatch):
    monkeypatch.setattr(module, "_package_types", lambda: {})
    data = build([], [tensor_info("a", [8], 99)], b"\0" * 32)
    result = scan(data)
    assert only(result, "gguf.unknown-tensor-type").severity is Severity.MEDIUM
    assert result.facts["tensor_types"] == {"unknown type 99": 1}


def test_package_types_extend_table(monkeypatch):
    monkeypatch.setattr(module, "_package_types", lambda: {99: ("NEW", 1, 2)})
    data = build([], [tensor_info("a", [8], 99)], b"\0" * 32)
    assert scan(data).findings == []


def test_custom_alignment():
    kvs = [kv_u32("general.alignment", 64)]
    data = build(kvs, [f32_tensor("a", 8, 0), f32_tensor("b", 8, 64)], b"\0" * 128, alignment=64)
    result = scan(data)
    assert result.findings == []
    assert result.facts["alignment"] == 64


@pytest.mark.parametrize("alignment", [0, 3, 48])
def test_invalid_alignment(alignment):
    data = build([kv_u32("general.alignment", alignment)])
    assert "gguf.malformed" in rules(scan(data))


def test_chat_template_of_wrong_type():
    kv = kv_u32("tokenizer.chat_template", 1)
    finding = only(scan(build([kv])), "gguf.invalid-chat-template")
    assert finding.severity is Severity.MEDIUM


def test_expired_budget_stops_before_template():
    data = build([kv_string("tokenizer.chat_template", "{{ x.__class__ }}")])
    ctx = ScanContext("model.gguf", len(data), deadline=time.monotonic() - 1)
    scanner = GgufScanner(ctx, Format.GGUF)
    scanner.feed(memoryview(data))
    result = scanner.close()
    assert rules(result) == ["gguf.limit-exceeded"]


def test_alignment_of_wrong_type():
    kv = string("general.alignment") + u32(STRING) + string("64")
    assert "gguf.malformed" in rules(scan(build([kv])))


def test_chat_templates_bounded():
    kvs = [kv_string(f"tokenizer.chat_template.t{i}", "{{ x.__class__ }}") for i in range(5)]
    result = scan(build(kvs), limits=GgufLimits(max_chat_templates=2))
    assert only(result, "chat-template.limit-exceeded").details["skipped"] == 3
    assert len([f for f in result.findings if f.rule == "chat-template.dunder-access"]) == 2


def test_byte_built_template_analysed():
    data = build([kv_string("tokenizer.chat_template", "{{ lipsum.__globals__ }}")])
    result = scan(data, chunk=3)
    assert "chat-template.gadget" in rules(result)
    assert "chat-template.dunder-access" in rules(result)


def test_tensor_data_not_buffered():
    size = 64 * MiB
    header = build([], [tensor_info("big", [size // 4])])
    ctx = ScanContext("model.gguf", len(header) + size)
    scanner = GgufScanner(ctx, Format.GGUF)
    chunk = memoryview(bytes(4 * MiB))
    tracemalloc.start()
    try:
        scanner.feed(memoryview(header))
        for _ in range(size // len(chunk)):
            scanner.feed(chunk)
        result = scanner.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.findings == []
    assert peak < 4 * MiB


def test_header_stream_memory_bounded():
    # About 1 MiB of token strings streamed in 64 KiB chunks. The scanner
    # keeps neither the array nor more than a chunk of it.
    items = b"".join(string(f"token{i}") for i in range(50_000))
    kv = string("tokenizer.ggml.tokens") + u32(ARRAY) + u32(STRING) + u64(50_000) + items
    data = build([kv])
    tracemalloc.start()
    try:
        result = scan(data, chunk=64 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.findings == []
    assert peak < 512 * 1024


# --- Fuzzing ------------------------------------------------------------------


def _valid_header() -> bytes:
    kvs = [
        kv_string("general.architecture", "llama"),
        kv_u32("general.alignment", 32),
        string("tokenizer.ggml.tokens")
        + u32(ARRAY)
        + u32(STRING)
        + u64(3)
        + string("a")
        + string("bc")
        + string("def"),
        kv_string("tokenizer.chat_template", "{{ messages[0]['content'] }}"),
    ]
    tensors = [f32_tensor("a", 8, 0), tensor_info("b", [32, 2], 8, 32)]
    return build(kvs, tensors, b"\0" * 128)


VALID = _valid_header()


def check_bounded(data: bytes, chunk: int) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = scan(data, chunk=chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2.0
    assert peak < 16 * MiB
    assert all(isinstance(finding, Finding) for finding in result.findings)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), st.integers(1, 64))
def test_fuzz_random_headers(tail, chunk):
    check_bounded(b"GGUF" + u32(3) + tail, chunk)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(VALID)),
    st.integers(1, 97),
)
def test_fuzz_mutated_headers(flips, cut, chunk):
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    check_bounded(bytes(data[: max(cut, 8)]), chunk)
