import hashlib
import json
import os
import shutil
from base64 import b64decode
from pathlib import Path

import pytest

from attestgate.identify.stream import CHUNK_SIZE, process_file
from attestgate.identify.walk import Entry, walk
from attestgate.pipeline import inspect
from attestgate.scanners.interface import Limits

VECTORS = Path(__file__).resolve().parents[1] / "data" / "model-signing"


def rules(findings):
    return {f.rule for f in findings}


def test_file_digest_is_sha256(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01" * 1000)
    result = inspect(path)
    assert result.artifact.sha256 == hashlib.sha256(b"\x00\x01" * 1000).hexdigest()
    assert result.artifact.kind == "file"


def _statement(folder):
    bundle = json.loads((folder / "model.sig").read_text())
    return json.loads(b64decode(bundle["dsseEnvelope"]["payload"]))


ROOT_DIGEST_VECTORS = sorted(
    p.name
    for p in VECTORS.iterdir()
    if p.is_dir() and p.name != "keys" and _statement(p)["subject"][0]["name"] == p.name
)


def test_root_digest_vectors_found():
    assert len(ROOT_DIGEST_VECTORS) >= 6


@pytest.mark.parametrize("name", ROOT_DIGEST_VECTORS)
def test_directory_digest_matches_model_signing(name, tmp_path):
    # model-signing signed these directories with its own digest as the
    # statement subject; the gate must compute the same value over the files
    # the signature covers (the signer left out "ignore-me").
    folder = VECTORS / name
    statement = _statement(folder)
    for resource in statement["predicate"]["resources"]:
        shutil.copy(folder / resource["name"], tmp_path / resource["name"])
    result = inspect(tmp_path)
    assert result.artifact.sha256 == statement["subject"][0]["digest"]["sha256"]


def test_file_digests_match_model_signing_v0_2():
    # model-signing 0.2 listed one subject per file.
    folder = VECTORS / "v0.2.0-certificate"
    subjects = {s["name"]: s["digest"]["sha256"] for s in _statement(folder)["subject"]}
    result = inspect(folder)
    ours = {f.path: f.sha256 for f in result.artifact.files}
    assert ours == subjects


def test_directory_digest_order_and_exclusions(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"b")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.bin").write_bytes(b"z")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"ref")
    (tmp_path / "model.sig").write_bytes(b"{}")
    result = inspect(tmp_path)
    expected = hashlib.sha256(
        hashlib.sha256(b"z").digest() + hashlib.sha256(b"b").digest()
    ).hexdigest()
    assert [f.path for f in result.artifact.files] == ["a/z.bin", "b.bin"]
    assert result.artifact.sha256 == expected
    assert ".git" in result.artifact.excluded
    assert "model.sig" in result.artifact.excluded


def test_symlink_escape_not_followed(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    (model / "leak").symlink_to(outside)
    result = walk(model)
    assert [e.path for e in result.entries] == ["w.bin"]
    assert "identify.symlink-escape" in rules(result.findings)


def test_symlink_inside_root_hashed_under_link_name(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"data")
    (tmp_path / "alias.bin").symlink_to("real.bin")
    result = walk(tmp_path)
    assert [e.path for e in result.entries] == ["alias.bin", "real.bin"]


def test_directory_loop_through_symlink(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"w")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to("..")
    result = walk(tmp_path)
    assert [e.path for e in result.entries] == ["w.bin"]
    assert "identify.directory-loop" in rules(result.findings)


def test_directory_loop_quarantines(tmp_path):
    from attestgate.pipeline import admit
    from attestgate.policy.engine import default_policy_bytes, parse_policy

    # Without provenance every admission quarantines; allow that here so the
    # decision shows what the loop alone leads to.
    text = default_policy_bytes().replace(
        b"provenance.missing: quarantine", b"provenance.missing: allow"
    )
    policy = parse_policy(text, "test")
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    (model / "self").symlink_to(".")
    admission = admit(model, home=tmp_path / "home", policy=policy)
    assert admission.action == "quarantine"
    assert "identify.directory-loop" in {f["rule"] for f in admission.record["findings"]}


def test_sibling_directory_link_is_low(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"w")
    (tmp_path / "b").symlink_to("a")
    result = walk(tmp_path)
    assert [e.path for e in result.entries] == ["a/w.bin"]
    assert rules(result.findings) == {"identify.symlink-directory"}


def test_fifo_not_opened(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"w")
    os.mkfifo(tmp_path / "pipe")
    result = walk(tmp_path)
    assert [e.path for e in result.entries] == ["w.bin"]
    assert "identify.special-file" in rules(result.findings)


def test_empty_file_is_finding(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    result = inspect(path)
    assert "identify.empty" in rules(result.findings)


def test_empty_directory_is_finding(tmp_path):
    result = inspect(tmp_path)
    assert "identify.empty" in rules(result.findings)


def test_unreadable_file_is_finding(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"w")
    real_open = os.open

    def denying_open(p, flags, *args):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", denying_open)
    report = process_file(Entry("w.bin", path), Limits())
    assert rules(report.findings) == {"identify.unreadable"}
    assert report.complete is False


def test_file_growing_while_read_is_finding(tmp_path):
    path = tmp_path / "growing.bin"
    path.write_bytes(b"\x00" * (CHUNK_SIZE * 2))
    appended = []

    def append_once(_n):
        if not appended:
            with path.open("ab") as fh:
                fh.write(b"\x01" * 1000)
            appended.append(True)

    report = process_file(Entry("growing.bin", path), Limits(), progress=append_once)
    assert "identify.file-changed" in rules(report.findings)


def test_missing_path_is_usage_error(tmp_path):
    from attestgate.errors import UsageError

    with pytest.raises(UsageError, match="does-not-exist"):
        inspect(tmp_path / "does-not-exist")


def test_copy_of_vectors_present():
    # The model-signing vectors are copied into the test data with their source.
    assert (VECTORS / "SOURCE.md").is_file()
    assert shutil.which("true")


def test_pickle_named_safetensors_is_high(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04K\x01.")
    report = process_file(Entry("model.safetensors", path), Limits())
    mismatch = [f for f in report.findings if f.rule == "identify.extension-mismatch"]
    assert len(mismatch) == 1
    assert mismatch[0].severity.label == "high"


def test_json_named_gguf_is_medium(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b'{"not": "gguf"}')
    report = process_file(Entry("model.gguf", path), Limits())
    mismatch = [f for f in report.findings if f.rule == "identify.extension-mismatch"]
    assert mismatch[0].severity.label == "medium"


def test_matching_extension_no_finding(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"a": 1}')
    report = process_file(Entry("config.json", path), Limits())
    assert "identify.extension-mismatch" not in rules(report.findings)
