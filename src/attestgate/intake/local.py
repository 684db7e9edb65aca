"""Dispatch a local path to the image scanner or the cache-snapshot walk when it is one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attestgate.findings import Finding, Severity
from attestgate.identify.stream import process_files, root_digest
from attestgate.intake.hfcache import snapshot_identity, walk_snapshot
from attestgate.intake.identity import IntakeIdentity, intake_finding
from attestgate.intake.references import LocalKind, detect_local
from attestgate.scanners.interface import Limits


@dataclass
class LocalInspection:
    """The identify-and-scan result for an image or a cache snapshot, before any policy applies."""

    artifact: IntakeIdentity
    findings: list[Finding]
    timings: dict[str, float]


def inspect_local(
    path: Path,
    limits: Limits | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> LocalInspection | None:
    """Inspect ``path`` if it is an image layout, an image archive or a cache snapshot.

    Returns None for any other file or directory, which the plain walk handles.
    """
    kind = detect_local(path)
    if kind is None:
        return None
    limits = limits or Limits()
    if kind is LocalKind.HF_CACHE_SNAPSHOT:
        return _inspect_snapshot(path, limits, progress, workers)
    # Image intake brings the layer and distribution code, which a plain
    # file or folder never needs.
    from attestgate.intake.image import inspect_image

    image = inspect_image(path, limits, progress)
    return LocalInspection(image.artifact, image.findings, image.timings)


def _inspect_snapshot(
    path: Path,
    limits: Limits,
    progress: Callable[[int], None] | None,
    workers: int | None,
) -> LocalInspection:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    listing = walk_snapshot(path)
    timings["intake"] = time.perf_counter() - started

    started = time.perf_counter()
    reports = process_files(listing.entries, limits, progress, workers)
    elapsed = time.perf_counter() - started
    scan = sum(r.scan_seconds for r in reports)
    busy = sum(r.scan_seconds + r.read_seconds for r in reports) or 1.0
    timings["scan"] = elapsed * scan / busy
    timings["identify"] = elapsed - timings["scan"]

    artifact = IntakeIdentity(
        path=str(path.resolve()),
        kind="directory",
        sha256=root_digest(reports),
        files=reports,
        excluded=listing.excluded,
        reference=snapshot_identity(path),
    )
    findings = list(listing.findings)
    for report in reports:
        findings.extend(report.findings)
    if not reports:
        findings.append(
            intake_finding(
                "intake.empty",
                Severity.MEDIUM,
                path.name,
                f"the cache snapshot {path.name} has no files that could be read",
                "Download the repository again and admit the new snapshot.",
            )
        )
    return LocalInspection(artifact, findings, timings)
