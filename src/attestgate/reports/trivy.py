"""Read Trivy JSON reports (``trivy fs --format json --output FILE PATH``).

The report is one object with ``SchemaVersion`` 2, ``ArtifactName``,
``Trivy.Version`` and ``Results``. Reports of older Trivy releases have no
``Trivy.Version`` and import as version ``unknown``. Each result names a
``Target`` (a file such as ``requirements.txt``, or an image layer) and
lists any of:

- ``Vulnerabilities``: ``VulnerabilityID``, ``PkgName``,
  ``InstalledVersion``, ``FixedVersion``, ``Severity``, ``Title``,
  ``PrimaryURL``;
- ``Misconfigurations``: ``ID``, ``AVDID``, ``Title``, ``Message``,
  ``Resolution``, ``Severity``, ``Status`` (only ``FAIL`` is a finding) and
  ``CauseMetadata.StartLine``;
- ``Secrets``: ``RuleID``, ``Category``, ``Title``, ``Severity``,
  ``StartLine``. The matched text is never copied into a finding.

Mapping: rule ``import.trivy.<id>`` (``import.trivy.cve-2025-32434``,
``import.trivy.ds002``, ``import.trivy.aws-access-key-id``); CRITICAL, HIGH,
MEDIUM and LOW keep their level, and UNKNOWN (no rating yet) or any other
value becomes medium so that a person looks at it. Licenses and custom
resources are not findings.
"""

from __future__ import annotations

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

TOOL = "trivy"
FORMAT = "trivy-json"


def is_trivy(document: object) -> bool:
    return (
        isinstance(document, dict)
        and "SchemaVersion" in document
        and ("Results" in document or "ArtifactName" in document)
    )


def read_trivy(document: dict[str, Any], reader: ReportReader) -> ImportedReport:
    """Turn a parsed Trivy JSON report into findings."""
    info = document.get("Trivy")
    version = ""
    if info is not None:
        version = reader.name(reader.obj(info, "Trivy").get("Version"), "Trivy.Version")
    report = new_report(reader.origin, FORMAT, TOOL, version)
    results = reader.array(document.get("Results"), "Results")
    for i, item in enumerate(results):
        where = f"Results[{i}]"
        result = reader.obj(item, where)
        target = reader.location(reader.string(result.get("Target"), f"{where}.Target"))
        for j, vuln in enumerate(reader.array(result.get("Vulnerabilities"), where)):
            reader.count()
            entry = reader.obj(vuln, f"{where}.Vulnerabilities[{j}]")
            report.findings.append(
                _vulnerability(entry, f"{where}.Vulnerabilities[{j}]", target, report, reader)
            )
        for j, misconf in enumerate(reader.array(result.get("Misconfigurations"), where)):
            reader.count()
            entry = reader.obj(misconf, f"{where}.Misconfigurations[{j}]")
            finding = _misconfiguration(
                entry, f"{where}.Misconfigurations[{j}]", target, report, reader
            )
            if finding is None:
                report.skipped += 1
            else:
                report.findings.append(finding)
        for j, secret in enumerate(reader.array(result.get("Secrets"), where)):
            reader.count()
            entry = reader.obj(secret, f"{where}.Secrets[{j}]")
            report.findings.append(_secret(entry, f"{where}.Secrets[{j}]", target, report, reader))
    return report


def _severity(label: str) -> Severity:
    return severity_from_label(label) or Severity.MEDIUM


