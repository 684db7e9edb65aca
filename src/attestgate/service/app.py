"""The FastAPI application: admissions, decisions, quarantine, tokens, health and metrics.

Every path but ``/healthz``, ``/readyz``, ``/metrics``, ``/k8s/admission-review``
and the triage page's login needs ``Authorization: Bearer <token>``. Roles:
a submitter submits and reads its own admissions and decisions; a reviewer
also reads everything, approves or rejects, and stores verification
summaries for the webhook; an admin also manages tokens.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from attestgate._version import __version__
from attestgate.audit import AuditLog, AuditRecord
from attestgate.errors import AttestgateError, UsageError
from attestgate.evidence.keys import PublicKey
from attestgate.pipeline import admit
from attestgate.policy import Policy, load_default_policy
from attestgate.policy.model import TIERS
from attestgate.policy.trust import trust_config
from attestgate.service import webhook
from attestgate.service.jobs import Job, JobQueue
from attestgate.service.metrics import Metrics
from attestgate.service.summaries import (
    DEFAULT_MAX_AGE,
    MAX_ENVELOPE_BYTES,
    LaterDecision,
    SummaryError,
    SummaryStore,
    SummaryTrust,
    check_summary,
)
from attestgate.service.tokens import ApiToken, TokenStore
from attestgate.stages import STAGES
from attestgate.storage import open_engine
from attestgate.stores import act_on_admission, fsck, list_queue
from attestgate.stores import approve as approve_item
from attestgate.stores import reject as reject_item
from attestgate.stores import show as show_item
from attestgate.stores.queue import NotQueuedError
from attestgate.stores.queue_table import STATES, count_queued
from attestgate.stores.reconcile import reconcile_once

logger = logging.getLogger(__name__)

Stage = Literal["training", "fine-tuning", "deployment"]
MiB = 1024 * 1024
MAX_WAIT_SECONDS = 30.0
# An AdmissionReview carries the pod twice (object and oldObject), and the
# API server stores objects of at most 1.5 MiB by default.
MAX_REVIEW_BYTES = 8 * MiB
UPLOAD_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@dataclass
class ServiceConfig:
    """Settings of one service instance."""

    home: Path
    # Submitted paths must resolve inside this directory (default HOME/intake).
    intake: Path | None = None
    workers: int = 4
    max_upload_bytes: int = 64 * MiB
    policy: Policy | None = None
    # Public keys whose signatures on verification summaries the webhook trusts.
    vsa_keys: list[PublicKey] = field(default_factory=list)
    # SHA-256 digests of policies, besides the service's own, whose summaries count.
    vsa_policy_digests: list[str] = field(default_factory=list)
    vsa_max_age: timedelta = DEFAULT_MAX_AGE

    @property
    def intake_root(self) -> Path:
        return (self.intake or self.home / "intake").resolve()


class Service:
    """The state one app holds: database, tokens, job queue, metrics and audit reader."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.home = config.home
        self.home.mkdir(parents=True, exist_ok=True)
        config.intake_root.mkdir(parents=True, exist_ok=True)
        removed = fsck(self.home)
        if removed:
            logger.warning("removed %d unfinished promotion(s) at start", len(removed))
        self.audit = AuditLog(self.home)
        reconcile_once(self.home, self.audit)
        self.engine = open_engine(self.home)
        self.tokens = TokenStore(self.engine)
        self.summaries = SummaryStore(self.engine)
        policy = config.policy or load_default_policy()
        _check_summary_keys(policy, config.vsa_keys)
        own_policy = policy.sha256
        self.summary_trust = SummaryTrust(
            keys=tuple(config.vsa_keys),
            policy_digests=frozenset({own_policy, *(d.lower() for d in config.vsa_policy_digests)}),
            max_age=config.vsa_max_age,
        )
        self.metrics = Metrics(self._queue_depth, self._quarantine_depth)
        self.jobs = JobQueue(
            self.engine, self._admit, workers=config.workers, on_done=self._job_done
        )

    def _queue_depth(self) -> int:
        return self.jobs.depth()

    def _quarantine_depth(self) -> int:
        with self.engine.connect() as conn:
            return count_queued(conn)

    def _admit(self, path: Path, stage: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        admission = admit(path, stage=stage, policy=self.config.policy, home=self.home)
        promotion = act_on_admission(self.home, admission.record)
        for name, seconds in admission.record.get("timings", {}).items():
            self.metrics.stage_seconds.labels(name).observe(seconds)
        return admission.record, promotion.to_json() if promotion else None

    def _job_done(self, job: Job, seconds: float) -> None:
        if job.decision:
            self.metrics.decisions.labels(job.decision).inc()
            self.metrics.admission_seconds.observe(seconds)
        else:
            self.metrics.failures.inc()

    def _latest_decision_record(self, digest: str, stage: str) -> AuditRecord | None:
        for record in self.audit.records(newest_first=True, artifact_digest=digest):
            if record.kind == "decision" and record.body.get("stage") == stage:
                return record
        return None

    def latest_decision(self, digest: str, stage: str) -> str | None:
        record = self._latest_decision_record(digest, stage)
        return None if record is None else str(record.body.get("decision"))

    def check_summary(self, summary_id: str, digest: str, stage: str) -> str | None:
        """Check a stored verification summary for the webhook; return why it fails, or None."""
        now = datetime.now(UTC)
        record = self._latest_decision_record(digest, stage)
        later = None
        if record is not None and record.body.get("decision") != "allow":
            later = LaterDecision(
                str(record.body.get("decision")), datetime.fromisoformat(record.created_at)
            )
        return self.summaries.check(summary_id, digest, stage, self.summary_trust, now, later)

    def close(self) -> None:
        self.jobs.shutdown()
        self.audit.close()
        self.engine.dispose()


def _check_summary_keys(policy: Policy, vsa_keys: list[PublicKey]) -> None:
    """Raise UsageError when a summary key is also a key the policy trusts for producers.

    A producer with such a key could sign a passing summary for its own
    artifact, so the two roles need different keys.
    """
    if not vsa_keys:
        return
    producer_ids: set[str] = set()
    try:
        configs = [trust_config(policy)]
        configs += [trust_config(policy, stage, tier) for stage in STAGES for tier in TIERS]
    except AttestgateError as exc:
        # The admissions report a key file that cannot be read, so this check
        # only compares the keys that load.
        logger.warning("could not compare the summary keys with the policy's keys: %s", exc)
        return
    for config in configs:
        producer_ids.update(key.key_id for key in config.keys)
    for key in vsa_keys:
        if key.key_id in producer_ids:
            raise UsageError(
                f"the verification summary key {key.key_id[:16]} is also a producer signing "
                f"key that policy {policy.source} trusts, so producers could vouch for their "
                "own artifacts",
                hint="give --vsa-trusted-key the public key of a key that only the gate holds",
            )


class AdmissionRequest(BaseModel):
    path: str = Field(description="artifact path on the intake volume, inside the intake root")
    stage: Stage = "deployment"


class ApproveRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=4000)
    expires: datetime = Field(description="when the exception ends, with a time zone")


class RejectRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=4000)


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["submitter", "reviewer", "admin"]


bearer = HTTPBearer(auto_error=False)


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def current_token(
    service: Annotated[Service, Depends(get_service)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiToken:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    token = service.tokens.authenticate(credentials.credentials)
    if token is None:
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return token


def require(permission: str) -> Callable[[ApiToken], ApiToken]:
    def check(token: Annotated[ApiToken, Depends(current_token)]) -> ApiToken:
        if not token.can(permission):
            raise HTTPException(403, f"role {token.role} may not {permission}")
        return token

    return check


Submitter = Annotated[ApiToken, Depends(require("submit"))]
Reader = Annotated[ApiToken, Depends(require("read-own"))]
Reviewer = Annotated[ApiToken, Depends(require("review"))]
Admin = Annotated[ApiToken, Depends(require("manage-tokens"))]
ServiceDep = Annotated[Service, Depends(get_service)]


def resolve_intake(service: Service, text: str) -> Path:
    """Resolve a submitted path and reject it unless it lies inside the intake root."""
    root = service.config.intake_root
    candidate = Path(text)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise HTTPException(404, f"path {text} does not exist on the intake volume") from None
    if resolved != root and root not in resolved.parents:
        raise HTTPException(403, f"path {text} is outside the intake root {root}")
    return resolved


def _own_job(service: Service, token: ApiToken, job_id: str) -> Job:
    job = service.jobs.get(job_id)
    if job is None or (job.owner != token.id and not token.can("read-all")):
        raise HTTPException(404, f"admission {job_id} not found")
    return job


def _register_admissions(app: FastAPI) -> None:
    @app.post("/admissions", status_code=202, tags=["admissions"])
    def submit_admission(body: AdmissionRequest, service: ServiceDep, token: Submitter) -> Any:
        """Queue an admission of a path on the intake volume; poll the returned link."""
        path = resolve_intake(service, body.path)
        job = service.jobs.submit(token.id, path, body.stage)
        return {**job.to_json(), "links": {"self": f"/admissions/{job.id}"}}

    @app.post("/admissions/upload", status_code=202, tags=["admissions"])
    async def upload_admission(
        service: ServiceDep,
        token: Submitter,
        file: Annotated[UploadFile, File(description="a small artifact file")],
        stage: Annotated[Stage, Form()] = "deployment",
    ) -> Any:
        """Queue an admission of an uploaded file (at most the configured upload size)."""
        name = Path(file.filename or "upload.bin").name
        if not UPLOAD_NAME_RE.match(name):
            name = "upload.bin"
        folder = service.home / "uploads" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        target = folder / name
        size = 0
        with open(target, "xb") as out:
            while chunk := await file.read(MiB):
                size += len(chunk)
                if size > service.config.max_upload_bytes:
                    out.close()
                    target.unlink()
                    folder.rmdir()
                    raise HTTPException(
                        413,
                        f"upload exceeds {service.config.max_upload_bytes} bytes; "
                        "place large artifacts on the intake volume and submit the path",
                    )
                out.write(chunk)
        job = service.jobs.submit(token.id, target, stage, uploaded=True)
        return {**job.to_json(), "links": {"self": f"/admissions/{job.id}"}}

    @app.get("/admissions/{job_id}", tags=["admissions"])
    def get_admission(job_id: str, service: ServiceDep, token: Reader, wait: float = 0.0) -> Any:
        """Return an admission's status, and its decision once it has one.

        With ``wait`` (seconds, at most 30), respond as soon as the admission
        finishes or the time runs out, instead of at once.
        """
        job = _own_job(service, token, job_id)
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        while job.status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = _own_job(service, token, job_id)
        return job.to_json()


def _register_decisions(app: FastAPI) -> None:
    @app.get("/decisions/{record_id}", tags=["decisions"])
    def get_decision(record_id: str, service: ServiceDep, token: Reader) -> Any:
        """Return a decision record with its audit entry."""
        record = service.audit.get(record_id)
        allowed = token.can("read-all") or service.jobs.owner_of_record(record_id) == token.id
        if record is None or record.kind != "decision" or not allowed:
            raise HTTPException(404, f"decision {record_id} not found")
        return {**record.body, "audit": {"seq": record.seq, "hash": record.hash}}

    @app.get("/decisions", tags=["decisions"])
    def list_decisions(
        service: ServiceDep, token: Reviewer, digest: str | None = None, limit: int = 50
    ) -> Any:
        """List decisions, newest first, optionally for one artifact digest."""
        records = service.audit.records(
            limit=min(max(limit, 1), 500) * 4, newest_first=True, artifact_digest=digest
        )
        found = [r for r in records if r.kind == "decision"][: min(max(limit, 1), 500)]
        return [
            {
                "id": r.record_id,
                "seq": r.seq,
                "created_at": r.created_at,
                "digest": r.artifact_digest,
                "stage": r.body.get("stage"),
                "decision": r.body.get("decision"),
                "summary": r.body.get("summary"),
            }
            for r in found
        ]

    @app.get("/audit", tags=["audit"])
    def list_audit(service: ServiceDep, token: Reviewer, limit: int = 100) -> Any:
        """List audit records, newest first."""
        records = service.audit.records(limit=min(max(limit, 1), 1000), newest_first=True)
        return [r.to_json() for r in records]

    @app.get("/audit/verify", tags=["audit"])
    def verify_audit(service: ServiceDep, token: Reviewer) -> Any:
        """Walk the hash chain and report the first break."""
        result = service.audit.verify()
        return {
            "ok": result.ok,
            "records": result.records,
            "first_bad_seq": result.first_bad_seq,
            "problem": result.problem,
        }


def _register_quarantine(app: FastAPI) -> None:
    @app.get("/quarantine", tags=["quarantine"])
    def list_quarantine(
        service: ServiceDep,
        token: Reviewer,
        stage: Stage | None = None,
        severity: Literal["info", "low", "medium", "high", "critical"] | None = None,
        older_than_hours: float | None = None,
        state: Literal["queued", "approved", "rejected", "all"] = "queued",
    ) -> Any:
        """List the quarantine queue, oldest first; ``state`` selects reviewed entries."""
        older = timedelta(hours=older_than_hours) if older_than_hours is not None else None
        items = list_queue(
            service.home,
            stage=stage,
            min_severity=severity,
            older_than=older,
            state=state if state in STATES else None,
        )
        return [i.to_json() for i in items]

    @app.get("/quarantine/{digest}", tags=["quarantine"])
    def get_quarantined(digest: str, service: ServiceDep, token: Reviewer) -> Any:
        """Return a quarantined artifact's record, earlier decisions and exceptions."""
        return show_item(service.home, digest)

    @app.post("/quarantine/{digest}/approve", tags=["quarantine"])
    def approve_quarantined(
        digest: str, body: ApproveRequest, service: ServiceDep, token: Reviewer
    ) -> Any:
        """Approve with a reason and an expiry; promote when the decision becomes allow."""
        result = approve_item(
            service.home,
            digest,
            reason=body.reason,
            approver=f"{token.name} (token {token.id})",
            expires=body.expires,
            policy=service.config.policy,
        )
        return result.to_json()

    @app.post("/quarantine/{digest}/reject", tags=["quarantine"])
    def reject_quarantined(
        digest: str, body: RejectRequest, service: ServiceDep, token: Reviewer
    ) -> Any:
        """Reject and remove from the quarantine store."""
        reject_item(service.home, digest, reason=body.reason, reviewer=f"{token.name} ({token.id})")
        return {"rejected": digest}


def _register_summaries(app: FastAPI) -> None:
    @app.post("/verification-summaries", tags=["verification summaries"])
    async def store_summary(
        request: Request, response: Response, service: ServiceDep, token: Reviewer
    ) -> Any:
        """Check and store a signed SLSA verification summary (a DSSE envelope as JSON).

        Respond 201 with its id when it is new, 200 when it was stored before.
        Pods name it in the ``attestgate.dev/verification-summaries`` annotation.
        """
        body = await _read_body(request, MAX_ENVELOPE_BYTES, "a verification summary")
        document = _parse_json(body)
        try:
            checked, created = service.summaries.add(
                document,
                service.summary_trust,
                submitted_by=f"{token.name} (token {token.id})",
                audit=service.audit,
            )
        except RecursionError:
            raise HTTPException(
                400, "the verification summary is invalid: its JSON is nested too deeply"
            ) from None
        response.status_code = 201 if created else 200
        return {**checked.to_json(), "created": created}

    @app.get("/verification-summaries/{summary_id}", tags=["verification summaries"])
    def get_summary(summary_id: str, service: ServiceDep, token: Reviewer) -> Any:
        """Return a stored summary's envelope and whether it passes the checks now."""
        document = service.summaries.envelope(summary_id)
        if document is None:
            raise HTTPException(404, f"verification summary {summary_id} not found")
        try:
            checked = check_summary(document, service.summary_trust, datetime.now(UTC))
        except SummaryError as exc:
            return {"id": summary_id, "valid": False, "problem": exc.message, "envelope": document}
        return {**checked.to_json(), "valid": True, "envelope": document}


def _register_tokens(app: FastAPI) -> None:
    @app.post("/tokens", status_code=201, tags=["tokens"])
    def create_token(body: TokenRequest, service: ServiceDep, token: Admin) -> Any:
        """Create a token; its secret appears only in this response."""
        created, secret = service.tokens.create(body.name, body.role)
        logger.info("token %s (%s) created by %s", created.id, created.role, token.id)
        return {**created.to_json(), "token": secret}

    @app.get("/tokens", tags=["tokens"])
    def list_tokens(service: ServiceDep, token: Admin) -> Any:
        return [t.to_json() for t in service.tokens.list()]

    @app.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
    def revoke_token(token_id: str, service: ServiceDep, token: Admin) -> Response:
        if not service.tokens.revoke(token_id):
            raise HTTPException(404, f"token {token_id} not found or already revoked")
        logger.info("token %s revoked by %s", token_id, token.id)
        return Response(status_code=204)


def _register_operations(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"])
    def healthz() -> Any:
        """Liveness: the process responds."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz(service: ServiceDep) -> Any:
        """Readiness: the database responds and the store is writable."""
        problems = []
        try:
            with service.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            problems.append(f"database: {exc}")
        store = service.home / "store"
        store.mkdir(exist_ok=True)
        probe = store / f".ready-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            problems.append(f"store {store} is not writable: {exc.strerror or exc}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"])
    def metrics(service: ServiceDep) -> Response:
        """Prometheus metrics in the text exposition format."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/k8s/admission-review", tags=["kubernetes"])
    async def admission_review(request: Request, service: ServiceDep) -> Any:
        """Validating admission webhook for pods; see the ``attestgate.dev/models`` annotation."""
        document = _parse_json(await _read_body(request, MAX_REVIEW_BYTES, "an AdmissionReview"))
        try:
            return webhook.review(document, service.latest_decision, service.check_summary)
        except ValueError as exc:
            raise HTTPException(400, f"invalid AdmissionReview: {exc}") from exc


async def _read_body(request: Request, limit: int, description: str) -> bytes:
    """Read a request body, and respond 413 when it is longer than ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"{description} is at most {limit} bytes")
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    """Parse a JSON request body, and respond 400 when it is invalid or nested too deeply."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from exc
    except RecursionError:
        raise HTTPException(400, "the body is invalid JSON: it is nested too deeply") from None


def _access_log(app: FastAPI) -> None:
    @app.middleware("http")
    async def log_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        service: Service = request.app.state.service
        service.metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        response.headers["x-request-id"] = request_id
        logger.info(
            "%s %s %d",
            request.method,
            template,
            response.status_code,
            extra={
                "request_id": request_id,
                "method": request.method,
                "route": template,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return response


def create_app(config: ServiceConfig) -> FastAPI:
    """Build the application; it starts its workers now and stops them on shutdown."""
    service = Service(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        logger.info("service started with state directory %s", config.home)
        yield
        service.close()
        logger.info("service stopped")

    app = FastAPI(
        title="attestgate",
        version=__version__,
        description="Promotion gate for machine-learning artifacts: admissions, decisions, "
        "the quarantine queue and a Kubernetes admission webhook.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(AttestgateError)
    async def gate_error(_request: Request, exc: AttestgateError) -> JSONResponse:
        status = 400 if isinstance(exc, UsageError) else 500
        if isinstance(exc, NotQueuedError):
            status = 404
        return JSONResponse({"detail": exc.message, "hint": exc.hint}, status_code=status)

    _register_admissions(app)
    _register_decisions(app)
    _register_quarantine(app)
    _register_summaries(app)
    _register_tokens(app)
    _register_operations(app)
    from attestgate.service.ui import register_ui

    register_ui(app)
    _access_log(app)
    return app
