"""The gate's database: one engine per state directory, shared by every table.

SQLite in the state directory is the embedded default. When several gate
replicas serve one organisation, ``ATTESTGATE_DATABASE_URL`` (a SQLAlchemy
URL such as ``postgresql+psycopg://user:password@host/db``) selects a shared
database instead; the audit chain's head file still lives in each state
directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

DB_FILE = "attestgate.db"
DATABASE_URL_ENV = "ATTESTGATE_DATABASE_URL"


def db_error(exc: sa.exc.SQLAlchemyError) -> str:
    """Return the driver's own message, without SQLAlchemy's statement dump and link."""
    orig = getattr(exc, "orig", None)
    return str(orig) if orig is not None else str(exc).split("\n", 1)[0]


def database_url(home: Path) -> str:
    """Return the configured database URL, or the SQLite file in ``home``."""
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{home / DB_FILE}"


def open_engine(home: Path, url: str | None = None) -> Engine:
    """Return an engine for the gate's database: ``url``, the environment's, or SQLite."""
    url = url or database_url(home)
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url)

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
