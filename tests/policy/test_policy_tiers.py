"""Tiers: the caller's choice, the label file beside the artifact, the policy default."""

from __future__ import annotations

import pytest
from policy_helpers import policy_from

from attestgate.errors import UsageError
from attestgate.pipeline import admit
from attestgate.policy import default_policy_bytes, load_default_policy
from attestgate.policy.tiers import choose_tier, label_file_for

LABELS = "apiVersion: attestgate/v1\nkind: ArtifactLabels\nlabels:\n{body}"


def write_labels(model, body):
    path = label_file_for(model)
    path.write_text(LABELS.format(body=body))
    return path


def test_label_file_sits_beside_artifact(model):
    assert label_file_for(model) == model.parent / "model.labels.yaml"


def test_default_tier_without_labels(model):
    choice = choose_tier(load_default_policy(), artifact=model)
    assert (choice.name, choice.source) == ("standard", "policy")


def test_label_raises_tier(model):
    write_labels(model, "  attestgate.dev/tier: critical\n  team: vision\n")
    choice = choose_tier(load_default_policy(), artifact=model)
    assert (choice.name, choice.source) == ("critical", "label")
    assert choice.labels == {"attestgate.dev/tier": "critical", "team": "vision"}


def test_label_cannot_lower_tier_by_default(model):
    write_labels(model, "  attestgate.dev/tier: low\n")
    choice = choose_tier(load_default_policy(), artifact=model)
    assert choice.name == "standard"
    assert "ignored" in choice.note


def test_policy_can_allow_lower_label(model):
    text = (
        default_policy_bytes()
        .decode()
        .replace("defaultTier: standard", "defaultTier: standard\nlabels:\n  allowLowerTier: true")
    )
    write_labels(model, "  attestgate.dev/tier: low\n")
    assert choose_tier(policy_from(text), artifact=model).name == "low"


def test_option_beats_label(model):
    write_labels(model, "  attestgate.dev/tier: critical\n")
    choice = choose_tier(load_default_policy(), requested="low", artifact=model)
    assert (choice.name, choice.source) == ("low", "option")


def test_explicit_labels_file(model, tmp_path):
    other = tmp_path / "elsewhere.yaml"
    other.write_text(LABELS.format(body="  attestgate.dev/tier: critical\n"))
    choice = choose_tier(load_default_policy(), artifact=model, labels_file=other)
    assert choice.label_file == str(other)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  attestgate.dev/tier: extreme\n", "extreme"),
        ("  bad key!: x\n", "not a valid label key"),
        ("  team: 3\n", "must be a string"),
    ],
)
def test_invalid_labels_rejected(model, body, message):
    write_labels(model, body)
    with pytest.raises(UsageError, match=message):
        choose_tier(load_default_policy(), artifact=model)


def test_wrong_kind_rejected(model):
    label_file_for(model).write_text("labels: {team: x}\n")
    with pytest.raises(UsageError, match="ArtifactLabels"):
        choose_tier(load_default_policy(), artifact=model)


def test_unknown_tier_option_rejected():
    with pytest.raises(UsageError, match="unknown tier"):
        choose_tier(load_default_policy(), requested="extreme")


def test_label_file_not_part_of_digest(model, home):
    before = admit(model, home=home).record["artifact"]["digest"]
    write_labels(model, "  attestgate.dev/tier: critical\n")
    after = admit(model, home=home)
    assert after.record["artifact"]["digest"] == before
    assert after.record["evaluation"]["tier"]["name"] == "critical"
    assert after.record["evaluation"]["tier"]["source"] == "label"


def test_tier_reaches_dynamic_selection(model, home, monkeypatch):
    import attestgate.dynamic.runner

    seen = {}
    original = attestgate.dynamic.runner.run_dynamic

    def spy(*args, **kwargs):
        seen["tier"] = kwargs.get("tier")
        return original(*args, **kwargs)

    monkeypatch.setattr(attestgate.dynamic.runner, "run_dynamic", spy)
    admit(model, home=home, tier="critical")
    assert seen["tier"] == "critical"
