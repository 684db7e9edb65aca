"""What the inspection found, in the terms claims are checked against.

Release claims declare formats, an embedded-code status, scan results and
hashes. :class:`ArtifactFacts` condenses the identify-and-scan result into the
same terms, so that the ML-BOM checks and ``attest release`` read one view.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from attestgate.evidence.interface import CHECK as EVIDENCE_CHECK
from attestgate.findings import Finding, Severity
from attestgate.record import ArtifactIdentity

# Findings that mean the artifact carries code that runs when it is loaded.
# Rule ids are matched as shell patterns.
EMBEDDED_CODE_RULES = (
    "hf.embedded-code",
    "hf.auto-map",
    "hf.auto-map-remote",
    "hf.trust-remote-code",
    "torchscript.embedded-code",
    "keras.lambda-layer",
    "keras.custom-object*",
    "pickle.*",
    "*.embedded-code",
    "*.lambda-layer",
)
# File formats that are code whatever their content.
CODE_FORMATS = frozenset({"python", "native-executable"})


@dataclass
class ArtifactFacts:
    """The artifact's identity, formats and scan results, as claims refer to them."""

    name: str
    kind: str
    sha256: str
    digest_method: str
    files: dict[str, tuple[str, str]]  # path -> (sha256, detected format)
    scan_findings: list[Finding] = field(default_factory=list)

    @classmethod
    def from_inspection(cls, artifact: ArtifactIdentity, findings: list[Finding]) -> ArtifactFacts:
        return cls(
            name=Path(artifact.path).name,
            kind=artifact.kind,
            sha256=artifact.sha256,
            digest_method="sha256" if artifact.kind == "file" else "oms-root-sha256",
            files={r.path: (r.sha256, r.format.value) for r in artifact.files},
            scan_findings=[f for f in findings if f.check != EVIDENCE_CHECK],
        )

    @property
    def formats(self) -> list[str]:
        return sorted({fmt for _, fmt in self.files.values()})

    def code_findings(self) -> list[tuple[str, str]]:
        """Return (file, rule) for every sign of embedded code, sorted."""
        found: set[tuple[str, str]] = set()
        for item in self.scan_findings:
            if any(fnmatch.fnmatchcase(item.rule, pattern) for pattern in EMBEDDED_CODE_RULES):
                found.add((item.file, item.rule))
        for path, (_, fmt) in self.files.items():
            if fmt in CODE_FORMATS:
                found.add((path, f"format:{fmt}"))
        return sorted(found)

    def severity_counts(self) -> dict[str, int]:
        counts = {s.label: 0 for s in sorted(Severity, reverse=True)}
        for item in self.scan_findings:
            counts[item.severity.label] += 1
        return counts


def format_counts(counts: dict[str, int]) -> str:
    """Render severity counts as ``critical=0 high=0 ...``, the form ML-BOM properties use."""
    return " ".join(f"{name}={count}" for name, count in counts.items())


def parse_counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in text.replace(",", " ").split():
        name, _, value = part.partition("=")
        if value.isdigit():
            out[name.strip().lower()] = int(value)
    return out
