"""Hugging Face configuration that names code while the gate cannot read it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from attestgate.findings import Finding
from attestgate.pipeline import inspect
from attestgate.scanners import huggingface
from attestgate.scanners.huggingface import _auto_map_targets
from attestgate.scanners.interface import Limits

Decide = Callable[[Path], tuple[str, list[Finding]]]
Write = Callable[[str, bytes], Path]

REMOTE = {"AutoModel": "evil/repo--modeling.Model"}


def rules(findings: list[Finding]) -> set[str]:
    return {finding.rule for finding in findings}


def test_auto_map_nested_deeper_than_the_stack() -> None:
    # A nesting that json.loads accepts must not exhaust the stack of the
    # walk that collects auto_map targets.
    value: object = "evil/repo--modeling.Model"
    for _ in range(5000):
        value = [value]
    assert _auto_map_targets({"x": value}) == ["evil/repo--modeling.Model"]


def test_config_too_deep_to_parse(decide: Decide, write: Write) -> None:
    config = b'{"auto_map": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    action, findings = decide(write("repo/config.json", config))
    assert "hf.config-unparsed" in rules(findings)
    assert action == "quarantine"


def test_config_padded_past_the_json_limit(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(json.dumps({"auto_map": REMOTE}).encode() + b" " * 4096)
    findings = inspect(path, limits=Limits(max_json_bytes=1024)).findings
    assert "hf.config-unparsed" in rules(findings)


def test_large_data_json_is_not_reported(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_bytes(json.dumps({f"token{i}": i for i in range(200)}).encode())
    findings = inspect(path, limits=Limits(max_json_bytes=1024)).findings
    assert findings == []


def test_custom_pipeline_in_another_repository(decide: Decide, write: Write) -> None:
    config = {"custom_pipelines": {"text-classification": {"impl": "evil/repo--pipe.Pipe"}}}
    action, findings = decide(write("repo/config.json", json.dumps(config).encode()))
    assert "hf.auto-map-remote" in rules(findings)
    assert action == "block"


def test_json_of_many_tiny_values(
    decide: Decide, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "[{},{},...]" costs about twenty times its size once parsed.
    monkeypatch.setattr(huggingface, "MAX_JSON_VALUES", 1000)
    bomb = b'{"auto_map": {}, "x": [' + b"{}," * 2000 + b"{}]}"
    action, findings = decide(write("repo/config.json", bomb))
    assert "hf.config-unparsed" in rules(findings)
    assert action == "quarantine"
