"""``attestgate eval`` through the command line's ``main()``."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fetch_artifacts
import pytest

from attestgate.cli.main import main
from attestgate.evaluation import throughput
from attestgate.evaluation.scenario import (
    CLEAN_BASELINE,
    FAMILIES,
    MALICIOUS_HUB,
    Case,
    Corpus,
    Scenario,
)

# GLOBAL os.system, a one-element tuple, REDUCE: a call of os.system on load.
HOSTILE_PICKLE = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R."


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


def small_corpus(root: Path) -> Path:
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
            {"training": "quarantine", "deployment": "quarantine"},
            hostile=False,
        ),
        Case(
            "hostile",
            "hub",
            MALICIOUS_HUB,
            "hostile.pkl",
            {"training": "block", "deployment": "block"},
            hostile=True,
            step="upload",
        ),
    ]
    Corpus(root, scenarios, cases).write()
    return root


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("eval")
    corpus = small_corpus(base / "corpus")
    out = base / "out"
    code, text = run(
        "eval",
        "--quick",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--workers",
        "1",
        "--format",
        "json",
    )
    return code, json.loads(text), out


def test_json_exit_0(json_run: tuple[int, dict[str, Any], Path]) -> None:
    assert json_run[0] == 0


def test_json_numbers(json_run: tuple[int, dict[str, Any], Path]) -> None:
    _code, results, _out = json_run
    assert results["coverage"]["overall"] == 1.0
    assert results["accuracy"] == 1.0
    assert results["false_positives"]["total"] == 0


def test_json_throughput(json_run: tuple[int, dict[str, Any], Path]) -> None:
    _code, results, _out = json_run
    run_1 = results["throughput"]["workers"]["1"]
    assert run_1["errors"] == 0
    assert run_1["artifacts_per_s"] > 0
    # One clean case is too few, so generated files make up the rest.
    assert results["throughput"]["source"] == f"{CLEAN_BASELINE} and generated"


def test_json_files_written(json_run: tuple[int, dict[str, Any], Path]) -> None:
    _code, results, out = json_run
    assert Path(results["files"]["report"]) == out / "report.md"
    assert (out / "results.json").is_file()
    assert (out / "throughput.png").is_file()


def test_text_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker processes are covered by the JSON run, so this one skips them.
    def measure(jobs: list[Any], **options: Any) -> dict[str, Any]:
        run = {
            "artifacts_per_s": 12.5,
            "mib_per_s": 1.0,
            "ratio_to_sha256": 0.01,
            "seconds": 1.0,
            "errors": 0,
            "first_error": None,
        }
        sha256 = {"bytes": 1, "seconds": 1.0, "mib_per_s": 100.0}
        return {
            "workers": {"1": run},
            "sha256": sha256,
            "admissions": 1,
            "distinct": 1,
            "bytes": 1,
            "cpus": 1,
        }

    monkeypatch.setattr(throughput, "measure", measure)
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    code, text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    assert code == 0
    assert text.startswith("coverage: 100.0 % of 1 attacker steps")
    assert "throughput: up to 12.5 artifacts/s with 1 worker(s)" in text
    assert f"report: {out / 'report.md'}" in text


def test_throughput_failure_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(jobs: list[Any], **options: Any) -> dict[str, Any]:
        raise RuntimeError("a throughput worker exited before it was ready")

    monkeypatch.setattr(throughput, "measure", measure)
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    code, _text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    assert code == 1
    assert "Not measured: RuntimeError" in (out / "report.md").read_text(encoding="utf-8")


def test_corpus_without_manifest(tmp_path: Path) -> None:
    code, _text = run("eval", "--corpus", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2


def test_invalid_workers(tmp_path: Path) -> None:
    code, _text = run("eval", "--out", str(tmp_path), "--workers", "1,zero")
    assert code == 2


def test_out_is_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    corpus = small_corpus(tmp_path / "corpus")
    code, _text = run("eval", "--corpus", str(corpus), "--out", str(target))
    assert code == 2


def test_quick_generation(tmp_path: Path, real_artifacts: dict[str, Path]) -> None:
    # The fixture has filled the test cache, so the run fetches nothing.
    assert real_artifacts["minilm_dir"].is_dir()
    code, text = run(
        "eval",
        "--quick",
        "--out",
        str(tmp_path),
        "--cache",
        str(fetch_artifacts.default_cache()),
        "--format",
        "json",
    )
    assert code == 0
    results = json.loads(text)
    assert results["quick"] is True
    assert set(results["coverage"]["families"]) == set(FAMILIES) - {CLEAN_BASELINE}
    assert results["false_positives"]["total"] > 0
    assert any(case["id"].startswith("base-real") for case in results["cases"])
