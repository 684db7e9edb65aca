"""Admission: identify, scan, evaluate the policy and record the decision.

::

    intake -> identify and scan (one pass) -> evidence -> dynamic plug-ins -> policy
           -> audit record

The evidence step verifies signatures and claims given with ``evidence=`` or
found beside the artifact; see :mod:`attestgate.evidence`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestgate.errors import UsageError
from attestgate.findings import Finding, Severity
from attestgate.identify.stream import Progress, process_files, root_digest
from attestgate.identify.walk import walk
from attestgate.record import ArtifactIdentity, CheckRun, build_record, check_runs
from attestgate.scanners.interface import Limits
from attestgate.stages import STAGES

if TYPE_CHECKING:
    from attestgate.audit import AuditLog, AuditRecord
    from attestgate.evidence import EvidenceReport, TrustConfig
    from attestgate.policy import Decision, Policy

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
    from attestgate.intake import inspect_local

    local = inspect_local(path, limits, progress, workers)
    if local is not None:
        # An image layout or archive, or a Hugging Face cache snapshot.
        return Inspection(local.artifact, local.findings, local.timings)
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


def _evidence(
    inspection: Inspection,
    policy: Policy,
    evidence: Sequence[Path],
    trust: TrustConfig | None,
    discover_evidence: bool,
    stage: str | None = None,
    tier: str | None = None,
) -> EvidenceReport:
    """Verify the evidence for the inspected artifact under the combined trust configuration."""
    from attestgate.evidence import verify_evidence

    combined = policy_trust(policy, stage, tier)
    if trust is not None:
        combined = combined.merge(trust)
    return verify_evidence(
        inspection.artifact,
        inspection.findings,
        evidence=evidence,
        trust=combined,
        discover=discover_evidence,
    )


def policy_trust(policy: Policy, stage: str | None = None, tier: str | None = None) -> TrustConfig:
    """Return the signers the policy trusts: its ``trust`` mapping and the stage's signers."""
    from attestgate.policy.trust import trust_config

    return trust_config(policy, stage, tier)


def admit(
    path: Path,
    *,
    stage: str = "deployment",
    policy: Policy | None = None,
    home: Path,
    limits: Limits | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    evidence: Sequence[Path] = (),
    trust: TrustConfig | None = None,
    discover_evidence: bool = True,
    dynamic: list[str] | None = None,
    signal_files: list[Path] | None = None,
    imported_reports: list[Path] | None = None,
    tier: str | None = None,
    labels_file: Path | None = None,
    now: datetime | None = None,
) -> Admission:
    """Admit ``path`` for ``stage`` and append the decision to the audit log in ``home``.

    ``evidence`` lists evidence files in addition to those found beside the
    artifact (unless ``discover_evidence`` is false); ``trust`` adds to the
    trust configuration in the policy. ``dynamic`` names dynamic-evidence
    plug-ins to run (``"sandbox"`` loads the artifact in an isolated child
    process) in addition to those the policy selects, and ``signal_files``
    lists Falco or Tetragon event files whose events become signals.

    ``imported_reports`` lists reports from other scanners (ModelScan JSON,
    SARIF 2.1.0, Trivy JSON) whose results join the findings; a report that
    cannot be read raises :class:`~attestgate.reports.interface.ReportError`
    before anything is scanned or recorded.

    ``tier`` is the criticality tier (``low``, ``standard``, ``critical``);
    without it, the artifact's label file (``labels_file``, or
    ``NAME.labels.yaml`` beside the artifact) or the policy's default
    decides. ``now`` is the time exceptions are judged at (default: the
    current time).
    """
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", hint=f"use one of: {', '.join(STAGES)}")
    from attestgate.intake.references import is_reference

    imports: list[Any] = []
    if imported_reports:
        from attestgate.reports.importers import import_reports

        imports = import_reports(imported_reports, artifact=path)
    remote = None
    if is_reference(path):
        # Fetched before the audit log opens: both write the state directory's
        # database, and the fetch dominates the time anyway.
        from attestgate.intake import inspect_reference

        remote = inspect_reference(path, home / "intake", stage, home=home, limits=limits)
    target = remote.path if remote is not None else path
    # The policy engine, the evidence verifiers and the database driver take
    # about a second to import. A thread loads them and opens the audit log
    # while this thread hashes the artifact, which releases the GIL.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attestgate-prepare") as pool:
        prepared = pool.submit(_prepare, home, policy)
        try:
            inspection = inspect(target, limits=limits, progress=progress, workers=workers)
        except BaseException:
            _close_prepared(prepared)
            raise
        audit, policy = prepared.result()
    return _decide(
        path,
        stage=stage,
        policy=policy,
        audit=audit,
        remote=remote,
        inspection=inspection,
        evidence=evidence,
        trust=trust,
        discover_evidence=discover_evidence,
        dynamic=dynamic,
        signal_files=signal_files,
        imports=imports,
        tier=tier,
        labels_file=labels_file,
        now=now,
    )


