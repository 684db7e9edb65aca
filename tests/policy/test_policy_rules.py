"""Formats, SLSA requirements, deployment limits, outcomes and custom CEL rules."""

from __future__ import annotations

import copy

import pytest
from policy_helpers import ARTIFACT, PROVENANCE, evidence, finding, piece, policy_from

from attestgate.findings import Severity
from attestgate.policy import Action, evaluate
from attestgate.policy.deployment import declared_requirements, egress_permitted
from attestgate.policy.facts import summarize_evidence

HEAD = """\
apiVersion: attestgate/v2
kind: Policy
stages:
  training: &s
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
  fine-tuning: *s
  deployment:
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
"""


def with_files(*formats):
    artifact = copy.deepcopy(ARTIFACT)
    artifact["files"] = [
        {"path": f"f{i}.{fmt}", "size": 1, "digest": {"sha256": "0" * 64}, "format": fmt}
        for i, fmt in enumerate(formats)
    ]
    return artifact


def decide(section_text, findings=(), state="signed", artifact=ARTIFACT, tier=None, ev=None):
    policy = policy_from(HEAD + section_text)
    section, extra = evidence(state) if ev is None else (ev, [])
    return evaluate(
        policy,
        "deployment",
        [*extra, *findings],
        tier=tier,
        evidence=section,
        artifact=artifact,
    )


# --- formats ---------------------------------------------------------------

FORMATS = """\
    formats:
      deny: [native-executable]
      signed: [pickle-based]
      allow: [safetensors, json]
      action: block
"""


def test_denied_format_blocks():
    decision = decide(FORMATS, artifact=with_files("safetensors", "native-executable"))
    assert decision.action is Action.BLOCK
    assert [r.rule for r in decision.reasons] == ["policy.format-denied"]


def test_signed_format_allowed_with_signature():
    decision = decide(FORMATS, artifact=with_files("pytorch-zip"), state="signed")
    assert decision.action is Action.ALLOW


def test_signed_format_unsigned_quarantines():
    decision = decide(FORMATS, artifact=with_files("pickle"), state="untrusted")
    assert decision.action is Action.QUARANTINE
    assert {r.rule for r in decision.reasons} == {
        "policy.format-unsigned",
        "evidence.untrusted-signer",
    }


def test_format_outside_allow_list_blocks():
    decision = decide(FORMATS, artifact=with_files("onnx"))
    [reason] = decision.reasons
    assert reason.rule == "policy.format-not-allowed"
    assert reason.action is Action.BLOCK
    assert reason.policy_path == "stages.deployment.formats.allow"


def test_empty_files_not_judged():
    decision = decide(FORMATS, artifact=with_files("safetensors", "empty"))
    assert decision.action is Action.ALLOW


def test_format_reason_lists_files():
    decision = decide(FORMATS, artifact=with_files("onnx", "onnx"))
    assert "f0.onnx, f1.onnx" in decision.reasons[0].message


def test_pickle_denied_for_deployment_allowed_signed_for_training():
    text = (
        HEAD.replace(
            "  training: &s\n",
            "  training: &s\n    formats: {signed: [pickle-based]}\n",
        )
        + "    formats: {deny: [pickle-based]}\n"
    )
    policy = policy_from(text)
    section, _ = evidence("signed")
    artifact = with_files("pytorch-legacy")
    training = evaluate(policy, "training", [], evidence=section, artifact=artifact)
    deployment = evaluate(policy, "deployment", [], evidence=section, artifact=artifact)
    assert training.action is Action.ALLOW
    assert deployment.action is Action.BLOCK


# --- SLSA -------------------------------------------------------------------


def provenance_section(builder, trusted=True):
    section, _ = evidence("signed")
    section["pieces"].append(
        piece(
            "prov.jsonl:1",
            predicate_type=PROVENANCE,
            trusted=trusted,
            facts={"builder_id": builder},
        )
    )
    return section


@pytest.mark.parametrize(
    ("builder", "trusted", "level"),
    [
        ("https://b.example/x", False, 1),
        ("https://b.example/x", True, 2),
        ("https://hardened.example/builder@v1", True, 3),
    ],
)
def test_slsa_level_derivation(builder, trusted, level):
    summary = summarize_evidence(
        provenance_section(builder, trusted), [{"regexp": "^https://hardened\\.example/"}]
    )
    assert summary.slsa_level == level


