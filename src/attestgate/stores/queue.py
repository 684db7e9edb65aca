"""The quarantine queue: list, show, approve and reject quarantined artifacts.

The queue is the ``quarantine_queue`` table in the gate's database
(:mod:`attestgate.stores.queue_table`), and the bytes stay in the
content-addressed quarantine store. Every change follows one order, so that
the audit log is never behind the stores and the table:

- quarantining (:func:`attestgate.stores.promote.promote`): the
  ``promotion`` audit record, then the store entry, then the queue row;
- releasing an approved artifact and rejecting one: the
  ``quarantine.release`` or ``quarantine.reject`` audit record, then the
  removal of the store entry, then the row's new state.

A crash can therefore leave a store entry without its row, or a queued row
whose bytes were already removed, but never a row without an audit record.
:func:`attestgate.stores.reconcile.reconcile` repairs both from the audit
log, and :func:`list_queue` never returns a queued entry whose bytes are
missing.

Approving and rejecting one digest hold a lock for that digest from the
moment they read its queued row until they finish (:func:`review_lock`), so
two reviews of the same entry never interleave, and the second one finds
the entry reviewed. Without the lock, a rejection that lands while an approval
re-admits the artifact leaves an allow decision, and possibly a trusted
copy, for an artifact that a reviewer rejected.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from attestgate.audit import AuditLog
from attestgate.errors import StorageError, UsageError
from attestgate.findings import Severity
from attestgate.policy import Policy, load_default_policy
from attestgate.storage import DB_FILE, database_url, db_error, open_engine
from attestgate.stores.exceptions import (
    PolicyException,
    active_exceptions,
    add_exceptions,
)
from attestgate.stores.local import ContentStore, parse_digest
from attestgate.stores.promote import Promotion, promote
from attestgate.stores.queue_table import (
    APPROVED,
    QUEUED,
    REJECTED,
    STATES,
    QueueRow,
    decide,
    queued_row,
    select_rows,
)

logger = logging.getLogger(__name__)

# Maximum lifetime of an exception; a reviewer renews it by approving again.
MAX_EXCEPTION_DAYS = 366


class NotQueuedError(UsageError):
    """The digest is not in the quarantine queue."""


@dataclass(frozen=True)
class QueueItem:
    """One entry of the quarantine queue, as its table row stores it."""

    digest: str
    record_id: str
    stage: str
    summary: str
    severity: str
    queued_at: str
    path: str
    rules: tuple[str, ...]
    name: str = ""
    state: str = QUEUED
    audit_seq: int = 0
    reviewer: str | None = None
    reason: str | None = None
    decided_at: str | None = None

    @classmethod
    def from_row(cls, row: QueueRow) -> QueueItem:
        return cls(
            row.hex_digest,
            row.decision_record_id,
            row.stage,
            row.summary,
            row.severity,
            row.queued_at,
            row.artifact_path,
            row.rules,
            row.artifact_name,
            row.state,
            row.audit_seq,
            row.reviewer,
            row.reason,
            row.decided_at,
        )

    @property
    def created_at(self) -> str:
        """The time the entry was first queued (the name earlier versions used)."""
        return self.queued_at

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - datetime.fromisoformat(self.queued_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": f"sha256:{self.digest}",
            "record_id": self.record_id,
            "audit_seq": self.audit_seq,
            "stage": self.stage,
            "name": self.name,
            "path": self.path,
            "summary": self.summary,
            "severity": self.severity,
            "rules": list(self.rules),
            "state": self.state,
            "queued_at": self.queued_at,
            "created_at": self.queued_at,
            "reviewer": self.reviewer,
            "reason": self.reason,
            "decided_at": self.decided_at,
        }


@dataclass
class ApprovalResult:
    """The outcome of an approval: the exceptions, the new decision and any promotion."""

    exceptions: list[PolicyException]
    record: dict[str, Any]
    promotion: Promotion | None = None
    released: bool = False
    audit_seqs: list[int] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return str(self.record["decision"])

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "record_id": self.record["id"],
            "exceptions": [e.to_json() for e in self.exceptions],
            "promotion": self.promotion.to_json() if self.promotion else None,
            "released": self.released,
        }


def open_audit(home: Path) -> AuditLog | None:
    """Open the audit log in ``home``, or return None when there is no database yet."""
    if database_url(home).startswith("sqlite") and not (home / DB_FILE).is_file():
        return None
    return AuditLog(home)


# Key space of the PostgreSQL advisory locks that serialise reviews: "review"
# in ASCII. The keys stay below 2**56, so none equals the migration lock's key.
_REVIEW_LOCK_SPACE = 0x726576696577


@contextlib.contextmanager
def review_lock(home: Path, hex_digest: str) -> Iterator[None]:
    """Hold the lock that serialises approvals and rejections of one digest.

    With the embedded SQLite database, the lock is an exclusive ``flock`` on
    ``HOME/locks/review-<digest>.lock``, which covers the processes of one
    host. With a server database, it is a PostgreSQL session advisory lock,
    which covers every replica that shares the database.
    """
    url = database_url(home)
    if url.startswith("sqlite"):
        try:
            import fcntl
        except ImportError:
            # NOTE: Windows has no fcntl, so reviews there take no lock.
            logger.warning("reviews of %s are not serialised: this platform has no flock", home)
            yield
            return
        folder = home / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"review-{hex_digest}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    engine = open_engine(home)
    key = int.from_bytes(bytes.fromhex(hex_digest)[:6], "big") ^ (_REVIEW_LOCK_SPACE << 8)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _read_rows(audit: AuditLog, state: str | None, stage: str | None) -> list[QueueRow]:
    try:
        with audit.engine.connect() as conn:
            return select_rows(conn, state=state, stage=stage)
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(
            f"the quarantine queue in {audit.home} could not be read: {db_error(exc)}",
            hint="check that the database is reachable and not corrupt",
        ) from exc


def list_queue(
    home: Path,
    *,
    stage: str | None = None,
    min_severity: str | None = None,
    older_than: timedelta | None = None,
    state: str | None = QUEUED,
) -> list[QueueItem]:
    """Return the queue's entries in ``state`` (default queued), oldest first.

    ``stage``, ``min_severity`` and ``older_than`` (time since queued) filter
    the result; ``state=None`` returns every state. A queued entry whose
    bytes are missing from the quarantine store is left out and logged.
    """
    from attestgate.stores.reconcile import reconcile_once

    if state is not None and state not in STATES:
        raise UsageError(f"unknown queue state {state!r}", hint=f"use one of {', '.join(STATES)}")
    audit = open_audit(home)
    if audit is None:
        return []
    try:
        reconcile_once(home, audit)
        rows = _read_rows(audit, state, stage)
    finally:
        audit.close()
    store = ContentStore(home, "quarantine")
    floor = Severity[min_severity.upper()] if min_severity else None
    now = datetime.now(UTC)
    items = []
    missing = []
    for row in rows:
        if row.state == QUEUED and not store.contains(row.hex_digest):
            missing.append(row.digest)
            continue
        item = QueueItem.from_row(row)
        if floor is not None and Severity[item.severity.upper()] < floor:
            continue
        if older_than is not None and item.age(now) < older_than:
            continue
        items.append(item)
    if missing:
        logger.warning(
            "left out %d queued artifact(s) whose bytes are missing from the quarantine store "
            "in %s: %s; run `attestgate quarantine reconcile`, and reject those it still "
            "reports missing",
            len(missing),
            home,
            ", ".join(missing),
        )
    return items


def _require(
    home: Path, digest: str, *, need_bytes: bool = True
) -> tuple[ContentStore, QueueRow, dict[str, Any]]:
    """Return the store, the queued row and the decision record of a queued digest.

    With ``need_bytes``, a row whose bytes are missing from the store is not queued.
    """
    hex_digest = parse_digest(digest)
    audit = open_audit(home)
    row = None
    record = None
    if audit is not None:
        try:
            with audit.engine.connect() as conn:
                row = queued_row(conn, f"sha256:{hex_digest}")
            found = audit.get(row.decision_record_id) if row is not None else None
            record = found.body if found is not None and found.kind == "decision" else None
        finally:
            audit.close()
    if row is None:
        raise NotQueuedError(
            f"sha256:{hex_digest} is not in the quarantine queue",
            hint="run `attestgate quarantine list` to see the queued digests",
        )
    store = ContentStore(home, "quarantine")
    if need_bytes and not store.contains(hex_digest):
        raise NotQueuedError(
            f"sha256:{hex_digest} is queued, but its bytes are missing from the quarantine "
            f"store in {home}",
            hint="reject it to clear the entry (`attestgate quarantine reject`), then admit "
            "the artifact again",
        )
    if record is None:
        # Rows are written after their audit records, so only an edited log gets here.
        raise StorageError(
            f"the decision record {row.decision_record_id} of queued sha256:{hex_digest} is "
            "missing from the audit log",
            hint="run `attestgate audit verify`",
        )
    return store, row, record


def show(home: Path, digest: str) -> dict[str, Any]:
    """Return the queued artifact's record, its earlier decisions and its exceptions."""
    store, row, record = _require(home, digest)
    audit = AuditLog(home)
    try:
        history = [
            {
                "seq": r.seq,
                "id": r.record_id,
                "kind": r.kind,
                "created_at": r.created_at,
                "decision": r.body.get("decision"),
                "stage": r.body.get("stage"),
                "summary": r.body.get("summary"),
            }
            for r in audit.records(artifact_digest=row.digest)
        ]
    finally:
        audit.close()
    exceptions = active_exceptions(home, row.digest)
    return {
        "item": QueueItem.from_row(row).to_json(),
        "record": record,
        "history": history,
        "exceptions": [e.to_json() for e in exceptions],
        "stored_at": str(store.entry(row.hex_digest)),
    }


