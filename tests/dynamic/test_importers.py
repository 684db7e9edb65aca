"""Falco and Tetragon event files map to the standard signals, with bounds on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attestgate.dynamic.importers import ImportLimits, import_signal_file
from attestgate.errors import UsageError

DATA = Path(__file__).parent / "data"


def kinds(result):
    return [
        (
            s.kind,
            s.details.get("host")
            or s.details.get("path")
            or s.details.get("binary")
            or s.details.get("command")
            or s.details.get("rule"),
        )
        for s in result.signals
    ]


def test_falco_events_map_to_kinds():
    result = import_signal_file(DATA / "falco_events.jsonl", "model.pkl")
    assert kinds(result) == [
        ("network.connect", "198.51.100.7"),
        ("process.exec", "/usr/bin/dash"),
        ("file.read.sensitive", "/etc/shadow"),
        ("file.write", "/etc/ld.so.preload"),
        ("dns.query", "10.0.0.2"),
        ("x-attestgate.monitor-alert", "Change thread namespace"),
        ("process.exec", "bash"),
    ]


def test_falco_signal_details():
    result = import_signal_file(DATA / "falco_events.jsonl", "model.pkl")
    connect = result.signals[0]
    assert connect.source == "falco-import"
    assert connect.details["port"] == 443
    assert connect.details["rule"] == "Unexpected outbound connection destination"
    assert connect.details["process"] == "python3 load_model.py /models/model.pkl"
    assert connect.time == "2026-03-02T10:15:02.102938475Z"


def test_falco_entry_counts():
    result = import_signal_file(DATA / "falco_events.jsonl", "model.pkl")
    assert result.entry["name"] == "falco-import"
    assert result.entry["events"] == 7
    assert result.entry["invalid"] == 0
    assert result.findings == []


def test_tetragon_events_map_to_kinds():
    result = import_signal_file(DATA / "tetragon_events.jsonl", "model.pkl")
    assert kinds(result) == [
        ("process.exec", "/usr/bin/python3.11"),
        ("process.exec", "/bin/sh"),
        ("network.connect", "198.51.100.7"),
        ("dns.query", "10.96.0.10"),
        ("file.read.sensitive", "/home/loader/.ssh/id_ed25519"),
        ("file.write", "/etc/ld.so.preload"),
    ]


def test_tetragon_quiet_events_counted():
    result = import_signal_file(DATA / "tetragon_events.jsonl", "model.pkl")
    assert result.entry["name"] == "tetragon-import"
    assert result.entry["events"] == 9
    assert result.entry["ignored"] == 3


def test_tetragon_connect_details():
    result = import_signal_file(DATA / "tetragon_events.jsonl", "model.pkl")
    connect = result.signals[2]
    assert connect.details["port"] == 443
    assert connect.details["call"] == "tcp_connect"
    assert connect.details["process"] == "/usr/bin/python3.11 load_model.py /models/model.pkl"


def test_pretty_printed_and_array(tmp_path):
    events = [
        json.loads(line) for line in (DATA / "tetragon_events.jsonl").read_text().splitlines()
    ]
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\n".join(json.dumps(e, indent=2) for e in events[:3]))
    array = tmp_path / "array.json"
    array.write_text(json.dumps(events[:3]))
    assert len(import_signal_file(pretty, "m").signals) == 3
    assert len(import_signal_file(array, "m").signals) == 3


def test_invalid_lines_reported(tmp_path):
    lines = (DATA / "falco_events.jsonl").read_text().splitlines()
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([lines[0], "{not json", "plain text line", lines[1]]))
    result = import_signal_file(path, "model.pkl")
    assert len(result.signals) == 2
    assert [f.rule for f in result.findings] == ["dynamic.incomplete"]
    assert result.entry["invalid"] == 2


def test_deep_nesting_is_an_invalid_event(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    result = import_signal_file(path, "model.pkl")
    assert result.entry["invalid"] == 1
    assert [f.rule for f in result.findings] == ["dynamic.unavailable"]
    assert "RecursionError" in result.findings[0].message


def test_event_count_bound(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text((DATA / "tetragon_events.jsonl").read_text())
    result = import_signal_file(path, "model.pkl", ImportLimits(max_events=3))
    assert result.entry["events"] == 3
    assert [f.rule for f in result.findings] == ["dynamic.incomplete"]


def test_oversized_file_unavailable(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text((DATA / "falco_events.jsonl").read_text())
    result = import_signal_file(path, "model.pkl", ImportLimits(max_file_bytes=100))
    assert result.signals == []
    assert [f.rule for f in result.findings] == ["dynamic.unavailable"]


def test_binary_file_unavailable(tmp_path):
    path = tmp_path / "events.bin"
    path.write_bytes(b"\xff\xfe\x00\x80" * 10)
    result = import_signal_file(path, "model.pkl")
    assert [f.rule for f in result.findings] == ["dynamic.unavailable"]


def test_unknown_json_unavailable(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"level": "info", "msg": "hello"}\n{"level": "warn"}\n')
    result = import_signal_file(path, "model.pkl")
    assert [f.rule for f in result.findings] == ["dynamic.unavailable"]
    assert result.entry["status"] == "unavailable"


def test_empty_file_is_no_alerts(tmp_path):
    path = tmp_path / "quiet.jsonl"
    path.write_text("")
    result = import_signal_file(path, "model.pkl")
    assert result.signals == []
    assert result.findings == []


def test_missing_file_usage_error(tmp_path):
    with pytest.raises(UsageError):
        import_signal_file(tmp_path / "absent.jsonl", "model.pkl")


def test_falco_nanosecond_time(tmp_path):
    event = {
        "rule": "r",
        "output": "o",
        "output_fields": {
            "evt.time": 1772446502102938475,
            "evt.type": "execve",
            "proc.cmdline": "sh",
        },
    }
    path = tmp_path / "ns.jsonl"
    path.write_text(json.dumps(event))
    result = import_signal_file(path, "model.pkl")
    assert result.signals[0].time.startswith("2026-03-02T10:15:02.10293")
