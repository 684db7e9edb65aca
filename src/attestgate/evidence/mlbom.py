"""Release claims in a CycloneDX 1.6 ML-BOM (1.7 accepted): checks and construction.

The ML-BOM is validated with cyclonedx-python-lib's offline JSON schema
validator. Its model component (``type: machine-learning-model``, in
``metadata.component`` or ``components``) carries the artifact's SHA-256 hash,
its files as nested ``file`` components with their hashes, the standard
``modelCard``, and the release claims as ``attestgate:release:*`` properties:

=========================  ==================================================
claim                      where it is recorded
=========================  ==================================================
identity                   the component's name, version and SHA-256 hash;
                           ``attestgate:release:digest-method`` (``sha256`` for
                           a file, ``oms-root-sha256`` for a directory)
format-guarantees          ``attestgate:release:formats`` (comma-separated),
                           and ``attestgate:format`` on each file component
embedded-code              ``attestgate:release:embedded-code`` (``none`` or
                           ``present``) and ``attestgate:release:embedded-code-files``
static-scan                ``attestgate:release:scan-tool``,
                           ``attestgate:release:scan-checks`` and
                           ``attestgate:release:scan-findings``
                           (``critical=0 high=0 medium=0 low=0 info=0``)
evaluation                 ``modelCard.quantitativeAnalysis.performanceMetrics``
                           and ``attestgate:release:evaluation-report``
                           (``sha256:HEX NAME``, one per report)
deployment-requirements    ``attestgate:release:egress`` (``none`` or hosts),
                           ``attestgate:release:filesystem`` (``read-only`` or
                           ``read-write``), ``attestgate:release:gpu`` (``none``,
                           ``optional`` or ``required``)
=========================  ==================================================
"""

from __future__ import annotations

import logging
from typing import Any

from attestgate.evidence.crosscheck import ArtifactFacts, parse_counts
from attestgate.evidence.interface import (
    CLAIM_CONTRADICTED,
    DIGEST_MISMATCH,
    LIMIT_EXCEEDED,
    SCHEMA_INVALID,
    finding,
)
from attestgate.findings import Finding, Severity

logger = logging.getLogger(__name__)

PREFIX = "attestgate:release:"
FILE_FORMAT = "attestgate:format"
SPEC_VERSIONS = ("1.6", "1.7")
MAX_FINDINGS = 50

REQUIRED: dict[str, list[str]] = {
    "identity": ["hash"],
    "format-guarantees": ["formats"],
    "embedded-code": ["embedded-code"],
    "static-scan": ["scan-tool", "scan-findings"],
    "evaluation": ["performanceMetrics", "evaluation-report"],
    "deployment-requirements": ["egress", "filesystem", "gpu"],
}
HOW_TO_PRODUCE = {
    "identity": "run `attestgate attest release PATH`, which records the artifact's hashes",
    "format-guarantees": "run `attestgate attest release PATH`, which records the detected formats",
    "embedded-code": "run `attestgate attest release PATH`, which declares the code it finds",
    "static-scan": "run `attestgate attest release PATH`, which records its own scan results",
    "evaluation": "pass --evaluation FILE (JSON with metrics) to `attestgate attest release`",
    "deployment-requirements": "pass --egress, --filesystem and --gpu to "
    "`attestgate attest release`",
}
REMEDY = (
    "Produce the ML-BOM again with `attestgate attest release PATH` for this exact artifact, "
    "or find out why the artifact differs from what its producer declared."
)


