"""Intake of container images and remote references.

- Local image sources: OCI image layout directories and ``docker save``
  archives, scanned layer by layer (:func:`inspect_image`), and Hugging Face
  cache snapshots, read through their links into the blob store
  (:func:`inspect_local` dispatches).
- Remote references: ``oci://HOST/NAME@sha256:...`` pulled with oras and
  ``hf://OWNER/NAME@COMMIT`` downloaded with huggingface_hub into the intake
  directory (:func:`inspect_reference`), with the resolved digest or commit,
  the owner and the per-file digests recorded, and namespace reuse detected
  against earlier admissions.
"""

from attestgate.intake.identity import IntakeError, IntakeIdentity
from attestgate.intake.image import ImageInspection, inspect_image
from attestgate.intake.local import LocalInspection, inspect_local
from attestgate.intake.references import (
    HfReference,
    LocalKind,
    OciReference,
    detect_local,
    is_reference,
    parse_reference,
)
from attestgate.intake.remote import ReferenceInspection, inspect_reference

__all__ = [
    "HfReference",
    "ImageInspection",
    "IntakeError",
    "IntakeIdentity",
    "LocalInspection",
    "LocalKind",
    "OciReference",
    "ReferenceInspection",
    "detect_local",
    "inspect_image",
    "inspect_local",
    "inspect_reference",
    "is_reference",
    "parse_reference",
]
