import pytest

from attestgate.errors import PolicyError
from attestgate.findings import CHECK_FAILED, Finding, Severity
from attestgate.policy import Action, evaluate, load_default_policy, load_policy
from attestgate.policy.engine import default_policy_bytes, parse_policy


def finding(rule, severity, file="model.bin"):
    return Finding(rule, severity, file, f"{rule} happened", "fix it")


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.CRITICAL, Action.BLOCK),
        (Severity.HIGH, Action.BLOCK),
        (Severity.MEDIUM, Action.QUARANTINE),
        (Severity.LOW, Action.ALLOW),
        (Severity.INFO, Action.ALLOW),
    ],
)
@pytest.mark.parametrize("stage", ["training", "fine-tuning", "deployment"])
def test_default_maps_severity(stage, severity, expected):
    decision = evaluate(load_default_policy(), stage, [finding("x.rule", severity)])
    assert decision.action is expected


def test_no_findings_allow():
    decision = evaluate(load_default_policy(), "deployment", [])
    assert decision.action is Action.ALLOW
    assert decision.reasons == ()


def test_missing_provenance_quarantines():
    decision = evaluate(
        load_default_policy(),
        "deployment",
        [finding("provenance.missing", Severity.MEDIUM)],
    )
    assert decision.action is Action.QUARANTINE
    assert decision.reasons[0].policy_path == "stages.deployment.rules[provenance.missing]"


def test_check_failure_quarantines_not_blocks():
    decision = evaluate(load_default_policy(), "training", [finding(CHECK_FAILED, Severity.HIGH)])
    assert decision.action is Action.QUARANTINE


def test_strictest_action_wins_and_reasons_sorted():
    findings = [
        finding("a.medium", Severity.MEDIUM),
        finding("b.critical", Severity.CRITICAL),
        finding("c.low", Severity.LOW),
    ]
    decision = evaluate(load_default_policy(), "deployment", findings)
    assert decision.action is Action.BLOCK
    assert [r.rule for r in decision.reasons] == ["b.critical", "a.medium"]


def _policy_text(**overrides):
    text = default_policy_bytes().decode()
    for old, new in overrides.items():
        text = text.replace(old, new)
    return text.encode()


def test_rule_override_applies(tmp_path):
    text = _policy_text(
        **{"      check.failed: quarantine": "      check.failed: quarantine\n      x.rule: block"}
    )
    policy = parse_policy(text, "test")
    decision = evaluate(policy, "deployment", [finding("x.rule", Severity.INFO)])
    assert decision.action is Action.BLOCK


def test_check_failed_allow_rejected():
    text = _policy_text(**{"check.failed: quarantine": "check.failed: allow"})
    with pytest.raises(PolicyError, match=r"check\.failed"):
        parse_policy(text, "test")


def test_unknown_action_names_field():
    text = _policy_text(**{"high: block": "high: maybe"})
    with pytest.raises(PolicyError, match=r"stages\.training\.severities\.high"):
        parse_policy(text, "test")


def test_missing_stage_names_field():
    text = b"apiVersion: attestgate/v1\nkind: Policy\nstages: {}\n"
    with pytest.raises(PolicyError, match="training"):
        parse_policy(text, "test")


def test_invalid_yaml_rejected():
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy(b"stages: [unclosed", "test")


def test_policy_digest_is_file_sha256(tmp_path):
    import hashlib

    path = tmp_path / "policy.yaml"
    path.write_bytes(default_policy_bytes())
    policy = load_policy(path)
    assert policy.sha256 == hashlib.sha256(default_policy_bytes()).hexdigest()


def test_missing_policy_file_is_error(tmp_path):
    with pytest.raises(PolicyError, match="could not be read"):
        load_policy(tmp_path / "nope.yaml")
