"""Exceptions: a reviewer's waiver of one rule for one artifact digest, until an expiry.

An exception names exactly one rule id and one artifact digest
(``sha256:<hex>``), never a name, a package or a pattern, so it cannot
cover a different artifact that happens to share a name. It records the
reason, the approver, the creation time and an expiry (30 days unless
given; at most :data:`MAX_DAYS`). It applies from its creation until just
before its expiry: at the instant of expiry it no longer applies, and the
decision record lists it as expired.

Exceptions live in the gate's database beside the audit log. Creating,
approving and revoking each append an audit record. A creation is recorded
in the audit log before the exception is stored, and a revocation is stored
before it is recorded, so that a failure between the two steps never leaves
an exception in force without a record.

A rule of the check-error category (a check that failed to run) cannot be
waived, because the gate fails closed. A policy can ask for two different
approvers before an exception waives a critical reason
(``exceptions.twoApprovers``). The second approver adds their approval to the
existing exception.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from attestgate.audit import AuditLog
from attestgate.errors import StorageError, UsageError
from attestgate.policy import catalogue
from attestgate.policy.model import Reason
from attestgate.storage import db_error, ensure_schema, open_engine

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 366
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_TEXT = 2000

metadata = sa.MetaData()
exceptions_table = sa.Table(
    "policy_exceptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("artifact_digest", sa.String(80), nullable=False, index=True),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),
    sa.Column("revoked_at", sa.String(40), nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
    sa.Column("revoke_reason", sa.Text, nullable=True),
)
approvals_table = sa.Table(
    "policy_exception_approvals",
    metadata,
    sa.Column("exception_id", sa.String(36), primary_key=True),
    sa.Column("approver", sa.String(200), primary_key=True),
    sa.Column("approved_at", sa.String(40), nullable=False),
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Approval:
    approver: str
    approved_at: datetime

    def to_json(self) -> dict[str, str]:
        return {"approver": self.approver, "approved_at": _stamp(self.approved_at)}


@dataclass(frozen=True)
class PolicyException:
    """One exception as stored, with every approval it received."""

    id: str
    artifact_digest: str
    rule: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    approvals: tuple[Approval, ...] = ()
    revoked_at: datetime | None = None
    revoked_by: str = ""
    revoke_reason: str = ""

    @property
    def approvers(self) -> list[str]:
        return sorted({a.approver for a in self.approvals})

    def state(self, now: datetime) -> str:
        """Return ``active``, ``expired``, ``revoked`` or ``not-yet-valid`` at ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if now < self.created_at:
            return "not-yet-valid"
        if now >= self.expires_at:
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "artifact_digest": self.artifact_digest,
            "rule": self.rule,
            "reason": self.reason,
            "approver": self.created_by,
            "approvers": self.approvers,
            "approvals": [a.to_json() for a in self.approvals],
            "created_at": _stamp(self.created_at),
            "expires_at": _stamp(self.expires_at),
        }
        if self.revoked_at is not None:
            out["revoked_at"] = _stamp(self.revoked_at)
            out["revoked_by"] = self.revoked_by
            out["revoke_reason"] = self.revoke_reason
        return out


def normalize_digest(text: str) -> str:
    """Return ``sha256:<hex>`` in lower case, or raise :class:`UsageError`."""
    value = text.strip().lower()
    if not DIGEST.match(value):
        raise UsageError(
            f"artifact digest {text!r} is not sha256:<64 hex digits>",
            hint="an exception names one artifact by its digest, as the decision record shows "
            "it (artifact.digest.sha256)",
        )
    return value


