import base64
import json

import pytest

from attestgate.evidence import dsse, keys
from attestgate.evidence.interface import EvidenceError

from .conftest import private_key


def test_pae_matches_protocol_example():
    # The example from the DSSE v1.0 protocol description.
    assert (
        dsse.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_and_verify_envelope():
    key = private_key("ed25519")
    envelope = dsse.sign_envelope("application/vnd.in-toto+json", b"{}", key)
    public = keys.public_key_of(key)
    assert dsse.verify_envelope(envelope, [public]) == public
    assert envelope.signatures[0][0] == public.key_id


def test_tampered_payload_fails():
    key = private_key("p256")
    envelope = dsse.sign_envelope("application/vnd.in-toto+json", b'{"a":1}', key)
    changed = dsse.Envelope(envelope.payload_type, b'{"a":2}', envelope.signatures)
    assert dsse.verify_envelope(changed, [keys.public_key_of(key)]) is None


def test_changed_payload_type_fails():
    key = private_key("p256")
    envelope = dsse.sign_envelope("application/vnd.in-toto+json", b"{}", key)
    changed = dsse.Envelope("text/plain", envelope.payload, envelope.signatures)
    assert dsse.verify_envelope(changed, [keys.public_key_of(key)]) is None


def test_json_round_trip():
    key = private_key("rsa")
    envelope = dsse.sign_envelope("application/vnd.in-toto+json", b"payload", key)
    parsed = dsse.parse_envelope(json.loads(json.dumps(envelope.to_json())))
    assert parsed == envelope


def test_url_safe_base64_accepted():
    raw = bytes(range(250, 256)) * 3
    assert dsse.b64decode(base64.urlsafe_b64encode(raw).decode().rstrip("="), "x") == raw


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a JSON object"),
        ({"payload": "e30=", "signatures": [{"sig": "AA=="}]}, "no payloadType"),
        (
            {"payloadType": "t", "payload": "%%%", "signatures": [{"sig": "AA=="}]},
            "not valid base64",
        ),
        ({"payloadType": "t", "payload": "e30=", "signatures": []}, "no signatures"),
        ({"payloadType": "t", "payload": "e30=", "signatures": ["x"]}, "not a JSON object"),
        (
            {"payloadType": "t", "payload": "e30=", "signatures": [{"sig": "AA==", "keyid": 5}]},
            "keyid",
        ),
        (
            {"payloadType": "t", "payload": "e30=", "signatures": [{"sig": "AA=="}] * 17},
            "17 signatures",
        ),
    ],
)
def test_malformed_envelopes_rejected(doc, message):
    with pytest.raises(EvidenceError, match=message):
        dsse.parse_envelope(doc)


def test_legacy_pae_only_when_asked():
    key = private_key("p256")
    payload = b'{"x": "\\u00e9"}'
    legacy = dsse.pae_model_signing_v0_2("application/vnd.in-toto+json", payload)
    envelope = dsse.Envelope(
        "application/vnd.in-toto+json", payload, (("", keys.sign(key, legacy)),)
    )
    public = keys.public_key_of(key)
    assert dsse.verify_envelope(envelope, [public]) is None
    assert dsse.verify_envelope(envelope, [public], legacy_pae=True) == public
