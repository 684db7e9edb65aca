"""Keys and signed evidence for the corpus, made with the gate's own producers.

The corpus has two parties. The *producer* is the organisation's release
pipeline, whose public keys the corpus policy trusts. The *outsider* is an
attacker with keys of their own, which nothing trusts. Each party has an
Ed25519 key for in-toto statements (DSSE envelopes) and an ECDSA P-256 key
for OpenSSF Model Signing signatures, because model-signing signs with ECDSA
keys only.

Keys are derived from fixed seeds, so every build writes the same key files.
Ed25519 signatures are deterministic; ECDSA signatures, and so the
``model.sig`` files, differ from build to build. The private keys are
throwaway keys for this corpus and nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attestgate.evidence.collect import artifact_digest
from attestgate.evidence.intoto import statement_json
from attestgate.evidence.produce import sign_model, sign_statement
from attestgate.evidence.training import TrainingInputs, build_training_predicate

SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
TRAINING_CLAIMS_V1 = "https://attestgate.dev/training-claims/v1"
BUILDER_ID = "https://ci.acme.example/builders/ml-release@v1"
BUILD_TYPE = "https://ci.acme.example/build-types/ml-release@v1"
SOURCE_REPOSITORY = "git+https://git.acme.example/ml/release"
SOURCE_COMMIT = "4d7a1c0e9b8f6a5d3c2b1a0f9e8d7c6b5a4f3e2d"
STARTED_ON = "2024-01-01T00:00:00Z"
FINISHED_ON = "2024-01-01T00:10:00Z"

# Order of the P-256 group: a derived scalar must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class KeyPair:
    """A private key file and its public key file."""

    private: Path
    public: Path


@dataclass(frozen=True)
class CorpusKeys:
    """The producer's trusted keys and the outsider's untrusted ones."""

    producer: KeyPair
    producer_model: KeyPair
    outsider: KeyPair
    outsider_model: KeyPair

    @property
    def trusted(self) -> tuple[Path, ...]:
        return (self.producer.public, self.producer_model.public)


def _seed(name: str) -> bytes:
    return hashlib.sha256(f"attestgate-corpus/{name}".encode()).digest()


def _write_pair(
    folder: Path, name: str, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
) -> KeyPair:
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
    return KeyPair(private, public)


def _ed25519(name: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(_seed(name))


def _p256(name: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(_seed(name), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def write_keys(folder: Path) -> CorpusKeys:
    """Write the corpus key pairs into ``folder`` and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return CorpusKeys(
        producer=_write_pair(folder, "producer", _ed25519("producer")),
        producer_model=_write_pair(folder, "producer-model", _p256("producer-model")),
        outsider=_write_pair(folder, "outsider", _ed25519("outsider")),
        outsider_model=_write_pair(folder, "outsider-model", _p256("outsider-model")),
    )


def slsa_statement(name: str, sha256: str, *, invocation: str) -> dict[str, Any]:
    """Return an in-toto statement with SLSA Provenance v1 from the producer's builder."""
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": {"uri": SOURCE_REPOSITORY, "digest": {"gitCommit": SOURCE_COMMIT}},
                "target": name,
            },
            "resolvedDependencies": [
                {
                    "uri": f"{SOURCE_REPOSITORY}@refs/heads/main",
                    "digest": {"gitCommit": SOURCE_COMMIT},
                }
            ],
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID},
            "metadata": {
                "invocationId": invocation,
                "startedOn": STARTED_ON,
                "finishedOn": FINISHED_ON,
            },
        },
    }
    subject = [{"name": name, "digest": {"sha256": sha256}}]
    return statement_json(subject, SLSA_PROVENANCE_V1, predicate)


def training_statement(
    name: str,
    sha256: str,
    *,
    datasets: Sequence[dict[str, Any]],
    hyperparameters: dict[str, Any],
    training_config: dict[str, Any],
    log: dict[str, Any],
) -> dict[str, Any]:
    """Return an in-toto statement with complete training claims for ``sha256``."""
    inputs = TrainingInputs(
        datasets=list(datasets),
        sampling_policy="every row of the training split, shuffled with the recorded seed",
        repository=SOURCE_REPOSITORY,
        commit=SOURCE_COMMIT,
        dirty=False,
        training_configs=[training_config],
        lock_files=[
            {"name": "uv.lock", "digest": {"sha256": hashlib.sha256(b"uv.lock").hexdigest()}}
        ],
        python="3.11",
        platform="Linux",
        libraries={"torch": "2.13.0"},
        hyperparameters=hyperparameters,
        accelerator="cpu",
        driver_version="none",
        toolchain_version="python 3.11",
        invocation_id=f"{name}-training",
        started_on=STARTED_ON,
        finished_on=FINISHED_ON,
        log=log,
        outputs=[{"name": name, "digest": {"sha256": sha256}}],
        builder_id=BUILDER_ID,
    )
    subject = [{"name": name, "digest": {"sha256": sha256}}]
    return statement_json(subject, TRAINING_CLAIMS_V1, build_training_predicate(inputs))


def write_statements(path: Path, statements: Sequence[dict[str, Any]], key: Path | None) -> Path:
    """Write statements as JSON Lines: DSSE envelopes signed with ``key``, or bare when None."""
    from attestgate.evidence.dsse import encode_json

    lines = [
        sign_statement(statement, key=key) if key is not None else encode_json(statement).decode()
        for statement in statements
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_provenance(artifact: Path, target: Path, key: Path, *, sha256: str | None = None) -> Path:
    """Write SLSA provenance for ``artifact`` (or for ``sha256`` instead) signed with ``key``."""
    digest = sha256 or artifact_digest(artifact)
    statement = slsa_statement(artifact.name, digest, invocation=f"release-{artifact.name}")
    return write_statements(target, [statement], key)


def sign_directory(model: Path, key: Path) -> Path:
    """Write ``model/model.sig`` with OpenSSF Model Signing and return its path."""
    return sign_model(model, key=key).path
