"""Exceptions for approvals, stored through :mod:`attestgate.policy.exceptions`.

NOTE: the pipeline does not yet pass stored exceptions to the policy, so
:func:`waiving_policy` maps each excepted rule to allow for the one
re-admission that an approval runs. Remove it once ``admit`` applies the
artifact's exceptions itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from attestgate.audit.log import canonical_json
from attestgate.errors import UsageError
from attestgate.policy import Policy
from attestgate.policy.exceptions import (
    ExceptionStore,
    PolicyException,
    check_rule,
    load_exceptions,
)
from attestgate.storage import open_engine

logger = logging.getLogger(__name__)

__all__ = ["PolicyException", "active_exceptions", "add_exceptions", "waiving_policy"]


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


def waiving_policy(
    policy: Policy, stage: str, exceptions: list[PolicyException], critical_rules: set[str]
) -> Policy:
    """Return ``policy`` with each excepted rule mapped to allow for ``stage``.

    Use the result only to evaluate the digest the exceptions name. A rule in
    ``critical_rules`` is waived only with two different approvers, and a
    failed check still quarantines because the policy engine enforces that.
    """
    usable = [
        item for item in exceptions if item.rule not in critical_rules or len(item.approvers) >= 2
    ]
    if not usable:
        return policy
    document = dict(policy.document)
    stages = dict(document.get("stages", {}))
    section = dict(stages.get(stage, {}))
    rules = dict(section.get("rules", {}))
    for item in usable:
        rules[item.rule] = "allow"
    section["rules"] = rules
    stages[stage] = section
    document["stages"] = stages
    ids = ",".join(sorted(item.id for item in usable))
    return replace(
        policy,
        name=f"{policy.name} with exceptions",
        source=f"{policy.source} with exceptions {ids}",
        sha256=hashlib.sha256(canonical_json(document)).hexdigest(),
        document=document,
    )
