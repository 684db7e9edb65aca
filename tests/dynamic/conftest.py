"""Fixtures for the dynamic-evidence tests: isolation check, canaries and admissions."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestgate.dynamic.sandbox_isolation import IsolationUnavailable, check_isolation
from attestgate.pipeline import admit


@pytest.fixture(scope="session")
def isolation() -> None:
    """Skip the test when this host cannot create the sandbox's namespaces."""
    try:
        check_isolation()
    except IsolationUnavailable as exc:
        pytest.skip(f"sandbox isolation is unavailable here: {exc}")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 that payloads try to reach; it must see no connection."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A directory only the gate's user can enter, for markers and fake credentials."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    return folder


def admit_with_sandbox(path: Path, home: Path, **kwargs: Any) -> dict[str, Any]:
    admission = admit(path, home=home, dynamic=["sandbox"], **kwargs)
    return admission.record


def signals(record: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return list(record.get("dynamic", {}).get("signals", {}).get(kind, []))


def reason_actions(record: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["action"] for r in record["reasons"]}


def sandbox_pids(uid_floor: int) -> list[int]:
    """Return the processes whose real uid is in the sandbox's uid range."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
        if uid >= uid_floor:
            pids.append(int(entry))
    return pids
