from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attestgate.audit import AuditLog
from attestgate.pipeline import admit
from attestgate.policy import Policy
from attestgate.stores import ContentStore, StoreError, act_on_admission, fsck, promote
from attestgate.stores import local as store_local


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _kinds(home: Path) -> list[str]:
    log = AuditLog(home)
    try:
        return [r.kind for r in log.records()]
    finally:
        log.close()


def test_allow_goes_to_trusted(tmp_path: Path, model: Path, permissive: Policy) -> None:
    home = tmp_path / "home"
    admission = admit(model, stage="training", policy=permissive, home=home)
    promotion = act_on_admission(home, admission.record)
    assert promotion is not None
    assert promotion.store == "trusted"
    stored = promotion.path / "artifact" / "model.bin"
    assert stored.read_bytes() == model.read_bytes()
    assert not (promotion.path / "record.json").exists()
    assert _kinds(home) == ["decision", "promotion"]


def test_quarantine_keeps_record(tmp_path: Path, model_dir: Path) -> None:
    home = tmp_path / "home"
    admission = admit(model_dir, stage="deployment", home=home)
    promotion = act_on_admission(home, admission.record)
    assert promotion is not None
    assert promotion.store == "quarantine"
    assert (promotion.path / "artifact" / "sub" / "notes.txt").read_text() == "notes\n"
    record = json.loads((promotion.path / "record.json").read_text())
    assert record["id"] == admission.record["id"]


def test_block_stores_nothing(tmp_path: Path, malicious: Path) -> None:
    home = tmp_path / "home"
    admission = admit(malicious, stage="deployment", home=home)
    assert admission.action == "block"
    assert act_on_admission(home, admission.record) is None
    assert not (home / "store" / "trusted").exists()
    assert _kinds(home) == ["decision"]


def test_changed_after_scan_rejected(tmp_path: Path, model: Path, permissive: Policy) -> None:
    home = tmp_path / "home"
    admission = admit(model, stage="training", policy=permissive, home=home)
    model.write_bytes(b"swapped after the scan")
    with pytest.raises(StoreError, match="changed after it was scanned"):
        act_on_admission(home, admission.record)
    assert list(ContentStore(home, "trusted").digests()) == []
    assert list((home / "store" / ".tmp").iterdir()) == []
    assert _kinds(home) == ["decision"]


def test_second_promotion_reuses_entry(tmp_path: Path, model: Path, permissive: Policy) -> None:
    home = tmp_path / "home"
    first = act_on_admission(
        home, admit(model, stage="training", policy=permissive, home=home).record
    )
    second = act_on_admission(
        home, admit(model, stage="training", policy=permissive, home=home).record
    )
    assert first is not None and first.created
    assert second is not None
    assert not second.created
    assert _kinds(home).count("promotion") == 2


def test_crash_before_publish(
    tmp_path: Path, model: Path, permissive: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    record = admit(model, stage="training", policy=permissive, home=home).record

    def crash(self: ContentStore, work: Path, digest: str) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(ContentStore, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        promote(home, record, "trusted")
    monkeypatch.undo()
    assert list(ContentStore(home, "trusted").digests()) == []
    assert _kinds(home) == ["decision", "promotion"]
    staging = home / "store" / ".tmp"
    assert fsck(home) == []
    (left,) = staging.iterdir()
    left.rename(staging / f"trusted-{_dead_pid()}-0")
    assert len(fsck(home)) == 1
    assert list(staging.iterdir()) == []


def test_crash_during_copy(
    tmp_path: Path, model_dir: Path, permissive: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    record = admit(model_dir, stage="training", policy=permissive, home=home).record
    monkeypatch.setattr(store_local, "COPY_CHUNK", 7)
    calls = {"n": 0}
    original = store_local.copy_hashed

    def failing(source: Path, target: Path, expected: store_local.ManifestFile) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        original(source, target, expected)

    monkeypatch.setattr(store_local, "copy_hashed", failing)
    with pytest.raises(OSError):
        promote(home, record, "trusted")
    assert list(ContentStore(home, "trusted").digests()) == []
    assert list((home / "store" / ".tmp").iterdir()) == []
    assert _kinds(home) == ["decision"]


def test_damaged_manifest_rejected(tmp_path: Path, model_dir: Path, permissive: Policy) -> None:
    home = tmp_path / "home"
    record = admit(model_dir, stage="training", policy=permissive, home=home).record
    record["artifact"]["files"][0]["path"] = "../escape"
    with pytest.raises(StoreError):
        promote(home, record, "trusted")
    assert list(ContentStore(home, "trusted").digests()) == []


def test_symlinked_file_copied(tmp_path: Path, model_dir: Path, permissive: Policy) -> None:
    home = tmp_path / "home"
    (model_dir / "alias.bin").symlink_to(model_dir / "weights.bin")
    record = admit(model_dir, stage="training", policy=permissive, home=home).record
    paths = [f["path"] for f in record["artifact"]["files"]]
    promotion = promote(home, record, "trusted")
    for path in paths:
        stored = promotion.path / "artifact" / path
        assert not stored.is_symlink()
        assert stored.read_bytes() == (model_dir / path).read_bytes()


def test_fifo_swap_rejected(tmp_path: Path, model_dir: Path, permissive: Policy) -> None:
    home = tmp_path / "home"
    record = admit(model_dir, stage="training", policy=permissive, home=home).record
    (model_dir / "weights.bin").unlink()
    os.mkfifo(model_dir / "weights.bin")
    with pytest.raises(StoreError, match="no longer a regular file"):
        promote(home, record, "trusted")
