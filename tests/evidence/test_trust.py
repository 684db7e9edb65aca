"""Trust configuration: options, policy mapping, chains and trusted roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attestgate.errors import UsageError
from attestgate.evidence import TrustConfig, TrustedIdentity
from attestgate.evidence.interface import EvidenceError
from attestgate.evidence.trust import load_trusted_root, parse_trusted_root

from .conftest import DATA

CONFORMANCE = DATA / "sigstore-conformance" / "bundle-verify"


def test_identity_needs_issuer():
    with pytest.raises(UsageError, match="OIDC issuer"):
        TrustConfig.from_options(certificate_identity="a@example.com")


def test_issuer_needs_identity():
    with pytest.raises(UsageError, match="subject"):
        TrustConfig.from_options(certificate_oidc_issuer="https://issuer")


def test_exact_and_regexp_are_exclusive():
    with pytest.raises(UsageError, match="both given"):
        TrustConfig.from_options(
            certificate_identity="a", certificate_identity_regexp="b", certificate_oidc_issuer="i"
        )


def test_bad_regexp_rejected():
    with pytest.raises(UsageError, match="invalid"):
        TrustedIdentity(subject_regexp="(", issuer="i")


def test_identity_matching():
    exact = TrustedIdentity(subject="a@example.com", issuer="https://i")
    assert exact.matches(["a@example.com"], "https://i")
    assert not exact.matches(["a@example.com"], "https://other")
    assert not exact.matches(["b@example.com"], "https://i")
    # As in cosign, an unanchored pattern is searched for anywhere in the name.
    loose = TrustedIdentity(subject_regexp="example", issuer="https://i")
    assert loose.matches(["https://evil.test/example"], "https://i")
    anchored = TrustedIdentity(subject_regexp=r"^https://github\.com/org/", issuer="https://i")
    assert not anchored.matches(["https://evil.test/https://github.com/org/"], "https://i")


def test_chain_without_root_rejected(tmp_path):
    chain = tmp_path / "int.pem"
    chain.write_bytes((DATA / "model-signing/keys/certificate/int-ca-cert.pem").read_bytes())
    with pytest.raises(EvidenceError, match="self-signed root"):
        TrustConfig.from_options(certificate_chain=chain)


def test_chain_splits_anchors_and_intermediates(tmp_path):
    chain = tmp_path / "chain.pem"
    certs = DATA / "model-signing/keys/certificate"
    chain.write_bytes(
        (certs / "int-ca-cert.pem").read_bytes() + (certs / "ca-cert.pem").read_bytes()
    )
    config = TrustConfig.from_options(certificate_chain=chain)
    assert len(config.chain_anchors) == 1
    assert len(config.chain_intermediates) == 1


def test_from_mapping_resolves_relative_paths(tmp_path):
    from .conftest import write_keypair

    write_keypair(tmp_path, "ed25519", "producer")
    config = TrustConfig.from_mapping(
        {
            "keys": ["producer.pub"],
            "identities": [{"subjectRegExp": "^https://github.com/org/", "issuer": "https://i"}],
            "trustedRoot": "root.json",
        },
        tmp_path,
    )
    assert config.keys[0].algorithm == "ed25519"
    assert config.identities[0].subject_regexp == "^https://github.com/org/"
    assert config.trusted_root_path == tmp_path / "root.json"


def test_merge_keeps_both():
    a = TrustConfig(identities=[TrustedIdentity(subject="a", issuer="i")])
    b = TrustConfig(identities=[TrustedIdentity(subject="b", issuer="i")])
    assert [i.subject for i in a.merge(b).identities] == ["a", "b"]


def test_bundled_production_root_loads_offline():
    root, source, digest = load_trusted_root(None)
    assert source == "sigstore-python:production"
    assert len(digest) == 64
    assert root.get_fulcio_certs()


def test_client_trust_config_accepted():
    document = json.loads((CONFORMANCE / "rekor2-happy-path" / "trusted_root.json").read_text())
    config = {
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": document,
    }
    root = parse_trusted_root(json.dumps(config).encode(), "config")
    assert root.get_timestamp_authorities()


def test_timestamp_authority_end_is_inclusive():
    case = CONFORMANCE / "trust-root-tsa-validity-end-inclusive" / "trusted_root.json"
    root = parse_trusted_root(case.read_bytes(), "root")
    end = root.get_timestamp_authorities()[0].validity_period_end
    assert end.microsecond == 1
    assert end.second == 20


def test_invalid_trusted_root_rejected(tmp_path):
    bad = tmp_path / "root.json"
    bad.write_text('{"mediaType": "nonsense"}')
    with pytest.raises(EvidenceError, match="invalid"):
        load_trusted_root(bad)


def test_missing_trusted_root_rejected(tmp_path):
    with pytest.raises(EvidenceError, match="could not be read"):
        load_trusted_root(Path(tmp_path / "missing.json"))
