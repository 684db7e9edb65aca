"""Evidence requirements: signature, training and release claims, SLSA level and builder."""

from __future__ import annotations

from typing import Any

from attestgate.findings import Severity
from attestgate.policy import catalogue
from attestgate.policy.facts import (
    EvidenceSummary,
    PolicyFact,
    describe_matcher,
    matches,
    policy_finding,
)
from attestgate.policy.model import BY_REQUIREMENT
from attestgate.policy.profile import Profile, Setting

# The claim ids of the training-claims predicate and of the ML-BOM's release
# claims, as the evidence check reports them (a test keeps the lists equal).
TRAINING_CLAIMS = (
    "data-lineage",
    "code-lineage",
    "environment",
    "hyperparameters",
    "compute",
    "run-metadata",
)
RELEASE_CLAIMS = (
    "identity",
    "format-guarantees",
    "embedded-code",
    "static-scan",
    "evaluation",
    "deployment-requirements",
)

_SIGN_HOW = (
    "Ask the producer to sign this exact artifact with a key or identity that the policy "
    "trusts for this stage (the stage's signers or the policy's trust section), for example "
    "with `attestgate sign PATH --key FILE`, and pass the signature with --evidence or place "
    "it next to the artifact."
)


def required_claims(value: Any, claim_set: str) -> list[str]:
    everything = TRAINING_CLAIMS if claim_set == "training" else RELEASE_CLAIMS
    if value == "all":
        return list(everything)
    return [str(claim) for claim in value or []]


def check_requirements(
    profile: Profile, summary: EvidenceSummary, where: str, digest: str
) -> list[PolicyFact]:
    """Return one fact per unmet requirement of ``profile``."""
    facts: list[PolicyFact] = []
    scope = f"stage {profile.stage} (tier {profile.tier})"
    require = profile.require

    signature = require.get("signature")
    if signature is not None and signature.value and not summary.signed:
        seen = (
            f"; the valid signatures present are from {', '.join(summary.untrusted_signers)}, "
            "whom this stage does not trust"
            if summary.untrusted_signers
            else ""
        )
        message = (
            f"{scope} requires a valid signature from a trusted signer over "
            f"sha256:{digest}, and no evidence provides one{seen}"
        )
        facts.append(_fact(catalogue.REQUIRE_SIGNATURE, where, message, _SIGN_HOW, signature))

    for key, claim_set, rule in (
        ("trainingClaims", "training", catalogue.REQUIRE_TRAINING_CLAIM),
        ("releaseClaims", "release", catalogue.REQUIRE_RELEASE_CLAIM),
    ):
        setting = require.get(key)
        if setting is None:
            continue
        fact = _claims_fact(setting, claim_set, rule, summary, scope, where)
        if fact is not None:
            facts.append(fact)

    slsa = require.get("slsa")
    if slsa is not None and isinstance(slsa.value, dict):
        facts.extend(_slsa_facts(slsa, summary, scope, where))
    return facts


def _fact(rule: str, where: str, message: str, remediation: str, setting: Setting) -> PolicyFact:
    finding = policy_finding(rule, Severity.MEDIUM, where, message, remediation)
    return PolicyFact(finding, setting.path, BY_REQUIREMENT)


def _claims_fact(
    setting: Setting,
    claim_set: str,
    rule: str,
    summary: EvidenceSummary,
    scope: str,
    where: str,
) -> PolicyFact | None:
    wanted = required_claims(setting.value, claim_set)
    trusted = summary.trusted_claims.get(claim_set, {})
    statuses = summary.claims.get(claim_set, {})
    unmet = [claim for claim in wanted if not trusted.get(claim)]
    if not unmet:
        return None
    details = []
    for claim in unmet:
        status = statuses.get(claim, "missing")
        if status == "complete":
            details.append(f"{claim} (complete, but not from signed evidence of a trusted signer)")
        else:
            details.append(f"{claim} ({status})")
    command = "attest training" if claim_set == "training" else "attest release"
    message = (
        f"{scope} requires complete {claim_set} claims from signed, trusted evidence; "
        f"unmet: {', '.join(details)}"
    )
    remediation = (
        f"Ask the producer to record the missing {claim_set} claims with `attestgate {command} "
        "... --key FILE`, signed by a signer this stage trusts, and pass the output with "
        "--evidence."
    )
    fact = _fact(rule, where, message, remediation, setting)
    fact.finding.details.update({"claim_set": claim_set, "unmet": unmet})
    return fact


def _slsa_facts(
    setting: Setting, summary: EvidenceSummary, scope: str, where: str
) -> list[PolicyFact]:
    facts: list[PolicyFact] = []
    wanted = setting.value
    builders = wanted.get("builders") or []
    level = int(wanted.get("level", 0))
    if level and summary.slsa_level < level:
        message = (
            f"{scope} requires SLSA build level {level}, and the evidence shows level "
            f"{summary.slsa_level} ({summary.slsa_basis})"
        )
        remediation = (
            "Build the artifact on a build platform that emits signed SLSA provenance (a "
            "trusted builder for level 3), and pass the provenance with --evidence."
        )
        path = (*setting.path, "level")
        finding = policy_finding(
            catalogue.REQUIRE_SLSA_LEVEL, Severity.MEDIUM, where, message, remediation
        )
        facts.append(PolicyFact(finding, path, BY_REQUIREMENT))
    if builders and not any(
        matches(matcher, builder) for matcher in builders for builder in summary.trusted_builders
    ):
        names = ", ".join(describe_matcher(m) for m in builders)
        found = ", ".join(summary.builders) or "none"
        message = (
            f"{scope} requires signed SLSA provenance from one of the builders {names}; "
            f"builder ids found in provenance: {found}"
        )
        remediation = (
            "Build the artifact with one of the listed builders, or ask the policy owners to "
            "add the builder that produced it."
        )
        finding = policy_finding(
            catalogue.REQUIRE_SLSA_BUILDER, Severity.MEDIUM, where, message, remediation
        )
        facts.append(PolicyFact(finding, (*setting.path, "builders"), BY_REQUIREMENT))
    return facts
