"""The audit log on PostgreSQL: the same chain, appends and checks as on SQLite.

Runs when ATTESTGATE_TEST_POSTGRES_URL names a server; `.ci/run` starts one.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from attestgate.audit import AuditLog
from attestgate.storage import DATABASE_URL_ENV
from postgres_support import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="ATTESTGATE_TEST_POSTGRES_URL is not set; .ci/run starts a server"
)


@pytest.fixture
def pg_log(tmp_path, monkeypatch):
    with postgres_schema() as url:
        monkeypatch.setenv(DATABASE_URL_ENV, url)
        log = AuditLog(tmp_path / "home")
        yield log
        log.close()


def test_postgres_chain_verifies(pg_log):
    for i in range(5):
        pg_log.append("decision", {"n": i}, artifact_digest=f"sha256:{i:064x}")
    result = pg_log.verify()
    assert result.ok
    assert result.records == 5
    assert pg_log.engine.dialect.name == "postgresql"


def test_postgres_edit_detected(pg_log):
    for i in range(3):
        pg_log.append("decision", {"n": i})
    with pg_log.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_records SET body = :body WHERE seq = 2"), {"body": '{"n":9}'}
        )
    result = pg_log.verify()
    assert not result.ok
    assert result.first_bad_seq == 2


def test_postgres_concurrent_replicas_one_chain(pg_log, tmp_path):
    replicas = [AuditLog(tmp_path / f"replica-{i}") for i in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: replicas[i % 4].append("decision", {"i": i}), range(40)))
    for replica in replicas:
        result = replica.verify()
        assert result.ok
        assert result.records == 40
        replica.close()
