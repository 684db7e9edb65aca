"""Verification summaries that the admission webhook accepts in place of an allow decision.

A reviewer or admin stores a signed SLSA verification summary (VSA v1, as
``attestgate admit --vsa-out`` writes it) with ``POST
/verification-summaries``. The service checks it on receipt, appends a
``vsa.add`` audit record and stores the envelope in the
``verification_summaries`` table under its id, the SHA-256 of the envelope's
canonical JSON. A pod names stored summaries by id. Before the webhook lets
a summary stand in for an allow decision, it checks the summary again with
the keys the service trusts at that moment.

The checks, in order:

1. The document is a DSSE envelope of at most :data:`MAX_ENVELOPE_BYTES`
   whose payload type is ``application/vnd.in-toto+json``.
2. A signature verifies under one of the service's trusted VSA keys
   (``attestgate serve --vsa-trusted-key``). The keys that sign producers'
   claims are not used: they must not be able to vouch for their own
   artifacts. Without VSA keys, no summary is accepted.
3. The payload is an in-toto statement of predicate type
   ``https://slsa.dev/verification_summary/v1`` from an accepted verifier
   (attestgate's own id unless configured otherwise).
4. ``verificationResult`` is ``PASSED``.
5. ``policy.digest.sha256`` is the SHA-256 of a policy the service accepts:
   the policy the service itself runs, and any digests given with
   ``--vsa-policy-digest``. The policy URI is not compared, because it names
   a file on the machine that made the summary.
6. ``timeVerified`` has a time zone, is at most five minutes in the future,
   and is less than the maximum age old (30 days by default). VSA v1 has no
   expiry of its own, so this age is the summary's validity.

At review, more checks apply to the pod's model digest and stage:

7. A subject's ``sha256`` digest equals the model digest.
8. ``verifiedLevels`` contains ``ATTESTGATE_STAGE_<STAGE>`` for the pod's
   stage (``ATTESTGATE_STAGE_FINE_TUNING`` for fine-tuning). ``resourceUri``
   is not compared, because it names the artifact's path where it was admitted.
9. When this gate's latest decision on the digest and stage is not allow,
   ``timeVerified`` is later than that decision, so that a summary signed
   before a block or quarantine cannot be replayed to override it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from attestgate.audit import AuditLog
from attestgate.errors import StorageError, UsageError
from attestgate.evidence import dsse
from attestgate.evidence.interface import IN_TOTO_PAYLOAD_TYPE, EvidenceError, EvidenceLimits
from attestgate.evidence.intoto import Statement, parse_statement
from attestgate.evidence.keys import PublicKey
from attestgate.policy.vsa import PREDICATE_TYPE, VERIFIER_ID
from attestgate.storage import db_error, ensure_schema

logger = logging.getLogger(__name__)

MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_SUBJECTS = 64
DEFAULT_MAX_AGE = timedelta(days=30)
CLOCK_SKEW = timedelta(minutes=5)
_LIMITS = EvidenceLimits(max_subjects=MAX_SUBJECTS)

metadata = sa.MetaData()
summaries_table = sa.Table(
    "verification_summaries",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("envelope", sa.Text, nullable=False),
    sa.Column("subjects", sa.Text, nullable=False),
    sa.Column("verifier_id", sa.String(200), nullable=False),
    sa.Column("policy_digest", sa.String(80), nullable=False),
    sa.Column("time_verified", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(80), nullable=False),
    sa.Column("submitted_by", sa.String(200), nullable=False),
    sa.Column("submitted_at", sa.String(40), nullable=False),
    sa.Column("audit_seq", sa.Integer, nullable=False),
)


class SummaryError(UsageError):
    """A verification summary is invalid, untrusted or does not pass."""


@dataclass(frozen=True)
class SummaryTrust:
    """The VSA signing keys, policy digests, verifiers and maximum age the service accepts."""

    keys: Sequence[PublicKey] = ()
    policy_digests: frozenset[str] = frozenset()
    verifier_ids: frozenset[str] = frozenset({VERIFIER_ID})
    max_age: timedelta = DEFAULT_MAX_AGE


@dataclass(frozen=True)
class CheckedSummary:
    """A summary that passed checks 1 to 6, with the statement's fields the webhook needs."""

    id: str
    subjects: tuple[str, ...]
    levels: tuple[str, ...]
    verifier_id: str
    policy_digest: str
    time_verified: datetime
    key_id: str
    envelope: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subjects": [f"sha256:{s}" for s in self.subjects],
            "verified_levels": list(self.levels),
            "verifier_id": self.verifier_id,
            "policy_digest": self.policy_digest,
            "time_verified": self.time_verified.isoformat(),
            "key_id": self.key_id,
        }


