"""Public and private keys: loading, key ids, signing and signature checks.

Supported keys are the ones DSSE and Sigstore producers use: Ed25519,
ECDSA on P-256, P-384 and P-521, and RSA of at least 2048 bits.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from attestgate.evidence.interface import EvidenceError

logger = logging.getLogger(__name__)

PublicKeyType = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKeyType = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

MAX_KEY_FILE_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
# The hash each curve pairs with in Sigstore's key details and in OpenSSF
# Model Signing. SHA-256 is also tried on every curve because model-signing
# 0.2 signed with SHA-256 whatever the curve.
CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
RSA_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
HASHES_BY_NAME: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class PublicKey:
    """A trusted or embedded public key with the ids producers use to name it."""

    key: PublicKeyType
    source: str

    @property
    def der(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def key_id(self) -> str:
        """SHA-256 of the DER public key, hex; the keyid that attestgate writes."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def hints(self) -> frozenset[str]:
        """Every form a bundle's public key hint or a DSSE keyid may take for this key."""
        der_digest = hashlib.sha256(self.der).digest()
        return frozenset(
            {
                self.key_id,
                # OpenSSF Model Signing: SHA-256 of the PEM encoding, hex.
                hashlib.sha256(self.pem).hexdigest(),
                # Sigstore clients: SHA-256 of the DER encoding, base64.
                base64.b64encode(der_digest).decode(),
            }
        )

    @property
    def algorithm(self) -> str:
        return key_algorithm(self.key)


def key_algorithm(key: PublicKeyType | PrivateKeyType) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"ecdsa-{CURVES.get(key.curve.name, key.curve.name)}"
    return f"rsa-{key.key_size}"


def _check_supported(key: object, source: str) -> None:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in CURVES:
            raise EvidenceError(
                f"key {source} uses the elliptic curve {key.curve.name}, which is not supported",
                hint="use an ECDSA key on P-256, P-384 or P-521, an Ed25519 key or an RSA key",
            )
        return
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise EvidenceError(
                f"RSA key {source} has {key.key_size} bits, fewer than the {MIN_RSA_BITS} required",
                hint="use an RSA key of 2048 bits or more",
            )
        return
    raise EvidenceError(
        f"key {source} is a {type(key).__name__}, which is not supported",
        hint="use an Ed25519 key, an ECDSA key on P-256, P-384 or P-521, or an RSA key",
    )


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise EvidenceError(
            f"key file {path} could not be read: {exc.strerror or exc}",
            hint="check the path of the key file",
        ) from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise EvidenceError(
            f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes",
            hint="pass a PEM file that contains one key",
        )
    return data


def parse_public_key(data: bytes, source: str) -> PublicKey:
    """Parse a PEM or DER public key (SubjectPublicKeyInfo) or a PEM certificate's key."""
    from cryptography import x509

    key: object
    try:
        # Tools such as certtool write a text description before the PEM block.
        start = data.find(b"-----BEGIN")
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data[start:]).public_key()
        elif start >= 0:
            key = serialization.load_pem_public_key(data[start:])
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise EvidenceError(
            f"{source} is not a PEM or DER public key: {exc}",
            hint="export the public key with `openssl pkey -pubout`",
        ) from exc
    _check_supported(key, source)
    assert isinstance(key, PublicKeyType)
    return PublicKey(key, source)


def load_public_key(path: Path) -> PublicKey:
    """Load a trusted public key from a PEM or DER file."""
    return parse_public_key(_read_key_file(path), str(path))


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKeyType:
    """Load a PEM private key for signing."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError as exc:
        raise EvidenceError(
            f"private key {path} is encrypted and no password was given, or a password "
            "was given for a key that has none",
            hint="set ATTESTGATE_KEY_PASSWORD to the key's password",
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceError(
            f"{path} is not a PEM private key, or the password is wrong: {exc}",
            hint="pass the PEM private key that pairs with the trusted public key",
        ) from exc
    _check_supported(key, str(path))
    assert isinstance(key, PrivateKeyType)
    return key


def _ecdsa_der(key: ec.EllipticCurvePublicKey, signature: bytes) -> bytes:
    # Some signers (Google's VSA signer among them) write ECDSA signatures as
    # the raw concatenation r || s instead of DER.
    size = (key.curve.key_size + 7) // 8
    if len(signature) == 2 * size and signature[:1] != b"\x30":
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        return encode_dss_signature(r, s)
    return signature


def _ecdsa_hashes(key: ec.EllipticCurvePublicKey) -> list[type[hashes.HashAlgorithm]]:
    first = CURVE_HASH[key.curve.name]
    return [first] if first is hashes.SHA256 else [first, hashes.SHA256]


def verify_signature(key: PublicKeyType, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` over ``message`` verifies under ``key``."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            der = _ecdsa_der(key, signature)
            for algorithm in _ecdsa_hashes(key):
                try:
                    key.verify(der, message, ec.ECDSA(algorithm()))
                    return True
                except InvalidSignature:
                    continue
            return False
        return _verify_rsa(key, signature, message, None)
    except (InvalidSignature, ValueError):
        return False


def _verify_rsa(
    key: rsa.RSAPublicKey,
    signature: bytes,
    data: bytes,
    prehashed: type[hashes.HashAlgorithm] | None,
) -> bool:
    algorithms = (prehashed,) if prehashed else RSA_HASHES
    for algorithm in algorithms:
        chosen: hashes.HashAlgorithm | Prehashed = (
            Prehashed(algorithm()) if prehashed else algorithm()
        )
        paddings: tuple[padding.AsymmetricPadding, ...] = (
            padding.PKCS1v15(),
            padding.PSS(mgf=padding.MGF1(algorithm()), salt_length=padding.PSS.AUTO),
        )
        for pad in paddings:
            try:
                key.verify(signature, data, pad, chosen)
                return True
            except (InvalidSignature, ValueError):
                continue
    return False


def verify_prehashed(key: PublicKeyType, signature: bytes, digest: bytes, algorithm: str) -> bool:
    """Return whether ``signature`` over a message whose ``algorithm`` digest is ``digest``
    verifies; Ed25519 signs whole messages and cannot be checked this way."""
    hash_type = HASHES_BY_NAME.get(algorithm)
    if hash_type is None or isinstance(key, ed25519.Ed25519PublicKey):
        return False
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(_ecdsa_der(key, signature), digest, ec.ECDSA(Prehashed(hash_type())))
            return True
        return _verify_rsa(key, signature, digest, hash_type)
    except (InvalidSignature, ValueError):
        return False


def sign(key: PrivateKeyType, message: bytes) -> bytes:
    """Sign ``message``: Ed25519, ECDSA with the curve's hash (DER), or RSA-PSS with SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(CURVE_HASH[key.curve.name]()))
    return key.sign(
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
        hashes.SHA256(),
    )


def public_key_of(key: PrivateKeyType) -> PublicKey:
    return PublicKey(key.public_key(), "private key")
