"""CycloneDX ML-BOM: schema validation (CycloneDX's own cases) and release-claim checks."""

from __future__ import annotations

import copy
import json

import pytest

from attestgate.evidence import mlbom
from attestgate.evidence.crosscheck import ArtifactFacts
from attestgate.evidence.release import Evaluation, ReleaseInputs, build_mlbom, front_matter
from attestgate.findings import Finding, Severity
from attestgate.pipeline import inspect

from .conftest import DATA

CYCLONEDX = DATA / "cyclonedx-1.6"
DOCUMENTS = sorted(p.name for p in CYCLONEDX.glob("*.json"))


@pytest.mark.parametrize("name", DOCUMENTS)
def test_cyclonedx_case(name):
    errors = mlbom.validation_errors(json.loads((CYCLONEDX / name).read_text()))
    if name.startswith("invalid-"):
        assert errors
    else:
        assert errors == []


def test_model_card_document_has_model_component():
    doc = json.loads((CYCLONEDX / "valid-machine-learning-1.6.json").read_text())
    assert mlbom.model_components(doc)


def test_old_spec_version_rejected():
    assert (
        "not supported"
        in mlbom.validation_errors({"bomFormat": "CycloneDX", "specVersion": "1.5"})[0]
    )


def test_spec_1_7_accepted():
    doc = {"bomFormat": "CycloneDX", "specVersion": "1.7", "version": 1}
    assert mlbom.validation_errors(doc) == []


def facts_for(model, findings=()) -> ArtifactFacts:
    inspection = inspect(model)
    return ArtifactFacts.from_inspection(inspection.artifact, inspection.findings + list(findings))


def full_inputs() -> ReleaseInputs:
    return ReleaseInputs(
        name="tiny",
        version="1.0",
        egress=[],
        filesystem="read-only",
        gpu="optional",
        evaluations=[Evaluation("eval.json", "ab" * 32, [{"type": "accuracy", "value": "0.9"}])],
        checks={"safetensors": "1"},
    )


def test_built_bom_is_valid_and_complete(model):
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {"model_type": "tiny", "architectures": ["Tiny"]}, {})
    findings, gaps, info, bound = mlbom.check_mlbom(bom, facts, "bom")
    assert findings == []
    assert bound
    assert all(missing == [] for missing in gaps.values())
    assert info["embedded-code"] == "none"
    card = bom["metadata"]["component"]["modelCard"]
    assert card["modelParameters"]["architectureFamily"] == "tiny"


def test_missing_claims_are_named(model):
    facts = facts_for(model)
    bom = build_mlbom(facts, ReleaseInputs(name="tiny"), {}, {})
    _, gaps, _, _ = mlbom.check_mlbom(bom, facts, "bom")
    assert gaps["deployment-requirements"] == ["egress", "filesystem", "gpu"]
    assert gaps["evaluation"] == ["performanceMetrics", "evaluation-report"]
    assert gaps["identity"] == []


def test_other_artifact_hash_is_mismatch(model, tmp_path):
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    (model / "config.json").write_text('{"model_type": "changed"}')
    findings, _, _, bound = mlbom.check_mlbom(bom, facts_for(model), "bom")
    assert not bound
    assert {f.rule for f in findings} == {"evidence.digest-mismatch"}
    assert {f.file for f in findings} == {"bom", "config.json"}


def test_no_embedded_code_contradicted(model):
    clean = facts_for(model)
    bom = build_mlbom(clean, full_inputs(), {}, {})
    (model / "helper.py").write_text("import os\n")
    changed = facts_for(model)
    bom["metadata"]["component"]["hashes"][0]["content"] = changed.sha256
    findings, _, _, _ = mlbom.check_mlbom(bom, changed, "bom")
    contradicted = [f for f in findings if f.rule == "evidence.claim-contradicted"]
    assert any("no embedded code" in f.message and "helper.py" in f.message for f in contradicted)
    assert any("python" in f.message for f in contradicted)


@pytest.mark.parametrize(
    "rule",
    ["hf.embedded-code", "torchscript.embedded-code", "pickle.unsafe-global", "keras.lambda-layer"],
)
def test_code_findings_contradict_declaration(model, rule):
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    extra = Finding(rule, Severity.HIGH, "model.safetensors", "code", "fix", check="scan")
    findings, _, _, _ = mlbom.check_mlbom(bom, facts_for(model, [extra]), "bom")
    assert "evidence.claim-contradicted" in {f.rule for f in findings}


