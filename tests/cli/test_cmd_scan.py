"""``attestgate scan``: output formats, exit statuses, and no state written."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest

from attestgate._jsonschema import jsonschema
from attestgate.cli.main import main
from attestgate.reports.scan_report import validate_scan_report
from attestgate.scanners.pickle_scanner import PickleScanner

SARIF_SCHEMA = Path(__file__).parent.parent / "data" / "sarif" / "sarif-schema-2.1.0.json"


class _SystemCall:
    """Pickles as a call of os.system; tests only write such pickles, never load them."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo attestgate-test",))


class UnlistedClass:
    """A class outside the pickle allowlist, so its pickle calls an unknown global."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnlistedClass, ())


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state"
    monkeypatch.setenv("ATTESTGATE_HOME", str(home))
    return home


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    folder = tmp_path / "clean"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (folder / "notes.txt").write_text("plain text\n")
    return folder


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A model folder whose PyTorch-style zip holds a pickle that calls os.system."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _SystemCall()}, protocol=2))
        archive.writestr("archive/version", "3\n")
    return folder


@pytest.fixture
def high_only(tmp_path: Path) -> Path:
    path = tmp_path / "unlisted.pkl"
    path.write_bytes(pickle.dumps(UnlistedClass(), protocol=2))
    return path


def test_clean_folder_exit_0(clean: Path, state_home: Path) -> None:
    code, out = run("scan", str(clean))
    assert code == 0
    assert "no findings" in out
    assert "result    PASS: no finding at or above high" in out
    assert not state_home.exists()


def test_hostile_exit_6(hostile: Path, state_home: Path) -> None:
    code, out = run("scan", str(hostile))
    assert code == 6
    assert "pytorch_model.bin:archive/data.pkl  [pytorch-zip]" in out
    assert "CRITICAL pickle.unsafe-global" in out
    assert "fix: " in out
    assert not state_home.exists()


def test_hostile_fails_on_critical(hostile: Path) -> None:
    code, _ = run("scan", str(hostile), "--fail-on", "critical")
    assert code == 6


def test_high_only_passes_fail_on_critical(high_only: Path) -> None:
    code, out = run("scan", str(high_only), "--format", "json", "--fail-on", "critical")
    report = json.loads(out)
    assert code == 0
    assert report["counts"]["high"] >= 1
    assert report["counts"]["critical"] == 0
    assert report["failed"] is False


def test_high_only_fails_on_high(high_only: Path) -> None:
    code, _ = run("scan", str(high_only), "--fail-on", "high")
    assert code == 6


def test_fail_on_info_counts_everything(clean: Path, tmp_path: Path) -> None:
    (clean / "custom.py").write_text("import os\n")
    code_default, _ = run("scan", str(clean))
    code_info, _ = run("scan", str(clean), "--fail-on", "info")
    assert code_default == 0
    assert code_info == 6


def test_json_report_matches_schema(hostile: Path) -> None:
    code, out = run("scan", str(hostile), "--format", "json")
    report = json.loads(out)
    validate_scan_report(report)
    assert code == 6
    assert report["kind"] == "attestgate.scan"
    assert report["fail_on"] == "high"
    assert report["failed"] is True
    assert report["complete"] is True
    assert report["gate"]["version"]
    assert report["artifact"]["digest"]["sha256"]
    assert [c["name"] for c in report["checks"]] == ["zip"]
    assert set(report["timings"]) >= {"intake", "identify", "scan"}
    assert [f["rule"] for f in report["findings"]] == ["pickle.unsafe-global"]


def test_json_schema_rejects_bad_report(clean: Path) -> None:
    _, out = run("scan", str(clean), "--format", "json")
    report = json.loads(out)
    report["counts"]["severe"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_scan_report(report)


def test_sarif_valid_with_member(hostile: Path) -> None:
    code, out = run("scan", str(hostile), "--format", "sarif")
    log = json.loads(out)
    schema = json.loads(SARIF_SCHEMA.read_text("utf-8"))
    errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(log)]
    result = log["runs"][0]["results"][0]
    location = result["locations"][0]
    assert code == 6
    assert errors == []
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "pytorch_model.bin"
    assert location["logicalLocations"][0]["fullyQualifiedName"] == "archive/data.pkl"
    assert result["level"] == "error"
    assert result["properties"]["severity"] == "critical"
    assert log["runs"][0]["invocations"][0]["exitCode"] == 6


def test_sarif_single_file_region(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_SystemCall(), protocol=2))
    _, out = run("scan", str(path), "--format", "sarif")
    run_log = json.loads(out)["runs"][0]
    physical = run_log["results"][0]["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "evil.pkl"
    assert physical["region"]["byteOffset"] >= 0
    assert run_log["originalUriBaseIds"]["ARTIFACTROOT"]["uri"] == tmp_path.as_uri() + "/"


def test_output_file(hostile: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "scan.sarif"
    target.parent.mkdir()
    code, out = run("scan", str(hostile), "--format", "sarif", "-o", str(target))
    assert code == 6
    assert out == ""
    assert json.loads(target.read_text())["version"] == "2.1.0"


def test_output_inside_artifact_rejected(clean: Path) -> None:
    code, _ = run("scan", str(clean), "-o", str(clean / "report.json"))
    assert code == 2
    assert not (clean / "report.json").exists()


def test_missing_path_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("scan", str(tmp_path / "nope"))
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_bad_fail_on_exit_2(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("scan", str(clean), "--fail-on", "severe")
    assert code == 2
    assert "unknown severity 'severe'" in capsys.readouterr().err


def test_check_failure_exit_1(
    hostile: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(self: PickleScanner, chunk: memoryview) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(PickleScanner, "feed", broken)
    code, out = run("scan", str(hostile), "--format", "json", "--fail-on", "critical")
    report = json.loads(out)
    assert code == 1
    assert report["complete"] is False
    assert "check.failed" in {f["rule"] for f in report["findings"]}
    assert "incomplete" in capsys.readouterr().err


def test_help_lists_exit_6(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("scan", "--help")
    assert code == 0
    assert "6  findings at or above --fail-on" in capsys.readouterr().out
