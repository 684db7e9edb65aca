"""Signals, their validation and their mapping to findings."""

from __future__ import annotations

import pytest

from attestgate.dynamic.interface import (
    MAX_DETAIL_STRING,
    MAX_FINDINGS_PER_KIND,
    KindSpec,
    Signal,
    is_sensitive_path,
    is_valid_kind,
    merge_signals,
    signals_to_findings,
)
from attestgate.findings import Severity


def signal(kind: str, file: str = "model.pkl", **details) -> Signal:
    return Signal(kind, details, "2026-03-02T10:15:02Z", "sandbox", "1", file=file)


@pytest.mark.parametrize(
    "kind",
    [
        "network.connect",
        "dns.query",
        "process.exec",
        "file.write",
        "file.read.sensitive",
        "module.import",
        "x-acme.gpu-driver-call",
        "x-attestgate.tensor-mismatch",
    ],
)
def test_valid_kinds(kind):
    assert is_valid_kind(kind)


@pytest.mark.parametrize(
    "kind",
    ["network", "Network.Connect", "acme.custom", "x-acme", "x-.a", "x-acme.", "network.connect "],
)
def test_invalid_kinds(kind):
    assert not is_valid_kind(kind)


def test_signal_rejects_unknown_kind():
    with pytest.raises(ValueError, match="x-<vendor>"):
        signal("acme.custom")


def test_signal_bounds_details():
    long = signal(
        "file.write", path="p" * 10_000, argv=list(range(100)), nested={"a": {"b": {"c": {"d": 1}}}}
    )
    assert len(long.details["path"]) == MAX_DETAIL_STRING
    assert len(long.details["argv"]) == 32
    assert isinstance(long.details["nested"]["a"]["b"], str)


def test_merge_counts_repeats():
    merged = merge_signals(
        [signal("process.exec", call="os.fork")] * 3 + [signal("process.exec", call="os.system")]
    )
    assert sorted((s.details["call"], s.count) for s in merged) == [
        ("os.fork", 3),
        ("os.system", 1),
    ]


@pytest.mark.parametrize(
    ("kind", "details", "severity"),
    [
        ("network.connect", {"host": "127.0.0.1", "port": 9}, Severity.CRITICAL),
        ("process.exec", {"binary": "/bin/true"}, Severity.CRITICAL),
        ("dns.query", {"host": "example.invalid"}, Severity.HIGH),
        ("file.write", {"path": "/etc/passwd"}, Severity.HIGH),
        ("file.read.sensitive", {"path": "/root/.ssh/id_rsa"}, Severity.HIGH),
        ("x-attestgate.code-exec", {"call": "exec"}, Severity.HIGH),
        ("x-attestgate.tensor-mismatch", {"mismatched": 1}, Severity.HIGH),
        ("x-other.thing", {"a": 1}, Severity.MEDIUM),
    ],
)
def test_default_severities(kind, details, severity):
    findings = signals_to_findings([signal(kind, **details)])
    assert [(f.rule, f.severity) for f in findings] == [(f"dynamic.{kind}", severity)]


def test_blocking_kinds_block_by_default():
    from attestgate.policy import evaluate, load_default_policy

    findings = signals_to_findings([signal("network.connect", host="h", port=1)])
    assert evaluate(load_default_policy(), "deployment", findings).action.label == "block"


def test_declared_custom_kind_severity():
    kinds = {"x-acme.gpu-driver-call": KindSpec(Severity.LOW, "Nothing to do.")}
    findings = signals_to_findings([signal("x-acme.gpu-driver-call", ioctl=1)], kinds)
    assert findings[0].severity is Severity.LOW


def test_ordinary_imports_are_info():
    findings = signals_to_findings(
        [signal("module.import", module="json"), signal("module.import", module="torch.utils")]
    )
    assert [(f.severity, f.details["names"]) for f in findings] == [
        (Severity.INFO, ["json", "torch.utils"])
    ]


def test_risky_imports_are_medium():
    findings = signals_to_findings(
        [signal("module.import", module="subprocess"), signal("module.import", module="json")]
    )
    assert [(f.severity, f.details["names"]) for f in findings] == [
        (Severity.MEDIUM, ["subprocess"]),
        (Severity.INFO, ["json"]),
    ]


def test_findings_per_kind_capped():
    many = [signal("file.write", path=f"/tmp/f{i}") for i in range(MAX_FINDINGS_PER_KIND + 5)]
    findings = signals_to_findings(many)
    assert len(findings) == MAX_FINDINGS_PER_KIND + 1
    assert findings[-1].details == {"omitted": 5}


def test_signal_without_file_uses_artifact_name():
    findings = signals_to_findings(
        [signal("process.exec", file="", binary="/bin/sh")], artifact_name="model-dir"
    )
    assert findings[0].file == "model-dir"


def test_message_names_loader_and_destination():
    found = signals_to_findings(
        [signal("network.connect", host="127.0.0.1", port=4444, loader="pickle.load")]
    )
    assert found[0].message == (
        "loading model.pkl with pickle.load in the sandbox tried to connect to 127.0.0.1:4444"
    )


@pytest.mark.parametrize(
    ("path", "sensitive"),
    [
        ("/home/u/.ssh/id_rsa", True),
        ("/root/.aws/credentials", True),
        ("/home/u/.netrc", True),
        ("/etc/shadow", True),
        ("/srv/app/.env", True),
        ("/home/u/.cache/huggingface/token", True),
        ("/etc/passwd", False),
        ("/models/model.pkl", False),
        ("/srv/app/.envrc.d/x", False),
    ],
)
def test_sensitive_paths(path, sensitive):
    assert is_sensitive_path(path) is sensitive
