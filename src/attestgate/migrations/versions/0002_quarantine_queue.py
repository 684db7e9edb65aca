"""Add the quarantine queue table.

Revision ID: 0002
Revises: 0001

Each row is one quarantined artifact: its digest, the decision and the
``promotion`` audit record that put its bytes in the quarantine store, and
the review (state, reviewer, reason, time). At most one row per digest is
``queued``, as the quarantine store holds one copy per digest.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantine_queue",
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
    )
    op.create_index("ix_quarantine_queue_digest", "quarantine_queue", ["digest"])
    op.create_index("ix_quarantine_queue_state", "quarantine_queue", ["state", "queued_at"])
    op.create_index(
        "uq_quarantine_queue_queued_digest",
        "quarantine_queue",
        ["digest"],
        unique=True,
        sqlite_where=sa.text("state = 'queued'"),
        postgresql_where=sa.text("state = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("uq_quarantine_queue_queued_digest", table_name="quarantine_queue")
    op.drop_index("ix_quarantine_queue_state", table_name="quarantine_queue")
    op.drop_index("ix_quarantine_queue_digest", table_name="quarantine_queue")
    op.drop_table("quarantine_queue")
