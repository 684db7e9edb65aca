"""sigstore-conformance bundle verification cases, run offline through the evidence step.

Every case folder ending in ``_fail`` must not verify; every other case must.
sigstore-python verifies the keyless cases. It does not handle the key-signed
``managed-key-*`` cases, so those go through attestgate's own key verifier:
the signature, the log entry's inclusion and the log entry's body.

The suite tests bundle verification: signature, signer and subject. Its DSSE
payloads are SLSA provenance whose builder ids name other workflows than the
conformance signer, which the SLSA check rightly calls forged; that layer is
asserted separately below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attestgate.evidence import Status, TrustConfig, TrustedIdentity
from attestgate.evidence.interface import EvidenceError

from .conftest import DATA, check

CASES = DATA / "sigstore-conformance" / "bundle-verify"
DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def _text(case: Path, name: str, default: str) -> str:
    path = case / name
    return path.read_text().strip() if path.exists() else default


def trust_for(case: Path) -> TrustConfig:
    identity = TrustedIdentity(
        subject=_text(case, "identity", DEFAULT_IDENTITY),
        issuer=_text(case, "issuer", DEFAULT_ISSUER),
    )
    config = TrustConfig.from_options(
        trusted_keys=[case / "key.pub"] if (case / "key.pub").exists() else [],
        trusted_root=case / "trusted_root.json" if (case / "trusted_root.json").exists() else None,
    )
    config.identities.append(identity)
    return config


BUNDLE_RULES = {
    "evidence.invalid-signature",
    "evidence.digest-mismatch",
    "evidence.untrusted-signer",
    "evidence.malformed",
    "check.failed",
}


def report_for(name: str):
    case = CASES / name
    artifact = case / "artifact" if (case / "artifact").exists() else CASES / "a.txt"
    return check(artifact, [case / "bundle.sigstore.json"], trust_for(case))


def outcome(name: str) -> tuple[bool, set[str]]:
    """Return whether the bundle verifies (valid, trusted, bound) and the bundle-level rules."""
    try:
        report = report_for(name)
    except EvidenceError:
        # An unreadable trusted key verifies nothing.
        return False, {"trust"}
    piece = report.pieces[0]
    found = {f.rule for f in piece.findings} & BUNDLE_RULES
    verified = (
        piece.signature == "valid"
        and piece.signer is not None
        and piece.signer.trusted
        and piece.bound
        and not found
    )
    return verified, found


def test_case_count():
    assert len(NAMES) == 70


@pytest.mark.parametrize("name", NAMES)
def test_conformance_case(name):
    verified, found = outcome(name)
    assert verified is not name.endswith("_fail"), found


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("_fail")])
def test_failing_case_names_a_reason(name):
    _, found = outcome(name)
    assert found


def test_key_case_without_key_is_untrusted():
    verified, found = outcome("managed-key-no-key_fail")
    assert not verified
    assert found == {"evidence.untrusted-signer"}


@pytest.mark.parametrize("name", ["happy-path-intoto-in-dsse-v3", "intoto-with-custom-trust-root"])
def test_conformance_provenance_is_forged_for_slsa(name):
    # Valid bundles, but the provenance names a builder that did not sign it.
    report = report_for(name)
    assert report.status is Status.FAILED
    assert "evidence.forged-provenance" in {f.rule for f in report.all_findings}


def test_conformance_provenance_without_parameters_breaks_schema():
    report = report_for("rekor2-dsse-happy-path")
    assert "evidence.schema-invalid" in {f.rule for f in report.all_findings}


def test_key_case_with_other_valid_key_fails(tmp_path):
    from .conftest import write_keypair

    case = CASES / "managed-key-happy-path"
    _, other = write_keypair(tmp_path, "p256")
    trust = TrustConfig.from_options(trusted_keys=[other])
    report = check(CASES / "a.txt", [case / "bundle.sigstore.json"], trust)
    assert report.status is not Status.VERIFIED
    assert report.pieces[0].signature == "unverifiable"


def test_key_case_records_log_entry():
    case = CASES / "managed-key-happy-path"
    report = check(CASES / "a.txt", [case / "bundle.sigstore.json"], trust_for(case))
    assert report.pieces[0].facts["transparency_log"] == "verified"
    assert report.pieces[0].signer.trusted


def test_keyless_signer_with_other_identity_is_untrusted():
    case = CASES / "happy-path-v0.3"
    trust = TrustConfig.from_options(
        certificate_identity="someone@example.com", certificate_oidc_issuer=DEFAULT_ISSUER
    )
    report = check(CASES / "a.txt", [case / "bundle.sigstore.json"], trust)
    assert report.status is Status.INCOMPLETE
    assert "evidence.untrusted-signer" in {f.rule for f in report.all_findings}


def test_keyless_identity_regexp_matches():
    case = CASES / "happy-path-v0.3"
    trust = TrustConfig.from_options(
        certificate_identity_regexp=r"^https://github\.com/sigstore-conformance/",
        certificate_oidc_issuer=DEFAULT_ISSUER,
    )
    report = check(CASES / "a.txt", [case / "bundle.sigstore.json"], trust)
    assert report.status is Status.VERIFIED


def test_message_signature_for_other_artifact_mismatches(tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("not the signed artifact\n")
    case = CASES / "happy-path-v0.3"
    report = check(other, [case / "bundle.sigstore.json"], trust_for(case))
    assert report.status is Status.FAILED
    assert "evidence.digest-mismatch" in {f.rule for f in report.all_findings}
