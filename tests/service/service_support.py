"""Helpers for the service tests: tokens, intake files, a server process and a client."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from attestgate.service.tokens import TokenStore


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


@dataclass
class Env:
    home: Path
    intake: Path
    client: TestClient
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def wait(self, job_id: str, role: str = "submitter", timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.client.get(
                f"/admissions/{job_id}", headers=self.auth(role)
            ).json()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"admission {job_id} did not finish in {timeout} s")

    def admit(self, name: str, role: str = "submitter") -> dict[str, Any]:
        response = self.client.post(
            "/admissions", json={"path": name, "stage": "deployment"}, headers=self.auth(role)
        )
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"], role)


def make_tokens(home: Path) -> dict[str, str]:
    store = TokenStore.open(home)
    try:
        return {
            role: store.create(f"test {role}", role)[1]
            for role in ("submitter", "reviewer", "admin")
        }
    finally:
        store.close()


def write_intake(intake: Path) -> None:
    intake.mkdir(parents=True, exist_ok=True)
    (intake / "model.bin").write_bytes(b"\x00" * 1000 + b"weights")
    (intake / "evil.pkl").write_bytes(pickle.dumps(_Payload()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(home: Path, intake: Path, port: int) -> subprocess.Popen[bytes]:
    """Start ``attestgate serve`` and wait until /healthz responds."""
    command = [
        sys.executable,
        "-c",
        "from attestgate.cli.main import run; run()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--home",
        str(home),
        "--intake",
        str(intake),
    ]
    # The child keeps its own copy of the descriptor after the parent closes it.
    with open(home / "server.log", "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError(f"server did not start: {(home / 'server.log').read_text()}")
