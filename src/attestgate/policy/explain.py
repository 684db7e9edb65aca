"""Explain a stored decision: which policy entry produced each reason, and what was waived.

Each reason in a decision record names the policy entry that mapped it
(``policy_path``), the kind of entry (``source``) and its line in the policy
file (``policy_line``). When the policy the record names can still be read
and its digest matches the record, the explanation also quotes that line.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from attestgate.policy.loader import MAX_POLICY_BYTES, default_policy_bytes

# C0 and C1 controls, bidirectional overrides and lone surrogates: file names
# and messages come from the artifact and must not rewrite the reader's screen.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

SOURCES = {
    "rule": "the rules table maps this rule id",
    "severity": "the severities table maps this severity",
    "outcome": "the outcomes table maps this rule's category",
    "requirement": "an evidence requirement is not met",
    "format": "a format rule",
    "limit": "a deployment limit",
    "custom": "a custom CEL rule",
}


def _policy_lines(record: dict[str, Any]) -> tuple[list[str] | None, str]:
    policy = record.get("policy") or {}
    source = str(policy.get("source", ""))
    wanted = str((policy.get("digest") or {}).get("sha256", ""))
    data: bytes | None = None
    if source == "builtin:default":
        data = default_policy_bytes()
    elif source and not source.startswith("builtin:"):
        try:
            with Path(source).open("rb") as fh:
                data = fh.read(MAX_POLICY_BYTES + 1)
        except OSError:
            return None, f"the policy file {source} cannot be read any more"
    if data is None:
        return None, f"the policy {source} is not available"
    if hashlib.sha256(data).hexdigest() != wanted:
        return None, (
            f"the policy {source} has changed since the decision (its digest is no longer "
            f"sha256:{wanted}), so its lines are not quoted"
        )
    return data.decode("utf-8", "replace").splitlines(), ""


def explain(record: dict[str, Any]) -> dict[str, Any]:
    """Return the explanation of a decision record as a JSON-ready mapping."""
    lines, note = _policy_lines(record)
    evaluation = record.get("evaluation") or {}

    def quote(reason: dict[str, Any]) -> dict[str, Any]:
        line = reason.get("policy_line")
        out = {
            "rule": reason.get("rule"),
            "severity": reason.get("severity"),
            "file": reason.get("file"),
            "action": reason.get("action"),
            "source": reason.get("source", "severity"),
            "policy_path": reason.get("policy_path"),
            "policy_line": line,
            "message": reason.get("message"),
        }
        if lines is not None and isinstance(line, int) and 0 < line <= len(lines):
            out["policy_text"] = lines[line - 1].strip()
        if reason.get("mapped_by"):
            out["mapped_by"] = reason["mapped_by"]
        if reason.get("exception"):
            out["exception"] = reason["exception"]
        return out

    exceptions = evaluation.get("exceptions") or {}
    return {
        "record": record.get("id"),
        "decision": record.get("decision"),
        "summary": record.get("summary"),
        "stage": record.get("stage"),
        "tier": evaluation.get("tier"),
        "enforcement": evaluation.get("enforcement"),
        "policy": {**(record.get("policy") or {}), "note": note} if note else record.get("policy"),
        "reasons": [quote(r) for r in record.get("reasons", [])],
        "waived": [quote(r) for r in exceptions.get("waived", [])],
        "exceptions": {
            key: exceptions.get(key, [])
            for key in ("applied", "expired", "pending", "ignored", "unused")
        },
        "requirements": evaluation.get("requirements"),
        "deployment": evaluation.get("deployment"),
        "custom": evaluation.get("custom", []),
    }


def render_explanation(explained: dict[str, Any]) -> str:
    """Render an explanation for people."""
    out = _header_lines(explained)
    out.append("")
    out.append("reasons" if explained["reasons"] else "reasons   none")
    out.extend(_reason_lines(explained["reasons"]))
    if explained["waived"]:
        out.append("")
        out.append("waived by exceptions")
        out.extend(_reason_lines(explained["waived"]))
    out.extend(_exception_lines(explained["exceptions"]))
    for result in explained.get("custom") or []:
        if result.get("result") == "error":
            out.append(f"custom rule {result['id']} failed: {result.get('error')}")
    return "\n".join(_UNPRINTABLE.sub(_escape, line) for line in out)


def _header_lines(explained: dict[str, Any]) -> list[str]:
    tier = explained.get("tier") or {}
    enforcement = explained.get("enforcement") or {}
    policy = explained.get("policy") or {}
    out = [
        f"record    {explained['record']}",
        f"decision  {str(explained['decision']).upper()}",
        f"          {explained['summary']}",
        f"stage     {explained['stage']}, tier {tier.get('name', '(not recorded)')}"
        + (f" (from {tier['source']})" if tier.get("source") else ""),
    ]
    if tier.get("note"):
        out.append(f"          {tier['note']}")
    if enforcement:
        out.append(
            f"mode      {enforcement.get('mode')}: the policy decided {enforcement.get('decision')}"
            f", the gate reported {enforcement.get('reported')}"
        )
    out.append(f"policy    {policy.get('name')} from {policy.get('source')}")
    if policy.get("note"):
        out.append(f"          {policy['note']}")
    return out


def _exception_lines(exceptions: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, title in (
        ("expired", "expired exceptions (no longer applied)"),
        ("pending", "exceptions waiting for a second approver"),
        ("ignored", "exceptions not applied"),
    ):
        if not exceptions.get(key):
            continue
        out.append("")
        out.append(title)
        for item in exceptions[key]:
            why = f": {item['why']}" if item.get("why") else ""
            out.append(
                f"  {item['id']} {item['rule']} (expires {item['expires_at']}, approved by "
                f"{', '.join(item.get('approvers', []))}){why}"
            )
    return out


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def _reason_lines(reasons: list[dict[str, Any]]) -> list[str]:
    out = []
    for reason in reasons:
        line = reason.get("policy_line")
        at = f" (line {line})" if line else ""
        kind = SOURCES.get(str(reason.get("source")), str(reason.get("source")))
        waived = f", waived by exception {reason['exception']}" if reason.get("exception") else ""
        out.append(
            f"  {str(reason['action']).upper():<10} {reason['rule']} ({reason['severity']}) "
            f"in {reason['file']}{waived}"
        )
        out.append(f"             by {reason['policy_path']}{at}: {kind}")
        if reason.get("mapped_by"):
            out.append(f"             action set by {reason['mapped_by']}")
        if reason.get("policy_text"):
            out.append(f"             | {reason['policy_text']}")
        out.append(f"             {reason['message']}")
    return out
