"""Signed verification summaries and least-privilege deployment manifests, end to end."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from policy_helpers import run_cli, write_keypair

from attestgate.evidence.dsse import parse_envelope, verify_envelope
from attestgate.evidence.keys import load_public_key
from attestgate.policy import default_policy_bytes
from attestgate.policy.deploy_profile import build_manifests
from attestgate.policy.vsa import DECISION_FIELD, PREDICATE_TYPE, build_vsa

kubernetes_validate = pytest.importorskip("kubernetes_validate")
K8S_VERSION = kubernetes_validate.latest_version()

EXIT_ALLOW, EXIT_USAGE, EXIT_QUARANTINE = 0, 2, 3


def permissive_policy(tmp_path: Path, limits: str) -> Path:
    text = default_policy_bytes().decode()
    text = text.replace("provenance.missing: quarantine", "provenance.missing: allow")
    text = text.replace("      medium: quarantine", "      medium: allow")
    text = text.replace("insufficientEvidence: quarantine", "insufficientEvidence: allow")
    head, _, _ = text.partition("    limits:\n")
    path = tmp_path / "policy.yaml"
    path.write_text(head + "    limits:\n" + limits)
    return path


def release(tmp_path: Path, model: Path, *flags: str) -> tuple[Path, Path]:
    private, public = write_keypair(tmp_path, "producer")
    out = tmp_path / "release.intoto.jsonl"
    code, _ = run_cli("attest", "release", model, "--key", private, "--out", out, *flags)
    assert code == EXIT_ALLOW
    return out, public


def admit(model, home, *extra):
    code, out = run_cli("admit", model, "--home", home, "--format", "json", *extra)
    return code, json.loads(out)


def validate(manifest):
    # Raises on any field Kubernetes does not know, as `kubectl apply
    # --dry-run=client` would.
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def payload(envelope_text: str) -> dict:
    envelope = json.loads(envelope_text)
    return json.loads(base64.b64decode(envelope["payload"]))


# --- verification summary ------------------------------------------------------


def test_vsa_signed_and_verifies(model, home, tmp_path):
    gate_key, gate_public = write_keypair(tmp_path, "gate")
    policy = permissive_policy(tmp_path, "      egress: []\n")
    out = tmp_path / "vsa.jsonl"
    code, record = admit(model, home, "--policy", policy, "--vsa-out", out, "--vsa-key", gate_key)
    assert code == EXIT_ALLOW
    envelope = parse_envelope(json.loads(out.read_text()))
    assert verify_envelope(envelope, [load_public_key(gate_public)]) is not None
    statement = json.loads(envelope.payload)
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"][0]["digest"]["sha256"] == record["artifact"]["digest"]["sha256"]
    predicate = statement["predicate"]
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["policy"]["digest"]["sha256"] == record["policy"]["digest"]["sha256"]
    assert "ATTESTGATE_STAGE_DEPLOYMENT" in predicate["verifiedLevels"]
    assert predicate[DECISION_FIELD]["stage"] == "deployment"
    assert predicate[DECISION_FIELD]["record"] == record["id"]


def test_vsa_not_verified_by_other_key(model, home, tmp_path):
    gate_key, _ = write_keypair(tmp_path, "gate")
    _, other = write_keypair(tmp_path, "other")
    out = tmp_path / "vsa.jsonl"
    admit(model, home, "--vsa-out", out, "--vsa-key", gate_key)
    envelope = parse_envelope(json.loads(out.read_text()))
    assert verify_envelope(envelope, [load_public_key(other)]) is None


def test_vsa_quarantine_is_failed_with_decision(model, home, tmp_path):
    gate_key, _ = write_keypair(tmp_path, "gate")
    out = tmp_path / "vsa.jsonl"
    code, _ = admit(model, home, "--vsa-out", out, "--vsa-key", gate_key)
    predicate = payload(out.read_text())["predicate"]
    assert code == EXIT_QUARANTINE
    assert predicate["verificationResult"] == "FAILED"
    assert predicate["verifiedLevels"] == ["FAILED"]
    assert predicate[DECISION_FIELD]["decision"] == "quarantine"
    assert predicate[DECISION_FIELD]["rules"] == ["provenance.missing"]


def test_vsa_audit_mode_reports_real_decision(model, home, tmp_path):
    gate_key, _ = write_keypair(tmp_path, "gate")
    policy = tmp_path / "audit.yaml"
    policy.write_text(
        default_policy_bytes().decode().replace("enforcement: enforce", "enforcement: audit")
    )
    out = tmp_path / "vsa.jsonl"
    code, record = admit(model, home, "--policy", policy, "--vsa-out", out, "--vsa-key", gate_key)
    predicate = payload(out.read_text())["predicate"]
    assert code == EXIT_ALLOW
    assert record["decision"] == "allow"
    assert record["evaluation"]["enforcement"]["decision"] == "quarantine"
    assert "audit mode" in record["summary"]
    assert predicate["verificationResult"] == "FAILED"
    assert predicate[DECISION_FIELD]["reported"] == "allow"


def test_vsa_options_go_together(model, home, tmp_path):
    code, _ = run_cli("admit", model, "--home", home, "--vsa-out", tmp_path / "v.jsonl")
    assert code == EXIT_USAGE
    assert not (home / "attestgate.db").exists()


def test_vsa_bad_key_rejected_before_admission(model, home, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    code, _ = run_cli(
        "admit", model, "--home", home, "--vsa-out", tmp_path / "v.jsonl", "--vsa-key", bad
    )
    assert code == EXIT_USAGE
    assert not (home / "attestgate.db").exists()


def test_gate_vsa_accepted_as_evidence(model, home, tmp_path):
    gate_key, gate_public = write_keypair(tmp_path, "gate")
    policy = permissive_policy(tmp_path, "      egress: []\n")
    out = tmp_path / "vsa.intoto.jsonl"
    admit(model, home, "--policy", policy, "--vsa-out", out, "--vsa-key", gate_key)
    _, record = admit(
        model, home, "--policy", policy, "--evidence", out, "--trusted-key", gate_public
    )
    [piece] = [p for p in record["evidence"]["pieces"] if p.get("predicate_type") == PREDICATE_TYPE]
    assert piece["bound"] is True
    assert piece["signer"]["trusted"] is True
    assert piece["facts"]["verification_result"] == "PASSED"


# --- deployment profile ----------------------------------------------------------


def test_profile_with_declared_needs(model, home, tmp_path):
    released, public = release(
        tmp_path,
        model,
        "--egress", "10.20.0.0/16:443",
        "--egress", "models.example.com",
        "--filesystem", "read-write",
        "--gpu", "required",
    )  # fmt: skip
    policy = permissive_policy(
        tmp_path,
        "      egress: [10.0.0.0/8, models.example.com]\n"
        "      filesystemWrites: true\n      gpu: true\n      action: block\n",
    )
    code, record = admit(
        model, home, "--policy", policy, "--evidence", released, "--trusted-key", public
    )
    assert code == EXIT_ALLOW, record["summary"]
    code, text = run_cli("deploy-profile", model, "--home", home, "--namespace", "ml")
    assert code == EXIT_ALLOW
    network, pod = list(yaml.safe_load_all(text))
    validate(network)
    validate(pod)
    assert network["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    assert network["metadata"]["annotations"]["attestgate.dev/egress-hosts"] == "models.example.com"
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_profile_exceeding_limits_blocks(model, home, tmp_path):
    released, public = release(tmp_path, model, "--egress", "evil.example", "--gpu", "required")
    policy = permissive_policy(
        tmp_path, "      egress: []\n      gpu: false\n      action: block\n"
    )
    code, record = admit(
        model, home, "--policy", policy, "--evidence", released, "--trusted-key", public
    )
    excess = {e["requirement"] for e in record["evaluation"]["deployment"]["excess"]}
    assert code == 4
    assert excess == {"egress", "gpu"}
    code, _ = run_cli("deploy-profile", model, "--home", home)
    assert code == EXIT_USAGE


def test_default_policy_quarantines_declared_egress(model, home, tmp_path):
    released, public = release(tmp_path, model, "--egress", "api.example.com:443")
    code, record = admit(model, home, "--evidence", released, "--trusted-key", public)
    reasons = {r["rule"] for r in record["reasons"]}
    assert code == EXIT_QUARANTINE
    assert "policy.deployment-limit" in reasons


def test_profile_without_claims_denies_everything(model, home, tmp_path):
    policy = permissive_policy(tmp_path, "      egress: []\n")
    admit(model, home, "--policy", policy)
    code, text = run_cli("deploy-profile", model, "--home", home, "--format", "json")
    listing = json.loads(text)
    network, pod = listing["items"]
    validate(network)
    validate(pod)
    container = pod["spec"]["containers"][0]
    assert code == EXIT_ALLOW
    assert network["spec"]["egress"] == []
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "resources" not in container
    assert "volumes" not in pod["spec"]


def test_profile_by_digest(model, home, tmp_path):
    policy = permissive_policy(tmp_path, "      egress: []\n")
    _, record = admit(model, home, "--policy", policy)
    digest = "sha256:" + record["artifact"]["digest"]["sha256"]
    code, text = run_cli("deploy-profile", digest, "--home", home, "--name", "svc")
    assert code == EXIT_ALLOW
    assert list(yaml.safe_load_all(text))[1]["metadata"]["name"] == "svc"


def test_profile_needs_allow_decision(model, home):
    admit(model, home)
    code, _ = run_cli("deploy-profile", model, "--home", home)
    assert code == EXIT_USAGE


def test_profile_rejects_bad_name():
    record = {
        "id": "r",
        "decision": "allow",
        "stage": "deployment",
        "artifact": {"path": "/m", "digest": {"sha256": "0" * 64}},
        "policy": {"digest": {"sha256": "1" * 64}},
    }
    with pytest.raises(Exception, match="not a valid Kubernetes name"):
        build_manifests(record, name="Bad_Name")


def test_capabilities_added_back(tmp_path):
    record = {
        "id": "r",
        "decision": "allow",
        "stage": "deployment",
        "artifact": {"path": "/m/My Model.v2", "digest": {"sha256": "0" * 64}},
        "policy": {"digest": {"sha256": "1" * 64}},
        "evaluation": {
            "deployment": {
                "declared": {"egress": ["*"]},
                "permitted": {
                    "egress": ["*"],
                    "filesystem": "read-only",
                    "gpu": False,
                    "capabilities": ["NET_BIND_SERVICE"],
                },
            }
        },
    }
    (network, pod), _ = build_manifests(record)
    validate(network)
    validate(pod)
    assert pod["metadata"]["name"] == "my-model-v2"
    assert pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == [
        "NET_BIND_SERVICE"
    ]
    assert len(network["spec"]["egress"][0]["to"]) == 2


def test_vsa_built_from_record_only():
    record = {
        "id": "r",
        "decision": "allow",
        "stage": "fine-tuning",
        "created_at": "2026-01-01T00:00:00+00:00",
        "artifact": {"path": "/m/model", "digest": {"sha256": "0" * 64}},
        "policy": {"source": "builtin:default", "digest": {"sha256": "1" * 64}},
        "reasons": [],
        "evaluation": {
            "tier": {"name": "critical"},
            "enforcement": {"mode": "enforce", "decision": "allow"},
            "evidence": {"slsa": {"level": 2}},
        },
    }
    predicate = build_vsa(record)["predicate"]
    assert predicate["timeVerified"] == "2026-01-01T00:00:00Z"
    assert predicate["verifiedLevels"] == [
        "SLSA_BUILD_LEVEL_2",
        "ATTESTGATE_STAGE_FINE_TUNING",
        "ATTESTGATE_TIER_CRITICAL",
    ]