def test_slsa_level_from_trusted_vsa():
    section, _ = evidence("signed")
    section["pieces"].append(
        piece(
            "vsa.jsonl:1",
            predicate_type="https://slsa.dev/verification_summary/v1",
            facts={"verification_result": "PASSED", "verified_levels": ["SLSA_BUILD_LEVEL_3"]},
        )
    )
    assert summarize_evidence(section).slsa_level == 3


def test_slsa_level_ignores_failed_vsa():
    section, _ = evidence("signed")
    section["pieces"].append(
        piece(
            "vsa.jsonl:1",
            predicate_type="https://slsa.dev/verification_summary/v1",
            facts={"verification_result": "FAILED", "verified_levels": ["SLSA_BUILD_LEVEL_3"]},
        )
    )
    assert summarize_evidence(section).slsa_level == 0


SLSA = """\
    require:
      slsa:
        level: 3
        builders:
          - https://hardened.example/builder@v1
"""


def test_slsa_requirement_met_by_listed_builder():
    decision = decide(SLSA, ev=provenance_section("https://hardened.example/builder@v1"))
    assert decision.action is Action.ALLOW


def test_slsa_requirement_names_found_builder():
    decision = decide(SLSA, ev=provenance_section("https://other.example/b"))
    rules = {r.rule: r for r in decision.reasons}
    assert set(rules) == {"policy.require.slsa-level", "policy.require.slsa-builder"}
    assert "https://other.example/b" in rules["policy.require.slsa-builder"].message


# --- deployment limits -----------------------------------------------------


def release_section(**facts):
    section, _ = evidence("signed")
    section["pieces"].append(
        piece(
            "release.cdx.json",
            kind="cyclonedx",
            predicate_type="https://cyclonedx.org/bom",
            facts=facts,
        )
    )
    return section


LIMITS = """\
    limits:
      egress: [api.example.com:443, "*.internal.example", 10.0.0.0/8]
      filesystemWrites: false
      gpu: false
      capabilities: [NET_BIND_SERVICE]
      action: block
"""


def test_declared_within_limits_allowed():
    section = release_section(
        egress="api.example.com:443,svc.internal.example,10.1.2.3:8080",
        filesystem="read-only",
        gpu="optional",
        capabilities="CAP_NET_BIND_SERVICE",
    )
    decision = decide(LIMITS, ev=section)
    assert decision.action is Action.ALLOW
    assert decision.evaluation["deployment"]["permitted"]["egress"] == [
        "api.example.com:443",
        "svc.internal.example",
        "10.1.2.3:8080",
    ]


def test_each_excess_named():
    section = release_section(
        egress="api.example.com:80,evil.example,192.168.1.1",
        filesystem="read-write",
        gpu="required",
        capabilities="SYS_ADMIN",
    )
    decision = decide(LIMITS, ev=section)
    assert decision.action is Action.BLOCK
    excess = {(e["requirement"], e["value"]) for e in decision.evaluation["deployment"]["excess"]}
    assert excess == {
        ("egress", "api.example.com:80"),
        ("egress", "evil.example"),
        ("egress", "192.168.1.1"),
        ("filesystem", "read-write"),
        ("gpu", "required"),
        ("capabilities", "SYS_ADMIN"),
    }
    assert {r.rule for r in decision.reasons} == {"policy.deployment-limit"}


def test_excess_can_quarantine():
    section = release_section(egress="evil.example")
    decision = decide(LIMITS.replace("action: block", "action: quarantine"), ev=section)
    assert decision.action is Action.QUARANTINE


def test_no_release_claims_no_excess():
    decision = decide(LIMITS)
    assert decision.evaluation["deployment"]["declared"] is None
    assert decision.action is Action.ALLOW


def test_failed_piece_declares_nothing():
    section = release_section(egress="evil.example")
    section["pieces"][-1]["status"] = "failed"
    assert declared_requirements(section) is None


@pytest.mark.parametrize(
    ("destination", "permitted", "expected"),
    [
        ("a.example.com", ["a.example.com"], True),
        ("a.example.com:443", ["a.example.com"], True),
        ("a.example.com", ["a.example.com:443"], False),
        ("x.a.example.com", ["*.a.example.com"], True),
        ("a.example.com", ["*.a.example.com"], False),
        ("10.2.3.4", ["10.0.0.0/8"], True),
        ("10.0.0.0/16", ["10.0.0.0/8"], True),
        ("11.0.0.1", ["10.0.0.0/8"], False),
        ("[2001:db8::1]:443", ["2001:db8::/32"], True),
        ("anything.example", ["*"], True),
        ("a.example.com:notaport", ["*.example.com"], False),
    ],
)
def test_egress_matching(destination, permitted, expected):
    assert egress_permitted(destination, permitted) is expected


