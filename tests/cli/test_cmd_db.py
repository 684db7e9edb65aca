"""``attestgate db`` and the queue commands that read the quarantine table."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from attestgate.cli.main import main
from attestgate.storage import SCHEMA_HEAD


def _run(*argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    code = main(list(argv), out)
    text = out.getvalue()
    return code, json.loads(text) if text.lstrip().startswith(("{", "[")) else text


def test_db_current_without_database(tmp_path: Path) -> None:
    code, body = _run("db", "current", "--home", str(tmp_path), "--format", "json")
    assert code == 0
    assert body == {"revision": None, "head": SCHEMA_HEAD, "at_head": False}
    assert not (tmp_path / "attestgate.db").exists()


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    code, body = _run("db", "upgrade", "--home", str(tmp_path), "--format", "json")
    assert code == 0
    assert body == {"before": None, "after": SCHEMA_HEAD, "changed": True}
    code, body = _run("db", "current", "--home", str(tmp_path), "--format", "json")
    assert body["revision"] == SCHEMA_HEAD
    assert body["at_head"] is True


def test_db_history_marks_current(tmp_path: Path) -> None:
    _run("db", "upgrade", "--home", str(tmp_path))
    code, items = _run("db", "history", "--home", str(tmp_path), "--format", "json")
    assert code == 0
    assert [i["revision"] for i in items] == ["0003", "0002", "0001"]
    assert [i["current"] for i in items] == [True, False, False]


def test_db_downgrade_and_back(tmp_path: Path) -> None:
    _run("db", "upgrade", "--home", str(tmp_path))
    code, body = _run("db", "downgrade", "0001", "--home", str(tmp_path), "--format", "json")
    assert code == 0
    assert body["after"] == "0001"
    code, text = _run("db", "upgrade", "--home", str(tmp_path))
    assert text.strip() == f"schema revision 0001 -> {SCHEMA_HEAD}"


def test_db_downgrade_base_rejected(tmp_path: Path) -> None:
    _run("db", "upgrade", "--home", str(tmp_path))
    code, _ = _run("db", "downgrade", "base", "--home", str(tmp_path))
    assert code == 2


def test_quarantine_list_states(tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00" * 1000 + b"weights")
    assert _run("admit", str(model), "--promote", "--home", str(home))[0] == 3
    code, items = _run("quarantine", "list", "--home", str(home), "--format", "json")
    digest = items[0]["digest"]
    assert items[0]["state"] == "queued"
    code, _ = _run("quarantine", "reject", digest, "--reason", "unknown", "--home", str(home))
    assert code == 0
    code, items = _run("quarantine", "list", "--home", str(home), "--state", "all")
    assert "rejected" in items
    code, items = _run("quarantine", "list", "--home", str(home), "--format", "json")
    assert items == []


def test_quarantine_reconcile_reports(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, body = _run("quarantine", "reconcile", "--home", str(home), "--format", "json")
    assert code == 0
    assert body == {"added": [], "completed": [], "missing": [], "unrecorded": []}


def test_bad_database_url_usage(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("ATTESTGATE_DATABASE_URL", "postgresql+nodriver://u:secret@h/db")
    code, _ = _run("db", "current", "--home", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2
    assert "ATTESTGATE_DATABASE_URL names a driver that cannot be loaded" in err
    assert "secret" not in err


def test_unparsable_database_url(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("ATTESTGATE_DATABASE_URL", "not a url")
    code, _ = _run("db", "upgrade", "--home", str(tmp_path))
    assert code == 2
    assert "is not a valid SQLAlchemy URL" in capsys.readouterr().err
