"""The training-claims predicate: its checks and how ``attest training`` builds it.

Predicate type ``https://attestgate.dev/training-claims/v1``, published as the
JSON Schema ``attestgate/schemas/training-claims.v1.json``. It carries six
claims; each is complete when the fields listed in :data:`REQUIRED` are set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attestgate.evidence.interface import CLAIM_CONTRADICTED, SCHEMA_INVALID, finding
from attestgate.evidence.intoto import Statement
from attestgate.evidence.schema import schema_errors
from attestgate.findings import Finding, Severity

SCHEMA = "training-claims.v1.json"

# Claim id -> (predicate section, fields that make it complete). A tuple
# inside the list means "any one of these".
REQUIRED: dict[str, tuple[str, list[str | tuple[str, ...]]]] = {
    "data-lineage": ("dataLineage", ["datasets", "samplingPolicy"]),
    "code-lineage": ("codeLineage", ["repository", "commit", "trainingConfig"]),
    "environment": ("environment", [("lockFiles", "baseImage"), "libraries", "python"]),
    "hyperparameters": ("hyperparameters", ["optimizer", "schedule", "batchSize", "seeds"]),
    "compute": ("compute", ["accelerator", "driver", "toolchain"]),
    "run-metadata": ("runMetadata", ["startedOn", "finishedOn", "log", "outputs"]),
}

# How to supply each claim with `attestgate attest training`.
HOW_TO_PRODUCE = {
    "data-lineage": "pass --dataset URI[@sha256:DIGEST] for every dataset and "
    "--sampling-policy TEXT",
    "code-lineage": "run in the training repository (or pass --repository DIR) and pass "
    "--training-config FILE for each configuration file",
    "environment": "pass --lock-file FILE or --base-image REF@sha256:DIGEST; Python and library "
    "versions are collected",
    "hyperparameters": "pass --hyperparameters FILE (JSON or YAML with optimizer, schedule, "
    "batch_size and seeds)",
    "compute": "pass --accelerator NAME, --driver-version and --toolchain-version (collected "
    "when an NVIDIA driver is present)",
    "run-metadata": "pass --started-on and --finished-on (ISO 8601), --log FILE and "
    "--artifact PATH",
}


def _present(section: dict[str, Any], name: str | tuple[str, ...]) -> bool:
    names = name if isinstance(name, tuple) else (name,)
    return any(section.get(n) not in (None, "", [], {}) for n in names)


def claim_gaps(predicate: dict[str, Any]) -> dict[str, list[str]]:
    """Return claim id -> missing fields (an empty list when the claim is complete)."""
    gaps: dict[str, list[str]] = {}
    for claim, (key, fields) in REQUIRED.items():
        section = predicate.get(key)
        if not isinstance(section, dict):
            gaps[claim] = [key]
            continue
        gaps[claim] = [
            " or ".join(f"{key}.{n}" for n in (name if isinstance(name, tuple) else (name,)))
            for name in fields
            if not _present(section, name)
        ]
    return gaps


def check_training_claims(
    statement: Statement, artifact_sha256: str, where: str
) -> tuple[list[Finding], dict[str, list[str]], dict[str, Any]]:
    """Validate the predicate; return findings, the claim gaps and facts for the record."""
    predicate = statement.predicate
    errors = schema_errors(SCHEMA, predicate)
    if errors:
        return (
            [
                finding(
                    SCHEMA_INVALID,
                    Severity.HIGH,
                    where,
                    f"the training claims in {where} break the training-claims v1 schema: "
                    + "; ".join(errors),
                    "Write the statement again with `attestgate attest training`, or fix the "
                    "listed fields against the published schema training-claims.v1.json.",
                )
            ],
            {},
            {},
        )

    findings = _contradictions(predicate, artifact_sha256, where)
    facts = _facts(predicate)
    return findings, claim_gaps(predicate), facts


def _contradictions(predicate: dict[str, Any], artifact_sha256: str, where: str) -> list[Finding]:
    findings: list[Finding] = []
    run = predicate.get("runMetadata") or {}
    outputs = run.get("outputs") or []
    digests = {str((o.get("digest") or {}).get("sha256", "")).lower() for o in outputs}
    if outputs and artifact_sha256 not in digests:
        findings.append(
            finding(
                CLAIM_CONTRADICTED,
                Severity.HIGH,
                where,
                f"the training run in {where} lists {len(outputs)} output artifacts, and none "
                f"has the artifact's digest sha256:{artifact_sha256}",
                "Admit the artifact that the run produced, or attest the run again with "
                "--artifact pointing at this artifact.",
            )
        )
    started, finished = _time(run.get("startedOn")), _time(run.get("finishedOn"))
    if started is not None and finished is not None and finished < started:
        findings.append(
            finding(
                CLAIM_CONTRADICTED,
                Severity.HIGH,
                where,
                f"the training run in {where} finished ({run['finishedOn']}) before it "
                f"started ({run['startedOn']})",
                "Attest the run again with the correct --started-on and --finished-on times.",
            )
        )
    return findings


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _facts(predicate: dict[str, Any]) -> dict[str, Any]:
    data = predicate.get("dataLineage") or {}
    code = predicate.get("codeLineage") or {}
    run = predicate.get("runMetadata") or {}
    facts: dict[str, Any] = {
        "datasets": [d.get("uri") or d.get("name", "") for d in data.get("datasets") or []],
        "repository": code.get("repository", ""),
        "commit": code.get("commit", ""),
    }
    if predicate.get("builder"):
        facts["builder_id"] = predicate["builder"].get("id", "")
    for key in ("startedOn", "finishedOn"):
        if run.get(key):
            facts[key] = run[key]
    return facts


def hash_value(value: object) -> dict[str, str]:
    """Return the digest set that represents a value recorded as a hash (seeds, versions)."""
    return {"sha256": hashlib.sha256(str(value).encode()).hexdigest()}


@dataclass
class TrainingInputs:
    """The facts ``attest training`` records about a run, collected or given."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    sampling_policy: str = ""
    repository: str = ""
    commit: str = ""
    dirty: bool | None = None
    training_configs: list[dict[str, Any]] = field(default_factory=list)
    lock_files: list[dict[str, Any]] = field(default_factory=list)
    base_image: dict[str, Any] | None = None
    python: str = ""
    platform: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    hyperparameter_source: dict[str, Any] | None = None
    accelerator: str = ""
    accelerator_count: int | None = None
    driver_version: str = ""
    toolchain_version: str = ""
    invocation_id: str = ""
    started_on: str = ""
    finished_on: str = ""
    log: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    builder_id: str = ""


