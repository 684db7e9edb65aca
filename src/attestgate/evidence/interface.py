"""Value types shared by the evidence verifiers, and the rule ids they report.

One piece of evidence is one signed or unsigned document: a model signature,
a Sigstore bundle, a DSSE envelope, an in-toto statement or a CycloneDX
document (a JSON Lines file contains one piece per line). Verifying a piece
yields a :class:`Piece`; all pieces for one artifact make an
:class:`EvidenceReport`, whose findings go to the policy like any scanner's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from attestgate.errors import AttestgateError
from attestgate.findings import Finding, Severity

CHECK = "evidence"
VERSION = "1"

# Rule ids. The default policy maps critical and high to block and medium to
# quarantine, so each severity below is chosen for the action it leads to.
PROVENANCE_MISSING = "provenance.missing"  # medium: no evidence at all
INVALID_SIGNATURE = "evidence.invalid-signature"  # critical or high
DIGEST_MISMATCH = "evidence.digest-mismatch"  # critical
UNTRUSTED_SIGNER = "evidence.untrusted-signer"  # medium
FORGED_PROVENANCE = "evidence.forged-provenance"  # critical
CLAIM_CONTRADICTED = "evidence.claim-contradicted"  # high
MISSING_CLAIM = "evidence.missing-claim"  # medium
UNSIGNED_FILE = "evidence.unsigned-file"  # high
IGNORED_FILE = "evidence.ignored-file"  # medium
SCHEMA_INVALID = "evidence.schema-invalid"  # high
MALFORMED = "evidence.malformed"  # high
UNSIGNED = "evidence.unsigned"  # medium
LIMIT_EXCEEDED = "evidence.limit-exceeded"  # medium
UNKNOWN_PREDICATE = "evidence.unknown-predicate"  # info

# Media and predicate types this package reads and writes.
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
# Statement v0.1 is still written by older producers; its fields are the same.
STATEMENT_TYPES = frozenset({STATEMENT_V1, "https://in-toto.io/Statement/v0.1"})
OMS_PREDICATE = "https://model_signing/signature/v1.0"
OMS_PREDICATE_V0 = "https://model_signing/Digests/v0.1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SLSA_VSA_V1 = "https://slsa.dev/verification_summary/v1"
TRAINING_CLAIMS_V1 = "https://attestgate.dev/training-claims/v1"
CYCLONEDX_PREDICATE = "https://cyclonedx.org/bom"


class EvidenceError(AttestgateError):
    """Evidence or trust material could not be read, parsed or produced."""


@dataclass(frozen=True)
class EvidenceLimits:
    """Bounds on evidence input, so that a hostile evidence file stays cheap to reject."""

    # One evidence file; model signatures of very large sharded models list
    # one resource per shard and stay far below this.
    max_file_bytes: int = 64 * 1024 * 1024
    max_pieces_per_file: int = 256
    max_evidence_files: int = 256
    max_subjects: int = 100_000
    max_resources: int = 1_000_000
    # Files outside the identify step's reports that a model signature may
    # name (paths the walk leaves out, such as .gitattributes) and that are
    # hashed here instead.
    max_extra_file_bytes: int = 16 * 1024 * 1024


class Status(enum.Enum):
    """How far a piece of evidence got, from the worst finding it produced."""

    VERIFIED = "verified"  # valid, trusted and bound to the artifact
    INCOMPLETE = "incomplete"  # nothing contradicts it, but trust or coverage is missing
    FAILED = "failed"  # invalid, mismatched, forged or contradicted

    @classmethod
    def from_findings(cls, findings: list[Finding]) -> Status:
        worst = max((f.severity for f in findings), default=Severity.INFO)
        if worst >= Severity.HIGH:
            return cls.FAILED
        if worst >= Severity.MEDIUM:
            return cls.INCOMPLETE
        return cls.VERIFIED


@dataclass(frozen=True)
class Signer:
    """The signer of a piece of evidence, and whether the trust configuration trusts it.

    ``kind`` is ``key``, ``certificate`` (a certificate chain that is not
    Sigstore's), ``sigstore`` (a Fulcio certificate from keyless signing) or
    ``none`` for an unsigned document. ``identity`` is the key id (SHA-256 of
    the DER public key, hex) or the certificate's subject alternative name.
    """

    kind: str
    identity: str = ""
    issuer: str = ""
    trusted: bool = False
    trusted_by: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "identity": self.identity}
        if self.issuer:
            out["issuer"] = self.issuer
        out["trusted"] = self.trusted
        if self.trusted_by:
            out["trusted_by"] = self.trusted_by
        return out

    def describe(self) -> str:
        if self.kind == "key":
            return f"key {self.identity}"
        if self.kind == "none":
            return "nobody (unsigned)"
        issuer = f" issued by {self.issuer}" if self.issuer else ""
        return f"{self.kind} identity {self.identity}{issuer}"


@dataclass
class Piece:
    """The verification result for one piece of evidence."""

    source: str
    kind: str  # model-signature, sigstore-bundle, dsse-envelope, statement, cyclonedx
    signature: str = "unchecked"  # valid, invalid, unverifiable, unsigned
    signer: Signer | None = None
    bound: bool = False
    predicate_type: str = ""
    claims: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return Status.from_findings(self.findings)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "kind": self.kind,
            "status": self.status.value,
            "signature": self.signature,
            "bound": self.bound,
        }
        if self.signer is not None:
            out["signer"] = self.signer.to_json()
        if self.predicate_type:
            out["predicate_type"] = self.predicate_type
        if self.claims:
            out["claims"] = self.claims
        if self.facts:
            out["facts"] = self.facts
        out["rules"] = sorted({f.rule for f in self.findings})
        return out


@dataclass
class EvidenceReport:
    """Every piece of evidence checked for one artifact, and what it adds up to."""

    pieces: list[Piece] = field(default_factory=list)
    # Findings about the evidence as a whole (missing evidence or claims);
    # each piece carries its own findings.
    findings: list[Finding] = field(default_factory=list)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    trust: dict[str, Any] = field(default_factory=dict)

    @property
    def all_findings(self) -> list[Finding]:
        out = list(self.findings)
        for piece in self.pieces:
            out.extend(piece.findings)
        return out

    @property
    def status(self) -> Status:
        """The worst status over the pieces; incomplete when there is no piece at all."""
        if not self.pieces:
            return Status.INCOMPLETE
        order = [Status.VERIFIED, Status.INCOMPLETE, Status.FAILED]
        return max((p.status for p in self.pieces), key=order.index)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "pieces": [p.to_json() for p in self.pieces],
            "claims": self.claims,
            "trust": self.trust,
        }


def finding(
    rule: str,
    severity: Severity,
    where: str,
    message: str,
    remediation: str,
    **details: Any,
) -> Finding:
    """Build a finding of the evidence check."""
    return Finding(rule, severity, where, message, remediation, check=CHECK, details=details)