def _text(value: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise UsageError(f"an exception needs {what}", hint=f"pass {what} (it is recorded)")
    if len(text) > MAX_TEXT:
        raise UsageError(f"{what} is longer than {MAX_TEXT} characters")
    return text


def check_rule(rule: str) -> list[str]:
    """Reject a rule that cannot be waived; return warnings for one the catalogue lacks."""
    if not catalogue.RULE_ID.match(rule):
        raise UsageError(
            f"rule {rule!r} is not a rule id",
            hint="an exception waives exactly one rule, such as pickle.unsafe-global; patterns "
            "are not accepted",
        )
    if catalogue.category(rule) == catalogue.CHECK_ERROR:
        raise UsageError(
            f"rule {rule} reports a check that failed to run, which no exception can waive",
            hint="fix the cause of the failure and admit the artifact again",
        )
    if not catalogue.is_known(rule):
        return [f"rule {rule} is not in the rule catalogue; check its spelling"]
    return []


class ExceptionStore:
    """The exceptions in a state directory's database, with their audit records."""

    def __init__(self, home: Path, *, clock: Clock = utc_now) -> None:
        self.home = home
        self.clock = clock
        self.audit = AuditLog(home)
        self.engine = open_engine(home)
        try:
            ensure_schema(self.engine)
        except StorageError:
            self.close()
            raise

    def close(self) -> None:
        self.engine.dispose()
        self.audit.close()

    def __enter__(self) -> ExceptionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self,
        artifact_digest: str,
        rule: str,
        *,
        reason: str,
        approver: str,
        expires_at: datetime | None = None,
    ) -> tuple[PolicyException, list[str]]:
        """Create an exception and return it with any warnings about its rule."""
        now = self.clock()
        digest = normalize_digest(artifact_digest)
        warnings = check_rule(rule)
        reason = _text(reason, "a reason")
        approver = _text(approver, "an approver")
        expires = expires_at or now + timedelta(days=DEFAULT_DAYS)
        if expires.tzinfo is None:
            raise UsageError(f"expiry {expires.isoformat()} has no time zone", hint="give UTC")
        if expires <= now:
            raise UsageError(
                f"expiry {_stamp(expires)} is not after the current time {_stamp(now)}",
                hint="give a later expiry",
            )
        if expires > now + timedelta(days=MAX_DAYS):
            raise UsageError(
                f"expiry {_stamp(expires)} is more than {MAX_DAYS} days away",
                hint="choose a nearer expiry and renew the exception when it runs out",
            )
        for existing in self.list(digest):
            if existing.rule == rule and existing.state(now) == "active":
                raise UsageError(
                    f"exception {existing.id} already waives {rule} for {digest} until "
                    f"{_stamp(existing.expires_at)}",
                    hint="revoke it first, or add a second approval with `exceptions approve`",
                )

        item = PolicyException(
            str(uuid.uuid4()),
            digest,
            rule,
            reason,
            approver,
            now,
            expires,
            (Approval(approver, now),),
        )
        self.audit.append("exception.add", item.to_json(), artifact_digest=digest)
        self._write(
            [
                exceptions_table.insert().values(
                    id=item.id,
                    artifact_digest=digest,
                    rule=rule,
                    reason=reason,
                    created_by=approver,
                    created_at=_stamp(now),
                    expires_at=_stamp(expires),
                ),
                approvals_table.insert().values(
                    exception_id=item.id, approver=approver, approved_at=_stamp(now)
                ),
            ]
        )
        logger.info("exception %s waives %s for %s, by %s", item.id, rule, digest, approver)
        return item, warnings

    def approve(self, exception_id: str, approver: str) -> PolicyException:
        """Add ``approver``'s approval to an active exception (a second approver)."""
        now = self.clock()
        approver = _text(approver, "an approver")
        item = self._require(exception_id)
        state = item.state(now)
        if state != "active":
            raise UsageError(f"exception {exception_id} is {state}, so it cannot be approved")
        if approver in item.approvers:
            raise UsageError(
                f"{approver} already approved exception {exception_id}, and a second "
                "approval must come from a different person",
                hint="ask another reviewer to run `attestgate exceptions approve ID`",
            )
        self.audit.append(
            "exception.approve",
            {"id": item.id, "rule": item.rule, "approver": approver, "approved_at": _stamp(now)},
            artifact_digest=item.artifact_digest,
        )
        self._write(
            [
                approvals_table.insert().values(
                    exception_id=item.id, approver=approver, approved_at=_stamp(now)
                )
            ]
        )
        return self._require(exception_id)

    def revoke(self, exception_id: str, *, by: str, reason: str) -> PolicyException:
        """Revoke an exception; it stops applying at once."""
        now = self.clock()
        by = _text(by, "the name of who revokes it")
        reason = _text(reason, "a reason")
        item = self._require(exception_id)
        if item.revoked_at is not None:
            raise UsageError(f"exception {exception_id} was already revoked")
        self._write(
            [
                exceptions_table.update()
                .where(exceptions_table.c.id == item.id)
                .values(revoked_at=_stamp(now), revoked_by=by, revoke_reason=reason)
            ]
        )
        revoked = self._require(exception_id)
        self.audit.append(
            "exception.revoke", revoked.to_json(), artifact_digest=item.artifact_digest
        )
        logger.info("exception %s revoked by %s", item.id, by)
        return revoked

    def get(self, exception_id: str) -> PolicyException | None:
        found = load_exceptions(self.engine, exception_id=exception_id)
        return found[0] if found else None

    def list(self, artifact_digest: str | None = None) -> list[PolicyException]:
        """Return every exception, or those for one digest, oldest first."""
        digest = normalize_digest(artifact_digest) if artifact_digest else None
        return load_exceptions(self.engine, artifact_digest=digest)

    def _require(self, exception_id: str) -> PolicyException:
        item = self.get(exception_id)
        if item is None:
            raise UsageError(
                f"no exception with id {exception_id}",
                hint="`attestgate exceptions list` shows the ids",
            )
        return item

    def _write(self, statements: Sequence[Any]) -> None:
        try:
            with self.engine.begin() as conn:
                for statement in statements:
                    conn.execute(statement)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"exception could not be stored in {self.home}: {db_error(exc)}",
                hint="check free disk space and that no other program holds the database",
            ) from exc


