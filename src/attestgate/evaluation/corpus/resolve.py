"""Ask pip which file it would download from the corpus's local indexes.

``pip download --no-deps --only-binary=:all:`` fetches a wheel and runs none
of its code, so it shows which index wins for a requirement without
installing anything. pip runs isolated from the user's configuration, with
no proxy, against the local servers only.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PIP_TIMEOUT = 60.0
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def _environment() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in _PROXY_VARIABLES and not name.startswith("PIP_")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def pip_resolve(requirement: str, index_urls: Sequence[str]) -> dict[str, Any]:
    """Return the file pip downloads for ``requirement`` from ``index_urls`` (first = --index-url).

    The result has ``resolved`` (a file name, or None) and ``error`` (None,
    or pip's last output line); pip failing is a result, not an exception.
    """
    options = ["--index-url", index_urls[0]]
    for url in index_urls[1:]:
        options += ["--extra-index-url", url]
    with tempfile.TemporaryDirectory(prefix="attestgate-pip-") as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--isolated",
            "--no-deps",
            "--only-binary=:all:",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--retries",
            "0",
            "--timeout",
            "10",
            "--dest",
            scratch,
            *options,
            requirement,
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                check=False,
                env=_environment(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("pip could not run to resolve %s: %s", requirement, exc)
            return {"resolved": None, "error": str(exc)}
        files = sorted(path.name for path in Path(scratch).iterdir())
    if done.returncode != 0 or len(files) != 1:
        lines = (done.stderr or done.stdout).strip().splitlines()
        error = lines[-1] if lines else f"pip exited with status {done.returncode}"
        logger.warning("pip could not resolve %s: %s", requirement, error)
        return {"resolved": None, "error": error}
    return {"resolved": files[0], "error": None}
