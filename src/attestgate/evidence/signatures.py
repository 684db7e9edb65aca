"""Signature checks for Sigstore bundles and plain DSSE envelopes.

A Sigstore bundle is verified by the kind of verification material it contains:

1. ``publicKey``: a key-signed bundle (OpenSSF Model Signing's key method, or
   cosign with a key). The signature is checked under the trusted keys; any
   transparency log entry is checked against the Sigstore trusted root.
2. A certificate without a transparency log entry: a certificate-chain bundle
   (OpenSSF Model Signing's certificate method). The signature is checked
   under the certificate's key, and the certificate against the trusted
   certificate chains.
3. A certificate with a log entry: Sigstore keyless, checked by
   sigstore-python offline against the trusted root (see ``keyless``).

Each returns a :class:`SignedContent`: what the signature covers, who signed
it, and the findings. The statement inside is checked by the caller.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attestgate.evidence import dsse, keys
from attestgate.evidence.interface import (
    INVALID_SIGNATURE,
    OMS_PREDICATE_V0,
    UNTRUSTED_SIGNER,
    EvidenceError,
    Signer,
    finding,
)
from attestgate.evidence.trust import TrustConfig, certificate_subjects
from attestgate.findings import Finding, Severity

if TYPE_CHECKING:
    from cryptography import x509

logger = logging.getLogger(__name__)

BUNDLE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
)
BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"
MAX_TLOG_ENTRIES = 8
TRUST_HINT = (
    "Pass the signer's public key with --trusted-key FILE, its CA chain with "
    "--certificate-chain FILE, or its identity with --certificate-identity and "
    "--certificate-oidc-issuer, once you have confirmed that the signer is entitled "
    "to sign this artifact."
)


@dataclass
class SignedContent:
    """The content one signature covers, and its signer."""

    signature: str  # valid, invalid, unverifiable
    signer: Signer
    envelope: dsse.Envelope | None = None
    # Hex SHA-256 that a message signature covers (bundles without DSSE).
    message_digest: str = ""
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.signature == "valid"


def invalid(where: str, message: str, *, critical: bool = False) -> Finding:
    return finding(
        INVALID_SIGNATURE,
        Severity.CRITICAL if critical else Severity.HIGH,
        where,
        message,
        "Do not use this evidence. Ask the producer for a fresh signature over the "
        "artifact, and find out how the evidence was changed or corrupted.",
    )


def untrusted(where: str, signer: Signer, detail: str = "") -> Finding:
    extra = f"; {detail}" if detail else ""
    return finding(
        UNTRUSTED_SIGNER,
        Severity.MEDIUM,
        where,
        f"{where} is signed by {signer.describe()}, which the trust configuration does "
        f"not trust{extra}",
        TRUST_HINT,
        signer=signer.to_json(),
    )


def _legacy_model_signing(envelope: dsse.Envelope) -> bool:
    # Only model-signing 0.2 payloads may use that release's PAE encoding.
    try:
        payload = json.loads(envelope.payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(payload, dict) and payload.get("predicateType") == OMS_PREDICATE_V0


def _ordered_keys(trust: TrustConfig, named: list[str]) -> list[keys.PublicKey]:
    preferred = [k for k in trust.keys if any(n in k.hints for n in named)]
    return preferred + [k for k in trust.keys if k not in preferred]


def verify_envelope_document(doc: dict[str, Any], where: str, trust: TrustConfig) -> SignedContent:
    """Verify a plain DSSE envelope against the trusted keys."""
    try:
        envelope = dsse.parse_envelope(doc)
    except EvidenceError as exc:
        return SignedContent("invalid", Signer("none"), findings=[invalid(where, exc.message)])
    legacy = _legacy_model_signing(envelope)
    key = dsse.verify_envelope(envelope, _ordered_keys(trust, envelope.keyids), legacy_pae=legacy)
    if key is not None:
        signer = Signer("key", key.key_id, trusted=True, trusted_by=f"trusted key {key.source}")
        return SignedContent("valid", signer, envelope)
    return _unverified_by_keys(where, trust, envelope.keyids, envelope)


def _unverified_by_keys(
    where: str,
    trust: TrustConfig,
    named: list[str],
    envelope: dsse.Envelope | None,
    message_digest: str = "",
) -> SignedContent:
    """Classify a key signature that no trusted key verifies."""
    claimed = next((trust.key_for_hint(n) for n in named if trust.key_for_hint(n)), None)
    label = named[0] if named else ""
    if claimed is not None:
        msg = (
            f"the signature in {where} does not verify under trusted key {claimed.key_id} "
            f"({claimed.source}), which the evidence names as its signer"
        )
        return SignedContent(
            "invalid",
            Signer("key", claimed.key_id),
            envelope,
            message_digest,
            [invalid(where, msg, critical=True)],
        )
    if trust.keys and not label:
        msg = (
            f"no trusted key verifies the signature in {where}, and the evidence does not "
            "name the key it was signed with"
        )
        return SignedContent(
            "invalid", Signer("key"), envelope, message_digest, [invalid(where, msg)]
        )
    signer = Signer("key", label or "(not named)")
    detail = (
        "no trusted key was given, so the signature could not be checked"
        if not trust.keys
        else "the signature could not be checked because the key is not among the trusted keys"
    )
    return SignedContent(
        "unverifiable", signer, envelope, message_digest, [untrusted(where, signer, detail)]
    )


def verify_bundle(
    doc: dict[str, Any],
    text: str,
    where: str,
    trust: TrustConfig,
    artifact_sha256: str,
) -> SignedContent:
    """Verify a Sigstore bundle; ``artifact_sha256`` is what a message signature must cover."""
    media_type = doc.get("mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        return SignedContent(
            "invalid",
            Signer("none"),
            findings=[
                invalid(where, f"{where} has the unsupported bundle media type {media_type!r}")
            ],
        )
    material = doc.get("verificationMaterial")
    if not isinstance(material, dict):
        return SignedContent(
            "invalid",
            Signer("none"),
            findings=[invalid(where, f"{where} has no verification material")],
        )
    has_dsse = isinstance(doc.get("dsseEnvelope"), dict)
    has_message = isinstance(doc.get("messageSignature"), dict)
    if has_dsse == has_message:
        return SignedContent(
            "invalid",
            Signer("none"),
            findings=[
                invalid(
                    where,
                    f"{where} must contain exactly one of a DSSE envelope and a message signature",
                )
            ],
        )
    tlog = material.get("tlogEntries") or []
    if not isinstance(tlog, list):
        return SignedContent(
            "invalid",
            Signer("none"),
            findings=[invalid(where, f"{where} has malformed tlogEntries")],
        )
    try:
        if isinstance(material.get("publicKey"), dict):
            return _verify_key_bundle(doc, material, tlog, where, trust, artifact_sha256)
        if not tlog:
            return _verify_chain_bundle(doc, material, where, trust, artifact_sha256)
    except EvidenceError as exc:
        return SignedContent("invalid", Signer("none"), findings=[invalid(where, exc.message)])
    from attestgate.evidence import keyless

    return keyless.verify_keyless(doc, text, where, trust, artifact_sha256)


def _message_signature(doc: dict[str, Any], artifact_sha256: str) -> tuple[bytes, str]:
    """Return the message signature and the hex SHA-256 it claims to cover."""
    message = doc["messageSignature"]
    signature = dsse.b64decode(message.get("signature"), "the message signature")
    digest = message.get("messageDigest")
    if digest is None:
        return signature, artifact_sha256
    if not isinstance(digest, dict) or digest.get("algorithm") != "SHA2_256":
        raise EvidenceError("the message digest is not a SHA2_256 digest")
    return signature, dsse.b64decode(digest.get("digest"), "the message digest").hex()


def _content(doc: dict[str, Any], artifact_sha256: str) -> tuple[dsse.Envelope | None, bytes, str]:
    if isinstance(doc.get("dsseEnvelope"), dict):
        return dsse.parse_envelope(doc["dsseEnvelope"]), b"", ""
    signature, digest = _message_signature(doc, artifact_sha256)
    return None, signature, digest


def _verify_content(
    candidates: list[keys.PublicKey],
    envelope: dsse.Envelope | None,
    signature: bytes,
    digest: str,
) -> keys.PublicKey | None:
    if envelope is not None:
        return dsse.verify_envelope(
            envelope, candidates, legacy_pae=_legacy_model_signing(envelope)
        )
    for candidate in candidates:
        if keys.verify_prehashed(candidate.key, signature, bytes.fromhex(digest), "sha256"):
            return candidate
    return None


def _embedded_key(material: dict[str, Any]) -> keys.PublicKey | None:
    # model-signing before 1.1 embedded the PEM public key in rawBytes.
    raw = material["publicKey"].get("rawBytes")
    if not raw:
        return None
    return keys.parse_public_key(dsse.b64decode(raw, "the embedded public key"), "the bundle")


def _verify_key_bundle(
    doc: dict[str, Any],
    material: dict[str, Any],
    tlog: list[Any],
    where: str,
    trust: TrustConfig,
    artifact_sha256: str,
) -> SignedContent:
    hint = str(material["publicKey"].get("hint") or "")
    envelope, signature, digest = _content(doc, artifact_sha256)
    embedded = _embedded_key(material)
    named = [hint] if hint else []
    if embedded is not None:
        named.append(embedded.key_id)

    key = _verify_content(_ordered_keys(trust, named), envelope, signature, digest)
    if key is not None:
        signer = Signer("key", key.key_id, trusted=True, trusted_by=f"trusted key {key.source}")
        content = SignedContent("valid", signer, envelope, digest)
    elif embedded is not None:
        signer = Signer("key", embedded.key_id)
        if _verify_content([embedded], envelope, signature, digest) is None:
            msg = f"the signature in {where} does not verify under the public key it embeds"
            return SignedContent(
                "invalid", signer, envelope, digest, [invalid(where, msg, critical=True)]
            )
        content = SignedContent("valid", signer, envelope, digest, [untrusted(where, signer)])
    else:
        return _unverified_by_keys(where, trust, named, envelope, digest)

    if tlog:
        _check_key_tlog(tlog, content, key or embedded, where, trust)
    return content


def _check_key_tlog(
    tlog: list[Any],
    content: SignedContent,
    key: keys.PublicKey | None,
    where: str,
    trust: TrustConfig,
) -> None:
    """Check a key-signed bundle's log entries: inclusion, and that they record this signature."""
    from sigstore._internal.trust import KeyringPurpose
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TransparencyLogEntry
    from sigstore_models.rekor.v1 import TransparencyLogEntry as RawEntry

    if len(tlog) > MAX_TLOG_ENTRIES:
        content.findings.append(invalid(where, f"{where} lists {len(tlog)} log entries"))
        content.signature = "invalid"
        return
    root, source, _ = trust.sigstore_root()
    for raw in tlog:
        try:
            entry = RawEntry.from_dict(raw)
            TransparencyLogEntry(entry)._verify(root.rekor_keyring(KeyringPurpose.VERIFY))
            body = json.loads(entry.canonicalized_body)
            _check_key_entry_body(body, entry.kind_version.kind, content, key)
        except (SigstoreError, ValueError, KeyError, TypeError, EvidenceError) as exc:
            content.findings.append(
                invalid(
                    where,
                    f"the transparency log entry in {where} does not verify against the "
                    f"trusted root {source}: {exc}",
                )
            )
            content.signature = "invalid"
            return
    content.facts["transparency_log"] = "verified"


