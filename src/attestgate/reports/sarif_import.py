"""Read SARIF 2.1.0 logs from other tools (Bandit, Semgrep, Trivy, CodeQL and others).

Each run becomes one :class:`ImportedReport` for the tool in
``tool.driver.name`` (lowercased, other characters turned into hyphens:
``Semgrep OSS`` -> ``semgrep-oss``) at ``tool.driver.version`` (or
``semanticVersion``). Each result becomes a finding
``import.<tool>.<ruleId>``.

Severity, first match wins:

1. ``properties["security-severity"]`` of the result, else of its rule, a
   CVSS-style score as GitHub code scanning reads it: 9.0 and above critical,
   7.0 high, 4.0 medium, above 0 low, 0 info.
2. The result's ``level``, else its rule's ``defaultConfiguration.level``,
   else ``warning`` (``none`` when ``kind`` is not ``fail``): ``error`` high,
   ``warning`` medium, ``note`` low, ``none`` info.

Results whose ``kind`` is ``pass`` or ``notApplicable``, results whose
``baselineState`` is ``absent`` and results with an accepted external
suppression are skipped. A suppression written in the source (``inSource``)
is not trusted, because the artifact's author controls the source: such
results are kept and marked in their details.

The location is the first ``physicalLocation``: ``artifactLocation.uri``, or
the ``run.artifacts`` entry that ``artifactLocation.index`` names, with nested
artifacts joined by colons the way attestgate names archive members.
``region.startLine`` goes to the details and ``region.byteOffset`` to the
finding's offset.
"""

from __future__ import annotations

import math
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
    severity_from_score,
    tool_slug,
)

FORMAT = "sarif"
SARIF_VERSION = "2.1.0"

LEVELS = {
    "error": Severity.HIGH,
    "warning": Severity.MEDIUM,
    "note": Severity.LOW,
    "none": Severity.INFO,
}

# Nested artifacts followed from one location, and message arguments used.
_MAX_NESTING = 8
_MAX_ARGUMENTS = 32
_MAX_ARGUMENT_CHARS = 256
_PLACEHOLDER = re.compile(r"\{(\d{1,2})\}")


def is_sarif(document: object) -> bool:
    return isinstance(document, dict) and "runs" in document and "version" in document


def read_sarif(document: dict[str, Any], reader: ReportReader) -> list[ImportedReport]:
    """Turn each run of a parsed SARIF log into one imported report."""
    version = document.get("version")
    if version != SARIF_VERSION:
        raise reader.fail("version", f"is {version!r}; only SARIF {SARIF_VERSION} is read")
    runs = reader.array(document.get("runs"), "runs", optional=False)
    return [_run(reader.obj(run, f"runs[{r}]"), f"runs[{r}]", reader) for r, run in enumerate(runs)]


class _Run:
    """The parts of one SARIF run that results refer to: its rules and artifacts."""

    def __init__(self, run: dict[str, Any], where: str, reader: ReportReader) -> None:
        tool = reader.obj(run.get("tool"), f"{where}.tool")
        driver = reader.obj(tool.get("driver"), f"{where}.tool.driver")
        self.name = reader.name(driver.get("name"), f"{where}.tool.driver.name")
        if not self.name:
            raise reader.fail(f"{where}.tool.driver.name", "is missing or empty")
        self.version = reader.name(driver.get("version"), f"{where}.tool.driver.version")
        if not self.version:
            self.version = reader.name(
                driver.get("semanticVersion"), f"{where}.tool.driver.semanticVersion"
            )
        rules = reader.array(driver.get("rules"), f"{where}.tool.driver.rules")
        if len(rules) > reader.limits.max_rules:
            raise reader.fail(
                f"{where}.tool.driver.rules", f"has more than {reader.limits.max_rules} rules"
            )
        self.rules = [
            reader.obj(rule, f"{where}.tool.driver.rules[{i}]") for i, rule in enumerate(rules)
        ]
        self.rules_by_id: dict[str, dict[str, Any]] = {}
        for rule in self.rules:
            rule_id = rule.get("id")
            if isinstance(rule_id, str):
                self.rules_by_id.setdefault(rule_id, rule)
        artifacts = reader.array(run.get("artifacts"), f"{where}.artifacts")
        if len(artifacts) > reader.limits.max_results:
            raise reader.fail(
                f"{where}.artifacts", f"has more than {reader.limits.max_results} entries"
            )
        self.artifacts = artifacts

    def rule_for(self, result: dict[str, Any]) -> dict[str, Any]:
        rule_id = result.get("ruleId")
        if isinstance(rule_id, str) and rule_id in self.rules_by_id:
            return self.rules_by_id[rule_id]
        index = result.get("ruleIndex")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(self.rules):
            return self.rules[index]
        return {}


