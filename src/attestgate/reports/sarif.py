"""Write findings as a SARIF 2.1.0 log for code-scanning dashboards.

The log has one run whose ``tool.driver`` is attestgate, with one rule per
rule id found. A rule's ``help`` text is the remediation of its first
finding, and its ``defaultConfiguration.level`` follows the worst severity
seen for it. Each finding is one result:

- ``level``: critical and high are ``error``, medium ``warning``, low and
  info ``note``; ``properties.severity`` keeps attestgate's own severity.
- ``locations[0].physicalLocation.artifactLocation.uri``: the file,
  relative to the artifact root (``uriBaseId`` ``ARTIFACTROOT``, defined in
  ``run.originalUriBaseIds``), percent-encoded.
- A member inside an archive is located at the archive file with a
  ``logicalLocations`` entry of kind ``resource`` whose
  ``fullyQualifiedName`` is the member path: ``pytorch_model.bin`` plus
  ``archive/data.pkl``. GitHub code scanning needs ``artifactLocation.uri``
  to name a file in the repository, so SARIF nested artifacts
  (``run.artifacts`` with ``parentIndex``), whose ``uri`` is a path inside
  the parent, would point it at files that do not exist.
- ``region.byteOffset`` is set when a finding in a top-level file has an
  offset. Model files are binary, and the SARIF standard forbids text
  regions (``startLine``) in binary artifacts, so no line is given. The
  offset of a finding inside an archive member counts from the start of
  the member, not the archive, so it goes to ``properties.offset`` instead.
- ``partialFingerprints["attestgate/v1"]``: SHA-256 of rule, file and offset,
  so a dashboard matches the same finding across runs.

NOTE: the SARIF SDK's GitHub validation rule GH1003 expects
``region.startLine``, which the standard forbids for binary files. How
GitHub displays a result without a line has not been tried against GitHub.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from attestgate._version import __version__
from attestgate.findings import Finding, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
INFORMATION_URI = "https://github.com/attestgate/attestgate"
ROOT_BASE_ID = "ARTIFACTROOT"
FINGERPRINT_KEY = "attestgate/v1"

LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}

# Scores on the CVSS v3 rating scale (critical 9.0-10.0, high 7.0-8.9,
# medium 4.0-6.9, low 0.1-3.9), which GitHub code scanning reads from a
# rule's "security-severity" property to rank security alerts.
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "2.0",
}


def sarif_log(
    findings: Sequence[Finding],
    *,
    root: Path | None = None,
    files: Iterable[str] = (),
    artifact: dict[str, Any] | None = None,
    successful: bool = True,
    exit_code: int | None = None,
) -> dict[str, Any]:
    """Return ``findings`` as a SARIF 2.1.0 log.

    ``root`` is the directory that file paths are relative to, ``files`` the
    artifact's top-level file paths (used to split ``a:b.bin:member`` at the
    right colon), ``artifact`` a property bag describing the artifact, and
    ``successful``/``exit_code`` describe the invocation.
    """
    known = frozenset(files)
    ordered = sorted(findings, key=lambda f: (f.file, -f.severity, f.rule, f.offset or 0))
    rules, index = _rules(ordered)
    results = [_result(f, index[f.rule], known) for f in ordered]

    invocation: dict[str, Any] = {"executionSuccessful": successful}
    if exit_code is not None:
        invocation["exitCode"] = exit_code
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "attestgate",
                "version": __version__,
                "informationUri": INFORMATION_URI,
                "rules": rules,
            }
        },
        "invocations": [invocation],
        "results": results,
    }
    if root is not None:
        run["originalUriBaseIds"] = {
            ROOT_BASE_ID: {
                "uri": root.resolve().as_uri().rstrip("/") + "/",
                "description": {"text": "The artifact root that result paths are relative to."},
            }
        }
    if artifact:
        run["properties"] = {"artifact": artifact}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def split_location(file: str, files: frozenset[str] = frozenset()) -> tuple[str, str]:
    """Split ``outer:member`` into the top-level file and the member path inside it.

    File names may contain colons, so the longest prefix that is one of the
    artifact's ``files`` wins; without a match, the first colon splits.
    """
    if file in files or ":" not in file:
        return file, ""
    cut = len(file)
    while (cut := file.rfind(":", 0, cut)) > 0:
        if file[:cut] in files:
            return file[:cut], file[cut + 1 :]
    outer, _, member = file.partition(":")
    return outer, member


def _rules(findings: Sequence[Finding]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    worst: dict[str, Severity] = {}
    for finding in findings:
        if finding.rule not in index:
            index[finding.rule] = len(rules)
            rules.append(
                {
                    "id": finding.rule,
                    "shortDescription": {"text": _describe_rule(finding.rule)},
                    "help": {"text": finding.remediation},
                    "properties": {"tags": ["security", finding.check or "attestgate"]},
                }
            )
        worst[finding.rule] = max(worst.get(finding.rule, Severity.INFO), finding.severity)
    for rule in rules:
        severity = worst[rule["id"]]
        rule["defaultConfiguration"] = {"level": LEVELS[severity]}
        rule["properties"]["severity"] = severity.label
        if severity in SECURITY_SEVERITY:
            rule["properties"]["security-severity"] = SECURITY_SEVERITY[severity]
    return rules, index


def _describe_rule(rule: str) -> str:
    """Return ``pickle.unsafe-global`` as ``pickle: unsafe global``."""
    family, _, rest = rule.partition(".")
    words = rest.replace(".", " ").replace("-", " ")
    return f"{family}: {words}" if words else family


def _result(finding: Finding, rule_index: int, files: frozenset[str]) -> dict[str, Any]:
    outer, member = split_location(finding.file, files)
    physical: dict[str, Any] = {
        "artifactLocation": {"uri": _uri(outer), "uriBaseId": ROOT_BASE_ID},
    }
    properties: dict[str, Any] = {
        "severity": finding.severity.label,
        "check": finding.check,
        "file": finding.file,
        "remediation": finding.remediation,
    }
    if finding.offset is not None:
        if member:
            properties["offset"] = finding.offset
        else:
            physical["region"] = {"byteOffset": finding.offset}
    if finding.details:
        properties["details"] = finding.details
    location: dict[str, Any] = {"physicalLocation": physical}
    if member:
        location["logicalLocations"] = [
            {
                "name": PurePosixPath(member).name or member,
                "fullyQualifiedName": member,
                "kind": "resource",
            }
        ]
    return {
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": finding.message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: _fingerprint(finding)},
        "properties": properties,
    }


def _uri(path: str) -> str:
    # Percent-encoding ":" keeps a relative path such as "a:b.bin" from
    # reading as a URI with the scheme "a".
    return quote(path, safe="/") or "."


def _fingerprint(finding: Finding) -> str:
    offset = "" if finding.offset is None else str(finding.offset)
    key = "\0".join((finding.rule, finding.file, offset))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
