"""The webhook admits a model by a stored, valid verification summary instead of a decision."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from service_support import make_tokens, write_intake

from attestgate.evidence import dsse
from attestgate.evidence.interface import IN_TOTO_PAYLOAD_TYPE
from attestgate.evidence.keys import load_public_key
from attestgate.policy import load_default_policy
from attestgate.policy.vsa import build_vsa
from attestgate.service import ServiceConfig, create_app, webhook
from attestgate.service.summaries import summaries_table, summary_id
from attestgate.storage import open_engine

DIGEST = "ab" * 32
OTHER = "cd" * 32


def _key(tmp_path: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / f"{name}.pub"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    gate, gate_pub = _key(tmp_path, "gate")
    other, other_pub = _key(tmp_path, "other")
    return {"gate": gate, "gate_pub": gate_pub, "other": other, "other_pub": other_pub}


class Gate:
    def __init__(self, home: Path, client: TestClient, tokens: dict[str, str]) -> None:
        self.home = home
        self.client = client
        self.tokens = tokens

    def auth(self, role: str = "reviewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def post(self, envelope: dict[str, Any], role: str = "reviewer") -> Any:
        return self.client.post(
            "/verification-summaries", content=json.dumps(envelope), headers=self.auth(role)
        )

    def review(self, digest: str, ids: list[str] | str, stage: str = "deployment") -> Any:
        annotations = {
            "attestgate.dev/models": f"sha256:{digest}",
            "attestgate.dev/stage": stage,
            "attestgate.dev/verification-summaries": ids if isinstance(ids, str) else ",".join(ids),
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
        assert response.status_code == 200
        return response.json()["response"]


def _app(home: Path, intake: Path, keys: list[Path], **extra: Any) -> Any:
    config = ServiceConfig(
        home=home,
        intake=intake,
        workers=1,
        vsa_keys=[load_public_key(path) for path in keys],
        **extra,
    )
    return create_app(config)


@pytest.fixture
def gate(tmp_path: Path, keys: dict[str, Any]) -> Iterator[Gate]:
    home = tmp_path / "home"
    intake = tmp_path / "intake"
    write_intake(intake)
    tokens = make_tokens(home)
    with TestClient(_app(home, intake, [keys["gate_pub"]])) as client:
        yield Gate(home, client, tokens)


def _statement(
    digest: str = DIGEST,
    *,
    stage: str = "deployment",
    decision: str = "allow",
    verified: datetime | None = None,
    policy_digest: str | None = None,
) -> dict[str, Any]:
    record = {
        "id": "record-1",
        "created_at": (verified or datetime.now(UTC)).isoformat(timespec="seconds"),
        "stage": stage,
        "decision": decision,
        "artifact": {"path": "/models/model.bin", "digest": {"sha256": digest}},
        "policy": {
            "source": "builtin:default",
            "digest": {"sha256": policy_digest or load_default_policy().sha256},
        },
        "evaluation": {"enforcement": {"decision": decision, "mode": "enforce"}},
        "reasons": [],
    }
    return build_vsa(record)


def _sign(statement: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    payload = dsse.encode_json(statement)
    return dsse.sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, key).to_json()


def _store_raw(home: Path, envelope: dict[str, Any]) -> str:
    """Insert an envelope without any check, as a tampered database would hold it."""
    engine = open_engine(home)
    identifier = summary_id(envelope)
    with engine.begin() as conn:
        conn.execute(
            summaries_table.insert().values(
                id=identifier,
                envelope=json.dumps(envelope),
                subjects=json.dumps([DIGEST]),
                verifier_id="x",
                policy_digest="x",
                time_verified="2026-01-01T00:00:00+00:00",
                key_id="x",
                submitted_by="nobody",
                submitted_at="2026-01-01T00:00:00+00:00",
                audit_seq=0,
            )
        )
    engine.dispose()
    return identifier


def test_summary_allows_pod(gate: Gate, keys: dict[str, Any]) -> None:
    posted = gate.post(_sign(_statement(), keys["gate"]))
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert body["subjects"] == [f"sha256:{DIGEST}"]
    response = gate.review(DIGEST, [body["id"]])
    assert response["allowed"] is True
    assert body["id"] in response["warnings"][0]


def test_summary_stored_once(gate: Gate, keys: dict[str, Any]) -> None:
    envelope = _sign(_statement(), keys["gate"])
    assert gate.post(envelope).status_code == 201
    again = gate.post(envelope)
    assert again.status_code == 200
    assert again.json()["created"] is False


def test_summary_add_audited(gate: Gate, keys: dict[str, Any]) -> None:
    summary = gate.post(_sign(_statement(), keys["gate"])).json()
    records = gate.client.get("/audit", headers=gate.auth()).json()
    added = [r for r in records if r["kind"] == "vsa.add"]
    assert [r["body"]["id"] for r in added] == [summary["id"]]
    assert added[0]["artifact_digest"] == f"sha256:{DIGEST}"


def test_pod_without_annotation_denied(gate: Gate, keys: dict[str, Any]) -> None:
    gate.post(_sign(_statement(), keys["gate"]))
    response = gate.review(DIGEST, [])
    assert response["allowed"] is False
    assert "no decision" in response["status"]["message"]


def test_other_digest_denied(gate: Gate, keys: dict[str, Any]) -> None:
    summary = gate.post(_sign(_statement(), keys["gate"])).json()
    response = gate.review(OTHER, [summary["id"]])
    assert response["allowed"] is False
    assert f"does not name sha256:{OTHER}" in response["status"]["message"]


def test_other_stage_denied(gate: Gate, keys: dict[str, Any]) -> None:
    summary = gate.post(_sign(_statement(stage="training"), keys["gate"])).json()
    response = gate.review(DIGEST, [summary["id"]])
    assert response["allowed"] is False
    assert "ATTESTGATE_STAGE_DEPLOYMENT" in response["status"]["message"]


def test_failed_result_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    envelope = _sign(_statement(decision="quarantine"), keys["gate"])
    posted = gate.post(envelope)
    assert posted.status_code == 400
    assert "'FAILED', not PASSED" in posted.json()["detail"]
    response = gate.review(DIGEST, [_store_raw(gate.home, envelope)])
    assert response["allowed"] is False
    assert "not PASSED" in response["status"]["message"]


def test_bad_signature_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    envelope = _sign(_statement(), keys["gate"])
    signature = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    signature[-1] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    posted = gate.post(envelope)
    assert posted.status_code == 400
    assert "does not verify" in posted.json()["detail"]
    response = gate.review(DIGEST, [_store_raw(gate.home, envelope)])
    assert response["allowed"] is False
    assert "does not verify" in response["status"]["message"]


def test_altered_payload_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    envelope = _sign(_statement(OTHER), keys["gate"])
    forged = dsse.encode_json(_statement(DIGEST))
    envelope["payload"] = base64.b64encode(forged).decode()
    response = gate.review(DIGEST, [_store_raw(gate.home, envelope)])
    assert response["allowed"] is False
    assert "does not verify" in response["status"]["message"]


def test_untrusted_key_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    envelope = _sign(_statement(), keys["other"])
    posted = gate.post(envelope)
    assert posted.status_code == 400
    response = gate.review(DIGEST, [_store_raw(gate.home, envelope)])
    assert response["allowed"] is False
    assert "does not verify under any trusted VSA key" in response["status"]["message"]


def test_removed_key_denied(tmp_path: Path, gate: Gate, keys: dict[str, Any]) -> None:
    summary = gate.post(_sign(_statement(), keys["gate"])).json()
    rotated = _app(gate.home, tmp_path / "intake", [keys["other_pub"]])
    with TestClient(rotated) as client:
        later = Gate(gate.home, client, gate.tokens)
        response = later.review(DIGEST, [summary["id"]])
    assert response["allowed"] is False


def test_expired_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    verified = datetime.now(UTC) - timedelta(days=31)
    envelope = _sign(_statement(verified=verified), keys["gate"])
    posted = gate.post(envelope)
    assert posted.status_code == 400
    assert "expired" in posted.json()["detail"]
    response = gate.review(DIGEST, [_store_raw(gate.home, envelope)])
    assert response["allowed"] is False
    assert "expired" in response["status"]["message"]


def test_future_time_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    verified = datetime.now(UTC) + timedelta(hours=1)
    posted = gate.post(_sign(_statement(verified=verified), keys["gate"]))
    assert posted.status_code == 400
    assert "in the future" in posted.json()["detail"]


def test_other_policy_rejected(gate: Gate, keys: dict[str, Any]) -> None:
    posted = gate.post(_sign(_statement(policy_digest="ef" * 32), keys["gate"]))
    assert posted.status_code == 400
    assert "does not accept" in posted.json()["detail"]


def test_configured_policy_accepted(tmp_path: Path, keys: dict[str, Any]) -> None:
    home = tmp_path / "home2"
    tokens = make_tokens(home)
    app = _app(home, tmp_path / "intake", [keys["gate_pub"]], vsa_policy_digests=["EF" * 32])
    with TestClient(app) as client:
        other = Gate(home, client, tokens)
        posted = other.post(_sign(_statement(policy_digest="ef" * 32), keys["gate"]))
        assert posted.status_code == 201, posted.text
        assert other.review(DIGEST, [posted.json()["id"]])["allowed"] is True


def test_no_trusted_keys(tmp_path: Path, keys: dict[str, Any]) -> None:
    home = tmp_path / "home3"
    tokens = make_tokens(home)
    with TestClient(_app(home, tmp_path / "intake", [])) as client:
        bare = Gate(home, client, tokens)
        posted = bare.post(_sign(_statement(), keys["gate"]))
    assert posted.status_code == 400
    assert "trusts no verification summary signing keys" in posted.json()["detail"]


def test_submitter_cannot_store(gate: Gate, keys: dict[str, Any]) -> None:
    posted = gate.post(_sign(_statement(), keys["gate"]), role="submitter")
    assert posted.status_code == 403


def test_not_json_rejected(gate: Gate) -> None:
    response = gate.client.post(
        "/verification-summaries", content=b"{not json", headers=gate.auth()
    )
    assert response.status_code == 400


def test_oversized_body_rejected(gate: Gate) -> None:
    response = gate.client.post(
        "/verification-summaries", content=b" " * (1024 * 1024 + 1), headers=gate.auth()
    )
    assert response.status_code == 413


def test_unknown_summary_denied(gate: Gate) -> None:
    response = gate.review(DIGEST, ["0" * 64])
    assert response["allowed"] is False
    assert "no verification summary with that id" in response["status"]["message"]


def test_malformed_annotation_denied(gate: Gate) -> None:
    response = gate.review(DIGEST, "not-an-id")
    assert response["allowed"] is False
    assert "attestgate.dev/verification-summaries is invalid" in response["status"]["message"]


def test_get_summary(gate: Gate, keys: dict[str, Any]) -> None:
    summary = gate.post(_sign(_statement(), keys["gate"])).json()
    response = gate.client.get(f"/verification-summaries/{summary['id']}", headers=gate.auth())
    assert response.json()["valid"] is True
    missing = gate.client.get(f"/verification-summaries/{'0' * 64}", headers=gate.auth())
    assert missing.status_code == 404


def test_review_needs_every_model() -> None:
    def lookup(digest: str, stage: str) -> str | None:
        return "allow" if digest == f"sha256:{DIGEST}" else None

    def check(summary: str, digest: str, stage: str) -> str | None:
        return None if summary == "a" * 64 and digest == f"sha256:{OTHER}" else "no"

    document = {
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"kind": "Pod"},
            "object": {
                "metadata": {
                    "annotations": {
                        "attestgate.dev/models": f"sha256:{DIGEST},sha256:{OTHER}",
                        "attestgate.dev/verification-summaries": "b" * 64,
                    }
                }
            },
        },
    }
    assert webhook.review(document, lookup, check)["response"]["allowed"] is False
    annotations = document["request"]["object"]["metadata"]["annotations"]  # type: ignore[index]
    annotations["attestgate.dev/verification-summaries"] = f"{'b' * 64},{'a' * 64}"
    assert webhook.review(document, lookup, check)["response"]["allowed"] is True
    assert webhook.review(document, lookup)["response"]["allowed"] is False
