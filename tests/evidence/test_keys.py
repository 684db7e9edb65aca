import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from attestgate.evidence import keys
from attestgate.evidence.interface import EvidenceError

from .conftest import DATA, private_key, write_keypair

KINDS = ["ed25519", "p256", "p384", "p521", "rsa"]


@pytest.mark.parametrize("kind", KINDS)
def test_sign_and_verify_round_trip(kind, tmp_path):
    private, public = write_keypair(tmp_path, kind)
    signer = keys.load_private_key(private)
    key = keys.load_public_key(public)
    signature = keys.sign(signer, b"message")
    assert keys.verify_signature(key.key, signature, b"message")
    assert not keys.verify_signature(key.key, signature, b"messagE")


@pytest.mark.parametrize("kind", KINDS)
def test_signature_from_other_key_fails(kind, tmp_path):
    private, _ = write_keypair(tmp_path, kind, "a")
    _, other = write_keypair(tmp_path, kind, "b")
    signature = keys.sign(keys.load_private_key(private), b"message")
    assert not keys.verify_signature(keys.load_public_key(other).key, signature, b"message")


def test_raw_ecdsa_signature_accepted():
    # Some signers write r || s instead of DER.
    key = private_key("p256")
    der = key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert keys.verify_signature(key.public_key(), raw, b"payload")


def test_p384_with_sha256_accepted():
    # model-signing 0.2 signed with SHA-256 on every curve.
    key = private_key("p384")
    signature = key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    assert keys.verify_signature(key.public_key(), signature, b"payload")


@pytest.mark.parametrize("kind", ["p256", "rsa"])
def test_prehashed_signature_checks_digest(kind):
    key = private_key(kind)
    public = keys.public_key_of(key)
    signature = keys.sign(key, b"artifact bytes")
    digest = hashlib.sha256(b"artifact bytes").digest()
    other = hashlib.sha256(b"other bytes").digest()
    assert keys.verify_prehashed(public.key, signature, digest, "sha256")
    assert not keys.verify_prehashed(public.key, signature, other, "sha256")


def test_prehashed_ed25519_is_refused():
    key = private_key("ed25519")
    signature = key.sign(b"x")
    digest = hashlib.sha256(b"x").digest()
    assert not keys.verify_prehashed(key.public_key(), signature, digest, "sha256")


def test_hints_cover_producer_conventions(tmp_path):
    _, public = write_keypair(tmp_path, "p256")
    key = keys.load_public_key(public)
    der = key.key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.key_id == hashlib.sha256(der).hexdigest()
    assert hashlib.sha256(public.read_bytes()).hexdigest() in key.hints
    assert base64.b64encode(hashlib.sha256(der).digest()).decode() in key.hints


def test_text_before_pem_block_is_skipped():
    # certtool writes a description ahead of the PEM block.
    key = keys.load_public_key(DATA / "model-signing/keys/certificate/signing-key-pub.pem")
    assert key.algorithm == "ecdsa-P-384"


def test_certificate_file_yields_its_key():
    key = keys.load_public_key(DATA / "model-signing/keys/certificate/signing-key-cert.pem")
    assert key.algorithm == "ecdsa-P-384"


def test_unsupported_curve_rejected(tmp_path):
    key = ec.generate_private_key(ec.SECP256K1())
    path = tmp_path / "k1.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(EvidenceError, match="secp256k1"):
        keys.load_public_key(path)


def test_small_rsa_rejected(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "small.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(EvidenceError, match="1024 bits"):
        keys.load_public_key(path)


def test_garbage_key_file_rejected(tmp_path):
    path = tmp_path / "bad.pub"
    path.write_text("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    with pytest.raises(EvidenceError, match="not a PEM or DER public key"):
        keys.load_public_key(path)


def test_oversized_key_file_rejected(tmp_path):
    path = tmp_path / "huge.pub"
    path.write_bytes(b"A" * (keys.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(EvidenceError, match="larger than"):
        keys.load_public_key(path)


def test_missing_key_file_rejected(tmp_path):
    with pytest.raises(EvidenceError, match="could not be read"):
        keys.load_public_key(tmp_path / "nope.pub")


def test_encrypted_private_key_needs_password(tmp_path):
    key = private_key("p256")
    path = tmp_path / "enc.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(EvidenceError, match="encrypted"):
        keys.load_private_key(path)
    assert keys.load_private_key(path, b"secret").public_key() == key.public_key()
