"""Artifacts and policies for the store tests."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from attestgate.policy import Policy, load_default_policy


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


@pytest.fixture
def permissive() -> Policy:
    """Return the default policy with missing provenance allowed in every stage."""
    policy = load_default_policy()
    document = dict(policy.document)
    stages = {}
    for name, original in document["stages"].items():
        section = dict(original)
        section["rules"] = {**section.get("rules", {}), "provenance.missing": "allow"}
        stages[name] = section
    document["stages"] = stages
    return replace(policy, name="test-permissive", document=document)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "intake" / "model.bin"
    path.parent.mkdir()
    path.write_bytes(b"\x00" * 1000 + b"weights")
    return path


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "intake" / "repo"
    (path / "sub").mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"\x01" * 500)
    (path / "sub" / "notes.txt").write_text("notes\n")
    return path


@pytest.fixture
def malicious(tmp_path: Path) -> Path:
    path = tmp_path / "intake" / "evil.pkl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(pickle.dumps(_Payload()))
    return path