# --- outcomes ----------------------------------------------------------------


def test_dynamic_signal_outcome_blocks_low_signal():
    text = "    outcomes: {dynamicSignal: block}\n"
    decision = decide(text, [finding("dynamic.x-acme.odd", Severity.LOW)])
    assert decision.action is Action.BLOCK
    assert decision.reasons[0].source == "outcome"


def test_dynamic_signal_outcome_leaves_info_to_severity():
    text = "    outcomes: {dynamicSignal: block}\n"
    decision = decide(text, [finding("dynamic.module.import", Severity.INFO)])
    assert decision.action is Action.ALLOW


def test_rule_beats_outcome():
    text = "    outcomes: {insufficientEvidence: block}\n    rules: {provenance.missing: allow}\n"
    decision = decide(text, state="none")
    assert decision.action is Action.ALLOW


def test_longest_wildcard_wins():
    text = "    rules: {deps.*: block, deps.unpinned: allow, dynamic.x-acme.*: quarantine}\n"
    decision = decide(
        text,
        [
            finding("deps.unpinned", Severity.HIGH),
            finding("deps.typosquat", Severity.LOW),
            finding("dynamic.x-acme.odd", Severity.CRITICAL),
        ],
    )
    actions = {r.rule: r.action for r in decision.reasons}
    assert actions == {"deps.typosquat": Action.BLOCK, "dynamic.x-acme.odd": Action.QUARANTINE}


def test_check_error_outcome_floor():
    text = "    outcomes: {checkError: severity}\n"
    decision = decide(text, [finding("dynamic.timeout", Severity.LOW)])
    assert decision.action is Action.QUARANTINE


# --- custom rules ------------------------------------------------------------

CUSTOM = """\
    custom:
      - id: custom.too-many-mediums
        expression: counts.medium >= 2
        action: block
        severity: high
        message: two or more medium findings
        remediation: fix them
      - id: custom.team-label
        expression: '!("team" in artifact.labels) && tier == "critical"'
        action: quarantine
      - id: custom.uses-evidence
        expression: evidence.signed && artifact.formats.exists(f, f == "json")
        action: quarantine
"""


def test_custom_rule_fires():
    findings = [finding("a.b", Severity.MEDIUM), finding("c.d", Severity.MEDIUM)]
    decision = decide(CUSTOM.split("      - id: custom.team-label", maxsplit=1)[0], findings)
    rules = {r.rule: r for r in decision.reasons}
    assert rules["custom.too-many-mediums"].action is Action.BLOCK
    assert rules["custom.too-many-mediums"].source == "custom"
    assert decision.action is Action.BLOCK


def test_custom_rule_sees_tier_labels_and_evidence():
    decision = decide(CUSTOM, tier="critical")
    fired = {r.rule for r in decision.reasons}
    assert fired == {"custom.team-label", "custom.uses-evidence"}
    assert decision.evaluation["custom"][0] == {"id": "custom.too-many-mediums", "result": False}


def test_custom_rule_error_is_check_error():
    text = """\
    custom:
      - id: custom.broken
        expression: artifact.labels["team"] == "x"
        action: block
"""
    decision = decide(text)
    [reason] = decision.reasons
    assert reason.rule == "policy.custom-rule-error"
    assert reason.action is Action.BLOCK
    assert decision.evaluation["custom"][0]["result"] == "error"


def test_custom_rule_error_never_allows():
    text = """\
    severities: {critical: allow, high: allow, medium: allow, low: allow, info: allow}
    custom:
      - id: custom.broken
        expression: artifact.labels["team"] == "x"
        action: block
"""
    policy_text = HEAD.replace(
        "    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}\n",
        "",
    )
    policy_text = policy_text.replace("  deployment:\n", "  deployment:\n" + text, 1)
    policy = policy_from(policy_text.replace("  training: &s\n", "  training: &s\n" + text, 1))
    decision = evaluate(policy, "deployment", [], artifact=ARTIFACT)
    assert decision.action is Action.QUARANTINE


def test_custom_rules_added_by_tier():
    text = """\
    custom:
      - id: custom.stage
        expression: "true"
        action: quarantine
    tiers:
      critical:
        custom:
          - id: custom.tier
            expression: "true"
            action: block
"""
    standard = decide(text)
    critical = decide(text, tier="critical")
    assert {r.rule for r in standard.reasons} == {"custom.stage"}
    assert {r.rule for r in critical.reasons} == {"custom.stage", "custom.tier"}
