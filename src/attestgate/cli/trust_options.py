"""Evidence and trust options shared by ``admit`` and ``verify`` (cosign's names and meaning)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attestgate.evidence import TrustConfig


def add_evidence_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "evidence and trust",
        "Evidence next to the artifact is also used: PATH/model.sig for a directory, and "
        "files named NAME.*.sig, .sigstore.json, .intoto.jsonl, .dsse.json or .cdx.json "
        "beside it.",
    )
    group.add_argument(
        "--evidence",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="signature, Sigstore bundle, DSSE envelope, in-toto statement or JSON Lines "
        "bundle, or CycloneDX ML-BOM for the artifact (repeatable)",
    )
    group.add_argument(
        "--no-discover",
        action="store_true",
        help="use only the --evidence files, not the ones found beside the artifact",
    )
    group.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="public key (PEM) whose signatures are trusted: Ed25519, ECDSA P-256/384/521 "
        "or RSA (repeatable)",
    )
    group.add_argument(
        "--certificate-chain",
        type=Path,
        metavar="FILE",
        help="PEM CA certificates, intermediates first and the root last; certificates "
        "that chain to the root are trusted",
    )
    group.add_argument(
        "--certificate-identity",
        default="",
        metavar="NAME",
        help="subject alternative name (e-mail or URI) a Sigstore keyless signer must have",
    )
    group.add_argument(
        "--certificate-identity-regexp",
        default="",
        metavar="REGEXP",
        help="regular expression searched for in the signer's subject alternative name "
        "(anchor it with ^ and $ to match the whole name)",
    )
    group.add_argument(
        "--certificate-oidc-issuer",
        default="",
        metavar="URL",
        help="OIDC issuer a Sigstore keyless signer's certificate must name, such as "
        "https://token.actions.githubusercontent.com",
    )
    group.add_argument(
        "--trusted-root",
        type=Path,
        metavar="FILE",
        help="Sigstore trusted root (trusted_root.json) for keyless verification "
        "(default: the Sigstore production root shipped with sigstore-python; nothing "
        "is fetched)",
    )


def trust_from_args(args: argparse.Namespace) -> TrustConfig:
    from attestgate.evidence import TrustConfig

    return TrustConfig.from_options(
        trusted_keys=list(args.trusted_key),
        certificate_chain=args.certificate_chain,
        certificate_identity=args.certificate_identity,
        certificate_identity_regexp=args.certificate_identity_regexp,
        certificate_oidc_issuer=args.certificate_oidc_issuer,
        trusted_root=args.trusted_root,
    )
