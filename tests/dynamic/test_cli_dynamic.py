"""``attestgate admit --dynamic`` and ``--signals`` through the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from attestgate.cli.main import main
from attestgate.record import validate_record

from .payloads import reduce_pickle

DATA = Path(__file__).parent / "data"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    return code, out.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "bert", "hidden_size": 8}')
    return path


def test_signals_alone_block(tmp_path, config):
    code, out = run(
        "admit",
        str(config),
        "--home",
        str(tmp_path / "home"),
        "--format",
        "json",
        "--signals",
        str(DATA / "falco_events.jsonl"),
    )
    record = json.loads(out)
    validate_record(record)
    assert code == 4
    assert "dynamic.network.connect" in {r["rule"] for r in record["reasons"]}
    assert record["dynamic"]["plugins"][0]["name"] == "falco-import"


def test_both_signal_files_recorded(tmp_path, config):
    _, out = run(
        "admit",
        str(config),
        "--home",
        str(tmp_path / "home"),
        "--format",
        "json",
        "--signals",
        str(DATA / "falco_events.jsonl"),
        "--signals",
        str(DATA / "tetragon_events.jsonl"),
    )
    record = json.loads(out)
    assert [p["name"] for p in record["dynamic"]["plugins"]] == ["falco-import", "tetragon-import"]
    assert set(record["dynamic"]["signals"]) >= {"network.connect", "process.exec", "file.write"}


@pytest.mark.usefixtures("isolation")
def test_dynamic_sandbox_record(tmp_path):
    path = tmp_path / "payload.pkl"
    path.write_bytes(reduce_pickle("os", "system", "/bin/true"))
    code, out = run(
        "admit",
        str(path),
        "--home",
        str(tmp_path / "home"),
        "--format",
        "json",
        "--dynamic",
        "sandbox",
    )
    record = json.loads(out)
    validate_record(record)
    assert code == 4
    assert "dynamic" in record["timings"]
    assert "dynamic.sandbox" in {c["name"] for c in record["checks"]}
    assert record["dynamic"]["signals"]["process.exec"][0]["details"]["command"] == "/bin/true"


def test_without_dynamic_no_section(tmp_path, config):
    _, out = run("admit", str(config), "--home", str(tmp_path / "home"), "--format", "json")
    record = json.loads(out)
    assert "dynamic" not in record
    assert "dynamic" in record["timings"]


def test_unknown_plugin_exit_2(tmp_path, config, capsys):
    code, _ = run("admit", str(config), "--home", str(tmp_path / "home"), "--dynamic", "nope")
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_missing_signal_file_exit_2(tmp_path, config):
    code, _ = run(
        "admit",
        str(config),
        "--home",
        str(tmp_path / "home"),
        "--signals",
        str(tmp_path / "absent.jsonl"),
    )
    assert code == 2
