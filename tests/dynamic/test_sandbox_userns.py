"""The sandbox of a gate that runs as an ordinary user: a new user namespace instead of a new uid.

The test runs a small gate script as uid 65534 with the system's Python of
the same minor version (the test interpreter may live where that user cannot
read it), so it needs root to switch users and skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import attestgate

from .payloads import exec_pickle, reduce_pickle

SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
SRC = Path(attestgate.__file__).resolve().parent.parent

SCRIPT = """
import json, sys
from pathlib import Path
from attestgate.dynamic.interface import ArtifactFile, ArtifactInput, Budget
from attestgate.dynamic.sandbox import SandboxLimits, SandboxPlugin
from attestgate.identify.formats import Format

out = {}
for name in sys.argv[1:]:
    path = Path(name)
    files = (ArtifactFile(path.name, path, Format.PICKLE, path.stat().st_size, ""),)
    result = SandboxPlugin(SandboxLimits(run_seconds=10)).run(
        ArtifactInput(path, "file", "", files), Budget(60)
    )
    out[path.name] = {
        "runs": result.runs,
        "kinds": sorted({s.kind for s in result.signals}),
        "findings": [f.message for f in result.findings],
    }
print(json.dumps(out))
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="attestgate-userns-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason=f"{SYSTEM_PYTHON} is not installed")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is not installed")
def test_user_namespace_sandbox(shared_dir):
    (shared_dir / "gate.py").write_text(SCRIPT)
    (shared_dir / "proc.pkl").write_bytes(reduce_pickle("subprocess", "call", ["/bin/true"]))
    (shared_dir / "fork.pkl").write_bytes(exec_pickle("import os\nwhile True:\n    os.fork()\n"))
    for path in shared_dir.iterdir():
        path.chmod(0o644)

    paths = os.pathsep.join([str(SRC), *site.getsitepackages()])
    done = subprocess.run(
        [
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            str(SYSTEM_PYTHON),
            str(shared_dir / "gate.py"),
            str(shared_dir / "proc.pkl"),
            str(shared_dir / "fork.pkl"),
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(shared_dir), "PYTHONPATH": paths},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    if "could not load" in done.stdout and "isolation" in done.stdout:
        pytest.skip(f"unprivileged user namespaces are unavailable here: {done.stdout[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]

    out = json.loads(done.stdout)
    assert out["proc.pkl"]["kinds"] == [
        "module.import",
        "process.exec",
        "x-attestgate.pickle-global",
    ]
    assert out["proc.pkl"]["runs"][0]["status"] == "loaded"
    assert out["fork.pkl"]["runs"][0]["limit"] == "process limit (RLIMIT_NPROC)"
