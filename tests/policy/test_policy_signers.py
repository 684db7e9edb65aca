"""Trusted signers per stage reach the evidence check through the pipeline."""

from __future__ import annotations

from policy_helpers import run_cli, write_keypair

from attestgate.pipeline import admit
from attestgate.policy import default_policy_bytes, load_policy

EXIT_ALLOW = 0


def stage_policy(tmp_path, public, require_signature=False):
    text = default_policy_bytes().decode()
    extra = f"    signers:\n      keys: [{public.name}]\n"
    if require_signature:
        extra += "    require:\n      signature: true\n"
    text = text.replace("    limits:\n", extra + "    limits:\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def signer_trusted(record):
    [piece] = record["evidence"]["pieces"]
    return piece["signer"]["trusted"]


def test_stage_signers_trusted_only_in_their_stage(model, home, tmp_path):
    private, public = write_keypair(tmp_path, "producer")
    assert run_cli("sign", model, "--key", private)[0] == EXIT_ALLOW
    policy = stage_policy(tmp_path, public)
    deployment = admit(model, home=home, policy=policy, stage="deployment")
    training = admit(model, home=home, policy=policy, stage="training")
    assert signer_trusted(deployment.record) is True
    assert signer_trusted(training.record) is False


def test_signature_requirement_met_by_stage_signer(model, home, tmp_path):
    private, public = write_keypair(tmp_path, "producer")
    run_cli("sign", model, "--key", private)
    policy = stage_policy(tmp_path, public, require_signature=True)
    record = admit(model, home=home, policy=policy).record
    rules = {r["rule"] for r in record["reasons"]}
    assert record["evaluation"]["evidence"]["signed"] is True
    assert "policy.require.signature" not in rules


def test_signature_requirement_unmet_by_other_key(model, home, tmp_path):
    private, _ = write_keypair(tmp_path, "producer")
    _, other = write_keypair(tmp_path, "other")
    run_cli("sign", model, "--key", private)
    policy = stage_policy(tmp_path, other, require_signature=True)
    record = admit(model, home=home, policy=policy).record
    [reason] = [r for r in record["reasons"] if r["rule"] == "policy.require.signature"]
    assert reason["action"] == "quarantine"
    assert reason["mapped_by"] == "stages.deployment.outcomes.insufficientEvidence"
