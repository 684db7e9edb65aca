"""The scan report: what ``attestgate scan`` found, without a policy or a decision.

The JSON form is described by ``schemas/scan-report.v1.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestgate._version import __version__
from attestgate.findings import CHECK_FAILED, Finding, Severity
from attestgate.record import check_runs
from attestgate.reports.sarif import sarif_log

if TYPE_CHECKING:
    from attestgate.pipeline import Inspection

SCHEMA_VERSION = "1"
REPORT_KIND = "attestgate.scan"


@dataclass(frozen=True)
class ScanOutcome:
    """The comparison of a scan's findings with the ``--fail-on`` threshold."""

    fail_on: Severity
    # Findings at or above the threshold, not counting check failures.
    failing: int
    # Findings whose check could not finish, so the scan does not cover a file.
    check_failures: int

    @property
    def failed(self) -> bool:
        return self.failing > 0

    @property
    def complete(self) -> bool:
        return self.check_failures == 0


def outcome(findings: list[Finding], fail_on: Severity) -> ScanOutcome:
    failures = sum(1 for f in findings if f.rule == CHECK_FAILED)
    failing = sum(1 for f in findings if f.rule != CHECK_FAILED and f.severity >= fail_on)
    return ScanOutcome(fail_on, failing, failures)


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    counts = {severity.label: 0 for severity in sorted(Severity, reverse=True)}
    for finding in findings:
        counts[finding.severity.label] += 1
    return counts


def scan_report(inspection: Inspection, result: ScanOutcome) -> dict[str, Any]:
    """Return the JSON scan report for ``inspection``."""
    findings = sorted(inspection.findings, key=lambda f: (f.file, -f.severity, f.rule))
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": REPORT_KIND,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": inspection.artifact.to_json(),
        "findings": [f.to_json() for f in findings],
        "counts": severity_counts(findings),
        "fail_on": result.fail_on.label,
        "failed": result.failed,
        "complete": result.complete,
        "gate": {"name": "attestgate", "version": __version__},
        "checks": [c.to_json() for c in check_runs(inspection.artifact.files)],
        "timings": {k: round(v, 6) for k, v in inspection.timings.items()},
    }


def scan_sarif(inspection: Inspection, result: ScanOutcome, exit_code: int) -> dict[str, Any]:
    """Return the SARIF log for ``inspection``, with paths relative to the artifact root."""
    artifact = inspection.artifact
    path = Path(artifact.path)
    return sarif_log(
        inspection.findings,
        root=path if artifact.kind == "directory" else path.parent,
        files=[f.path for f in artifact.files],
        artifact={
            "path": artifact.path,
            "kind": artifact.kind,
            "digest": {"sha256": artifact.sha256},
        },
        successful=result.complete,
        exit_code=exit_code,
    )


def report_schema() -> dict[str, Any]:
    text = resources.files("attestgate.schemas").joinpath("scan-report.v1.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_scan_report(report: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``report`` breaks the published schema."""
    from attestgate._jsonschema import jsonschema

    jsonschema.validate(report, report_schema(), cls=jsonschema.Draft202012Validator)
