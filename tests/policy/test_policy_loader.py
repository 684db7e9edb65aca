"""Loading policies: errors name the line and the field; v1 documents still load."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import ARTIFACT, evidence, finding, policy_from

from attestgate.errors import PolicyError
from attestgate.findings import Severity
from attestgate.policy import (
    PolicyValidationError,
    default_policy_bytes,
    evaluate,
    load_policy,
    parse_policy,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"

BASE = """\
apiVersion: attestgate/v2
kind: Policy
stages:
  training: &s
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
  fine-tuning: *s
  deployment:
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
"""


def issues_of(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(PolicyValidationError) as caught:
        policy_from(text)
    return [(i.line, i.field, i.message) for i in caught.value.issues]


def test_base_loads():
    policy = policy_from(BASE)
    assert policy.api_version == "attestgate/v2"


def test_bad_action_names_line_and_field():
    text = BASE + "    rules:\n      pickle.unsafe-global: maybe\n"
    [(line, field, message)] = issues_of(text)
    assert line == 10
    assert field == "stages.deployment.rules[pickle.unsafe-global]"
    assert "'maybe' is not one of" in message


def test_message_has_source_and_line():
    text = BASE + "    rules:\n      pickle.unsafe-global: maybe\n"
    with pytest.raises(PolicyError, match=r"test\.yaml:10: stages\.deployment\.rules"):
        policy_from(text)


def test_unknown_field_names_its_own_line():
    text = BASE + "    limits:\n      egres: []\n"
    [(line, field, message)] = issues_of(text)
    assert line == 10
    assert field == "stages.deployment.limits.egres"
    assert "unknown field 'egres'" in message


def test_missing_severity_names_parent():
    text = BASE.replace(", info: allow}\n", "}\n", 1)
    found = issues_of(text)
    assert (5, "stages.fine-tuning.severities", "'info' is a required property") in found
    assert (5, "stages.training.severities", "'info' is a required property") in found


def test_duplicate_key_named():
    text = BASE + "    rules:\n      check.failed: block\n      check.failed: quarantine\n"
    [(line, field, message)] = issues_of(text)
    assert line == 11
    assert field == "(document)"
    assert "duplicate key 'check.failed' (first given on line 10)" in message


def test_yaml_syntax_error_names_line():
    with pytest.raises(PolicyError, match=r"test\.yaml:3: \(document\): not valid YAML"):
        policy_from("apiVersion: attestgate/v2\nkind: Policy\n\tstages: {}\n")


def test_unsupported_version_rejected():
    [(line, field, message)] = issues_of(BASE.replace("attestgate/v2", "attestgate/v9"))
    assert (line, field) == (1, "apiVersion")
    assert "attestgate/v2" in message


def test_check_error_allow_rejected():
    text = BASE + "    rules:\n      check.*: allow\n"
    [(line, field, message)] = issues_of(text)
    assert (line, field) == (10, "stages.deployment.rules[check.*]")
    assert "check.failed" in message


def test_check_error_outcome_allow_rejected():
    text = BASE + "    outcomes:\n      checkError: allow\n"
    [(line, field, _)] = issues_of(text)
    assert (line, field) == (10, "stages.deployment.outcomes.checkError")


def test_bad_identity_regexp_rejected():
    text = BASE + (
        "    signers:\n      identities:\n"
        "        - issuer: https://issuer.example\n          subjectRegExp: '(unclosed'\n"
    )
    [(line, field, message)] = issues_of(text)
    assert line == 12
    assert field == "stages.deployment.signers.identities[0].subjectRegExp"
    assert "invalid" in message


def test_identity_without_issuer_rejected():
    text = BASE + "    signers:\n      identities:\n        - subject: a@example.com\n"
    found = issues_of(text)
    assert found[0][0] == 11
    assert found[0][1] == "stages.deployment.signers.identities[0]"


def test_missing_key_file_rejected():
    text = BASE + "    signers:\n      keys: [nope.pub]\n"
    [(line, field, message)] = issues_of(text)
    assert (line, field) == (9, "stages.deployment.signers")
    assert "nope.pub" in message


def test_slsa_level_three_needs_builders():
    text = BASE + "    require:\n      slsa: {level: 3}\n"
    [(line, field, _)] = issues_of(text)
    assert (line, field) == (10, "stages.deployment.require.slsa.level")


def test_denied_and_allowed_format_rejected():
    text = BASE + "    formats:\n      deny: [pickle-based]\n      allow: [pickle]\n"
    [(line, field, message)] = issues_of(text)
    assert (line, field) == (11, "stages.deployment.formats.allow")
    assert "pickle" in message


def test_unknown_format_rejected():
    text = BASE + "    formats:\n      deny: [pikle]\n"
    [(line, field, _)] = issues_of(text)
    assert (line, field) == (10, "stages.deployment.formats.deny[0]")


def test_bad_cel_rejected():
    text = BASE + (
        "    custom:\n      - id: custom.x\n        expression: 'artifact.size >'\n"
        "        action: block\n"
    )
    [(line, field, message)] = issues_of(text)
    assert (line, field) == (11, "stages.deployment.custom[0].expression")
    assert "does not compile" in message


def test_cel_unknown_variable_rejected():
    text = BASE + (
        "    custom:\n      - id: custom.x\n        expression: 'artefact.size > 1'\n"
        "        action: block\n"
    )
    [(_, _, message)] = issues_of(text)
    assert "unknown name" in message


def test_cel_non_boolean_rejected():
    text = BASE + (
        "    custom:\n      - id: custom.x\n        expression: 'artifact.size'\n"
        "        action: block\n"
    )
    [(_, _, message)] = issues_of(text)
    assert "not true or false" in message


def test_custom_id_outside_namespace_rejected():
    text = BASE + (
        "    custom:\n      - id: pickle.mine\n        expression: 'true'\n        action: block\n"
    )
    [(line, field, _)] = issues_of(text)
    assert (line, field) == (10, "stages.deployment.custom[0].id")


def test_unknown_rule_warns():
    text = BASE + "    rules:\n      pickle.unsafe-globl: block\n      pickle.*: block\n"
    policy = policy_from(text)
    assert len(policy.warnings) == 1
    assert "test.yaml:10: stages.deployment.rules[pickle.unsafe-globl]" in policy.warnings[0]


def test_family_rules_do_not_warn():
    text = BASE + "    rules:\n      import.trivy.cve-2025-1: block\n      custom.mine: block\n"
    assert policy_from(text).warnings == ()


def test_alias_bomb_rejected():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    with pytest.raises(PolicyError, match="expands to more than"):
        policy_from("\n".join(lines) + "\n")


def test_deep_nesting_rejected():
    with pytest.raises(PolicyError, match="nested more than"):
        policy_from("a: " + "[" * 200 + "]" * 200 + "\n")


def test_oversized_policy_rejected():
    with pytest.raises(PolicyError, match="more than"):
        parse_policy(b"#" * (1024 * 1024 + 1), "big.yaml")


def test_many_errors_all_listed():
    text = BASE + "    rules:\n      a.b: maybe\n      c.d: perhaps\n"
    assert len(issues_of(text)) == 2


V1 = """\
apiVersion: attestgate/v1
kind: Policy
stages:
  training: &s
    severities: {critical: block, high: block, medium: allow, low: allow, info: allow}
    rules:
      check.failed: quarantine
  fine-tuning: *s
  deployment: *s
