"""hf:// references through a local hub: pinning, recorded identity, namespace reuse, tampering."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest

from attestgate.cli.main import main
from attestgate.record import validate_record

from .conftest import Hub, HubRepo

EXIT_ALLOW, EXIT_USAGE, EXIT_QUARANTINE, EXIT_BLOCK = 0, 2, 3, 4

CONFIG = json.dumps({"model_type": "tiny", "hidden_size": 4}).encode()


def _weights(fill: float = 0.0) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"w": np.full((16, 16), fill, dtype=np.float32)})


WEIGHTS = _weights()


def admit(target: str, home: Path, *extra: str) -> tuple[int, dict]:
    out = io.StringIO()
    code = main(["admit", target, "--home", str(home), "--format", "json", *extra], stdout=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def rules(record: dict) -> dict[str, str]:
    return {f["rule"]: f["severity"] for f in record["findings"]}


@pytest.fixture
def repo(hub: Hub) -> HubRepo:
    created = hub.create("acme/tiny-model")
    created.commit(
        {
            "config.json": CONFIG,
            "model.safetensors": WEIGHTS,
            ".gitattributes": b"*.safetensors filter=lfs\n",
        }
    )
    return created


def test_pinned_commit_recorded(repo: HubRepo, tmp_path: Path) -> None:
    commit = repo.branches["main"][0]
    code, record = admit(f"hf://acme/tiny-model@{commit}", tmp_path / "home")
    assert code == EXIT_QUARANTINE, record["summary"]
    reference = record["artifact"]["reference"]
    assert reference["resolved"] == commit
    assert reference["pinned"] is True
    assert reference["owner"] == {"name": "acme", "repository_id": repo.object_id}
    assert reference["files"]["model.safetensors"]["lfs_sha256"]
    assert "git_oid" in reference["files"]["config.json"]
    assert {f["path"] for f in record["artifact"]["files"]} == {"config.json", "model.safetensors"}
    assert "intake.unpinned-revision" not in rules(record)
    record.pop("audit")
    validate_record(record)


def test_branch_reference_at_deployment(repo: HubRepo, tmp_path: Path) -> None:
    code, record = admit("hf://acme/tiny-model@main", tmp_path / "home")
    assert rules(record)["intake.unpinned-revision"] == "medium"
    assert record["artifact"]["reference"]["revision_kind"] == "branch"
    assert record["artifact"]["reference"]["resolved"] == repo.branches["main"][0]
    assert code == EXIT_QUARANTINE


def test_branch_reference_at_training(repo: HubRepo, tmp_path: Path) -> None:
    _, record = admit("hf://acme/tiny-model@main", tmp_path / "home", "--stage", "training")
    assert rules(record)["intake.unpinned-revision"] == "info"
    assert "intake.unpinned-revision" not in {r["rule"] for r in record["reasons"]}


def test_reused_namespace_blocks(hub: Hub, repo: HubRepo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    admit("hf://acme/tiny-model@main", home)
    # The account is deleted and someone else registers the same name.
    hijacked = hub.create("acme/tiny-model", author="acme", object_id="f" * 24)
    hijacked.commit({"config.json": CONFIG, "model.safetensors": WEIGHTS})
    code, record = admit("hf://acme/tiny-model@main", home)
    assert rules(record)["intake.namespace-reuse"] == "high"
    assert code == EXIT_BLOCK


def test_moved_tag_blocks(repo: HubRepo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    repo.tags["v1"] = repo.branches["main"][0]
    admit("hf://acme/tiny-model@v1", home)
    repo.tags["v1"] = repo.commit({"config.json": CONFIG, "model.safetensors": _weights(1.0)})
    code, record = admit("hf://acme/tiny-model@v1", home)
    assert record["artifact"]["reference"]["revision_kind"] == "tag"
    assert rules(record)["intake.namespace-reuse"] == "high"
    assert code == EXIT_BLOCK


def test_rewritten_history_blocks(repo: HubRepo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    admit("hf://acme/tiny-model@main", home)
    repo.branches["main"] = []  # a force push that replaces the branch's history
    repo.commit({"config.json": CONFIG, "model.safetensors": _weights(2.0)})
    _, record = admit("hf://acme/tiny-model@main", home)
    assert rules(record)["intake.namespace-reuse"] == "high"


def test_new_commit_on_branch_is_not_reuse(repo: HubRepo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    admit("hf://acme/tiny-model@main", home)
    repo.commit({"config.json": CONFIG, "model.safetensors": _weights(3.0)})
    _, record = admit("hf://acme/tiny-model@main", home)
    assert "intake.namespace-reuse" not in rules(record)


def test_tampered_download_detected(repo: HubRepo, tmp_path: Path) -> None:
    repo.served_override["config.json"] = json.dumps({"model_type": "other"}).encode()
    _, record = admit(f"hf://acme/tiny-model@{repo.branches['main'][0]}", tmp_path / "home")
    assert rules(record)["intake.digest-mismatch"] == "high"


def test_hostile_pickle_in_repository(hub: Hub, tmp_path: Path) -> None:
    hostile = hub.create("mallory/model")
    payload = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."
    commit = hostile.commit({"pytorch_model.bin": payload + pickle.dumps(b"pad" * 400)})
    code, record = admit(f"hf://mallory/model@{commit}", tmp_path / "home")
    assert code == EXIT_BLOCK
    assert "pytorch_model.bin" in {
        f["file"] for f in record["findings"] if f["rule"] == "pickle.unsafe-global"
    }


def test_unknown_repository_is_usage_error(hub: Hub, tmp_path: Path) -> None:
    code, _ = admit("hf://nobody/nothing@main", tmp_path / "home")
    assert code == EXIT_USAGE


def test_download_reused_from_intake(hub: Hub, repo: HubRepo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    commit = repo.branches["main"][0]
    admit(f"hf://acme/tiny-model@{commit}", home)
    downloads = [r for r in hub.requests if "/resolve/" in r]
    admit(f"hf://acme/tiny-model@{commit}", home)
    assert [r for r in hub.requests if "/resolve/" in r] == downloads
