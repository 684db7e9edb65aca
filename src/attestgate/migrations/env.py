"""Alembic's environment script for attestgate: migrate the connection the caller passes.

:mod:`attestgate.migrations` builds the Alembic configuration in code and
puts an open connection, already inside a transaction, in
``config.attributes["connection"]``. The migrations run in that transaction,
so the caller's lock on the database covers them. There is no ini file and
no offline (``--sql``) mode.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
