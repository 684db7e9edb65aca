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
    (tmp_path / "out").mkdir()
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


def test_invalid_policy_exit_2(home, model, tmp_path, capsys):
    policy = tmp_path / "bad.yaml"
    policy.write_text("apiVersion: attestgate/v1\nkind: Policy\nstages: {}\n")
    code, _ = run("admit", str(model), "--home", str(home), "--policy", str(policy))
    assert code == 2
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
    assert "apiVersion: attestgate/v2" in out


def test_internal_error_exit_1(home, model, monkeypatch, capsys):
    import attestgate.policy

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(attestgate.policy, "evaluate", boom)
    code, out = run("admit", str(model), "--home", str(home))
    assert code == 1
    assert out == ""
    assert "simulated bug" in capsys.readouterr().err


def test_interrupt_names_command(home, monkeypatch, capsys):
    import attestgate.cli.cmd_audit

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(attestgate.cli.cmd_audit, "run", interrupt)
    code, _ = run("audit", "verify", "--home", str(home))
    assert code == 1
    assert "attestgate audit did not finish" in capsys.readouterr().err


def test_interrupted_admit_message(home, model, monkeypatch, capsys):
    import attestgate.policy

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(attestgate.policy, "evaluate", interrupt)
    code, _ = run("admit", str(model), "--home", str(home))
    assert code == 1
    assert "interrupted; nothing was admitted" in capsys.readouterr().err


def test_empty_path_exit_2(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _ = run("admit", "", "--home", str(home))
    assert code == 2
    assert not (home / "attestgate.db").exists()


def test_output_inside_artifact_rejected(home, model):
    code, _ = run("admit", str(model), "--home", str(home), "-o", str(model / "report.txt"))
    assert code == 2
    assert not (model / "report.txt").exists()


def test_output_into_missing_directory_records_nothing(home, model, tmp_path):
    code, _ = run("admit", str(model), "--home", str(home), "-o", str(tmp_path / "no" / "r.json"))
    assert code == 2
    assert not (home / "attestgate.db").exists()


def test_output_file_mode_follows_umask(home, model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        target = tmp_path / "report.txt"
        run("admit", str(model), "--home", str(home), "-o", str(target))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_verbose_after_subcommand(home, model):
    code, _ = run("admit", str(model), "--home", str(home), "-vv")
    assert code == 3


def test_audit_show_by_id(home, model):
    _, out = run("admit", str(model), "--home", str(home), "--format", "json")
    record_id = json.loads(out)["id"]
    code, out = run("audit", "show", record_id, "--home", str(home), "--format", "json")
    assert code == 0
    assert json.loads(out)["body"]["id"] == record_id


def test_audit_show_unknown_id_exit_2(home, model):
    run("admit", str(model), "--home", str(home))
    code, _ = run("audit", "show", "no-such-id", "--home", str(home))
    assert code == 2


def test_audit_list_filters_by_digest(home, model, tmp_path):
    other = tmp_path / "other.json"
    other.write_text("{}")
    _, out = run("admit", str(model), "--home", str(home), "--format", "json")
    digest = "sha256:" + json.loads(out)["artifact"]["digest"]["sha256"]
    run("admit", str(other), "--home", str(home))
    _, out = run("audit", "list", "--home", str(home), "--digest", digest, "--format", "json")
    assert [r["artifact_digest"] for r in json.loads(out)] == [digest]


def test_expect_head_detects_rewrite(home, model):
    from attestgate.audit.log import record_hash

    run("admit", str(model), "--home", str(home))
    _, head = run("audit", "head", "--home", str(home))
    # Rewrite record 1 and its hash consistently, as someone with write
    # access to the state directory could.
    with sqlite3.connect(home / "attestgate.db") as conn:
        row = conn.execute(
            "SELECT seq, record_id, created_at, kind, artifact_digest, prev_hash, body"
            " FROM audit_records WHERE seq = 1"
        ).fetchone()
        body = row[6].replace('"quarantine"', '"allow"')
        digest = record_hash(row[0], row[1], row[2], row[3], row[4], row[5], body)
        conn.execute("UPDATE audit_records SET body = ?, hash = ? WHERE seq = 1", (body, digest))
    (home / "audit.head").write_text(json.dumps({"seq": 1, "hash": digest}))
    code, _ = run("audit", "verify", "--home", str(home))
    assert code == 0
    code, out = run("audit", "verify", "--home", str(home), "--expect-head", head.strip())
    assert code == 5
    assert "rewritten" in out


def test_audit_verify_missing_home_exit_2(tmp_path):
    code, _ = run("audit", "verify", "--home", str(tmp_path / "typo"))
    assert code == 2
    assert not (tmp_path / "typo").exists()


def test_corrupt_database_exit_5(home, model):
    run("admit", str(model), "--home", str(home))
    (home / "attestgate.db").write_bytes(b"\x00garbage" * 1000)
    for extra in ("attestgate.db-wal", "attestgate.db-shm"):
        (home / extra).unlink(missing_ok=True)
    code, out = run("audit", "verify", "--home", str(home))
    assert code == 5
    assert "not a database" in out


def test_edited_digest_column_detected(home, model):
    run("admit", str(model), "--home", str(home))
    with sqlite3.connect(home / "attestgate.db") as conn:
        conn.execute("UPDATE audit_records SET artifact_digest = 'sha256:00' WHERE seq = 1")
    code, _ = run("audit", "verify", "--home", str(home))
    assert code == 5
