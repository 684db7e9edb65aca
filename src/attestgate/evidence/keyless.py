"""Sigstore keyless verification through sigstore-python, offline.

sigstore-python (4.x) checks the certificate chain to Fulcio, the signed
certificate timestamp, the transparency log inclusion and the signature. The
signer's identity is then matched here against the trust configuration, so
that a valid signature by an unexpected identity is reported as an untrusted
signer instead of as an invalid signature.

One extension: sigstore-python rejects bundles whose log entry is of the
legacy kind ``intoto`` 0.0.2, which older cosign releases wrote for
attestations and which Sigstore's conformance suite accepts. For those,
:class:`_Verifier` establishes the log time and checks the entry body
itself; every other step is sigstore-python's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from functools import cache
from typing import TYPE_CHECKING, Any

from attestgate.evidence import dsse
from attestgate.evidence.interface import EvidenceError, Signer
from attestgate.evidence.signatures import SignedContent, invalid, untrusted
from attestgate.evidence.trust import TrustConfig, certificate_issuer, certificate_subjects

if TYPE_CHECKING:
    from cryptography import x509

logger = logging.getLogger(__name__)

LEGACY_INTOTO = ("intoto", "0.0.2")


class _AcceptAnyIdentity:
    """A sigstore verification policy that accepts every identity.

    The identity is compared with the trust configuration after the
    signature has been verified, so that the two outcomes stay apart.
    """

    def verify(self, cert: x509.Certificate) -> None:
        return None


def verify_keyless(
    doc: dict[str, Any],
    text: str,
    where: str,
    trust: TrustConfig,
    artifact_sha256: str,
) -> SignedContent:
    """Verify a keyless Sigstore bundle and match its signer against the trusted identities."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore_models.common.v1 import HashAlgorithm

    root, source, _ = trust.sigstore_root()
    try:
        bundle = Bundle.from_json(text)
    except (SigstoreError, ValueError) as exc:
        return SignedContent(
            "invalid",
            Signer("sigstore"),
            findings=[invalid(where, f"{where} is not a valid Sigstore bundle: {exc}")],
        )
    certificate = bundle.signing_certificate
    subjects = certificate_subjects(certificate)
    issuer = certificate_issuer(certificate)
    signer = Signer("sigstore", subjects[0] if subjects else "", issuer=issuer)

    envelope: dsse.Envelope | None = None
    digest = ""
    try:
        verifier = _verifier_class()(trusted_root=root)
        if isinstance(doc.get("dsseEnvelope"), dict):
            verifier.verify_dsse(bundle, _AcceptAnyIdentity())
            envelope = dsse.parse_envelope(doc["dsseEnvelope"])
        else:
            digest = _message_digest(doc, artifact_sha256)
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest))
            verifier.verify_artifact(hashed, bundle, _AcceptAnyIdentity())
    except (SigstoreError, EvidenceError, ValueError, TypeError, KeyError) as exc:
        message = exc.message if isinstance(exc, EvidenceError) else str(exc)
        return SignedContent(
            "invalid",
            signer,
            envelope,
            digest,
            [
                invalid(
                    where,
                    f"Sigstore verification of {where} against the trusted root {source} "
                    f"failed: {message}",
                )
            ],
        )

    identity = trust.identity_for(subjects, issuer)
    if identity is None:
        detail = (
            "no --certificate-identity was given"
            if not trust.identities
            else "it matches none of the trusted identities "
            + "; ".join(i.describe() for i in trust.identities)
        )
        return SignedContent("valid", signer, envelope, digest, [untrusted(where, signer, detail)])
    trusted = Signer(
        "sigstore",
        signer.identity,
        issuer=issuer,
        trusted=True,
        trusted_by=f"identity {identity.describe()}",
    )
    return SignedContent("valid", trusted, envelope, digest, facts={"subjects": subjects})


