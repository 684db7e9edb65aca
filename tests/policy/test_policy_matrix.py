"""The whole decision matrix: stage x tier x evidence state x finding severity.

Two hand-written tables state what the matrix policy below means: the action
and reasons each evidence state leads to per stage and tier, and the action
each finding severity leads to. Every combination must decide the stricter
of the two, with exactly the union of their reasons.
"""

from __future__ import annotations

import itertools

import pytest
from policy_helpers import ARTIFACT, evidence, finding, policy_from

from attestgate.findings import Severity
from attestgate.policy import Action, evaluate, load_default_policy

MATRIX_POLICY = """\
apiVersion: attestgate/v2
kind: Policy
metadata:
  name: matrix
stages:
  training:
    severities: {critical: block, high: quarantine, medium: allow, low: allow, info: allow}
    outcomes: {insufficientEvidence: allow, checkError: quarantine}
    tiers:
      critical:
        severities: {high: block, medium: quarantine}
        outcomes: {insufficientEvidence: quarantine}
        require: {signature: true}
  fine-tuning:
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
    outcomes: {insufficientEvidence: quarantine}
    require: {signature: true}
    tiers:
      low:
        outcomes: {insufficientEvidence: allow}
        require: {signature: false}
  deployment:
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
    outcomes: {insufficientEvidence: quarantine}
    require:
      signature: true
      trainingClaims: all
      releaseClaims: [identity]
    tiers:
      low:
        require: {trainingClaims: []}
      critical:
        severities: {low: quarantine}
        outcomes: {insufficientEvidence: block}
        require:
          slsa: {level: 2}
"""

A, Q, B = Action.ALLOW, Action.QUARANTINE, Action.BLOCK
STAGES = ("training", "fine-tuning", "deployment")
TIERS = ("low", "standard", "critical")
STATES = ("none", "untrusted", "signed", "attested", "forged")
SEVERITIES = (None, Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)

SIG = "policy.require.signature"
TRAIN = "policy.require.training-claim"
REL = "policy.require.release-claim"
SLSA = "policy.require.slsa-level"
MISSING = "provenance.missing"
UNTRUSTED = "evidence.untrusted-signer"
FORGED = "evidence.forged-provenance"

_LENIENT = {
    "none": (A, set()),
    "untrusted": (A, set()),
    "signed": (A, set()),
    "attested": (A, set()),
    "forged": (B, {FORGED}),
}
_SIGNATURE = {
    "none": (Q, {MISSING, SIG}),
    "untrusted": (Q, {UNTRUSTED, SIG}),
    "signed": (A, set()),
    "attested": (A, set()),
    "forged": (B, {FORGED, SIG}),
}

# (stage, tier) -> evidence state -> (action, reason rules).
EVIDENCE_TABLE = {
    ("training", "low"): _LENIENT,
    ("training", "standard"): _LENIENT,
    ("training", "critical"): _SIGNATURE,
    ("fine-tuning", "low"): _LENIENT,
    ("fine-tuning", "standard"): _SIGNATURE,
    ("fine-tuning", "critical"): _SIGNATURE,
    ("deployment", "low"): {
        "none": (Q, {MISSING, SIG, REL}),
        "untrusted": (Q, {UNTRUSTED, SIG, REL}),
        "signed": (Q, {REL}),
        "attested": (A, set()),
        "forged": (B, {FORGED, SIG, REL}),
    },
    ("deployment", "standard"): {
        "none": (Q, {MISSING, SIG, TRAIN, REL}),
        "untrusted": (Q, {UNTRUSTED, SIG, TRAIN, REL}),
        "signed": (Q, {TRAIN, REL}),
        "attested": (A, set()),
        "forged": (B, {FORGED, SIG, TRAIN, REL}),
    },
    ("deployment", "critical"): {
        "none": (B, {MISSING, SIG, TRAIN, REL, SLSA}),
        "untrusted": (B, {UNTRUSTED, SIG, TRAIN, REL, SLSA}),
        "signed": (B, {TRAIN, REL, SLSA}),
        "attested": (A, set()),
        "forged": (B, {FORGED, SIG, TRAIN, REL, SLSA}),
    },
}

_TRAINING_SEVERITY = {Severity.INFO: A, Severity.LOW: A, Severity.MEDIUM: A, Severity.HIGH: Q}
_STRICT_SEVERITY = {Severity.INFO: A, Severity.LOW: A, Severity.MEDIUM: Q, Severity.HIGH: B}

# (stage, tier) -> finding severity -> action (critical always blocks).
SEVERITY_TABLE = {
    ("training", "low"): _TRAINING_SEVERITY,
    ("training", "standard"): _TRAINING_SEVERITY,
    ("training", "critical"): _STRICT_SEVERITY,
    ("fine-tuning", "low"): _STRICT_SEVERITY,
    ("fine-tuning", "standard"): _STRICT_SEVERITY,
    ("fine-tuning", "critical"): _STRICT_SEVERITY,
    ("deployment", "low"): _STRICT_SEVERITY,
    ("deployment", "standard"): _STRICT_SEVERITY,
    ("deployment", "critical"): {**_STRICT_SEVERITY, Severity.LOW: Q},
}
SCAN_RULE = "safetensors.overlap"


