"""Servers for the intake tests: a real OCI registry and a small Hugging Face hub, both on 127.0.0.1.

The registry is Debian's ``docker-registry`` package (the CNCF distribution
registry), started once per session with filesystem storage in a temporary
folder. The hub is an ``http.server`` that serves the paths huggingface_hub
1.x requests in ``snapshot_download`` and ``HfApi`` (revision info, tree
listing, file resolution, refs and commit history) for repositories kept in
memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"docker-registry did not answer on {url}:\n{log.read_text()}")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a distribution registry on 127.0.0.1 and return its HOST:PORT."""
    binary = shutil.which("docker-registry") or REGISTRY_BINARY
    if not os.access(binary, os.X_OK):
        pytest.skip(
            "docker-registry is not installed; install Debian's docker-registry package "
            "(apt-get install -y docker-registry, as .ci/run does) to run the registry tests"
        )
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: attestgate-tests\n"
    )
    log = folder / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=out)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/v2/", process, log)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# Files at least this large are listed as LFS files, as the hub does for model weights.
LFS_THRESHOLD = 1024


@dataclass
class HubRepo:
    """One repository: its id, author, commits (files by path) and refs."""

    repo_id: str
    object_id: str
    author: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, list[str]] = field(default_factory=dict)  # newest commit first
    tags: dict[str, str] = field(default_factory=dict)
    # Bytes served in place of a file's real content, to fake a tampering hub.
    served_override: dict[str, bytes] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        sha = hashlib.sha1(
            json.dumps(
                {
                    "parent": (self.branches.get(branch) or [""])[0],
                    "files": sorted(files),
                    "n": len(self.commits),
                }
            ).encode(),
            usedforsecurity=False,
        ).hexdigest()
        self.commits[sha] = dict(files)
        self.branches.setdefault(branch, []).insert(0, sha)
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        if revision in self.branches:
            return self.branches[revision][0]
        return self.tags.get(revision)

    def history(self, commit: str) -> list[str]:
        for commits in self.branches.values():
            if commit in commits:
                return commits[commits.index(commit) :]
        return [commit]


class Hub:
    """The hub's state; tests add and change repositories while the server runs."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[str] = []

    def create(
        self, repo_id: str, author: str | None = None, object_id: str | None = None
    ) -> HubRepo:
        repo = HubRepo(
            repo_id,
            object_id or hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            author or repo_id.split("/", maxsplit=1)[0],
        )
        self.repos[repo_id] = repo
        return repo


class _HubHandler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _json(
        self, value: object, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, item in (headers or {}).items():
            self.send_header(key, item)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, code: str) -> None:
        self._json({"error": code}, 404, {"X-Error-Code": code})

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append(f"{self.command} {path}")
        if path.startswith("/api/models/"):
            self._api(path.removeprefix("/api/models/"))
            return
        parts = path.lstrip("/").split("/", 4)
        if len(parts) == 5 and parts[2] == "resolve":
            self._resolve("/".join(parts[:2]), parts[3], parts[4], body)
            return
        self._error("RepoNotFound")

    def _api(self, rest: str) -> None:
        parts = rest.split("/", 3)
        repo = self.hub.repos.get("/".join(parts[:2]))
        if repo is None:
            self._error("RepoNotFound")
            return
        action = parts[2] if len(parts) > 2 else ""
        argument = parts[3] if len(parts) > 3 else ""
        if action == "refs":
            self._json(
                {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c[0]}
                        for n, c in repo.branches.items()
                    ],
                    "tags": [
                        {"name": n, "ref": f"refs/tags/{n}", "targetCommit": c}
                        for n, c in repo.tags.items()
                    ],
                    "converts": [],
                }
            )
            return
        commit = repo.resolve(argument)
        if commit is None:
            self._error("RevisionNotFound")
            return
        files = repo.commits[commit]
        if action == "revision":
            self._json(
                {
                    "_id": repo.object_id,
                    "id": repo.repo_id,
                    "author": repo.author,
                    "sha": commit,
                    "private": False,
                    "siblings": [{"rfilename": name} for name in sorted(files)],
                }
            )
        elif action == "tree":
            self._json([_tree_entry(name, data) for name, data in sorted(files.items())])
        elif action == "commits":
            self._json(
                [
                    {
                        "id": c,
                        "title": "update",
                        "message": "",
                        "authors": [{"user": repo.author}],
                        "date": "2024-01-01T00:00:00.000Z",
                    }
                    for c in repo.history(commit)
                ]
            )
        else:
            self._error("RepoNotFound")

    def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        commit = repo.resolve(revision) if repo else None
        if repo is None or commit is None or name not in repo.commits[commit]:
            self._error("EntryNotFound")
            return
        data = repo.commits[commit][name]
        etag = hashlib.sha256(data).hexdigest() if len(data) >= LFS_THRESHOLD else git_oid(data)
        served = repo.served_override.get(name, data)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(served)))
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if body:
            self.wfile.write(served)


def _tree_entry(name: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": "file",
        "path": name,
        "size": len(data),
        "oid": git_oid(data),
    }
    if len(data) >= LFS_THRESHOLD:
        entry["lfs"] = {
            "oid": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "pointerSize": 134,
        }
    return entry


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    """Serve a fresh hub on 127.0.0.1 and point huggingface_hub at it through HF_ENDPOINT."""
    state = Hub()
    handler = type("Handler", (_HubHandler,), {"hub": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
