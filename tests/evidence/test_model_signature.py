"""OpenSSF Model Signing signatures: the published vectors and tampering."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from attestgate.evidence import Status, TrustConfig

from .conftest import DATA, check, write_keypair

VECTORS = DATA / "model-signing"
KEYS = VECTORS / "keys" / "certificate"
NAMES = sorted(p.name for p in VECTORS.iterdir() if p.name.startswith("v"))
SIGSTORE_IDENTITY = "stefanb@us.ibm.com"
SIGSTORE_ISSUER = "https://sigstore.verify.ibm.com/oauth2"


def trust_for(name: str) -> TrustConfig:
    method = name.split("-", 1)[1]
    if method == "elliptic-key":
        return TrustConfig.from_options(trusted_keys=[KEYS / "signing-key-pub.pem"])
    if method == "certificate":
        return TrustConfig.from_options(certificate_chain=KEYS / "ca-cert.pem")
    return TrustConfig.from_options(
        certificate_identity=SIGSTORE_IDENTITY, certificate_oidc_issuer=SIGSTORE_ISSUER
    )


def target(folder: Path) -> Path:
    """The signed model: the one file beside model.sig, or the folder."""
    files = [p for p in folder.iterdir() if p.name != "model.sig"]
    return files[0] if len(files) == 1 else folder


def copy_vector(name: str, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / name
    shutil.copytree(VECTORS / name, folder)
    for item in drop:
        (folder / item).unlink()
    return folder


def test_vector_count():
    # Five releases, three signing methods; v0.2.0 only wrote certificate signatures.
    assert len(NAMES) == 13


@pytest.mark.parametrize("name", NAMES)
def test_vector_signature_verifies(name):
    folder = VECTORS / name
    report = check(target(folder), [folder / "model.sig"], trust_for(name))
    piece = report.pieces[0]
    assert piece.kind == "model-signature"
    assert piece.signature == "valid"
    assert piece.signer.trusted
    assert piece.bound
    assert piece.facts["files_matched"] == piece.facts["files_signed"]


@pytest.mark.parametrize("name", NAMES)
def test_vector_extra_file_is_reported(name):
    # From v1.0.1 on the vectors contain ignore-me, signed with --ignore-paths.
    # v1.1 records the ignored path in the signature; v1.0.1 does not.
    folder = VECTORS / name
    report = check(target(folder), [folder / "model.sig"], trust_for(name))
    rules = {(f.rule, f.file) for f in report.pieces[0].findings}
    if name.startswith("v1.0.1"):
        assert rules == {("evidence.unsigned-file", "ignore-me")}
    elif name.startswith("v1.1.0"):
        assert rules == {("evidence.ignored-file", "ignore-me")}
    else:
        assert rules == set()


@pytest.mark.parametrize("name", NAMES)
def test_vector_without_extra_file_is_verified(name, tmp_path):
    drop = ("ignore-me",) if (VECTORS / name / "ignore-me").exists() else ()
    folder = copy_vector(name, tmp_path, drop)
    report = check(target(folder), [folder / "model.sig"], trust_for(name))
    assert report.status is Status.VERIFIED


@pytest.mark.parametrize("name", ["v0.2.0-certificate", "v1.0.0-elliptic-key", "v1.1.0-sigstore"])
def test_changed_byte_is_digest_mismatch(name, tmp_path):
    folder = copy_vector(name, tmp_path)
    signed = folder / "signme-1"
    data = bytearray(signed.read_bytes())
    data[0] ^= 0x01
    signed.write_bytes(bytes(data))
    report = check(target(folder), [folder / "model.sig"], trust_for(name))
    mismatches = [f for f in report.all_findings if f.rule == "evidence.digest-mismatch"]
    assert report.status is Status.FAILED
    assert mismatches[0].severity.label == "critical"
    assert mismatches[0].file == "signme-1"


def test_added_file_is_unsigned(tmp_path):
    folder = copy_vector("v1.0.0-certificate", tmp_path)
    (folder / "extra.py").write_text("import os\n")
    report = check(folder, [folder / "model.sig"], trust_for("v1.0.0-certificate"))
    unsigned = [f for f in report.all_findings if f.rule == "evidence.unsigned-file"]
    assert [f.file for f in unsigned] == ["extra.py"]
    assert unsigned[0].severity.label == "high"


def test_removed_file_is_digest_mismatch(tmp_path):
    folder = copy_vector("v1.0.0-certificate", tmp_path)
    (folder / "signme-2").unlink()
    report = check(folder, [folder / "model.sig"], trust_for("v1.0.0-certificate"))
    messages = [f.message for f in report.all_findings if f.rule == "evidence.digest-mismatch"]
    assert any("missing" in m for m in messages)


def test_changed_manifest_breaks_signature(tmp_path):
    folder = copy_vector("v1.1.0-elliptic-key", tmp_path)
    bundle = json.loads((folder / "model.sig").read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (folder / "model.sig").write_text(json.dumps(bundle))
    report = check(folder, [folder / "model.sig"], trust_for("v1.1.0-elliptic-key"))
    findings = [f for f in report.all_findings if f.rule == "evidence.invalid-signature"]
    assert findings[0].severity.label == "critical"
    assert report.pieces[0].signature == "invalid"


def test_embedded_key_from_other_signer_is_untrusted(tmp_path):
    # model-signing 0.3 embedded the public key, so the signature still verifies.
    _, other = write_keypair(tmp_path, "p384")
    folder = VECTORS / "v0.3.1-elliptic-key"
    report = check(
        target(folder), [folder / "model.sig"], TrustConfig.from_options(trusted_keys=[other])
    )
    piece = report.pieces[0]
    assert piece.signature == "valid"
    assert not piece.signer.trusted
    assert {f.rule for f in piece.findings} == {"evidence.untrusted-signer"}


def test_key_hint_from_other_signer_is_unverifiable(tmp_path):
    _, other = write_keypair(tmp_path, "p384")
    folder = copy_vector("v1.1.0-elliptic-key", tmp_path, ("ignore-me",))
    report = check(folder, [folder / "model.sig"], TrustConfig.from_options(trusted_keys=[other]))
    assert report.pieces[0].signature == "unverifiable"
    assert report.status is Status.INCOMPLETE


def test_certificate_without_chain_is_untrusted(tmp_path):
    folder = copy_vector("v1.1.0-certificate", tmp_path, ("ignore-me",))
    report = check(folder, [folder / "model.sig"], TrustConfig())
    piece = report.pieces[0]
    assert piece.signature == "valid"
    assert "--certificate-chain" in piece.findings[0].message


def test_certificate_from_other_ca_is_untrusted(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "other-root")])
    now = datetime.datetime.now(datetime.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    chain = tmp_path / "other.pem"
    chain.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    folder = copy_vector("v1.1.0-certificate", tmp_path, ("ignore-me",))
    report = check(
        folder, [folder / "model.sig"], TrustConfig.from_options(certificate_chain=chain)
    )
    assert report.pieces[0].signature == "valid"
    assert "evidence.untrusted-signer" in {f.rule for f in report.all_findings}


def test_keyless_vector_with_other_identity_is_untrusted():
    folder = VECTORS / "v1.1.0-sigstore"
    trust = TrustConfig.from_options(
        certificate_identity="mallory@example.com", certificate_oidc_issuer=SIGSTORE_ISSUER
    )
    report = check(folder, [folder / "model.sig"], trust)
    piece = report.pieces[0]
    assert piece.signature == "valid"
    assert piece.signer.identity == SIGSTORE_IDENTITY
    assert not piece.signer.trusted


def test_signature_found_inside_directory(tmp_path):
    folder = copy_vector("v1.0.0-certificate", tmp_path)
    report = check(folder, trust=trust_for("v1.0.0-certificate"), discover=True)
    assert [Path(p.source).name for p in report.pieces] == ["model.sig"]
    assert report.status is Status.VERIFIED


def test_sharded_signature_is_rehashed_with_model_signing(tmp_path, model):
    from model_signing import hashing, signing

    private, public = write_keypair(tmp_path, "p256")
    signature = model / "model.sig"
    config = hashing.Config().set_ignored_paths(paths=["model.sig"])
    config.use_shard_serialization(shard_size=64)
    signing.Config().set_hashing_config(config).use_elliptic_key_signer(private_key=private).sign(
        model, signature
    )
    trust = TrustConfig.from_options(trusted_keys=[public])
    report = check(model, [signature], trust)
    assert report.pieces[0].facts["serialization"]["method"] == "shards"
    assert report.status is Status.VERIFIED

    data = bytearray((model / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (model / "model.safetensors").write_bytes(bytes(data))
    report = check(model, [signature], trust)
    assert "evidence.digest-mismatch" in {f.rule for f in report.all_findings}


def test_many_unsigned_files_are_summed_up(tmp_path):
    folder = copy_vector("v1.0.0-certificate", tmp_path)
    for index in range(53):
        (folder / f"extra-{index:02}.bin").write_bytes(b"x")
    report = check(folder, [folder / "model.sig"], trust_for("v1.0.0-certificate"))
    unsigned = [f for f in report.all_findings if f.rule == "evidence.unsigned-file"]
    assert len(unsigned) == 51
    assert "3 more files" in unsigned[-1].message
