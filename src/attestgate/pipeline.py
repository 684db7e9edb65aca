"""Admission: identify, scan, evaluate the policy and record the decision.

::

    intake -> identify and scan (one pass) -> evidence -> policy -> audit record
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestgate.audit import AuditLog, AuditRecord
from attestgate.errors import UsageError
from attestgate.findings import Finding, Severity
from attestgate.identify.stream import Progress, process_files, root_digest
from attestgate.identify.walk import walk
from attestgate.policy import STAGES, Decision, Policy, evaluate, load_default_policy
from attestgate.record import ArtifactIdentity, build_record, check_runs
from attestgate.scanners.interface import Limits

logger = logging.getLogger(__name__)


@dataclass
class Admission:
    """The outcome of one admission: the record, the decision and its audit entry."""

    record: dict[str, Any]
    decision: Decision
    audit: AuditRecord | None

    @property
    def action(self) -> str:
        return self.decision.action.label


@dataclass
class Inspection:
    """The identify-and-scan result for an artifact, before any policy applies."""

    artifact: ArtifactIdentity
    findings: list[Finding]
    timings: dict[str, float]


def inspect(
    path: Path,
    *,
    limits: Limits | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Inspection:
    """Identify and scan ``path`` without deciding anything."""
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"artifact path {path} does not exist", hint="check the path and try again"
        )
    limits = limits or Limits()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    listing = walk(path)
    timings["intake"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    reports = process_files(listing.entries, limits, progress, workers)
    elapsed = time.perf_counter() - t0
    scan_seconds = sum(r.scan_seconds for r in reports)
    # Files run on parallel threads, so scanner time is apportioned to the
    # wall-clock time of the pass by its share of the summed thread time.
    busy = sum(r.scan_seconds + r.read_seconds for r in reports) or 1.0
    timings["scan"] = elapsed * scan_seconds / busy
    timings["identify"] = elapsed - timings["scan"]

    is_file = path.is_file()
    kind = "file" if is_file else "directory"
    digest = reports[0].sha256 if is_file and reports else root_digest(reports)
    artifact = ArtifactIdentity(
        path=str(path.resolve()),
        kind=kind,
        sha256=digest,
        files=reports,
        excluded=listing.excluded,
    )
    findings = list(listing.findings)
    for report in reports:
        findings.extend(report.findings)
    findings.extend(_artifact_findings(artifact))
    return Inspection(artifact, findings, timings)


def _artifact_findings(artifact: ArtifactIdentity) -> list[Finding]:
    where = Path(artifact.path).name
    if not artifact.files or artifact.size == 0:
        return [
            Finding(
                "identify.empty",
                Severity.MEDIUM,
                where,
                f"the artifact {where} has no content to identify (no files, or only empty ones)",
                "Check that the path points at the model file or directory you meant to admit.",
                check="identify",
            )
        ]
    return []


def _evidence_findings(artifact: ArtifactIdentity) -> list[Finding]:
    # Verifying signatures and attestations comes later; today every
    # admission lacks verified provenance, and the policy decides what that means.
    where = Path(artifact.path).name
    return [
        Finding(
            "provenance.missing",
            Severity.MEDIUM,
            where,
            f"no signed provenance binds the artifact digest sha256:{artifact.sha256} "
            "to a trusted producer",
            "Ask the producer for a signature over this exact artifact: an OpenSSF Model "
            "Signing signature (`model_signing sign` writes model.sig into the model "
            "directory) or an in-toto statement whose subject digest is "
            f"sha256:{artifact.sha256}.",
            check="evidence",
        )
    ]


def admit(
    path: Path,
    *,
    stage: str = "deployment",
    policy: Policy | None = None,
    home: Path,
    limits: Limits | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Admission:
    """Admit ``path`` for ``stage`` and append the decision to the audit log in ``home``."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", hint=f"use one of: {', '.join(STAGES)}")
    policy = policy or load_default_policy()
    audit = AuditLog(home)
    try:
        inspection = inspect(path, limits=limits, progress=progress, workers=workers)
        timings = inspection.timings

        t0 = time.perf_counter()
        findings = inspection.findings + _evidence_findings(inspection.artifact)
        timings["evidence"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        decision = evaluate(policy, stage, findings)
        timings["policy"] = time.perf_counter() - t0

        record_id = str(uuid.uuid4())
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        record = build_record(
            record_id=record_id,
            created_at=created_at,
            stage=stage,
            artifact=inspection.artifact,
            findings=findings,
            decision=decision,
            policy=policy,
            checks=check_runs(inspection.artifact.files),
            timings=timings,
        )
        entry = audit.append(
            "decision",
            record,
            artifact_digest=f"sha256:{inspection.artifact.sha256}",
            record_id=record_id,
        )
        # The stored copy cannot contain the time taken to store it, so only
        # the returned copy carries the "record" timing.
        record["timings"]["record"] = round(time.perf_counter() - t0, 6)
        logger.info(
            "admission %s of %s for %s: %s",
            record_id,
            path,
            stage,
            decision.action.label,
        )
        return Admission(record, decision, entry)
    finally:
        audit.close()
