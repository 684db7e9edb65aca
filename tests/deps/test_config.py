"""Tests for reading the dependency-check configuration from the environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

from attestgate.deps.config import (
    INTERNAL_PACKAGES_VARIABLE,
    OSV_DB_VARIABLE,
    PUBLIC_INDEX_VARIABLE,
    load_config,
)

from .conftest import pysec_record


def test_empty_environment() -> None:
    config = load_config({})
    assert config.osv is None
    assert config.names is None
    assert config.errors == ()


def test_all_sources(osv_folder: Path, names_files: tuple[Path, Path]) -> None:
    config = load_config(
        {
            OSV_DB_VARIABLE: str(osv_folder),
            INTERNAL_PACKAGES_VARIABLE: str(names_files[0]),
            PUBLIC_INDEX_VARIABLE: str(names_files[1]),
        }
    )
    assert config.osv is not None
    assert config.names is not None
    assert config.names.exposed("acme-utils")
    assert config.errors == ()


def test_missing_database_is_error(tmp_path: Path) -> None:
    config = load_config({OSV_DB_VARIABLE: str(tmp_path / "absent")})
    assert config.osv is None
    assert OSV_DB_VARIABLE in config.errors[0]


def test_internal_without_public_is_error(names_files: tuple[Path, Path]) -> None:
    config = load_config({INTERNAL_PACKAGES_VARIABLE: str(names_files[0])})
    assert config.names is None
    assert PUBLIC_INDEX_VARIABLE in config.errors[0]


def test_database_cached(osv_folder: Path) -> None:
    first = load_config({OSV_DB_VARIABLE: str(osv_folder)}).osv
    second = load_config({OSV_DB_VARIABLE: str(osv_folder)}).osv
    assert first is second


def test_database_reloaded_on_change(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    path.write_text(json.dumps(pysec_record()))
    first = load_config({OSV_DB_VARIABLE: str(path)}).osv
    path.write_text(json.dumps([pysec_record(), pysec_record()]))
    os.utime(path, ns=(1, 1))
    second = load_config({OSV_DB_VARIABLE: str(path)}).osv
    assert first is not second
    assert second is not None
    assert second.record_count == 2
