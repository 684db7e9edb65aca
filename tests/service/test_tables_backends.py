"""The service's tables on SQLite and, when a server is given, on PostgreSQL.

Set ATTESTGATE_TEST_POSTGRES_URL (for example
postgresql+psycopg://USER:PASSWORD@127.0.0.1:5432/DB) to run the PostgreSQL
cases; each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from attestgate.errors import UsageError
from attestgate.service.jobs import JobQueue
from attestgate.service.tokens import TokenStore
from attestgate.storage import open_engine

POSTGRES_URL = os.environ.get("ATTESTGATE_TEST_POSTGRES_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        sqlite = open_engine(tmp_path)
        yield sqlite
        sqlite.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("ATTESTGATE_TEST_POSTGRES_URL is not set, so there is no PostgreSQL server")
    schema = f"t_{uuid.uuid4().hex}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    postgres = sa.create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield postgres
    finally:
        postgres.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _wait(queue: JobQueue, job_id: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job is not None and job.status in ("done", "failed"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


def _record(path: Path, stage: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if path.name == "bad":
        raise UsageError("invalid artifact bad", hint="use a good one")
    record = {
        "id": str(uuid.uuid4()),
        "decision": "allow",
        "artifact": {"digest": {"sha256": "ab"}},
    }
    return record, {"store": "trusted"}


def test_tokens_roundtrip(engine: Engine) -> None:
    tokens = TokenStore(engine)
    token, secret = tokens.create("ci", "submitter")
    found = tokens.authenticate(secret)
    assert found is not None
    assert found.id == token.id
    assert tokens.authenticate(secret + "x") is None
    assert tokens.revoke(token.id)
    assert tokens.authenticate(secret) is None


def test_jobs_roundtrip(engine: Engine) -> None:
    queue = JobQueue(engine, _record, workers=2)
    try:
        good = _wait(queue, queue.submit("owner", Path("good"), "training").id)
        bad = _wait(queue, queue.submit("owner", Path("bad"), "training").id)
    finally:
        queue.shutdown()
    assert good.status == "done"
    assert good.decision == "allow"
    assert queue.owner_of_record(good.record_id) == "owner"
    assert bad.status == "failed"
    assert "invalid artifact bad" in bad.error


def test_jobs_abandoned_fail(engine: Engine) -> None:
    queue = JobQueue(engine, _record, workers=1)
    queue.shutdown()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO admission_jobs (id, owner, status, stage, path, uploaded, created_at)"
                " VALUES ('j1', 'o', 'running', 'training', 'p', false, '2026-01-01')"
            )
        )
    restarted = JobQueue(engine, _record, workers=1)
    restarted.shutdown()
    job = restarted.get("j1")
    assert job is not None
    assert job.status == "failed"
