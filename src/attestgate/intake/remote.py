"""Fetch a remote reference and attach what was resolved to the artifact's inspection."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from attestgate.findings import Finding, Severity
from attestgate.intake.huggingface import fetch_hf, verify_files
from attestgate.intake.identity import FetchResult, IntakeIdentity, intake_finding
from attestgate.intake.references import HfReference, OciReference, Reference, parse_reference
from attestgate.intake.refstore import ReferenceStore
from attestgate.intake.registry import pull_image
from attestgate.record import ArtifactIdentity
from attestgate.scanners.interface import Limits


class _Inspection(Protocol):
    """The fields of the pipeline's Inspection that a reference adds to."""

    artifact: ArtifactIdentity
    findings: list[Finding]
    timings: dict[str, float]


@dataclass
class ReferenceInspection:
    """A fetched reference: the local copy to inspect and the identity to record with it.

    ``evidence`` lists signatures and attestations the registry attached to
    the image, to verify together with any evidence given on the command line.
    """

    path: Path
    reference: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    evidence: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    expected_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_digest: str = ""

    def attach(self, inspection: _Inspection) -> None:
        """Name the reference in ``inspection``'s artifact and add the intake findings."""
        artifact = inspection.artifact
        if isinstance(artifact, IntakeIdentity):
            artifact.reference = self.reference
            identity = artifact
        else:
            identity = IntakeIdentity(
                path=artifact.path,
                kind=artifact.kind,
                sha256=artifact.sha256,
                files=artifact.files,
                excluded=artifact.excluded,
                reference=self.reference,
            )
        inspection.artifact = identity
        inspection.findings.extend(self.findings)
        inspection.findings.extend(self._verify(identity))
        inspection.timings["intake"] = inspection.timings.get("intake", 0.0) + self.seconds

    def _verify(self, identity: IntakeIdentity) -> list[Finding]:
        if self.expected_files:
            return verify_files(
                Path(identity.path), identity.files, identity.excluded, self.expected_files
            )
        if self.expected_digest and f"sha256:{identity.sha256}" != self.expected_digest:
            return [
                intake_finding(
                    "intake.digest-mismatch",
                    Severity.HIGH,
                    str(self.reference.get("uri", identity.path)),
                    f"the pulled image is named sha256:{identity.sha256}, not "
                    f"{self.expected_digest} as the registry resolved it",
                    "Delete the intake copy and admit the reference again.",
                )
            ]
        return []


def inspect_reference(
    ref: str | Path | Reference,
    intake_dir: Path,
    stage: str,
    *,
    home: Path | None = None,
    limits: Limits | None = None,
) -> ReferenceInspection:
    """Fetch an ``hf://`` or ``oci://`` reference into ``intake_dir`` for ``stage``.

    The reference store lives in ``home`` (the state directory; by default the
    parent of ``intake_dir``). Raises UsageError for a malformed or unknown
    reference and IntakeError when the hub or registry cannot deliver it.
    """
    parsed = ref if isinstance(ref, HfReference | OciReference) else parse_reference(ref)
    started = time.perf_counter()
    store = ReferenceStore(home or intake_dir.parent)
    try:
        if isinstance(parsed, HfReference):
            fetched: FetchResult = fetch_hf(parsed, intake_dir, stage, store)
        else:
            fetched = pull_image(parsed, intake_dir, stage, store, limits)
    finally:
        store.close()
    return ReferenceInspection(
        path=fetched.path,
        reference=fetched.reference,
        findings=fetched.findings,
        evidence=fetched.evidence,
        seconds=time.perf_counter() - started,
        expected_files=fetched.expected_files,
        expected_digest=fetched.expected_digest,
    )
