"""Fixtures for the evidence tests: keys, a small clean model, and inspections."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from safetensors.numpy import save_file

from attestgate.evidence import TrustConfig, verify_evidence
from attestgate.evidence.interface import EvidenceReport
from attestgate.pipeline import inspect

DATA = Path(__file__).resolve().parents[1] / "data"


def private_key(kind: str):
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


def write_keypair(folder: Path, kind: str, name: str = "key") -> tuple[Path, Path]:
    key = private_key(kind)
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture
def keypair(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    def make(kind: str = "p256", name: str = "key") -> tuple[Path, Path]:
        return write_keypair(tmp_path, kind, name)

    return make


def write_model(folder: Path) -> Path:
    """Write a small clean model: a safetensors file and a config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"w": np.arange(16, dtype=np.float32).reshape(4, 4)}, str(folder / "model.safetensors")
    )
    (folder / "config.json").write_text(
        json.dumps({"model_type": "tiny", "architectures": ["TinyModel"], "hidden_size": 4})
    )
    return folder


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


def check(
    path: Path,
    evidence: list[Path] | tuple[Path, ...] = (),
    trust: TrustConfig | None = None,
    discover: bool = False,
) -> EvidenceReport:
    """Inspect ``path`` and verify ``evidence`` for it."""
    inspection = inspect(path)
    return verify_evidence(
        inspection.artifact,
        inspection.findings,
        evidence=list(evidence),
        trust=trust,
        discover=discover,
    )


def rules(report: EvidenceReport) -> set[str]:
    return {f.rule for f in report.all_findings}
