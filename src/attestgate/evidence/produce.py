"""Producing evidence: model signatures, and signed in-toto statements.

Model signatures go through the ``model_signing`` library, so that any
OpenSSF Model Signing verifier accepts them. Statements are signed into a
DSSE envelope with a key, or into a Sigstore bundle when the caller has an
OIDC identity token (keyless, which needs the network).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestgate.evidence import dsse, keys
from attestgate.evidence.discovery import MODEL_SIGNATURE
from attestgate.evidence.interface import IN_TOTO_PAYLOAD_TYPE, EvidenceError

logger = logging.getLogger(__name__)

PASSWORD_ENV = "ATTESTGATE_KEY_PASSWORD"  # noqa: S105 - the variable name, not a password


@dataclass(frozen=True)
class ModelSignature:
    """A written model signature: its path and the subject it signs."""

    path: Path
    subject: str
    sha256: str
    files: int


def key_password() -> bytes | None:
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


def default_signature_path(model: Path) -> Path:
    """``model.sig`` inside a directory, ``NAME.sig`` next to a file."""
    if model.is_dir():
        return model / MODEL_SIGNATURE
    return model.with_name(model.name + ".sig")


def sign_model(
    model: Path,
    *,
    key: Path | None = None,
    certificate: Path | None = None,
    certificate_chain: Sequence[Path] = (),
    identity_token: str = "",
    signature: Path | None = None,
    ignore_paths: Sequence[str] = (),
) -> ModelSignature:
    """Sign ``model`` with model-signing: a key, a key with its certificate, or keyless."""
    from model_signing import hashing as ms_hashing
    from model_signing import signing as ms_signing

    # model-signing's configuration API is not typed.
    hashing: Any = ms_hashing
    signing: Any = ms_signing

    signature = signature or default_signature_path(model)
    ignored = [*ignore_paths]
    if model.is_dir():
        inside = signature.resolve().is_relative_to(model.resolve())
        if inside:
            ignored.append(str(signature.resolve().relative_to(model.resolve())))

    config = signing.Config().set_hashing_config(
        hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True)
    )
    if identity_token:
        config.use_sigstore_signer(identity_token=identity_token)
    elif key is None:
        raise EvidenceError(
            "no signing key was given", hint="pass --key FILE or --identity-token TOKEN"
        )
    else:
        _check_model_signing_key(key)
        if certificate is not None:
            config.use_certificate_signer(
                private_key=key,
                signing_certificate=certificate,
                certificate_chain=list(certificate_chain),
            )
        else:
            password = key_password()
            config.use_elliptic_key_signer(
                private_key=key, password=password.decode() if password else None
            )
    try:
        config.sign(model, signature)
    except (ValueError, OSError) as exc:
        raise EvidenceError(
            f"model-signing could not sign {model}: {exc}",
            hint="check the key, the certificate and that the model is readable",
        ) from exc
    return _describe_signature(signature)


def _check_model_signing_key(path: Path) -> None:
    # OpenSSF Model Signing signs with ECDSA keys only (model-signing 1.1).
    key = keys.load_private_key(path, key_password())
    algorithm = keys.key_algorithm(key)
    if not algorithm.startswith("ecdsa-"):
        raise EvidenceError(
            f"OpenSSF Model Signing signs with ECDSA keys on P-256, P-384 or P-521; "
            f"{path} is an {algorithm} key",
            hint="create one with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`",
        )


def _describe_signature(path: Path) -> ModelSignature:
    bundle = json.loads(path.read_text("utf-8"))
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    subject = payload["subject"][0]
    resources = payload.get("predicate", {}).get("resources", [])
    return ModelSignature(
        path, subject.get("name", ""), subject["digest"]["sha256"], len(resources)
    )


def sign_statement(
    statement: dict[str, Any],
    *,
    key: Path | None = None,
    identity_token: str = "",
) -> str:
    """Sign an in-toto statement; return one JSON line (DSSE envelope or Sigstore bundle)."""
    payload = dsse.encode_json(statement)
    if identity_token:
        return _sign_keyless(payload, identity_token)
    if key is None:
        raise EvidenceError(
            "no signing key was given",
            hint="pass --key FILE or --identity-token TOKEN, or --unsigned for a bare document",
        )
    private = keys.load_private_key(key, key_password())
    envelope = dsse.sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, private)
    return json.dumps(envelope.to_json(), separators=(",", ":"))


def _sign_keyless(payload: bytes, identity_token: str) -> str:
    # NOTE: keyless signing talks to Fulcio and Rekor; the test suite signs
    # with keys only, so this path is exercised only by hand.
    from sigstore.dsse import Statement
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

    context = SigningContext.from_trust_config(ClientTrustConfig.production())
    with context.signer(IdentityToken(identity_token)) as signer:
        bundle = signer.sign_dsse(Statement(payload))
    return json.dumps(json.loads(bundle.to_json()), separators=(",", ":"))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
