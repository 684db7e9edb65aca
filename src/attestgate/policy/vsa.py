"""The SLSA Verification Summary Attestation (VSA) the gate signs for a decision.

The statement follows the SLSA VSA v1 predicate (slsa.dev/verification_summary/v1):

- ``subject``: the artifact's name and SHA-256 digest (the OpenSSF Model
  Signing root digest for a directory);
- ``verifier.id``: :data:`VERIFIER_ID`, with the gate's version;
- ``policy``: the policy's URI and the SHA-256 of its bytes;
- ``verificationResult``: ``PASSED`` only when the policy itself decided
  allow. A quarantine, a block, and a decision that audit mode reported as
  allow are all ``FAILED``, because a downstream system must not trust an
  artifact the policy did not pass;
- ``verifiedLevels``: on PASSED, the SLSA build level the evidence showed
  (``SLSA_BUILD_LEVEL_N``) and two values of attestgate's own,
  ``ATTESTGATE_STAGE_<STAGE>`` and ``ATTESTGATE_TIER_<TIER>``, so that a
  consumer can require, say, ``ATTESTGATE_STAGE_DEPLOYMENT`` as it would a
  SLSA level; on FAILED, ``FAILED``.

VSA has only PASSED and FAILED, so the predicate also carries an extension
field named by the URI :data:`DECISION_FIELD` (the in-toto parsing rules
let producers add fields named by URIs) with the decision (allow,
quarantine or block), what was reported, the enforcement mode, the stage,
the tier, the decision record's id and the rule ids of its reasons.

The statement is signed with the gate's key as a DSSE envelope
(``application/vnd.in-toto+json``), the same way ``attestgate attest``
signs claims.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from attestgate._version import __version__

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://attestgate.dev/verifier/attestgate"
DECISION_FIELD = "https://attestgate.dev/vsa/decision/v1"


def _time(text: str) -> str:
    moment = datetime.fromisoformat(text)
    return moment.isoformat().replace("+00:00", "Z")


def _policy_uri(source: str) -> str:
    if source.startswith("builtin:"):
        return f"attestgate:{source}@{__version__}"
    return Path(source).resolve().as_uri()


def _resource_uri(artifact: dict[str, Any]) -> str:
    reference = artifact.get("reference")
    if isinstance(reference, dict) and reference.get("uri"):
        return str(reference["uri"])
    return Path(str(artifact.get("path", "artifact"))).resolve().as_uri()


def build_vsa(record: dict[str, Any]) -> dict[str, Any]:
    """Return the in-toto statement that summarises the decision ``record``."""
    artifact = record["artifact"]
    evaluation = record.get("evaluation") or {}
    enforcement = evaluation.get("enforcement") or {}
    decided = str(enforcement.get("decision", record["decision"]))
    tier = str((evaluation.get("tier") or {}).get("name", "standard"))
    stage = str(record["stage"])
    passed = decided == "allow"

    if passed:
        level = int(((evaluation.get("evidence") or {}).get("slsa") or {}).get("level", 0))
        levels = [
            f"SLSA_BUILD_LEVEL_{level}",
            f"ATTESTGATE_STAGE_{stage.upper().replace('-', '_')}",
            f"ATTESTGATE_TIER_{tier.upper()}",
        ]
    else:
        levels = ["FAILED"]

    name = Path(str(artifact.get("path", "artifact"))).name or "artifact"
    predicate: dict[str, Any] = {
        "verifier": {"id": VERIFIER_ID, "version": {"attestgate": __version__}},
        "timeVerified": _time(str(record["created_at"])),
        "resourceUri": _resource_uri(artifact),
        "policy": {
            "uri": _policy_uri(str(record["policy"]["source"])),
            "digest": {"sha256": record["policy"]["digest"]["sha256"]},
        },
        "verificationResult": "PASSED" if passed else "FAILED",
        "verifiedLevels": levels,
        "slsaVersion": "1.0",
        DECISION_FIELD: {
            "decision": decided,
            "reported": record["decision"],
            "enforcement": str(enforcement.get("mode", "enforce")),
            "stage": stage,
            "tier": tier,
            "record": record["id"],
            "rules": sorted({str(r["rule"]) for r in record.get("reasons", [])}),
        },
    }
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": name, "digest": {"sha256": artifact["digest"]["sha256"]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_vsa(record: dict[str, Any], key: Path) -> str:
    """Return the VSA for ``record`` signed with the private key ``key``, as one JSON line.

    The key's password, if it has one, is read from ATTESTGATE_KEY_PASSWORD.
    """
    from attestgate.evidence.produce import sign_statement

    return sign_statement(build_vsa(record), key=key)
