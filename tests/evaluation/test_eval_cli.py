"""``attestgate eval`` through the command line's ``main()``."""

from __future__ import annotations

import importlib
import io
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

import fetch_artifacts
import pytest

from attestgate.cli import cmd_eval
from attestgate.cli.main import main
from attestgate.evaluation import runner, throughput
from attestgate.evaluation.scenario import (
    CLEAN_BASELINE,
    FAMILIES,
    MALICIOUS_HUB,
    Case,
    Corpus,
    Scenario,
    load,
)

# GLOBAL os.system, a one-element tuple, REDUCE: a call of os.system on load.
HOSTILE_PICKLE = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R."


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


def small_corpus(root: Path) -> Path:
    """Write a clean safetensors file and a hostile pickle, under the built-in policy."""
    root.mkdir(parents=True, exist_ok=True)
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


def fake_measure(jobs: list[Any], **options: Any) -> dict[str, Any]:
    """Stand in for the throughput measurement, whose worker processes the JSON run covers."""
    run = {
        "artifacts_per_s": 12.5,
        "mib_per_s": 1.0,
        "ratio_to_sha256": 0.01,
        "seconds": 1.0,
        "admissions": 1,
        "artifacts": 1,
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


@pytest.fixture
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throughput, "measure", fake_measure)


@pytest.mark.usefixtures("no_workers")
def test_text_summary(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    code, text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    assert code == 0
    assert text.startswith("coverage: 100.0 % of 1 attacker step\n")
    assert "throughput: up to 12.5 artifacts/s with 1 worker(s)" in text
    assert f"report: {out / 'report.md'}" in text


@pytest.mark.usefixtures("no_workers")
def test_text_summary_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    code, text = run("eval", "--corpus", "corpus", "--out", "out", "--workers", "1")
    assert code == 0
    lines = text.splitlines()
    out = tmp_path.resolve() / "out"
    assert f"results: {out / 'results.json'}" in lines
    assert f"corpus: {(tmp_path / 'corpus').resolve()}" in lines
    plots = next(line for line in lines if line.startswith("plots: "))
    assert str(out / "coverage.png") in plots
    (home,) = out.glob("run-*/home")
    assert f"gate home: {home}" in lines


@pytest.mark.usefixtures("no_workers")
def test_report_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    code, _text = run("eval", "--corpus", "corpus", "--out", "out", "--workers", "1")
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    for path in (results["out"], results["home"], results["corpus"]["root"]):
        assert Path(path).is_absolute(), path
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert f"Corpus: `{(tmp_path / 'corpus').resolve()}`" in report
    assert f"output folder `{(tmp_path / 'out').resolve()}`" in report


@pytest.mark.usefixtures("no_workers")
def test_report_mode_follows_umask(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        code, _text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    finally:
        os.umask(previous)
    assert code == 0
    for name in ("report.md", "results.json", "coverage.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def tamper(corpus: Path, case_id: str, **fields: Any) -> None:
    manifest = corpus / "corpus.json"
    document = json.loads(manifest.read_text(encoding="utf-8"))
    for case in document["cases"]:
        if case["id"] == case_id:
            case.update(fields)
    manifest.write_text(json.dumps(document), encoding="utf-8")


@pytest.mark.parametrize("artifact", ["../../x", "/etc/passwd"])
def test_manifest_escape_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], artifact: str
) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    tamper(corpus, "hostile", artifact=artifact)
    out = tmp_path / "out"
    code, _text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    stderr = capsys.readouterr().err
    assert code == 2
    assert "case 'hostile', artifact:" in stderr
    assert repr(artifact) in stderr
    assert not out.exists()


def test_manifest_symlink_escape_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    (tmp_path / "outside.pkl").write_bytes(HOSTILE_PICKLE)
    os.symlink(tmp_path / "outside.pkl", corpus / "link.pkl")
    tamper(corpus, "hostile", artifact="link.pkl")
    code, _text = run("eval", "--corpus", str(corpus), "--out", str(tmp_path / "out"))
    stderr = capsys.readouterr().err
    assert code == 2
    assert "case 'hostile', artifact:" in stderr
    assert "outside the corpus" in stderr


@pytest.mark.usefixtures("no_workers")
def test_failed_admission_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    (corpus / "clean.safetensors").unlink()
    out = tmp_path / "out"
    code, text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    assert code == 1
    assert "failed: 2 of 4 labelled admissions failed" in text.splitlines()
    assert "2 of 4 labelled admissions failed" in capsys.readouterr().err
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| clean | clean-baseline | training | no | UsageError" in report


def test_throughput_errors_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(jobs: list[Any], **options: Any) -> dict[str, Any]:
        measured = fake_measure(jobs)
        measured["workers"]["1"].update(
            artifacts=0, artifacts_per_s=0.0, errors=1, first_error="OSError: gone"
        )
        return measured

    monkeypatch.setattr(throughput, "measure", measure)
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    code, text = run("eval", "--corpus", str(corpus), "--out", str(out), "--workers", "1")
    assert code == 1
    assert "throughput: no admission finished" in text
    assert (out / "report.md").is_file()


def test_output_locked_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    with runner.output_lock(out):
        code, _text = run("eval", "--corpus", str(corpus), "--out", str(out))
    assert code == 2
    assert "is locked by another attestgate eval" in capsys.readouterr().err


def test_workers_capped(tmp_path: Path) -> None:
    code, _text = run("eval", "--out", str(tmp_path), "--workers", f"1,{cmd_eval.MAX_WORKERS + 1}")
    assert code == 2


def test_workers_at_cap() -> None:
    assert cmd_eval._worker_counts(f"1,{cmd_eval.MAX_WORKERS}") == (1, cmd_eval.MAX_WORKERS)


def fake_generator(monkeypatch: pytest.MonkeyPatch, *, interrupt: bool = False) -> None:
    """Replace the corpus generator by one that writes the small corpus, or is interrupted."""
    module = importlib.import_module("attestgate.evaluation.corpus")

    def build_corpus(root: Path, **options: Any) -> Corpus:
        if interrupt:
            (root / "clean-baseline").mkdir(parents=True)
            raise KeyboardInterrupt
        small_corpus(root)
        return load(root)

    monkeypatch.setattr(module, "build_corpus", build_corpus)


@pytest.mark.usefixtures("no_workers")
def test_half_written_corpus_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_generator(monkeypatch)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "leftover.bin").write_bytes(b"x")
    (tmp_path / cmd_eval.GENERATING_MARKER).touch()
    code, _text = run("eval", "--out", str(tmp_path), "--workers", "1")
    assert code == 0
    assert not (tmp_path / "corpus" / "leftover.bin").exists()
    assert (tmp_path / "corpus" / "corpus.json").is_file()
    assert not (tmp_path / cmd_eval.GENERATING_MARKER).exists()


@pytest.mark.usefixtures("no_workers")
def test_interrupted_generation_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_generator(monkeypatch, interrupt=True)
    code, _text = run("eval", "--out", str(tmp_path), "--workers", "1")
    assert code == 1
    assert (tmp_path / cmd_eval.GENERATING_MARKER).exists()
    fake_generator(monkeypatch)
    code, _text = run("eval", "--out", str(tmp_path), "--workers", "1")
    assert code == 0


def test_unknown_corpus_folder_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_generator(monkeypatch)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.txt").write_text("mine")
    code, _text = run("eval", "--out", str(tmp_path), "--workers", "1")
    assert code == 2
    assert f"remove the folder {tmp_path / 'corpus'}" in capsys.readouterr().err
    assert (tmp_path / "corpus" / "notes.txt").exists()


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