"""


def test_v1_still_loads():
    assert policy_from(V1).api_version == "attestgate/v1"


def test_v1_rejects_v2_fields():
    found = issues_of(V1 + "enforcement: audit\n")
    assert found[0][1] == "enforcement"


def test_v1_evaluates_as_before():
    # Under v1, medium findings of every category map by severity alone.
    section, findings = evidence("none")
    decision = evaluate(
        policy_from(V1), "deployment", findings, evidence=section, artifact=ARTIFACT
    )
    assert decision.action.label == "allow"


def test_v1_check_failed_floor_kept():
    policy = policy_from(V1.replace("check.failed: quarantine", "x.y: block"))
    decision = evaluate(policy, "training", [finding("check.failed", Severity.LOW)])
    assert decision.action.label == "quarantine"


def test_v1_migrates_by_changing_version():
    assert policy_from(V1.replace("attestgate/v1", "attestgate/v2")).api_version == "attestgate/v2"


def test_default_policy_is_v2_without_warnings():
    policy = parse_policy(default_policy_bytes(), "builtin:default")
    assert policy.api_version == "attestgate/v2"
    assert policy.warnings == ()


@pytest.mark.parametrize("name", ["research-permissive.yaml", "production-strict.yaml"])
def test_examples_load_cleanly(name):
    policy = load_policy(EXAMPLES / name)
    assert policy.warnings == ()


def test_lines_point_into_anchored_section():
    policy = parse_policy(default_policy_bytes(), "builtin:default")
    text = default_policy_bytes().decode().splitlines()
    line = policy.line(("stages", "fine-tuning", "rules", "provenance.missing"))
    assert text[line - 1].strip() == "provenance.missing: quarantine"
