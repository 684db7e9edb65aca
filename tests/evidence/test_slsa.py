"""SLSA provenance (slsa-verifier's bcr bundles) and the verification summary vector."""

from __future__ import annotations

import json

import pytest

from attestgate.evidence import Status, TrustConfig, signatures
from attestgate.evidence.interface import EvidenceLimits
from attestgate.evidence.intoto import parse_statement
from attestgate.evidence.slsa import check_verification_summary

from .conftest import DATA, check

BCR = DATA / "slsa-verifier" / "bcr"
VSA = DATA / "slsa-verifier" / "vsa" / "gce" / "v1"
GITHUB = "https://token.actions.githubusercontent.com"


def bazel_contrib() -> TrustConfig:
    return TrustConfig.from_options(
        certificate_identity_regexp=r"^https://github\.com/bazel-contrib/",
        certificate_oidc_issuer=GITHUB,
    )


@pytest.mark.parametrize("name", ["MODULE.bazel", "rules_lint-v1.3.1.tar.gz"])
def test_provenance_verifies(name):
    report = check(BCR / name, [BCR / f"{name}.intoto.jsonl"], bazel_contrib())
    piece = report.pieces[0]
    assert report.status is Status.VERIFIED
    assert piece.predicate_type == "https://slsa.dev/provenance/v1"
    assert piece.facts["source_repository"] == "https://github.com/aspect-build/rules_lint"
    assert piece.facts["resolved_dependencies"][0]["digest"] == {
        "gitCommit": "8f70009fde0c94ade6ce2a054b94718c819126ec"
    }


def test_wrong_signer_is_forged():
    name = "MODULE-wrong-signer.bazel"
    report = check(BCR / name, [BCR / f"{name}.intoto.jsonl"], bazel_contrib())
    forged = [f for f in report.all_findings if f.rule == "evidence.forged-provenance"]
    assert report.status is Status.FAILED
    assert forged[0].severity.label == "critical"
    assert "loosebazooka" in forged[0].message


def test_wrong_signer_is_forged_even_when_trusted():
    # Trusting the signer does not make its claim about another builder true.
    name = "MODULE-wrong-signer.bazel"
    trust = TrustConfig.from_options(
        certificate_identity_regexp=r"^https://github\.com/", certificate_oidc_issuer=GITHUB
    )
    report = check(BCR / name, [BCR / f"{name}.intoto.jsonl"], trust)
    assert report.pieces[0].signer.trusted
    assert "evidence.forged-provenance" in {f.rule for f in report.all_findings}


def test_provenance_for_other_artifact_mismatches():
    report = check(
        BCR / "rules_lint-v1.3.1.tar.gz", [BCR / "MODULE.bazel.intoto.jsonl"], bazel_contrib()
    )
    assert "evidence.digest-mismatch" in {f.rule for f in report.all_findings}


def test_untrusted_builder_quarantines():
    trust = TrustConfig.from_options(
        certificate_identity="https://example.com/builder", certificate_oidc_issuer=GITHUB
    )
    report = check(BCR / "MODULE.bazel", [BCR / "MODULE.bazel.intoto.jsonl"], trust)
    assert report.status is Status.INCOMPLETE


def test_vsa_envelope_verifies_with_raw_ecdsa_key():
    doc = json.loads((VSA / "gke-gce-pre.bcid-vsa.jsonl").read_text())
    trust = TrustConfig.from_options(trusted_keys=[VSA / "vsa_signing_public_key.pem"])
    content = signatures.verify_envelope_document(doc, "vsa", trust)
    assert content.valid
    assert content.signer.trusted
    statement = parse_statement(content.envelope.payload, EvidenceLimits())
    findings, facts = check_verification_summary(statement, "vsa")
    assert findings == []
    assert facts["verification_result"] == "PASSED"
    assert "SLSA_BUILD_LEVEL_2" in facts["verified_levels"]


def test_vsa_with_other_key_is_untrusted(tmp_path):
    from .conftest import write_keypair

    _, other = write_keypair(tmp_path, "p256")
    doc = json.loads((VSA / "gke-gce-pre.bcid-vsa.jsonl").read_text())
    content = signatures.verify_envelope_document(
        doc, "vsa", TrustConfig.from_options(trusted_keys=[other])
    )
    assert content.signature == "unverifiable"
    assert content.findings[0].rule == "evidence.untrusted-signer"


def test_vsa_with_changed_payload_is_invalid():
    doc = json.loads((VSA / "gke-gce-pre.bcid-vsa.jsonl").read_text())
    doc["signatures"][0]["keyid"] = ""
    doc["payload"] = doc["payload"].replace("UEFTU0VE", "RkFJTEVE")
    trust = TrustConfig.from_options(trusted_keys=[VSA / "vsa_signing_public_key.pem"])
    content = signatures.verify_envelope_document(doc, "vsa", trust)
    assert content.signature == "invalid"


def test_vsa_binds_no_file(tmp_path):
    # The summary's subject is a GCE image id, not a file digest.
    artifact = tmp_path / "image.raw"
    artifact.write_bytes(b"image")
    trust = TrustConfig.from_options(trusted_keys=[VSA / "vsa_signing_public_key.pem"])
    report = check(artifact, [VSA / "gke-gce-pre.bcid-vsa.jsonl"], trust)
    assert report.pieces[0].signature == "valid"
    assert "evidence.digest-mismatch" in {f.rule for f in report.all_findings}


def test_failed_summary_is_contradiction():
    from attestgate.evidence.intoto import Statement, Subject

    statement = Statement(
        "https://in-toto.io/Statement/v1",
        (Subject("x", {"sha256": "0" * 64}),),
        "https://slsa.dev/verification_summary/v1",
        {"verifier": {"id": "v"}, "verificationResult": "FAILED"},
    )
    findings, _ = check_verification_summary(statement, "vsa")
    assert findings[0].rule == "evidence.claim-contradicted"
