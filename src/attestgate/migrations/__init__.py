"""Schema migrations of the gate's database, run with Alembic from code.

The revisions live in ``versions/``:

- ``0001`` creates the tables that earlier versions created with
  ``create_all`` (:mod:`attestgate.migrations.baseline`);
- ``0002`` adds the quarantine queue (``quarantine_queue``);
- ``0003`` adds the verification summaries the webhook accepts
  (``verification_summaries``).

There is no ``alembic.ini``: :func:`upgrade` builds the configuration in
code, with ``script_location`` set to this package's folder, and passes its
own connection to ``env.py`` through ``config.attributes["connection"]``.
The steps of :func:`upgrade`:

1. Open one transaction and lock out other gate processes for its length:
   SQLite's ``BEGIN IMMEDIATE`` takes the write lock, and on PostgreSQL a
   transaction-level advisory lock serialises replicas that start together.

2. Read ``alembic_version``. A database without it, but with some of the
   baseline tables, was created by an earlier version: compare each of those
   tables' columns with the baseline, raise :class:`StorageError` on any
   difference, create the baseline tables that are missing, and stamp
   revision 0001.

3. Run Alembic's upgrade to the target in the same transaction, so a failure
   leaves the database as it was (PostgreSQL and SQLite both roll back DDL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Engine

from attestgate.errors import StorageError, UsageError
from attestgate.migrations import baseline
from attestgate.storage import SCHEMA_HEAD, db_error, schema_revision

logger = logging.getLogger(__name__)

BASELINE = "0001"
# Key of the PostgreSQL advisory lock taken while migrating: "attestgt" in ASCII.
ADVISORY_LOCK_KEY = 0x6174746573746774


@dataclass(frozen=True)
class Revision:
    """One migration script: its id, the revision before it and its first docstring line."""

    revision: str
    down_revision: str | None
    description: str
    is_head: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "down_revision": self.down_revision,
            "description": self.description,
            "head": self.is_head,
        }


@dataclass(frozen=True)
class Change:
    """The schema revision before and after a migration (None: no ``alembic_version``)."""

    before: str | None
    after: str | None

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "changed": self.before != self.after}


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """Return the newest revision among the migration scripts."""
    head = _script().get_current_head()
    assert head is not None, "the migration scripts have no head"
    return head


def revisions() -> list[Revision]:
    """Return every migration script, newest first."""
    out = []
    for script in _script().walk_revisions():
        down = script.down_revision
        out.append(
            Revision(
                script.revision,
                down if isinstance(down, str) or down is None else ",".join(down),
                (script.doc or "").strip().splitlines()[0] if script.doc else "",
                script.is_head,
            )
        )
    return out


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, or None when it has no ``alembic_version``."""
    try:
        with engine.connect() as conn:
            return schema_revision(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(
            f"the schema revision of {engine.url.render_as_string()} could not be read: "
            f"{db_error(exc)}",
            hint="check the database URL and that the database server is running",
        ) from exc


def _lock(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )


def _type_signature(column_type: Any) -> tuple[Any, Any]:
    return column_type._type_affinity, getattr(column_type, "length", None)


def _column_problems(connection: sa.Connection, table: sa.Table) -> list[str]:
    found = {c["name"]: c for c in sa.inspect(connection).get_columns(table.name)}
    problems = []
    for column in table.columns:
        reflected = found.pop(column.name, None)
        if reflected is None:
            problems.append(f"column {table.name}.{column.name} is missing")
            continue
        if _type_signature(reflected["type"]) != _type_signature(column.type):
            problems.append(
                f"column {table.name}.{column.name} is {reflected['type']}, not {column.type}"
            )
        if bool(reflected["nullable"]) != bool(column.nullable):
            wanted = "nullable" if column.nullable else "NOT NULL"
            problems.append(f"column {table.name}.{column.name} is not {wanted}")
    problems.extend(f"column {table.name}.{name} is unexpected" for name in sorted(found))
    return problems


def _adopt(connection: sa.Connection) -> bool:
    """Stamp the baseline on a database that earlier versions created; return whether it did."""
    names = set(sa.inspect(connection).get_table_names())
    metadata = baseline.baseline_metadata()
    present = [table for table in metadata.sorted_tables if table.name in names]
    if not present:
        return False
    problems = [problem for table in present for problem in _column_problems(connection, table)]
    if problems:
        raise StorageError(
            "the database has attestgate's tables but not the columns this version "
            f"expects, so it was not migrated: {'; '.join(problems)}",
            hint="restore the database that attestgate created, or move it aside to start "
            "a new one",
        )
    for table in metadata.sorted_tables:
        if table.name not in names:
            table.create(connection)
    command.stamp(_config(connection), BASELINE)
    logger.info("adopted a database created without migrations at revision %s", BASELINE)
    return True


def _check_known(script: ScriptDirectory, revision: str | None) -> None:
    if revision is None:
        return
    try:
        script.get_revision(revision)
    except CommandError as exc:
        raise StorageError(
            f"the database is at schema revision {revision}, which this version of "
            f"attestgate does not know (its newest is {SCHEMA_HEAD})",
            hint="a newer attestgate migrated the database; run that version",
        ) from exc


def upgrade(engine: Engine, revision: str = "head") -> Change:
    """Migrate the database to ``revision``, adopting one that earlier versions created."""
    script = _script()
    try:
        with engine.begin() as conn:
            _lock(conn)
            before = schema_revision(conn)
            _check_known(script, before)
            if before is None:
                _adopt(conn)
            command.upgrade(_config(conn), revision)
            after = schema_revision(conn)
    except CommandError as exc:
        raise UsageError(f"the schema could not be upgraded to {revision}: {exc}") from exc
    if before != after:
        logger.info(
            "migrated %s from schema revision %s to %s",
            engine.url.render_as_string(),
            before or "(none)",
            after,
        )
    return Change(before, after)


def downgrade(engine: Engine, revision: str) -> Change:
    """Migrate the database down to ``revision``, which must be 0001 or later."""
    script = _script()
    known = {item.revision for item in revisions()}
    if revision not in known:
        raise UsageError(
            f"unknown schema revision {revision!r}",
            hint=f"use one of {', '.join(sorted(known))}; revision {BASELINE} is the lowest",
        )
    with engine.begin() as conn:
        _lock(conn)
        before = schema_revision(conn)
        _check_known(script, before)
        if before is None:
            raise UsageError("the database has no schema revision, so it cannot be downgraded")
        command.downgrade(_config(conn), revision)
        after = schema_revision(conn)
    logger.info(
        "migrated %s down from schema revision %s to %s",
        engine.url.render_as_string(),
        before,
        after,
    )
    return Change(before, after)


def application_metadata() -> sa.MetaData:
    """Return one MetaData with every table the code defines, to compare with the database."""
    from attestgate.audit.log import metadata as audit
    from attestgate.intake.refstore import metadata as references
    from attestgate.policy.exceptions import metadata as exceptions
    from attestgate.service.jobs import metadata as jobs
    from attestgate.service.summaries import metadata as summaries
    from attestgate.service.tokens import metadata as tokens
    from attestgate.stores.queue_table import metadata as queue

    combined = sa.MetaData()
    for part in (audit, exceptions, tokens, jobs, references, queue, summaries):
        for table in part.tables.values():
            table.to_metadata(combined)
    return combined
