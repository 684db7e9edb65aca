"""DSSE envelopes: parsing, the pre-authentication encoding, signing and verifying.

The envelope format and PAE follow the DSSE protocol v1.0
(github.com/secure-systems-lab/dsse, protocol.md).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attestgate.evidence import keys
from attestgate.evidence.interface import EvidenceError

MAX_SIGNATURES = 16


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    # (keyid, raw signature bytes) in envelope order.
    signatures: tuple[tuple[str, bytes], ...]

    @property
    def keyids(self) -> list[str]:
        return [keyid for keyid, _ in self.signatures if keyid]

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": keyid, "sig": base64.b64encode(sig).decode()}
                for keyid, sig in self.signatures
            ],
        }


def b64decode(value: object, what: str) -> bytes:
    """Decode standard or URL-safe base64, as DSSE allows both."""
    if not isinstance(value, str):
        raise EvidenceError(f"{what} is not a base64 string")
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"{what} is not valid base64: {exc}") from exc


def parse_envelope(doc: object) -> Envelope:
    """Parse a DSSE envelope from its JSON object; raise ``EvidenceError`` when malformed."""
    if not isinstance(doc, dict):
        raise EvidenceError("the DSSE envelope is not a JSON object")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise EvidenceError("the DSSE envelope has no payloadType")
    payload = b64decode(doc.get("payload"), "the DSSE payload")
    raw_signatures = doc.get("signatures")
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise EvidenceError("the DSSE envelope has no signatures")
    if len(raw_signatures) > MAX_SIGNATURES:
        raise EvidenceError(
            f"the DSSE envelope has {len(raw_signatures)} signatures, more than "
            f"the {MAX_SIGNATURES} read"
        )
    signatures = []
    for index, entry in enumerate(raw_signatures):
        if not isinstance(entry, dict):
            raise EvidenceError(f"DSSE signature {index} is not a JSON object")
        keyid = entry.get("keyid") or ""
        if not isinstance(keyid, str):
            raise EvidenceError(f"DSSE signature {index} has a keyid that is not a string")
        signatures.append((keyid, b64decode(entry.get("sig"), f"DSSE signature {index}")))
    return Envelope(payload_type, payload, tuple(signatures))


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding that signatures cover."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def pae_model_signing_v0_2(payload_type: str, payload: bytes) -> bytes:
    """Return the encoding that model-signing 0.2 signed by mistake.

    That release formatted the payload bytes with ``str()`` into a text
    string, so the signed bytes contain the payload's Python ``repr`` (``b'...'``
    with escapes) after an upper-case ``DSSEV1`` tag. Only signatures whose
    predicate is model-signing 0.2's own are checked against it.
    """
    return f"DSSEV1 {len(payload_type)} {payload_type} {len(payload)} {payload!r}".encode()


def verify_envelope(
    envelope: Envelope,
    candidates: Sequence[keys.PublicKey],
    *,
    legacy_pae: bool = False,
) -> keys.PublicKey | None:
    """Return the first candidate key under which one of the envelope's signatures verifies."""
    messages = [pae(envelope.payload_type, envelope.payload)]
    if legacy_pae:
        messages.append(pae_model_signing_v0_2(envelope.payload_type, envelope.payload))
    for candidate in candidates:
        for _, signature in envelope.signatures:
            for message in messages:
                if keys.verify_signature(candidate.key, signature, message):
                    return candidate
    return None


def sign_envelope(payload_type: str, payload: bytes, key: keys.PrivateKeyType) -> Envelope:
    """Sign ``payload`` into a DSSE envelope whose keyid is the key's SHA-256 id."""
    signature = keys.sign(key, pae(payload_type, payload))
    key_id = keys.public_key_of(key).key_id
    return Envelope(payload_type, payload, ((key_id, signature),))


def encode_json(value: Any) -> bytes:
    """Serialize a statement the way attestgate signs it: compact, sorted, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
