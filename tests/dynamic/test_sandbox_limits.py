"""Payloads that hang, fork or allocate are stopped by the sandbox's limits and reported."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from attestgate.dynamic import sandbox_isolation
from attestgate.dynamic.interface import ArtifactFile, ArtifactInput, Budget
from attestgate.dynamic.sandbox import SandboxLimits, SandboxPlugin
from attestgate.identify.formats import Format

from .conftest import admit_with_sandbox, sandbox_pids
from .payloads import exec_pickle, reduce_pickle

pytestmark = pytest.mark.usefixtures("isolation")

LIMITS = SandboxLimits(run_seconds=2.0, cpu_seconds=30, memory_base_bytes=512 * 2**20)


def load(tmp_path: Path, data: bytes, limits: SandboxLimits = LIMITS):
    path = tmp_path / "payload.pkl"
    path.write_bytes(data)
    artifact = ArtifactInput(
        path, "file", "0" * 64, (ArtifactFile(path.name, path, Format.PICKLE, len(data), ""),)
    )
    return SandboxPlugin(limits).run(artifact, Budget(60))


def test_sleep_forever_times_out(tmp_path):
    result = load(tmp_path, reduce_pickle("time", "sleep", 3600))
    assert [f.rule for f in result.findings] == ["dynamic.timeout"]
    assert result.runs[0]["status"] == "timeout"
    assert result.runs[0]["limit"] == "wall-clock time limit"
    assert result.status == "timeout"


def test_fork_bomb_hits_process_limit(tmp_path):
    result = load(tmp_path, exec_pickle("import os\nwhile True:\n    os.fork()\n"))
    assert [f.rule for f in result.findings] == ["dynamic.crashed"]
    assert "RLIMIT_NPROC" in result.findings[0].message
    assert "process.exec" in {s.kind for s in result.signals}


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox uid range exists only for a root gate")
def test_fork_bomb_leaves_no_process(tmp_path):
    load(tmp_path, exec_pickle("import os, time\nwhile True:\n    os.fork()\n"))
    assert sandbox_pids(sandbox_isolation.SANDBOX_ID_BASE) == []


def test_unbounded_allocation_hits_memory_limit(tmp_path):
    source = "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 24))\n"
    result = load(tmp_path, exec_pickle(source))
    assert [f.rule for f in result.findings] == ["dynamic.crashed"]
    assert "RLIMIT_AS" in result.findings[0].message


def test_busy_loop_hits_cpu_limit(tmp_path):
    limits = SandboxLimits(run_seconds=60.0, cpu_seconds=1, memory_base_bytes=512 * 2**20)
    result = load(tmp_path, exec_pickle("while True:\n    pass\n"), limits)
    assert result.runs[0]["status"] == "crashed"
    assert "RLIMIT_CPU" in result.runs[0]["limit"]


def test_budget_exhausted_before_load(tmp_path):
    path = tmp_path / "a.pkl"
    path.write_bytes(exec_pickle("x = 1"))
    artifact = ArtifactInput(
        path, "file", "0" * 64, (ArtifactFile(path.name, path, Format.PICKLE, 10, ""),)
    )
    result = SandboxPlugin(LIMITS).run(artifact, Budget(0.5))
    assert [f.rule for f in result.findings] == ["dynamic.timeout"]
    assert result.runs[0]["status"] == "not-run"


def test_unavailable_isolation_never_loads(tmp_path, monkeypatch):
    def missing() -> tuple[str, str]:
        raise sandbox_isolation.IsolationUnavailable("unshare was not found (test)")

    monkeypatch.setattr(sandbox_isolation, "_tools", missing)
    monkeypatch.setattr(sandbox_isolation, "_probe_result", {})
    marker = tmp_path / "ran"
    path = tmp_path / "touch.pkl"
    path.write_bytes(reduce_pickle("builtins", "open", str(marker), "w"))
    record = admit_with_sandbox(path, tmp_path / "home")
    plugin = record["dynamic"]["plugins"][0]
    assert plugin["status"] == "unavailable"
    assert "dynamic.unavailable" in {f["rule"] for f in record["findings"]}
    assert record["decision"] != "allow"
    assert not marker.exists()


@pytest.mark.skipif(
    os.geteuid() != 0, reason="leftovers are traced by the sandbox uid of a root gate"
)
def test_leftover_files_removed(monkeypatch):
    shared = Path(tempfile.mkdtemp(prefix="attestgate-leftovers-"))
    try:
        shared.chmod(0o755)
        drop = shared / "drop"
        drop.mkdir()
        drop.chmod(0o1777)
        monkeypatch.setattr(sandbox_isolation, "WORLD_WRITABLE_DIRS", (str(drop),))
        marker = drop / "marker"
        source = f"with open({str(marker)!r}, 'w') as fh:\n    fh.write('x')\n"
        result = load(shared, exec_pickle(source))

        assert [s.details["path"] for s in result.signals if s.kind == "file.write"] == [
            str(marker)
        ]
        assert result.runs[0]["removed"] == [str(marker)]
        assert not marker.exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_missing_file_unavailable(tmp_path):
    path = tmp_path / "gone.pkl"
    artifact = ArtifactInput(
        path, "file", "0" * 64, (ArtifactFile(path.name, path, Format.PICKLE, 10, ""),)
    )
    result = SandboxPlugin(LIMITS).run(artifact, Budget(30))
    assert [f.rule for f in result.findings] == ["dynamic.unavailable"]
    assert "could not prepare" in result.findings[0].message


def test_missing_loader_skipped(tmp_path):
    if importlib.util.find_spec("keras") is not None:
        pytest.skip("keras is installed, so the Keras load runs")
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    artifact = ArtifactInput(
        path, "file", "0" * 64, (ArtifactFile(path.name, path, Format.HDF5, 72, ""),)
    )
    result = SandboxPlugin(LIMITS).run(artifact, Budget(30))
    assert result.runs[0]["status"] == "skipped"
    assert result.runs[0]["reason"].startswith("keras is not installed")
    assert result.findings == []
    assert result.signals == []
