"""The tables as attestgate created them with ``create_all`` before it had migrations.

Revision 0001 creates these tables, and :func:`attestgate.migrations.upgrade`
compares a database that has them but no ``alembic_version`` table with
these definitions before it adopts the database. Each function returns fresh
columns and indexes, so the same definition can build a table for Alembic's
``op.create_table`` and for a comparison.
"""

from __future__ import annotations

import sqlalchemy as sa


def audit_records() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("record_id", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("artifact_digest", sa.String(80), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Index("ix_audit_records_artifact_digest", "artifact_digest"),
    ]


def policy_exceptions() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("artifact_digest", sa.String(80), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("revoked_at", sa.String(40), nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
        sa.Index("ix_policy_exceptions_artifact_digest", "artifact_digest"),
    ]


def policy_exception_approvals() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("exception_id", sa.String(36), primary_key=True),
        sa.Column("approver", sa.String(200), primary_key=True),
        sa.Column("approved_at", sa.String(40), nullable=False),
    ]


def api_tokens() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("revoked_at", sa.String(40), nullable=True),
    ]


def admission_jobs() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("uploaded", sa.Boolean, nullable=False),
        sa.Column("record_id", sa.String(36), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("digest", sa.String(80), nullable=True),
        sa.Column("promotion", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("finished_at", sa.String(40), nullable=True),
        sa.Index("ix_admission_jobs_owner", "owner"),
        sa.Index("ix_admission_jobs_record_id", "record_id"),
    ]


def intake_references() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scheme", sa.String(8), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("revision", sa.String(255), nullable=False),
        sa.Column("revision_kind", sa.String(16), nullable=False),
        sa.Column("resolved", sa.String(160), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("owner_id", sa.String(160), nullable=False),
        sa.Column("observed_at", sa.String(40), nullable=False),
        sa.Index("ix_intake_references_name", "scheme", "host", "name"),
    ]


# Table name -> definition, in the order revision 0001 creates them.
TABLES = {
    "audit_records": audit_records,
    "policy_exceptions": policy_exceptions,
    "policy_exception_approvals": policy_exception_approvals,
    "api_tokens": api_tokens,
    "admission_jobs": admission_jobs,
    "intake_references": intake_references,
}


def baseline_metadata() -> sa.MetaData:
    """Return a MetaData with every baseline table."""
    metadata = sa.MetaData()
    for name, define in TABLES.items():
        sa.Table(name, metadata, *define())
    return metadata
