"""Reconcile the quarantine queue table with the quarantine store, from the audit log.

Every change writes the audit record first, then the store, then the table
(see :mod:`attestgate.stores.queue`). After a crash, :func:`reconcile`
finishes what the audit log shows was started:

1. A store entry whose decision record no row names was published, but its
   row was never written. Add the row when the audit log has that decision
   record and the ``promotion`` record that put the entry in the store.
   Otherwise report the entry as unrecorded and leave it out of the queue.
   Entries quarantined by versions before the queue table are adopted here.

2. A queued row with a ``quarantine.release`` or ``quarantine.reject`` audit
   record after its ``promotion`` record was reviewed, but the removal or the
   row update did not finish. Remove the bytes if they are still there, and
   mark the row approved or rejected.

3. A queued row can have an approval that promoted the artifact to the
   trusted store (a ``quarantine.approve`` and then a trusted ``promotion``
   record after the row's own) but no ``quarantine.release``. Release it
   now: record the release, remove the bytes, mark the row. Left queued, a
   later rejection would leave the trusted copy and its allow decision.

4. A queued row whose bytes are missing without such a record is reported
   as missing: the bytes were removed outside the gate. A reviewer clears it
   by rejecting it.

Reconciling never adds a row without its audit records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from attestgate.audit import AuditLog
from attestgate.audit.log import audit_records
from attestgate.errors import StorageError
from attestgate.storage import database_url, db_error
from attestgate.stores.local import ContentStore
from attestgate.stores.queue import finish_review
from attestgate.stores.queue_table import (
    APPROVED,
    REJECTED,
    QueueRow,
    decide,
    enqueue,
    rows_for_records,
    select_rows,
)

logger = logging.getLogger(__name__)

REVIEW_KINDS = {"quarantine.release": APPROVED, "quarantine.reject": REJECTED}

_lock = threading.Lock()
_reconciled: set[tuple[str, str]] = set()


@dataclass
class Reconciliation:
    """The digests (``sha256:<hex>``) that :func:`reconcile` repaired or reports."""

    added: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unrecorded)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "completed": self.completed,
            "missing": self.missing,
            "unrecorded": self.unrecorded,
        }


def _store_entries(store: ContentStore, result: Reconciliation) -> dict[str, str]:
    """Return decision record id -> hex digest for every entry in the quarantine store."""
    entries: dict[str, str] = {}
    for hex_digest in store.digests():
        try:
            record = store.read_record(hex_digest)
        except (OSError, ValueError):
            record = None
        record_id = record.get("id") if isinstance(record, dict) else None
        if not isinstance(record_id, str):
            result.unrecorded.append(f"sha256:{hex_digest}")
            continue
        entries[record_id] = hex_digest
    return entries


def _promotion_seq(audit: AuditLog, digest: str, record_id: str) -> tuple[int, str] | None:
    for entry in audit.records(artifact_digest=digest, newest_first=True):
        body = entry.body
        if (
            entry.kind == "promotion"
            and body.get("store") == "quarantine"
            and body.get("decision_record_id") == record_id
        ):
            return entry.seq, entry.created_at
    return None


def _add_missing_rows(audit: AuditLog, store: ContentStore, result: Reconciliation) -> None:
    entries = _store_entries(store, result)
    with audit.engine.connect() as conn:
        known = rows_for_records(conn, entries)
    for record_id, hex_digest in sorted(entries.items(), key=lambda item: item[1]):
        if record_id in known:
            continue
        digest = f"sha256:{hex_digest}"
        decision = audit.get(record_id)
        promotion = _promotion_seq(audit, digest, record_id)
        if decision is None or decision.kind != "decision" or promotion is None:
            result.unrecorded.append(digest)
            continue
        if decision.artifact_digest != digest:
            result.unrecorded.append(digest)
            continue
        seq, created_at = promotion
        with audit.engine.begin() as conn:
            enqueue(conn, decision.body, seq, queued_at=created_at)
        result.added.append(digest)


def _reviews_after(audit: AuditLog, first_seq: int) -> dict[str, list[Any]]:
    """Return release and reject audit rows after ``first_seq``, by digest, oldest first."""
    query = (
        sa.select(audit_records)
        .where(audit_records.c.kind.in_(sorted(REVIEW_KINDS)), audit_records.c.seq > first_seq)
        .order_by(audit_records.c.seq)
    )
    found: dict[str, list[Any]] = {}
    with audit.engine.connect() as conn:
        for row in conn.execute(query):
            found.setdefault(str(row.artifact_digest), []).append(row)
    return found


def _finish_reviews(
    home: Path, audit: AuditLog, store: ContentStore, result: Reconciliation
) -> None:
    with audit.engine.connect() as conn:
        rows = select_rows(conn)
    if not rows:
        return
    reviews = _reviews_after(audit, min(row.audit_seq for row in rows))
    for row in rows:
        later = [r for r in reviews.get(row.digest, []) if r.seq > row.audit_seq]
        if later:
            _finish(audit, store, row, later[-1], result)
            continue
        approval = _unreleased_approval(audit, row)
        if approval is not None:
            # The steps the approval would have taken next: the release
            # record, the removal of the bytes, then the row.
            finish_review(
                home,
                store,
                row,
                APPROVED,
                str(approval.get("approver", "")),
                str(approval.get("reason", "")),
            )
            result.completed.append(row.digest)
        elif not store.contains(row.hex_digest):
            result.missing.append(row.digest)


def _unreleased_approval(audit: AuditLog, row: QueueRow) -> dict[str, Any] | None:
    """Return the approval whose trusted promotion followed ``row``'s, if no release did."""
    approval: dict[str, Any] | None = None
    for entry in audit.records(artifact_digest=row.digest):
        if entry.seq <= row.audit_seq:
            continue
        if entry.kind == "quarantine.approve":
            approval = entry.body
        elif (
            approval is not None
            and entry.kind == "promotion"
            and entry.body.get("store") == "trusted"
        ):
            return approval
    return None


