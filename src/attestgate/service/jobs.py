"""Admission jobs: submitted requests that a pool of worker threads admits in the background.

A job row is written before the job is queued, and each worker admits the
artifact, stores it as its decision requires and records the outcome in the row.
Jobs still queued or running when the service stops are marked failed at the
next start, so a client polling them gets an answer.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from attestgate.errors import AttestgateError
from attestgate.storage import ensure_schema

logger = logging.getLogger(__name__)

metadata = sa.MetaData()
jobs_table = sa.Table(
    "admission_jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(32), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("uploaded", sa.Boolean, nullable=False, default=False),
    sa.Column("record_id", sa.String(36), nullable=True, index=True),
    sa.Column("decision", sa.String(16), nullable=True),
    sa.Column("digest", sa.String(80), nullable=True),
    sa.Column("promotion", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40), nullable=True),
)

# Runs one admission and returns (record, promotion JSON or None).
AdmitFn = Callable[[Path, str], tuple[dict[str, Any], dict[str, Any] | None]]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    status: str
    stage: str
    path: str
    uploaded: bool
    record_id: str | None
    decision: str | None
    digest: str | None
    error: str | None
    created_at: str
    finished_at: str | None
    promotion: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "path": self.path,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "decision": self.decision,
            "digest": self.digest,
            "record_id": self.record_id,
            "error": self.error,
            "promotion": json.loads(self.promotion) if self.promotion else None,
        }
        if self.record_id:
            out["links"] = {"decision": f"/decisions/{self.record_id}"}
        return out


class JobQueue:
    """The ``admission_jobs`` table and the worker pool that drains it."""

    def __init__(
        self,
        engine: Engine,
        admit_fn: AdmitFn,
        *,
        workers: int = 4,
        on_done: Callable[[Job, float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.admit_fn = admit_fn
        self.on_done = on_done
        ensure_schema(engine)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="admission")
        self.lock = threading.Lock()
        self.pending = 0
        self._fail_abandoned()

    def _fail_abandoned(self) -> None:
        with self.engine.begin() as conn:
            count = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.status.in_(("queued", "running")))
                .values(
                    status="failed",
                    error="the service stopped before the admission finished; submit it again",
                    finished_at=_now(),
                )
            ).rowcount
        if count:
            logger.warning("marked %d unfinished admission job(s) failed after a restart", count)

    def depth(self) -> int:
        with self.lock:
            return self.pending

    def submit(self, owner: str, path: Path, stage: str, *, uploaded: bool = False) -> Job:
        job_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(
                jobs_table.insert().values(
                    id=job_id,
                    owner=owner,
                    status="queued",
                    stage=stage,
                    path=str(path),
                    uploaded=uploaded,
                    created_at=_now(),
                )
            )
        with self.lock:
            self.pending += 1
        self.pool.submit(self._run, job_id, path, stage, uploaded)
        logger.info("queued admission job %s for %s (%s)", job_id, path, stage)
        job = self.get(job_id)
        assert job is not None
        return job

    def _update(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id).values(**values))

    def _run(self, job_id: str, path: Path, stage: str, uploaded: bool) -> None:
        started = time.perf_counter()
        try:
            self._update(job_id, status="running")
            record, promotion = self.admit_fn(path, stage)
            self._update(
                job_id,
                status="done",
                record_id=record["id"],
                decision=record["decision"],
                digest=f"sha256:{record['artifact']['digest']['sha256']}",
                promotion=json.dumps(promotion) if promotion is not None else None,
                finished_at=_now(),
            )
            logger.info("admission job %s: %s", job_id, record["decision"])
        except AttestgateError as exc:
            logger.warning("admission job %s failed: %s", job_id, exc.message)
            self._update(job_id, status="failed", error=exc.render(), finished_at=_now())
        except Exception as exc:  # a worker must record every failure, never die silently
            logger.exception("admission job %s failed", job_id)
            self._update(
                job_id, status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=_now()
            )
        finally:
            with self.lock:
                self.pending -= 1
            if uploaded:
                shutil.rmtree(path.parent, ignore_errors=True)
        job = self.get(job_id)
        if job is not None and self.on_done is not None:
            self.on_done(job, time.perf_counter() - started)

    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.id == job_id)).first()
        if row is None:
            return None
        return Job(**dict(row._mapping))

    def owner_of_record(self, record_id: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(jobs_table.c.owner).where(jobs_table.c.record_id == record_id)
            ).first()
        return None if row is None else str(row.owner)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)