def expected(stage, tier, state, severity):
    action, rules = EVIDENCE_TABLE[(stage, tier)][state]
    rules = set(rules)
    if severity is not None:
        table = SEVERITY_TABLE[(stage, tier)]
        severity_action = B if severity is Severity.CRITICAL else table[severity]
        action = max(action, severity_action)
        if severity_action is not A:
            rules.add(SCAN_RULE)
    return action, rules


def line_of(text):
    return MATRIX_POLICY.splitlines().index(text) + 1


@pytest.fixture(scope="module")
def matrix_policy():
    return policy_from(MATRIX_POLICY)


CASES = list(itertools.product(STAGES, TIERS, STATES, SEVERITIES))


@pytest.mark.parametrize(("stage", "tier", "state", "severity"), CASES)
def test_matrix(matrix_policy, stage, tier, state, severity):
    section, findings = evidence(state)
    if severity is not None:
        findings = [*findings, finding(SCAN_RULE, severity, "model.safetensors")]
    decision = evaluate(
        matrix_policy, stage, findings, tier=tier, evidence=section, artifact=ARTIFACT
    )
    action, rules = expected(stage, tier, state, severity)
    assert decision.action is action
    assert {r.rule for r in decision.reasons} == rules


@pytest.mark.parametrize(("stage", "tier", "state", "severity"), CASES[::7])
def test_matrix_audit_mode(stage, tier, state, severity):
    policy = policy_from(MATRIX_POLICY.replace("stages:\n", "enforcement: audit\nstages:\n", 1))
    section, findings = evidence(state)
    if severity is not None:
        findings = [*findings, finding(SCAN_RULE, severity, "model.safetensors")]
    decision = evaluate(policy, stage, findings, tier=tier, evidence=section, artifact=ARTIFACT)
    action, rules = expected(stage, tier, state, severity)
    assert decision.action is Action.ALLOW
    assert decision.decided is action
    assert decision.evaluation["enforcement"] == {
        "mode": "audit",
        "decision": action.label,
        "reported": "allow",
    }
    assert {r.rule for r in decision.reasons} == rules


# The built-in policy: the same for every tier and stage.
DEFAULT_EVIDENCE = {
    "none": (Q, {MISSING}),
    "untrusted": (Q, {UNTRUSTED}),
    "signed": (A, set()),
    "attested": (A, set()),
    "forged": (B, {FORGED}),
}
DEFAULT_SEVERITY = {
    None: A,
    Severity.INFO: A,
    Severity.LOW: A,
    Severity.MEDIUM: Q,
    Severity.HIGH: B,
    Severity.CRITICAL: B,
}


@pytest.mark.parametrize(("stage", "tier", "state", "severity"), CASES)
def test_default_policy_matrix(stage, tier, state, severity):
    section, findings = evidence(state)
    if severity is not None:
        findings = [*findings, finding(SCAN_RULE, severity, "model.safetensors")]
    decision = evaluate(
        load_default_policy(), stage, findings, tier=tier, evidence=section, artifact=ARTIFACT
    )
    action, rules = DEFAULT_EVIDENCE[state]
    severity_action = DEFAULT_SEVERITY[severity]
    expected_rules = set(rules) | ({SCAN_RULE} if severity_action is not A else set())
    assert decision.action is max(action, severity_action)
    assert {r.rule for r in decision.reasons} == expected_rules


def test_reason_names_tier_entry(matrix_policy):
    decision = evaluate(
        matrix_policy,
        "training",
        [finding(SCAN_RULE, Severity.MEDIUM)],
        tier="critical",
        artifact=ARTIFACT,
    )
    [reason] = [r for r in decision.reasons if r.rule == SCAN_RULE]
    assert reason.policy_path == "stages.training.tiers.critical.severities.medium"
    assert reason.line == line_of("        severities: {high: block, medium: quarantine}")


def test_requirement_reason_names_line(matrix_policy):
    section, findings = evidence("signed")
    decision = evaluate(matrix_policy, "deployment", findings, evidence=section, artifact=ARTIFACT)
    [reason] = [r for r in decision.reasons if r.rule == TRAIN]
    assert reason.source == "requirement"
    assert reason.policy_path == "stages.deployment.require.trainingClaims"
    assert reason.line == line_of("      trainingClaims: all")


def test_untrusted_signer_named_in_reason(matrix_policy):
    section, findings = evidence("untrusted")
    decision = evaluate(matrix_policy, "deployment", findings, evidence=section, artifact=ARTIFACT)
    [reason] = [r for r in decision.reasons if r.rule == SIG]
    assert "whom this stage does not trust" in reason.message


def test_claims_from_unsigned_statement_do_not_count(matrix_policy):
    section, findings = evidence("attested")
    for item in section["pieces"]:
        if item["source"].startswith("training"):
            item["signature"] = "unsigned"
    decision = evaluate(matrix_policy, "deployment", findings, evidence=section, artifact=ARTIFACT)
    [reason] = [r for r in decision.reasons if r.rule == TRAIN]
    assert "not from signed evidence" in reason.message


def test_summary_names_tier(matrix_policy):
    decision = evaluate(matrix_policy, "training", [], tier="critical", artifact=ARTIFACT)
    assert "tier critical" in decision.summary
