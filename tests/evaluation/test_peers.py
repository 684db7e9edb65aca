"""Peer scanners run as subprocesses: fake tools for each outcome, and the real picklescan."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from attestgate.errors import UsageError
from attestgate.evaluation import peers
from attestgate.evaluation.scenario import CLEAN_BASELINE, MALICIOUS_HUB, Case

# Each fake passes the version probe that peers.py runs before scanning, then
# runs the behaviour that the test gives it.
PROBES = """\
import json, os, sys, time
args = sys.argv[1:]
if args in (["--version"], ["scan", "--version"], ["--help"]):
    print("{name}, version 9.9.9")
    sys.exit(0)
"""


def write_tool(folder: Path, name: str, behaviour: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    body = PROBES.format(name=name) + textwrap.dedent(behaviour)
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    return script


def on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.delenv(peers.PEERS_BIN_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def case(case_id: str, artifact: str, *, hostile: bool = True) -> Case:
    return Case(
        id=case_id,
        scenario="scenario",
        family=MALICIOUS_HUB if hostile else CLEAN_BASELINE,
        artifact=artifact,
        expected={"deployment": "block" if hostile else "allow"},
        hostile=hostile,
        step="upload" if hostile else None,
    )


class Payload:
    """An object whose pickle calls os.system when loaded; the tests only write it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "model.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    (root / "hostile.pkl").write_bytes(pickle.dumps(Payload()))
    return root


