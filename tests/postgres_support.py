"""A PostgreSQL schema of its own for each test that runs on both database back-ends.

Set ATTESTGATE_TEST_POSTGRES_URL (for example
postgresql+psycopg://USER:PASSWORD@127.0.0.1:5432/DB) to run those tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from attestgate.storage import forget_schemas

POSTGRES_URL = os.environ.get("ATTESTGATE_TEST_POSTGRES_URL", "")
SKIP_REASON = "ATTESTGATE_TEST_POSTGRES_URL is not set, so there is no PostgreSQL server"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """Create a schema, yield a database URL whose connections use it, then drop it."""
    schema = f"t_{uuid.uuid4().hex}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        forget_schemas()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