def test_declared_format_contradicted(model):
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    for child in bom["metadata"]["component"]["components"]:
        if child["name"] == "model.safetensors":
            child["properties"][0]["value"] = "gguf"
    findings, _, _, _ = mlbom.check_mlbom(bom, facts, "bom")
    assert [f.file for f in findings if f.rule == "evidence.claim-contradicted"] == [
        "model.safetensors"
    ]


def test_undeclared_format_contradicted(model):
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    props = bom["metadata"]["component"]["properties"]
    for prop in props:
        if prop["name"] == "attestgate:release:formats":
            prop["value"] = "safetensors"
    findings, _, _, _ = mlbom.check_mlbom(bom, facts, "bom")
    assert any("also contains json" in f.message for f in findings)


def test_understated_scan_results_contradicted(model):
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    extra = Finding("pickle.unsafe-global", Severity.CRITICAL, "x.pkl", "m", "fix", check="scan")
    findings, _, _, _ = mlbom.check_mlbom(bom, facts_for(model, [extra]), "bom")
    assert any("scan findings" in f.message for f in findings)


def test_invalid_bom_is_schema_invalid(model):
    facts = facts_for(model)
    bom = copy.deepcopy(build_mlbom(facts, full_inputs(), {}, {}))
    bom["metadata"]["component"]["type"] = "spaceship"
    findings, _, _, bound = mlbom.check_mlbom(bom, facts, "bom")
    assert [f.rule for f in findings] == ["evidence.schema-invalid"]
    assert not bound


def test_front_matter_feeds_model_card(model):
    (model / "README.md").write_text(
        "---\nlicense: apache-2.0\npipeline_tag: text-classification\ndatasets:\n- imdb\n"
        "model-index:\n- name: tiny\n  results:\n  - dataset: {name: imdb}\n"
        "    metrics:\n    - {type: accuracy, value: 0.93}\n---\n# Tiny\n"
    )
    card = front_matter(model / "README.md")
    facts = facts_for(model)
    bom = build_mlbom(facts, ReleaseInputs(name="tiny"), {}, card)
    model_card = bom["metadata"]["component"]["modelCard"]
    assert model_card["modelParameters"]["task"] == "text-classification"
    assert model_card["modelParameters"]["datasets"] == [{"type": "dataset", "name": "imdb"}]
    assert model_card["quantitativeAnalysis"]["performanceMetrics"] == [
        {"type": "accuracy", "value": "0.93", "slice": "imdb"}
    ]


def test_bad_front_matter_is_ignored(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("---\n: [unclosed\n---\n")
    assert front_matter(readme) == {}


def test_duplicate_items_still_rejected():
    doc = json.loads((CYCLONEDX / "valid-machine-learning-1.6.json").read_text())
    doc["components"].append(copy.deepcopy(doc["components"][0]))
    errors = mlbom.validation_errors(doc)
    assert any("more than once" in e for e in errors)


def test_large_bom_validates_in_linear_time(model):
    import time

    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    template = bom["metadata"]["component"]["components"][0]
    files = []
    for index in range(1500):
        item = copy.deepcopy(template)
        item["name"] = f"shard-{index}.safetensors"
        item["bom-ref"] = f"file:{index}"
        files.append(item)
    bom["metadata"]["component"]["components"] = files
    started = time.perf_counter()
    assert mlbom.validation_errors(bom) == []
    # jsonschema's own uniqueItems would compare every pair of the 1,500 items.
    assert time.perf_counter() - started < 30


def test_oversized_bom_is_not_validated(model, monkeypatch):
    from attestgate.evidence import cyclonedx_schema

    monkeypatch.setattr(cyclonedx_schema, "MAX_NODES", 10)
    facts = facts_for(model)
    bom = build_mlbom(facts, full_inputs(), {}, {})
    findings, _, _, bound = mlbom.check_mlbom(bom, facts, "bom")
    assert [f.rule for f in findings] == ["evidence.limit-exceeded"]
    assert not bound
