"""Tests for the internal-name and public-index lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attestgate.deps.confusion import (
    ExposedNames,
    NameListError,
    load_index_snapshot,
    load_name_list,
)


def test_text_list_normalized(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("# internal\nAcme_Utils\n\n  acme.models  # trailing comment\n")
    assert load_name_list(path) == frozenset({"acme-utils", "acme-models"})


def test_pep691_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "simple.json"
    document = {
        "meta": {"api-version": "1.1", "_last-serial": 1},
        "projects": [{"name": "Requests", "_last-serial": 5}, {"name": "acme_utils"}, {}],
    }
    path.write_text(json.dumps(document))
    assert load_index_snapshot(path) == frozenset({"requests", "acme-utils"})


def test_pep503_html_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "simple.html"
    path.write_text(
        "<!DOCTYPE html><html><body>"
        '<a href="/simple/requests/">requests</a>\n<a href="/simple/acme-utils/">Acme_Utils</a>'
        "</body></html>"
    )
    assert load_index_snapshot(path) == frozenset({"requests", "acme-utils"})


def test_text_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("requests\nnumpy\n")
    assert load_index_snapshot(path) == frozenset({"requests", "numpy"})


def test_json_without_projects_raises(tmp_path: Path) -> None:
    path = tmp_path / "simple.json"
    path.write_text('{"meta": {}}')
    with pytest.raises(NameListError, match="projects"):
        load_index_snapshot(path)


def test_invalid_json_raises(tmp_path: Path) -> None:
    path = tmp_path / "simple.json"
    path.write_text("{broken")
    with pytest.raises(NameListError, match="not valid JSON"):
        load_index_snapshot(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(NameListError, match="cannot read"):
        load_name_list(tmp_path / "absent.txt")


def test_exposed_requires_both_lists() -> None:
    names = ExposedNames(frozenset({"acme-utils", "acme-models"}), frozenset({"acme-utils"}), "p")
    assert names.exposed("ACME_utils")
    assert not names.exposed("acme-models")
    assert not names.exposed("requests")
