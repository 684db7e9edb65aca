"""Create the tables that attestgate created with create_all before it had migrations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from attestgate.errors import UsageError
from attestgate.migrations import baseline

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, define in baseline.TABLES.items():
        op.create_table(name, *define())


def downgrade() -> None:
    raise UsageError(
        "revision 0001 cannot be downgraded, because that would drop the audit log",
        hint="downgrade to 0001 at the lowest; to start afresh, move the database aside",
    )
