"""SLSA Provenance v1 and Verification Summary checks.

Provenance binds an artifact to the builder that claims to have made it. The
claim is only worth as much as the signer: a provenance whose
``runDetails.builder.id`` names a builder other than the identity in the
signing certificate is forged, however valid the signature (slsa-verifier
rejects it for the same reason).
"""

from __future__ import annotations

from typing import Any

from attestgate.evidence.interface import (
    CLAIM_CONTRADICTED,
    FORGED_PROVENANCE,
    SCHEMA_INVALID,
    Signer,
    finding,
)
from attestgate.evidence.intoto import Statement
from attestgate.evidence.schema import schema_errors
from attestgate.findings import Finding, Severity

SCHEMA = "slsa-provenance.v1.json"
MAX_DEPENDENCIES = 50


def check_provenance(
    statement: Statement,
    signer: Signer | None,
    signer_subjects: list[str],
    where: str,
) -> tuple[list[Finding], dict[str, Any]]:
    """Check a SLSA Provenance v1 predicate and bind its builder to the signer."""
    predicate = statement.predicate
    errors = schema_errors(SCHEMA, predicate)
    if errors:
        return [
            finding(
                SCHEMA_INVALID,
                Severity.HIGH,
                where,
                f"the SLSA provenance in {where} breaks the SLSA Provenance v1 format: "
                + "; ".join(errors),
                "Ask the builder for provenance in the SLSA Provenance v1 format.",
            )
        ], {}

    builder_id = str(predicate["runDetails"]["builder"]["id"])
    facts = _facts(predicate)
    findings: list[Finding] = []
    if signer is not None and signer.kind in ("sigstore", "certificate"):
        subjects = signer_subjects or [signer.identity]
        facts["builder_binding"] = "certificate identity"
        if builder_id not in subjects:
            findings.append(
                finding(
                    FORGED_PROVENANCE,
                    Severity.CRITICAL,
                    where,
                    f"the provenance in {where} claims builder {builder_id}, but it was "
                    f"signed by {', '.join(subjects) or 'an unnamed certificate'}",
                    "Do not use this artifact: a workflow other than the builder it names "
                    "produced the provenance. Fetch the artifact and its provenance from the "
                    "builder's own release.",
                    builder_id=builder_id,
                    signer=subjects,
                )
            )
    elif signer is not None and signer.kind == "key":
        # A key names no builder, so trusting the key is trusting every
        # builder id it signs.
        facts["builder_binding"] = "trusted key"
    return findings, facts


def _facts(predicate: dict[str, Any]) -> dict[str, Any]:
    definition = predicate["buildDefinition"]
    run = predicate["runDetails"]
    external = definition.get("externalParameters") or {}
    dependencies = [
        {"uri": d.get("uri", ""), "digest": d.get("digest", {})}
        for d in definition.get("resolvedDependencies") or []
        if isinstance(d, dict)
    ]
    facts: dict[str, Any] = {
        "builder_id": run["builder"]["id"],
        "build_type": definition["buildType"],
        "source_repository": _source(external, dependencies),
        "resolved_dependencies": dependencies[:MAX_DEPENDENCIES],
    }
    invocation = (run.get("metadata") or {}).get("invocationId")
    if invocation:
        facts["invocation_id"] = invocation
    return facts


def _source(external: dict[str, Any], dependencies: list[dict[str, Any]]) -> str:
    workflow = external.get("workflow")
    if isinstance(workflow, dict) and isinstance(workflow.get("repository"), str):
        return str(workflow["repository"])
    for key in ("source", "repository"):
        value = external.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("uri"), str):
            return str(value["uri"])
    for dependency in dependencies:
        uri = str(dependency.get("uri", ""))
        if uri.startswith("git+"):
            return uri
    return ""


def check_verification_summary(
    statement: Statement, where: str
) -> tuple[list[Finding], dict[str, Any]]:
    """Record a SLSA verification summary and report one whose result is not PASSED."""
    predicate = statement.predicate
    verifier = predicate.get("verifier") if isinstance(predicate.get("verifier"), dict) else {}
    facts = {
        "verifier_id": str((verifier or {}).get("id", "")),
        "verification_result": str(predicate.get("verificationResult", "")),
        "verified_levels": predicate.get("verifiedLevels", []),
        "time_verified": str(predicate.get("timeVerified", "")),
    }
    if facts["verification_result"] == "PASSED":
        return [], facts
    return [
        finding(
            CLAIM_CONTRADICTED,
            Severity.HIGH,
            where,
            f"the verification summary in {where} records the result "
            f"{facts['verification_result'] or '(none)'}, not PASSED",
            "Do not promote the artifact until its verifier reports PASSED.",
        )
    ], facts