def _same_key(encoded: object, key: keys.PublicKey | None) -> bool:
    if key is None or not isinstance(encoded, str):
        return False
    try:
        logged = keys.parse_public_key(base64.b64decode(encoded), "the log entry")
    except (EvidenceError, ValueError):
        return False
    return logged.der == key.der


def _check_key_entry_body(
    body: dict[str, Any], kind: str, content: SignedContent, key: keys.PublicKey | None
) -> None:
    spec = body["spec"]
    if kind == "hashedrekord" and content.envelope is None:
        if spec["data"]["hash"]["value"] != content.message_digest:
            raise EvidenceError("the log entry records a different artifact digest")
        if not _same_key(spec["signature"]["publicKey"]["content"], key):
            raise EvidenceError("the log entry records a different public key")
        return
    if kind == "dsse" and content.envelope is not None:
        payload_hash = hashlib.sha256(content.envelope.payload).hexdigest()
        if spec["payloadHash"]["value"] != payload_hash:
            raise EvidenceError("the log entry records a different payload")
        logged = [s for s in spec["signatures"] if _same_key(s.get("verifier"), key)]
        if not logged:
            raise EvidenceError("the log entry records a different public key")
        return
    raise EvidenceError(f"log entries of kind {kind} are not supported for key-signed bundles")


