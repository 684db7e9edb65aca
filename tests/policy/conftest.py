"""Fixtures for the policy tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import write_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"
