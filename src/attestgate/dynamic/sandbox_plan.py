"""The sandbox's load plans: the loader runs for each format, the session plans and the limits."""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from attestgate.dynamic.interface import ArtifactFile, ArtifactInput
from attestgate.identify.formats import Format
from attestgate.scanners.interface import GiB, MiB

logger = logging.getLogger(__name__)

# The plug-in's name and version, as its signals and findings report them.
NAME = "sandbox"
VERSION = "1"

LOADER_LABELS = {
    "pickle": "pickle.load",
    "joblib": "joblib.load",
    "torch-weights-only": "torch.load(weights_only=True)",
    "torch-full": "torch.load(weights_only=False)",
    "torchscript": "torch.jit.load",
    "numpy": "numpy.load(allow_pickle=True)",
    "keras": "keras.models.load_model",
    "transformers": "transformers.AutoModel.from_pretrained",
    "package": "importlib.import_module",
}

FORMAT_LOADERS: Mapping[Format, tuple[str, ...]] = {
    Format.PICKLE: ("pickle",),
    Format.MAYBE_PICKLE: ("pickle",),
    Format.PYTORCH_ZIP: ("torch-weights-only", "torch-full"),
    Format.PYTORCH_LEGACY: ("torch-weights-only", "torch-full"),
    Format.TORCHSCRIPT: ("torchscript",),
    Format.NUMPY: ("numpy",),
    Format.NUMPY_NPZ: ("numpy",),
    Format.KERAS: ("keras",),
    Format.HDF5: ("keras",),
    Format.WHEEL: ("package",),
}
LOADABLE_FORMATS = frozenset(FORMAT_LOADERS) | {Format.PYTHON}

# Bytes read from a pickle's start to tell a joblib file from a plain pickle.
JOBLIB_SNIFF_BYTES = 64 * 1024
# A torch zip member that contains one storage: "<archive>/data/<key>".
TORCH_DATA_MEMBER = re.compile(r"^[^/]+/data/\d+$")


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds for the sandbox plug-in.

    ``run_seconds`` is the wall-clock time one loader run may take, and
    ``setup_seconds`` the time to start the interpreter and import the
    loaders (importing torch alone takes seconds). ``cpu_seconds``,
    ``memory_base_bytes`` plus ``memory_per_file_byte`` times the file's
    size, ``file_size_bytes``, ``processes`` and ``open_files`` become the
    child's resource limits. The stream bounds are ``max_message_bytes``
    (PIPE_BUF, so that writes stay atomic) and ``max_messages`` per session.
    """

    run_seconds: float = 120.0
    setup_seconds: float = 120.0
    hello_seconds: float = 30.0
    cpu_seconds: int = 300
    memory_base_bytes: int = 4 * GiB
    memory_per_file_byte: int = 2
    file_size_bytes: int = 1 * GiB
    processes: int = 64
    open_files: int = 256
    max_message_bytes: int = 4096
    max_messages: int = 20_000
    max_output_bytes: int = 8192
    max_files: int = 64
    max_staged_files: int = 2_000
    max_staged_bytes: int = 64 * MiB
    max_digest_file_bytes: int = 16 * GiB
    max_storages: int = 100_000


@dataclass
class SessionPlan:
    """One sandbox session: the file (or directory) it loads and the loader runs."""

    file: str  # where signals are attributed, relative to the artifact root
    target: Path
    loaders: tuple[str, ...]
    format: Format
    size: int
    is_dir: bool = False
    staged: list[ArtifactFile] = field(default_factory=list)


def plan_sessions(artifact: ArtifactInput, limits: SandboxLimits) -> list[SessionPlan]:
    """Choose the sessions and loader runs for ``artifact`` from its files' formats."""
    plans: list[SessionPlan] = []
    python_files: list[ArtifactFile] = []
    for file in sorted(artifact.files, key=lambda f: f.path):
        if file.format is Format.PYTHON:
            python_files.append(file)
            continue
        loaders = FORMAT_LOADERS.get(file.format)
        if not loaders:
            continue
        if loaders == ("pickle",) and _looks_like_joblib(file.location):
            loaders = ("joblib",)
        plans.append(SessionPlan(file.path, file.location, loaders, file.format, file.size))
    if python_files:
        where = artifact.name if artifact.kind == "directory" else python_files[0].path
        size = sum(f.size for f in python_files)
        plans.append(
            SessionPlan(where, artifact.path, ("package",), Format.PYTHON, size, True, python_files)
        )
    has_config = any(f.path == "config.json" for f in artifact.files)
    if artifact.kind == "directory" and has_config and plans:
        plans.append(
            SessionPlan(
                artifact.name,
                artifact.path,
                ("transformers",),
                Format.JSON,
                artifact_size(artifact),
                True,
            )
        )
    return plans


def artifact_size(artifact: ArtifactInput) -> int:
    return sum(f.size for f in artifact.files)


def _looks_like_joblib(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(JOBLIB_SNIFF_BYTES)
    except OSError:
        return False
    return b"joblib.numpy_pickle" in head or b"joblib.numpy_pickle_compat" in head


def torch_zip_digests(path: Path, limits: SandboxLimits) -> set[str] | None:
    """Return the SHA-256 of every stored tensor member of a PyTorch zip checkpoint.

    Returns None when the file is too large, not a readable zip, has too many
    members, or stores a tensor member compressed, since the comparison
    would then be incomplete.
    """
    try:
        if path.stat().st_size > limits.max_digest_file_bytes:
            return None
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > limits.max_storages:
                return None
            digests = set()
            for info in infos:
                if not TORCH_DATA_MEMBER.match(info.filename):
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    return None
                sha = hashlib.sha256()
                with archive.open(info) as member:
                    while chunk := member.read(1 << 20):
                        sha.update(chunk)
                digests.add(sha.hexdigest())
            return digests
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        logger.debug("tensor digests of %s not computed: %s", path, exc)
        return None
