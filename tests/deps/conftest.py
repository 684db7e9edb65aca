"""Fixtures for the dependency-check tests: an OSV folder and name lists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestgate.deps import config

VARIABLES = (
    config.OSV_DB_VARIABLE,
    config.INTERNAL_PACKAGES_VARIABLE,
    config.PUBLIC_INDEX_VARIABLE,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test without dependency-check configuration from the host."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    config.clear_cache()
    yield
    config.clear_cache()


def pysec_record() -> dict[str, Any]:
    """Return a PYSEC-style record: examplepkg below 1.2.0 is vulnerable."""
    return {
        "schema_version": "1.6.0",
        "id": "PYSEC-2024-0001",
        "modified": "2024-05-01T00:00:00Z",
        "published": "2024-04-01T00:00:00Z",
        "aliases": ["CVE-2024-00001", "GHSA-aaaa-bbbb-cccc"],
        "summary": "examplepkg deserializes untrusted input",
        "details": "examplepkg before 1.2.0 loads pickles from HTTP responses.",
        "affected": [
            {
                "package": {
                    "ecosystem": "PyPI",
                    "name": "ExamplePkg",
                    "purl": "pkg:pypi/examplepkg",
                },
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "1.2.0"}],
                    }
                ],
                "versions": ["1.0.0", "1.1.0", "1.1.1"],
            }
        ],
        "references": [{"type": "WEB", "url": "https://example.invalid/advisory"}],
    }


def malicious_record() -> dict[str, Any]:
    """Return an OSSF malicious-packages record: every release of torch-utilsx."""
    return {
        "schema_version": "1.5.0",
        "id": "MAL-2024-1234",
        "modified": "2024-06-01T00:00:00Z",
        "published": "2024-06-01T00:00:00Z",
        "summary": "Malicious code in torch-utilsx (PyPI)",
        "details": "The package exfiltrates environment variables on install.",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "torch-utilsx"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
                "database_specific": {"malicious-packages-origins": []},
            }
        ],
    }


def write_osv_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "PYSEC-2024-0001.json").write_text(json.dumps(pysec_record()))
    (folder / "MAL-2024-1234.json").write_text(json.dumps(malicious_record()))
    other = pysec_record()
    other["id"] = "GHSA-npm-0000-0000"
    other["affected"][0]["package"] = {"ecosystem": "npm", "name": "requests"}
    (folder / "GHSA-npm-0000-0000.json").write_text(json.dumps(other))
    withdrawn = pysec_record()
    withdrawn["id"] = "PYSEC-2023-9999"
    withdrawn["withdrawn"] = "2023-12-01T00:00:00Z"
    withdrawn["affected"][0]["package"]["name"] = "numpy"
    (folder / "PYSEC-2023-9999.json").write_text(json.dumps(withdrawn))
    return folder


@pytest.fixture
def osv_folder(tmp_path: Path) -> Path:
    return write_osv_folder(tmp_path / "osv")


@pytest.fixture
def names_files(tmp_path: Path) -> tuple[Path, Path]:
    """Return (internal names file, public index snapshot file)."""
    internal = tmp_path / "internal.txt"
    internal.write_text("# packages published on the internal index\nacme-utils\nAcme_Models\n")
    public = tmp_path / "public.txt"
    public.write_text("requests\nacme-utils\nnumpy\n")
    return internal, public


@pytest.fixture
def configured(
    monkeypatch: pytest.MonkeyPatch, osv_folder: Path, names_files: tuple[Path, Path]
) -> None:
    """Configure the OSV database and the internal and public name lists."""
    monkeypatch.setenv(config.OSV_DB_VARIABLE, str(osv_folder))
    monkeypatch.setenv(config.INTERNAL_PACKAGES_VARIABLE, str(names_files[0]))
    monkeypatch.setenv(config.PUBLIC_INDEX_VARIABLE, str(names_files[1]))