def _finish(
    audit: AuditLog, store: ContentStore, row: QueueRow, review: Any, result: Reconciliation
) -> None:
    try:
        body = json.loads(review.body)
    except ValueError:
        body = {}
    # A review still under way may remove the entry first.
    with contextlib.suppress(FileNotFoundError):
        store.remove(row.hex_digest)
    with audit.engine.begin() as conn:
        decide(
            conn,
            row,
            REVIEW_KINDS[review.kind],
            reviewer=str(body.get("actor", "")),
            reason=str(body.get("reason", "")),
            decided_at=str(review.created_at),
        )
    result.completed.append(row.digest)


def reconcile(home: Path, audit: AuditLog | None = None) -> Reconciliation:
    """Repair the quarantine queue in ``home`` after a crash; see the module documentation."""
    result = Reconciliation()
    log = audit or AuditLog(home)
    store = ContentStore(home, "quarantine")
    try:
        _add_missing_rows(log, store, result)
        _finish_reviews(home, log, store, result)
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(
            f"the quarantine queue in {home} could not be reconciled: {db_error(exc)}",
            hint="check that the database is reachable and writable",
        ) from exc
    finally:
        if audit is None:
            log.close()
    for digest in result.added:
        logger.warning("added the missing quarantine queue row of %s", digest)
    for digest in result.completed:
        logger.warning("finished the recorded review of %s", digest)
    for digest in result.missing:
        logger.warning(
            "%s is queued, but its bytes are missing from the quarantine store; reject it to "
            "clear the entry and admit the artifact again",
            digest,
        )
    for digest in result.unrecorded:
        logger.warning(
            "%s is in the quarantine store without the audit records that would queue it; "
            "admit it again",
            digest,
        )
    return result


def reconcile_once(home: Path, audit: AuditLog) -> None:
    """Reconcile ``home`` the first time this process reads its queue."""
    key = (str(home.resolve()), database_url(home))
    with _lock:
        if key in _reconciled:
            return
        reconcile(home, audit)
        _reconciled.add(key)
