"""Text output for people. Machines read ``--format json`` instead."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attestgate.audit import AuditRecord, VerifyResult

# C0 and C1 controls, bidirectional overrides and lone surrogates.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def _join(lines: list[str]) -> str:
    """Join report lines, escaping control characters inside each one.

    File names, member names and pickle globals come from the artifact. A
    newline or a terminal escape sequence in one of them would otherwise add
    report lines, or erase the decision line, on the reader's screen.
    """
    return "\n".join(_UNPRINTABLE.sub(_escape, line) for line in lines)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _artifact_header(artifact: dict[str, Any]) -> list[str]:
    return [
        f"artifact  {artifact['path']}",
        f"          {artifact['kind']}, {len(artifact['files'])} file(s), "
        f"{_size(artifact['size'])}",
        f"digest    sha256:{artifact['digest']['sha256']}",
    ]


def render_decision(record: dict[str, Any]) -> str:
    """Render a decision record with its findings grouped by file."""
    artifact = record["artifact"]
    lines = [
        *_artifact_header(artifact),
        f"stage     {record['stage']}",
        f"policy    {record['policy']['name']} from {record['policy']['source']} "
        f"(sha256:{record['policy']['digest']['sha256'][:16]}...)",
        "",
    ]
    formats = {f["path"]: f["format"] for f in artifact["files"]}
    lines.extend(render_findings_by_file(record["findings"], formats))
    lines.append("")
    lines.append(f"decision  {record['decision'].upper()}")
    lines.append(f"          {record['summary']}")
    for reason in record["reasons"][:20]:
        lines.append(
            f"          - {reason['rule']} ({reason['severity']}) in {reason['file']} "
            f"-> {reason['action']} by {reason['policy_path']}"
        )
    if len(record["reasons"]) > 20:
        lines.append(
            f"          ... and {len(record['reasons']) - 20} more reasons (see --format json)"
        )
    if "audit" in record:
        lines.append(f"record    {record['id']} (audit log entry {record['audit']['seq']})")
    return _join(lines)


def render_audit_list(records: list[AuditRecord]) -> str:
    if not records:
        return "the audit log is empty"
    lines = [f"{'seq':>6}  {'time (UTC)':<20} {'kind':<10} {'decision':<10} {'stage':<11} artifact"]
    for r in records:
        body = r.body
        when = r.created_at[:19].replace("T", " ")
        lines.append(
            f"{r.seq:>6}  {when:<20} {r.kind:<10} {body.get('decision', '-'):<10} "
            f"{body.get('stage', '-'):<11} {r.artifact_digest or '-'}  "
            f"{body.get('artifact', {}).get('path', '')}"
        )
    return _join(lines)


def render_verify(result: VerifyResult, where: str) -> str:
    if result.ok:
        return f"audit log {where} is intact: {result.records} record(s), hash chain verified"
    first = f" at record {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    return (
        f"audit log {where} FAILED verification{first}: {result.problem}\n"
        f"{result.records} record(s) before the break verified"
    )


def render_findings_by_file(findings: list[dict[str, Any]], formats: dict[str, str]) -> list[str]:
    """Render findings grouped by file, most severe first, with each remediation."""
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for finding in findings:
        by_file[finding["file"]].append(finding)
    if not by_file:
        return ["no findings"]
    lines: list[str] = []
    for file in sorted(by_file):
        fmt = formats.get(file.split(":", 1)[0])
        lines.append(f"{file}" + (f"  [{fmt}]" if fmt else ""))
        for finding in sorted(by_file[file], key=lambda f: _SEVERITY_ORDER[f["severity"]]):
            where = f" at byte {finding['offset']}" if "offset" in finding else ""
            lines.append(f"  {finding['severity'].upper():<8} {finding['rule']}{where}")
            lines.append(f"           {finding['message']}")
            lines.append(f"           fix: {finding['remediation']}")
        lines.append("")
    return lines[:-1]


def render_scan(report: dict[str, Any]) -> str:
    """Render a scan report: the artifact, its findings by file, and the result."""
    artifact = report["artifact"]
    lines = [*_artifact_header(artifact), ""]
    formats = {f["path"]: f["format"] for f in artifact["files"]}
    lines.extend(render_findings_by_file(report["findings"], formats))
    lines.append("")
    counts = ", ".join(f"{n} {label}" for label, n in report["counts"].items() if n)
    lines.append(f"findings  {counts or 'none'}")
    fail_on = report["fail_on"]
    if report["failed"]:
        lines.append(f"result    FAIL: findings at or above {fail_on}")
    else:
        lines.append(f"result    PASS: no finding at or above {fail_on}")
    if not report["complete"]:
        lines.append("          INCOMPLETE: a check failed on at least one file (see check.failed)")
    return _join(lines)
