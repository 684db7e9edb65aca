"""The evaluation runner: admissions of a hand-made corpus, errors, environment handling."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from attestgate.errors import UsageError
from attestgate.evaluation import runner, throughput
from attestgate.evaluation.scenario import (
    CLEAN_BASELINE,
    DEPENDENCY_CONFUSION,
    MALICIOUS_HUB,
    Case,
    Corpus,
    Scenario,
)

# Training tolerates missing provenance, deployment quarantines it, so that a
# clean file gets different decisions at the two stages.
EVAL_POLICY = """\
apiVersion: attestgate/v2
kind: Policy
metadata:
  name: eval-test
enforcement: enforce
defaultTier: standard
stages:
  training: &base
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
    rules: {provenance.missing: allow, check.failed: quarantine}
    outcomes: {insufficientEvidence: quarantine, checkError: quarantine, dynamicSignal: severity}
  fine-tuning: *base
  deployment:
    severities: {critical: block, high: block, medium: quarantine, low: allow, info: allow}
    rules: {provenance.missing: quarantine, check.failed: quarantine}
    outcomes: {insufficientEvidence: quarantine, checkError: quarantine, dynamicSignal: severity}
"""

# GLOBAL os.system, a one-element tuple, REDUCE: a call of os.system on load.
HOSTILE_PICKLE = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R."


def safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\x00" * 8


def pinned_requirements(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{name}==1.0.0 --hash=sha256:{digest}\n"


def tiny_corpus(root: Path) -> Corpus:
    """Write a clean safetensors file, a hostile pickle and a dependency set with its names."""
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "eval.yaml").write_text(EVAL_POLICY, encoding="utf-8")
    (root / "clean").mkdir()
    (root / "clean" / "model.safetensors").write_bytes(safetensors_bytes())
    (root / "hub").mkdir()
    (root / "hub" / "model.pkl").write_bytes(HOSTILE_PICKLE)
    (root / "deps").mkdir()
    (root / "deps" / "requirements.txt").write_text(pinned_requirements("acme-tools"))
    (root / "deps" / "internal.txt").write_text("acme-tools\n")
    (root / "deps" / "public.txt").write_text("acme-tools\nrequests\n")

    scenarios = [
        Scenario("clean", CLEAN_BASELINE, "clean files"),
        Scenario("hub", MALICIOUS_HUB, "pickle payload", ("upload",)),
        Scenario("confusion", DEPENDENCY_CONFUSION, "public name", ("publish",)),
    ]

    env = {
        "ATTESTGATE_INTERNAL_PACKAGES": "deps/internal.txt",
        "ATTESTGATE_PUBLIC_INDEX_SNAPSHOT": "deps/public.txt",
    }
    cases = [
        Case(
            "clean-st",
            "clean",
            CLEAN_BASELINE,
            "clean/model.safetensors",
            {"training": "allow", "deployment": "allow"},
            hostile=False,
            tags=("safetensors",),
        ),
        Case(
            "hub-pickle",
            "hub",
            MALICIOUS_HUB,
            "hub/model.pkl",
            {"training": "block", "deployment": "block"},
            hostile=True,
            step="upload",
            tags=("pickle",),
        ),
        Case(
            "confusion-req",
            "confusion",
            DEPENDENCY_CONFUSION,
            "deps/requirements.txt",
            {"deployment": "quarantine"},
            hostile=True,
            step="publish",
            env=env,
            env_paths=tuple(env),
            tags=("requirements",),
        ),
    ]

    corpus = Corpus(root, scenarios, cases)
    corpus.write()
    return corpus


@pytest.fixture(scope="module")
def admitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, runner.CaseResult]:
    root = tmp_path_factory.mktemp("corpus")
    corpus = tiny_corpus(root)
    results = runner.run_corpus(corpus, home=root.parent / "home")
    return {result.case.id: result for result in results}


def test_clean_allowed_at_training(admitted: dict[str, runner.CaseResult]) -> None:
    assert admitted["clean-st"].stages["training"].action == "allow"


def test_clean_quarantined_at_deployment(admitted: dict[str, runner.CaseResult]) -> None:
    result = admitted["clean-st"].stages["deployment"]
    assert result.action == "quarantine"
    assert result.reason_rules == ["provenance.missing"]


def test_pickle_blocked(admitted: dict[str, runner.CaseResult]) -> None:
    result = admitted["hub-pickle"].stages["deployment"]
    assert result.action == "block"
    assert "pickle.unsafe-global" in result.reason_rules


def test_pickle_finding_severity(admitted: dict[str, runner.CaseResult]) -> None:
    findings = dict(admitted["hub-pickle"].stages["training"].findings)
    assert findings["pickle.unsafe-global"] == "critical"


def test_remediation_collected(admitted: dict[str, runner.CaseResult]) -> None:
    reasons = admitted["hub-pickle"].stages["deployment"].reasons
    unsafe = [r for r in reasons if r.rule == "pickle.unsafe-global"]
    assert unsafe
    assert unsafe[0].remediation


def test_case_environment_reaches_checks(admitted: dict[str, runner.CaseResult]) -> None:
    findings = dict(admitted["confusion-req"].stages["deployment"].findings)
    assert "deps.internal-name-public" in findings


def test_only_labelled_stages(admitted: dict[str, runner.CaseResult]) -> None:
    assert list(admitted["confusion-req"].stages) == ["deployment"]


def test_timings_recorded(admitted: dict[str, runner.CaseResult]) -> None:
    timings = admitted["clean-st"].stages["deployment"].timings
    for step in ("identify", "scan", "evidence", "dynamic", "policy", "record"):
        assert step in timings, step


def test_size_recorded(admitted: dict[str, runner.CaseResult]) -> None:
    assert admitted["clean-st"].size == len(safetensors_bytes())


def test_case_json_keys(admitted: dict[str, runner.CaseResult]) -> None:
    document = admitted["hub-pickle"].to_json()
    for key in ("id", "family", "expected", "actual", "reasons", "seconds", "stages", "size"):
        assert key in document, key


def test_admit_exception_is_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("scanner exploded")

    monkeypatch.setattr(runner, "admit", fail)
    results = runner.run_corpus(corpus, home=tmp_path / "home")
    actions = {r.stages[s].action for r in results for s in r.stages}
    assert actions == {"error"}
    assert results[0].stages["training"].error == "RuntimeError: scanner exploded"


def test_path_outside_corpus_is_error(tmp_path: Path) -> None:
    case = Case(
        "escape",
        "clean",
        CLEAN_BASELINE,
        "clean/model.safetensors",
        {"deployment": "allow"},
        hostile=False,
        evidence=("../outside.sig",),
    )
    result = runner.run_case(tmp_path, case, home=tmp_path / "home")
    assert result.stages["deployment"].action == "error"
    assert "CorpusError" in (result.stages["deployment"].error or "")


def test_symlink_escape_is_error(tmp_path: Path) -> None:
    # A link placed after the manifest was loaded is caught at admission.
    (tmp_path / "secret.bin").write_bytes(b"outside")
    root = tmp_path / "corpus"
    root.mkdir()
    os.symlink(tmp_path / "secret.bin", root / "model.bin")
    case = Case("link", "clean", CLEAN_BASELINE, "model.bin", {"deployment": "allow"}, False)
    result = runner.run_case(root, case, home=tmp_path / "home")
    assert result.stages["deployment"].action == "error"
    assert "outside the corpus" in (result.stages["deployment"].error or "")


def test_default_policy_link_is_error(tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text(EVAL_POLICY, encoding="utf-8")
    root = tmp_path / "corpus"
    (root / "policies").mkdir(parents=True)
    os.symlink(tmp_path / "outside.yaml", root / "policies" / "eval.yaml")
    case = Case("c", "clean", CLEAN_BASELINE, "a.bin", {"deployment": "allow"}, False)
    result = runner.run_case(root, case, home=tmp_path / "home")
    assert result.stages["deployment"].action == "error"


def test_output_lock_exclusive(tmp_path: Path) -> None:
    with (
        runner.output_lock(tmp_path / "out"),
        pytest.raises(UsageError) as caught,
        runner.output_lock(tmp_path / "out"),
    ):
        pass
    assert str(tmp_path / "out") in caught.value.message


def test_output_lock_released(tmp_path: Path) -> None:
    with runner.output_lock(tmp_path):
        pass
    with runner.output_lock(tmp_path) as path:
        assert path == tmp_path / runner.LOCK_FILE


def test_environment_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTESTGATE_OSV_DB", "/caller/osv")
    monkeypatch.delenv("ATTESTGATE_INTERNAL_PACKAGES", raising=False)
    with runner.dependency_environment({"ATTESTGATE_INTERNAL_PACKAGES": "/case/names"}):
        inside_names = os.environ.get("ATTESTGATE_INTERNAL_PACKAGES")
        inside_osv = os.environ.get("ATTESTGATE_OSV_DB")
    assert inside_names == "/case/names"
    assert inside_osv is None
    assert os.environ.get("ATTESTGATE_OSV_DB") == "/caller/osv"
    assert "ATTESTGATE_INTERNAL_PACKAGES" not in os.environ


def test_environment_restored_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTESTGATE_OSV_DB", raising=False)
    with (
        pytest.raises(KeyError),
        runner.dependency_environment({"ATTESTGATE_OSV_DB": "/case/osv"}),
    ):
        raise KeyError("boom")
    assert "ATTESTGATE_OSV_DB" not in os.environ


def test_default_policy_used(tmp_path: Path) -> None:
    case = Case("c", "s", CLEAN_BASELINE, "a.bin", {"deployment": "allow"}, hostile=False)
    assert runner.admission_inputs(tmp_path, case).policy is None


def test_checks_without_environment(tmp_path: Path) -> None:
    case = Case(
        "confusion-no-env",
        "confusion",
        DEPENDENCY_CONFUSION,
        "deps/requirements.txt",
        {"deployment": "quarantine"},
        hostile=True,
        step="publish",
    )
    corpus = tiny_corpus(tmp_path / "corpus")
    result = runner.run_case(corpus.root, case, home=tmp_path / "home")
    findings = dict(result.stages["deployment"].findings)
    assert "deps.internal-name-public" not in findings


def test_throughput_jobs_topped_up(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    jobs, source = throughput.jobs_from_corpus(corpus, quick=True, scratch=tmp_path / "gen")
    assert len(jobs) == throughput.QUICK_DISTINCT
    assert source == f"{CLEAN_BASELINE} and generated"
    assert jobs[-1].policy == str(corpus.root / "policies" / "eval.yaml")


def test_throughput_schedule_repeats(tmp_path: Path) -> None:
    jobs = [throughput.Job(str(tmp_path / f"{i}"), "deployment", None) for i in range(3)]
    scheduled = throughput.schedule(jobs, quick=True)
    assert len(scheduled) == 66
    assert scheduled[:3] == jobs


def test_generated_artifacts_clean(tmp_path: Path) -> None:
    (path,) = throughput.generate_artifacts(tmp_path, 1)
    result = runner.admit_once(
        runner.AdmissionInputs(path, None, (), (), {}, None, ()),
        "deployment",
        home=tmp_path / "home",
        policies=runner.PolicyCache(),
    )
    assert result.reason_rules == ["provenance.missing"]


def test_throughput_counts_finished_only(tmp_path: Path) -> None:
    (present,) = throughput.generate_artifacts(tmp_path / "present", 1)
    jobs = [
        throughput.Job(str(present), "deployment", None),
        throughput.Job(str(tmp_path / "missing.safetensors"), "deployment", None),
    ]
    measured = throughput.measure(jobs, workers=(1,), folder=tmp_path / "runs")
    run = measured["workers"]["1"]
    assert run["admissions"] == 2
    assert run["artifacts"] == 1
    assert run["errors"] == 1
    assert run["bytes"] == present.stat().st_size
    assert "does not exist" in run["first_error"]


def test_ratio_none_without_baseline() -> None:
    empty = {"bytes": 0, "seconds": 0.0, "mib_per_s": 0.0}
    assert throughput.ratio_to_sha256(601.1, 10, empty) is None


def test_ratio_none_without_finished() -> None:
    baseline = {"bytes": 1024, "seconds": 1.0, "mib_per_s": 100.0}
    assert throughput.ratio_to_sha256(0.0, 0, baseline) is None


def test_ratio_to_baseline() -> None:
    baseline = {"bytes": 1024, "seconds": 1.0, "mib_per_s": 100.0}
    assert throughput.ratio_to_sha256(25.0, 3, baseline) == 0.25


def test_sha256_baseline_bytes(tmp_path: Path) -> None:
    paths = throughput.generate_artifacts(tmp_path, 2)
    baseline = throughput.sha256_baseline([str(p) for p in paths])
    assert baseline["bytes"] == sum(p.stat().st_size for p in paths)
