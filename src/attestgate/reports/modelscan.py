"""Read ModelScan JSON reports (``modelscan -p PATH -r json -o FILE``).

The report is one object: ``summary`` (with ``modelscan_version``),
``issues`` and ``errors``. Each issue has ``severity`` (CRITICAL, HIGH,
MEDIUM or LOW), ``description``, ``operator``, ``module``, ``source`` and
``scanner`` (such as ``modelscan.scanners.PickleUnsafeOpScan``). ``source``
is the file relative to the scanned path, and a member inside a zip follows
a colon, as in ``model.pt:archive/data.pkl``. Each error has ``category``,
``description`` and, when it concerns one file, ``source``.

Mapping: an issue becomes ``import.modelscan.<scanner>`` with the scanner's
class name in kebab case (``import.modelscan.pickle-unsafe-op-scan``) and
ModelScan's severity. A severity ModelScan does not define becomes medium.
An error becomes ``import.modelscan.scan-error`` at medium, because the
report then does not cover that file.
"""

from __future__ import annotations

import re
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.reports.interface import (
    ImportedReport,
    ReportReader,
    check_name,
    details,
    import_rule,
    new_report,
    severity_from_label,
)

TOOL = "modelscan"
FORMAT = "modelscan-json"

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_modelscan(document: object) -> bool:
    if not isinstance(document, dict):
        return False
    summary = document.get("summary")
    return isinstance(summary, dict) and "modelscan_version" in summary


def read_modelscan(document: dict[str, Any], reader: ReportReader) -> ImportedReport:
    """Turn a parsed ModelScan report into findings."""
    summary = reader.obj(document.get("summary"), "summary")
    version = reader.name(summary.get("modelscan_version"), "summary.modelscan_version")
    report = new_report(reader.origin, FORMAT, TOOL, version)
    issues = reader.array(document.get("issues"), "issues")
    for i, item in enumerate(issues):
        reader.count()
        report.findings.append(_issue(reader.obj(item, f"issues[{i}]"), i, report, reader))
    errors = reader.array(document.get("errors"), "errors")
    for i, item in enumerate(errors):
        reader.count()
        report.findings.append(_error(reader.obj(item, f"errors[{i}]"), i, report, reader))
    return report


def _issue(issue: dict[str, Any], i: int, report: ImportedReport, reader: ReportReader) -> Finding:
    where = f"issues[{i}]"
    label = reader.name(issue.get("severity"), f"{where}.severity")
    module = reader.name(issue.get("module"), f"{where}.module")
    operator = reader.name(issue.get("operator"), f"{where}.operator")
    scanner = reader.name(issue.get("scanner"), f"{where}.scanner")
    description = reader.text(issue.get("description"), f"{where}.description")
    source = reader.string(issue.get("source"), f"{where}.source")
    file = reader.location(source)
    severity = severity_from_label(label)

    global_name = ".".join(part for part in (module, operator) if part)
    operator_text = f"the unsafe operator {global_name}" if global_name else "an unsafe operator"
    message = f"ModelScan reported {operator_text} (severity {label or 'none'}) in {file}"
    if description:
        message += f": {description}"
    if severity is None:
        message += "; attestgate rates an unknown ModelScan severity as medium"
    return Finding(
        rule=import_rule(TOOL, _scanner_rule(scanner)),
        severity=severity or Severity.MEDIUM,
        file=file,
        message=message,
        remediation=(
            f"Do not load {file}: loading it can run {global_name or 'the operator'}. "
            "Ask the publisher for a safetensors export, or have a reviewer confirm "
            "that the operator is harmless and record an exception for this artifact."
        ),
        check=check_name(report.tool, report.tool_version),
        details=details(
            report,
            scanner=scanner,
            module=module,
            operator=operator,
            severity=label,
        ),
    )


def _error(error: dict[str, Any], i: int, report: ImportedReport, reader: ReportReader) -> Finding:
    where = f"errors[{i}]"
    category = reader.name(error.get("category"), f"{where}.category")
    description = reader.text(error.get("description"), f"{where}.description")
    source = reader.string(error.get("source"), f"{where}.source")
    file = reader.location(source)
    subject = f"{file}" if source else "part of the artifact"
    message = f"ModelScan could not scan {subject} ({category or 'no category'})"
    if description:
        message += f": {description}"
    return Finding(
        rule=import_rule(TOOL, "scan-error"),
        severity=Severity.MEDIUM,
        file=file,
        message=message,
        remediation=(
            f"The ModelScan report does not cover {subject}. Fix the error (often a "
            "missing optional dependency of ModelScan), run ModelScan again and "
            "import the new report, or have a reviewer inspect the file."
        ),
        check=check_name(report.tool, report.tool_version),
        details=details(report, category=category),
    )


def _scanner_rule(scanner: str) -> str:
    """Return ``modelscan.scanners.PickleUnsafeOpScan`` as ``pickle-unsafe-op-scan``."""
    name = scanner.rsplit(".", 1)[-1]
    if not name:
        return "unsafe-operator"
    return _CAMEL_BOUNDARY.sub("-", name).lower()