def only(result: dict[str, Any], tool: str) -> dict[str, Any]:
    rows = [r for r in result["results"] if r["tool"] == tool]
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def test_picklescan_fake_detected(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tool(
        tmp_path / "bin",
        "picklescan",
        """
        print(f"{args[1]}: dangerous import 'posix system' FOUND")
        print("----------- SCAN SUMMARY -----------")
        print("Scanned files: 1\\nInfected files: 1\\nSuspicious globals: 0\\nDangerous globals: 1")
        sys.exit(1)
        """,
    )
    on_path(monkeypatch, tmp_path / "bin")
    result = peers.run_peers(corpus, [case("c1", "hostile.pkl")], tools=["picklescan"])
    row = only(result, "picklescan")
    assert row["detected"] is True
    assert row["error"] is None
    assert "posix system" in str(row["detail"])
    assert result["tools"]["picklescan"]["available"] is True


def test_modelscan_fake_clean(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tool(
        tmp_path / "bin",
        "modelscan",
        """
        report = {"summary": {"scanned": {"total_scanned": 1}}, "issues": [], "errors": []}
        with open(args[args.index("-o") + 1], "w") as stream:
            json.dump(report, stream)
        sys.exit(0)
        """,
    )
    on_path(monkeypatch, tmp_path / "bin")
    result = peers.run_peers(corpus, [case("c1", "model.pkl", hostile=False)], tools=["modelscan"])
    row = only(result, "modelscan")
    assert row["detected"] is False
    assert row["error"] is None
    assert result["tools"]["modelscan"]["version"] == "9.9.9"


def test_modelscan_fake_issue(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tool(
        tmp_path / "bin",
        "modelscan",
        """
        issue = {"severity": "CRITICAL", "module": "posix", "operator": "system"}
        report = {"issues": [issue], "errors": []}
        with open(args[args.index("-o") + 1], "w") as stream:
            json.dump(report, stream)
        sys.exit(1)
        """,
    )
    on_path(monkeypatch, tmp_path / "bin")
    row = only(
        peers.run_peers(corpus, [case("c1", "hostile.pkl")], tools=["modelscan"]), "modelscan"
    )
    assert row["detected"] is True
    assert "posix.system" in str(row["detail"])


def test_modelaudit_warning_not_detected(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tool(
        tmp_path / "bin",
        "modelaudit",
        """
        assert os.environ["PROMPTFOO_DISABLE_TELEMETRY"] == "1"
        assert os.environ["HTTPS_PROXY"] == "http://127.0.0.1:9"
        issue = {"severity": "warning", "rule_code": "S999", "message": "review"}
        report = {"issues": [issue], "files_scanned": 1, "has_errors": False}
        with open(args[args.index("-o") + 1], "w") as stream:
            json.dump(report, stream)
        sys.exit(1)
        """,
    )
    on_path(monkeypatch, tmp_path / "bin")
    row = only(
        peers.run_peers(corpus, [case("c1", "model.pkl")], tools=["modelaudit"]), "modelaudit"
    )
    assert row["detected"] is False
    assert row["error"] is None
    assert "S999" in str(row["detail"])


def test_tool_missing(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(peers.PEERS_BIN_ENV, str(tmp_path / "empty"))
    result = peers.run_peers(corpus, [case("c1", "hostile.pkl")])
    assert set(result["tools"]) == set(peers.TOOLS)
    assert not any(info["available"] for info in result["tools"].values())
    assert "not found" in result["tools"]["fickling"]["error"]
    assert result["results"] == []


def test_peers_bin_folder_used(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tool(tmp_path / "peers", "fickling", "sys.exit(0)\n")
    monkeypatch.setenv(peers.PEERS_BIN_ENV, str(tmp_path / "peers"))
    result = peers.run_peers(corpus, [case("c1", "model.pkl")], tools=["fickling"])
    assert result["tools"]["fickling"]["path"] == str(tmp_path / "peers" / "fickling")


def test_tool_error(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tool(
        tmp_path / "bin",
        "fickling",
        """
        sys.stderr.write("Fickling failed to parse this pickle file.\\n")
        sys.exit(2)
        """,
    )
    on_path(monkeypatch, tmp_path / "bin")
    row = only(peers.run_peers(corpus, [case("c1", "hostile.pkl")], tools=["fickling"]), "fickling")
    assert row["detected"] is None
    assert "status 2" in str(row["error"])
    assert "failed to parse" in str(row["error"])


def test_tool_timeout(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tool(tmp_path / "bin", "picklescan", "time.sleep(60)\n")
    on_path(monkeypatch, tmp_path / "bin")
    start = time.monotonic()
    result = peers.run_peers(corpus, [case("c1", "hostile.pkl")], tools=["picklescan"], timeout=1.0)
    row = only(result, "picklescan")
    assert row["detected"] is None
    assert "timed out" in str(row["error"])
    assert time.monotonic() - start < 30


def test_fickling_folder_any_file(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake calls a file unsafe when its name contains "hostile", so the
    # folder result shows which files peers.py passed to it.
    write_tool(
        tmp_path / "bin",
        "fickling",
        """
        unsafe = "hostile" in args[-1] or "member-00000" in args[-1]
        severity = "LIKELY_OVERTLY_MALICIOUS" if unsafe else "LIKELY_SAFE"
        with open(args[args.index("--json-output") + 1], "a") as stream:
            json.dump({"severity": severity}, stream)
        sys.exit(1 if unsafe else 0)
        """,
    )
    on_path(monkeypatch, tmp_path / "bin")
    folder = corpus / "repo"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.pkl").write_bytes(pickle.dumps([1, 2]))
    clean = corpus / "clean-repo"
    clean.mkdir()
    (clean / "config.json").write_text("{}")
    with zipfile.ZipFile(folder / "model.pt", "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps({"w": 1}))
        archive.writestr("model/data/0", b"\0" * 16)

    result = peers.run_peers(
        corpus, [case("zip", "repo"), case("none", "clean-repo")], tools=["fickling"]
    )
    rows = {r["case"]: r for r in result["results"]}
    assert rows["zip"]["detected"] is True
    assert "model.pt:model/data.pkl" in rows["zip"]["detail"]
    assert rows["none"]["detected"] is False
    assert "no file" in rows["none"]["detail"]


def test_unknown_tool_rejected(corpus: Path) -> None:
    with pytest.raises(UsageError, match="unknown peer tools"):
        peers.run_peers(corpus, [], tools=["clamscan"])


def test_fickling_report_stacked(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text('{\n "severity": "LIKELY_SAFE"\n}{\n "severity": "SUSPICIOUS"\n}')
    assert peers.fickling_severities(report) == ["LIKELY_SAFE", "SUSPICIOUS"]


def real_picklescan() -> str | None:
    folder = os.environ.get(peers.PEERS_BIN_ENV)
    if folder:
        candidate = Path(folder) / "picklescan"
        return str(candidate) if candidate.is_file() else None
    return shutil.which("picklescan")


@pytest.mark.skipif(real_picklescan() is None, reason="picklescan is not installed")
def test_real_picklescan(corpus: Path) -> None:
    cases = [case("hostile", "hostile.pkl"), case("clean", "model.pkl", hostile=False)]
    result = peers.run_peers(corpus, cases, tools=["picklescan"])
    rows = {r["case"]: r for r in result["results"]}
    assert rows["hostile"]["detected"] is True
    assert "system" in rows["hostile"]["detail"]
    assert rows["clean"]["detected"] is False
    assert result["tools"]["picklescan"]["version"] is not None
