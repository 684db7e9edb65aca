"""Exceptions for approvals, stored through :mod:`attestgate.policy.exceptions`.

An approval records one exception per quarantining rule, and the admission
that follows applies them under the policy's exception rules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from attestgate.errors import UsageError
from attestgate.policy.exceptions import (
    ExceptionStore,
    PolicyException,
    check_rule,
    load_exceptions,
)
from attestgate.storage import open_engine

logger = logging.getLogger(__name__)

__all__ = ["PolicyException", "active_exceptions", "add_exceptions"]


def active_exceptions(home: Path, artifact_digest: str) -> list[PolicyException]:
    """Return the exceptions for ``artifact_digest`` that apply now."""
    engine = open_engine(home)
    try:
        found = load_exceptions(engine, artifact_digest=artifact_digest)
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    return [item for item in found if item.state(now) == "active"]


def add_exceptions(
    home: Path,
    artifact_digest: str,
    rules: Iterable[str],
    *,
    reason: str,
    approver: str,
    expires: datetime,
) -> list[PolicyException]:
    """Create an exception for each rule that has no active one; return those created.

    Each creation appends its own ``exception.add`` audit record.
    """
    existing = {item.rule for item in active_exceptions(home, artifact_digest)}
    created = []
    with ExceptionStore(home) as store:
        for rule in rules:
            if rule in existing:
                continue
            try:
                check_rule(rule)
            except UsageError as exc:
                # A failed check cannot be waived, so the re-admission still quarantines.
                logger.warning("no exception for %s on %s: %s", rule, artifact_digest, exc.message)
                continue
            item, _warnings = store.add(
                artifact_digest, rule, reason=reason, approver=approver, expires_at=expires
            )
            created.append(item)
    return created
