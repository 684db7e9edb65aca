"""Helpers for the policy tests: policies from text, evidence sections, keys and models."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from safetensors.numpy import save_file

from attestgate.cli.main import main
from attestgate.findings import Finding, Severity
from attestgate.policy import Policy, parse_policy

PROVENANCE = "https://slsa.dev/provenance/v1"
TRAINING = "https://attestgate.dev/training-claims/v1"
CYCLONEDX = "https://cyclonedx.org/bom"
TRAINING_CLAIMS = (
    "data-lineage",
    "code-lineage",
    "environment",
    "hyperparameters",
    "compute",
    "run-metadata",
)
RELEASE_CLAIMS = (
    "identity",
    "format-guarantees",
    "embedded-code",
    "static-scan",
    "evaluation",
    "deployment-requirements",
)
DIGEST = "ab" * 32
ARTIFACT = {
    "path": "/models/model",
    "kind": "directory",
    "digest": {"sha256": DIGEST},
    "size": 64,
    "files": [
        {
            "path": "model.safetensors",
            "size": 48,
            "digest": {"sha256": "0" * 64},
            "format": "safetensors",
        },
        {"path": "config.json", "size": 16, "digest": {"sha256": "1" * 64}, "format": "json"},
    ],
}


def policy_from(text: str, source: str = "test.yaml") -> Policy:
    return parse_policy(text.encode(), source)


def finding(rule: str, severity: Severity, file: str = "model") -> Finding:
    return Finding(
        rule, severity, file, f"{rule} happened", "fix it", check=rule.split(".", maxsplit=1)[0]
    )


def piece(
    source: str,
    *,
    kind: str = "dsse-envelope",
    signature: str = "valid",
    bound: bool = True,
    trusted: bool = True,
    status: str = "verified",
    predicate_type: str = "",
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": source,
        "kind": kind,
        "status": status,
        "signature": signature,
        "bound": bound,
        "signer": {"kind": "key", "identity": "cd" * 32, "trusted": trusted},
        "rules": [],
    }
    if predicate_type:
        out["predicate_type"] = predicate_type
    if facts:
        out["facts"] = facts
    return out


def claims(source_training: str, source_release: str) -> dict[str, Any]:
    return {
        "training": {c: {"status": "complete", "source": source_training} for c in TRAINING_CLAIMS},
        "release": {c: {"status": "complete", "source": source_release} for c in RELEASE_CLAIMS},
    }


def evidence(state: str) -> tuple[dict[str, Any], list[Finding]]:
    """Return an evidence section and the evidence findings for a named evidence state.

    - none: no evidence at all.
    - untrusted: a valid signature from an untrusted key.
    - signed: a trusted signature.
    - attested: a trusted signature, complete trusted claims and trusted SLSA
      provenance (build level 2).
    - forged: provenance whose builder does not match its signer.
    """
    empty = {"status": "incomplete", "pieces": [], "claims": {}, "trust": {}}
    if state == "none":
        return empty, [finding("provenance.missing", Severity.MEDIUM)]
    if state == "untrusted":
        pieces = [
            piece("model/model.sig", kind="model-signature", trusted=False, status="incomplete")
        ]
        section = {**empty, "pieces": pieces}
        return section, [finding("evidence.untrusted-signer", Severity.MEDIUM, "model.sig")]
    if state == "signed":
        pieces = [piece("model/model.sig", kind="model-signature")]
        return {**empty, "status": "verified", "pieces": pieces}, []
    if state == "attested":
        pieces = [
            piece("model/model.sig", kind="model-signature"),
            piece("training.intoto.jsonl:1", predicate_type=TRAINING),
            piece("release.intoto.jsonl:1", predicate_type=CYCLONEDX, facts={"egress": "none"}),
            piece(
                "provenance.intoto.jsonl:1",
                predicate_type=PROVENANCE,
                facts={"builder_id": "https://builder.example/hosted"},
            ),
        ]
        section = {
            "status": "verified",
            "pieces": pieces,
            "claims": claims("training.intoto.jsonl:1", "release.intoto.jsonl:1"),
            "trust": {},
        }
        return section, []
    if state == "forged":
        pieces = [
            piece(
                "provenance.intoto.jsonl:1",
                predicate_type=PROVENANCE,
                status="failed",
                facts={"builder_id": "https://evil.example/builder"},
            )
        ]
        section = {**empty, "status": "failed", "pieces": pieces}
        return section, [finding("evidence.forged-provenance", Severity.CRITICAL, "provenance")]
    raise ValueError(state)


def run_cli(*argv: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    return code, out.getvalue()


def write_keypair(folder: Path, name: str = "key") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
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


def write_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"w": np.arange(16, dtype=np.float32).reshape(4, 4)}, str(folder / "model.safetensors")
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 4}))
    return folder
