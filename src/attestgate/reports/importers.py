"""Import reports from other scanners as findings.

Three formats are read, detected from the content rather than the file name:

- ModelScan JSON, recognised by ``summary.modelscan_version``; rule ids
  ``import.modelscan.<scanner>``.
- SARIF 2.1.0, recognised by ``version`` and ``runs``; rule ids
  ``import.<driver name>.<ruleId>``, one imported report per run.
- Trivy JSON, recognised by ``SchemaVersion`` and ``Results``; rule ids
  ``import.trivy.<id>``.

Each format's module documents how its severities map onto attestgate's.
Every finding's check is ``import:<tool>@<version>`` and its details hold
``tool``, ``tool_version`` and ``report``.

A report is read with bounds on its size, its number of results, the
length of every string kept and the time spent. A report that is missing,
too large, not JSON, or not in one of the formats raises
:class:`~attestgate.reports.interface.ReportError` naming the file; the
command line turns that into exit status 2. Nothing in a report is
executed or fetched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attestgate.findings import Finding
from attestgate.record import CheckRun
from attestgate.reports.interface import (
    VERSION,
    ImportedReport,
    ImportLimits,
    Origin,
    ReportError,
    ReportReader,
)
from attestgate.reports.modelscan import is_modelscan, read_modelscan
from attestgate.reports.sarif_import import is_sarif, read_sarif
from attestgate.reports.trivy import is_trivy, read_trivy

logger = logging.getLogger(__name__)

_FORMATS_HINT = "pass a ModelScan JSON report, a SARIF 2.1.0 log or a Trivy JSON report"


def import_report(
    path: Path,
    *,
    artifact: Path | None = None,
    limits: ImportLimits | None = None,
) -> list[ImportedReport]:
    """Read one report and return one imported report per tool run in it.

    File references in the report are made relative to ``artifact`` (its
    directory, or the directory holding a single-file artifact), and
    results that name no file are placed on the artifact itself.
    """
    limits = limits or ImportLimits()
    started = time.perf_counter()
    data = _read(path, limits)
    origin = _origin(path, hashlib.sha256(data).hexdigest(), artifact)
    document = _parse(path, data)

    if is_modelscan(document):
        reports = [read_modelscan(document, ReportReader(origin, "ModelScan JSON", limits))]
    elif is_sarif(document):
        reports = read_sarif(document, ReportReader(origin, "SARIF", limits))
    elif is_trivy(document):
        reports = [read_trivy(document, ReportReader(origin, "Trivy JSON", limits))]
    else:
        raise ReportError(f"report {path} is not a format attestgate imports", hint=_FORMATS_HINT)

    seconds = (time.perf_counter() - started) / max(len(reports), 1)
    for report in reports:
        report.seconds = seconds
        logger.info(
            "imported %d finding(s) from %s %s in %s (%d result(s) skipped)",
            len(report.findings),
            report.tool,
            report.tool_version,
            path,
            report.skipped,
        )
    return reports


def import_reports(
    paths: Sequence[Path],
    *,
    artifact: Path | None = None,
    limits: ImportLimits | None = None,
) -> list[ImportedReport]:
    """Read every report in ``paths``; the first one that cannot be read raises."""
    reports: list[ImportedReport] = []
    for path in paths:
        reports.extend(import_report(path, artifact=artifact, limits=limits))
    return reports


def imported_findings(reports: Sequence[ImportedReport]) -> list[Finding]:
    return [finding for report in reports for finding in report.findings]


def imported_checks(reports: Sequence[ImportedReport]) -> list[CheckRun]:
    """Return one check run per tool and version, counting the reports it came from."""
    runs: dict[str, CheckRun] = {}
    for report in reports:
        run = runs.setdefault(report.check, CheckRun(report.check, VERSION))
        run.files += 1
        run.seconds += report.seconds
    return sorted(runs.values(), key=lambda r: r.name)


def _read(path: Path, limits: ImportLimits) -> bytes:
    if not path.is_file():
        problem = "does not exist" if not path.exists() else "is not a regular file"
        raise ReportError(f"report {path} {problem}", hint=_FORMATS_HINT)
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise ReportError(
            f"report {path} could not be read: {exc.strerror or exc}",
            hint="make the file readable by the gate",
        ) from exc
    if len(data) > limits.max_file_bytes:
        raise ReportError(
            f"report {path} is larger than {limits.max_file_bytes} bytes",
            hint="split the report, or import it with a higher size limit",
        )
    return data


def _parse(path: Path, data: bytes) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(
            f"report {path} is not UTF-8 text (invalid byte at offset {exc.start})",
            hint=_FORMATS_HINT,
        ) from None
    text = _skip_preamble(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"report {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            hint=_FORMATS_HINT,
        ) from None
    except (ValueError, RecursionError) as exc:
        # Integers longer than Python's digit limit raise ValueError, and
        # arrays nested thousands deep raise RecursionError.
        raise ReportError(
            f"report {path} is not JSON attestgate can read: {type(exc).__name__}: {exc}",
            hint=_FORMATS_HINT,
        ) from None


def _skip_preamble(text: str) -> str:
    """Drop log lines that ``modelscan -r json`` prints to stdout before the JSON object."""
    stripped = text.lstrip()
    if not stripped or stripped[0] in "{[":
        return stripped
    start = stripped.find("\n{")
    return stripped[start + 1 :] if start >= 0 else stripped


def _origin(path: Path, sha256: str, artifact: Path | None) -> Origin:
    if artifact is None:
        return Origin(str(path), sha256, None, ".")
    resolved = artifact.resolve()
    root = resolved if resolved.is_dir() else resolved.parent
    return Origin(str(path), sha256, root, resolved.name)


__all__ = [
    "ImportLimits",
    "ImportedReport",
    "ReportError",
    "import_report",
    "import_reports",
    "imported_checks",
    "imported_findings",
]