def _vulnerability(
    entry: dict[str, Any], where: str, target: str, report: ImportedReport, reader: ReportReader
) -> Finding:
    vuln_id = reader.name(entry.get("VulnerabilityID"), f"{where}.VulnerabilityID") or "unknown"
    package = reader.name(entry.get("PkgName"), f"{where}.PkgName") or "a package"
    installed = reader.name(entry.get("InstalledVersion"), f"{where}.InstalledVersion")
    fixed = reader.name(entry.get("FixedVersion"), f"{where}.FixedVersion")
    label = reader.name(entry.get("Severity"), f"{where}.Severity")
    title = reader.text(entry.get("Title"), f"{where}.Title")
    url = reader.name(entry.get("PrimaryURL"), f"{where}.PrimaryURL")

    release = f"{package} {installed}".strip()
    message = f"Trivy reported {vuln_id} (severity {label or 'none'}) in {release} ({target})"
    if title:
        message += f": {title}"
    if fixed:
        remediation = (
            f"Upgrade {package} from {installed or 'the installed version'} to {fixed} "
            "or later and admit the artifact again."
        )
    else:
        remediation = (
            f"No fixed release of {package} is listed for {vuln_id}. Remove {package}, "
            "or have a reviewer accept the risk with an exception for this artifact."
        )
    return Finding(
        rule=import_rule(TOOL, vuln_id),
        severity=_severity(label),
        file=target,
        message=message,
        remediation=remediation,
        check=check_name(report.tool, report.tool_version),
        details=details(
            report,
            category="vulnerability",
            id=vuln_id,
            package=package,
            installed_version=installed,
            fixed_version=fixed,
            severity=label,
            url=url,
        ),
    )


def _misconfiguration(
    entry: dict[str, Any], where: str, target: str, report: ImportedReport, reader: ReportReader
) -> Finding | None:
    status = reader.name(entry.get("Status"), f"{where}.Status")
    if status and status.upper() != "FAIL":
        return None
    check_id = reader.name(entry.get("ID"), f"{where}.ID") or "unknown"
    avd_id = reader.name(entry.get("AVDID"), f"{where}.AVDID")
    label = reader.name(entry.get("Severity"), f"{where}.Severity")
    title = reader.text(entry.get("Title"), f"{where}.Title")
    text = reader.text(entry.get("Message"), f"{where}.Message")
    resolution = reader.text(entry.get("Resolution"), f"{where}.Resolution")
    line = _start_line(entry.get("CauseMetadata"), reader, f"{where}.CauseMetadata")

    at_line = f" at line {line}" if line else ""
    message = (
        f"Trivy reported misconfiguration {check_id} (severity {label or 'none'}) "
        f"in {target}{at_line}"
    )
    summary = ": ".join(part for part in (title, text) if part)
    if summary:
        message += f": {summary}"
    remediation = resolution or (
        f"Change {target} so that it passes the Trivy check {check_id}, then admit the "
        "artifact again."
    )
    return Finding(
        rule=import_rule(TOOL, check_id),
        severity=_severity(label),
        file=target,
        message=message,
        remediation=remediation,
        check=check_name(report.tool, report.tool_version),
        details=details(
            report,
            category="misconfiguration",
            id=check_id,
            avd_id=avd_id,
            severity=label,
            line=line,
        ),
    )


def _secret(
    entry: dict[str, Any], where: str, target: str, report: ImportedReport, reader: ReportReader
) -> Finding:
    rule_id = reader.name(entry.get("RuleID"), f"{where}.RuleID") or "secret"
    category = reader.name(entry.get("Category"), f"{where}.Category")
    title = reader.text(entry.get("Title"), f"{where}.Title") or rule_id
    label = reader.name(entry.get("Severity"), f"{where}.Severity")
    line = _line(entry.get("StartLine"), reader, f"{where}.StartLine")

    at_line = f" at line {line}" if line else ""
    return Finding(
        rule=import_rule(TOOL, rule_id),
        severity=_severity(label),
        file=target,
        message=f"Trivy found a secret ({title}, severity {label or 'none'}) in {target}{at_line}",
        remediation=(
            f"Remove the secret from {target}, revoke it and issue a new one where it was "
            "created, and admit the artifact again."
        ),
        check=check_name(report.tool, report.tool_version),
        details=details(
            report,
            category="secret",
            id=rule_id,
            secret_category=category,
            severity=label,
            line=line,
        ),
    )


def _start_line(value: object, reader: ReportReader, where: str) -> int | None:
    if value is None:
        return None
    return _line(reader.obj(value, where).get("StartLine"), reader, f"{where}.StartLine")


def _line(value: object, reader: ReportReader, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise reader.fail(where, "must be an integer")
    return value if value > 0 else None
