"""``attestgate sign``: write an OpenSSF Model Signing signature for a model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TextIO

from attestgate.cli import common
from attestgate.errors import UsageError

EPILOG = """\
The signature is written by the model-signing library, so `model_signing verify`
and any other OpenSSF Model Signing verifier accept it. Verify it here with
`attestgate verify PATH --trusted-key PUB`.

environment:
  ATTESTGATE_KEY_PASSWORD  password of an encrypted --key
  SIGSTORE_ID_TOKEN        identity token for keyless signing (see --identity-token)

exit status:
  0  the signature was written
  1  signing failed
  2  usage error, such as a path that does not exist
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sign",
        help="sign a model with OpenSSF Model Signing",
        description="Sign a model file or directory: hash every file and write an OpenSSF "
        "Model Signing signature (a Sigstore bundle over the signed file manifest).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="model file or directory")
    parser.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="PEM ECDSA private key (P-256, P-384 or P-521) to sign with",
    )
    parser.add_argument(
        "--certificate",
        type=Path,
        metavar="FILE",
        help="PEM signing certificate for --key; signs with model-signing's certificate method",
    )
    parser.add_argument(
        "--certificate-chain",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="PEM intermediate and root certificates for --certificate (repeatable)",
    )
    parser.add_argument(
        "--identity-token",
        default=os.environ.get("SIGSTORE_ID_TOKEN", ""),
        metavar="TOKEN",
        help="OIDC identity token for Sigstore keyless signing, which contacts Sigstore's "
        "public servers (default: $SIGSTORE_ID_TOKEN)",
    )
    parser.add_argument(
        "--signature",
        type=Path,
        metavar="FILE",
        help="where to write the signature (default: PATH/model.sig for a directory, "
        "PATH.sig for a file)",
    )
    parser.add_argument(
        "--ignore-path",
        action="append",
        default=[],
        metavar="PATH",
        help="path inside the model to leave out of the signature (repeatable); the gate "
        "reports such files when it admits the model",
    )
    common.add_output_options(parser)


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    from attestgate.evidence.produce import sign_model

    path: Path = args.path
    if not path.exists():
        raise UsageError(f"model path {path} does not exist", hint="pass the model to sign")
    if args.key is None and not args.identity_token:
        raise UsageError(
            "no signing key was given", hint="pass --key FILE, or --identity-token for keyless"
        )
    if args.certificate is not None and args.key is None:
        raise UsageError("--certificate needs --key", hint="pass the certificate's private key")
    for item in [args.key, args.certificate, *args.certificate_chain]:
        if item is not None and not item.is_file():
            raise UsageError(f"{item} does not exist", hint="check the key and certificate paths")

    result = sign_model(
        path,
        key=args.key,
        certificate=args.certificate,
        certificate_chain=args.certificate_chain,
        identity_token=args.identity_token if args.key is None else "",
        signature=args.signature,
        ignore_paths=args.ignore_path,
    )
    document = {
        "signature": str(result.path),
        "subject": {"name": result.subject, "digest": {"sha256": result.sha256}},
        "files": result.files,
    }
    if args.format == "json":
        text = common.dump_json(document)
    else:
        text = (
            f"signed {path} ({result.files} files)\n"
            f"  digest     sha256:{result.sha256}\n"
            f"  signature  {result.path}"
        )
    common.emit(text, args.output, stdout)
    return 0
