"""The evidence step end to end over hand-made evidence files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attestgate.errors import UsageError
from attestgate.evidence import EvidenceLimits, Status, TrustConfig, discover, verify_evidence
from attestgate.evidence.collect import artifact_digest
from attestgate.evidence.intoto import statement_json
from attestgate.evidence.produce import sign_statement
from attestgate.evidence.training import build_training_predicate
from attestgate.pipeline import inspect

from .conftest import check, rules
from .test_training import full_inputs

TRAINING = "https://attestgate.dev/training-claims/v1"


def training_statement(digest: str, **changes) -> dict:
    inputs = full_inputs()
    inputs.outputs = [{"name": "model", "digest": {"sha256": digest}}]
    for key, value in changes.items():
        setattr(inputs, key, value)
    return statement_json(
        [{"name": "model", "digest": {"sha256": digest}}],
        TRAINING,
        build_training_predicate(inputs),
    )


def write_signed(path: Path, statement: dict, key: Path) -> Path:
    path.write_text(sign_statement(statement, key=key) + "\n")
    return path


def test_no_evidence_is_provenance_missing(model):
    report = check(model)
    assert [f.rule for f in report.all_findings] == ["provenance.missing"]
    assert report.claims == {}
    assert report.status is Status.INCOMPLETE


def test_missing_evidence_path_is_usage_error(model, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check(model, [tmp_path / "missing.json"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not text", "not UTF-8"),
        (b"{not json", "neither JSON nor JSON Lines"),
        (b"", "empty"),
        (b"[" * 100_000 + b"]" * 100_000, "too deeply"),
    ],
)
def test_unreadable_evidence_is_malformed(model, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    report = check(model, [path])
    found = [f for f in report.all_findings if f.rule == "evidence.malformed"]
    assert found[0].severity.label == "high"
    assert message in found[0].message


def test_json_that_is_no_evidence_is_malformed(model, tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"hello": "world"}')
    assert "evidence.malformed" in rules(check(model, [path]))


def test_oversized_evidence_is_malformed(model, tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"a": "' + "x" * 2000 + '"}')
    inspection = inspect(model)
    report = verify_evidence(
        inspection.artifact,
        inspection.findings,
        evidence=[path],
        discover=False,
        limits=EvidenceLimits(max_file_bytes=1000),
    )
    assert "larger than" in report.pieces[0].findings[0].message


def test_too_many_lines_is_malformed(model, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text('{"_type": "x"}\n' * 5)
    inspection = inspect(model)
    report = verify_evidence(
        inspection.artifact,
        inspection.findings,
        evidence=[path],
        discover=False,
        limits=EvidenceLimits(max_pieces_per_file=3),
    )
    assert "more than 3 documents" in report.pieces[0].findings[0].message


def test_bare_statement_is_unsigned(model, tmp_path):
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(training_statement(artifact_digest(model))))
    report = check(model, [path])
    piece = report.pieces[0]
    assert piece.signature == "unsigned"
    assert piece.bound
    assert "evidence.unsigned" in {f.rule for f in piece.findings}
    assert report.status is Status.INCOMPLETE


def test_signed_training_claims_verify(model, tmp_path, keypair):
    private, public = keypair("ed25519")
    path = write_signed(
        tmp_path / "t.intoto.jsonl", training_statement(artifact_digest(model)), private
    )
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]))
    assert report.status is Status.VERIFIED
    assert all(v["status"] == "complete" for v in report.claims["training"].values())
    assert all(v["status"] == "missing" for v in report.claims["release"].values())
    missing = [f for f in report.findings if f.rule == "evidence.missing-claim"]
    assert len(missing) == 1
    assert "attestgate attest release" in missing[0].remediation


def test_incomplete_claim_named_with_remedy(model, tmp_path, keypair):
    private, public = keypair("p384")
    statement = training_statement(artifact_digest(model), sampling_policy="", accelerator="")
    path = write_signed(tmp_path / "t.jsonl", statement, private)
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]))
    claims = {
        f.details.get("claim"): f for f in report.findings if f.rule == "evidence.missing-claim"
    }
    assert "--sampling-policy" in claims["data-lineage"].remediation
    assert "compute.accelerator" in claims["compute"].message


def test_statement_for_other_artifact_mismatches(model, tmp_path, keypair):
    private, public = keypair("p256")
    path = write_signed(tmp_path / "t.jsonl", training_statement("ee" * 32), private)
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]))
    assert "evidence.digest-mismatch" in rules(report)
    # A failed piece vouches for nothing, so the training claims count as missing.
    assert report.claims["training"]["data-lineage"]["status"] == "missing"


def test_untrusted_signer_still_reports_claims(model, tmp_path, keypair):
    private, _ = keypair("p256", "producer")
    _, other = keypair("p256", "other")
    path = write_signed(tmp_path / "t.jsonl", training_statement(artifact_digest(model)), private)
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[other]))
    assert report.pieces[0].signature == "unverifiable"
    assert report.status is Status.INCOMPLETE
    assert "evidence.untrusted-signer" in rules(report)


def test_json_lines_with_two_pieces(model, tmp_path, keypair):
    private, public = keypair("rsa")
    digest = artifact_digest(model)
    first = sign_statement(training_statement(digest), key=private)
    other = statement_json(
        [{"name": "m", "digest": {"sha256": digest}}], "https://example.com/p", {}
    )
    second = sign_statement(other, key=private)
    path = tmp_path / "both.intoto.jsonl"
    path.write_text(first + "\n\n" + second + "\n")
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]))
    assert [p.source.rsplit(":", 1)[1] for p in report.pieces] == ["1", "3"]
    assert "evidence.unknown-predicate" in rules(report)
    assert report.status is Status.VERIFIED


def test_envelope_with_other_payload_type(model, tmp_path, keypair):
    from attestgate.evidence import dsse, keys

    private, public = keypair("p256")
    envelope = dsse.sign_envelope("text/plain", b"hello", keys.load_private_key(private))
    path = tmp_path / "e.dsse.json"
    path.write_text(json.dumps(envelope.to_json()))
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]))
    assert "evidence.schema-invalid" in rules(report)


def test_statement_with_wrong_type(model, tmp_path, keypair):
    private, public = keypair("p256")
    statement = training_statement(artifact_digest(model))
    statement["_type"] = "https://example.com/NotAStatement"
    path = write_signed(tmp_path / "t.jsonl", statement, private)
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]))
    assert "evidence.schema-invalid" in rules(report)


def test_unexpected_error_fails_closed(model, tmp_path, monkeypatch):
    from attestgate.evidence import verify as verify_module

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(verify_module, "_verify_document", explode)
    path = tmp_path / "x.json"
    path.write_text("{}")
    report = check(model, [path])
    failed = [f for f in report.all_findings if f.rule == "check.failed"]
    assert failed[0].severity.label == "high"
    assert "boom" in failed[0].message


def test_discovery_convention(tmp_path, model):
    (tmp_path / "model.training.intoto.jsonl").write_text("{}")
    (tmp_path / "model.cdx.json").write_text("{}")
    (tmp_path / "model.txt").write_text("not evidence")
    (tmp_path / "other.intoto.jsonl").write_text("{}")
    (model / "model.sig").write_text("{}")
    (model / "inside.intoto.jsonl").write_text("{}")
    names = [p.name for p in discover(model)]
    assert names == ["model.sig", "model.cdx.json", "model.training.intoto.jsonl"]


def test_discovery_next_to_file(tmp_path):
    artifact = tmp_path / "weights.safetensors"
    artifact.write_bytes(b"x")
    (tmp_path / "weights.safetensors.sigstore.json").write_text("{}")
    (tmp_path / "weights.safetensors.sig").write_text("{}")
    (tmp_path / "weights.bin.sig").write_text("{}")
    assert [p.name for p in discover(artifact)] == [
        "weights.safetensors.sig",
        "weights.safetensors.sigstore.json",
    ]


def test_same_file_given_and_found_counted_once(model, tmp_path, keypair):
    private, public = keypair("p256")
    path = write_signed(
        tmp_path / "model.t.intoto.jsonl", training_statement(artifact_digest(model)), private
    )
    report = check(model, [path], TrustConfig.from_options(trusted_keys=[public]), discover=True)
    assert len(report.pieces) == 1
