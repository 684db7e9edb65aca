"""``admit --import-report``: imported findings reach the record and the decision."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from attestgate.cli.main import main
from attestgate.pipeline import admit
from attestgate.record import validate_record
from attestgate.reports.interface import ReportError


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    return folder


def admit_json(model: Path, home: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out = run("admit", str(model), "--home", str(home), "--format", "json", *extra)
    record: dict[str, Any] = json.loads(out)
    return code, record


def test_import_moves_decision_to_block(model: Path, tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    before, plain = admit_json(model, home)
    after, record = admit_json(
        model, home, "--import-report", str(data_dir / "modelscan-report.json")
    )
    assert before == 3
    assert plain["decision"] == "quarantine"
    assert after == 4
    assert record["decision"] == "block"


def test_imported_finding_in_record(model: Path, tmp_path: Path, data_dir: Path) -> None:
    _, record = admit_json(
        model, tmp_path / "home", "--import-report", str(data_dir / "modelscan-report.json")
    )
    validate_record(record)
    imported = [f for f in record["findings"] if f["rule"].startswith("import.")]
    reason_rules = {r["rule"] for r in record["reasons"]}
    assert len(imported) == 1
    assert imported[0]["check"] == "import:modelscan@0.8.5"
    assert imported[0]["details"]["tool_version"] == "0.8.5"
    assert imported[0]["file"] == "pytorch_model.bin:archive/data.pkl"
    assert "import.modelscan.py-torch-unsafe-op-scan" in reason_rules


def test_record_lists_imports_and_checks(model: Path, tmp_path: Path, data_dir: Path) -> None:
    _, record = admit_json(
        model,
        tmp_path / "home",
        "--import-report",
        str(data_dir / "bandit.sarif"),
        "--import-report",
        str(data_dir / "trivy.json"),
    )
    checks = {c["name"] for c in record["checks"]}
    assert [i["tool"] for i in record["imports"]] == ["bandit", "trivy"]
    assert all(len(i["digest"]["sha256"]) == 64 for i in record["imports"])
    assert {"import:bandit@1.7.10", "import:trivy@0.58.2"} <= checks
    assert record["timings"]["import"] >= 0


def test_bad_report_exit_2_nothing_recorded(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "broken.sarif"
    report.write_text('{"version": "2.1.0", "runs": {}}')
    home = tmp_path / "home"
    code, out = run("admit", str(model), "--home", str(home), "--import-report", str(report))
    assert code == 2
    assert out == ""
    assert "broken.sarif" in capsys.readouterr().err
    assert not home.exists()


def test_library_admit_imports(model: Path, tmp_path: Path, data_dir: Path) -> None:
    admission = admit(model, home=tmp_path / "home", imported_reports=[data_dir / "trivy.json"])
    rules = {f["rule"] for f in admission.record["findings"]}
    assert admission.action == "block"
    assert {"import.trivy.cve-2025-32434", "import.trivy.aws-access-key-id"} <= rules


def test_library_admit_missing_report(model: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        admit(model, home=tmp_path / "home", imported_reports=[tmp_path / "none.json"])
