"""The reference store: which owner and revision each admitted remote name resolved to.

Every admission of an ``hf://`` or ``oci://`` reference adds one observation
(name, requested revision, what it resolved to, the owner the hub reported).
A later admission compares its observation with all earlier observations of
the same name. Model namespace reuse shows up there: the name now belongs to a
different owner, a tag points at another commit, or a branch no longer
contains a commit it used to contain.

The table lives in the gate's database beside the audit log (SQLite in the
state directory, or the database ``ATTESTGATE_DATABASE_URL`` names), and the
migrations in :mod:`attestgate.migrations` create it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from attestgate.errors import StorageError
from attestgate.storage import ensure_schema, open_engine

logger = logging.getLogger(__name__)

# Observations read back per name; older ones beyond this are not compared.
MAX_OBSERVATIONS = 1000

metadata = sa.MetaData()
intake_references = sa.Table(
    "intake_references",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scheme", sa.String(8), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("revision", sa.String(255), nullable=False),
    sa.Column("revision_kind", sa.String(16), nullable=False),
    sa.Column("resolved", sa.String(160), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False, default=""),
    sa.Column("owner_id", sa.String(160), nullable=False, default=""),
    sa.Column("observed_at", sa.String(40), nullable=False),
    sa.Index("ix_intake_references_name", "scheme", "host", "name"),
)


@dataclass(frozen=True)
class Observation:
    """One admission's resolution of a remote name: revision, result and owner."""

    scheme: str
    host: str
    name: str
    revision: str
    revision_kind: str  # "commit", "branch", "tag", "digest" or "unknown"
    resolved: str
    owner: str = ""
    owner_id: str = ""
    observed_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "revision_kind": self.revision_kind,
            "resolved": self.resolved,
            "owner": self.owner,
            "owner_id": self.owner_id,
            "observed_at": self.observed_at,
        }


class ReferenceStore:
    """Observations of remote names, stored in the state directory."""

    def __init__(self, home: Path) -> None:
        try:
            home.mkdir(parents=True, exist_ok=True)
            self.engine = open_engine(home)
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise StorageError(
                f"the reference store in {home} could not be opened: {exc}",
                hint="check that the state directory is writable and its database is not corrupt",
            ) from exc
        try:
            ensure_schema(self.engine)
        except StorageError:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def observations(self, scheme: str, host: str, name: str) -> list[Observation]:
        """Return earlier observations of ``name``, oldest first."""
        table = intake_references
        query = (
            sa.select(table)
            .where(table.c.scheme == scheme, table.c.host == host, table.c.name == name)
            .order_by(table.c.id)
            .limit(MAX_OBSERVATIONS)
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"the reference store could not be read: {exc}") from exc
        return [
            Observation(
                row["scheme"],
                row["host"],
                row["name"],
                row["revision"],
                row["revision_kind"],
                row["resolved"],
                row["owner"],
                row["owner_id"],
                row["observed_at"],
            )
            for row in rows
        ]

    def record(self, observation: Observation) -> Observation:
        """Store ``observation`` with the current time and return it as stored."""
        stamped = Observation(
            **{
                **observation.__dict__,
                "observed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        values = dict(stamped.__dict__)
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(intake_references).values(**values))
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"the reference store could not be written: {exc}") from exc
        logger.debug(
            "recorded %s://%s/%s -> %s",
            stamped.scheme,
            stamped.host,
            stamped.name,
            stamped.resolved,
        )
        return stamped
