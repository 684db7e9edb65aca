"""Credential-shaped test values, generated at run time so that no real-looking secret is committed.

Every value here is random and valid for no service.
"""

from __future__ import annotations

import base64
import json
import random
import string
import zlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_RANDOM = random.Random(20240611)
_ALPHANUMERIC = string.ascii_letters + string.digits
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _chars(alphabet: str, count: int) -> str:
    return "".join(_RANDOM.choice(alphabet) for _ in range(count))


def hf_token() -> str:
    return "hf_" + _chars(string.ascii_letters, 34)


def aws_key_id() -> str:
    return "AKIA" + _chars(string.ascii_uppercase + "234567", 16)


def aws_secret_key() -> str:
    return _chars(_ALPHANUMERIC + "/+", 40)


def github_token(valid: bool = True) -> str:
    """A classic GitHub token whose last six characters are the base62 CRC32 of the rest."""
    body = _chars(_ALPHANUMERIC, 30)
    value = zlib.crc32(body.encode()) & 0xFFFFFFFF
    digits = []
    while value:
        value, remainder = divmod(value, 62)
        digits.append(_BASE62[remainder])
    checksum = "".join(reversed(digits)).rjust(6, "0")
    if not valid:
        checksum = checksum[:-1] + ("A" if checksum[-1] != "A" else "B")
    return "ghp_" + body + checksum


def azure_connection_string() -> str:
    key = base64.b64encode(_RANDOM.randbytes(64)).decode()
    return f"DefaultEndpointsProtocol=https;AccountName=examplestore;AccountKey={key};"


def pem_private_key(encrypted: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm = (
        serialization.BestAvailableEncryption(b"passphrase")
        if encrypted
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm
    )


def gcp_service_account() -> bytes:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "example-project",
            "private_key_id": _chars(string.hexdigits.lower(), 40),
            "private_key": pem_private_key().decode(),
            "client_email": "builder@example-project.iam.gserviceaccount.com",
            "client_id": _chars(string.digits, 21),
        },
        indent=2,
    ).encode()
