"""The quick corpus: it builds, loads, covers every family, and its labels hold up.

One quick corpus is built per module (about ten seconds, most of it importing
torch and onnx). The build runs with every unpickling and loading function
replaced by a recorder and the working directory in a scratch folder, so the
tests can show that nothing generated was loaded, imported or run.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestgate.deps import config
from attestgate.evaluation.corpus import POLICY_PATH, build_corpus
from attestgate.evaluation.scenario import FAMILIES, Corpus, load
from attestgate.stages import STAGES

# Modules inside generated wheels and repositories; none may ever be imported.
GENERATED_MODULES = (
    "acme_tokenizers",
    "acme_features",
    "acme_eval",
    "torchh",
    "transformres",
    "tinytable",
    "tiny_model",
    "modeling_tiny",
    "tiny_corpus",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Corpus, list[str], Path]]:
    """Build the quick corpus while recording any attempt to load what it writes."""
    import joblib
    import numpy
    import torch

    scratch = tmp_path_factory.mktemp("cwd")
    calls: list[str] = []

    def recorder(name: str) -> Any:
        def record(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"the corpus build called {name}")

        return record

    with pytest.MonkeyPatch.context() as patch:
        for owner, name in (
            (pickle, "load"),
            (pickle, "loads"),
            (pickle, "Unpickler"),
            (torch, "load"),
            (numpy, "load"),
            (joblib, "load"),
        ):
            patch.setattr(owner, name, recorder(f"{owner.__name__}.{name}"))
        patch.chdir(scratch)
        corpus = build_corpus(tmp_path_factory.mktemp("corpus"), quick=True, cache=None)
    yield corpus, calls, scratch


@pytest.fixture(scope="module")
def corpus(built: tuple[Corpus, list[str], Path]) -> Corpus:
    return built[0]


def by_id(corpus: Corpus) -> dict[str, Any]:
    return {case.id: case for case in corpus.cases}


# --- The manifest ----------------------------------------------------------------


def test_manifest_loads(corpus: Corpus) -> None:
    loaded = load(corpus.root)
    assert [case.id for case in loaded.cases] == [case.id for case in corpus.cases]


def test_every_family_present(corpus: Corpus) -> None:
    for family in FAMILIES:
        assert corpus.family(family), family


def test_attack_families_have_both_kinds(corpus: Corpus) -> None:
    for family in FAMILIES[:3]:
        kinds = {case.hostile for case in corpus.family(family)}
        assert kinds == {True, False}, family


def test_baseline_is_clean(corpus: Corpus) -> None:
    assert not [case.id for case in corpus.family("clean-baseline") if case.hostile]


def test_every_step_realised(corpus: Corpus) -> None:
    realised = {(case.scenario, case.step) for case in corpus.cases if case.hostile}
    for scenario in corpus.scenarios:
        for step in scenario.steps:
            assert (scenario.id, step) in realised, (scenario.id, step)


def test_hostile_has_twin_or_reason(corpus: Corpus) -> None:
    cases = by_id(corpus)
    for case in corpus.cases:
        if not case.hostile:
            continue
        if case.twin is None:
            assert "No twin:" in case.notes, case.id
        else:
            assert not cases[case.twin].hostile, case.id


def test_twin_shares_scenario(corpus: Corpus) -> None:
    cases = by_id(corpus)
    for case in corpus.cases:
        if case.twin is not None:
            assert cases[case.twin].scenario == case.scenario, case.id


def test_every_case_labels_every_stage(corpus: Corpus) -> None:
    for case in corpus.cases:
        assert set(case.expected) == set(STAGES), case.id


def test_every_case_has_notes(corpus: Corpus) -> None:
    for case in corpus.cases:
        assert len(case.notes) > 40, case.id


def test_referenced_files_exist(corpus: Corpus) -> None:
    root = corpus.root
    for case in corpus.cases:
        assert case.path(root).exists(), case.id
        for evidence in case.evidence:
            assert (root / evidence).is_file(), (case.id, evidence)
        for name, value in case.environment(root).items():
            assert Path(value).is_file(), (case.id, name)


def test_generator_facts(corpus: Corpus) -> None:
    generator = load(corpus.root).generator
    assert generator["quick"] is True
    assert generator["policy"] == POLICY_PATH
    assert generator["real_files"]["status"] == "skipped"


def test_policy_loads(corpus: Corpus) -> None:
    from attestgate.policy import load_policy

    policy = load_policy(corpus.root / POLICY_PATH)
    assert policy.document["metadata"]["name"] == "eval-corpus"


def test_case_counts(corpus: Corpus) -> None:
    counts = {family: len(corpus.family(family)) for family in FAMILIES}
    assert counts == {
        "dependency-confusion": 12,
        "malicious-hub": 32,
        "backdoor-provenance": 5,
        "clean-baseline": 42,
    }


# --- Nothing generated is loaded -------------------------------------------------


def test_nothing_unpickled(built: tuple[Corpus, list[str], Path]) -> None:
    assert built[1] == []


def test_no_canary_written(built: tuple[Corpus, list[str], Path]) -> None:
    corpus, _calls, scratch = built
    assert not list(scratch.rglob("attestgate-canary*"))
    assert not list(corpus.root.rglob("attestgate-canary*"))


def test_generated_modules_not_imported(corpus: Corpus) -> None:
    assert not [name for name in GENERATED_MODULES if name in sys.modules]


# --- What the families contain ----------------------------------------------------


def test_snapshot_is_served_index(corpus: Corpus) -> None:
    base = corpus.root / "dependency-confusion"
    snapshot = (base / "public-index-snapshot.html").read_bytes()
    assert snapshot == (base / "index-public" / "simple" / "index.html").read_bytes()
    assert b">acme-tokenizers<" in snapshot


def test_pip_takes_public_release(corpus: Corpus) -> None:
    resolution = json.loads((corpus.root / "dependency-confusion" / "resolution.json").read_text())
    assert resolution["resolved"] == "acme_tokenizers-99.0.0-py3-none-any.whl"


def test_backdoor_measured(corpus: Corpus) -> None:
    summary = json.loads((corpus.root / "backdoor-provenance" / "backdoor.json").read_text())
    assert summary["backdoored_model"]["attack_success_rate"] > 0.5
    assert summary["backdoored_model"]["clean_accuracy"] > 0.8
    assert summary["clean_model"]["attack_success_rate"] < 0.2


def test_backdoor_notes_quote_metrics(corpus: Corpus) -> None:
    case = by_id(corpus)["bd-trusted-pipeline"]
    assert "attack success rate" in case.notes
    assert case.hostile
    assert case.expected == dict.fromkeys(STAGES, "allow")


# --- Labels against the gate --------------------------------------------------------

REPRESENTATIVE = [
    "dc-public-higher-version",
    "dc-extra-index",
    "dc-no-hashes",
    "dc-unsigned-release",
    "dc-signed-release",
    "dc-typosquat-requirements",
    "hub-pickle-reduce",
    "hub-pickle-reduce-clean",
    "hub-7z-pickle",
    "hub-keras-lambda",
    "hub-gguf-template",
    "hub-onnx-symlink",
    "bd-clean-release",
    "bd-untrusted-signer",
    "bd-provenance-mismatch",
    "bd-trusted-pipeline",
    "base-torchscript",
    "base-torchscript-signed",
    "base-hub-repo-signed",
    "dc-internal-release",
    "dc-pinned-internal-requirements",
    "hub-auto-map",
    "hub-dataset-script",
]


@pytest.fixture
def admitted(corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from attestgate.pipeline import admit
    from attestgate.policy import load_policy

    policy = load_policy(corpus.root / POLICY_PATH)

    def decide(case_id: str) -> dict[str, str]:
        case = by_id(corpus)[case_id]
        for name, value in case.environment(corpus.root).items():
            monkeypatch.setenv(name, value)
        config.clear_cache()
        return {
            stage: admit(
                case.path(corpus.root),
                stage=stage,
                policy=policy,
                home=tmp_path / "home",
                evidence=[corpus.root / item for item in case.evidence],
            ).action
            for stage in STAGES
        }

    for variable in (
        config.OSV_DB_VARIABLE,
        config.INTERNAL_PACKAGES_VARIABLE,
        config.PUBLIC_INDEX_VARIABLE,
    ):
        monkeypatch.delenv(variable, raising=False)
    yield decide
    config.clear_cache()


@pytest.mark.parametrize("case_id", REPRESENTATIVE)
def test_gate_matches_label(corpus: Corpus, admitted: Any, case_id: str) -> None:
    assert admitted(case_id) == dict(by_id(corpus)[case_id].expected)
