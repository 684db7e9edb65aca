"""Value types and helpers shared by the report importers.

An imported report is evidence from another scanner. Each of its results
becomes a :class:`~attestgate.findings.Finding` whose rule id is
``import.<tool>.<their rule id>``, whose check is ``import:<tool>@<version>``
and whose ``details`` name the tool, its version and the report file. Every
string taken from a report is untrusted: it is cut to a bounded length and
stripped of control characters before it reaches a finding, a terminal or
the audit log.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from attestgate.errors import UsageError
from attestgate.findings import Finding, Severity
from attestgate.scanners.interface import MiB

VERSION = "1"

# The rule-id grammar every attestgate finding follows.
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")

_NOT_RULE_CHARS = re.compile(r"[^a-z0-9]+")


class ReportError(UsageError):
    """A report file is missing, too large or not in a format the importers read."""


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on one report: its bytes, results, strings and parsing time."""

    max_file_bytes: int = 64 * MiB
    # Results (issues, vulnerabilities, misconfigurations, secrets) per report.
    max_results: int = 50_000
    # Maximum length, in characters, of a message, description or remediation.
    max_text: int = 4_096
    # Maximum length, in characters, of a rule id, tool name, version or path.
    max_name: int = 512
    # Rule descriptors read from one SARIF run.
    max_rules: int = 20_000
    max_seconds: float = 60.0


@dataclass(frozen=True)
class Origin:
    """The report file and the artifact that its paths refer to."""

    path: str
    sha256: str
    # Directory that relative paths in the report start from: the artifact
    # directory, or the directory holding a single-file artifact.
    root: Path | None
    # Location for results that name no file: the artifact's own name.
    fallback: str


@dataclass
class ImportedReport:
    """The findings one tool's run contributed, with the report they came from."""

    path: str
    sha256: str
    format: str
    tool: str
    tool_version: str
    findings: list[Finding] = field(default_factory=list)
    # Results the importer read but did not turn into findings: passed
    # checks, suppressed results and the like.
    skipped: int = 0
    seconds: float = 0.0

    @property
    def check(self) -> str:
        return check_name(self.tool, self.tool_version)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "digest": {"sha256": self.sha256},
            "format": self.format,
            "tool": self.tool,
            "tool_version": self.tool_version,
            "check": self.check,
            "findings": len(self.findings),
            "skipped": self.skipped,
        }


def check_name(tool: str, version: str) -> str:
    return f"import:{tool}@{version}"


def new_report(origin: Origin, fmt: str, tool: str, version: str) -> ImportedReport:
    return ImportedReport(
        path=origin.path,
        sha256=origin.sha256,
        format=fmt,
        tool=tool,
        tool_version=version or "unknown",
    )


def details(report: ImportedReport, **extra: object) -> dict[str, Any]:
    """Return a finding's details: the tool, its version, the report, and ``extra``."""
    out: dict[str, Any] = {
        "tool": report.tool,
        "tool_version": report.tool_version,
        "report": report.path,
    }
    out.update({key: value for key, value in extra.items() if value not in ("", None)})
    return out


def clean_text(value: object, limit: int) -> str:
    """Return ``value`` as a printable one-line string of at most ``limit`` characters.

    Control characters (terminal escape sequences among them) become spaces,
    so a hostile report cannot rewrite what a terminal displays.
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit * 4:
        text = text[: limit * 4]
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def rule_segment(value: str, limit: int = 128) -> str:
    """Return ``value`` as one or more rule-id segments: lowercase letters, digits, hyphens."""
    parts = []
    for piece in value.lower().split("."):
        part = _NOT_RULE_CHARS.sub("-", piece).strip("-")
        if part:
            parts.append(part)
    joined = ".".join(parts)[:limit].strip(".-")
    return joined or "unknown"


def tool_slug(name: str) -> str:
    """Return a tool name as a single rule-id segment (``Semgrep OSS`` -> ``semgrep-oss``)."""
    slug = _NOT_RULE_CHARS.sub("-", name.lower()).strip("-")[:64].strip("-")
    return slug or "unknown-tool"


def import_rule(tool: str, their_rule: str) -> str:
    """Return the attestgate rule id for ``their_rule`` reported by ``tool``."""
    rule = f"import.{tool_slug(tool)}.{rule_segment(their_rule)}"
    # rule_segment and tool_slug only emit the grammar's characters, so this
    # holds for every input; the assertion guards later edits.
    assert RULE_ID.match(rule), rule
    return rule


def severity_from_label(label: object) -> Severity | None:
    """Map CRITICAL, HIGH, MEDIUM, LOW and INFO (any case) to a severity, else None."""
    if not isinstance(label, str):
        return None
    try:
        return Severity.parse(label)
    except ValueError:
        return None


def severity_from_score(score: float) -> Severity:
    """Map a CVSS-style score (0.0-10.0) to a severity with the CVSS v3 rating bands."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0.0:
        return Severity.LOW
    return Severity.INFO


def relative_location(raw: str, root: Path | None, fallback: str, limit: int) -> str:
    """Return a report's file reference as a path relative to the artifact root.

    ``file:`` URIs are decoded, ``./`` prefixes dropped, and absolute paths
    under ``root`` made relative. Other absolute paths are kept as they are,
    because the finding still names the file the tool meant. An empty
    reference becomes ``fallback`` (the artifact's name).
    """
    text = raw.strip()
    if text.startswith("file:"):
        text = unquote(urlsplit(text).path)
    elif "%" in text and "://" not in text:
        text = unquote(text)
    if not text:
        return fallback
    if root is not None and text.startswith("/"):
        base = root.resolve().as_posix()
        if text == base or text.startswith(base.rstrip("/") + "/"):
            text = PurePosixPath(text).relative_to(base).as_posix()
    while text.startswith("./"):
        text = text[2:]
    return clean_text(text, limit) or fallback


class ReportReader:
    """Typed, bounded access to one parsed report that names the JSON path of every bad value."""

    def __init__(self, origin: Origin, kind: str, limits: ImportLimits) -> None:
        self.origin = origin
        self.source = origin.path
        self.kind = kind
        self.limits = limits
        self.results = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def count(self) -> None:
        """Count one result, raising once the report exceeds its result or time budget."""
        self.results += 1
        if self.results > self.limits.max_results:
            raise ReportError(
                f"report {self.source} has more than {self.limits.max_results} results",
                hint="split the report, or import it with a higher result limit",
            )
        if time.monotonic() > self.deadline:
            raise ReportError(
                f"reading report {self.source} took longer than {self.limits.max_seconds:.0f} s",
                hint="split the report, or import it with a higher time limit",
            )

    def fail(self, where: str, problem: str) -> ReportError:
        return ReportError(
            f"report {self.source} is not valid {self.kind}: {where} {problem}",
            hint=f"pass the unmodified {self.kind} report the tool wrote",
        )

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, not {_json_type(value)}")
        return value

    def array(self, value: object, where: str, optional: bool = True) -> list[Any]:
        if value is None and optional:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"must be an array, not {_json_type(value)}")
        return value

    def string(self, value: object, where: str, optional: bool = True) -> str:
        if value is None and optional:
            return ""
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, not {_json_type(value)}")
        return value

    def text(self, value: object, where: str) -> str:
        return clean_text(self.string(value, where), self.limits.max_text)

    def name(self, value: object, where: str) -> str:
        return clean_text(self.string(value, where), self.limits.max_name)

    def location(self, raw: str) -> str:
        """Return a file reference from the report relative to the artifact root."""
        origin = self.origin
        return relative_location(raw, origin.root, origin.fallback, self.limits.max_name)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