def is_cyclonedx(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("bomFormat") == "CycloneDX"


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Validate against the CycloneDX JSON schema of the document's own spec version."""
    from attestgate.evidence import cyclonedx_schema

    version = str(doc.get("specVersion", ""))
    if version not in SPEC_VERSIONS:
        return [f"specVersion {version!r} is not supported; write CycloneDX 1.6 (1.7 is accepted)"]
    return cyclonedx_schema.schema_errors(doc, version)


def _properties(component: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in component.get("properties") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            out.setdefault(item["name"], []).append(str(item.get("value", "")))
    return out


def _sha256(component: dict[str, Any]) -> str:
    for item in component.get("hashes") or []:
        if isinstance(item, dict) and item.get("alg") == "SHA-256":
            return str(item.get("content", "")).lower()
    return ""


def model_components(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the BOM's machine-learning-model components, the BOM's subject first."""
    found: list[dict[str, Any]] = []
    subject = (doc.get("metadata") or {}).get("component")
    if isinstance(subject, dict) and subject.get("type") == "machine-learning-model":
        found.append(subject)
    for component in doc.get("components") or []:
        if isinstance(component, dict) and component.get("type") == "machine-learning-model":
            found.append(component)
    return found


def pick_model_component(doc: dict[str, Any], sha256: str) -> dict[str, Any] | None:
    components = model_components(doc)
    for component in components:
        if _sha256(component) == sha256:
            return component
    return components[0] if components else None


def claim_gaps(doc: dict[str, Any], component: dict[str, Any] | None) -> dict[str, list[str]]:
    """Return release claim id -> missing fields (empty when complete)."""
    if component is None:
        return {claim: ["a machine-learning-model component"] for claim in REQUIRED}
    props = _properties(component)
    card = component.get("modelCard") or {}
    metrics = (card.get("quantitativeAnalysis") or {}).get("performanceMetrics") or []
    present = {name[len(PREFIX) :] for name in props if name.startswith(PREFIX)}
    if _sha256(component):
        present.add("hash")
    if metrics:
        present.add("performanceMetrics")
    return {claim: [f for f in fields if f not in present] for claim, fields in REQUIRED.items()}


def check_mlbom(
    doc: dict[str, Any], facts: ArtifactFacts, where: str
) -> tuple[list[Finding], dict[str, list[str]], dict[str, Any], bool]:
    """Validate the ML-BOM and cross-check its claims; return findings, gaps, facts and binding."""
    from attestgate.evidence.cyclonedx_schema import MAX_NODES, count_nodes

    if count_nodes(doc, MAX_NODES) > MAX_NODES:
        return (
            [
                finding(
                    LIMIT_EXCEEDED,
                    Severity.MEDIUM,
                    where,
                    f"the ML-BOM {where} contains more than {MAX_NODES} JSON values, more "
                    "than the gate validates, so its claims were not checked",
                    "Describe the release in a smaller ML-BOM, for example one per model "
                    "rather than one per repository.",
                )
            ],
            {},
            {},
            False,
        )
    errors = validation_errors(doc)
    if errors:
        return (
            [
                finding(
                    SCHEMA_INVALID,
                    Severity.HIGH,
                    where,
                    f"the ML-BOM {where} is not valid CycloneDX {doc.get('specVersion', '')}: "
                    + "; ".join(errors),
                    "Fix the listed field, or produce the ML-BOM with `attestgate attest release`.",
                )
            ],
            {},
            {},
            False,
        )
    component = pick_model_component(doc, facts.sha256)
    gaps = claim_gaps(doc, component)
    if component is None:
        return [], gaps, {"spec_version": doc.get("specVersion")}, False

    props = _properties(component)
    info: dict[str, Any] = {
        "spec_version": doc.get("specVersion"),
        "component": component.get("name", ""),
        "version": component.get("version", ""),
    }
    findings: list[Finding] = []
    bound = _check_hashes(component, facts, where, findings)
    _check_formats(props, component, facts, where, findings)
    _check_embedded_code(props, facts, where, findings)
    _check_scan(props, facts, where, findings)
    for key in ("egress", "filesystem", "gpu", "embedded-code", "formats"):
        if PREFIX + key in props:
            info[key] = props[PREFIX + key][0]
    return findings, gaps, info, bound


def _check_hashes(
    component: dict[str, Any], facts: ArtifactFacts, where: str, findings: list[Finding]
) -> bool:
    declared = _sha256(component)
    bound = declared == facts.sha256
    if declared and not bound:
        findings.append(
            finding(
                DIGEST_MISMATCH,
                Severity.CRITICAL,
                where,
                f"the ML-BOM {where} declares SHA-256 {declared} for {component.get('name', '')}, "
                f"but the artifact's digest is sha256:{facts.sha256}",
                REMEDY,
            )
        )
    listed = 0
    for child in component.get("components") or []:
        if not isinstance(child, dict) or child.get("type") != "file":
            continue
        name = str(child.get("name", ""))
        declared_file = _sha256(child)
        actual = facts.files.get(name)
        if not declared_file or listed >= MAX_FINDINGS:
            continue
        if actual is None:
            message = f"the ML-BOM {where} lists file {name}, which the artifact does not contain"
        elif actual[0] != declared_file:
            message = (
                f"the ML-BOM {where} declares SHA-256 {declared_file} for {name}, but the file "
                f"has {actual[0]}"
            )
        else:
            continue
        listed += 1
        bound = False
        findings.append(finding(DIGEST_MISMATCH, Severity.CRITICAL, name, message, REMEDY))
    return bound


def _check_formats(
    props: dict[str, list[str]],
    component: dict[str, Any],
    facts: ArtifactFacts,
    where: str,
    findings: list[Finding],
) -> None:
    declared_text = props.get(PREFIX + "formats", [""])[0]
    declared = {f.strip() for f in declared_text.split(",") if f.strip()}
    if declared:
        undeclared = sorted(set(facts.formats) - declared)
        if undeclared:
            findings.append(
                finding(
                    CLAIM_CONTRADICTED,
                    Severity.HIGH,
                    where,
                    f"the ML-BOM {where} declares the formats {', '.join(sorted(declared))}, "
                    f"but the artifact also contains {', '.join(undeclared)}",
                    REMEDY,
                    declared=sorted(declared),
                    detected=facts.formats,
                )
            )
    for child in component.get("components") or []:
        if not isinstance(child, dict):
            continue
        name = str(child.get("name", ""))
        fmt = _properties(child).get(FILE_FORMAT, [""])[0]
        actual = facts.files.get(name)
        if fmt and actual is not None and actual[1] != fmt:
            findings.append(
                finding(
                    CLAIM_CONTRADICTED,
                    Severity.HIGH,
                    name,
                    f"the ML-BOM {where} declares {name} as {fmt}, but its bytes are {actual[1]}",
                    REMEDY,
                )
            )


def _check_embedded_code(
    props: dict[str, list[str]], facts: ArtifactFacts, where: str, findings: list[Finding]
) -> None:
    declaration = props.get(PREFIX + "embedded-code", [""])[0].strip().lower()
    if declaration != "none":
        return
    found = facts.code_findings()
    if not found:
        return
    shown = ", ".join(f"{file} ({rule})" for file, rule in found[:10])
    findings.append(
        finding(
            CLAIM_CONTRADICTED,
            Severity.HIGH,
            where,
            f"the ML-BOM {where} declares no embedded code, but the scan found code: {shown}",
            "Do not promote the artifact until its producer explains the code; a release "
            "that hides code it ships cannot be trusted.",
            code=[{"file": f, "rule": r} for f, r in found[:MAX_FINDINGS]],
        )
    )


def _check_scan(
    props: dict[str, list[str]], facts: ArtifactFacts, where: str, findings: list[Finding]
) -> None:
    declared = parse_counts(props.get(PREFIX + "scan-findings", [""])[0])
    if not declared:
        return
    actual = facts.severity_counts()
    understated = [
        level
        for level in ("critical", "high")
        if level in declared and actual.get(level, 0) > declared[level]
    ]
    if understated:
        findings.append(
            finding(
                CLAIM_CONTRADICTED,
                Severity.HIGH,
                where,
                f"the ML-BOM {where} records "
                + ", ".join(f"{declared[level]} {level}" for level in understated)
                + " scan findings, but this scan found "
                + ", ".join(f"{actual[level]} {level}" for level in understated),
                "Compare the producer's scan with this one, and do not promote the artifact "
                "until the difference is explained.",
            )
        )
