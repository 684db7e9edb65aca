"""The quarantine queue: list, show, approve and reject quarantined artifacts.

Every action appends an audit record before it changes a store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from attestgate.audit import AuditLog
from attestgate.errors import UsageError
from attestgate.findings import Severity
from attestgate.policy import Policy, load_default_policy
from attestgate.stores.exceptions import (
    PolicyException,
    active_exceptions,
    add_exceptions,
    waiving_policy,
)
from attestgate.stores.local import ContentStore, parse_digest
from attestgate.stores.promote import Promotion, promote

logger = logging.getLogger(__name__)

# Maximum lifetime of an exception; a reviewer renews it by approving again.
MAX_EXCEPTION_DAYS = 366


class NotQueuedError(UsageError):
    """The digest is not in the quarantine queue."""


@dataclass(frozen=True)
class QueueItem:
    """One quarantined artifact, summarised from its decision record."""

    digest: str
    record_id: str
    stage: str
    summary: str
    severity: str
    created_at: str
    path: str
    rules: tuple[str, ...]

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - datetime.fromisoformat(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": f"sha256:{self.digest}",
            "record_id": self.record_id,
            "stage": self.stage,
            "summary": self.summary,
            "severity": self.severity,
            "created_at": self.created_at,
            "path": self.path,
            "rules": list(self.rules),
        }


@dataclass
class ApprovalResult:
    """The outcome of an approval: the exceptions, the new decision and any promotion."""

    exceptions: list[PolicyException]
    record: dict[str, Any]
    promotion: Promotion | None = None
    released: bool = False
    audit_seqs: list[int] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return str(self.record["decision"])

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "record_id": self.record["id"],
            "exceptions": [e.to_json() for e in self.exceptions],
            "promotion": self.promotion.to_json() if self.promotion else None,
            "released": self.released,
        }


def _worst_severity(record: dict[str, Any]) -> str:
    labels = [r.get("severity", "info") for r in record.get("reasons", [])]
    ranked = [Severity[label.upper()] for label in labels if label.upper() in Severity.__members__]
    return max(ranked).label if ranked else "info"


def _item(digest: str, record: dict[str, Any]) -> QueueItem:
    rules = tuple(sorted({r["rule"] for r in record.get("reasons", [])}))
    return QueueItem(
        digest,
        record["id"],
        record.get("stage", ""),
        record.get("summary", ""),
        _worst_severity(record),
        record["created_at"],
        record["artifact"]["path"],
        rules,
    )


def list_queue(
    home: Path,
    *,
    stage: str | None = None,
    min_severity: str | None = None,
    older_than: timedelta | None = None,
) -> list[QueueItem]:
    """Return the quarantined artifacts, oldest first, filtered by stage, severity and age."""
    store = ContentStore(home, "quarantine")
    floor = Severity[min_severity.upper()] if min_severity else None
    now = datetime.now(UTC)
    items = []
    for digest in store.digests():
        record = store.read_record(digest)
        if record is None:
            continue
        item = _item(digest, record)
        if stage and item.stage != stage:
            continue
        if floor is not None and Severity[item.severity.upper()] < floor:
            continue
        if older_than is not None and item.age(now) < older_than:
            continue
        items.append(item)
    return sorted(items, key=lambda i: i.created_at)


def _require(home: Path, digest: str) -> tuple[ContentStore, str, dict[str, Any]]:
    hex_digest = parse_digest(digest)
    store = ContentStore(home, "quarantine")
    record = store.read_record(hex_digest) if store.contains(hex_digest) else None
    if record is None:
        raise NotQueuedError(
            f"sha256:{hex_digest} is not in the quarantine queue",
            hint="run `attestgate quarantine list` to see the queued digests",
        )
    return store, hex_digest, record


def show(home: Path, digest: str) -> dict[str, Any]:
    """Return the queued artifact's record, its earlier decisions and its exceptions."""
    store, hex_digest, record = _require(home, digest)
    audit = AuditLog(home)
    try:
        history = [
            {
                "seq": r.seq,
                "id": r.record_id,
                "kind": r.kind,
                "created_at": r.created_at,
                "decision": r.body.get("decision"),
                "stage": r.body.get("stage"),
                "summary": r.body.get("summary"),
            }
            for r in audit.records(artifact_digest=f"sha256:{hex_digest}")
        ]
    finally:
        audit.close()
    exceptions = active_exceptions(home, f"sha256:{hex_digest}")
    return {
        "item": _item(hex_digest, record).to_json(),
        "record": record,
        "history": history,
        "exceptions": [e.to_json() for e in exceptions],
        "stored_at": str(store.entry(hex_digest)),
    }