def _check_approval(reason: str, approver: str, expires: datetime) -> None:
    if not reason.strip():
        raise UsageError("an approval needs a reason", hint="say why the findings are acceptable")
    if not approver.strip():
        raise UsageError("an approval needs an approver", hint="name the reviewer")
    now = datetime.now(UTC)
    if expires.tzinfo is None:
        raise UsageError(f"expiry {expires} has no time zone", hint="give a UTC time")
    if expires <= now:
        raise UsageError(f"expiry {expires.isoformat()} is in the past", hint="give a later date")
    if expires > now + timedelta(days=MAX_EXCEPTION_DAYS):
        raise UsageError(
            f"expiry {expires.isoformat()} is more than {MAX_EXCEPTION_DAYS} days away",
            hint="choose a nearer expiry and approve again when it runs out",
        )


def approve(
    home: Path,
    digest: str,
    *,
    reason: str,
    approver: str,
    expires: datetime,
    policy: Policy | None = None,
) -> ApprovalResult:
    """Approve a quarantined artifact.

    1. Record an exception for every rule that quarantined it, and the approval.
    2. Admit the quarantine copy again under the policy with those exceptions.
    3. If the decision is now allow, promote the copy to the trusted store,
       remove it from the quarantine store and mark its queue row approved.
       If it is quarantine again, the new decision replaces the row's.
    """
    _check_approval(reason, approver, expires)
    with review_lock(home, parse_digest(digest)):
        return _approve(home, digest, reason, approver, expires, policy)


