"""The training-claims predicate: schema, claim gaps, contradictions and construction."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import jsonschema

from attestgate.evidence.intoto import Statement, Subject
from attestgate.evidence.training import (
    TrainingInputs,
    build_training_predicate,
    check_training_claims,
    claim_gaps,
)

DIGEST = "ab" * 32


def full_inputs() -> TrainingInputs:
    return TrainingInputs(
        datasets=[{"uri": "hf://datasets/org/data", "digest": {"sha256": "cd" * 32}}],
        sampling_policy="all rows, deduplicated",
        repository="git+https://example.com/org/train",
        commit="a" * 40,
        dirty=False,
        training_configs=[{"name": "train.yaml", "digest": {"sha256": "ef" * 32}}],
        lock_files=[{"name": "uv.lock", "digest": {"sha256": "01" * 32}}],
        python="3.11.7",
        platform="Linux",
        libraries={"torch": "2.13.0"},
        hyperparameters={"optimizer": "adamw", "lr_schedule": "cosine", "batch_size": 8, "seed": 1},
        accelerator="cpu",
        driver_version="Linux 6.1",
        toolchain_version="python 3.11.7",
        started_on="2025-01-01T00:00:00Z",
        finished_on="2025-01-01T01:00:00Z",
        log={"name": "train.log", "digest": {"sha256": "23" * 32}},
        outputs=[{"name": "model", "digest": {"sha256": DIGEST}}],
    )


def statement(predicate) -> Statement:
    return Statement(
        "https://in-toto.io/Statement/v1",
        (Subject("model", {"sha256": DIGEST}),),
        "https://attestgate.dev/training-claims/v1",
        predicate,
    )


def test_schema_is_valid_json_schema():
    text = resources.files("attestgate.schemas").joinpath("training-claims.v1.json").read_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(text))


def test_full_predicate_has_no_gaps():
    predicate = build_training_predicate(full_inputs())
    findings, gaps, facts = check_training_claims(statement(predicate), DIGEST, "t")
    assert findings == []
    assert all(missing == [] for missing in gaps.values())
    assert facts["commit"] == "a" * 40


def test_seeds_and_versions_are_hashed():
    predicate = build_training_predicate(full_inputs())
    assert predicate["hyperparameters"]["seeds"] == [{"sha256": hashlib.sha256(b"1").hexdigest()}]
    assert predicate["compute"]["driver"] == {"sha256": hashlib.sha256(b"Linux 6.1").hexdigest()}
    assert predicate["hyperparameters"]["schedule"] == "cosine"


def test_empty_predicate_lists_every_claim():
    gaps = claim_gaps({})
    assert set(gaps) == {
        "data-lineage",
        "code-lineage",
        "environment",
        "hyperparameters",
        "compute",
        "run-metadata",
    }
    assert gaps["compute"] == ["compute"]


def test_partial_claim_names_missing_fields():
    inputs = full_inputs()
    inputs.sampling_policy = ""
    inputs.lock_files = []
    gaps = claim_gaps(build_training_predicate(inputs))
    assert gaps["data-lineage"] == ["dataLineage.samplingPolicy"]
    assert gaps["environment"] == ["environment.lockFiles or environment.baseImage"]


def test_outputs_without_artifact_contradict():
    predicate = build_training_predicate(full_inputs())
    findings, _, _ = check_training_claims(statement(predicate), "ff" * 32, "t")
    assert [f.rule for f in findings] == ["evidence.claim-contradicted"]


def test_end_before_start_contradicts():
    inputs = full_inputs()
    inputs.finished_on = "2024-12-31T00:00:00Z"
    findings, _, _ = check_training_claims(statement(build_training_predicate(inputs)), DIGEST, "t")
    assert any("before it started" in f.message for f in findings)


def test_schema_violation_reported():
    predicate = build_training_predicate(full_inputs())
    predicate["codeLineage"]["commit"] = "not-a-commit"
    predicate["hyperparameters"]["batchSize"] = 0
    findings, gaps, _ = check_training_claims(statement(predicate), DIGEST, "t")
    assert [f.rule for f in findings] == ["evidence.schema-invalid"]
    assert "codeLineage.commit" in findings[0].message
    assert "hyperparameters.batchSize" in findings[0].message
    assert gaps == {}
