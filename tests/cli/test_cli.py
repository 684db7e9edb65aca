import io
import json
import sqlite3

import pytest

from attestgate.cli.main import main
from attestgate.record import validate_record


def run(*argv):
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (folder / "notes.txt").write_text("plain text\n")
    return folder


def test_missing_path_exit_2(home, tmp_path, capsys):
    code, _ = run("admit", str(tmp_path / "nope"), "--home", str(home))
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_bad_stage_exit_2(home, model):
    code, _ = run("admit", str(model), "--stage", "production", "--home", str(home))
    assert code == 2


def test_unsigned_model_quarantines(home, model):
    code, out = run("admit", str(model), "--home", str(home), "--format", "json")
    record = json.loads(out)
    assert code == 3
    assert record["decision"] == "quarantine"
    assert {f["rule"] for f in record["findings"]} == {"provenance.missing"}


def test_json_record_matches_schema(home, model):
    _, out = run("admit", str(model), "--home", str(home), "--format", "json")
    record = json.loads(out)
    validate_record(record)
    assert record["artifact"]["digest"]["sha256"]
    assert record["policy"]["digest"]["sha256"]
    assert record["gate"]["version"]
    assert set(record["timings"]) >= {
        "intake",
        "identify",
        "scan",
        "evidence",
        "policy",
        "record",
    }
    assert all(f["remediation"] for f in record["findings"])


def test_text_output_groups_by_file(home, model):
    (model / "custom.py").write_text("import os\n")
    code, out = run("admit", str(model), "--home", str(home))
    assert code == 3
    assert "custom.py  [python]" in out
    assert "hf.embedded-code" in out
    assert "decision  QUARANTINE" in out
    assert out.count("fix: ") == 2


def test_output_file_written(home, model, tmp_path):
    target = tmp_path / "out" / "record.json"
    code, out = run("admit", str(model), "--home", str(home), "--format", "json", "-o", str(target))
    assert code == 3
    assert out == ""
    assert json.loads(target.read_text())["decision"] == "quarantine"


def test_custom_policy_allows(home, model, tmp_path):
    policy = tmp_path / "lenient.yaml"
    _, text = run("policy", "default")
    policy.write_text(text.replace("provenance.missing: quarantine", "provenance.missing: allow"))
    code, out = run(
        "admit",
        str(model),
        "--home",
        str(home),
        "--policy",
        str(policy),
        "--format",
        "json",
    )
    assert code == 0
    assert json.loads(out)["decision"] == "allow"


def test_invalid_policy_exit_1(home, model, tmp_path, capsys):
    policy = tmp_path / "bad.yaml"
    policy.write_text("apiVersion: attestgate/v1\nkind: Policy\nstages: {}\n")
    code, _ = run("admit", str(model), "--home", str(home), "--policy", str(policy))
    assert code == 1
    assert "stages" in capsys.readouterr().err


def test_audit_list_and_verify(home, model):
    run("admit", str(model), "--home", str(home))
    run("admit", str(model), "--home", str(home), "--stage", "training")
    code, out = run("audit", "list", "--home", str(home), "--format", "json")
    records = json.loads(out)
    assert code == 0
    assert [r["seq"] for r in records] == [2, 1]
    assert records[0]["body"]["stage"] == "training"
    code, out = run("audit", "verify", "--home", str(home))
    assert code == 0
    assert "intact: 2 record(s)" in out


def test_audit_verify_names_tampered_record(home, model):
    for _ in range(3):
        run("admit", str(model), "--home", str(home))
    with sqlite3.connect(home / "attestgate.db") as conn:
        body = conn.execute("SELECT body FROM audit_records WHERE seq = 2").fetchone()[0]
        conn.execute(
            "UPDATE audit_records SET body = ? WHERE seq = 2",
            (body.replace('"quarantine"', '"allow"'),),
        )
    code, out = run("audit", "verify", "--home", str(home), "--format", "json")
    result = json.loads(out)
    assert code == 5
    assert result["first_bad_seq"] == 2


def test_home_from_environment(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTESTGATE_HOME", str(tmp_path / "envhome"))
    run("admit", str(model))
    assert (tmp_path / "envhome" / "attestgate.db").is_file()


def test_policy_default_prints_yaml():
    code, out = run("policy", "default")
    assert code == 0
    assert "apiVersion: attestgate/v1" in out


def test_internal_error_exit_1(home, model, monkeypatch, capsys):
    import attestgate.pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(attestgate.pipeline, "evaluate", boom)
    code, out = run("admit", str(model), "--home", str(home))
    assert code == 1
    assert out == ""
    assert "simulated bug" in capsys.readouterr().err