def _certificates(material: dict[str, Any]) -> list[x509.Certificate]:
    from cryptography import x509

    if isinstance(material.get("x509CertificateChain"), dict):
        raw = material["x509CertificateChain"].get("certificates") or []
    elif isinstance(material.get("certificate"), dict):
        raw = [material["certificate"]]
    else:
        raise EvidenceError("the bundle has neither a public key nor a certificate")
    if not isinstance(raw, list) or not raw or len(raw) > 16:
        raise EvidenceError("the bundle's certificate chain is empty or too long")
    out = []
    for index, entry in enumerate(raw):
        der = dsse.b64decode(
            entry.get("rawBytes") if isinstance(entry, dict) else None, f"certificate {index}"
        )
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise EvidenceError(f"certificate {index} of the bundle is not DER: {exc}") from exc
    return out


def _may_sign(certificate: x509.Certificate) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        if certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return ExtendedKeyUsageOID.CODE_SIGNING in usage
    except x509.ExtensionNotFound:
        return False


def chain_error(leaf: x509.Certificate, extra: list[x509.Certificate], trust: TrustConfig) -> str:
    """Return why ``leaf`` does not chain to a trusted anchor, or an empty string."""
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    if not trust.chain_anchors:
        return "no --certificate-chain was given"
    # Without a transparency log or a timestamp there is no trusted signing
    # time, so the chain is checked at the start of the leaf's validity, as
    # OpenSSF Model Signing does for its certificate method.
    verifier = (
        PolicyBuilder()
        .store(Store(trust.chain_anchors))
        .time(leaf.not_valid_before_utc)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, extra + trust.chain_intermediates)
    except (VerificationError, ValueError) as exc:
        return f"the certificate does not chain to a trusted root: {exc}"
    return ""


