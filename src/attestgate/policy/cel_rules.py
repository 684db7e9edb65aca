"""Custom rules: CEL expressions over the decision inputs.

CEL comes from ``common-expression-language`` (Python bindings over the Rust
``cel`` crate). It was chosen over the pure-Python ``cel-python`` because
custom rules run on values taken from the artifact, such as file names,
messages and label values. The Rust crate's regular expressions match in
linear time, so a crafted file name cannot turn a policy's ``matches()``
into a denial of service. Evaluation is also fast enough to run on every
admission.
The package also ships type stubs, and a compiled program can be evaluated
many times. It is imported only when a policy has custom rules, because its
bundled command-line tool makes the import take about a second.

An expression can use these variables:

==========  ===============================================================
stage       the stage name
tier        the tier name
artifact    path, name, kind, digest (hex), size, formats (list), files
            (list of path, format, size) and labels (map)
evidence    status, signed (bool), signers, claims and trusted_claims (per
            set, per claim), slsa (level, builders, trusted_builders) and
            pieces (kind, status, signature, bound, predicate_type, signer)
findings    list of rule, severity, level (0 info to 4 critical), file,
            check, message
counts      number of findings per severity
deployment  declared requirements (egress, filesystem, gpu, capabilities),
            or null when the release claims declare none
==========  ===============================================================

A rule fires when its expression evaluates to true. An expression that
fails at evaluation (a missing field, a type error) or evaluates to
anything but a boolean is a check error, so it never lets an artifact
through.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from attestgate.findings import Finding, Severity

if TYPE_CHECKING:
    import cel

VARIABLES = ("stage", "tier", "artifact", "evidence", "findings", "counts", "deployment")
# Entries of artifact.files and findings passed to expressions; counts and
# artifact.size always cover everything.
MAX_FILES = 10_000
MAX_FINDINGS = 10_000
# NOTE: the binding offers no time limit for evaluation. Expressions are at
# most 4096 characters and the lists above are bounded, but comprehensions
# nested inside each other cost the product of their list sizes.


class CelRuleError(Exception):
    """A custom rule could not be compiled or evaluated."""


@functools.lru_cache(maxsize=256)
def compile_expression(expression: str) -> cel.Program:
    """Compile ``expression``; raise :class:`CelRuleError` with the parser's message."""
    import cel

    try:
        return cel.compile(expression)
    except (ValueError, RuntimeError) as exc:
        raise CelRuleError(str(exc).replace("\n", " ")) from exc


def evaluate_expression(program: cel.Program, inputs: Mapping[str, Any]) -> bool:
    """Evaluate a compiled rule; raise :class:`CelRuleError` unless it yields a boolean."""
    try:
        result = program.execute(dict(inputs))
    except Exception as exc:  # the binding raises several Python types for CEL errors
        raise CelRuleError(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, bool):
        raise CelRuleError(f"the expression returned {result!r}, not true or false")
    return result


def sample_inputs() -> dict[str, Any]:
    """Return inputs of the documented shape, for checking expressions when a policy loads."""
    return build_inputs(
        stage="deployment",
        tier="standard",
        artifact={"path": "/model", "kind": "directory", "digest": {"sha256": "0" * 64}},
        labels={},
        summary={
            "status": "incomplete",
            "signed": False,
            "signers": [],
            "claims": {"training": {}, "release": {}},
            "trusted_claims": {"training": {}, "release": {}},
            "slsa": {"level": 0, "builders": [], "trusted_builders": []},
        },
        evidence=None,
        findings=[],
        deployment=None,
    )


def check_expression(expression: str) -> tuple[str, str]:
    """Return (error, warning) for an expression; empty strings when there is none.

    Compilation errors and names that are not input variables are errors.
    Other failures on the sample inputs are warnings, since an expression
    may rightly depend on values (a label, a finding) that the sample lacks.
    """
    try:
        program = compile_expression(expression)
    except CelRuleError as exc:
        return f"the CEL expression does not compile: {exc}", ""
    try:
        result = program.execute(sample_inputs())
    except RuntimeError as exc:
        if "Undefined variable" in str(exc):
            names = ", ".join(VARIABLES)
            return f"the CEL expression uses an unknown name ({exc}); the inputs are {names}", ""
        return "", f"the CEL expression fails on an empty admission: {exc}"
    except Exception as exc:  # noqa: BLE001 - the binding raises many Python types for CEL errors
        return "", f"the CEL expression fails on an empty admission: {type(exc).__name__}: {exc}"
    if not isinstance(result, bool):
        return f"the CEL expression returns {type(result).__name__}, not true or false", ""
    return "", ""


def build_inputs(
    *,
    stage: str,
    tier: str,
    artifact: Mapping[str, Any] | None,
    labels: Mapping[str, str],
    summary: Mapping[str, Any],
    evidence: Mapping[str, Any] | None,
    findings: Sequence[Finding],
    deployment: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Return the CEL variables for one admission, as plain JSON-like values."""
    artifact = artifact or {}
    files: list[dict[str, Any]] = [
        {
            "path": str(f.get("path", "")),
            "format": str(f.get("format", "")),
            "size": int(f.get("size", 0)),
        }
        for f in (artifact.get("files") or [])[:MAX_FILES]
        if isinstance(f, Mapping)
    ]
    path = str(artifact.get("path", ""))
    digest = artifact.get("digest") or {}
    pieces = []
    for piece in (evidence or {}).get("pieces") or []:
        if not isinstance(piece, Mapping):
            continue
        signer = piece.get("signer") if isinstance(piece.get("signer"), Mapping) else {}
        pieces.append(
            {
                "kind": str(piece.get("kind", "")),
                "status": str(piece.get("status", "")),
                "signature": str(piece.get("signature", "")),
                "bound": bool(piece.get("bound")),
                "predicate_type": str(piece.get("predicate_type", "")),
                "signer": {
                    "kind": str((signer or {}).get("kind", "none")),
                    "identity": str((signer or {}).get("identity", "")),
                    "issuer": str((signer or {}).get("issuer", "")),
                    "trusted": bool((signer or {}).get("trusted")),
                },
            }
        )
    counts = {severity.label: 0 for severity in Severity}
    listed: list[dict[str, Any]] = []
    for finding in findings:
        counts[finding.severity.label] += 1
        if len(listed) < MAX_FINDINGS:
            listed.append(
                {
                    "rule": finding.rule,
                    "severity": finding.severity.label,
                    "level": int(finding.severity),
                    "file": finding.file,
                    "check": finding.check,
                    "message": finding.message,
                }
            )
    return {
        "stage": stage,
        "tier": tier,
        "artifact": {
            "path": path,
            "name": path.rstrip("/").rsplit("/", 1)[-1],
            "kind": str(artifact.get("kind", "")),
            "digest": str(digest.get("sha256", "")) if isinstance(digest, Mapping) else "",
            "size": int(artifact.get("size", sum(f["size"] for f in files))),
            "formats": sorted({f["format"] for f in files}),
            "files": files,
            "labels": dict(labels),
        },
        "evidence": {**summary, "pieces": pieces},
        "findings": listed,
        "counts": counts,
        "deployment": dict(deployment) if deployment is not None else None,
    }