def _prepare(home: Path, policy: Policy | None) -> tuple[AuditLog, Policy]:
    import attestgate.dynamic.runner
    import attestgate.evidence
    import attestgate.policy.exceptions  # noqa: F401 - loaded here, used after the pass
    from attestgate.audit import AuditLog
    from attestgate.policy import load_default_policy

    return AuditLog(home), policy or load_default_policy()


def _close_prepared(prepared: Future[tuple[AuditLog, Policy]]) -> None:
    # The pass failed: release the audit log the other thread opened, and let
    # the pass's error, not a second one from the preparation, reach the caller.
    try:
        prepared.result()[0].close()
    except Exception:
        logger.debug("preparation also failed", exc_info=True)


def _decide(
    path: Path,
    *,
    stage: str,
    policy: Policy,
    audit: AuditLog,
    remote: Any,
    inspection: Inspection,
    evidence: Sequence[Path],
    trust: TrustConfig | None,
    discover_evidence: bool,
    dynamic: list[str] | None,
    signal_files: list[Path] | None,
    imports: list[Any],
    tier: str | None,
    labels_file: Path | None,
    now: datetime | None,
) -> Admission:
    from attestgate.dynamic.runner import run_dynamic
    from attestgate.evidence.interface import VERSION as EVIDENCE_VERSION
    from attestgate.policy import annotate_record, evaluate
    from attestgate.policy.exceptions import load_exceptions
    from attestgate.policy.tiers import choose_tier

    tier_choice = choose_tier(
        policy,
        requested=tier,
        artifact=None if remote is not None else path,
        labels_file=labels_file,
    )
    try:
        if remote is not None:
            remote.attach(inspection)
            evidence = [*evidence, *remote.evidence]
        timings = inspection.timings

        t0 = time.perf_counter()
        report = _evidence(
            inspection,
            policy,
            evidence,
            trust,
            discover_evidence,
            stage=stage,
            tier=tier_choice.name,
        )
        findings = inspection.findings + report.all_findings
        timings["evidence"] = time.perf_counter() - t0
        checks = check_runs(inspection.artifact.files)
        checks.append(
            CheckRun("evidence", EVIDENCE_VERSION, len(report.pieces), timings["evidence"])
        )

        t0 = time.perf_counter()
        dynamic_report = run_dynamic(
            inspection.artifact,
            stage=stage,
            plugins=dynamic or (),
            signal_files=signal_files or (),
            policy_document=policy.document,
            tier=tier_choice.name,
        )
        findings = findings + dynamic_report.findings
        checks.extend(dynamic_report.checks)
        timings["dynamic"] = time.perf_counter() - t0
        if imports:
            from attestgate.reports.importers import imported_checks, imported_findings

            findings = findings + imported_findings(imports)
            checks.extend(imported_checks(imports))
            timings["import"] = sum(imported.seconds for imported in imports)

        t0 = time.perf_counter()
        decision = evaluate(
            policy,
            stage,
            findings,
            tier=tier_choice,
            evidence=report.to_json(),
            artifact=inspection.artifact.to_json(),
            exceptions=load_exceptions(
                audit.engine, artifact_digest=f"sha256:{inspection.artifact.sha256}"
            ),
            now=now,
        )
        timings["policy"] = time.perf_counter() - t0

        record_id = str(uuid.uuid4())
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        record = build_record(
            record_id=record_id,
            created_at=created_at,
            stage=stage,
            artifact=inspection.artifact,
            findings=findings + list(decision.policy_findings),
            decision=decision,
            policy=policy,
            checks=checks,
            timings=timings,
        )
        record["evidence"] = report.to_json()
        if dynamic_report.ran:
            record["dynamic"] = dynamic_report.to_json()
        if imports:
            record["imports"] = [imported.to_json() for imported in imports]
        annotate_record(record, decision)
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
