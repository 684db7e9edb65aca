"""The artifact identity of images and references, the intake error and finding helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from attestgate.errors import AttestgateError
from attestgate.findings import Finding, Severity
from attestgate.record import ArtifactIdentity

IMAGE_CHECK = "image"
INTAKE_CHECK = "intake"
SECRETS_CHECK = "secrets"

# Digest methods beyond the two of a file and a directory.
OCI_MANIFEST = "oci-manifest-sha256"  # the bytes of the manifest (or index) the image is named by
OCI_LAYOUT_INDEX = "oci-layout-index-sha256"  # a layout's index.json listing several images
DOCKER_IMAGE_ID = "docker-image-id"  # the config digest of a legacy docker save archive
DOCKER_ARCHIVE_MANIFEST = "docker-archive-manifest-sha256"  # manifest.json naming several images

SHORT_DIGEST_HEX = 8


class Readable(Protocol):
    """A stream of bytes read front to back."""

    def read(self, size: int = -1, /) -> bytes: ...


class IntakeError(AttestgateError):
    """A reference could not be fetched, or an image could not be read far enough to name it."""


@dataclass
class IntakeIdentity(ArtifactIdentity):
    """An artifact identity that also names the image or the reference it came from.

    ``method`` replaces the digest method that ``kind`` implies, for images.
    ``total_size`` replaces the sum of ``files`` sizes, because an image's
    files list only the members that a scanner read.

    NOTE: an image's files are located inside layers (``sha256:ab12cd34:/path``)
    and do not exist under ``path``, so dynamic plug-ins that open artifact
    files by path find nothing to load for an image.
    """

    method: str = ""
    reference: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    total_size: int | None = None

    @property
    def size(self) -> int:
        if self.total_size is not None:
            return self.total_size
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.method:
            out["digest_method"] = self.method
        if self.reference is not None:
            out["reference"] = self.reference
        if self.image is not None:
            out["image"] = self.image
        return out


def short_digest(digest: str) -> str:
    """Return ``sha256:ab12cd34`` for a full ``sha256:...`` digest."""
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}:{hex_digest[:SHORT_DIGEST_HEX]}"


def display_path(name: str, limit: int = 300) -> str:
    """Return a member name that is safe to print: control characters escaped, length bounded."""
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch) & 0xFF:02x}" for ch in name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def image_finding(
    rule: str,
    severity: Severity,
    file: str,
    message: str,
    remediation: str,
    **details: Any,
) -> Finding:
    return Finding(rule, severity, file, message, remediation, check=IMAGE_CHECK, details=details)


def intake_finding(
    rule: str,
    severity: Severity,
    file: str,
    message: str,
    remediation: str,
    **details: Any,
) -> Finding:
    return Finding(rule, severity, file, message, remediation, check=INTAKE_CHECK, details=details)


@dataclass
class FetchResult:
    """A remote reference fetched into the intake directory, before it is inspected.

    ``expected_files`` maps each file the hub listed to the digests it stated
    (``lfs_sha256`` or ``git_oid``, and ``size``), so that the inspected bytes
    can be checked against them. ``expected_digest`` is the image digest a
    registry resolved the reference to.
    """

    path: Path
    reference: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    evidence: list[Path] = field(default_factory=list)
    expected_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_digest: str = ""