def _message_digest(doc: dict[str, Any], artifact_sha256: str) -> str:
    digest = doc["messageSignature"].get("messageDigest")
    if not isinstance(digest, dict):
        return artifact_sha256
    return dsse.b64decode(digest.get("digest"), "the message digest").hex()


@cache
def _verifier_class() -> type[Any]:
    """Return sigstore-python's Verifier, extended for legacy ``intoto`` 0.0.2 log entries."""
    from datetime import UTC, datetime

    from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
    from sigstore.errors import VerificationError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import VerificationPolicy

    class _Verifier(Verifier):
        def _establish_time(self, bundle: Bundle) -> list[TimestampVerificationResult]:
            kind = bundle.log_entry._inner.kind_version
            if (kind.kind, kind.version) != LEGACY_INTOTO:
                return super()._establish_time(bundle)
            results: list[TimestampVerificationResult] = []
            if bundle.verification_material.timestamp_verification_data:
                results.extend(self._verify_timestamp_authority(bundle))
            inner = bundle.log_entry._inner
            # The inclusion promise that binds this time is verified later,
            # with the rest of the log entry, by _verify_common_signing_cert.
            if inner.integrated_time and inner.inclusion_promise:
                results.append(
                    TimestampVerificationResult(
                        source=TimestampSource.TRANSPARENCY_SERVICE,
                        time=datetime.fromtimestamp(inner.integrated_time, tz=UTC),
                    )
                )
            return results

        def verify_dsse(self, bundle: Bundle, policy: VerificationPolicy) -> tuple[str, bytes]:
            kind = bundle.log_entry._inner.kind_version
            if (kind.kind, kind.version) != LEGACY_INTOTO:
                result: tuple[str, bytes] = super().verify_dsse(bundle, policy)
                return result
            self._verify_common_signing_cert(bundle, policy)
            envelope = bundle._inner.dsse_envelope
            if envelope is None:
                raise VerificationError("the bundle contains no DSSE envelope")
            _check_intoto_entry(
                bundle, envelope.payload_type, envelope.payload, envelope.signatures
            )
            return envelope.payload_type, envelope.payload

    return _Verifier


def _check_intoto_entry(
    bundle: Any, payload_type: str, payload: bytes, signatures: list[Any]
) -> None:
    """Check the envelope's signature and that the intoto 0.0.2 log entry records this envelope."""
    from sigstore.errors import VerificationError

    from attestgate.evidence import keys

    certificate = bundle.signing_certificate
    key = keys.PublicKey(certificate.public_key(), "the signing certificate")
    if len(signatures) != 1:
        raise VerificationError("the DSSE envelope must contain exactly one signature")
    signature = signatures[0].sig
    if not keys.verify_signature(key.key, signature, dsse.pae(payload_type, payload)):
        raise VerificationError("the DSSE signature does not verify under the signing certificate")

    body = json.loads(bundle.log_entry._inner.canonicalized_body)
    content = body["spec"]["content"]
    logged = content["envelope"]
    # The entry stores the envelope's base64 fields base64-encoded once more.
    if logged.get("payloadType") != payload_type:
        raise VerificationError("the log entry records a different payload type")
    if "payload" in logged and _unwrap(logged["payload"]) != payload:
        raise VerificationError("the log entry records a different payload")
    if content["payloadHash"]["value"] != hashlib.sha256(payload).hexdigest():
        raise VerificationError("the log entry records a different payload digest")
    for entry in logged.get("signatures") or []:
        if _unwrap(entry.get("sig", "")) == signature and _same_certificate(
            entry.get("publicKey", ""), certificate
        ):
            return
    raise VerificationError("the log entry records a different signature or certificate")


def _same_certificate(encoded: str, certificate: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        logged = x509.load_pem_x509_certificate(base64.b64decode(encoded))
    except ValueError:
        return False
    return logged == certificate


def _unwrap(value: str) -> bytes:
    return base64.b64decode(base64.b64decode(value))
