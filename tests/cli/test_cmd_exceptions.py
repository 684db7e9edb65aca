"""`attestgate exceptions list|add|approve|revoke`."""

from __future__ import annotations

import io
import json

import pytest

from attestgate.cli.cmd_exceptions import parse_expiry
from attestgate.cli.main import main

DIGEST = "sha256:" + "ab" * 32


def run(*argv):
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    return code, out.getvalue()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def add(home, *extra):
    return run(
        "exceptions", "add", DIGEST,
        "--rule", "provenance.missing",
        "--reason", "reviewed by the platform team",
        "--approver", "alice",
        "--home", home,
        "--format", "json",
        *extra,
    )  # fmt: skip


def test_add_and_list(home):
    code, out = add(home)
    item = json.loads(out)
    assert code == 0
    assert item["artifact_digest"] == DIGEST
    assert item["approvers"] == ["alice"]
    code, out = run("exceptions", "list", "--home", home, "--format", "json")
    [listed] = json.loads(out)
    assert listed["id"] == item["id"]
    assert listed["state"] == "active"


def test_list_text(home):
    add(home)
    code, out = run("exceptions", "list", "--home", home)
    assert code == 0
    assert "provenance.missing" in out
    assert "alice" in out


def test_expiry_duration(home):
    _, out = add(home, "--expires", "2h")
    item = json.loads(out)
    created = item["created_at"]
    expires = item["expires_at"]
    from datetime import datetime

    delta = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
    assert delta.total_seconds() == pytest.approx(7200, abs=2)


def test_approve_then_revoke(home):
    _, out = add(home)
    exception_id = json.loads(out)["id"]
    code, out = run(
        "exceptions", "approve", exception_id, "--approver", "bob", "--home", home,
        "--format", "json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["approvers"] == ["alice", "bob"]
    code, out = run(
        "exceptions", "revoke", exception_id, "--reason", "replaced", "--by", "carol",
        "--home", home, "--format", "json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["revoked_by"] == "carol"
    _, out = run("exceptions", "list", "--home", home, "--format", "json")
    assert json.loads(out) == []
    _, out = run("exceptions", "list", "--home", home, "--all", "--format", "json")
    assert json.loads(out)[0]["state"] == "revoked"


def test_same_approver_twice_exit_2(home):
    _, out = add(home)
    exception_id = json.loads(out)["id"]
    code, _ = run("exceptions", "approve", exception_id, "--approver", "alice", "--home", home)
    assert code == 2


def test_audit_log_records_each_step(home):
    _, out = add(home)
    exception_id = json.loads(out)["id"]
    run("exceptions", "revoke", exception_id, "--reason", "r", "--by", "b", "--home", home)
    _, out = run("audit", "list", "--home", home, "--format", "json")
    assert [r["kind"] for r in json.loads(out)] == ["exception.revoke", "exception.add"]


def test_name_instead_of_digest_exit_2(home, capsys):
    code, _ = run(
        "exceptions", "add", "torch", "--rule", "provenance.missing", "--reason", "r",
        "--approver", "a", "--home", home,
    )  # fmt: skip
    assert code == 2
    assert "sha256" in capsys.readouterr().err


def test_check_failed_exit_2(home):
    code, _ = run(
        "exceptions", "add", DIGEST, "--rule", "check.failed", "--reason", "r",
        "--approver", "a", "--home", home,
    )  # fmt: skip
    assert code == 2


def test_unknown_rule_warns(home, capsys):
    code, _ = run(
        "exceptions", "add", DIGEST, "--rule", "pickle.unsafe-globl", "--reason", "r",
        "--approver", "a", "--home", home,
    )  # fmt: skip
    assert code == 0
    assert "not in the rule catalogue" in capsys.readouterr().err


def test_unknown_id_exit_2(home):
    add(home)
    code, _ = run("exceptions", "revoke", "nope", "--reason", "r", "--by", "b", "--home", home)
    assert code == 2


def test_bad_expiry_exit_2(home):
    code, _ = add(home, "--expires", "next week")
    assert code == 2


def test_parse_expiry_date_means_end_of_day():
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    end = parse_expiry("2026-01-31", now)
    assert end.isoformat() == "2026-01-31T23:59:59.999999+00:00"


def test_exception_waives_on_admission(home, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    code, out = run("admit", model, "--home", home, "--format", "json")
    digest = "sha256:" + json.loads(out)["artifact"]["digest"]["sha256"]
    assert code == 3
    run(
        "exceptions", "add", digest, "--rule", "provenance.missing", "--reason", "r",
        "--approver", "a", "--home", home,
    )  # fmt: skip
    code, out = run("admit", model, "--home", home, "--format", "json")
    record = json.loads(out)
    assert code == 0
    assert record["evaluation"]["exceptions"]["waived"][0]["rule"] == "provenance.missing"
