"""The triage page: server-rendered HTML for reviewers working through the quarantine queue.

Reviewers sign in with an API token of role reviewer or admin. The session
lives in this process's memory, named by a random cookie (HttpOnly,
SameSite=Strict, path ``/triage``). Every form that changes state carries the
session's synchronizer token, compared in constant time, so a page on another
site cannot approve or reject.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from attestgate.errors import UsageError
from attestgate.stages import STAGES
from attestgate.stores import approve, list_queue, reject, show
from attestgate.stores.queue import NotQueuedError

COOKIE = "attestgate_session"
SESSION_SECONDS = 8 * 3600
SEVERITIES = ("info", "low", "medium", "high", "critical")

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


@dataclass
class Session:
    token_id: str
    name: str
    csrf: str
    expires: float


class Sessions:
    """Sign-in sessions, in memory: a restart signs every reviewer out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[str, Session] = {}

    def create(self, token_id: str, name: str) -> str:
        session_id = secrets.token_urlsafe(32)
        with self.lock:
            now = time.time()
            self.by_id = {k: v for k, v in self.by_id.items() if v.expires > now}
            self.by_id[session_id] = Session(
                token_id, name, secrets.token_urlsafe(32), now + SESSION_SECONDS
            )
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self.lock:
            session = self.by_id.get(session_id)
            if session is None or session.expires <= time.time():
                self.by_id.pop(session_id, None)
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        with self.lock:
            self.by_id.pop(session_id or "", None)


def _session(request: Request) -> Session | None:
    sessions: Sessions = request.app.state.sessions
    session = sessions.get(request.cookies.get(COOKIE))
    if session is None:
        return None
    # A revoked token or one demoted below reviewer ends its sessions.
    token = request.app.state.service.tokens.get(session.token_id)
    if token is None or not token.can("review"):
        sessions.drop(request.cookies.get(COOKIE))
        return None
    return session


def _check_csrf(session: Session, presented: str) -> None:
    if not hmac.compare_digest(session.csrf.encode(), presented.encode()):
        raise HTTPException(403, "invalid or missing CSRF token; reload the page and try again")


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/triage/login", status_code=303)


def _age(created_at: str) -> str:
    delta = datetime.now(UTC) - datetime.fromisoformat(created_at)
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def register_ui(app: FastAPI) -> None:
    """Add the ``/triage`` pages to ``app``."""
    app.state.sessions = Sessions()

    @app.get("/triage/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {"error": None})

    @app.post("/triage/login", include_in_schema=False)
    def login(request: Request, token: Annotated[str, Form()]) -> Response:
        found = request.app.state.service.tokens.authenticate(token.strip())
        if found is None or not found.can("review"):
            return templates.TemplateResponse(
                request,
                "login.html",
                {"error": "That token is invalid, revoked or not a reviewer's token."},
                status_code=401,
            )
        session_id = request.app.state.sessions.create(found.id, found.name)
        response = RedirectResponse("/triage", status_code=303)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            path="/triage",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/triage/logout", include_in_schema=False)
    def logout(request: Request, csrf_token: Annotated[str, Form()]) -> Response:
        session = _session(request)
        if session is not None:
            _check_csrf(session, csrf_token)
            request.app.state.sessions.drop(request.cookies.get(COOKIE))
        response = _login_redirect()
        response.delete_cookie(COOKIE, path="/triage")
        return response

    @app.get("/triage", response_class=HTMLResponse, include_in_schema=False)
    def queue_page(
        request: Request,
        stage: str = "",
        severity: str = "",
        older_than_hours: str = "",
    ) -> Response:
        session = _session(request)
        if session is None:
            return _login_redirect()
        hours = float(older_than_hours) if older_than_hours.replace(".", "", 1).isdigit() else None
        items = list_queue(
            request.app.state.service.home,
            stage=stage if stage in STAGES else None,
            min_severity=severity if severity in SEVERITIES else None,
            older_than=timedelta(hours=hours) if hours is not None else None,
        )
        rows = [{**i.to_json(), "age": _age(i.created_at)} for i in items]
        context: dict[str, Any] = {
            "session": session,
            "items": rows,
            "stages": STAGES,
            "severities": SEVERITIES,
            "filters": {"stage": stage, "severity": severity, "older_than_hours": older_than_hours},
        }
        return templates.TemplateResponse(request, "queue.html", context)

    @app.get("/triage/item/{digest}", response_class=HTMLResponse, include_in_schema=False)
    def detail_page(request: Request, digest: str, error: str = "") -> Response:
        session = _session(request)
        if session is None:
            return _login_redirect()
        try:
            shown = show(request.app.state.service.home, digest)
        except UsageError as exc:
            raise HTTPException(404, exc.message) from exc
        default_expiry = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
        context = {
            "session": session,
            "shown": shown,
            "record": shown["record"],
            "error": error,
            "default_expiry": default_expiry,
        }
        return templates.TemplateResponse(request, "detail.html", context)

    @app.post("/triage/item/{digest}/approve", include_in_schema=False)
    def approve_action(
        request: Request,
        digest: str,
        csrf_token: Annotated[str, Form()],
        reason: Annotated[str, Form()] = "",
        expires: Annotated[str, Form()] = "",
    ) -> Response:
        session = _session(request)
        if session is None:
            return _login_redirect()
        _check_csrf(session, csrf_token)
        try:
            expiry = _parse_expiry(expires)
            result = approve(
                request.app.state.service.home,
                digest,
                reason=reason,
                approver=f"{session.name} (token {session.token_id})",
                expires=expiry,
                policy=request.app.state.service.config.policy,
            )
        except NotQueuedError as exc:
            raise HTTPException(404, exc.message) from exc
        except UsageError as exc:
            return detail_page(request, digest, error=exc.message)
        note = f"approved {digest}: decision {result.decision}"
        return templates.TemplateResponse(
            request, "done.html", {"session": session, "message": note}
        )

    @app.post("/triage/item/{digest}/reject", include_in_schema=False)
    def reject_action(
        request: Request,
        digest: str,
        csrf_token: Annotated[str, Form()],
        reason: Annotated[str, Form()] = "",
    ) -> Response:
        session = _session(request)
        if session is None:
            return _login_redirect()
        _check_csrf(session, csrf_token)
        try:
            reject(
                request.app.state.service.home,
                digest,
                reason=reason,
                reviewer=f"{session.name} (token {session.token_id})",
            )
        except NotQueuedError as exc:
            raise HTTPException(404, exc.message) from exc
        except UsageError as exc:
            return detail_page(request, digest, error=exc.message)
        return templates.TemplateResponse(
            request, "done.html", {"session": session, "message": f"rejected {digest}"}
        )


def _parse_expiry(text: str) -> datetime:
    """Parse the form's expiry date; the exception lasts to the end of that day in UTC."""
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"invalid expiry {text!r}", hint="enter a date such as 2027-01-31"
        ) from None
    return day + timedelta(days=1) - timedelta(seconds=1)
