from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import attestgate.policy
from attestgate.audit import AuditLog
from attestgate.cli.main import main
from attestgate.errors import UsageError
from attestgate.pipeline import admit
from attestgate.policy import load_policy
from attestgate.stores import ContentStore, act_on_admission, approve, list_queue, reject, show


def _quarantine(home: Path, path: Path, stage: str = "deployment") -> str:
    admission = admit(path, stage=stage, home=home)
    assert admission.action == "quarantine"
    act_on_admission(home, admission.record)
    return f"sha256:{admission.record['artifact']['digest']['sha256']}"


def _later(days: int = 30) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_list_filters(tmp_path: Path, model: Path, model_dir: Path) -> None:
    home = tmp_path / "home"
    _quarantine(home, model, "training")
    _quarantine(home, model_dir, "deployment")
    assert len(list_queue(home)) == 2
    assert [i.stage for i in list_queue(home, stage="training")] == ["training"]
    assert list_queue(home, min_severity="high") == []
    assert list_queue(home, older_than=timedelta(hours=1)) == []


def test_show_history(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    shown = show(home, digest)
    assert shown["item"]["digest"] == digest
    assert [h["kind"] for h in shown["history"]] == ["decision", "promotion"]


def test_approve_promotes(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    result = approve(home, digest, reason="built in-house", approver="ana", expires=_later())
    assert result.decision == "allow"
    assert result.promotion is not None
    assert ContentStore(home, "trusted").contains(digest)
    assert not ContentStore(home, "quarantine").contains(digest)
    assert [e.rule for e in result.exceptions] == ["provenance.missing"]
    log = AuditLog(home)
    try:
        kinds = [r.kind for r in log.records()]
        assert log.verify().ok
    finally:
        log.close()
    assert kinds[2:] == [
        "exception.add",
        "quarantine.approve",
        "decision",
        "promotion",
        "quarantine.release",
    ]


def test_approve_needs_future_expiry(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    with pytest.raises(UsageError, match="in the past"):
        approve(home, digest, reason="ok", approver="ana", expires=_later(-1))
    with pytest.raises(UsageError, match="reason"):
        approve(home, digest, reason=" ", approver="ana", expires=_later())


def test_reject_removes(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    assert reject(home, digest, reason="unknown origin", reviewer="ana")
    assert list_queue(home) == []
    with pytest.raises(UsageError, match="not in the quarantine queue"):
        show(home, digest)


def test_cli_workflow(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    out = io.StringIO()
    code = main(["admit", str(model), "--promote", "--home", str(home), "--format", "json"], out)
    assert code == 3
    promotion = json.loads(out.getvalue())["promotion"]
    assert promotion["store"] == "quarantine"
    out = io.StringIO()
    assert main(["quarantine", "list", "--home", str(home), "--format", "json"], out) == 0
    items = json.loads(out.getvalue())
    assert len(items) == 1
    expiry = _later().date().isoformat()
    args = [
        "quarantine",
        "approve",
        items[0]["digest"],
        "--reason",
        "in-house",
        "--expires",
        expiry,
    ]
    out = io.StringIO()
    assert main([*args, "--approver", "ana", "--home", str(home)], out) == 0
    assert "promoted to the trusted store" in out.getvalue()


def _audit_kinds(home: Path) -> list[str]:
    log = AuditLog(home)
    try:
        return [r.kind for r in log.records()]
    finally:
        log.close()


def _strict_policy(tmp_path: Path, max_days: int) -> Path:
    text = (Path(attestgate.policy.__file__).parent / "default.yaml").read_text("utf-8")
    text = text.replace("exceptions:\n", f"exceptions:\n  maxDays: {max_days}\n", 1)
    path = tmp_path / "strict.yaml"
    path.write_text(text, "utf-8")
    return path


def test_approve_other_policy_refused(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    before = _audit_kinds(home)
    other = load_policy(_strict_policy(tmp_path, 30))
    with pytest.raises(UsageError, match="quarantined under policy 'default'"):
        approve(home, digest, reason="ok", approver="ana", expires=_later(), policy=other)
    assert _audit_kinds(home) == before


def test_approve_respects_max_days(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    policy = load_policy(_strict_policy(tmp_path, 10))
    admission = admit(model, stage="deployment", home=home, policy=policy)
    act_on_admission(home, admission.record)
    digest = f"sha256:{admission.record['artifact']['digest']['sha256']}"
    with pytest.raises(UsageError, match="maximum of 10 days"):
        approve(home, digest, reason="ok", approver="ana", expires=_later(30), policy=policy)
    result = approve(home, digest, reason="ok", approver="ana", expires=_later(5), policy=policy)
    assert result.decision == "allow"


def test_approve_missing_file_refused(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    stored = ContentStore(home, "quarantine").artifact_path(digest.removeprefix("sha256:"))
    stored.unlink()
    before = _audit_kinds(home)
    with pytest.raises(UsageError, match="stored files are missing"):
        approve(home, digest, reason="ok", approver="ana", expires=_later())
    assert _audit_kinds(home) == before


def test_cli_prefix_digest(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    out = io.StringIO()
    assert main(["quarantine", "list", "--home", str(home)], out) == 0
    assert digest[:19] in out.getvalue()
    out = io.StringIO()
    code = main(["quarantine", "show", digest[:19], "--home", str(home), "--format", "json"], out)
    assert code == 0
    assert json.loads(out.getvalue())["item"]["digest"] == digest


def test_cli_short_prefix_refused(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    code = main(["quarantine", "reject", digest[:12], "--reason", "x", "--home", str(home)])
    assert code == 2
    assert "shorter than 12 hex digits" in capsys.readouterr().err
    assert ContentStore(home, "quarantine").contains(digest)


def test_cli_approve_duration(tmp_path: Path, model: Path) -> None:
    home = tmp_path / "home"
    digest = _quarantine(home, model)
    out = io.StringIO()
    args = ["quarantine", "approve", digest, "--reason", "ok", "--expires", "10d"]
    assert main([*args, "--approver", "ana", "--home", str(home), "--format", "json"], out) == 0
    body = json.loads(out.getvalue())
    expires = datetime.fromisoformat(body["exceptions"][0]["expires_at"])
    assert timedelta(days=9) < expires - datetime.now(UTC) <= timedelta(days=10)
