from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from service_support import Env

from attestgate.audit import AuditLog
from attestgate.service.logs import JsonFormatter


def _approve_body(days: int = 30) -> dict[str, str]:
    expires = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    return {"reason": "built in-house", "expires": expires}


def _pod(digests: str | None, uid: str = "u-1", stage: str | None = None) -> dict[str, Any]:
    annotations = {}
    if digests is not None:
        annotations["attestgate.dev/models"] = digests
    if stage is not None:
        annotations["attestgate.dev/stage"] = stage
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "object": {"metadata": {"name": "p", "annotations": annotations}},
        },
    }


def test_openapi_paths(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    for path in ("/admissions", "/decisions/{record_id}", "/quarantine", "/healthz", "/readyz"):
        assert path in paths
    assert "/k8s/admission-review" in paths


def test_missing_token_rejected(env: Env) -> None:
    assert env.client.post("/admissions", json={"path": "model.bin"}).status_code == 401
    bad = {"Authorization": "Bearer agt_0000_nope"}
    assert env.client.get("/quarantine", headers=bad).status_code == 401


def test_submit_and_read_decision(env: Env) -> None:
    job = env.admit("model.bin")
    assert job["status"] == "done"
    assert job["decision"] == "quarantine"
    assert job["promotion"]["store"] == "quarantine"
    record = env.client.get(f"/decisions/{job['record_id']}", headers=env.auth("submitter"))
    assert record.status_code == 200
    assert record.json()["decision"] == "quarantine"


def test_block_stores_nothing(env: Env) -> None:
    job = env.admit("evil.pkl")
    assert job["decision"] == "block"
    assert job["promotion"] is None


def test_intake_root_enforced(env: Env, tmp_path: Any) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    (env.intake / "link.bin").symlink_to(outside)
    headers = env.auth("submitter")
    for path, status in ((str(outside), 403), ("link.bin", 403), ("../outside.bin", 403)):
        response = env.client.post("/admissions", json={"path": path}, headers=headers)
        assert response.status_code == status, path
    missing = env.client.post("/admissions", json={"path": "nope.bin"}, headers=headers)
    assert missing.status_code == 404


def test_submitter_cannot_review(env: Env) -> None:
    job = env.admit("model.bin")
    headers = env.auth("submitter")
    assert env.client.get("/quarantine", headers=headers).status_code == 403
    approve = env.client.post(
        f"/quarantine/{job['digest']}/approve", json=_approve_body(), headers=headers
    )
    assert approve.status_code == 403
    reject = env.client.post(
        f"/quarantine/{job['digest']}/reject", json={"reason": "x"}, headers=headers
    )
    assert reject.status_code == 403


def test_other_submitter_cannot_read(env: Env) -> None:
    job = env.admit("model.bin")
    created = env.client.post(
        "/tokens", json={"name": "other", "role": "submitter"}, headers=env.auth("admin")
    )
    other = {"Authorization": f"Bearer {created.json()['token']}"}
    assert env.client.get(f"/admissions/{job['id']}", headers=other).status_code == 404
    assert env.client.get(f"/decisions/{job['record_id']}", headers=other).status_code == 404


def test_reviewer_approves(env: Env) -> None:
    job = env.admit("model.bin")
    headers = env.auth("reviewer")
    queue = env.client.get("/quarantine", headers=headers).json()
    assert [item["digest"] for item in queue] == [job["digest"]]
    detail = env.client.get(f"/quarantine/{job['digest']}", headers=headers).json()
    assert detail["record"]["id"] == job["record_id"]
    approved = env.client.post(
        f"/quarantine/{job['digest']}/approve", json=_approve_body(), headers=headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["decision"] == "allow"
    assert env.client.get("/quarantine", headers=headers).json() == []
    review = env.client.post("/k8s/admission-review", json=_pod(job["digest"]))
    assert review.json()["response"]["allowed"] is True


def test_approve_past_expiry_rejected(env: Env) -> None:
    job = env.admit("model.bin")
    response = env.client.post(
        f"/quarantine/{job['digest']}/approve",
        json=_approve_body(days=-1),
        headers=env.auth("reviewer"),
    )
    assert response.status_code == 400


def test_reject_unknown_digest(env: Env) -> None:
    digest = "sha256:" + "0" * 64
    response = env.client.post(
        f"/quarantine/{digest}/reject", json={"reason": "x"}, headers=env.auth("reviewer")
    )
    assert response.status_code == 404


def test_upload_admission(env: Env) -> None:
    response = env.client.post(
        "/admissions/upload",
        files={"file": ("small.bin", b"\x00" * 64 + b"tiny")},
        data={"stage": "training"},
        headers=env.auth("submitter"),
    )
    assert response.status_code == 202, response.text
    job = env.wait(response.json()["id"])
    assert job["decision"] == "quarantine"
    assert not any((env.home / "uploads").iterdir())


def test_upload_too_large(env: Env) -> None:
    env.client.app.state.service.config.max_upload_bytes = 100  # type: ignore[attr-defined]
    response = env.client.post(
        "/admissions/upload",
        files={"file": ("big.bin", b"\x00" * 1000)},
        headers=env.auth("submitter"),
    )
    assert response.status_code == 413


def test_token_management(env: Env) -> None:
    reviewer = env.auth("reviewer")
    denied = env.client.post("/tokens", json={"name": "x", "role": "admin"}, headers=reviewer)
    assert denied.status_code == 403
    created = env.client.post(
        "/tokens", json={"name": "ci", "role": "submitter"}, headers=env.auth("admin")
    ).json()
    listed = env.client.get("/tokens", headers=env.auth("admin")).json()
    assert all("hash" not in t and "salt" not in t for t in listed)
    revoked = env.client.delete(f"/tokens/{created['id']}", headers=env.auth("admin"))
    assert revoked.status_code == 204
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert env.client.post("/admissions", json={"path": "x"}, headers=headers).status_code == 401


def test_webhook_cases(env: Env) -> None:
    def allowed(document: dict[str, Any]) -> bool:
        response = env.client.post("/k8s/admission-review", json=document)
        assert response.status_code == 200
        body = response.json()
        assert body["response"]["uid"] == document["request"]["uid"]
        return bool(body["response"]["allowed"])

    quarantined = env.admit("model.bin")["digest"]
    assert allowed(_pod(None))
    assert not allowed(_pod("sha256:" + "1" * 64))
    assert not allowed(_pod("latest"))
    assert not allowed(_pod(quarantined))
    deployment = _pod(None)
    deployment["request"]["kind"]["kind"] = "Deployment"
    assert allowed(deployment)
    assert env.client.post("/k8s/admission-review", json={"kind": "x"}).status_code == 400


def test_health_and_metrics(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    assert env.client.get("/readyz").json() == {"status": "ready"}
    env.admit("model.bin")
    text = env.client.get("/metrics").text
    assert 'attestgate_decisions_total{decision="quarantine"} 1.0' in text
    assert "attestgate_quarantine_queue_depth 1.0" in text
    assert 'attestgate_stage_seconds_count{stage="scan"}' in text


def test_audit_verifies(env: Env) -> None:
    env.admit("model.bin")
    result = env.client.get("/audit/verify", headers=env.auth("reviewer")).json()
    assert result["ok"] is True
    log = AuditLog(env.home)
    try:
        assert [r.kind for r in log.records()] == ["decision", "promotion"]
    finally:
        log.close()


def test_json_log_line() -> None:
    record = logging.makeLogRecord(
        {"name": "attestgate.x", "levelname": "INFO", "msg": "hi %s", "args": ("a",)}
    )
    record.request_id = "r1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hi a"
    assert line["request_id"] == "r1"
    assert line["level"] == "info"


def test_admission_long_poll(env: Env) -> None:
    headers = env.auth("submitter")
    job = env.client.post("/admissions", json={"path": "model.bin"}, headers=headers).json()
    waited = env.client.get(f"/admissions/{job['id']}", params={"wait": 30}, headers=headers)
    assert waited.json()["status"] == "done"
