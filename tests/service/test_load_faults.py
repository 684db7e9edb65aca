"""Load and crash tests against a real server process on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import free_port, make_tokens, start_server

from attestgate.audit import AuditLog

CLIENTS = 16
ADMISSIONS = 200


def _submit_and_wait(base: str, token: str, name: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        job = client.post("/admissions", json={"path": name, "stage": "training"}).json()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = client.get(f"/admissions/{job['id']}").json()
            if job["status"] in ("done", "failed"):
                return dict(job)
            time.sleep(0.05)
    raise AssertionError(f"admission of {name} did not finish: {job}")


@pytest.mark.slow
def test_concurrent_admissions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    intake = tmp_path / "intake"
    intake.mkdir()
    for i in range(ADMISSIONS):
        (intake / f"m{i:03d}.bin").write_bytes(i.to_bytes(4, "big") * 256)
    tokens = make_tokens(home)
    port = free_port()
    server = start_server(home, intake, port)
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            jobs = list(
                pool.map(
                    lambda i: _submit_and_wait(
                        f"http://127.0.0.1:{port}", tokens["submitter"], f"m{i:03d}.bin"
                    ),
                    range(ADMISSIONS),
                )
            )
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{ADMISSIONS} admissions from {CLIENTS} clients in {elapsed:.1f} s")

    assert [j["status"] for j in jobs] == ["done"] * ADMISSIONS
    log = AuditLog(home)
    try:
        records = log.records()
        assert log.verify().ok
    finally:
        log.close()
    decisions = [r for r in records if r.kind == "decision"]
    promotions = [r for r in records if r.kind == "promotion"]
    assert len(decisions) == ADMISSIONS
    assert sorted(r.record_id for r in decisions) == sorted(j["record_id"] for j in jobs)
    assert len({r.artifact_digest for r in promotions}) == ADMISSIONS
    assert len(promotions) == ADMISSIONS


def _store_problems(home: Path) -> list[str]:
    """Return every entry that is incomplete or lacks a promotion audit record."""
    problems = []
    log = AuditLog(home)
    try:
        promoted = {
            (r.body.get("store"), r.artifact_digest) for r in log.records() if r.kind == "promotion"
        }
        if not log.verify().ok:
            problems.append("audit chain does not verify")
    finally:
        log.close()
    for store in ("trusted", "quarantine"):
        root = home / "store" / store / "sha256"
        if not root.is_dir():
            continue
        for entry in (e for prefix in root.iterdir() for e in prefix.iterdir()):
            manifest = json.loads((entry / "manifest.json").read_text())
            for item in manifest["files"]:
                data = (entry / "artifact" / item["path"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != item["sha256"]:
                    problems.append(f"{entry} has a partial file {item['path']}")
            if (store, f"sha256:{entry.name}") not in promoted:
                problems.append(f"{entry} has no promotion audit record")
    return problems


@pytest.mark.slow
def test_kill_during_promotion(tmp_path: Path) -> None:
    home = tmp_path / "home"
    intake = tmp_path / "intake"
    intake.mkdir()
    # Large enough that copying it into the store takes a noticeable time.
    (intake / "big.bin").write_bytes(os.urandom(1024) * (96 * 1024))
    tokens = make_tokens(home)
    port = free_port()
    server = start_server(home, intake, port)
    staging = home / "store" / ".tmp"
    seen_staging = False
    try:
        headers = {"Authorization": f"Bearer {tokens['submitter']}"}
        response = httpx.post(
            f"http://127.0.0.1:{port}/admissions", json={"path": "big.bin"}, headers=headers
        )
        job_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if staging.is_dir() and any(staging.iterdir()):
                seen_staging = True
                break
            time.sleep(0.002)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert seen_staging, "the promotion never started, so the kill did not hit it"
    assert _store_problems(home) == []

    server = start_server(home, intake, port)
    try:
        assert not any(staging.iterdir())
        job = httpx.get(f"http://127.0.0.1:{port}/admissions/{job_id}", headers=headers).json()
        assert job["status"] in ("failed", "done")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert _store_problems(home) == []
