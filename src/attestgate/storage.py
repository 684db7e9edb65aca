"""The gate's database: one engine per state directory, shared by every table.

SQLite in the state directory is the embedded default. Tables for the audit
log, exceptions and the quarantine queue live in the same database file, so
one transaction can touch several of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

DB_FILE = "attestgate.db"


def db_error(exc: sa.exc.SQLAlchemyError) -> str:
    """Return the driver's own message, without SQLAlchemy's statement dump and link."""
    orig = getattr(exc, "orig", None)
    return str(orig) if orig is not None else str(exc).split("\n", 1)[0]


def open_engine(home: Path) -> Engine:
    """Return an engine for the SQLite database in the state directory ``home``."""
    engine = sa.create_engine(f"sqlite:///{home / DB_FILE}")

    # pysqlite opens transactions lazily and as DEFERRED, which lets two
    # writers read the same head and fork the audit chain. Take the write
    # lock at BEGIN instead (the SQLAlchemy documentation's pysqlite recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout = 30000")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
