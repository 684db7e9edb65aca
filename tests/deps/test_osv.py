"""Tests for reading an OSV database and matching versions."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from attestgate.deps.osv import OsvDatabase, OsvDatabaseError, load_osv_database

from .conftest import malicious_record, pysec_record


def database(*records: dict[str, Any]) -> OsvDatabase:
    db = OsvDatabase("test")
    for record in records:
        db.add_record(record)
    return db


def ranged(events: list[dict[str, str]], versions: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": "PYSEC-TEST",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "pkg"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
                "versions": versions or [],
            }
        ],
    }


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.9", True), ("1.1.1", True), ("1.2.0", False), ("1.2.0rc1", True), ("2.0", False)],
)
def test_fixed_range(version: str, affected: bool) -> None:
    db = database(ranged([{"introduced": "0"}, {"fixed": "1.2.0"}]))
    assert bool(db.affecting("pkg", version)) is affected


@pytest.mark.parametrize(
    ("version", "affected"), [("1.0", False), ("1.5", True), ("2.0", True), ("2.0.1", False)]
)
def test_last_affected_range(version: str, affected: bool) -> None:
    db = database(ranged([{"introduced": "1.5"}, {"last_affected": "2.0"}]))
    assert bool(db.affecting("pkg", version)) is affected


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.0", True), ("1.1", False), ("2.0", False), ("3.0", True), ("3.1", False)],
)
def test_two_intervals_in_one_range(version: str, affected: bool) -> None:
    # Events are listed out of order on purpose: the schema sorts them.
    events = [{"fixed": "3.1"}, {"introduced": "1.0"}, {"introduced": "3.0"}, {"fixed": "1.1"}]
    db = database(ranged(events))
    assert bool(db.affecting("pkg", version)) is affected


def test_versions_list_only() -> None:
    db = database(ranged([], versions=["0.0.1", "0.0.2"]))
    assert db.affecting("pkg", "0.0.2")
    assert not db.affecting("pkg", "0.0.3")


def test_versions_list_normalized() -> None:
    db = database(ranged([], versions=["1.0"]))
    assert db.affecting("pkg", "1.0.0")


def test_invalid_version_not_matched() -> None:
    db = database(ranged([{"introduced": "0"}]))
    assert not db.affecting("pkg", "not-a-version!")


def test_name_normalized() -> None:
    db = database(pysec_record())
    assert db.affecting("example_pkg", "1.0.0") == []
    assert db.affecting("EXAMPLEPKG", "1.0.0")[0].id == "PYSEC-2024-0001"


def test_other_ecosystem_ignored() -> None:
    record = pysec_record()
    record["affected"][0]["package"]["ecosystem"] = "npm"
    assert len(database(record)) == 0


def test_git_range_ignored() -> None:
    record = ranged([{"introduced": "0"}])
    record["affected"][0]["ranges"][0]["type"] = "GIT"
    assert not database(record).affecting("pkg", "1.0")


def test_withdrawn_ignored() -> None:
    record = pysec_record()
    record["withdrawn"] = "2024-01-01T00:00:00Z"
    assert len(database(record)) == 0


def test_invalid_bound_drops_range() -> None:
    db = database(ranged([{"introduced": "0"}, {"fixed": "not a version"}]))
    assert not db.affecting("pkg", "1.0")


def test_malicious_flag_and_all_versions() -> None:
    advisory = database(malicious_record()).advisories("torch-utilsx")[0]
    assert advisory.malicious
    assert advisory.all_versions


def test_fixed_range_not_all_versions() -> None:
    advisory = database(pysec_record()).advisories("examplepkg")[0]
    assert not advisory.all_versions


def test_malformed_records_skipped() -> None:
    db = database(
        {"id": 5},
        {"id": "X", "affected": "nope"},
        {"id": "Y", "affected": [{"package": "x"}, 3]},
    )
    assert len(db) == 0
    assert db.record_count == 3


def test_load_folder(osv_folder: Path) -> None:
    db = load_osv_database(osv_folder)
    assert db.record_count == 4
    assert [a.id for a in db.affecting("examplepkg", "1.1.0")] == ["PYSEC-2024-0001"]


def test_load_single_file_with_list(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text(json.dumps([pysec_record(), malicious_record()]))
    assert load_osv_database(path).record_count == 2


def test_load_zip_export(tmp_path: Path) -> None:
    path = tmp_path / "PyPI.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("PYSEC-2024-0001.json", json.dumps(pysec_record()))
        archive.writestr("MAL-2024-1234.json", json.dumps(malicious_record()))
        archive.writestr("README.txt", "not a record")
    db = load_osv_database(path)
    assert db.affecting("torch-utilsx", "9.9")[0].id == "MAL-2024-1234"


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(OsvDatabaseError, match="does not exist"):
        load_osv_database(tmp_path / "absent")


def test_invalid_json_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(OsvDatabaseError, match="not valid JSON"):
        load_osv_database(tmp_path)


def test_bad_zip_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(OsvDatabaseError, match="cannot open"):
        load_osv_database(path)
