"""Building the ML-BOM that ``attest release`` writes.

The document is CycloneDX 1.6 JSON with the release claims in the places
:mod:`attestgate.evidence.mlbom` documents; it is validated against the
CycloneDX schema before it is signed.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from attestgate._version import __version__
from attestgate.evidence.crosscheck import ArtifactFacts, format_counts
from attestgate.evidence.interface import EvidenceError
from attestgate.evidence.mlbom import FILE_FORMAT, PREFIX, validation_errors

logger = logging.getLogger(__name__)

MAX_CARD_BYTES = 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024
FILESYSTEM = ("read-only", "read-write")
GPU = ("none", "optional", "required")


@dataclass
class Evaluation:
    """One evaluation report: its name, digest and the metrics read from it."""

    name: str
    sha256: str
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReleaseInputs:
    """The producer's statements about a release, beyond the scan results."""

    name: str
    version: str = ""
    egress: list[str] | None = None  # [] means no egress
    filesystem: str = ""
    gpu: str = ""
    evaluations: list[Evaluation] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # scanner name -> version


def _read_limited(path: Path, limit: int) -> str:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise EvidenceError(f"{path} is larger than {limit} bytes", hint="pass a smaller file")
    return data.decode("utf-8", "replace")


def front_matter(readme: Path) -> dict[str, Any]:
    """Return the YAML front matter of a Hugging Face model card, or an empty mapping."""
    try:
        text = _read_limited(readme, MAX_CARD_BYTES)
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError as exc:
        logger.warning("model card front matter in %s is not valid YAML: %s", readme, exc)
        return {}
    return data if isinstance(data, dict) else {}


def read_config(path: Path) -> dict[str, Any]:
    """Return ``config.json`` as a mapping; an unreadable file yields an empty one."""
    try:
        data = json.loads(_read_limited(path, MAX_CONFIG_BYTES))
    except (OSError, ValueError, RecursionError) as exc:
        logger.warning("%s could not be read as JSON: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def model_card(
    config: dict[str, Any], card: dict[str, Any], evaluations: list[Evaluation]
) -> dict[str, Any]:
    """Return a CycloneDX modelCard from config.json, the card's front matter and evaluations."""
    parameters: dict[str, Any] = {}
    if isinstance(card.get("pipeline_tag"), str):
        parameters["task"] = card["pipeline_tag"]
    if isinstance(config.get("model_type"), str):
        parameters["architectureFamily"] = config["model_type"]
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        parameters["modelArchitecture"] = architectures[0]
    datasets = card.get("datasets")
    if isinstance(datasets, str):
        datasets = [datasets]
    if isinstance(datasets, list):
        parameters["datasets"] = [
            {"type": "dataset", "name": str(d)} for d in datasets if isinstance(d, str)
        ]

    metrics = [m for e in evaluations for m in e.metrics] + _card_metrics(card)
    out: dict[str, Any] = {}
    if parameters:
        out["modelParameters"] = parameters
    if metrics:
        out["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    properties = [
        {"name": f"huggingface:{key}", "value": str(card[key])}
        for key in ("license", "language", "library_name", "base_model", "tags")
        if card.get(key) not in (None, "", [])
    ]
    if properties:
        out["properties"] = properties
    return out


def _card_metrics(card: dict[str, Any]) -> list[dict[str, Any]]:
    # Hugging Face "model-index": results[].metrics[] with type and value.
    out: list[dict[str, Any]] = []
    for model in card.get("model-index") or []:
        if not isinstance(model, dict):
            continue
        for result in model.get("results") or []:
            if not isinstance(result, dict):
                continue
            dataset = result.get("dataset")
            if not isinstance(dataset, dict):
                dataset = {}
            for metric in result.get("metrics") or []:
                if isinstance(metric, dict) and "type" in metric and "value" in metric:
                    entry = {"type": str(metric["type"]), "value": str(metric["value"])}
                    if dataset.get("name"):
                        entry["slice"] = str(dataset["name"])
                    out.append(entry)
    return out


