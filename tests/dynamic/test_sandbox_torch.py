"""PyTorch checkpoints in the sandbox: a clean state dict stays quiet, a weight-rewriting one blocks.

Both files sit in one directory so that one admission pays for the torch
imports (one per file, shared by the weights_only=True and False runs).
"""

from __future__ import annotations

from typing import Any

import pytest

from attestgate.dynamic.sandbox import SandboxLimits, torch_zip_digests

from .conftest import admit_with_sandbox, reason_actions, signals

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("isolation")]


class AddOne:
    """Pickles as a call of Tensor.add_ on the tensor it wraps, so loading rewrites it."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def __reduce__(self) -> tuple[Any, ...]:
        return (torch.Tensor.add_, (self.tensor, 1.0))


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.save({"weight": torch.ones(4, 3), "bias": torch.zeros(3)}, folder / "clean.pt")
    weight = torch.ones(4)
    torch.save({"weight": weight, "hook": AddOne(weight)}, folder / "rewrite.pt")
    return admit_with_sandbox(folder, tmp_path_factory.mktemp("home"))


def runs(record: dict[str, Any], file: str) -> dict[str, str]:
    plugin = record["dynamic"]["plugins"][0]
    return {run["loader"]: run["status"] for run in plugin["runs"] if run["file"] == file}


def test_clean_checkpoint_loads_both_ways(record):
    assert runs(record, "clean.pt") == {
        "torch.load(weights_only=True)": "loaded",
        "torch.load(weights_only=False)": "loaded",
    }


def test_clean_checkpoint_only_info(record):
    clean = [f for f in record["findings"] if f["file"] == "clean.pt"]
    assert {f["severity"] for f in clean if f["rule"].startswith("dynamic.")} <= {"info"}
    assert not [
        s
        for kind in record["dynamic"]["signals"].values()
        for s in kind
        if s.get("file") == "clean.pt"
        and s["kind"] != "module.import"
        and s["kind"] != "x-attestgate.pickle-global"
    ]


def test_rewrite_rejected_by_weights_only(record):
    assert runs(record, "rewrite.pt") == {
        "torch.load(weights_only=True)": "load-failed",
        "torch.load(weights_only=False)": "loaded",
    }


def test_rewrite_tensor_mismatch_blocks(record):
    found = signals(record, "x-attestgate.tensor-mismatch")
    assert [(s["file"], s["details"]["loader"]) for s in found] == [
        ("rewrite.pt", "torch.load(weights_only=False)")
    ]
    assert found[0]["details"]["mismatched"] == 1
    assert reason_actions(record)["dynamic.x-attestgate.tensor-mismatch"] == "block"


def test_static_digests_cover_storages(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"a": torch.arange(6.0), "b": torch.ones(2, dtype=torch.float16)}, path)
    assert len(torch_zip_digests(path, SandboxLimits())) == 2


def test_static_digests_skip_non_zip(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"a": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert torch_zip_digests(path, SandboxLimits()) is None
