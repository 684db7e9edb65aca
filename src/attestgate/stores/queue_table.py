"""The ``quarantine_queue`` table: one row per quarantined artifact and its review.

A row names the decision record that quarantined the artifact and the
sequence number of the ``promotion`` audit record that put its bytes in the
quarantine store. Its state is ``queued`` until a reviewer approves the
release or rejects the artifact. At most one row per digest is queued (a
partial unique index), because the quarantine store contains one copy per
digest: a later quarantine decision on a queued digest updates that row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from attestgate.errors import StorageError
from attestgate.findings import Severity

QUEUED = "queued"
APPROVED = "approved"
REJECTED = "rejected"
STATES = (QUEUED, APPROVED, REJECTED)

metadata = sa.MetaData()
queue_table = sa.Table(
    "quarantine_queue",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("artifact_name", sa.String(255), nullable=False),
    sa.Column("artifact_path", sa.Text, nullable=False),
    sa.Column("decision_record_id", sa.String(36), nullable=False),
    sa.Column("audit_seq", sa.Integer, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("rules", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("queued_at", sa.String(40), nullable=False),
    sa.Column("reviewer", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("decided_at", sa.String(40), nullable=True),
    sa.CheckConstraint(
        "state IN ('queued', 'approved', 'rejected')", name="ck_quarantine_queue_state"
    ),
    sa.Index("ix_quarantine_queue_digest", "digest"),
    sa.Index("ix_quarantine_queue_state", "state", "queued_at"),
    sa.Index(
        "uq_quarantine_queue_queued_digest",
        "digest",
        unique=True,
        sqlite_where=sa.text("state = 'queued'"),
        postgresql_where=sa.text("state = 'queued'"),
    ),
)

# Columns a later quarantine decision on a queued digest replaces; the row
# keeps its id and the time it was first queued.
_REPLACED = (
    "stage",
    "artifact_name",
    "artifact_path",
    "decision_record_id",
    "audit_seq",
    "severity",
    "summary",
    "rules",
)


@dataclass(frozen=True)
class QueueRow:
    """One row of the queue; ``digest`` is ``sha256:<hex>``."""

    id: str
    digest: str
    stage: str
    artifact_name: str
    artifact_path: str
    decision_record_id: str
    audit_seq: int
    severity: str
    summary: str
    rules: tuple[str, ...]
    state: str
    queued_at: str
    reviewer: str | None = None
    reason: str | None = None
    decided_at: str | None = None

    @property
    def hex_digest(self) -> str:
        return self.digest.removeprefix("sha256:")


def worst_severity(record: dict[str, Any]) -> str:
    """Return the label of the most severe reason in a decision record (``info`` without any)."""
    labels = [str(r.get("severity", "info")) for r in record.get("reasons", [])]
    ranked = [Severity[label.upper()] for label in labels if label.upper() in Severity.__members__]
    return max(ranked).label if ranked else "info"


def row_values(record: dict[str, Any], audit_seq: int) -> dict[str, Any]:
    """Return the queue columns that a quarantine decision record and its audit record give."""
    artifact = record["artifact"]
    path = str(artifact.get("path", ""))
    return {
        "digest": f"sha256:{artifact['digest']['sha256']}",
        "stage": str(record.get("stage", "")),
        "artifact_name": (Path(path).name or path)[:255],
        "artifact_path": path,
        "decision_record_id": str(record["id"]),
        "audit_seq": audit_seq,
        "severity": worst_severity(record),
        "summary": str(record.get("summary", "")),
        "rules": json.dumps(sorted({str(r["rule"]) for r in record.get("reasons", [])})),
    }


def _row(mapping: Any) -> QueueRow:
    values = dict(mapping)
    values["rules"] = tuple(json.loads(values["rules"]))
    return QueueRow(**values)


def enqueue(conn: sa.Connection, record: dict[str, Any], audit_seq: int, *, queued_at: str) -> None:
    """Insert the queued row for ``record``'s digest, or update the digest's queued row."""
    values = {
        **row_values(record, audit_seq),
        "id": str(uuid.uuid4()),
        "state": QUEUED,
        "queued_at": queued_at,
    }
    dialect = conn.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(queue_table).values(**values)
    elif dialect == "sqlite":
        statement = sqlite.insert(queue_table).values(**values)
    else:
        raise StorageError(
            f"the quarantine queue needs SQLite or PostgreSQL, not {dialect}",
            hint="set ATTESTGATE_DATABASE_URL to a postgresql+psycopg:// URL, or unset it",
        )
    statement = statement.on_conflict_do_update(
        index_elements=[queue_table.c.digest],
        index_where=queue_table.c.state == QUEUED,
        set_={name: statement.excluded[name] for name in _REPLACED},
    )
    conn.execute(statement)


def queued_row(conn: sa.Connection, digest: str) -> QueueRow | None:
    """Return the queued row of ``digest`` (``sha256:<hex>``), or None."""
    row = (
        conn.execute(
            sa.select(queue_table).where(
                queue_table.c.digest == digest, queue_table.c.state == QUEUED
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else _row(row)


def select_rows(
    conn: sa.Connection, *, state: str | None = QUEUED, stage: str | None = None
) -> list[QueueRow]:
    """Return the rows in ``state`` (every state when None), oldest first."""
    query = sa.select(queue_table).order_by(queue_table.c.queued_at, queue_table.c.id)
    if state is not None:
        query = query.where(queue_table.c.state == state)
    if stage is not None:
        query = query.where(queue_table.c.stage == stage)
    return [_row(row) for row in conn.execute(query).mappings()]


def rows_for_records(conn: sa.Connection, record_ids: Iterable[str]) -> set[str]:
    """Return which of ``record_ids`` some row, in any state, names as its decision record."""
    requested = sorted(set(record_ids))
    found: set[str] = set()
    for start in range(0, len(requested), 500):
        chunk = requested[start : start + 500]
        query = sa.select(queue_table.c.decision_record_id).where(
            queue_table.c.decision_record_id.in_(chunk)
        )
        values: list[Any] = list(conn.execute(query).scalars())
        found.update(str(value) for value in values)
    return found


def decide(
    conn: sa.Connection,
    row: QueueRow,
    state: str,
    *,
    reviewer: str,
    reason: str,
    decided_at: str,
) -> bool:
    """Mark a queued row approved or rejected; return False when it changed in between.

    The update applies only while the row is still queued for the same
    ``promotion`` audit record, so a later quarantine decision that updated
    the row is not marked with a review of the earlier one.
    """
    if state not in (APPROVED, REJECTED):
        raise ValueError(f"a review decides {APPROVED} or {REJECTED}, not {state!r}")
    result = conn.execute(
        queue_table.update()
        .where(
            queue_table.c.id == row.id,
            queue_table.c.state == QUEUED,
            queue_table.c.audit_seq == row.audit_seq,
        )
        .values(state=state, reviewer=reviewer[:200], reason=reason, decided_at=decided_at)
    )
    return bool(result.rowcount)


def count_queued(conn: sa.Connection) -> int:
    query = sa.select(sa.func.count()).select_from(queue_table)
    return int(conn.execute(query.where(queue_table.c.state == QUEUED)).scalar() or 0)
