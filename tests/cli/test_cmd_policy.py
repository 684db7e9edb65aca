"""`attestgate policy default|check|explain`."""

from __future__ import annotations

import io
import json

import pytest

from attestgate.cli.main import main


def run(*argv):
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    return code, out.getvalue()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    return folder


def test_default_round_trips_through_check(tmp_path):
    _, text = run("policy", "default")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    code, out = run("policy", "check", path)
    assert code == 0
    assert "is valid: attestgate/v2" in out


def test_check_names_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    _, text = run("policy", "default")
    path.write_text(text.replace("      high: block", "      high: maybe"))
    code, out = run("policy", "check", path)
    line = text.splitlines().index("      high: block") + 1
    assert code == 2
    assert f"error: {path}:{line}: stages.training.severities.high: 'maybe'" in out


def test_check_json(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: attestgate/v2\nkind: Policy\nstages: {}\nbogus: 1\n")
    code, out = run("policy", "check", path, "--format", "json")
    result = json.loads(out)
    assert code == 2
    assert result["valid"] is False
    fields = {e["field"]: e["line"] for e in result["errors"]}
    assert fields["bogus"] == 4
    assert fields["stages"] == 3


def test_check_warnings_and_strict(tmp_path):
    path = tmp_path / "warn.yaml"
    _, text = run("policy", "default")
    path.write_text(
        text.replace(
            "check.failed: quarantine", "check.failed: quarantine\n      pickle.unsafe-globl: block"
        )
    )
    code, out = run("policy", "check", path)
    assert code == 0
    assert "warning:" in out
    code, _ = run("policy", "check", path, "--strict")
    assert code == 2


def test_check_missing_file_exit_2(tmp_path):
    code, out = run("policy", "check", tmp_path / "nope.yaml")
    assert code == 2
    assert "could not be read" in out


def test_explain_names_policy_line(home, model):
    _, out = run("admit", model, "--home", home, "--format", "json")
    record_id = json.loads(out)["id"]
    code, out = run("policy", "explain", record_id, "--home", home)
    assert code == 0
    assert "by stages.deployment.rules[provenance.missing] (line" in out
    assert "| provenance.missing: quarantine" in out


def test_explain_json(home, model):
    _, out = run("admit", model, "--home", home, "--format", "json")
    record_id = json.loads(out)["id"]
    code, out = run("policy", "explain", record_id, "--home", home, "--format", "json")
    explained = json.loads(out)
    [reason] = explained["reasons"]
    assert code == 0
    assert reason["source"] == "rule"
    assert reason["policy_text"] == "provenance.missing: quarantine"
    assert explained["tier"]["name"] == "standard"


def test_explain_changed_policy_not_quoted(home, model, tmp_path):
    _, text = run("policy", "default")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    _, out = run("admit", model, "--home", home, "--policy", path, "--format", "json")
    record_id = json.loads(out)["id"]
    path.write_text(text + "\n# edited\n")
    _, out = run("policy", "explain", record_id, "--home", home, "--format", "json")
    explained = json.loads(out)
    assert "has changed" in explained["policy"]["note"]
    assert "policy_text" not in explained["reasons"][0]


def test_explain_shows_requirement_and_mapping(home, model, tmp_path):
    _, text = run("policy", "default")
    path = tmp_path / "p.yaml"
    path.write_text(
        text.replace("    limits:\n", "    require:\n      signature: true\n    limits:\n")
    )
    _, out = run("admit", model, "--home", home, "--policy", path, "--format", "json")
    record_id = json.loads(out)["id"]
    _, out = run("policy", "explain", record_id, "--home", home)
    assert "by stages.deployment.require.signature" in out
    assert "action set by stages.deployment.outcomes.insufficientEvidence" in out


def test_explain_unknown_record_exit_2(home, model):
    run("admit", model, "--home", home)
    code, _ = run("policy", "explain", "nope", "--home", home)
    assert code == 2