def _run(run: dict[str, Any], where: str, reader: ReportReader) -> ImportedReport:
    context = _Run(run, where, reader)
    report = new_report(reader.origin, FORMAT, tool_slug(context.name), context.version)
    results = reader.array(run.get("results"), f"{where}.results")
    for i, item in enumerate(results):
        reader.count()
        result = reader.obj(item, f"{where}.results[{i}]")
        finding = _result(result, f"{where}.results[{i}]", context, report, reader)
        if finding is None:
            report.skipped += 1
        else:
            report.findings.append(finding)
    return report


def _result(
    result: dict[str, Any],
    where: str,
    run: _Run,
    report: ImportedReport,
    reader: ReportReader,
) -> Finding | None:
    kind = reader.name(result.get("kind"), f"{where}.kind") or "fail"
    if kind in ("pass", "notApplicable"):
        return None
    if reader.name(result.get("baselineState"), f"{where}.baselineState") == "absent":
        return None
    suppression = _suppression(result, where, reader)
    if suppression == "external":
        return None

    rule = run.rule_for(result)
    rule_id = reader.name(result.get("ruleId"), f"{where}.ruleId")
    if not rule_id and isinstance(rule.get("id"), str):
        rule_id = reader.name(rule["id"], "rule id")
    rule_id = rule_id or "unknown"
    level = _level(result, rule, kind, where, reader)
    score = _score(result.get("properties"))
    if score is None:
        score = _score(rule.get("properties"))
    severity = severity_from_score(score) if score is not None else LEVELS[level]

    file, line, offset = _location(result, where, run, reader)
    text = _message(result.get("message"), rule, f"{where}.message", reader)
    at_line = f" at line {line}" if line else ""
    message = f"{run.name} reported {rule_id} in {file}{at_line}"
    if text:
        message += f": {text}"
    if suppression == "inSource":
        message += " (suppressed in the source, which the artifact's author controls)"
    return Finding(
        rule=import_rule(report.tool, rule_id),
        severity=severity,
        file=file,
        message=message,
        remediation=_remediation(result, rule, rule_id, file, run.name, where, reader),
        check=check_name(report.tool, report.tool_version),
        offset=offset,
        details=details(
            report,
            id=rule_id,
            level=level,
            security_severity=score,
            line=line,
            help_uri=_help_uri(rule, reader),
            suppressed_in_source=suppression == "inSource" or None,
        ),
    )


def _level(
    result: dict[str, Any], rule: dict[str, Any], kind: str, where: str, reader: ReportReader
) -> str:
    level = reader.name(result.get("level"), f"{where}.level")
    if not level:
        config = rule.get("defaultConfiguration")
        if isinstance(config, dict) and isinstance(config.get("level"), str):
            level = config["level"]
    if not level:
        level = "warning" if kind == "fail" else "none"
    if level not in LEVELS:
        raise reader.fail(f"{where}.level", f"is {level!r}; expected one of {', '.join(LEVELS)}")
    return level


def _score(properties: object) -> float | None:
    """Return a valid ``security-severity`` score from a property bag, else None."""
    if not isinstance(properties, dict):
        return None
    value = properties.get("security-severity")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    if not math.isfinite(score) or not 0.0 <= score <= 10.0:
        return None
    return score


def _suppression(result: dict[str, Any], where: str, reader: ReportReader) -> str:
    """Return ``external`` or ``inSource`` for an accepted suppression, else the empty string."""
    items = reader.array(result.get("suppressions"), f"{where}.suppressions")
    if not items:
        return ""
    kinds: set[str] = set()
    for i, item in enumerate(items[:_MAX_ARGUMENTS]):
        suppression = reader.obj(item, f"{where}.suppressions[{i}]")
        status = suppression.get("status", "accepted")
        if status != "accepted":
            return ""
        kind = suppression.get("kind")
        kinds.add(kind if isinstance(kind, str) else "")
    return "inSource" if "inSource" in kinds else "external"


