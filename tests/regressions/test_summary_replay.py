"""Verification summaries used to admit a pod that the gate's own decisions do not cover.

Every summary here is genuinely signed by a key the service trusts, so the
attacks reuse signed summaries where they do not belong, or send documents
that the endpoints must bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from attestgate.audit import AuditLog
from attestgate.errors import UsageError
from attestgate.evidence import dsse
from attestgate.evidence.interface import IN_TOTO_PAYLOAD_TYPE
from attestgate.evidence.keys import load_public_key
from attestgate.policy import load_default_policy, load_policy
from attestgate.policy.loader import default_policy_bytes
from attestgate.policy.vsa import build_vsa
from attestgate.service import ServiceConfig, create_app
from attestgate.service.tokens import TokenStore

DIGEST = "ab" * 32


@dataclass
class Gate:
    home: Path
    client: TestClient
    tokens: dict[str, str]
    key: ec.EllipticCurvePrivateKey

    def auth(self, role: str = "reviewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def store(self, envelope: dict[str, Any], role: str = "reviewer") -> Any:
        return self.client.post(
            "/verification-summaries", content=json.dumps(envelope), headers=self.auth(role)
        )

    def decide(self, decision: str, stage: str = "deployment") -> None:
        log = AuditLog(self.home)
        try:
            body = {"stage": stage, "decision": decision, "summary": decision}
            log.append("decision", body, artifact_digest=f"sha256:{DIGEST}")
        finally:
            log.close()

    def review(self, summary: str, stage: str = "deployment") -> dict[str, Any]:
        annotations = {
            "attestgate.dev/models": f"sha256:{DIGEST}",
            "attestgate.dev/stage": stage,
            "attestgate.dev/verification-summaries": summary,
        }
        document = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "object": {"metadata": {"name": "p", "annotations": annotations}},
            },
        }
        response = self.client.post("/k8s/admission-review", json=document)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["response"]
        return result


def write_public(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def make_tokens(home: Path) -> dict[str, str]:
    store = TokenStore.open(home)
    try:
        return {role: store.create(role, role)[1] for role in ("submitter", "reviewer", "admin")}
    finally:
        store.engine.dispose()


def signed_summary(key: ec.EllipticCurvePrivateKey, verified: datetime) -> dict[str, Any]:
    record = {
        "id": "record-1",
        "created_at": verified.isoformat(timespec="seconds"),
        "stage": "deployment",
        "decision": "allow",
        "artifact": {"path": "/models/model.bin", "digest": {"sha256": DIGEST}},
        "policy": {
            "source": "builtin:default",
            "digest": {"sha256": load_default_policy().sha256},
        },
        "evaluation": {"enforcement": {"decision": "allow", "mode": "enforce"}},
        "reasons": [],
    }
    payload = dsse.encode_json(build_vsa(record))
    return dsse.sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, key).to_json()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    key = ec.generate_private_key(ec.SECP256R1())
    home = tmp_path / "home"
    tokens = make_tokens(home)
    config = ServiceConfig(
        home=home,
        intake=tmp_path / "intake",
        workers=1,
        vsa_keys=[load_public_key(write_public(key, tmp_path / "gate.pub"))],
    )
    with TestClient(create_app(config)) as client:
        yield Gate(home, client, tokens, key)


def test_old_summary_after_block_denied(gate: Gate) -> None:
    # The gate allowed the model an hour ago and signed a summary, and it has
    # blocked the same model since. The old summary must not override that.
    stored = gate.store(signed_summary(gate.key, datetime.now(UTC) - timedelta(hours=1)))
    assert stored.status_code == 201
    gate.decide("block")
    response = gate.review(stored.json()["id"])
    assert response["allowed"] is False
    assert "before" in response["status"]["message"]


def test_old_summary_after_quarantine_denied(gate: Gate) -> None:
    stored = gate.store(signed_summary(gate.key, datetime.now(UTC) - timedelta(hours=1)))
    gate.decide("quarantine")
    assert gate.review(stored.json()["id"])["allowed"] is False


@pytest.mark.parametrize("stage", ["Deployment", "deployment ", "DEPLOYMENT", "fine_tuning"])
def test_stage_spelling_denied(gate: Gate, stage: str) -> None:
    # A variant spelling matches the summary's level but none of the gate's
    # decisions, so it would skip the check against the later block.
    stored = gate.store(signed_summary(gate.key, datetime.now(UTC) - timedelta(hours=1)))
    gate.decide("block")
    response = gate.review(stored.json()["id"], stage=stage)
    assert response["allowed"] is False
    assert "attestgate.dev/stage" in response["status"]["message"]


def test_newer_summary_after_block_admits(gate: Gate) -> None:
    gate.decide("block")
    stored = gate.store(signed_summary(gate.key, datetime.now(UTC) + timedelta(seconds=60)))
    assert gate.review(stored.json()["id"])["allowed"] is True


def test_summary_without_decision_admits(gate: Gate) -> None:
    stored = gate.store(signed_summary(gate.key, datetime.now(UTC) - timedelta(hours=1)))
    assert gate.review(stored.json()["id"])["allowed"] is True


def test_submitter_cannot_store(gate: Gate) -> None:
    envelope = signed_summary(gate.key, datetime.now(UTC))
    assert gate.store(envelope, role="submitter").status_code == 403


def test_deep_summary_rejected(gate: Gate) -> None:
    body = "[" * 100_000 + "]" * 100_000
    response = gate.client.post("/verification-summaries", content=body, headers=gate.auth())
    assert response.status_code == 400


def test_deep_extra_field_rejected(gate: Gate) -> None:
    envelope = signed_summary(gate.key, datetime.now(UTC))
    body = json.dumps(envelope)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
    response = gate.client.post("/verification-summaries", content=body, headers=gate.auth())
    assert response.status_code == 400


def test_deep_review_rejected(gate: Gate) -> None:
    body = '{"kind": "AdmissionReview", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = gate.client.post("/k8s/admission-review", content=body)
    assert response.status_code == 400


def test_huge_review_rejected(gate: Gate) -> None:
    body = '{"kind": "AdmissionReview", "pad": "' + "a" * (9 * 1024 * 1024) + '"}'
    response = gate.client.post("/k8s/admission-review", content=body)
    assert response.status_code == 413


def test_producer_key_as_summary_key_raises(tmp_path: Path) -> None:
    # A key that the policy trusts to sign producers' claims must not also
    # vouch for artifacts as a verification summary key.
    key = ec.generate_private_key(ec.SECP256R1())
    public = write_public(key, tmp_path / "producer.pub")
    document = yaml.safe_load(default_policy_bytes())
    document["trust"] = {"keys": [str(public)]}
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(document))
    config = ServiceConfig(
        home=tmp_path / "home",
        intake=tmp_path / "intake",
        workers=1,
        policy=load_policy(policy_file),
        vsa_keys=[load_public_key(public)],
    )
    with pytest.raises(UsageError, match="producer"):
        create_app(config)
