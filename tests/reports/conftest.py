"""Fixtures for the report tests: sample reports in each tool's shape and the SARIF schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attestgate._jsonschema import jsonschema

DATA = Path(__file__).parent / "data"
SARIF_SCHEMA = Path(__file__).parent.parent / "data" / "sarif" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="session")
def sarif_validator() -> Any:
    """Return a validator for the official SARIF 2.1.0 schema, read from the bundled copy."""
    schema = json.loads(SARIF_SCHEMA.read_text("utf-8"))
    return jsonschema.Draft4Validator(schema)


@pytest.fixture
def data_dir() -> Path:
    return DATA