def _location(
    result: dict[str, Any], where: str, run: _Run, reader: ReportReader
) -> tuple[str, int | None, int | None]:
    locations = reader.array(result.get("locations"), f"{where}.locations")
    if not locations:
        return reader.origin.fallback, None, None
    location = reader.obj(locations[0], f"{where}.locations[0]")
    physical = location.get("physicalLocation")
    if physical is None:
        return reader.origin.fallback, None, None
    physical = reader.obj(physical, f"{where}.locations[0].physicalLocation")
    uri = ""
    artifact = physical.get("artifactLocation")
    if artifact is not None:
        path = f"{where}.locations[0].physicalLocation.artifactLocation"
        artifact = reader.obj(artifact, path)
        uri = reader.string(artifact.get("uri"), f"{path}.uri")
        if not uri:
            uri = _artifact_path(artifact.get("index"), run, reader)
    region = physical.get("region")
    line = offset = None
    if isinstance(region, dict):
        line = _positive(region.get("startLine"))
        offset = _non_negative(region.get("byteOffset"))
    return reader.location(uri), line, offset


def _artifact_path(index: object, run: _Run, reader: ReportReader) -> str:
    """Return the path of ``run.artifacts[index]``, joining nested artifacts with colons."""
    parts: list[str] = []
    seen: set[int] = set()
    while (
        isinstance(index, int)
        and not isinstance(index, bool)
        and 0 <= index < len(run.artifacts)
        and index not in seen
        and len(seen) < _MAX_NESTING
    ):
        seen.add(index)
        entry = run.artifacts[index]
        if not isinstance(entry, dict):
            break
        location = entry.get("location")
        uri = location.get("uri") if isinstance(location, dict) else None
        if isinstance(uri, str) and uri:
            parts.append(uri.lstrip("/") if "parentIndex" in entry else uri)
        index = entry.get("parentIndex")
    return ":".join(reversed(parts))


def _message(value: object, rule: dict[str, Any], where: str, reader: ReportReader) -> str:
    if value is None:
        description = rule.get("shortDescription")
        if isinstance(description, dict):
            return reader.text(description.get("text"), f"{where}.shortDescription.text")
        return ""
    message = reader.obj(value, where)
    text = reader.string(message.get("text"), f"{where}.text")
    if not text:
        text = _template(message.get("id"), rule)
    arguments = [
        str(arg)[:_MAX_ARGUMENT_CHARS]
        for arg in reader.array(message.get("arguments"), f"{where}.arguments")[:_MAX_ARGUMENTS]
    ]
    if arguments and "{" in text:
        text = _PLACEHOLDER.sub(
            lambda m: arguments[int(m[1])] if int(m[1]) < len(arguments) else m[0],
            text[: reader.limits.max_text],
        )
    return reader.text(text, where)


def _template(message_id: object, rule: dict[str, Any]) -> str:
    strings = rule.get("messageStrings")
    if not isinstance(message_id, str) or not isinstance(strings, dict):
        return ""
    entry = strings.get(message_id)
    if isinstance(entry, dict) and isinstance(entry.get("text"), str):
        text: str = entry["text"]
        return text
    return ""


def _remediation(
    result: dict[str, Any],
    rule: dict[str, Any],
    rule_id: str,
    file: str,
    tool: str,
    where: str,
    reader: ReportReader,
) -> str:
    help_text = ""
    help_value = rule.get("help")
    if isinstance(help_value, dict):
        help_text = reader.text(help_value.get("text"), f"{where}.rule.help.text")
    if help_text:
        return help_text
    fixes = result.get("fixes")
    if isinstance(fixes, list) and fixes and isinstance(fixes[0], dict):
        description = fixes[0].get("description")
        if isinstance(description, dict):
            fix_text = reader.text(description.get("text"), f"{where}.fixes[0].description.text")
            if fix_text:
                return fix_text
    help_uri = _help_uri(rule, reader)
    if help_uri:
        return (
            f"Fix {file} as the {tool} rule {rule_id} describes at {help_uri}, "
            "then admit the artifact again."
        )
    return (
        f"Review {file} against the {tool} rule {rule_id}, fix or remove the flagged "
        "code, then admit the artifact again."
    )


def _help_uri(rule: dict[str, Any], reader: ReportReader) -> str:
    value = rule.get("helpUri")
    return reader.name(value, "rule.helpUri") if isinstance(value, str) else ""


def _positive(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _non_negative(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
