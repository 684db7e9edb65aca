"""Criticality tiers and artifact label files.

An admission's tier is, in order of precedence:

1. the tier given by the caller (``attestgate admit --tier T``);
2. the ``attestgate.dev/tier`` label in the artifact's label file;
3. the policy's ``defaultTier`` (``standard`` unless set).

The label file sits beside the artifact, never inside it, so it does not
change the artifact's digest: ``model.safetensors.labels.yaml`` for the file
``model.safetensors``, ``my-model.labels.yaml`` for the directory
``my-model/``. ``admit --labels FILE`` names another file. It reads::

    apiVersion: attestgate/v1
    kind: ArtifactLabels
    labels:
      attestgate.dev/tier: critical
      team: vision

Label names follow Kubernetes label keys and values are strings. All labels
reach custom rules as ``artifact.labels``. The producer of an artifact may
be able to write next to it, so a label file may raise the tier above the
policy's default but not lower it, unless the policy sets
``labels.allowLowerTier: true``. A label that would lower the tier is
ignored and noted in the decision record.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from attestgate.errors import UsageError
from attestgate.policy.model import TIERS, Policy, TierChoice, tier_rank

logger = logging.getLogger(__name__)

LABEL_SUFFIX = ".labels.yaml"
TIER_LABEL = "attestgate.dev/tier"
MAX_LABEL_FILE_BYTES = 64 * 1024
MAX_LABELS = 64
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
MAX_LABEL_VALUE = 256


def label_file_for(artifact: Path) -> Path:
    """Return where the label file of ``artifact`` is looked for."""
    resolved = artifact.resolve() if artifact.exists() else artifact
    return resolved.parent / f"{resolved.name}{LABEL_SUFFIX}"


def read_labels(path: Path) -> dict[str, str]:
    """Read and check a label file; raise :class:`UsageError` when it is invalid."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_LABEL_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(
            f"label file {path} could not be read: {exc.strerror or exc}",
            hint="check the --labels path",
        ) from exc
    if len(data) > MAX_LABEL_FILE_BYTES:
        raise UsageError(f"label file {path} is larger than {MAX_LABEL_FILE_BYTES} bytes")
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise UsageError(f"label file {path} is not valid YAML: {exc}") from exc
    return _labels(document, path)


def _labels(document: Any, path: Path) -> dict[str, str]:
    hint = (
        "write apiVersion: attestgate/v1, kind: ArtifactLabels and a labels mapping of "
        "strings, such as attestgate.dev/tier: critical"
    )
    if not isinstance(document, dict) or document.get("kind") != "ArtifactLabels":
        raise UsageError(f"label file {path} is not an ArtifactLabels document", hint=hint)
    if document.get("apiVersion") != "attestgate/v1":
        raise UsageError(
            f"label file {path} has apiVersion {document.get('apiVersion')!r}, not attestgate/v1",
            hint=hint,
        )
    labels = document.get("labels") or {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise UsageError(
            f"labels in {path} must be a mapping of at most {MAX_LABELS} labels", hint=hint
        )
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise UsageError(f"label name {key!r} in {path} is not a valid label key", hint=hint)
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
            raise UsageError(
                f"label {key} in {path} must be a string of at most {MAX_LABEL_VALUE} characters",
                hint=hint,
            )
        out[key] = value
    tier = out.get(TIER_LABEL)
    if tier is not None and tier not in TIERS:
        raise UsageError(
            f"label {TIER_LABEL} in {path} is {tier!r}",
            hint=f"use one of: {', '.join(TIERS)}",
        )
    return out


def choose_tier(
    policy: Policy,
    *,
    requested: str | None = None,
    artifact: Path | None = None,
    labels_file: Path | None = None,
) -> TierChoice:
    """Decide the tier of one admission from the caller, the label file and the policy."""
    if requested is not None and requested not in TIERS:
        raise UsageError(f"unknown tier {requested!r}", hint=f"use one of: {', '.join(TIERS)}")
    path = labels_file
    if path is None and artifact is not None:
        candidate = label_file_for(artifact)
        path = candidate if candidate.is_file() else None
    labels = read_labels(path) if path is not None else {}
    label_file = str(path) if path is not None else ""
    default = policy.default_tier

    if requested is not None:
        return TierChoice(requested, "option", labels, label_file)
    labelled = labels.get(TIER_LABEL)
    if labelled is None:
        return TierChoice(default, "policy", labels, label_file)
    allow_lower = bool((policy.document.get("labels") or {}).get("allowLowerTier", False))
    if tier_rank(labelled) < tier_rank(default) and not allow_lower:
        note = (
            f"the label file asks for tier {labelled}, below the policy's default {default}; "
            "the label was ignored because the policy does not set labels.allowLowerTier"
        )
        logger.warning("%s (%s)", note, label_file)
        return TierChoice(default, "policy", labels, label_file, note)
    return TierChoice(labelled, "label", labels, label_file)
