"""API tokens, stored as salted SHA-256 hashes, each with one role.

A token reads ``agt_<id>_<secret>``. The id selects the row, and the secret
is compared with ``hmac.compare_digest`` against SHA-256 over a per-token salt
and the secret. The secret has 256 random bits, so a fast hash is enough: the
stored hash cannot be brute-forced back into a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from attestgate.errors import UsageError
from attestgate.storage import ensure_schema, open_engine

ROLES = ("submitter", "reviewer", "admin")
# Permissions of each role; a submitter can never approve or reject.
PERMISSIONS = {
    "submitter": frozenset({"submit", "read-own"}),
    "reviewer": frozenset({"submit", "read-own", "read-all", "review"}),
    "admin": frozenset({"submit", "read-own", "read-all", "review", "manage-tokens"}),
}
PREFIX = "agt_"

metadata = sa.MetaData()
tokens_table = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("revoked_at", sa.String(40), nullable=True),
)


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    role: str
    created_at: str
    revoked_at: str | None = None

    def can(self, permission: str) -> bool:
        return self.revoked_at is None and permission in PERMISSIONS.get(self.role, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("utf-8")).hexdigest()


class TokenStore:
    """The ``api_tokens`` table in the gate's database."""

    def __init__(self, engine: Engine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self.owns_engine = owns_engine
        ensure_schema(engine)

    @classmethod
    def open(cls, home: Path) -> TokenStore:
        home.mkdir(parents=True, exist_ok=True)
        return cls(open_engine(home), owns_engine=True)

    def close(self) -> None:
        if self.owns_engine:
            self.engine.dispose()

    def create(self, name: str, role: str) -> tuple[ApiToken, str]:
        """Create a token and return it with its secret, which is shown only this once."""
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
        if not name.strip():
            raise UsageError("a token needs a name", hint="name the person or system using it")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self.engine.begin() as conn:
            conn.execute(
                tokens_table.insert().values(
                    id=token_id,
                    name=name,
                    role=role,
                    salt=salt,
                    hash=_hash(salt, secret),
                    created_at=created,
                )
            )
        return ApiToken(token_id, name, role, created), f"{PREFIX}{token_id}_{secret}"

    def authenticate(self, presented: str) -> ApiToken | None:
        """Return the live token ``presented`` names, or None."""
        if not presented.startswith(PREFIX):
            return None
        token_id, _, secret = presented[len(PREFIX) :].partition("_")
        if not token_id or not secret:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tokens_table).where(tokens_table.c.id == token_id)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(_hash(row.salt, secret), row.hash):
            return None
        return ApiToken(row.id, row.name, row.role, row.created_at, row.revoked_at)

    def get(self, token_id: str) -> ApiToken | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tokens_table).where(tokens_table.c.id == token_id)).first()
        if row is None:
            return None
        return ApiToken(row.id, row.name, row.role, row.created_at, row.revoked_at)

    def list(self) -> list[ApiToken]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tokens_table).order_by(tokens_table.c.created_at))
            return [ApiToken(r.id, r.name, r.role, r.created_at, r.revoked_at) for r in rows]

    def revoke(self, token_id: str) -> bool:
        revoked = datetime.now(UTC).isoformat(timespec="seconds")
        with self.engine.begin() as conn:
            result = conn.execute(
                tokens_table.update()
                .where(tokens_table.c.id == token_id)
                .where(tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=revoked)
            )
        return bool(result.rowcount)
