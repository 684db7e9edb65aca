"""Collection of the facts a training run can see about itself, for ``attest training``.

Everything here reads files, package metadata and the output of ``git`` and
``nvidia-smi``; nothing imports the training libraries themselves.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from attestgate.evidence.interface import EvidenceError

logger = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
COMMAND_TIMEOUT = 20.0
# Libraries whose versions shape a training run's result, by distribution name.
CRITICAL_LIBRARIES = (
    "torch",
    "torchvision",
    "numpy",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "datasets",
    "peft",
    "trl",
    "deepspeed",
    "bitsandbytes",
    "xformers",
    "flash-attn",
    "triton",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "tensorflow",
    "keras",
    "scikit-learn",
    "sentencepiece",
    "onnx",
    "onnxruntime",
)
TOOLCHAIN_LIBRARIES = (
    "nvidia-cuda-runtime-cu12",
    "nvidia-cuda-runtime-cu11",
    "nvidia-cudnn-cu12",
    "nvidia-cudnn-cu11",
    "nvidia-nccl-cu12",
    "triton",
    "torch",
)
LOCK_FILE_PATTERNS = (
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "pylock.toml",
    "pylock.*.toml",
    "requirements*.txt",
    "environment.yml",
    "environment.yaml",
    "conda-lock.yml",
)


def file_digest(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise EvidenceError(
            f"{path} could not be read: {exc.strerror or exc}", hint="check the path"
        ) from exc
    return digest.hexdigest()


def artifact_digest(path: Path) -> str:
    """Return the artifact digest as the gate computes it: SHA-256 of a file, or the
    OpenSSF Model Signing root digest of a directory (signature files and VCS metadata left out)."""
    from attestgate.identify.walk import walk

    if path.is_file():
        return file_digest(path)
    listing = walk(path)
    outer = hashlib.sha256()
    for entry in sorted(listing.entries, key=lambda e: e.path):
        outer.update(bytes.fromhex(file_digest(entry.location)))
    return outer.hexdigest()


def named_digest(path: Path, name: str = "") -> dict[str, Any]:
    """Return an in-toto resource descriptor with the name and SHA-256 digest of ``path``."""
    return {"name": name or path.name, "digest": {"sha256": artifact_digest(path)}}


def _run(args: list[str], cwd: Path | None = None) -> str:
    executable = shutil.which(args[0])
    if executable is None:
        return ""
    try:
        done = subprocess.run(
            [executable, *args[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("%s failed: %s", args[0], exc)
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_state(repository: Path) -> tuple[str, str, bool | None]:
    """Return the remote URL (as a git+ URI), the commit and whether the tree is dirty."""
    commit = _run(["git", "-C", str(repository), "rev-parse", "HEAD"])
    if not commit:
        return "", "", None
    url = _run(["git", "-C", str(repository), "config", "--get", "remote.origin.url"])
    status = _run(["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no"])
    if url and not url.startswith("git+") and "://" in url:
        url = "git+" + url
    return url or f"git+file://{repository.resolve()}", commit, bool(status)


def lock_files(repository: Path) -> list[Path]:
    """Return the dependency lock files at the top of ``repository``."""
    found: set[Path] = set()
    for pattern in LOCK_FILE_PATTERNS:
        found.update(p for p in repository.glob(pattern) if p.is_file())
    return sorted(found)


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def accelerator() -> tuple[str, int | None, str]:
    """Return the accelerator name, count and driver version this machine reports.

    Without an NVIDIA driver the run is taken to be on the CPU, and the
    operating system's kernel release is recorded as the driver.
    """
    driver_file = Path("/proc/driver/nvidia/version")
    names = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    gpus = [line.strip() for line in names.splitlines() if line.strip()]
    if gpus:
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        return gpus[0], len(gpus), driver.splitlines()[0].strip() if driver else ""
    if driver_file.is_file():
        try:
            return "nvidia", None, driver_file.read_text("utf-8", "replace").splitlines()[0]
        except (OSError, IndexError):
            pass
    return "cpu", os.cpu_count(), f"{platform.system()} {platform.release()}"


def toolchain() -> str:
    """Return the runtime stack on one line: CUDA, cuDNN, NCCL, Triton, torch and Python."""
    parts = [
        f"{name} {version}" for name, version in installed_versions(TOOLCHAIN_LIBRARIES).items()
    ]
    parts.append(f"python {platform.python_version()} ({platform.python_implementation()})")
    return "; ".join(parts)


def invocation_id() -> str:
    """Return the CI run URL from the environment of GitHub Actions or GitLab CI, if any."""
    env = os.environ
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        attempt = env.get("GITHUB_RUN_ATTEMPT", "1")
        return (
            f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
            f"/attempts/{attempt}"
        )
    return env.get("CI_JOB_URL", "")


def timestamp(value: str = "") -> str:
    """Return ``value`` (ISO 8601) normalized to UTC with a Z suffix, or now."""
    if not value:
        moment = datetime.now(UTC)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EvidenceError(
                f"time {value!r} is not ISO 8601",
                hint="write times like 2025-06-01T12:00:00Z",
            ) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