def evaluation_metrics(document: Any) -> list[dict[str, Any]]:
    """Read metrics from an evaluation report: ``{"metrics": [{"type", "value", "slice"}]}``
    or a flat ``{"accuracy": 0.9}`` mapping."""
    if not isinstance(document, dict):
        return []
    listed = document.get("metrics")
    if isinstance(listed, list):
        return [
            {k: str(v) for k, v in m.items() if k in ("type", "value", "slice")}
            for m in listed
            if isinstance(m, dict) and "type" in m and "value" in m
        ]
    return [
        {"type": str(k), "value": str(v)}
        for k, v in document.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def _prop(name: str, value: str) -> dict[str, str]:
    return {"name": PREFIX + name, "value": value}


def build_mlbom(
    facts: ArtifactFacts,
    inputs: ReleaseInputs,
    config: dict[str, Any],
    card: dict[str, Any],
) -> dict[str, Any]:
    """Return a CycloneDX 1.6 ML-BOM for the artifact; raise ``EvidenceError`` if invalid."""
    if inputs.filesystem and inputs.filesystem not in FILESYSTEM:
        raise EvidenceError(
            f"filesystem {inputs.filesystem!r} is not one of {', '.join(FILESYSTEM)}"
        )
    if inputs.gpu and inputs.gpu not in GPU:
        raise EvidenceError(f"gpu {inputs.gpu!r} is not one of {', '.join(GPU)}")

    code = facts.code_findings()
    properties = [
        _prop("digest-method", facts.digest_method),
        _prop("formats", ",".join(facts.formats)),
        _prop("embedded-code", "present" if code else "none"),
        _prop("scan-tool", f"attestgate {__version__}"),
        _prop("scan-findings", format_counts(facts.severity_counts())),
    ]
    if code:
        properties.append(_prop("embedded-code-files", ",".join(sorted({f for f, _ in code}))))
    if inputs.checks:
        checks = ", ".join(f"{name} {version}" for name, version in sorted(inputs.checks.items()))
        properties.append(_prop("scan-checks", checks))
    properties.extend(
        _prop("evaluation-report", f"sha256:{e.sha256} {e.name}") for e in inputs.evaluations
    )
    if inputs.egress is not None:
        properties.append(_prop("egress", ",".join(inputs.egress) if inputs.egress else "none"))
    if inputs.filesystem:
        properties.append(_prop("filesystem", inputs.filesystem))
    if inputs.gpu:
        properties.append(_prop("gpu", inputs.gpu))

    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": "model",
        "name": inputs.name,
        "hashes": [{"alg": "SHA-256", "content": facts.sha256}],
        "properties": properties,
    }
    if inputs.version:
        component["version"] = inputs.version
    card_json = model_card(config, card, inputs.evaluations)
    if card_json:
        component["modelCard"] = card_json
    if facts.kind == "directory":
        # Files the gate could not read in full have no digest to declare.
        component["components"] = [
            _file_component(path, sha, fmt)
            for path, (sha, fmt) in sorted(facts.files.items())
            if len(sha) == 64
        ]

    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "tools": {
                "components": [
                    {"type": "application", "name": "attestgate", "version": __version__}
                ]
            },
            "component": component,
        },
    }
    errors = validation_errors(bom)
    if errors:
        raise EvidenceError(
            "the ML-BOM built for the release is not valid CycloneDX: " + "; ".join(errors),
            hint="check the values given to `attestgate attest release`",
        )
    return bom


def _file_component(path: str, sha256: str, fmt: str) -> dict[str, Any]:
    return {
        "type": "file",
        "bom-ref": f"file:{path}",
        "name": path,
        "hashes": [{"alg": "SHA-256", "content": sha256}],
        "properties": [{"name": FILE_FORMAT, "value": fmt}],
    }
