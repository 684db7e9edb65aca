"""`attestgate sign`, `attest`, `verify` and `admit` with evidence, end to end."""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from attestgate.cli.main import main
from attestgate.record import validate_record

from .conftest import write_keypair, write_model

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_QUARANTINE, EXIT_BLOCK = 0, 1, 2, 3, 4


def run(*argv: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    return code, out.getvalue()


def git_repository(folder: Path) -> Path:
    folder.mkdir()
    (folder / "train.py").write_text("print('train')\n")
    (folder / "uv.lock").write_text("version = 1\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    git = shutil.which("git")
    assert git is not None
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run([git, *args], cwd=folder, check=True, env=env, capture_output=True)
    subprocess.run(
        [git, "remote", "add", "origin", "https://example.com/org/train.git"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture
def release(tmp_path: Path) -> dict[str, Path]:
    """A clean model signed, attested for training and released with one key."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    model = write_model(tmp_path / "model")
    private, public = write_keypair(tmp_path, "p256")
    repo = git_repository(tmp_path / "repo")
    (tmp_path / "train.yaml").write_text("layers: 1\n")
    (tmp_path / "hp.yaml").write_text(
        "optimizer: adamw\nschedule: cosine\nbatch_size: 8\nseed: 42\nlearning_rate: 0.001\n"
    )
    (tmp_path / "train.log").write_text("epoch 1 loss 0.1\n")
    (tmp_path / "eval.json").write_text(
        json.dumps({"metrics": [{"type": "accuracy", "value": 0.9}]})
    )
    training = tmp_path / "training.intoto.jsonl"
    released = tmp_path / "release.intoto.jsonl"

    assert run("sign", model, "--key", private)[0] == EXIT_OK
    code, _ = run(
        "attest", "training",
        "--artifact", model,
        "--repository", repo,
        "--dataset", "hf://datasets/org/data@sha256:" + "a" * 64,
        "--sampling-policy", "all rows",
        "--training-config", tmp_path / "train.yaml",
        "--hyperparameters", tmp_path / "hp.yaml",
        "--started-on", "2025-01-01T00:00:00Z",
        "--log", tmp_path / "train.log",
        "--key", private,
        "--out", training,
    )  # fmt: skip
    assert code == EXIT_OK
    code, _ = run(
        "attest", "release", model,
        "--evaluation", tmp_path / "eval.json",
        "--egress", "none",
        "--filesystem", "read-only",
        "--gpu", "optional",
        "--key", private,
        "--out", released,
    )  # fmt: skip
    assert code == EXIT_OK
    return {
        "model": model,
        "public": public,
        "private": private,
        "training": training,
        "release": released,
        "home": tmp_path / "home",
    }


def admit(release: dict[str, Path], *extra: str | Path) -> tuple[int, dict]:
    code, out = run(
        "admit", release["model"],
        "--home", release["home"],
        "--trusted-key", release["public"],
        "--evidence", release["training"],
        "--evidence", release["release"],
        "--format", "json",
        *extra,
    )  # fmt: skip
    return code, json.loads(out)


def test_released_model_is_allowed(release):
    code, record = admit(release)
    assert record["findings"] == []
    assert code == EXIT_OK
    assert record["decision"] == "allow"
    assert [p["status"] for p in record["evidence"]["pieces"]] == ["verified"] * 3
    validate_record(record)


def test_changed_byte_is_blocked(release):
    weights = release["model"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    code, record = admit(release)
    assert code == EXIT_BLOCK
    assert record["decision"] == "block"
    assert "evidence.digest-mismatch" in {f["rule"] for f in record["findings"]}
    validate_record(record)


def test_added_file_is_blocked(release):
    (release["model"] / "extra.bin").write_bytes(b"\x00" * 8)
    code, record = admit(release)
    assert code == EXIT_BLOCK
    assert "evidence.unsigned-file" in {f["rule"] for f in record["findings"]}


def test_untrusted_key_quarantines(release, tmp_path):
    _, other = write_keypair(tmp_path, "p256", "other")
    code, out = run(
        "admit", release["model"], "--home", release["home"], "--trusted-key", other,
        "--evidence", release["training"], "--evidence", release["release"], "--format", "json",
    )  # fmt: skip
    record = json.loads(out)
    assert code == EXIT_QUARANTINE
    assert {f["rule"] for f in record["findings"]} == {"evidence.untrusted-signer"}


def test_signature_alone_quarantines_for_missing_claims(release):
    code, out = run(
        "admit", release["model"], "--home", release["home"], "--trusted-key", release["public"],
        "--format", "json",
    )  # fmt: skip
    record = json.loads(out)
    assert code == EXIT_QUARANTINE
    assert {f["rule"] for f in record["findings"]} == {"evidence.missing-claim"}
    assert len(record["findings"]) == 2


def test_training_claims_collected(release):
    line = release["training"].read_text().strip()
    envelope = json.loads(line)
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    predicate = statement["predicate"]
    assert predicate["codeLineage"]["repository"] == "git+https://example.com/org/train.git"
    assert len(predicate["codeLineage"]["commit"]) == 40
    assert predicate["codeLineage"]["dirty"] is False
    assert [f["name"] for f in predicate["environment"]["lockFiles"]] == ["uv.lock"]
    assert predicate["environment"]["python"]
    assert "numpy" in predicate["environment"]["libraries"]
    assert predicate["runMetadata"]["outputs"][0]["digest"] == statement["subject"][0]["digest"]


def test_model_signing_accepts_signature(release):
    from model_signing import verifying

    verifying.Config().use_elliptic_key_verifier(public_key=release["public"]).verify(
        release["model"], release["model"] / "model.sig"
    )


def test_model_signing_rejects_changed_model(release):
    from model_signing import verifying

    (release["model"] / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="Signature mismatch"):
        verifying.Config().use_elliptic_key_verifier(public_key=release["public"]).verify(
            release["model"], release["model"] / "model.sig"
        )


def test_verify_exit_statuses(release, tmp_path):
    args = ("verify", release["model"], "--trusted-key", release["public"])
    evidence = ("--evidence", release["training"], "--evidence", release["release"])
    assert run(*args, *evidence)[0] == EXIT_OK
    code, out = run(*args, "--no-discover")
    assert code == EXIT_QUARANTINE
    assert "no evidence" in out
    _, other = write_keypair(tmp_path, "p256", "other")
    assert run("verify", release["model"], "--trusted-key", other)[0] == EXIT_QUARANTINE
    (release["model"] / "config.json").write_text("{}")
    code, out = run(*args, *evidence, "--format", "json")
    document = json.loads(out)
    assert code == EXIT_BLOCK
    assert document["result"] == "failed"
    assert document["evidence"]["pieces"][0]["status"] == "failed"


def test_verify_text_output(release):
    code, out = run("verify", release["model"], "--trusted-key", release["public"])
    assert code == EXIT_OK
    assert "VERIFIED" in out
    assert "model-signature" in out
    assert "result  VERIFIED" in out


def test_unsigned_release_quarantines(release, tmp_path):
    bare = tmp_path / "bare.cdx.json"
    code, _ = run(
        "attest", "release", release["model"], "--egress", "none", "--filesystem", "read-only",
        "--gpu", "none", "--unsigned", "--out", bare,
    )  # fmt: skip
    assert code == EXIT_OK
    assert json.loads(bare.read_text())["bomFormat"] == "CycloneDX"
    code, out = run(
        "admit", release["model"], "--home", release["home"], "--trusted-key", release["public"],
        "--evidence", release["training"], "--evidence", bare, "--format", "json",
    )  # fmt: skip
    record = json.loads(out)
    assert code == EXIT_QUARANTINE
    assert "evidence.unsigned" in {f["rule"] for f in record["findings"]}


def test_release_declares_embedded_code(tmp_path):
    model = write_model(tmp_path / "model")
    (model / "modeling_tiny.py").write_text("import os\n")
    private, public = write_keypair(tmp_path, "ed25519")
    out = tmp_path / "release.intoto.jsonl"
    assert run("attest", "release", model, "--key", private, "--out", out)[0] == EXIT_OK
    code, text = run(
        "verify", model, "--trusted-key", public, "--evidence", out, "--format", "json"
    )
    document = json.loads(text)
    piece = document["evidence"]["pieces"][0]
    assert piece["facts"]["embedded-code"] == "present"
    assert "evidence.claim-contradicted" not in piece["rules"]
    assert code == EXIT_OK


def test_sign_single_file(tmp_path):
    from model_signing import verifying

    private, public = write_keypair(tmp_path, "p384")
    weights = tmp_path / "weights.safetensors"
    write_model(tmp_path / "m")
    shutil.copy(tmp_path / "m" / "model.safetensors", weights)
    code, out = run("sign", weights, "--key", private, "--format", "json")
    signature = Path(json.loads(out)["signature"])
    assert code == EXIT_OK
    assert signature == tmp_path / "weights.safetensors.sig"
    verifying.Config().use_elliptic_key_verifier(public_key=public).verify(weights, signature)
    code, _ = run("verify", weights, "--trusted-key", public)
    assert code == EXIT_OK


def test_sign_with_certificate(tmp_path, model):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test root")])
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "signer")]))
        .issuer_name(root_name).public_key(leaf_key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    key = tmp_path / "leaf.pem"
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "leaf.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    code, _ = run(
        "sign", model, "--key", key, "--certificate", tmp_path / "leaf.crt",
        "--certificate-chain", tmp_path / "root.crt",
    )  # fmt: skip
    assert code == EXIT_OK
    assert run("verify", model, "--certificate-chain", tmp_path / "root.crt")[0] == EXIT_OK
    assert run("verify", model)[0] == EXIT_QUARANTINE


def test_sign_refuses_ed25519_key(tmp_path, model, capsys):
    private, _ = write_keypair(tmp_path, "ed25519")
    code, _ = run("sign", model, "--key", private)
    assert code == EXIT_INTERNAL
    assert "ECDSA" in capsys.readouterr().err


def test_sign_needs_key(model):
    assert run("sign", model)[0] == EXIT_USAGE


def test_attest_needs_key_or_unsigned(tmp_path, model):
    assert run("attest", "release", model, "--out", tmp_path / "o.jsonl")[0] == EXIT_USAGE


def test_admit_identity_without_issuer_is_usage_error(tmp_path, model):
    code, _ = run(
        "admit", model, "--home", tmp_path / "h", "--certificate-identity", "a@example.com"
    )
    assert code == EXIT_USAGE


def test_admit_missing_evidence_is_usage_error(tmp_path, model):
    code, _ = run("admit", model, "--home", tmp_path / "h", "--evidence", tmp_path / "missing.json")
    assert code == EXIT_USAGE


def test_attest_training_rejects_unpinned_image(tmp_path, model):
    private, _ = write_keypair(tmp_path, "p256")
    code, _ = run(
        "attest", "training", "--artifact", model, "--base-image", "python:3.11",
        "--key", private, "--out", tmp_path / "t.jsonl",
    )  # fmt: skip
    assert code == EXIT_USAGE


def test_policy_trust_mapping_is_used(release):
    from dataclasses import replace

    from attestgate.pipeline import admit as admit_api
    from attestgate.policy import load_default_policy

    policy = load_default_policy()
    document = {**policy.document, "trust": {"keys": [str(release["public"])]}}
    admission = admit_api(
        release["model"],
        policy=replace(policy, document=document),
        home=release["home"],
        evidence=[release["training"], release["release"]],
    )
    assert admission.action == "allow"
    assert admission.record["evidence"]["trust"]["keys"][0]["source"] == str(release["public"])


def test_claims_file_and_local_dataset(tmp_path, model):
    private, _ = write_keypair(tmp_path, "p256")
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        "codeLineage:\n  repository: git+https://example.com/r\n  commit: " + "b" * 40 + "\n"
    )
    out = tmp_path / "t.intoto.jsonl"
    code, _ = run(
        "attest", "training", "--artifact", model, "--dataset", data, "--claims", claims,
        "--repository", tmp_path, "--key", private, "--out", out,
    )  # fmt: skip
    assert code == EXIT_OK
    import base64

    statement = json.loads(base64.b64decode(json.loads(out.read_text())["payload"]))
    dataset = statement["predicate"]["dataLineage"]["datasets"][0]
    assert dataset["uri"] == data.resolve().as_uri()
    assert len(dataset["digest"]["sha256"]) == 64
    assert statement["predicate"]["codeLineage"]["commit"] == "b" * 40
