"""Wheels, static PEP 503 package indexes, and a local server that serves them.

A static index is a folder::

    simple/index.html               one <a> per project
    simple/<project>/index.html     one <a> per file, with #sha256=<hex>
    packages/<wheel files>

:func:`serve_index` serves such a folder over HTTP on 127.0.0.1 with a port
the kernel picks, from a thread of this process, and stops it on exit.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import html
import http.server
import logging
import socketserver
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestgate.deps.model import normalize_name
from attestgate.evaluation.corpus.archives import write_zip

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
FETCH_TIMEOUT = 10.0
MAX_PAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Wheel:
    """A wheel file written by :func:`write_wheel`."""

    path: Path
    project: str
    version: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_wheel(
    folder: Path,
    project: str,
    version: str,
    files: Mapping[str, bytes],
    *,
    summary: str = "",
) -> Wheel:
    """Write a pure-Python wheel with METADATA, WHEEL and a RECORD that matches ``files``."""
    distribution = normalize_name(project).replace("-", "_")
    dist_info = f"{distribution}-{version}.dist-info"
    members = dict(files)
    members[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
        f"Summary: {summary or project}\n"
    ).encode()
    members[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: attestgate-corpus\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    rows = [f"{name},{_record_hash(data)},{len(data)}" for name, data in members.items()]
    rows.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(rows) + "\n").encode()
    path = write_zip(folder / f"{distribution}-{version}-py3-none-any.whl", members)
    return Wheel(path, normalize_name(project), version)


def write_simple_index(folder: Path, wheels: list[Wheel]) -> Path:
    """Write the PEP 503 pages for ``wheels``, which must sit in ``folder/packages``."""
    projects: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        if wheel.path.parent != folder / "packages":
            raise ValueError(f"{wheel.path} is not in {folder / 'packages'}")
        projects.setdefault(wheel.project, []).append(wheel)

    simple = folder / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    links = "".join(
        f'    <a href="{html.escape(name)}/">{html.escape(name)}</a>\n' for name in sorted(projects)
    )
    (simple / "index.html").write_text(_page("Simple index", links), encoding="utf-8")
    for name, files in projects.items():
        page = simple / name
        page.mkdir(exist_ok=True)
        anchors = "".join(
            f'    <a href="../../packages/{html.escape(w.path.name)}#sha256={w.sha256}">'
            f"{html.escape(w.path.name)}</a>\n"
            for w in sorted(files, key=lambda w: w.path.name)
        )
        (page / "index.html").write_text(_page(f"Links for {name}", anchors), encoding="utf-8")
    return simple


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"{body}  </body>\n</html>\n"
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("index server: " + format, *args)


class _LoopbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up with socket.getfqdn,
        # which can wait on DNS; the server only needs its numeric address.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


@dataclass(frozen=True)
class ServedIndex:
    """A running index server: its URL and the address it is bound to."""

    url: str
    address: tuple[str, int]
    server: _LoopbackServer

    @property
    def simple(self) -> str:
        return f"{self.url}/simple/"


@contextlib.contextmanager
def serve_index(folder: Path) -> Iterator[ServedIndex]:
    """Serve ``folder`` on 127.0.0.1 and an ephemeral port until the block ends."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _LoopbackServer((LOOPBACK, 0), handler)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"corpus-index-{port}",
        daemon=True,
    )
    thread.start()
    logger.debug("serving %s on http://%s:%d", folder, host, port)
    try:
        yield ServedIndex(f"http://{host}:{port}", (host, port), server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=FETCH_TIMEOUT)
        logger.debug("stopped the index server for %s", folder)


def fetch(url: str) -> bytes:
    """Fetch ``url`` from a local index server, ignoring any proxy settings."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"the corpus fetches only from its own servers on {LOOPBACK}, not {url}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=FETCH_TIMEOUT) as response:
        data: bytes = response.read(MAX_PAGE_BYTES + 1)
    if len(data) > MAX_PAGE_BYTES:
        raise ValueError(f"{url} returned more than {MAX_PAGE_BYTES} bytes")
    return data