def _verify_chain_bundle(
    doc: dict[str, Any],
    material: dict[str, Any],
    where: str,
    trust: TrustConfig,
    artifact_sha256: str,
) -> SignedContent:
    certificates = _certificates(material)
    leaf = certificates[0]
    leaf_key = keys.PublicKey(_supported_key(leaf), "the signing certificate")
    envelope, signature, digest = _content(doc, artifact_sha256)
    names = certificate_subjects(leaf)
    identity = names[0] if names else leaf.subject.rfc4514_string()
    signer = Signer("certificate", identity, issuer=leaf.issuer.rfc4514_string())

    if _verify_content([leaf_key], envelope, signature, digest) is None:
        msg = f"the signature in {where} does not verify under its signing certificate's key"
        return SignedContent(
            "invalid", signer, envelope, digest, [invalid(where, msg, critical=True)]
        )
    if not _may_sign(leaf):
        msg = f"the signing certificate in {where} is not allowed to sign (key usage)"
        return SignedContent("invalid", signer, envelope, digest, [invalid(where, msg)])

    problem = chain_error(leaf, certificates[1:], trust)
    if problem:
        return SignedContent("valid", signer, envelope, digest, [untrusted(where, signer, problem)])
    trusted = Signer(
        "certificate",
        identity,
        issuer=signer.issuer,
        trusted=True,
        trusted_by=f"certificate chain {', '.join(trust.chain_sources)}",
    )
    return SignedContent("valid", trusted, envelope, digest)


def _supported_key(certificate: x509.Certificate) -> keys.PublicKeyType:
    key = certificate.public_key()
    if not isinstance(key, keys.PublicKeyType):
        raise EvidenceError(f"the signing certificate contains an unsupported {type(key).__name__}")
    return key