def _check_approval(reason: str, approver: str, expires: datetime) -> None:
    if not reason.strip():
        raise UsageError("an approval needs a reason", hint="say why the findings are acceptable")
    if not approver.strip():
        raise UsageError("an approval needs an approver", hint="name the reviewer")
    now = datetime.now(UTC)
    if expires.tzinfo is None:
        raise UsageError(f"expiry {expires} has no time zone", hint="give a UTC time")
    if expires <= now:
        raise UsageError(f"expiry {expires.isoformat()} is in the past", hint="give a later date")
    if expires > now + timedelta(days=MAX_EXCEPTION_DAYS):
        raise UsageError(
            f"expiry {expires.isoformat()} is more than {MAX_EXCEPTION_DAYS} days away",
            hint="choose a nearer expiry and approve again when it runs out",
        )


def approve(
    home: Path,
    digest: str,
    *,
    reason: str,
    approver: str,
    expires: datetime,
    policy: Policy | None = None,
) -> ApprovalResult:
    """Approve a quarantined artifact.

    1. Record an exception for every rule that quarantined it, and the approval.
    2. Admit the quarantine copy again under the policy with those exceptions.
    3. If the decision is now allow, promote the copy to the trusted store and
       remove it from the quarantine store.
    """
    from attestgate.pipeline import admit

    _check_approval(reason, approver, expires)
    store, hex_digest, record = _require(home, digest)
    artifact_digest = f"sha256:{hex_digest}"
    stage = record["stage"]
    rules = sorted({r["rule"] for r in record.get("reasons", [])})

    created = add_exceptions(
        home, artifact_digest, rules, reason=reason, approver=approver, expires=expires
    )
    audit = AuditLog(home)
    try:
        entry = audit.append(
            "quarantine.approve",
            {
                "decision_record_id": record["id"],
                "approver": approver,
                "reason": reason,
                "expires_at": expires.astimezone(UTC).isoformat(timespec="seconds"),
                "exceptions": [e.id for e in created],
                "rules": rules,
            },
            artifact_digest=artifact_digest,
        )
    finally:
        audit.close()
    exceptions = active_exceptions(home, artifact_digest)
    critical = {r["rule"] for r in record.get("reasons", []) if r.get("severity") == "critical"}
    result = ApprovalResult(created, record, audit_seqs=[entry.seq])

    base = policy or load_default_policy()
    admission = admit(
        store.artifact_path(hex_digest),
        stage=stage,
        policy=waiving_policy(base, stage, exceptions, critical),
        home=home,
        discover_evidence=False,
    )
    result.record = admission.record
    if admission.action == "allow":
        result.promotion = promote(
            home, admission.record, "trusted", source=store.artifact_path(hex_digest)
        )
        result.released = _remove(home, store, hex_digest, "quarantine.release", approver, reason)
    elif admission.action == "quarantine":
        promote(home, admission.record, "quarantine")
    logger.info("approved %s by %s: now %s", artifact_digest, approver, result.decision)
    return result


def _remove(
    home: Path, store: ContentStore, hex_digest: str, kind: str, actor: str, reason: str
) -> bool:
    audit = AuditLog(home)
    try:
        audit.append(
            kind,
            {"store": "quarantine", "actor": actor, "reason": reason},
            artifact_digest=f"sha256:{hex_digest}",
        )
    finally:
        audit.close()
    return store.remove(hex_digest)


def reject(home: Path, digest: str, *, reason: str, reviewer: str) -> bool:
    """Reject a quarantined artifact: record the rejection, then remove the copy."""
    if not reason.strip():
        raise UsageError("a rejection needs a reason", hint="say what is wrong with the artifact")
    store, hex_digest, _record = _require(home, digest)
    removed = _remove(home, store, hex_digest, "quarantine.reject", reviewer, reason)
    logger.info("rejected sha256:%s by %s", hex_digest, reviewer)
    return removed
