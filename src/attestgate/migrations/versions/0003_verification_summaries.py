"""Add the table of verification summaries that reviewers stored for the webhook.

Revision ID: 0003
Revises: 0002

A row keeps the signed DSSE envelope as it was received, with a few of its
statement's fields for listing. The webhook verifies the envelope again
each time it relies on it, so these fields are never trusted on their own.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verification_summaries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("envelope", sa.Text, nullable=False),
        sa.Column("subjects", sa.Text, nullable=False),
        sa.Column("verifier_id", sa.String(200), nullable=False),
        sa.Column("policy_digest", sa.String(80), nullable=False),
        sa.Column("time_verified", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(80), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("submitted_at", sa.String(40), nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("verification_summaries")
