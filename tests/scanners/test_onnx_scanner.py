"""Tests for the ONNX operator and external-data scanner."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.pipeline import admit, inspect
from attestgate.scanners import onnx_scanner, scan_bytes
from attestgate.scanners.interface import ScanContext, ScanResult
from attestgate.scanners.onnx_scanner import (
    OnnxScanner,
    check_external_data_paths,
    location_problem,
)

FLOAT = TensorProto.FLOAT


def value(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, FLOAT, [1, 4])


def model(
    nodes: list[onnx.NodeProto],
    *,
    initializers: list[TensorProto] | None = None,
    opsets: dict[str, int] | None = None,
    functions: list[onnx.FunctionProto] | None = None,
    inputs: tuple[str, ...] = ("x",),
    output: str = "y",
) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [value(name) for name in inputs], [value(output)], initializer=initializers
    )
    imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {}).items()]
    built = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), *imports],
        functions=functions or [],
        producer_name="attestgate-tests",
        producer_version="1.0",
    )
    return built.SerializeToString()


def external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.ones(4, dtype=np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, entry in (("location", location), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=entry)
    return tensor


def scan(data: bytes, chunk: int = 0) -> ScanResult:
    scanner = OnnxScanner(ScanContext("model.onnx", len(data)), Format.ONNX)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    return scanner.close()


def rules(result: ScanResult | list[Finding]) -> list[str]:
    findings = result.findings if isinstance(result, ScanResult) else result
    return sorted(finding.rule for finding in findings)


def only(result: ScanResult | list[Finding], rule: str) -> Finding:
    findings = result.findings if isinstance(result, ScanResult) else result
    matches = [finding for finding in findings if finding.rule == rule]
    assert len(matches) == 1, rules(findings)
    return matches[0]


def if_node(then_nodes: list[onnx.NodeProto], name: str = "branch") -> onnx.NodeProto:
    then_graph = helper.make_graph(then_nodes, "then", [], [value("t")])
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])], "else", [], [value("e")]
    )
    return helper.make_node(
        "If", ["cond"], ["y"], name=name, then_branch=then_graph, else_branch=else_graph
    )


CLEAN = model(
    [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
    initializers=[numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), "w")],
)


# --- Clean models ---------------------------------------------------------------


def test_clean_sniffs_as_onnx() -> None:
    assert sniff(CLEAN[:512], len(CLEAN), "model.onnx") == Format.ONNX


def test_clean_no_findings() -> None:
    assert scan(CLEAN).findings == []


def test_clean_facts() -> None:
    facts = scan(CLEAN, chunk=13).facts
    assert facts["node_count"] == 2
    assert facts["initializer_count"] == 1
    assert facts["op_types"] == {"Add": 1, "Relu": 1}
    assert facts["opset_imports"] == {"ai.onnx": 17}
    assert facts["producer_name"] == "attestgate-tests"
    assert facts["ir_version"] > 0


def test_registry_routes_onnx() -> None:
    fmt, result = scan_bytes(CLEAN, ScanContext("model.onnx", len(CLEAN)))
    assert fmt == Format.ONNX
    assert result.format == Format.ONNX


def test_ml_domain_clean() -> None:
    node = helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2")
    assert scan(model([node], opsets={"ai.onnx.ml": 3})).findings == []


def test_ai_onnx_alias_clean() -> None:
    node = helper.make_node("Relu", ["x"], ["y"], domain="ai.onnx")
    assert scan(model([node])).findings == []


# --- Operators ----------------------------------------------------------------------


def test_custom_operator() -> None:
    node = helper.make_node("Backdoor", ["x"], ["y"], domain="evil.ops", name="n1")
    finding = only(scan(model([node], opsets={"evil.ops": 1})), "onnx.custom-operator")
    assert finding.severity == Severity.HIGH
    assert finding.details["domain"] == "evil.ops"
    assert finding.details["op_type"] == "Backdoor"


def test_custom_operator_counted_once() -> None:
    nodes = [
        helper.make_node("Op", ["x"], ["a"], domain="c.ops"),
        helper.make_node("Op", ["a"], ["y"], domain="c.ops"),
    ]
    finding = only(scan(model(nodes, opsets={"c.ops": 1})), "onnx.custom-operator")
    assert finding.details["count"] == 2


def test_contrib_operator_low() -> None:
    node = helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")
    finding = only(scan(model([node], opsets={"com.microsoft": 1})), "onnx.contrib-operator")
    assert finding.severity == Severity.LOW


def test_custom_operator_in_if_branch() -> None:
    inner = helper.make_node("Evil", ["x"], ["t"], domain="evil.ops")
    data = model([if_node([inner])], inputs=("x", "cond"), opsets={"evil.ops": 1})
    finding = only(scan(data), "onnx.custom-operator")
    assert "then_branch" in finding.message


def test_custom_operator_in_nested_loop() -> None:
    inner = helper.make_node("Evil", ["x"], ["t"], domain="evil.ops")
    body = helper.make_graph([if_node([inner], "deep")], "body", [], [value("y")])
    loop = helper.make_node("Loop", ["n", "cond"], ["y"], body=body)
    data = model([loop], inputs=("n", "cond"), opsets={"evil.ops": 1})
    result = scan(data)
    assert rules(result) == ["onnx.custom-operator"]
    assert result.facts["subgraph_count"] == 3


def test_local_function_call_clean() -> None:
    function = helper.make_function(
        "local.fn",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    call = helper.make_node("Double", ["x"], ["y"], domain="local.fn")
    data = model([call], functions=[function], opsets={"local.fn": 1})
    result = scan(data)
    assert result.findings == []
    assert result.facts["local_function_count"] == 1


def test_custom_operator_inside_local_function() -> None:
    function = helper.make_function(
        "local.fn",
        "Wrap",
        ["a"],
        ["b"],
        [helper.make_node("Evil", ["a"], ["b"], domain="evil.ops")],
        [helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)],
    )
    call = helper.make_node("Wrap", ["x"], ["y"], domain="local.fn")
    data = model([call], functions=[function], opsets={"local.fn": 1, "evil.ops": 1})
    finding = only(scan(data), "onnx.custom-operator")
    assert "local function" in finding.message


def test_unknown_standard_operator() -> None:
    node = helper.make_node("NotAnOnnxOp", ["x"], ["y"])
    assert only(scan(model([node])), "onnx.unknown-operator").severity == Severity.MEDIUM


def test_op_inventory_capped() -> None:
    nodes = [helper.make_node(f"Op{i}", ["x"], [f"o{i}"], domain="c.ops") for i in range(250)]
    nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    result = scan(model(nodes, opsets={"c.ops": 1}))
    assert len(result.facts["op_types"]) == 200
    assert result.facts["op_types_truncated"] == 51


def test_custom_findings_capped() -> None:
    nodes = [helper.make_node(f"Op{i}", ["x"], [f"o{i}"], domain="c.ops") for i in range(25)]
    nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    result = scan(model(nodes, opsets={"c.ops": 1}))
    assert len(result.findings) == 21
    assert result.findings[-1].details["hidden"] == 5


# --- External data: lexical checks ---------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "../../etc/passwd",
        "/abs/path",
        "C:\\weights.bin",
        "C:weights.bin",
        "sub\\..\\x",
        "a/../../b",
        "\\\\server\\share\\w",
        "w\x00.bin",
    ],
)
def test_external_data_escape(location: str) -> None:
    data = model(
        [helper.make_node("Add", ["x", "w"], ["y"])], initializers=[external("w", location)]
    )
    finding = only(scan(data), "onnx.external-data-escape")
    assert finding.severity == Severity.HIGH
    assert finding.details["location"] == location


@pytest.mark.parametrize("location", ["weights.bin", "data/weights.bin", "./w.bin", "w..bin"])
def test_external_data_plain_clean(location: str) -> None:
    data = model(
        [helper.make_node("Add", ["x", "w"], ["y"])], initializers=[external("w", location)]
    )
    result = scan(data)
    assert result.findings == []
    assert result.facts["external_data_locations"] == [location]


def test_external_data_in_constant_attribute() -> None:
    constant = helper.make_node("Constant", [], ["c"], value=external("c", "../secret"))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    assert rules(scan(model([constant, add]))) == ["onnx.external-data-escape"]


def test_external_data_in_subgraph_initializer() -> None:
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["k"], ["t"])],
        "then",
        [],
        [value("t")],
        initializer=[external("k", "/etc/shadow")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])], "else", [], [value("e")]
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)
    assert rules(scan(model([node], inputs=("x", "cond")))) == ["onnx.external-data-escape"]


def test_external_data_in_sparse_initializer() -> None:
    sparse = helper.make_sparse_tensor(external("v", "../v.bin"), external("i", "i.bin"), [4])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g", [value("x")], [value("y")]
    )
    graph.sparse_initializer.append(sparse)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    assert rules(scan(data)) == ["onnx.external-data-escape"]


def test_external_without_location() -> None:
    tensor = external("w", "w.bin")
    del tensor.external_data[:]
    tensor.external_data.add(key="offset", value="0")
    data = model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[tensor])
    assert rules(scan(data)) == ["onnx.external-data-invalid"]


def test_external_empty_location() -> None:
    data = model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[external("w", "")])
    assert rules(scan(data)) == ["onnx.external-data-invalid"]


def test_location_problem_accepts_relative() -> None:
    assert location_problem("weights/part-0.bin") is None


# --- Malformed and oversized input -----------------------------------------------------


def test_garbage_malformed() -> None:
    finding = only(scan(b"\x08\x08\x12\xff\xff\xff\xff\x0f"), "onnx.malformed")
    assert finding.severity == Severity.MEDIUM


def test_truncated_malformed() -> None:
    assert rules(scan(CLEAN[: len(CLEAN) - 7])) == ["onnx.malformed"]


def test_model_without_graph() -> None:
    assert rules(scan(b"\x08\x08\x12\x04test")) == ["onnx.malformed"]


def test_too_large_to_parse() -> None:
    class Small(OnnxScanner):
        max_model_bytes = 32

    scanner = Small(ScanContext("model.onnx", len(CLEAN)), Format.ONNX)
    scanner.feed(memoryview(CLEAN))
    finding = only(scanner.close(), "onnx.too-large-to-parse")
    assert finding.severity == Severity.MEDIUM


def nested_if_model(levels: int) -> bytes:
    """Encode If nodes nested ``levels`` deep by hand, past onnx.helper's own limit."""

    def ld(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + encoder_varint(len(payload)) + payload

    # NodeProto: input = 1, output = 2, op_type = 4, attribute = 5.
    # AttributeProto: name = 1, g = 6, type = 20 (GRAPH is 5). GraphProto.node = 1.
    graph = ld(1, ld(1, b"x") + ld(2, b"y") + ld(4, b"Identity"))
    for _ in range(levels):
        attribute = ld(1, b"then_branch") + b"\xa0\x01\x05" + ld(6, graph)
        graph = ld(1, ld(1, b"c") + ld(2, b"y") + ld(4, b"If") + ld(5, attribute))
    # ModelProto: ir_version = 1, graph = 7, opset_import = 8 (version = 2).
    return b"\x08\x08" + ld(7, graph) + ld(8, b"\x10\x11")


def encoder_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_nested_if_model_parses() -> None:
    result = scan(nested_if_model(5))
    assert result.findings == []
    assert result.facts["subgraph_count"] == 5


def test_nesting_past_protobuf_limit_malformed() -> None:
    assert rules(scan(nested_if_model(40))) == ["onnx.malformed"]


def test_nesting_past_graph_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_scanner, "MAX_GRAPH_DEPTH", 2)
    finding = only(scan(nested_if_model(5)), "onnx.malformed")
    assert "nest more than 2 levels" in finding.message