def _approve(
    home: Path,
    digest: str,
    reason: str,
    approver: str,
    expires: datetime,
    policy: Policy | None,
) -> ApprovalResult:
    from attestgate.pipeline import admit

    store, row, record = _require(home, digest)
    artifact_digest = row.digest
    hex_digest = row.hex_digest
    stage = record["stage"]
    rules = sorted({r["rule"] for r in record.get("reasons", [])})
    base = policy or load_default_policy()
    _check_same_policy(record, base)
    max_days = (base.document.get("exceptions") or {}).get("maxDays")
    if max_days and expires > datetime.now(UTC) + timedelta(days=int(max_days)):
        raise UsageError(
            f"expiry {expires.isoformat()} is more than the policy's maximum of {max_days} days "
            "away",
            hint="choose a nearer expiry and approve again when it runs out",
        )
    missing = store.missing_files(hex_digest)
    if missing:
        raise NotQueuedError(
            f"{artifact_digest} is queued, but {len(missing)} of its stored files are missing "
            f"from the quarantine store (first: {missing[0]})",
            hint="reject it to clear the entry (`attestgate quarantine reject`), then admit "
            "the artifact again",
        )

    created = add_exceptions(
        home, artifact_digest, rules, reason=reason, approver=approver, expires=expires
    )
    audit = AuditLog(home)
    try:
        entry = audit.append(
            "quarantine.approve",
            {
                "decision_record_id": record["id"],
                "approver": approver,
                "reason": reason,
                "expires_at": expires.astimezone(UTC).isoformat(timespec="seconds"),
                "exceptions": [e.id for e in created],
                "rules": rules,
            },
            artifact_digest=artifact_digest,
        )
    finally:
        audit.close()
    result = ApprovalResult(created, record, audit_seqs=[entry.seq])

    # The admission applies the digest's exceptions under the policy's own
    # exception rules (maximum lifetime, two approvers).
    admission = admit(
        store.artifact_path(hex_digest),
        stage=stage,
        policy=base,
        home=home,
        discover_evidence=False,
    )
    result.record = admission.record
    if admission.action == "allow":
        result.promotion = promote(
            home, admission.record, "trusted", source=store.artifact_path(hex_digest)
        )
        result.released = finish_review(home, store, row, APPROVED, approver, reason)
    elif admission.action == "quarantine":
        promote(home, admission.record, "quarantine")
    logger.info("approved %s by %s: now %s", artifact_digest, approver, result.decision)
    return result


