from __future__ import annotations

import re

from service_support import Env


def _login(env: Env, role: str = "reviewer") -> int:
    response = env.client.post(
        "/triage/login", data={"token": env.tokens[role]}, follow_redirects=False
    )
    return response.status_code


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def test_login_needs_reviewer(env: Env) -> None:
    assert _login(env, "submitter") == 401
    assert env.client.get("/triage", follow_redirects=False).status_code == 303
    assert _login(env, "reviewer") == 303
    assert env.client.get("/triage").status_code == 200


def test_queue_and_detail(env: Env) -> None:
    job = env.admit("model.bin")
    _login(env)
    page = env.client.get("/triage").text
    assert job["digest"][:23] in page
    assert "1 item(s)" in page
    filtered = env.client.get("/triage", params={"severity": "high"}).text
    assert "0 item(s)" in filtered
    detail = env.client.get(f"/triage/item/{job['digest']}").text
    assert "provenance.missing" in detail
    assert "Ask the producer" in detail


def test_csrf_required(env: Env) -> None:
    job = env.admit("model.bin")
    _login(env)
    form = {"csrf_token": "forged", "reason": "ok", "expires": "2099-01-01"}
    response = env.client.post(f"/triage/item/{job['digest']}/approve", data=form)
    assert response.status_code == 403
    assert env.client.post(f"/triage/item/{job['digest']}/reject", data=form).status_code == 403


def test_approve_via_page(env: Env) -> None:
    job = env.admit("model.bin")
    _login(env)
    detail = env.client.get(f"/triage/item/{job['digest']}").text
    form = {"csrf_token": _csrf(detail), "reason": "", "expires": "2099-01-01"}
    missing_reason = env.client.post(f"/triage/item/{job['digest']}/approve", data=form)
    assert "needs a reason" in missing_reason.text
    form["reason"] = "built in-house"
    form["expires"] = "not a date"
    assert (
        "invalid expiry" in env.client.post(f"/triage/item/{job['digest']}/approve", data=form).text
    )
    form["expires"] = _later_date()
    done = env.client.post(f"/triage/item/{job['digest']}/approve", data=form)
    assert "decision allow" in done.text


def test_reject_via_page(env: Env) -> None:
    job = env.admit("model.bin")
    _login(env)
    detail = env.client.get(f"/triage/item/{job['digest']}").text
    form = {"csrf_token": _csrf(detail), "reason": "unknown origin"}
    done = env.client.post(f"/triage/item/{job['digest']}/reject", data=form)
    assert "rejected" in done.text
    assert "0 item(s)" in env.client.get("/triage").text


def test_revoked_token_ends_session(env: Env) -> None:
    _login(env)
    store = env.client.app.state.service.tokens  # type: ignore[attr-defined]
    reviewer = next(t for t in store.list() if t.role == "reviewer")
    store.revoke(reviewer.id)
    assert env.client.get("/triage", follow_redirects=False).status_code == 303


def _later_date() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
