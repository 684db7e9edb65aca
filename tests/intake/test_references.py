"""Reference parsing and recognition of local image and cache layouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attestgate.errors import UsageError
from attestgate.intake import inspect_local
from attestgate.intake.references import (
    HfReference,
    LocalKind,
    OciReference,
    detect_local,
    is_reference,
    parse_reference,
)
from attestgate.pipeline import inspect

from .images import build_image, file, layer_tar, write_docker_archive, write_layout

DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"oci://registry.example:5000/team/model@{DIGEST}",
            OciReference("registry.example:5000", "team/model", None, DIGEST),
        ),
        ("oci://127.0.0.1:5000/model:v1.2", OciReference("127.0.0.1:5000", "model", "v1.2", None)),
        ("oci://ghcr.io/org/model", OciReference("ghcr.io", "org/model", "latest", None)),
        (f"oci://[::1]:5000/m:t@{DIGEST}", OciReference("[::1]:5000", "m", "t", DIGEST)),
        (
            f"oci:/registry.example/model@{DIGEST}",
            OciReference("registry.example", "model", None, DIGEST),
        ),
    ],
)
def test_oci_references_parse(text: str, expected: OciReference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "oci://registry.example",
        "oci://user:pass@registry.example/model",
        "oci://registry.example/Model",
        "oci://registry.example/model@sha256:abc",
        "oci://registry.example/model:bad/tag",
        "oci://bad_host!/model",
    ],
)
def test_oci_references_rejected(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"hf://owner/name@{COMMIT}", HfReference("owner/name", COMMIT)),
        ("hf://owner/name", HfReference("owner/name", "main")),
        ("hf://owner/name@v1.0", HfReference("owner/name", "v1.0")),
        ("hf://datasets/owner/data@refs/pr/1", HfReference("owner/data", "refs/pr/1", "dataset")),
        ("hf:/owner/name@main", HfReference("owner/name", "main")),
    ],
)
def test_hf_references_parse(text: str, expected: HfReference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text", ["hf://gpt2", "hf://owner/na--me", "hf://owner/name@../x", "hf://a/b/c/d"]
)
def test_hf_references_rejected(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


def test_pinned_properties() -> None:
    assert parse_reference(f"hf://o/n@{COMMIT}").pinned
    assert not parse_reference("hf://o/n@main").pinned
    assert parse_reference(f"oci://r.example/n@{DIGEST}").pinned
    assert not parse_reference("oci://r.example/n:v1").pinned


def test_local_file_named_like_reference(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    (tmp_path / "hf:").mkdir()
    assert not is_reference("hf:")
    assert is_reference(Path("hf://owner/name"))


def test_detect_layout_and_archive(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("a.txt", b"a")])])
    assert detect_local(write_layout(tmp_path / "layout", image)) is LocalKind.OCI_LAYOUT
    archive = write_docker_archive(tmp_path / "image.tar", image)
    assert detect_local(archive) is LocalKind.DOCKER_ARCHIVE
    compressed = write_docker_archive(tmp_path / "image.tar.gz", image, gzip_archive=True)
    assert detect_local(compressed) is LocalKind.DOCKER_ARCHIVE


def test_plain_tar_not_an_image(tmp_path: Path) -> None:
    plain = tmp_path / "data.tar"
    plain.write_bytes(layer_tar([file("data/a.csv", b"1,2\n")]))
    assert detect_local(plain) is None
    assert detect_local(tmp_path) is None


def make_snapshot(cache: Path, files: dict[str, bytes], repo: str = "models--owner--name") -> Path:
    """Lay out a huggingface_hub cache entry: blobs, a snapshot of links, and refs/main."""
    root = cache / repo
    snapshot = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for number, (name, data) in enumerate(files.items()):
        blob = root / "blobs" / f"blob{number}"
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_cache_snapshot_follows_blob_links(tmp_path: Path) -> None:
    snapshot = make_snapshot(
        tmp_path, {"config.json": b'{"model_type": "x"}', "sub/w.bin": b"\0" * 8}
    )
    assert detect_local(snapshot) is LocalKind.HF_CACHE_SNAPSHOT
    inspection = inspect(snapshot)
    assert [f.path for f in inspection.artifact.files] == ["config.json", "sub/w.bin"]
    reference = inspection.artifact.to_json()["reference"]
    assert reference["name"] == "owner/name"
    assert reference["resolved"] == COMMIT
    assert reference["refs"] == ["main"]
    assert not [f for f in inspection.findings if f.rule.startswith("identify.symlink")]


def test_cache_snapshot_link_escape(tmp_path: Path) -> None:
    snapshot = make_snapshot(tmp_path / "cache", {"config.json": b"{}"})
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (snapshot / "stolen.txt").symlink_to(secret)
    local = inspect_local(snapshot)
    assert local is not None
    [finding] = [f for f in local.findings if f.rule == "intake.cache-link-escape"]
    assert finding.file == "stolen.txt"
    assert "stolen.txt" not in [f.path for f in local.artifact.files]


def test_cache_snapshot_digest_matches_plain_copy(tmp_path: Path) -> None:
    files = {"config.json": b"{}", "model.safetensors": b"\x08" + b"\0" * 15}
    snapshot = make_snapshot(tmp_path / "cache", files)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name, data in files.items():
        (plain / name).write_bytes(data)
    assert inspect(snapshot).artifact.sha256 == inspect(plain).artifact.sha256