def load_exceptions(
    engine: Engine, *, artifact_digest: str | None = None, exception_id: str | None = None
) -> list[PolicyException]:
    """Read exceptions with their approvals; migrates a database without the tables first."""
    ensure_schema(engine)
    query = sa.select(exceptions_table).order_by(exceptions_table.c.created_at)
    if artifact_digest is not None:
        query = query.where(exceptions_table.c.artifact_digest == artifact_digest)
    if exception_id is not None:
        query = query.where(exceptions_table.c.id == exception_id)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
        ids = [row.id for row in rows]
        approvals: dict[str, list[Approval]] = {}
        if ids:
            for row in conn.execute(
                sa.select(approvals_table).where(approvals_table.c.exception_id.in_(ids))
            ):
                approvals.setdefault(row.exception_id, []).append(
                    Approval(row.approver, datetime.fromisoformat(row.approved_at))
                )
    out = []
    for row in rows:
        out.append(
            PolicyException(
                id=row.id,
                artifact_digest=row.artifact_digest,
                rule=row.rule,
                reason=row.reason,
                created_by=row.created_by,
                created_at=datetime.fromisoformat(row.created_at),
                expires_at=datetime.fromisoformat(row.expires_at),
                approvals=tuple(sorted(approvals.get(row.id, []), key=lambda a: a.approved_at)),
                revoked_at=_parse(row.revoked_at),
                revoked_by=row.revoked_by or "",
                revoke_reason=row.revoke_reason or "",
            )
        )
    return out


@dataclass
class ExceptionOutcome:
    """The reasons the exceptions waive, and the state of each exception."""

    effective: list[Reason] = field(default_factory=list)
    waived: list[tuple[Reason, str]] = field(default_factory=list)
    report: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "applied": [],
            "expired": [],
            "pending": [],
            "ignored": [],
            "unused": [],
        }
    )

    @property
    def waived_rules(self) -> dict[str, str]:
        return {reason.rule: exception_id for reason, exception_id in self.waived}


def _needs_two(reason: Reason, policy_exceptions: Mapping[str, Any]) -> bool:
    two = policy_exceptions.get("twoApprovers") or {}
    if reason.severity.label in (two.get("severities") or []):
        return True
    return any(catalogue.rule_matches(str(p), reason.rule) for p in two.get("rules") or [])


def apply_exceptions(
    reasons: Sequence[Reason],
    exceptions: Sequence[PolicyException],
    policy_exceptions: Mapping[str, Any],
    now: datetime,
) -> ExceptionOutcome:
    """Waive the reasons that an active exception covers; report expired and pending ones.

    ``policy_exceptions`` is the policy's ``exceptions`` section (``maxDays``,
    ``twoApprovers``).
    """
    outcome = ExceptionOutcome()
    max_days = policy_exceptions.get("maxDays")
    active: dict[str, PolicyException] = {}
    for item in exceptions:
        entry = item.to_json()
        state = item.state(now)
        if state == "revoked":
            continue
        if state == "expired":
            outcome.report["expired"].append(entry)
        elif state == "not-yet-valid":
            outcome.report["ignored"].append({**entry, "why": "its creation time is in the future"})
        elif catalogue.category(item.rule) == catalogue.CHECK_ERROR:
            why = "a check that failed to run cannot be waived"
            outcome.report["ignored"].append({**entry, "why": why})
        elif max_days and item.expires_at - item.created_at > timedelta(days=int(max_days)):
            why = f"its lifetime is longer than the policy's maximum of {max_days} days"
            outcome.report["ignored"].append({**entry, "why": why})
        else:
            active.setdefault(item.rule, item)

    used: set[str] = set()
    pending: dict[str, dict[str, Any]] = {}
    for reason in reasons:
        match = active.get(reason.rule)
        if match is None:
            outcome.effective.append(reason)
        elif _needs_two(reason, policy_exceptions) and len(match.approvers) < 2:
            outcome.effective.append(reason)
            pending[match.id] = {
                **match.to_json(),
                "why": "the policy needs two different approvers to waive a "
                f"{reason.severity.label} reason of {reason.rule}, and only "
                f"{', '.join(match.approvers)} approved",
            }
        else:
            outcome.waived.append((reason, match.id))
            used.add(match.id)
    outcome.report["pending"] = list(pending.values())
    for item in active.values():
        if item.id in used:
            waived = [r.file for r, eid in outcome.waived if eid == item.id]
            outcome.report["applied"].append({**item.to_json(), "waived_files": waived})
        elif item.id not in pending:
            outcome.report["unused"].append(item.to_json())
    return outcome
