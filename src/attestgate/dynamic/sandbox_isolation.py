"""Process isolation for the sandbox: namespaces, user, environment and resource limits.

The child runs under ``unshare`` (util-linux) in new network and PID
namespaces and under ``setpriv`` with no-new-privileges and an empty
capability bounding set:

- as root, the gate keeps its own user namespace and ``setpriv`` switches
  the child to a fresh unprivileged uid and gid with no supplementary
  groups, one per session, so that process limits and kills reach only that
  session's processes;
- otherwise the child gets a new user namespace (``unshare --user
  --map-root-user``), which unprivileged users can create where the kernel
  allows it.

When neither works the sandbox does not run at all: it never loads an
artifact without isolation.

NOTE: in user-namespace mode the child keeps the file access of the gate's
own user, so a payload can write wherever that user can (the writes are
recorded as file.write signals). A root gate's fresh uid can write only to
its scratch directory and to world-writable directories, which
:func:`remove_leftovers` clears after each session.
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Root mode picks the child's uid and gid from this range, which no
# distribution assigns to accounts (they stop below 2**31 - 2**16 by
# convention), so the uid owns nothing outside the session's scratch space.
SANDBOX_ID_BASE = 2_100_000_000
SANDBOX_ID_SPAN = 10_000_000

PROBE_TIMEOUT = 20.0

# World-writable directories where a root-mode child can leave files
# behind. They are only scanned for the session uid's files, never written.
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")  # noqa: S108

# Variables copied from the gate's environment because loaders read them
# and they carry no credentials.
PASSED_ENVIRONMENT = ("KERAS_BACKEND",)


class IsolationUnavailable(Exception):
    """The sandbox cannot isolate a child on this host, for the reason in the message."""


@dataclass(frozen=True)
class ResourceLimits:
    """Limits applied to every process of one sandbox session.

    ``cpu_seconds`` is CPU time per process (SIGXCPU at the limit, SIGKILL a
    second later). ``memory_bytes`` is address space per process
    (RLIMIT_AS). ``file_size_bytes`` caps the size of any file a process
    writes. ``processes`` counts processes and threads of the session's
    user. ``open_files`` caps descriptors per process.
    """

    cpu_seconds: int
    memory_bytes: int
    file_size_bytes: int
    processes: int
    open_files: int

    def preexec(self, with_process_limit: bool) -> Callable[[], None]:
        """Return the function that sets these limits in the forked child before exec."""

        def apply() -> None:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_bytes, self.file_size_bytes))
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
            if with_process_limit:
                resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))

        return apply


@dataclass(frozen=True)
class Isolation:
    """The command prefix that starts one session's child, and the identity the child runs as."""

    prefix: tuple[str, ...]
    # The uid and gid the child runs as in root mode; None in a user namespace.
    sandbox_id: int | None

    @property
    def mode(self) -> str:
        return "user-namespace" if self.sandbox_id is None else "root"


def _tools() -> tuple[str, str]:
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if unshare is None or setpriv is None:
        missing = "unshare" if unshare is None else "setpriv"
        raise IsolationUnavailable(
            f"{missing} (util-linux) was not found in /usr/bin, /bin, /usr/sbin or /sbin"
        )
    return unshare, setpriv


def build_isolation(sandbox_id: int | None = None) -> Isolation:
    """Return the isolation for one session: a fresh uid as root, a user namespace otherwise."""
    unshare, setpriv = _tools()
    namespaces = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    drop = [setpriv, "--nnp", "--pdeathsig", "KILL", "--inh-caps=-all", "--bounding-set=-all"]
    if os.geteuid() == 0:
        uid = sandbox_id if sandbox_id is not None else new_sandbox_id()
        drop += ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
        return Isolation((*namespaces, "--", *drop, "--"), uid)
    namespaces[1:1] = ["--user", "--map-root-user"]
    return Isolation((*namespaces, "--", *drop, "--"), None)


def new_sandbox_id() -> int:
    return SANDBOX_ID_BASE + secrets.randbelow(SANDBOX_ID_SPAN)


_probe_lock = threading.Lock()
_probe_result: dict[int, str] = {}


def check_isolation() -> None:
    """Raise :class:`IsolationUnavailable` unless an isolated interpreter starts here.

    The check runs the interpreter once under the isolation prefix and is
    remembered for the process's effective uid.
    """
    euid = os.geteuid()
    with _probe_lock:
        if euid not in _probe_result:
            _probe_result[euid] = _probe()
        error = _probe_result[euid]
    if error:
        raise IsolationUnavailable(error)


def _probe() -> str:
    try:
        isolation = build_isolation()
    except IsolationUnavailable as exc:
        return str(exc)
    argv = [*isolation.prefix, sys.executable, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd="/",
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"starting an isolated interpreter failed: {exc}"
    if done.returncode != 0:
        output = done.stderr.decode("utf-8", "replace").strip()[-400:]
        return (
            f"starting an isolated interpreter with {' '.join(isolation.prefix[:1])} "
            f"failed with exit status {done.returncode}: {output or '(no output)'}"
        )
    logger.debug("sandbox isolation works in %s mode", isolation.mode)
    return ""


def child_environment(scratch: Path) -> dict[str, str]:
    """Return the child's whole environment: no credentials and no PYTHON* variables."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Loader thread pools count against the process limit.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        # Hugging Face libraries must not reach for the hub from the sandbox.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name in PASSED_ENVIRONMENT:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def remove_leftovers(isolation: Isolation, keep: Path) -> list[str]:
    """Remove what a root-mode session's uid created in world-writable directories.

    The uid is unique to the session, so everything it owns there is the
    session's. ``keep`` (the scratch directory) is left for the caller.
    Returns the removed paths.
    """
    if isolation.sandbox_id is None:
        return []
    removed = []
    bases = {*WORLD_WRITABLE_DIRS, tempfile.gettempdir()}
    for base in sorted(bases):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            if Path(entry.path) == keep:
                continue
            try:
                owner = entry.stat(follow_symlinks=False).st_uid
                if owner != isolation.sandbox_id:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError as exc:
                logger.warning("could not remove %s left by the sandbox: %s", entry.path, exc)
                continue
            removed.append(entry.path)
    return removed


def prepare_scratch(scratch: Path, isolation: Isolation) -> None:
    """Create the scratch tree and hand it to the sandbox user in root mode."""
    for name in ("home", "tmp", "work"):
        (scratch / name).mkdir(mode=0o700)
    if isolation.sandbox_id is not None:
        for path in (scratch, scratch / "home", scratch / "tmp", scratch / "work"):
            os.chown(path, isolation.sandbox_id, isolation.sandbox_id)
