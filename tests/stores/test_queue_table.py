"""The quarantine queue table: rows, reviews and crash recovery, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from attestgate.audit import AuditLog
from attestgate.errors import StorageError
from attestgate.pipeline import admit
from attestgate.storage import DATABASE_URL_ENV
from attestgate.stores import ContentStore, act_on_admission, approve, list_queue, reject, show
from attestgate.stores.local import write_json
from attestgate.stores.queue import NotQueuedError
from attestgate.stores.queue_table import queue_table
from attestgate.stores.reconcile import reconcile
from postgres_support import POSTGRES_URL, SKIP_REASON, postgres_schema

# The package re-exports functions with the same names as these modules.
promote_module = importlib.import_module("attestgate.stores.promote")
queue_module = importlib.import_module("attestgate.stores.queue")


@pytest.fixture(params=["sqlite", "postgresql"])
def home(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    if request.param == "sqlite":
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
        yield tmp_path / "home"
        return
    if not POSTGRES_URL:
        pytest.skip(SKIP_REASON)
    with postgres_schema() as url:
        monkeypatch.setenv(DATABASE_URL_ENV, url)
        yield tmp_path / "home"


def _quarantine(home: Path, path: Path, stage: str = "deployment") -> str:
    admission = admit(path, stage=stage, home=home)
    assert admission.action == "quarantine"
    act_on_admission(home, admission.record)
    return f"sha256:{admission.record['artifact']['digest']['sha256']}"


def _rows(home: Path) -> list[dict[str, object]]:
    log = AuditLog(home)
    try:
        with log.engine.connect() as conn:
            query = sa.select(queue_table).order_by(queue_table.c.queued_at)
            return [dict(row) for row in conn.execute(query).mappings()]
    finally:
        log.close()


def _promotion_seqs(home: Path) -> list[int]:
    log = AuditLog(home)
    try:
        return [r.seq for r in log.records() if r.kind == "promotion"]
    finally:
        log.close()


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(days=30)


def test_quarantine_writes_row(home: Path, model: Path) -> None:
    digest = _quarantine(home, model, "training")
    rows = _rows(home)
    assert len(rows) == 1
    row = rows[0]
    assert row["digest"] == digest
    assert row["state"] == "queued"
    assert row["stage"] == "training"
    assert row["artifact_name"] == "model.bin"
    assert row["audit_seq"] == _promotion_seqs(home)[0]
    assert row["rules"] == '["provenance.missing"]'
    item = list_queue(home)[0]
    assert item.to_json()["digest"] == digest
    assert item.audit_seq == row["audit_seq"]


def test_requarantine_updates_row(home: Path, model: Path) -> None:
    digest = _quarantine(home, model, "training")
    first = _rows(home)[0]
    _quarantine(home, model, "deployment")
    rows = _rows(home)
    assert len(rows) == 1
    assert rows[0]["id"] == first["id"]
    assert rows[0]["queued_at"] == first["queued_at"]
    assert rows[0]["stage"] == "deployment"
    assert rows[0]["audit_seq"] == _promotion_seqs(home)[-1]
    assert show(home, digest)["record"]["stage"] == "deployment"


def test_reject_marks_row(home: Path, model: Path) -> None:
    digest = _quarantine(home, model)
    assert reject(home, digest, reason="unknown origin", reviewer="ana")
    assert list_queue(home) == []
    rejected = list_queue(home, state="rejected")
    assert [i.to_json()["digest"] for i in rejected] == [digest]
    assert rejected[0].reviewer == "ana"
    assert rejected[0].reason == "unknown origin"
    assert rejected[0].decided_at is not None
    assert not ContentStore(home, "quarantine").contains(digest)


def test_approve_marks_row(home: Path, model: Path) -> None:
    digest = _quarantine(home, model)
    result = approve(home, digest, reason="in-house", approver="ana", expires=_later())
    assert result.released
    assert list_queue(home) == []
    approved = list_queue(home, state="approved")
    assert [i.reviewer for i in approved] == ["ana"]


def test_requeue_after_reject(home: Path, model: Path) -> None:
    digest = _quarantine(home, model)
    reject(home, digest, reason="unknown origin", reviewer="ana")
    _quarantine(home, model)
    assert [i.state for i in list_queue(home, state=None)] == ["rejected", "queued"]


def test_crash_before_row_reconciled(
    home: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    admission = admit(model, stage="deployment", home=home)
    with monkeypatch.context() as patch:
        patch.setattr(promote_module, "enqueue", fail)
        with pytest.raises(StorageError, match="queue row could not be written"):
            act_on_admission(home, admission.record)
    assert _rows(home) == []
    result = reconcile(home)
    digest = f"sha256:{admission.record['artifact']['digest']['sha256']}"
    assert result.added == [digest]
    assert _rows(home)[0]["audit_seq"] == _promotion_seqs(home)[0]
    assert [i.record_id for i in list_queue(home)] == [admission.record["id"]]


def test_crash_after_removal_completed(
    home: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> bool:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("disk I/O error"))

    digest = _quarantine(home, model)
    with monkeypatch.context() as patch:
        patch.setattr(queue_module, "decide", fail)
        with pytest.raises(StorageError, match="could not be marked rejected"):
            reject(home, digest, reason="bad", reviewer="ana")
    assert _rows(home)[0]["state"] == "queued"
    result = reconcile(home)
    assert result.completed == [digest]
    assert _rows(home)[0]["state"] == "rejected"
    assert _rows(home)[0]["reviewer"] == "ana"
    assert list_queue(home) == []


def test_crash_before_removal_completed(
    home: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: ContentStore, digest: str) -> bool:
        raise OSError("device busy")

    digest = _quarantine(home, model)
    with monkeypatch.context() as patch:
        patch.setattr(ContentStore, "remove", fail)
        with pytest.raises(OSError, match="device busy"):
            reject(home, digest, reason="bad", reviewer="ana")
    assert ContentStore(home, "quarantine").contains(digest)
    result = reconcile(home)
    assert result.completed == [digest]
    assert not ContentStore(home, "quarantine").contains(digest)
    assert _rows(home)[0]["state"] == "rejected"


def test_missing_bytes_not_listed(home: Path, model: Path) -> None:
    digest = _quarantine(home, model)
    ContentStore(home, "quarantine").remove(digest)
    assert list_queue(home) == []
    assert reconcile(home).missing == [digest]
    with pytest.raises(NotQueuedError, match="bytes are missing"):
        show(home, digest)
    assert not reject(home, digest, reason="lost", reviewer="ana")
    assert reconcile(home).missing == []


def test_unrecorded_entry_not_queued(home: Path, model: Path) -> None:
    digest = _quarantine(home, model)
    store = ContentStore(home, "quarantine")
    record_path = store.entry(digest) / "record.json"
    record = {**json.loads(record_path.read_text()), "id": "forged"}
    write_json(record_path, record)
    log = AuditLog(home)
    with log.engine.begin() as conn:
        conn.execute(queue_table.delete())
    log.close()
    result = reconcile(home)
    assert result.unrecorded == [digest]
    assert result.added == []
    assert list_queue(home) == []


def test_old_store_entries_adopted(home: Path, model: Path, model_dir: Path) -> None:
    first = _quarantine(home, model)
    second = _quarantine(home, model_dir)
    log = AuditLog(home)
    with log.engine.begin() as conn:
        conn.execute(queue_table.delete())
    log.close()
    result = reconcile(home)
    assert sorted(result.added) == sorted([first, second])
    assert sorted(r["audit_seq"] for r in _rows(home)) == _promotion_seqs(home)


def test_crash_before_release_record(
    home: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt

    digest = _quarantine(home, model)
    with monkeypatch.context() as patch:
        patch.setattr(queue_module, "finish_review", crash)
        with pytest.raises(KeyboardInterrupt):
            approve(home, digest, reason="built in-house", approver="ana", expires=_later())
    assert ContentStore(home, "trusted").contains(digest)
    assert _rows(home)[0]["state"] == "queued"
    result = reconcile(home)
    assert result.completed == [digest]
    assert _rows(home)[0]["state"] == "approved"
    assert _rows(home)[0]["reviewer"] == "ana"
    assert not ContentStore(home, "quarantine").contains(digest)
    log = AuditLog(home)
    try:
        assert log.records()[-1].kind == "quarantine.release"
        assert log.verify().ok
    finally:
        log.close()
