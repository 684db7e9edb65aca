"""Tests for Keras configuration checks and the legacy HDF5 model scanner."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.pipeline import inspect
from attestgate.scanners import hdf5_probe, keras_scanner, open_scanner
from attestgate.scanners.interface import Limits, ScanContext, ScanResult
from attestgate.scanners.keras_scanner import (
    Hdf5Scanner,
    inspect_keras_config,
    scan_keras_config,
    scan_keras_zip_members,
)

# --- Keras 3 style configs, written by hand -------------------------------------


def layer(class_name: str, config: dict[str, Any], module: str = "keras.layers") -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def dense(name: str, units: int = 4) -> dict[str, Any]:
    return layer(
        "Dense",
        {
            "name": name,
            "units": units,
            "activation": "relu",
            "kernel_initializer": layer("GlorotUniform", {"seed": None}, "keras.initializers"),
            "dtype": layer("DTypePolicy", {"name": "float32"}, "keras"),
        },
    )


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    model = layer("Sequential", {"name": "sequential", "layers": list(layers)}, "keras")
    model["compile_config"] = {
        "optimizer": layer("Adam", {"learning_rate": 0.001}, "keras.optimizers"),
        "loss": "mean_squared_error",
    }
    return model


def keras3_lambda(name: str = "lambda") -> dict[str, Any]:
    function = {"class_name": "__lambda__", "config": {"value": ["4wEAAAAAAAAA", None, None]}}
    return layer("Lambda", {"name": name, "function": function, "arguments": {}})


def keras2_lambda(name: str = "lambda") -> dict[str, Any]:
    return {
        "class_name": "Lambda",
        "config": {
            "name": name,
            "function": ["4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARQAUwApAk7p", None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "output_shape_type": "raw",
        },
    }


def encode(config: Any) -> bytes:
    return json.dumps(config).encode()


def check(config: Any, limits: Limits | None = None) -> ScanResult:
    raw = config if isinstance(config, bytes) else encode(config)
    return inspect_keras_config(
        raw, ScanContext("model.keras:config.json", len(raw), limits or Limits())
    )


def rules(result: ScanResult | list[Finding]) -> list[str]:
    findings = result.findings if isinstance(result, ScanResult) else result
    return sorted(finding.rule for finding in findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


CLEAN = sequential(
    layer("InputLayer", {"batch_shape": [None, 8], "name": "input"}),
    dense("dense"),
    dense("dense_1", 2),
)


# --- Clean configurations -------------------------------------------------------


def test_clean_sequential_no_findings() -> None:
    assert check(CLEAN).findings == []


def test_clean_sequential_facts() -> None:
    facts = check(CLEAN).facts
    assert facts["model_class"] == "Sequential"
    assert facts["classes"]["Dense"] == 2


def test_scan_keras_config_returns_list() -> None:
    raw = encode(sequential(keras3_lambda()))
    findings = scan_keras_config(raw, ScanContext("model.keras:config.json", len(raw)))
    assert rules(findings) == ["keras.lambda-layer"]


def test_keras_hub_registered_name_clean() -> None:
    backbone = layer("GemmaBackbone", {"name": "gemma"}, "keras_hub.src.models.gemma")
    backbone["registered_name"] = "keras_hub>GemmaBackbone"
    assert check(backbone).findings == []


def test_builtin_function_registered_name_clean() -> None:
    activation = {
        "module": "keras.activations",
        "class_name": "function",
        "config": "relu",
        "registered_name": "relu",
    }
    assert check(layer("Dense", {"name": "d", "activation": activation})).findings == []


def test_keras2_config_without_modules_clean() -> None:
    config = {
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"units": 3}}]},
        "keras_version": "2.15.0",
        "backend": "tensorflow",
    }
    result = check(config)
    assert result.findings == []
    assert result.facts["keras_version"] == "2.15.0"


def test_vocabulary_list_clean() -> None:
    lookup = layer("StringLookup", {"name": "lookup", "vocabulary": ["a", "b"]})
    assert check(sequential(lookup)).findings == []


# --- Lambda layers and functions ------------------------------------------------


def test_keras3_lambda_layer() -> None:
    finding = only(check(sequential(dense("d"), keras3_lambda("scale"))), "keras.lambda-layer")
    assert finding.severity == Severity.HIGH
    assert finding.details["layer"] == "scale"
    assert finding.details["function_kind"] == "bytecode"
    assert finding.check == "keras"


def test_keras3_lambda_reported_once() -> None:
    assert rules(check(sequential(keras3_lambda()))) == ["keras.lambda-layer"]


def test_keras2_lambda_reported_once() -> None:
    assert rules(check(sequential(keras2_lambda()))) == ["keras.lambda-layer"]


def test_named_function_lambda() -> None:
    lam = {
        "class_name": "Lambda",
        "config": {"name": "l", "function": "my_fn", "function_type": "raw", "module": "mymod"},
    }
    finding = only(check(sequential(lam)), "keras.lambda-layer")
    assert finding.details["function_kind"] == "named"
    assert "my_fn" in finding.message


@pytest.mark.parametrize("wrapper", ["TimeDistributed", "Bidirectional"])
def test_lambda_inside_wrapper(wrapper: str) -> None:
    wrapped = layer(wrapper, {"name": "w", "layer": keras3_lambda("inner")})
    finding = only(check(sequential(wrapped)), "keras.lambda-layer")
    assert finding.details["layer"] == "inner"


def test_lambda_inside_nested_functional() -> None:
    inner = layer(
        "Functional",
        {"name": "inner", "layers": [{"inner_layer": keras2_lambda("deep")}]},
        "keras",
    )
    outer = layer("Functional", {"name": "outer", "layers": [inner]}, "keras")
    assert rules(check(outer)) == ["keras.lambda-layer"]


def test_lambda_function_as_activation() -> None:
    activation = {"class_name": "__lambda__", "config": {"value": ["4wEAAAAA", None, None]}}
    result = check(sequential(layer("Dense", {"name": "d", "activation": activation})))
    assert only(result, "keras.lambda-function").severity == Severity.HIGH


def test_function_type_lambda_outside_layer() -> None:
    custom = {"name": "c", "function": ["4wEAAAAA", None, None], "function_type": "lambda"}
    assert rules(check(sequential(custom))) == ["keras.lambda-function"]


# --- Modules and registered names -----------------------------------------------


def test_custom_module() -> None:
    custom = layer("MyLayer", {"name": "mine"}, "my_company.layers")
    finding = only(check(sequential(custom)), "keras.custom-module")
    assert finding.severity == Severity.MEDIUM
    assert finding.details["module"] == "my_company.layers"


def test_custom_registered_name() -> None:
    custom = layer("MyLayer", {"name": "mine"})
    custom["registered_name"] = "MyPackage>MyLayer"
    finding = only(check(sequential(custom)), "keras.custom-module")
    assert finding.details["registered"] == "MyPackage>MyLayer"


def test_custom_module_reported_once_per_object() -> None:
    custom = layer("MyLayer", {"name": "mine"}, "my_company.layers")
    custom["registered_name"] = "my_company>MyLayer"
    assert rules(check(sequential(custom))) == ["keras.custom-module"]


@pytest.mark.parametrize(
    ("module", "name"),
    [("os", "system"), ("subprocess", "Popen"), ("builtins", "eval"), ("posix", "system")],
)
def test_dangerous_module(module: str, name: str) -> None:
    activation = {
        "module": module,
        "class_name": "function",
        "config": name,
        "registered_name": name,
    }
    result = check(sequential(layer("Dense", {"name": "d", "activation": activation})))
    finding = only(result, "keras.dangerous-module")
    assert finding.severity == Severity.CRITICAL
    assert finding.details["name"] == name


def test_builtins_harmless_function_medium() -> None:
    activation = {"module": "builtins", "class_name": "function", "config": "max"}
    result = check(sequential(layer("Dense", {"name": "d", "activation": activation})))
    assert rules(result) == ["keras.custom-module"]


# --- External references ----------------------------------------------------------


def test_tfsm_layer() -> None:
    tfsm = layer(
        "TFSMLayer", {"name": "tfsm", "filepath": "/srv/models/x", "call_endpoint": "serve"}
    )
    finding = only(check(sequential(tfsm)), "keras.external-reference")
    assert finding.severity == Severity.HIGH
    assert finding.details["target"] == "/srv/models/x"
    assert "serve" in finding.message


def test_tfsm_layer_without_path() -> None:
    tfsm = layer("TFSMLayer", {"name": "tfsm"})
    assert rules(check(sequential(tfsm))) == ["keras.external-reference"]


def test_hub_keras_layer_handle() -> None:
    hub = layer(
        "KerasLayer",
        {"name": "hub", "handle": "https://example.invalid/m/1"},
        "tensorflow_hub.keras_layer",
    )
    assert rules(check(sequential(hub))) == ["keras.custom-module", "keras.external-reference"]


def test_vocabulary_file_path() -> None:
    lookup = layer("StringLookup", {"name": "lookup", "vocabulary": "/data/vocab.txt"})
    assert only(check(sequential(lookup)), "keras.external-vocabulary").severity == Severity.MEDIUM


# --- Bounds and malformed input ------------------------------------------------------


def test_invalid_json() -> None:
    assert rules(check(b"{not json")) == ["keras.invalid-config"]


def test_json_nesting_too_deep_to_parse() -> None:
    assert rules(check(b"[" * 100_000 + b"]" * 100_000)) == ["keras.invalid-config"]


def test_config_too_deep_to_walk() -> None:
    depth = keras_scanner.MAX_CONFIG_DEPTH + 10
    nested: Any = keras3_lambda()
    for _ in range(depth):
        nested = {"config": nested}
    assert rules(check(nested)) == ["keras.config-too-deep"]


def test_config_too_large() -> None:
    assert rules(check(CLEAN, Limits(max_json_bytes=100))) == ["keras.config-too-large"]


def test_findings_capped() -> None:
    result = check(sequential(*[keras3_lambda(f"l{i}") for i in range(25)]))
    assert len(result.findings) == 21
    assert result.findings[-1].details["hidden"] == 5


def test_expired_deadline_incomplete() -> None:
    raw = encode(sequential(*[dense(f"d{i}") for i in range(5000)]))
    ctx = ScanContext("config.json", len(raw), deadline=time.monotonic() - 1)
    assert rules(inspect_keras_config(raw, ctx)) == ["keras.scan-incomplete"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["class_name", "config", "module", "registered_name", "function", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_config_fuzz(config: Any) -> None:
    result = check(config)
    assert all(isinstance(f, Finding) for f in result.findings)


# --- .keras archive members ------------------------------------------------------------


def test_zip_members_clean() -> None:
    members = {
        "config.json": encode(CLEAN),
        "metadata.json": json.dumps(
            {"keras_version": "3.6.0", "date_saved": "2024-10-01"}
        ).encode(),
        "model.weights.h5": b"",
    }
    result = scan_keras_zip_members(list(members), members.get, ScanContext("m.keras", 100))
    assert result.findings == []
    assert result.facts["keras_version"] == "3.6.0"
    assert result.format == Format.KERAS
    assert "other_members" not in result.facts


def test_zip_members_other_files_listed() -> None:
    members = {"config.json": encode(CLEAN), "assets/vocab.txt": b"a", "run.py": b""}
    result = scan_keras_zip_members(list(members), members.get, ScanContext("m.keras", 100))
    assert result.facts["other_members"] == ["run.py"]


def test_zip_members_lambda_location() -> None:
    members = {"config.json": encode(sequential(keras3_lambda()))}
    result = scan_keras_zip_members(list(members), members.get, ScanContext("m.keras", 100))
    assert only(result, "keras.lambda-layer").file == "m.keras:config.json"


def test_zip_members_missing_config() -> None:
    result = scan_keras_zip_members(
        ["model.weights.h5"], lambda name: b"", ScanContext("m.keras", 1)
    )
    assert rules(result) == ["keras.missing-config"]


def test_zip_members_unread_config() -> None:
    result = scan_keras_zip_members(["config.json"], lambda name: None, ScanContext("m.keras", 1))
    assert rules(result) == ["keras.config-too-large"]


# --- Legacy HDF5 files --------------------------------------------------------------------


def write_h5(path: Path, config: Any | None = None, **attrs: Any) -> bytes:
    with h5py.File(path, "w") as h5:
        if config is not None:
            h5.attrs["model_config"] = json.dumps(config)
            h5.attrs["keras_version"] = "2.15.0"
            h5.attrs["backend"] = "tensorflow"
        for name, value in attrs.items():
            h5.attrs[name] = value
        weights = h5.create_group("model_weights/dense")
        weights.create_dataset("kernel:0", data=np.ones((4, 2), dtype=np.float32))
    return path.read_bytes()


def scan_h5(data: bytes, *, depth: int = 0, reread: bool = True, chunk: int = 65536) -> ScanResult:
    ctx = ScanContext("model.h5", len(data), depth=depth)
    scanner = Hdf5Scanner(ctx, Format.HDF5)
    for start in range(0, len(data), chunk):
        scanner.feed(memoryview(data[start : start + chunk]))

    def read_at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return scanner.close(read_at if reread else None)


KERAS2_CLEAN = {
    "class_name": "Sequential",
    "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"units": 2}}]},
}
KERAS2_LAMBDA = {"class_name": "Sequential", "config": {"name": "s", "layers": [keras2_lambda()]}}


def test_h5_sniffs_as_hdf5(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_CLEAN)
    assert sniff(data[:512], len(data), "m.h5") == Format.HDF5


def test_h5_clean(tmp_path: Path) -> None:
    result = scan_h5(write_h5(tmp_path / "m.h5", KERAS2_CLEAN))
    assert result.findings == []
    assert result.facts["keras_version"] == "2.15.0"
    assert result.facts["model_class"] == "Sequential"
    assert result.facts["datasets"] == 1


def test_h5_weights_only_clean(tmp_path: Path) -> None:
    result = scan_h5(write_h5(tmp_path / "w.h5"))
    assert result.findings == []
    assert result.facts["root_attributes"] == []


def test_h5_lambda(tmp_path: Path) -> None:
    finding = only(scan_h5(write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)), "keras.lambda-layer")
    assert finding.file == "model.h5"
    assert finding.severity == Severity.HIGH


def test_h5_bytes_config(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", model_config=np.bytes_(json.dumps(KERAS2_LAMBDA)))
    assert rules(scan_h5(data)) == ["keras.lambda-layer"]


def test_h5_training_config(tmp_path: Path) -> None:
    loss = {"module": "os", "class_name": "function", "config": "system"}
    data = write_h5(tmp_path / "m.h5", KERAS2_CLEAN, training_config=json.dumps({"loss": loss}))
    assert rules(scan_h5(data)) == ["keras.dangerous-module"]


def test_h5_config_array_rejected(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", model_config=np.array([b"{}", b"{}"]))
    assert rules(scan_h5(data)) == ["keras.invalid-config"]


def test_h5_config_number_rejected(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", model_config=7)
    assert rules(scan_h5(data)) == ["keras.invalid-config"]


def test_h5_external_link(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    write_h5(path, KERAS2_CLEAN)
    with h5py.File(path, "a") as h5:
        h5["model_weights/leak"] = h5py.ExternalLink("/etc/passwd", "/x")
    finding = only(scan_h5(path.read_bytes()), "keras.h5-external-reference")
    assert finding.details["target"] == "/etc/passwd"


def test_h5_external_storage(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    write_h5(path, KERAS2_CLEAN)
    with h5py.File(path, "a") as h5:
        h5.create_dataset("ext", shape=(4,), dtype="f4", external=[("/etc/hosts", 0, 16)])
    finding = only(scan_h5(path.read_bytes()), "keras.h5-external-reference")
    assert finding.details["target"] == "/etc/hosts"


def test_h5_virtual_dataset_other_file(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    write_h5(path, KERAS2_CLEAN)
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource("/etc/shadow", "data", shape=(4,))
    with h5py.File(path, "a") as h5:
        h5.create_virtual_dataset("virtual", layout)
    finding = only(scan_h5(path.read_bytes()), "keras.h5-external-reference")
    assert finding.details["target"] == "/etc/shadow"


def test_h5_virtual_dataset_same_file_clean(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    write_h5(path, KERAS2_CLEAN)
    layout = h5py.VirtualLayout(shape=(4, 2), dtype="f4")
    layout[:] = h5py.VirtualSource(".", "model_weights/dense/kernel:0", shape=(4, 2))
    with h5py.File(path, "a") as h5:
        h5.create_virtual_dataset("virtual", layout)
    assert scan_h5(path.read_bytes()).findings == []


def test_h5_soft_link_and_cycle_clean(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    write_h5(path, KERAS2_CLEAN)
    with h5py.File(path, "a") as h5:
        h5["alias"] = h5py.SoftLink("/model_weights")
        h5["model_weights/dense/loop"] = h5["model_weights"]
    result = scan_h5(path.read_bytes())
    assert result.findings == []


def test_h5_garbage_unreadable() -> None:
    data = b"\x89HDF\r\n\x1a\n" + b"\x00" * 200
    finding = only(scan_h5(data), "keras.h5-unreadable")
    assert finding.severity == Severity.MEDIUM


def test_h5_truncated_unreadable(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    assert "keras.h5-unreadable" in rules(scan_h5(data[: len(data) // 2]))


def test_h5_member_buffered(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    assert rules(scan_h5(data, depth=1, reread=False)) == ["keras.lambda-layer"]


def test_h5_member_too_large_to_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keras_scanner, "MAX_UNREREADABLE_BYTES", 1024)
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    assert rules(scan_h5(data, depth=1, reread=False)) == ["keras.h5-unreadable"]


def test_h5_top_level_without_read_at(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    assert rules(scan_h5(data, reread=False)) == ["keras.h5-unreadable"]


def test_h5_expired_deadline(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    scanner = Hdf5Scanner(
        ScanContext("model.h5", len(data), deadline=time.monotonic() - 1), Format.HDF5
    )
    scanner.feed(memoryview(data))
    result = scanner.close(lambda offset, length: data[offset : offset + length])
    assert rules(result) == ["keras.scan-incomplete"]


def test_h5_reader_hang_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # libhdf5 2.0.0 loops forever, reading nothing, when a global heap
    # object's size field grows by eight bytes.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["model_config"] = json.dumps(KERAS2_LAMBDA)
    data = bytearray(buffer.getvalue())
    heap = data.find(b"GCOL")
    size_field = slice(heap + 24, heap + 32)
    data[size_field] = (int.from_bytes(data[size_field], "little") + 8).to_bytes(8, "little")
    monkeypatch.setattr(hdf5_probe, "PROBE_SECONDS", 1.0)
    started = time.monotonic()
    result = scan_h5(bytes(data))
    assert time.monotonic() - started < 10
    assert rules(result) in (["keras.scan-incomplete"], ["keras.h5-unreadable"])


def test_h5_read_error_reported(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_CLEAN)
    scanner = Hdf5Scanner(ScanContext("model.h5", len(data)), Format.HDF5)
    scanner.feed(memoryview(data))

    def failing(offset: int, length: int) -> bytes:
        raise OSError("disk went away")

    finding = only(scanner.close(failing), "keras.h5-unreadable")
    assert "disk went away" in finding.message


def serve(
    messages: list[tuple[bytes, bytes]], data: bytes = b""
) -> tuple[hdf5_probe.ProbeResult, list[bytes]]:
    """Run the gate side of the probe protocol against scripted child messages."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    replies: list[bytes] = []

    def child() -> None:
        # Sends each scripted message, then collects the gate's replies.
        with contextlib.suppress(OSError):
            for kind, payload in messages:
                hdf5_probe._send(theirs, kind, payload)
            theirs.shutdown(socket.SHUT_WR)
        with contextlib.suppress(EOFError, OSError):
            while True:
                replies.append(hdf5_probe._receive(theirs, 1 << 20)[1])

    thread = threading.Thread(target=child, daemon=True)
    thread.start()

    def source(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    result = hdf5_probe._serve(ours, source, len(data), 1000, time.monotonic() + 5)
    ours.close()
    thread.join(5)
    theirs.close()
    return result, replies


def test_serve_answers_reads() -> None:
    report = json.dumps(hdf5_probe._empty_report()).encode()
    read = hdf5_probe._READ.pack(2, 100)
    result, replies = serve(
        [(b"R", read), (b"T", b"model_config\x00{}"), (b"J", report)], b"abcdef"
    )
    assert replies == [b"cdef"]
    assert result.texts == {"model_config": b"{}"}
    assert result.report is not None


@pytest.mark.parametrize(
    ("kind", "payload"),
    [(b"X", b""), (b"R", b"123"), (b"J", b"[]"), (b"J", b'{"links": 1}'), (b"J", b"not json")],
)
def test_serve_rejects_invalid_messages(kind: bytes, payload: bytes) -> None:
    result, _ = serve([(kind, payload)])
    assert result.report is None
    assert result.failure


def test_serve_child_gone() -> None:
    result, _ = serve([])
    assert "ended before returning a report" in result.failure


def test_serve_oversized_message() -> None:
    result, _ = serve([(b"T", b"x" * (hdf5_probe._MAX_READ + 1000))])
    assert "exceeds" in result.failure


def test_parse_report_rejects_bad_entries() -> None:
    report = hdf5_probe._empty_report()
    report["external"] = [{"kind": "link", "object": "x", "target": 5, "inner": ""}]
    assert hdf5_probe._parse_report(json.dumps(report).encode()) is None


def test_h5_zygote_restarts(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    assert rules(scan_h5(data)) == ["keras.lambda-layer"]
    process = hdf5_probe._ZYGOTE._process
    assert process is not None
    process.kill()
    process.wait()
    assert rules(scan_h5(data)) == ["keras.lambda-layer"]


def test_h5_reads_only_what_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(KERAS2_CLEAN)
        h5.create_dataset("big", data=np.zeros(4_000_000, dtype=np.float32))
    data = path.read_bytes()
    served = 0

    def read_at(offset: int, length: int) -> bytes:
        nonlocal served
        served += length
        return data[offset : offset + length]

    scanner = Hdf5Scanner(ScanContext("model.h5", len(data)), Format.HDF5)
    scanner.feed(memoryview(data))
    assert scanner.close(read_at).findings == []
    assert served < len(data) // 10


def test_h5_registry_routes(tmp_path: Path) -> None:
    data = write_h5(tmp_path / "m.h5", KERAS2_LAMBDA)
    scanner = open_scanner(Format.HDF5, ScanContext("m.h5", len(data)))
    assert scanner is not None
    scanner.feed(memoryview(data))
    assert rules(scanner.close(lambda o, n: data[o : o + n])) == ["keras.lambda-layer"]


def test_pipeline_reports_h5_lambda(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    write_h5(artifact / "model.h5", KERAS2_LAMBDA)
    findings = inspect(artifact).findings
    lambdas = [f for f in findings if f.rule == "keras.lambda-layer"]
    assert [f.file for f in lambdas] == ["model.h5"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_h5_fuzz_mutations(edits: list[tuple[int, int]]) -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["model_config"] = json.dumps(KERAS2_LAMBDA)
        h5.create_dataset("w", data=np.ones(8, dtype=np.float32))
    data = bytearray(buffer.getvalue())
    for position, value in edits:
        data[position % len(data)] = value
    started = time.monotonic()
    result = scan_h5(bytes(data))
    assert time.monotonic() - started < 5.0
    assert all(isinstance(f, Finding) for f in result.findings)


def test_lone_surrogate_sanitized() -> None:
    result = check(b'{"class_name": "Lambda", "config": {"name": "x\\udc80"}}')
    finding = only(result, "keras.lambda-layer")
    assert finding.details["layer"] == "x?"
    assert json.dumps(finding.to_json(), ensure_ascii=False).encode("utf-8")


def test_long_key_chain_paths_bounded() -> None:
    nested: Any = keras3_lambda()
    for level in range(200):
        nested = {f"k{level}" + "x" * 5000: nested}
    finding = only(check(nested), "keras.lambda-layer")
    assert len(finding.details["path"]) <= 150
