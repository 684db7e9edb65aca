"""Fixtures for the regression tests of known bypass techniques.

Each hostile case is a file written byte by byte into a temporary
directory, run through the identify-and-scan pass and the default policy,
exactly as ``attestgate admit`` would see it, minus the evidence step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from attestgate.findings import Finding
from attestgate.pipeline import inspect
from attestgate.policy import evaluate, load_default_policy

Verdict = tuple[str, list[Finding]]


@pytest.fixture
def decide() -> Callable[[Path], Verdict]:
    """Return a function that inspects a path and applies the default policy.

    It returns the decision ("allow", "quarantine" or "block") and the
    findings. Provenance is not checked, so a clean file is allowed.
    """
    policy = load_default_policy()

    def run(path: Path) -> Verdict:
        inspection = inspect(path)
        decision = evaluate(policy, "deployment", inspection.findings)
        return decision.action.label, inspection.findings

    return run


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Return a function that writes bytes to a named file in a fresh directory."""

    def run(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return run