def _check_same_policy(record: dict[str, Any], policy: Policy) -> None:
    """Raise unless ``policy`` is the policy that quarantined the artifact.

    Judging the copy again under another policy would let an approval
    escape the quarantining policy's rules and exception limits.
    """
    used = record.get("policy") or {}
    digest = (used.get("digest") or {}).get("sha256")
    if digest != policy.sha256:
        raise UsageError(
            f"the artifact was quarantined under policy {used.get('name')!r} "
            f"({used.get('source')}, sha256 {digest}), not {policy.name!r} "
            f"(sha256 {policy.sha256})",
            hint="approve with --policy naming the policy file that quarantined it",
        )


def finish_review(
    home: Path, store: ContentStore, row: QueueRow, state: str, actor: str, reason: str
) -> bool:
    """Record the review, remove the quarantine copy, then mark the row; return the removal."""
    kind = "quarantine.release" if state == APPROVED else "quarantine.reject"
    audit = AuditLog(home)
    try:
        entry = audit.append(
            kind,
            {"store": "quarantine", "actor": actor, "reason": reason},
            artifact_digest=row.digest,
        )
        removed = store.remove(row.hex_digest)
        try:
            with audit.engine.begin() as conn:
                decide(conn, row, state, reviewer=actor, reason=reason, decided_at=entry.created_at)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"{row.digest} was removed from the quarantine store, but its queue row could "
                f"not be marked {state}: {db_error(exc)}",
                hint="run `attestgate quarantine reconcile` once the database is writable",
            ) from exc
    finally:
        audit.close()
    return removed


def reject(home: Path, digest: str, *, reason: str, reviewer: str) -> bool:
    """Reject a quarantined artifact: record the rejection, remove the copy, mark the row.

    An entry whose bytes are already missing can be rejected too, which clears it.
    """
    if not reason.strip():
        raise UsageError("a rejection needs a reason", hint="say what is wrong with the artifact")
    with review_lock(home, parse_digest(digest)):
        store, row, _record = _require(home, digest, need_bytes=False)
        removed = finish_review(home, store, row, REJECTED, reviewer, reason)
    logger.info("rejected %s by %s", row.digest, reviewer)
    return removed


__all__ = [
    "ApprovalResult",
    "NotQueuedError",
    "QueueItem",
    "approve",
    "list_queue",
    "reject",
    "review_lock",
    "show",
]
