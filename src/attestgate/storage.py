"""The gate's database: one engine per state directory, shared by every table.

SQLite in the state directory is the embedded default. When several gate
replicas serve one organisation, ``ATTESTGATE_DATABASE_URL`` (a SQLAlchemy
URL such as ``postgresql+psycopg://user:password@host/db``) selects a shared
database instead; the audit chain's head file still lives in each state
directory.

The tables are created and changed by the Alembic migrations in
:mod:`attestgate.migrations`. :func:`ensure_schema` brings a database to the
newest revision the first time this process opens it; when the
``alembic_version`` table already names :data:`SCHEMA_HEAD`, Alembic is not
even imported.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from attestgate.errors import ConfigurationError, StorageError

logger = logging.getLogger(__name__)

DB_FILE = "attestgate.db"
DATABASE_URL_ENV = "ATTESTGATE_DATABASE_URL"
# The newest migration revision; a test checks it against the migration scripts.
SCHEMA_HEAD = "0003"
VERSION_TABLE = "alembic_version"

# Databases brought to SCHEMA_HEAD in this process. Engines made by
# open_engine for a server URL share one entry per URL, because they connect
# with the same options. Other engines (a test's engine with its own
# search_path, say) get one entry each, and a SQLite file is keyed by its
# inode so that a file deleted and created again is migrated again.
_schema_lock = threading.Lock()
_ready_keys: set[tuple[Any, ...]] = set()
_ready_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_url_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def db_error(exc: sa.exc.SQLAlchemyError) -> str:
    """Return the driver's own message, without SQLAlchemy's statement dump and link."""
    orig = getattr(exc, "orig", None)
    return str(orig) if orig is not None else str(exc).split("\n", 1)[0]


def database_url(home: Path) -> str:
    """Return the configured database URL, or the SQLite file in ``home``."""
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{home / DB_FILE}"


def open_engine(home: Path, url: str | None = None) -> Engine:
    """Return an engine for the gate's database: ``url``, the environment's, or SQLite."""
    where = "the database URL" if url else f"{DATABASE_URL_ENV}"
    url = url or database_url(home)
    if not url.startswith("sqlite"):
        try:
            shared = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            # The URL itself is left out of the message: it may carry a password.
            problem = (
                "is not a valid SQLAlchemy URL"
                if type(exc) is sa.exc.ArgumentError
                else f"names a driver that cannot be loaded ({exc})"
            )
            raise ConfigurationError(
                f"{where} {problem}",
                hint="give a URL such as postgresql+psycopg://user:password@host/db, "
                f"or unset {DATABASE_URL_ENV} to use SQLite in the state directory",
            ) from None
        _url_engines.add(shared)
        return shared
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


def _schema_key(engine: Engine) -> tuple[Any, ...] | None:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        try:
            info = os.stat(url.database)
        except OSError:
            return None
        return ("sqlite", url.database, info.st_dev, info.st_ino)
    if engine in _url_engines:
        return ("url", url.render_as_string(hide_password=False))
    return None


def schema_revision(connection: sa.Connection) -> str | None:
    """Return the revision in the ``alembic_version`` table, or None when there is none."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    value = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def ensure_schema(engine: Engine) -> None:
    """Bring the gate's tables in ``engine``'s database to :data:`SCHEMA_HEAD`.

    The check runs once per engine, and once per server URL or SQLite file,
    in this process. A database at the head costs one query and no Alembic
    import. Otherwise :func:`attestgate.migrations.upgrade` creates the tables
    or adopts those that earlier versions created without migrations.
    Raises :class:`StorageError` when the database cannot be read or migrated.
    """
    if engine in _ready_engines:
        return
    key = _schema_key(engine)
    if key is not None and key in _ready_keys:
        _ready_engines.add(engine)
        return
    with _schema_lock:
        key = _schema_key(engine)
        if engine in _ready_engines or (key is not None and key in _ready_keys):
            return
        try:
            with engine.connect() as conn:
                current = schema_revision(conn)
            if current != SCHEMA_HEAD:
                from attestgate.migrations import upgrade

                upgrade(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"the database {engine.url.render_as_string()} could not be migrated to "
                f"schema revision {SCHEMA_HEAD}: {db_error(exc)}",
                hint="check that the database is reachable, writable and not corrupt; "
                "`attestgate db current` shows its revision",
            ) from exc
        _ready_engines.add(engine)
        key = _schema_key(engine)
        if key is not None:
            _ready_keys.add(key)


def forget_schemas() -> None:
    """Forget which databases were migrated, so the next open checks again (for tests)."""
    with _schema_lock:
        _ready_keys.clear()
        _ready_engines.clear()