def test_invalid_utf8_names() -> None:
    data = model([helper.make_node("Relu", ["x"], ["y"], domain="bad.domain")])
    data = data.replace(b"bad.domain", b"bad\x80domain")
    finding = only(scan(data), "onnx.custom-operator")
    assert finding.details["domain"] == "bad\ufffddomain"


def test_expired_deadline_incomplete() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["x"]) for _ in range(2000)]
    data = model(nodes)
    ctx = ScanContext("model.onnx", len(data), deadline=time.monotonic() - 1)
    scanner = OnnxScanner(ctx, Format.ONNX)
    scanner.feed(memoryview(data))
    assert rules(scanner.close()) == ["onnx.scan-incomplete"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 300),
)
def test_fuzz_mutations(edits: list[tuple[int, int]], cut: int) -> None:
    base = model(
        [
            if_node([helper.make_node("Evil", ["x"], ["t"], domain="e")]),
            helper.make_node("Constant", [], ["c"], value=external("c", "../x")),
        ],
        inputs=("x", "cond"),
        initializers=[external("w", "w.bin")],
        opsets={"e": 1},
    )
    data = bytearray(base)
    for position, byte in edits:
        data[position % len(data)] = byte
    data = data[: max(1, len(data) - cut)]
    started = time.monotonic()
    result = scan(bytes(data))
    assert time.monotonic() - started < 2.0
    assert all(isinstance(f, Finding) for f in result.findings)