def _hyperparameters(inputs: TrainingInputs) -> dict[str, Any]:
    given = dict(inputs.hyperparameters)
    out: dict[str, Any] = {}
    aliases = {
        "optimizer": ("optimizer",),
        "schedule": ("schedule", "lr_schedule", "lr_scheduler", "scheduler"),
        "batchSize": ("batch_size", "batchSize", "per_device_train_batch_size"),
        "epochs": ("epochs", "num_train_epochs"),
        "learningRate": ("learning_rate", "learningRate", "lr"),
    }
    for name, keys in aliases.items():
        for key in keys:
            if key in given:
                out[name] = given.pop(key)
                break
    seeds = given.pop("seeds", given.pop("seed", None))
    if seeds is not None:
        values = seeds if isinstance(seeds, list) else [seeds]
        out["seeds"] = [hash_value(v) for v in values]
    if given:
        out["parameters"] = given
    if inputs.hyperparameter_source:
        out["source"] = inputs.hyperparameter_source
    return out


def build_training_predicate(inputs: TrainingInputs) -> dict[str, Any]:
    """Return the training-claims v1 predicate for ``inputs``, leaving out unknown fields."""
    environment: dict[str, Any] = {
        "lockFiles": inputs.lock_files,
        "python": inputs.python,
        "platform": inputs.platform,
        "libraries": inputs.libraries,
    }
    if inputs.base_image:
        environment["baseImage"] = inputs.base_image

    compute: dict[str, Any] = {"accelerator": inputs.accelerator}
    if inputs.accelerator_count is not None:
        compute["acceleratorCount"] = inputs.accelerator_count
    if inputs.driver_version:
        compute["driver"] = hash_value(inputs.driver_version)
    if inputs.toolchain_version:
        compute["toolchain"] = hash_value(inputs.toolchain_version)

    code: dict[str, Any] = {
        "repository": inputs.repository,
        "commit": inputs.commit,
        "trainingConfig": inputs.training_configs,
    }
    if inputs.dirty is not None:
        code["dirty"] = inputs.dirty

    run: dict[str, Any] = {
        "invocationId": inputs.invocation_id,
        "startedOn": inputs.started_on,
        "finishedOn": inputs.finished_on,
        "outputs": inputs.outputs,
    }
    if inputs.log:
        run["log"] = inputs.log

    predicate: dict[str, Any] = {
        "dataLineage": {"datasets": inputs.datasets, "samplingPolicy": inputs.sampling_policy},
        "codeLineage": code,
        "environment": environment,
        "hyperparameters": _hyperparameters(inputs),
        "compute": compute,
        "runMetadata": run,
    }
    if inputs.builder_id:
        predicate["builder"] = {"id": inputs.builder_id}
    pruned: dict[str, Any] = _prune(predicate)
    return pruned


def _prune(value: Any) -> Any:
    # Empty strings, lists and mappings mean "unknown", so they are left out
    # and the verifier reports the claim as incomplete.
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ("", None, [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value
