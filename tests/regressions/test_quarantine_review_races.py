"""Two reviews of one quarantined artifact that overlap, and crash leftovers.

A second reviewer acts while the first one's approval re-admits the
artifact. Without a lock per digest, a rejection that lands there leaves the
approval's allow decision as the artifact's latest decision, which the
admission webhook honours for an artifact that a reviewer rejected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import attestgate.pipeline as pipeline
from attestgate.audit import AuditLog
from attestgate.pipeline import admit
from attestgate.storage import DATABASE_URL_ENV
from attestgate.stores import ContentStore, act_on_admission, approve, list_queue, reject
from attestgate.stores.queue import NotQueuedError

# How long a concurrent review may take before the test treats it as blocked.
BLOCKED_SECONDS = 1.0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    return tmp_path / "home"


@pytest.fixture
def queued(home: Path, tmp_path: Path) -> str:
    path = tmp_path / "intake" / "model.bin"
    path.parent.mkdir()
    path.write_bytes(b"\x00" * 1000 + b"weights")
    admission = admit(path, stage="deployment", home=home)
    assert admission.action == "quarantine"
    act_on_admission(home, admission.record)
    return f"sha256:{admission.record['artifact']['digest']['sha256']}"


def later() -> datetime:
    return datetime.now(UTC) + timedelta(days=3)


class Concurrent:
    """A second review, run in a thread while the first one re-admits the artifact."""

    def __init__(self, review: Callable[[], Any]) -> None:
        self.review = review
        self.outcome: Any = None
        self.thread: threading.Thread | None = None
        self.finished_inside = False

    def _run(self) -> None:
        try:
            self.outcome = self.review()
        except NotQueuedError as exc:
            self.outcome = exc

    def admit(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def patched(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run)
                self.thread.start()
                self.thread.join(BLOCKED_SECONDS)
                self.finished_inside = not self.thread.is_alive()
            return result

        return patched

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(30)


@pytest.fixture
def concurrent(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[[], Any]], Concurrent]]:
    created: list[Concurrent] = []

    def make(review: Callable[[], Any]) -> Concurrent:
        second = Concurrent(review)
        monkeypatch.setattr(pipeline, "admit", second.admit(pipeline.admit))
        created.append(second)
        return second

    yield make
    for second in created:
        if second.thread is not None:
            second.thread.join(30)


def decisions(home: Path, digest: str) -> list[str]:
    log = AuditLog(home)
    try:
        return [str(r.body.get("decision")) for r in log.records() if r.kind == "decision"]
    finally:
        log.close()


def kinds(home: Path) -> list[str]:
    log = AuditLog(home)
    try:
        return [r.kind for r in log.records()]
    finally:
        log.close()


def test_reject_during_approval_waits(
    home: Path, queued: str, concurrent: Callable[[Callable[[], Any]], Concurrent]
) -> None:
    second = concurrent(lambda: reject(home, queued, reason="malware", reviewer="bob"))
    result = approve(home, queued, reason="reviewed", approver="alice", expires=later())
    second.join()
    assert second.finished_inside is False
    assert isinstance(second.outcome, NotQueuedError)
    assert result.decision == "allow"
    assert ContentStore(home, "trusted").contains(queued.removeprefix("sha256:"))
    assert "quarantine.reject" not in kinds(home)


def test_second_approval_waits(
    home: Path, queued: str, concurrent: Callable[[Callable[[], Any]], Concurrent]
) -> None:
    second = concurrent(
        lambda: approve(home, queued, reason="again", approver="carol", expires=later())
    )
    approve(home, queued, reason="reviewed", approver="alice", expires=later())
    second.join()
    assert second.finished_inside is False
    assert isinstance(second.outcome, NotQueuedError)
    assert kinds(home).count("quarantine.release") == 1


def test_approval_after_rejection_raises(home: Path, queued: str) -> None:
    reject(home, queued, reason="malware", reviewer="bob")
    with pytest.raises(NotQueuedError):
        approve(home, queued, reason="reviewed", approver="alice", expires=later())
    assert decisions(home, queued) == ["quarantine"]


def test_missing_bytes_left_out_then_rejected(home: Path, queued: str) -> None:
    ContentStore(home, "quarantine").remove(queued.removeprefix("sha256:"))
    assert list_queue(home) == []
    with pytest.raises(NotQueuedError):
        approve(home, queued, reason="reviewed", approver="alice", expires=later())
    assert reject(home, queued, reason="bytes gone", reviewer="bob") is False
    assert list_queue(home, state="rejected")[0].digest == queued.removeprefix("sha256:")
