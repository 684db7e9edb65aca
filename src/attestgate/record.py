"""The decision record: what was checked, what was found, and why."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from attestgate._version import __version__
from attestgate.findings import Finding
from attestgate.identify.stream import FileReport

if TYPE_CHECKING:
    # Imported for annotations only: intake and the pipeline build records
    # before the policy engine and jsonschema need to load.
    from attestgate.policy import Decision, Policy

SCHEMA_VERSION = "1"
RECORD_KIND = "attestgate.decision"


@dataclass
class CheckRun:
    """One check as it ran over the artifact: its version, files and time."""

    name: str
    version: str
    files: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "files": self.files,
            "seconds": round(self.seconds, 6),
        }


@dataclass
class ArtifactIdentity:
    path: str
    kind: str  # "file" or "directory"
    sha256: str
    files: list[FileReport]
    excluded: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "digest": {"sha256": self.sha256},
            "digest_method": "sha256" if self.kind == "file" else "oms-root-sha256",
            "size": self.size,
            "files": [f.to_json() for f in self.files],
            "excluded": self.excluded,
        }


def check_runs(files: Iterable[FileReport]) -> list[CheckRun]:
    runs: dict[str, CheckRun] = {}
    for report in files:
        if not report.scanner:
            continue
        run = runs.setdefault(report.scanner, CheckRun(report.scanner, report.scanner_version))
        run.files += 1
        run.seconds += report.scan_seconds
    return sorted(runs.values(), key=lambda r: r.name)


def build_record(
    *,
    record_id: str,
    created_at: str,
    stage: str,
    artifact: ArtifactIdentity,
    findings: list[Finding],
    decision: Decision,
    policy: Policy,
    checks: list[CheckRun],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Return the decision record as the JSON document that is stored and printed."""
    ordered = sorted(findings, key=lambda f: (f.file, -f.severity, f.rule))
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": RECORD_KIND,
        "id": record_id,
        "created_at": created_at,
        "stage": stage,
        "decision": decision.action.label,
        "summary": decision.summary,
        "artifact": artifact.to_json(),
        "findings": [f.to_json() for f in ordered],
        "reasons": [r.to_json() for r in decision.reasons],
        "policy": {
            "name": policy.name,
            "source": policy.source,
            "digest": {"sha256": policy.sha256},
        },
        "gate": {"name": "attestgate", "version": __version__},
        "checks": [c.to_json() for c in checks],
        "timings": {k: round(v, 6) for k, v in timings.items()},
    }


def record_schema() -> dict[str, Any]:
    text = (
        resources.files("attestgate.schemas").joinpath("decision-record.v1.json").read_text("utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_record(record: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``record`` breaks the published schema."""
    from attestgate._jsonschema import jsonschema

    jsonschema.validate(record, record_schema(), cls=jsonschema.Draft202012Validator)
