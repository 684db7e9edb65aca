"""The evaluation report: results.json keys, report.md sections and plots."""

from __future__ import annotations

import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from attestgate.evaluation import report
from attestgate.evaluation.runner import run_evaluation
from attestgate.evaluation.scenario import CLEAN_BASELINE, MALICIOUS_HUB, Case, Corpus, Scenario

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
            "artifacts": 4,
            "bytes": 4096,
        },
        "2": {
            "artifacts_per_s": 15.0,
            "mib_per_s": 0.06,
            "seconds": 0.27,
            "errors": 1,
            "first_error": "StorageError: database is locked",
            "ratio_to_sha256": 0.015,
            "workers": 2,
            "artifacts": 4,
            "bytes": 4096,
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
    assert "| 2 | 15.0 | 0.1 | 0.015 | 0.27 | 1 |" in text
    assert "database is locked" in text


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
    lines = report.summary_lines(results, {"report": str(out / report.REPORT)})
    assert lines[0] == "coverage: 100.0 % of 1 attacker steps"


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
