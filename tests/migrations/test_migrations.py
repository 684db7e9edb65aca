"""Schema migrations on SQLite and, when ATTESTGATE_TEST_POSTGRES_URL is set, on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from attestgate import migrations
from attestgate.audit.log import metadata as audit_metadata
from attestgate.errors import StorageError, UsageError
from attestgate.intake.refstore import metadata as references_metadata
from attestgate.migrations import baseline
from attestgate.policy.exceptions import metadata as exceptions_metadata
from attestgate.service.jobs import metadata as jobs_metadata
from attestgate.service.tokens import metadata as tokens_metadata
from attestgate.storage import SCHEMA_HEAD, ensure_schema, forget_schemas, open_engine
from postgres_support import POSTGRES_URL, SKIP_REASON, postgres_schema

OLD_METADATA = (
    audit_metadata,
    exceptions_metadata,
    tokens_metadata,
    jobs_metadata,
    references_metadata,
)
NEW_TABLES = {"quarantine_queue", "verification_summaries"}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        made = open_engine(tmp_path)
        yield made
        made.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip(SKIP_REASON)
    with postgres_schema() as url:
        made = open_engine(tmp_path, url)
        yield made
        made.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _create_old(engine: Engine) -> None:
    """Create the tables the way attestgate did before it had migrations."""
    for metadata in OLD_METADATA:
        metadata.create_all(engine)


def test_head_matches_scripts() -> None:
    assert migrations.head_revision() == SCHEMA_HEAD


def test_history_is_linear() -> None:
    items = migrations.revisions()
    assert [r.revision for r in items] == ["0003", "0002", "0001"]
    assert [r.down_revision for r in items] == ["0002", "0001", None]
    assert [r.is_head for r in items] == [True, False, False]


def test_fresh_database_upgrades(engine: Engine) -> None:
    change = migrations.upgrade(engine)
    assert change.before is None
    assert change.after == SCHEMA_HEAD
    assert migrations.current_revision(engine) == SCHEMA_HEAD
    assert set(baseline.TABLES) | NEW_TABLES <= _tables(engine)


def test_upgrade_twice_changes_nothing(engine: Engine) -> None:
    migrations.upgrade(engine)
    change = migrations.upgrade(engine)
    assert change.before == SCHEMA_HEAD
    assert change.after == SCHEMA_HEAD


def test_metadata_matches_schema(engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        differences = compare_metadata(context, migrations.application_metadata())
    assert differences == []


def test_adopted_schema_matches_metadata(engine: Engine) -> None:
    _create_old(engine)
    migrations.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        differences = compare_metadata(context, migrations.application_metadata())
    assert differences == []


def test_old_database_adopted(engine: Engine) -> None:
    _create_old(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_tokens (id, name, role, salt, hash, created_at) "
                "VALUES ('t1', 'ci', 'submitter', 's', 'h', '2026-01-01')"
            )
        )
    change = migrations.upgrade(engine)
    assert change.before is None
    assert change.after == SCHEMA_HEAD
    assert _tables(engine) >= NEW_TABLES
    with engine.connect() as conn:
        names = list(conn.execute(sa.text("SELECT name FROM api_tokens")).scalars())
    assert names == ["ci"]


def test_partial_old_database_adopted(engine: Engine) -> None:
    audit_metadata.create_all(engine)
    migrations.upgrade(engine)
    assert set(baseline.TABLES) | NEW_TABLES <= _tables(engine)
    assert migrations.current_revision(engine) == SCHEMA_HEAD


def test_changed_columns_not_adopted(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE api_tokens (id VARCHAR(32) PRIMARY KEY, extra TEXT)"))
    with pytest.raises(StorageError, match=r"api_tokens\.name is missing") as caught:
        migrations.upgrade(engine)
    assert "api_tokens.extra is unexpected" in caught.value.message
    assert "alembic_version" not in _tables(engine)
    assert "quarantine_queue" not in _tables(engine)


def test_downgrade_queue_revision(engine: Engine) -> None:
    migrations.upgrade(engine)
    change = migrations.downgrade(engine, "0001")
    assert change.before == SCHEMA_HEAD
    assert change.after == "0001"
    assert not NEW_TABLES & _tables(engine)
    assert set(baseline.TABLES) <= _tables(engine)
    assert migrations.upgrade(engine).after == SCHEMA_HEAD
    assert _tables(engine) >= NEW_TABLES


def test_downgrade_one_step(engine: Engine) -> None:
    migrations.upgrade(engine)
    migrations.downgrade(engine, "0002")
    assert "quarantine_queue" in _tables(engine)
    assert "verification_summaries" not in _tables(engine)


def test_downgrade_below_baseline_rejected(engine: Engine) -> None:
    migrations.upgrade(engine)
    with pytest.raises(UsageError, match="unknown schema revision 'base'"):
        migrations.downgrade(engine, "base")
    assert migrations.current_revision(engine) == SCHEMA_HEAD


def test_newer_revision_rejected(engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="revision 9999, which this version"):
        migrations.upgrade(engine)


def test_ensure_schema_migrates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = migrations.upgrade

    def counting(engine: Engine, revision: str = "head") -> migrations.Change:
        calls.append(engine)
        return real(engine, revision)

    monkeypatch.setattr(migrations, "upgrade", counting)
    engines = [open_engine(tmp_path) for _ in range(6)]
    errors: list[StorageError] = []

    def run(engine: Engine) -> None:
        try:
            ensure_schema(engine)
        except StorageError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert len(calls) == 1


def test_concurrent_upgrades_serialised(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    engines = [open_engine(Path("."), url) for _ in range(4)]
    changes: list[migrations.Change] = []
    errors: list[Exception] = []

    def run(other: Engine) -> None:
        try:
            changes.append(migrations.upgrade(other))
        except (StorageError, sa.exc.SQLAlchemyError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in engines:
        other.dispose()
    assert errors == []
    assert sorted(str(c.before) for c in changes) == ["0003", "0003", "0003", "None"]


def test_ensure_schema_after_file_replaced(tmp_path: Path) -> None:
    first = open_engine(tmp_path)
    ensure_schema(first)
    first.dispose()
    (tmp_path / "attestgate.db").unlink()
    second = open_engine(tmp_path)
    ensure_schema(second)
    assert "quarantine_queue" in _tables(second)
    second.dispose()


def test_ensure_schema_at_head_skips_alembic(tmp_path: Path) -> None:
    engine = open_engine(tmp_path)
    migrations.upgrade(engine)
    engine.dispose()
    script = (
        "import sys; from pathlib import Path\n"
        "from attestgate.storage import ensure_schema, open_engine\n"
        f"engine = open_engine(Path({str(tmp_path)!r}))\n"
        "ensure_schema(engine)\n"
        "print('alembic' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"


def test_forget_schemas_checks_again(tmp_path: Path) -> None:
    engine = open_engine(tmp_path)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE verification_summaries"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0002'"))
    forget_schemas()
    ensure_schema(engine)
    assert "verification_summaries" in _tables(engine)
    engine.dispose()
