"""Facts the policy establishes itself, and what the evidence section of a record adds up to.

The evidence check reports each piece of evidence (its signature, signer,
binding, predicate and facts) and which claims the pieces cover. The policy
reads that report, never the evidence files, and sums it up here:

- signed: some piece has a valid signature from a trusted signer, binds the
  artifact's digest and did not fail;
- claims: a training or release claim counts only when it is complete and
  comes from such a signed, trusted piece;
- SLSA build level, following the SLSA v1.0 build track as far as a
  verifier can observe it. Level 1 needs SLSA provenance that binds the
  artifact, and level 2 needs that provenance signed by a trusted signer.
  Level 3 needs, in addition, a builder id that the policy lists under
  ``require.slsa.builders``, because a verifier cannot see how hardened a
  build platform is. A trusted, bound verification summary with result
  PASSED counts for the levels it lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.policy.model import DocPath

CHECK = "policy"
# Predicate types (slsa.dev). The evidence package defines them too, but
# importing it here would import the decision record, which imports the policy.
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SLSA_VSA_V1 = "https://slsa.dev/verification_summary/v1"
_VSA_LEVEL = re.compile(r"^SLSA_BUILD_LEVEL_([0-3])$")


@dataclass(frozen=True)
class PolicyFact:
    """A finding the policy itself made, with the entry that requires it.

    ``action`` is the section's own action (``formats.action``,
    ``limits.action``, a custom rule's ``action``); None maps the finding
    through the rules table, the outcomes and the severities like any other.
    """

    finding: Finding
    path: DocPath
    source: str
    action: str | None = None


def policy_finding(
    rule: str, severity: Severity, where: str, message: str, remediation: str, **details: Any
) -> Finding:
    return Finding(rule, severity, where, message, remediation, check=CHECK, details=details)


def matches(matcher: Any, value: str) -> bool:
    """Return whether ``value`` equals a string matcher or contains a ``{regexp: ...}`` match."""
    if isinstance(matcher, Mapping):
        return bool(re.search(str(matcher.get("regexp", "")), value))
    return str(matcher) == value


def describe_matcher(matcher: Any) -> str:
    if isinstance(matcher, Mapping):
        return f"/{matcher.get('regexp', '')}/"
    return str(matcher)


def _signer(piece: Mapping[str, Any]) -> Mapping[str, Any]:
    signer = piece.get("signer")
    return signer if isinstance(signer, Mapping) else {}


def trusted_piece(piece: Mapping[str, Any]) -> bool:
    """Return whether a piece is signed by a trusted signer, binds the artifact and did not fail."""
    return (
        piece.get("signature") == "valid"
        and bool(piece.get("bound"))
        and bool(_signer(piece).get("trusted"))
        and piece.get("status") != "failed"
    )


def describe_signer(piece: Mapping[str, Any]) -> str:
    signer = _signer(piece)
    kind = str(signer.get("kind", "unknown"))
    identity = str(signer.get("identity", ""))
    issuer = str(signer.get("issuer", ""))
    if kind == "key":
        return f"key {identity}"
    return f"{kind} identity {identity}" + (f" issued by {issuer}" if issuer else "")


@dataclass
class EvidenceSummary:
    """The summary of a decision record's evidence section, for requirements and CEL."""

    status: str = "incomplete"
    signed: bool = False
    signers: list[str] = field(default_factory=list)
    untrusted_signers: list[str] = field(default_factory=list)
    claims: dict[str, dict[str, str]] = field(default_factory=dict)
    trusted_claims: dict[str, dict[str, bool]] = field(default_factory=dict)
    slsa_level: int = 0
    slsa_basis: str = "no SLSA provenance binds the artifact"
    builders: list[str] = field(default_factory=list)
    trusted_builders: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "signed": self.signed,
            "signers": self.signers,
            "untrusted_signers": self.untrusted_signers,
            "claims": self.claims,
            "trusted_claims": self.trusted_claims,
            "slsa": {
                "level": self.slsa_level,
                "basis": self.slsa_basis,
                "builders": self.builders,
                "trusted_builders": self.trusted_builders,
            },
        }


def _pieces(evidence: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    pieces = (evidence or {}).get("pieces") or []
    return [p for p in pieces if isinstance(p, Mapping)]


def summarize_evidence(
    evidence: Mapping[str, Any] | None, builders: Sequence[Any] = ()
) -> EvidenceSummary:
    """Sum up the record's evidence section; ``builders`` are the policy's trusted builder ids."""
    summary = EvidenceSummary(status=str((evidence or {}).get("status", "incomplete")))
    pieces = _pieces(evidence)
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for piece in pieces:
        by_source.setdefault(str(piece.get("source", "")), []).append(piece)
        if trusted_piece(piece):
            summary.signed = True
            summary.signers.append(describe_signer(piece))
        elif piece.get("signature") == "valid" and not _signer(piece).get("trusted"):
            summary.untrusted_signers.append(describe_signer(piece))
    summary.signers = sorted(set(summary.signers))
    summary.untrusted_signers = sorted(set(summary.untrusted_signers))

    claims = (evidence or {}).get("claims") or {}
    for claim_set in ("training", "release"):
        entries = claims.get(claim_set) or {}
        summary.claims[claim_set] = {}
        summary.trusted_claims[claim_set] = {}
        for claim, entry in entries.items():
            status = (
                str(entry.get("status", "missing")) if isinstance(entry, Mapping) else "missing"
            )
            source = str(entry.get("source", "")) if isinstance(entry, Mapping) else ""
            summary.claims[claim_set][str(claim)] = status
            trusted = any(trusted_piece(p) for p in by_source.get(source, []))
            summary.trusted_claims[claim_set][str(claim)] = status == "complete" and trusted

    _slsa_level(summary, pieces, builders)
    return summary


def _slsa_level(
    summary: EvidenceSummary, pieces: list[Mapping[str, Any]], builders: Sequence[Any]
) -> None:
    for piece in pieces:
        if not piece.get("bound") or piece.get("status") == "failed":
            continue
        facts = piece.get("facts") if isinstance(piece.get("facts"), Mapping) else {}
        facts = facts or {}
        predicate = piece.get("predicate_type")
        if predicate == SLSA_PROVENANCE_V1:
            builder = str(facts.get("builder_id", ""))
            summary.builders.append(builder)
            level, basis = 1, f"unsigned or untrusted SLSA provenance from builder {builder}"
            if trusted_piece(piece):
                summary.trusted_builders.append(builder)
                level, basis = (
                    2,
                    f"SLSA provenance from builder {builder} signed by a trusted signer",
                )
                if any(matches(m, builder) for m in builders):
                    level, basis = 3, f"SLSA provenance from the trusted builder {builder}"
            if level > summary.slsa_level:
                summary.slsa_level, summary.slsa_basis = level, basis
        elif predicate == SLSA_VSA_V1 and trusted_piece(piece):
            if facts.get("verification_result") != "PASSED":
                continue
            for entry in facts.get("verified_levels") or []:
                found = _VSA_LEVEL.match(str(entry))
                if found and int(found.group(1)) > summary.slsa_level:
                    summary.slsa_level = int(found.group(1))
                    summary.slsa_basis = (
                        f"a trusted verification summary from {facts.get('verifier_id', '?')}"
                    )
    summary.builders = sorted(set(summary.builders))
    summary.trusted_builders = sorted(set(summary.trusted_builders))
