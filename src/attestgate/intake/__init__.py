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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Name -> submodule, imported on first use: `attestgate admit` calls
# is_reference() on every path, and must not pay for the registry and
# hub clients when the path is a plain file.
_EXPORTS = {
    "HfReference": "references",
    "ImageInspection": "image",
    "IntakeError": "identity",
    "IntakeIdentity": "identity",
    "LocalInspection": "local",
    "LocalKind": "references",
    "OciReference": "references",
    "ReferenceInspection": "remote",
    "detect_local": "references",
    "inspect_image": "image",
    "inspect_local": "local",
    "inspect_reference": "remote",
    "is_reference": "references",
    "parse_reference": "references",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attestgate.intake' has no attribute {name!r}")
    return getattr(importlib.import_module(f"attestgate.intake.{module}"), name)