# --- External data on disk -----------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Return (artifact root, model directory, a secret file outside the root)."""
    root = tmp_path / "artifact"
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(b"\x00" * 16)
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0\n")
    return root, model_dir, secret


def test_disk_plain_file_clean(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    assert check_external_data_paths(model_dir, root, ["weights.bin"]) == []


def test_disk_symlink_escape(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, secret = layout
    (model_dir / "data.bin").symlink_to(secret)
    findings = check_external_data_paths(model_dir, root, ["data.bin"], model_file="model/m.onnx")
    finding = only(findings, "onnx.external-data-escape")
    assert finding.file == "model/m.onnx"
    assert finding.details["resolved"] == str(secret.resolve())


def test_disk_symlink_directory_escape(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, secret = layout
    (model_dir / "shards").symlink_to(secret.parent, target_is_directory=True)
    findings = check_external_data_paths(model_dir, root, ["shards/secret.txt"])
    assert rules(findings) == ["onnx.external-data-escape"]


def test_disk_symlink_inside_clean(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    (root / "shared.bin").write_bytes(b"x")
    (model_dir / "link.bin").symlink_to(root / "shared.bin")
    assert check_external_data_paths(model_dir, root, ["link.bin"]) == []


def test_disk_hard_link_outside(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, secret = layout
    os.link(secret, model_dir / "hard.bin")
    finding = only(
        check_external_data_paths(model_dir, root, ["hard.bin"]), "onnx.external-data-escape"
    )
    assert finding.details["hard_links"] == 2
    assert finding.details["inside"] == 1


def test_disk_hard_link_inside_clean(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    os.link(model_dir / "weights.bin", root / "copy.bin")
    assert check_external_data_paths(model_dir, root, ["weights.bin"]) == []


def test_disk_missing(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    findings = check_external_data_paths(model_dir, root, ["absent.bin"])
    assert only(findings, "onnx.external-data-missing").severity == Severity.MEDIUM


def test_disk_dangling_symlink_escape(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    (model_dir / "gone.bin").symlink_to("/nonexistent/attestgate-test")
    assert rules(check_external_data_paths(model_dir, root, ["gone.bin"])) == [
        "onnx.external-data-escape"
    ]


def test_disk_fifo_invalid(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    os.mkfifo(model_dir / "pipe.bin")
    assert rules(check_external_data_paths(model_dir, root, ["pipe.bin"])) == [
        "onnx.external-data-invalid"
    ]


def test_disk_directory_invalid(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    (model_dir / "dir.bin").mkdir()
    assert rules(check_external_data_paths(model_dir, root, ["dir.bin"])) == [
        "onnx.external-data-invalid"
    ]


def test_disk_skips_lexical_failures(layout: tuple[Path, Path, Path]) -> None:
    root, model_dir, _ = layout
    assert check_external_data_paths(model_dir, root, ["../../etc/passwd", "/etc/passwd"]) == []


# --- Pipeline and real models --------------------------------------------------------


def test_pipeline_reports_custom_operator(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    node = helper.make_node("Backdoor", ["x"], ["y"], domain="evil.ops")
    (artifact / "model.onnx").write_bytes(model([node], opsets={"evil.ops": 1}))
    findings = inspect(artifact).findings
    assert [f.file for f in findings if f.rule == "onnx.custom-operator"] == ["model.onnx"]


def test_admit_blocks_external_data_escape(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    initializer = external("w", "../../etc/passwd")
    (artifact / "model.onnx").write_bytes(
        model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[initializer])
    )
    admission = admit(artifact, stage="deployment", home=tmp_path / "home")
    assert admission.action == "block"


@pytest.mark.parametrize("name", ["silero_onnx", "magika_onnx"])
def test_real_model_clean(real_artifacts: dict[str, Path], name: str) -> None:
    data = real_artifacts[name].read_bytes()
    result = scan(data)
    assert [f for f in result.findings if f.severity >= Severity.HIGH] == []
    assert result.facts["node_count"] > 0


def test_real_silero_variants_clean(real_artifacts: dict[str, Path]) -> None:
    paths = sorted(real_artifacts["silero_onnx"].parent.glob("*.onnx"))
    assert len(paths) > 1
    for path in paths:
        result = scan(path.read_bytes())
        assert result.findings == [], path.name


def test_reordered_fields_scanned() -> None:
    # protobuf allows fields in any order, and onnxruntime loads this file,
    # so the scanner must not depend on ir_version coming first.
    node = helper.make_node("Backdoor", ["x"], ["y"], domain="evil.ops")
    data = model([node], opsets={"evil.ops": 1})
    reordered = data[2:] + data[:2]
    assert reordered[:1] != b"\x08"
    assert rules(scan(reordered)) == ["onnx.custom-operator"]