def stage_level(stage: str) -> str:
    """Return the verified level that names ``stage``, as :mod:`attestgate.policy.vsa` writes it."""
    return f"ATTESTGATE_STAGE_{stage.upper().replace('-', '_')}"


def summary_id(document: dict[str, Any]) -> str:
    """Return the id of an envelope: SHA-256 of its canonical JSON, hex."""
    return hashlib.sha256(dsse.encode_json(document)).hexdigest()


def _verified_statement(document: Any, trust: SummaryTrust) -> tuple[Statement, str]:
    if not isinstance(document, dict):
        raise SummaryError("the verification summary is not a JSON object (a DSSE envelope)")
    if len(dsse.encode_json(document)) > MAX_ENVELOPE_BYTES:
        raise SummaryError(f"the verification summary is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        envelope = dsse.parse_envelope(document)
    except EvidenceError as exc:
        raise SummaryError(f"the verification summary is not a DSSE envelope: {exc}") from exc
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise SummaryError(
            f"the envelope's payload type is {envelope.payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE}"
        )

    if not trust.keys:
        raise SummaryError(
            "the service trusts no verification summary signing keys",
            hint="start the service with --vsa-trusted-key FILE, the gate's public key",
        )
    key = dsse.verify_envelope(envelope, list(trust.keys))
    if key is None:
        raise SummaryError(
            "the verification summary's signature does not verify under any trusted VSA key",
            hint="sign it with the gate key whose public key the service trusts",
        )

    try:
        statement = parse_statement(envelope.payload, _LIMITS)
    except EvidenceError as exc:
        raise SummaryError(f"the verification summary's statement is invalid: {exc}") from exc
    return statement, key.key_id


def _time_verified(predicate: dict[str, Any], trust: SummaryTrust, now: datetime) -> datetime:
    text = predicate.get("timeVerified")
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        raise SummaryError(f"timeVerified {text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise SummaryError(f"timeVerified {text!r} has no time zone")
    if moment > now + CLOCK_SKEW:
        raise SummaryError(f"timeVerified {text} is in the future")
    if now - moment >= trust.max_age:
        days = trust.max_age.total_seconds() / 86400
        raise SummaryError(
            f"the verification summary expired: it was verified at {text}, more than "
            f"{days:g} days ago",
            hint="admit the artifact again and store its new verification summary",
        )
    return moment


def check_summary(document: Any, trust: SummaryTrust, now: datetime) -> CheckedSummary:
    """Run checks 1 to 6 on an envelope; raise :class:`SummaryError` on the first that fails."""
    statement, key_id = _verified_statement(document, trust)

    if statement.predicate_type != PREDICATE_TYPE:
        raise SummaryError(
            f"the statement's predicate type is {statement.predicate_type}, not {PREDICATE_TYPE}"
        )
    predicate = statement.predicate
    verifier = predicate.get("verifier")
    verifier_id = str(verifier.get("id", "")) if isinstance(verifier, dict) else ""
    if verifier_id not in trust.verifier_ids:
        raise SummaryError(f"the summary's verifier {verifier_id!r} is not an accepted verifier")

    result = predicate.get("verificationResult")
    if result != "PASSED":
        raise SummaryError(f"the summary's verificationResult is {result!r}, not PASSED")

    policy = predicate.get("policy")
    digest = policy.get("digest") if isinstance(policy, dict) else None
    policy_digest = str(digest.get("sha256", "")).lower() if isinstance(digest, dict) else ""
    if policy_digest not in trust.policy_digests:
        raise SummaryError(
            f"the summary was verified under policy sha256:{policy_digest or '(none)'}, "
            "which this service does not accept",
            hint="admit the artifact under the service's policy, or start the service with "
            "--vsa-policy-digest for that policy",
        )

    moment = _time_verified(predicate, trust, now)
    subjects = tuple(statement.sha256_digests())
    if not subjects:
        raise SummaryError("the summary names no subject with a sha256 digest")
    levels = predicate.get("verifiedLevels")
    return CheckedSummary(
        summary_id(document),
        subjects,
        tuple(str(level) for level in levels) if isinstance(levels, list) else (),
        verifier_id,
        policy_digest,
        moment,
        key_id,
        document,
    )


@dataclass(frozen=True)
class LaterDecision:
    """The gate's own latest decision on a digest and stage, when it is not allow."""

    decision: str
    decided_at: datetime


def check_for(
    checked: CheckedSummary, digest: str, stage: str, later: LaterDecision | None = None
) -> str | None:
    """Run checks 7 to 9; return why the summary does not cover the digest, or None.

    Check 9: when the gate's own latest decision on the digest and stage is
    not allow, only a summary verified after that decision counts, so that
    an older summary cannot override a block or quarantine.
    """
    hex_digest = digest.removeprefix("sha256:")
    if hex_digest not in checked.subjects:
        return f"it does not name {digest} as a subject"
    if stage_level(stage) not in checked.levels:
        return f"its verifiedLevels do not include {stage_level(stage)}"
    if later is not None and checked.time_verified <= later.decided_at:
        return (
            f"it was verified at {checked.time_verified.isoformat()}, before this gate's "
            f"{later.decision} decision at {later.decided_at.isoformat()}"
        )
    return None


class SummaryStore:
    """The ``verification_summaries`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_schema(engine)

    def add(
        self,
        document: Any,
        trust: SummaryTrust,
        *,
        submitted_by: str,
        audit: AuditLog,
        now: datetime | None = None,
    ) -> tuple[CheckedSummary, bool]:
        """Check and store a summary; return it and whether it was new.

        The ``vsa.add`` audit record is appended before the row is written.
        """
        moment = now or datetime.now(UTC)
        checked = check_summary(document, trust, moment)
        if self.envelope(checked.id) is not None:
            return checked, False
        body = {**checked.to_json(), "submitted_by": submitted_by}
        entry = audit.append("vsa.add", body, artifact_digest=f"sha256:{checked.subjects[0]}")
        values = {
            "id": checked.id,
            "envelope": json.dumps(document, sort_keys=True, separators=(",", ":")),
            "subjects": json.dumps(list(checked.subjects)),
            "verifier_id": checked.verifier_id[:200],
            "policy_digest": checked.policy_digest[:80],
            "time_verified": checked.time_verified.isoformat(),
            "key_id": checked.key_id,
            "submitted_by": submitted_by[:200],
            "submitted_at": moment.isoformat(timespec="microseconds"),
            "audit_seq": entry.seq,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(summaries_table.insert().values(**values))
        except sa.exc.IntegrityError:
            return checked, False  # another replica stored the same envelope first
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"verification summary {checked.id} could not be stored: {db_error(exc)}",
                hint="check that the database is writable, then post the summary again",
            ) from exc
        logger.info("stored verification summary %s from %s", checked.id, submitted_by)
        return checked, True

    def envelope(self, summary_id: str) -> dict[str, Any] | None:
        """Return the stored envelope with ``summary_id``, or None."""
        query = sa.select(summaries_table.c.envelope).where(summaries_table.c.id == summary_id)
        with self.engine.connect() as conn:
            text = conn.execute(query).scalar()
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    def check(
        self,
        summary_id: str,
        digest: str,
        stage: str,
        trust: SummaryTrust,
        now: datetime,
        later: LaterDecision | None = None,
    ) -> str | None:
        """Check the stored summary again for ``digest`` and ``stage``; return why not, or None."""
        document = self.envelope(summary_id)
        if document is None:
            return "no verification summary with that id is stored"
        try:
            checked = check_summary(document, trust, now)
        except SummaryError as exc:
            return exc.message
        return check_for(checked, digest, stage, later)
