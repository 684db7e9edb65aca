"""Tests for the protobuf wire walker and the SavedModel and keras_metadata.pb scanners."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.scanners import open_scanner
from attestgate.scanners.interface import Limits, ScanContext, ScanResult
from attestgate.scanners.protobuf_wire import (
    LEN,
    VARINT,
    Walker,
    WireError,
    WireLimitError,
    WireLimits,
)
from attestgate.scanners.savedmodel_scanner import (
    KerasMetadataScanner,
    SavedModelScanner,
    scan_keras_metadata,
)

# --- A small protobuf encoder for building fixtures ---------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def ld(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return key(number, LEN) + varint(len(raw)) + raw


def vi(number: int, value: int) -> bytes:
    return key(number, VARINT) + varint(value)


def attr_string(name: str, value: str) -> bytes:
    # NodeDef.attr map entry: key = 1, value = 2 (AttrValue.s = 2).
    return ld(5, ld(1, name) + ld(2, ld(2, value)))


def node(name: str, op: str, *extra: bytes) -> bytes:
    return ld(1, name) + ld(2, op) + b"".join(extra)


def function(name: str, *nodes: bytes) -> bytes:
    # FunctionDef.signature = 1 (OpDef.name = 1), node_def = 3.
    return ld(1, ld(1, name)) + b"".join(ld(3, n) for n in nodes)


def graph(nodes: list[bytes], functions: list[bytes] | None = None) -> bytes:
    library = b"".join(ld(1, f) for f in functions or [])
    return b"".join(ld(1, n) for n in nodes) + (ld(2, library) if library else b"")


def meta_graph(
    graph_def: bytes = b"",
    *,
    tags: tuple[str, ...] = ("serve",),
    version: str = "2.16.1",
    assets: tuple[str, ...] = (),
    user_objects: tuple[tuple[str, str], ...] = (),
) -> bytes:
    info = b"".join(ld(4, tag) for tag in tags) + ld(5, version)
    out = ld(1, info) + ld(2, graph_def)
    for filename in assets:
        out += ld(6, ld(2, filename))
    if user_objects:
        nodes = b"".join(
            ld(1, ld(4, ld(1, identifier) + ld(3, metadata)))
            for identifier, metadata in user_objects
        )
        out += ld(7, nodes)
    return out


def saved_model(*meta_graphs: bytes) -> bytes:
    return vi(1, 1) + b"".join(ld(2, m) for m in meta_graphs)


def scan(data: bytes, chunk: int = 0, ctx: ScanContext | None = None) -> ScanResult:
    context = ctx or ScanContext("saved_model.pb", len(data))
    scanner = SavedModelScanner(context, Format.TF_SAVEDMODEL)
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


CLEAN_NODES = [
    node("x", "Placeholder"),
    node("w", "VarHandleOp"),
    node("read", "ReadVariableOp"),
    node("y", "MatMul"),
    node("save/SaveV2", "SaveV2"),
    node("save/RestoreV2", "RestoreV2"),
    node("table_init", "InitializeTableFromTextFileV2"),
    node("call", "StatefulPartitionedCall"),
]


def lambda_metadata() -> str:
    return json.dumps(
        {
            "class_name": "Lambda",
            "name": "lambda",
            "config": {
                "name": "lambda",
                "function": {"class_name": "__tuple__", "items": ["4wEAAAAAAAAA", None, None]},
                "function_type": "lambda",
                "module": "__main__",
            },
        }
    )


# --- Wire walker --------------------------------------------------------------


def test_walker_decodes_fields() -> None:
    data = vi(1, 300) + ld(2, "abc") + key(3, 1) + (7).to_bytes(8, "little")
    fields = list(Walker(data).fields())
    assert [(f.number, f.wire_type, f.value) for f in fields] == [(1, 0, 300), (2, 2, 3), (3, 1, 7)]


def test_walker_string_payload() -> None:
    walker = Walker(ld(1, "héllo"))
    field = next(walker.fields())
    assert walker.string(field) == "héllo"


def test_walker_string_bounded() -> None:
    walker = Walker(ld(1, "x" * 1000))
    field = next(walker.fields())
    assert walker.string(field, 10) == "x" * 10


def test_walker_max_varint() -> None:
    field = next(Walker(vi(1, 2**64 - 1)).fields())
    assert field.value == 2**64 - 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x08" + b"\xff" * 9 + b"\x7f", "wider than 64 bits"),
        (b"\x08\x80", "past the end"),
        (b"\x12\x05ab", "declares 5 bytes"),
        (b"\x0e", "wire type 6"),
        (b"\x0f", "wire type 7"),
        (b"\x00\x00", "field number 0"),
        (b"\x0c", "end-group key"),
        (b"\x0b\x08\x01", "no end-group key"),
        (b"\x0b\x14", "closed by an end-group key for 2"),
        (b"\x09\x01\x02", "runs past its message"),
    ],
)
def test_walker_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        list(Walker(data).fields())


def test_walker_skips_groups() -> None:
    data = key(5, 3) + vi(1, 1) + key(6, 3) + key(6, 4) + key(5, 4) + vi(2, 9)
    fields = list(Walker(data).fields())
    assert [(f.number, f.wire_type) for f in fields] == [(5, 3), (2, 0)]


def test_walker_group_depth_limit() -> None:
    data = key(1, 3) * 100 + key(1, 4) * 100
    with pytest.raises(WireLimitError, match="nest"):
        list(Walker(data, WireLimits(max_depth=10)).fields())


def test_walker_message_depth_limit() -> None:
    walker = Walker(ld(1, "x"), WireLimits(max_depth=3))
    with pytest.raises(WireLimitError, match="nest"):
        list(walker.fields(0, None, 4))


def test_walker_field_budget() -> None:
    data = vi(1, 1) * 100
    with pytest.raises(WireLimitError, match="more than 50 fields"):
        list(Walker(data, WireLimits(max_fields=50)).fields())


def test_walker_deadline() -> None:
    data = vi(1, 1) * 10_000
    limits = WireLimits(deadline=time.monotonic() - 1)
    with pytest.raises(WireLimitError, match="time budget"):
        list(Walker(data, limits).fields())


def test_walker_range_outside_buffer() -> None:
    with pytest.raises(WireError, match="outside the buffer"):
        list(Walker(b"\x08\x01").fields(0, 10))


def _walk_everything(walker: Walker, start: int, end: int, depth: int) -> int:
    count = 0
    for field in walker.fields(start, end, depth):
        count += 1
        if field.wire_type == LEN and depth < 8:
            with contextlib.suppress(WireError):
                count += _walk_everything(walker, field.start, field.end, depth + 1)
    return count


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_walker_fuzz(data: bytes) -> None:
    walker = Walker(data, WireLimits(max_fields=100_000))
    started = time.monotonic()
    with contextlib.suppress(WireError):
        _walk_everything(walker, 0, len(data), 0)
    assert time.monotonic() - started < 2.0


# --- SavedModel: clean graphs ------------------------------------------------


def test_clean_sniffs_as_savedmodel() -> None:
    data = saved_model(meta_graph(graph(CLEAN_NODES)))
    assert sniff(data[:512], len(data), "saved_model.pb") == Format.TF_SAVEDMODEL


def test_clean_graph_no_findings() -> None:
    data = saved_model(meta_graph(graph(CLEAN_NODES, [function("f", node("m", "MatMul"))])))
    assert scan(data).findings == []


def test_clean_graph_facts() -> None:
    data = saved_model(meta_graph(graph(CLEAN_NODES, [function("f", node("m", "MatMul"))])))
    facts = scan(data).facts
    assert facts["node_count"] == len(CLEAN_NODES) + 1
    assert facts["function_count"] == 1
    assert facts["op_types"]["MatMul"] == 2
    assert facts["tags"] == ["serve"]
    assert facts["tensorflow_versions"] == ["2.16.1"]
    assert facts["saved_model_schema_version"] == 1
    assert facts["meta_graph_count"] == 1


def test_clean_graph_chunked_feed() -> None:
    data = saved_model(meta_graph(graph([*CLEAN_NODES, node("p", "PyFunc")])))
    assert rules(scan(data, chunk=7)) == ["savedmodel.python-op"]


def test_registry_opens_scanner() -> None:
    data = saved_model(meta_graph(graph([node("p", "PyFunc")])))
    scanner = open_scanner(Format.TF_SAVEDMODEL, ScanContext("saved_model.pb", len(data)))
    assert scanner is not None
    scanner.feed(memoryview(data))
    assert rules(scanner.close()) == ["savedmodel.python-op"]


# --- SavedModel: risky operations ----------------------------------------------


@pytest.mark.parametrize("op", ["PyFunc", "PyFuncStateless", "EagerPyFunc"])
def test_python_op_in_graph(op: str) -> None:
    data = saved_model(meta_graph(graph([node("py", op)])))
    finding = only(scan(data), "savedmodel.python-op")
    assert finding.severity == Severity.CRITICAL
    assert finding.details["op"] == op
    assert finding.offset is not None


def test_python_op_in_function() -> None:
    data = saved_model(meta_graph(graph([], [function("__inference_f_12", node("n", "PyFunc"))])))
    finding = only(scan(data), "savedmodel.python-op")
    assert "__inference_f_12" in finding.message


@pytest.mark.parametrize("op", ["ReadFile", "WriteFile", "MatchingFiles", "DebugIdentityV2"])
def test_filesystem_op(op: str) -> None:
    data = saved_model(meta_graph(graph([], [function("f", node("n", op))])))
    finding = only(scan(data), "savedmodel.filesystem-op")
    assert finding.severity == Severity.HIGH


def test_network_op() -> None:
    data = saved_model(meta_graph(graph([node("rpc", "RpcCall")])))
    assert only(scan(data), "savedmodel.network-op").severity == Severity.HIGH


def test_namespaced_custom_op() -> None:
    data = saved_model(meta_graph(graph([node("g", "Addons>GatherTree")])))
    assert only(scan(data), "savedmodel.custom-op").severity == Severity.MEDIUM


def test_print_to_file() -> None:
    printer = node("p", "PrintV2", attr_string("output_stream", "file:///tmp/leak.txt"))
    finding = only(scan(saved_model(meta_graph(graph([printer])))), "savedmodel.filesystem-op")
    assert finding.details["target"] == "file:///tmp/leak.txt"


def test_print_to_stderr_clean() -> None:
    printer = node("p", "PrintV2", attr_string("output_stream", "stderr"))
    assert scan(saved_model(meta_graph(graph([printer])))).findings == []


def test_decode_proto_local_clean() -> None:
    decoder = node("d", "DecodeProtoV2", attr_string("descriptor_source", "local://"))
    assert scan(saved_model(meta_graph(graph([decoder])))).findings == []


def test_decode_proto_file_source() -> None:
    decoder = node("d", "DecodeProtoV2", attr_string("descriptor_source", "/etc/evil.desc"))
    assert rules(scan(saved_model(meta_graph(graph([decoder]))))) == ["savedmodel.filesystem-op"]


def test_second_graph_def_merged() -> None:
    # protobuf merges repeated occurrences of a singular message field, so
    # TensorFlow loads the nodes of both copies.
    meta = meta_graph(graph(CLEAN_NODES)) + ld(2, graph([node("p", "PyFunc")]))
    assert rules(scan(saved_model(meta))) == ["savedmodel.python-op"]


def test_second_meta_graph_scanned() -> None:
    data = saved_model(meta_graph(graph(CLEAN_NODES)), meta_graph(graph([node("r", "ReadFile")])))
    result = scan(data)
    assert rules(result) == ["savedmodel.filesystem-op"]
    assert result.facts["meta_graph_count"] == 2


def test_last_op_value_wins() -> None:
    data = saved_model(meta_graph(graph([node("n", "MatMul") + ld(2, "PyFunc")])))
    assert rules(scan(data)) == ["savedmodel.python-op"]


def test_op_with_wrong_wire_type_ignored() -> None:
    # A parser treats a known field with the wrong wire type as unknown.
    data = saved_model(meta_graph(graph([ld(1, "n") + vi(2, 5)])))
    result = scan(data)
    assert result.findings == []
    assert result.facts["op_types"] == {"": 1}


def test_unknown_group_field_skipped() -> None:
    data = saved_model(meta_graph(graph([node("p", "PyFunc", key(9, 3) + vi(1, 1) + key(9, 4))])))
    assert rules(scan(data)) == ["savedmodel.python-op"]


def test_findings_capped_per_rule() -> None:
    nodes = [node(f"p{i}", "PyFunc") for i in range(30)]
    result = scan(saved_model(meta_graph(graph(nodes))))
    assert len(result.findings) == 21
    assert result.findings[-1].details["hidden"] == 10


# --- SavedModel: assets and Keras metadata --------------------------------------


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/etc/passwd", "C:\\x.txt"])
def test_asset_path_escape(filename: str) -> None:
    data = saved_model(meta_graph(graph(CLEAN_NODES), assets=(filename,)))
    assert only(scan(data), "savedmodel.asset-path-escape").severity == Severity.HIGH


def test_asset_plain_name_clean() -> None:
    result = scan(saved_model(meta_graph(graph(CLEAN_NODES), assets=("vocab.txt",))))
    assert result.findings == []
    assert result.facts["asset_files"] == ["vocab.txt"]


def test_user_object_lambda_metadata() -> None:
    meta = meta_graph(graph(CLEAN_NODES), user_objects=(("_tf_keras_layer", lambda_metadata()),))
    result = scan(saved_model(meta))
    finding = only(result, "keras.lambda-layer")
    assert finding.check == "keras"
    assert finding.file == "saved_model.pb"
    assert result.facts["keras_objects"] == 1


def test_user_object_without_metadata_clean() -> None:
    meta = meta_graph(graph(CLEAN_NODES), user_objects=(("trackable_dict_wrapper", ""),))
    assert scan(saved_model(meta)).findings == []


# --- SavedModel: malformed and bounded input ------------------------------------


def test_truncated_keeps_earlier_findings() -> None:
    data = saved_model(meta_graph(graph([node("p", "PyFunc")]))) + ld(2, b"\x12\x40abc")
    result = scan(data)
    assert rules(result) == ["savedmodel.malformed", "savedmodel.python-op"]


def test_truncated_file_malformed() -> None:
    data = saved_model(meta_graph(graph(CLEAN_NODES)))
    finding = only(scan(data[:-5]), "savedmodel.malformed")
    assert finding.severity == Severity.MEDIUM


def test_garbage_malformed() -> None:
    assert rules(scan(b"\x08\x01\x12\xff\xff\xff\xff\x0f")) == ["savedmodel.malformed"]


def test_too_large_to_parse() -> None:
    class Small(SavedModelScanner):
        max_model_bytes = 64

    data = saved_model(meta_graph(graph(CLEAN_NODES)))
    scanner = Small(ScanContext("saved_model.pb", len(data)), Format.TF_SAVEDMODEL)
    scanner.feed(memoryview(data))
    assert rules(scanner.close()) == ["savedmodel.too-large-to-parse"]


def test_deadline_reports_incomplete() -> None:
    data = saved_model(meta_graph(graph([node(f"n{i}", "MatMul") for i in range(5000)])))
    ctx = ScanContext("saved_model.pb", len(data), deadline=time.monotonic() - 1)
    assert rules(scan(data, ctx=ctx)) == ["savedmodel.scan-incomplete"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)),
        max_size=8,
    ),
    st.integers(min_value=0, max_value=400),
)
def test_scanner_fuzz_mutations(edits: list[tuple[int, int]], cut: int) -> None:
    meta = meta_graph(
        graph(
            [*CLEAN_NODES, node("p", "PyFunc")],
            [function("f", node("r", "ReadFile"), node("d", "PrintV2"))],
        ),
        assets=("vocab.txt",),
        user_objects=(("_tf_keras_layer", lambda_metadata()),),
    )
    data = bytearray(saved_model(meta))
    for position, value in edits:
        data[position % len(data)] = value
    data = data[: max(1, len(data) - cut)]
    started = time.monotonic()
    result = scan(bytes(data))
    assert time.monotonic() - started < 2.0
    assert all(isinstance(f, Finding) for f in result.findings)


# --- keras_metadata.pb ---------------------------------------------------------


def keras_metadata(*objects: tuple[str, str]) -> bytes:
    # SavedMetadata.nodes = 1; SavedObject.version = 1 (VersionDef producer = 1,
    # min_consumer = 2), node_id = 2, node_path = 3, identifier = 4, metadata = 5.
    out = b""
    for index, (identifier, metadata) in enumerate(objects):
        body = ld(1, vi(1, 2) + vi(2, 1)) + vi(2, index) + ld(3, f"root.layer{index}")
        out += ld(1, body + ld(4, identifier) + ld(5, metadata))
    return out


def scan_metadata(data: bytes) -> ScanResult:
    scanner = KerasMetadataScanner(ScanContext("keras_metadata.pb", len(data)), Format.UNKNOWN)
    scanner.feed(memoryview(data))
    return scanner.close()


def test_keras_metadata_sniffs_as_unknown() -> None:
    # The file starts with 0x0a (field 1, length-delimited), which no sniff
    # rule claims, so only its name can route it to KerasMetadataScanner.
    data = keras_metadata(("_tf_keras_layer", lambda_metadata()))
    assert data[:1] == b"\x0a"
    assert sniff(data[:512], len(data), "keras_metadata.pb") == Format.UNKNOWN


def test_keras_metadata_lambda() -> None:
    clean = json.dumps({"class_name": "Dense", "config": {"name": "dense", "units": 4}})
    data = keras_metadata(("_tf_keras_layer", clean), ("_tf_keras_layer", lambda_metadata()))
    result = scan_metadata(data)
    assert rules(result) == ["keras.lambda-layer"]
    assert result.facts["keras_objects"] == 2


def test_keras_metadata_clean() -> None:
    clean = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": []}})
    result = scan_metadata(keras_metadata(("_tf_keras_sequential", clean)))
    assert result.findings == []
    assert result.facts["identifiers"] == {"_tf_keras_sequential": 1}


def test_keras_metadata_malformed() -> None:
    data = keras_metadata(("_tf_keras_layer", lambda_metadata()))[:-3]
    assert rules(scan_keras_metadata(data, ScanContext("keras_metadata.pb", len(data)))) == [
        "keras.invalid-config"
    ]


def test_keras_metadata_too_large() -> None:
    class Small(KerasMetadataScanner):
        max_model_bytes = 16

    data = keras_metadata(("_tf_keras_layer", lambda_metadata()))
    scanner = Small(ScanContext("keras_metadata.pb", len(data)), Format.UNKNOWN)
    scanner.feed(memoryview(data))
    assert rules(scanner.close()) == ["keras.config-too-large"]


def test_keras_metadata_json_limit() -> None:
    data = keras_metadata(("_tf_keras_layer", lambda_metadata()))
    ctx = ScanContext("keras_metadata.pb", len(data), Limits(max_json_bytes=32))
    assert rules(scan_keras_metadata(data, ctx)) == ["keras.config-too-large"]


def test_reordered_fields_scanned() -> None:
    # A SavedModel without saved_model_schema_version starts with 0x12;
    # the scanner reads it like any other field order.
    data = ld(2, meta_graph(graph([node("p", "PyFunc")]))) + vi(1, 1)
    result = scan(data)
    assert rules(result) == ["savedmodel.python-op"]
    assert result.facts["saved_model_schema_version"] == 1
