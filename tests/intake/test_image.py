"""Image scanning: layers in order, whiteouts, bounds, secrets, installed packages, archives."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import pytest

from attestgate.findings import Severity
from attestgate.intake.identity import IntakeError
from attestgate.intake.image import inspect_image
from attestgate.scanners.interface import Limits, MiB

from . import secrets_data
from .images import (
    BuiltImage,
    build_image,
    digest,
    directory,
    file,
    layer_tar,
    opaque,
    symlink,
    whiteout,
    write_docker_archive,
    write_layout,
)


class _RunsCommand:
    """Pickles to a call of os.system; the tests only write such pickles, never load them."""

    def __reduce__(self):
        import os

        return (os.system, ("id",))


PAYLOAD = pickle.dumps({"weights": _RunsCommand()}, protocol=2)


def short(layer_blob: bytes) -> str:
    return digest(layer_blob)[:15]


def by_rule(inspection, rule: str) -> list:
    return [f for f in inspection.findings if f.rule == rule]


def scan_layout(tmp_path: Path, image: BuiltImage, limits: Limits | None = None):
    return inspect_image(write_layout(tmp_path / "layout", image), limits)


def test_pickle_payload_located_by_layer(tmp_path: Path) -> None:
    base = layer_tar([directory("app"), file("app/README.md", b"# app\n")])
    model = layer_tar([file("app/model.pkl", PAYLOAD)])
    image = build_image([base, model])
    inspection = scan_layout(tmp_path, image)
    findings = by_rule(inspection, "pickle.unsafe-global")
    assert [f.file for f in findings] == [f"{short(image.layers[1])}:/app/model.pkl"]
    assert findings[0].severity is Severity.CRITICAL


def test_artifact_named_by_manifest_digest(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("a.txt", b"a")])])
    inspection = scan_layout(tmp_path, image)
    assert inspection.artifact.sha256 == image.hex
    assert inspection.artifact.to_json()["digest_method"] == "oci-manifest-sha256"
    assert inspection.artifact.to_json()["kind"] == "image"


def test_deleted_secret_still_found(tmp_path: Path) -> None:
    token = secrets_data.hf_token()
    added = layer_tar([file("root/.cache/huggingface/token", token.encode())])
    removed = layer_tar([whiteout("root/.cache/huggingface/token")])
    image = build_image([added, removed])
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "secret.hf-token")
    assert finding.severity is Severity.CRITICAL
    assert finding.file == f"{short(image.layers[0])}:/root/.cache/huggingface/token"
    assert token not in json.dumps(finding.to_json())
    assert short(image.layers[1]) in finding.message
    assert finding.details["removed_by_layer"] == digest(image.layers[1])


def test_opaque_whiteout_keeps_lower_findings(tmp_path: Path) -> None:
    lower = layer_tar([directory("app/conf"), file("app/conf/.env", b"API_TOKEN=q8w7e6r5t4y3u2\n")])
    upper = layer_tar([opaque("app/conf"), file("app/conf/settings.ini", b"[main]\n")])
    image = build_image([lower, upper])
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "secret.env-file")
    assert finding.details["removal"] == "deleted"
    assert "q8w7" not in json.dumps(finding.to_json())
    layers = inspection.artifact.image["images"][0]["layers"]
    assert layers[1]["opaque_directories"] == 1


def test_path_traversal_reported_and_scanned(tmp_path: Path) -> None:
    hostile = layer_tar(
        [
            file("../../etc/cron.d/job.pkl", PAYLOAD),
            symlink("app/link", "../../../../etc/shadow"),
        ]
    )
    image = build_image([hostile])
    inspection = scan_layout(tmp_path, image)
    traversal = by_rule(inspection, "image.path-traversal")
    assert len(traversal) == 2
    assert all(f.severity is Severity.HIGH for f in traversal)
    assert by_rule(inspection, "pickle.unsafe-global")


def test_compression_bomb_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The ratio bound applies past a floor of expanded bytes; lower it to keep the test small.
    monkeypatch.setattr("attestgate.intake.layers.RATIO_FLOOR_BYTES", MiB)
    zeros = layer_tar([file("data/zeros.bin", bytes(8 * MiB))])
    image = build_image([zeros])
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "image.limit-exceeded")
    assert "times its compressed size" in finding.message
    assert finding.severity is Severity.MEDIUM


def test_member_count_bounded(tmp_path: Path) -> None:
    many = layer_tar([file(f"f/{i}", b"") for i in range(40)])
    image = build_image([many])
    inspection = scan_layout(tmp_path, image, Limits(max_archive_members=10))
    assert by_rule(inspection, "image.limit-exceeded")
    assert inspection.artifact.image["images"][0]["layers"][0]["members"] == 11


def test_expanded_bytes_bounded(tmp_path: Path) -> None:
    big = layer_tar([file("big.bin", b"\1" * (2 * MiB))])
    image = build_image([big, layer_tar([file("after.pkl", PAYLOAD)])])
    inspection = scan_layout(tmp_path, image, Limits(max_expanded_bytes=MiB))
    assert len(by_rule(inspection, "image.limit-exceeded")) == 2


def test_oversized_pax_header_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "a" * (2 * MiB)}
    image = build_image([layer_tar([(info, b"")])])
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "image.malformed-layer")
    assert "extension header" in finding.message


def test_trailing_data_after_end(tmp_path: Path) -> None:
    tar = layer_tar([file("a.txt", b"a")]) + layer_tar([file("hidden.pkl", PAYLOAD)])
    image = build_image([tar])
    inspection = scan_layout(tmp_path, image)
    assert by_rule(inspection, "image.trailing-data")


def test_tampered_layer_blob(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("a.txt", b"a")])])
    layout = write_layout(tmp_path / "layout", image)
    blob = layout / "blobs" / "sha256" / digest(image.layers[0]).partition(":")[2]
    blob.write_bytes(gzip.compress(layer_tar([file("a.txt", b"b")])))
    inspection = inspect_image(layout)
    assert by_rule(inspection, "image.digest-mismatch")


def test_diff_id_mismatch(tmp_path: Path) -> None:
    layer = layer_tar([file("a.txt", b"a")])
    image = build_image(
        [layer], config_extra={"rootfs": {"type": "layers", "diff_ids": [digest(b"x")]}}
    )
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "image.digest-mismatch")
    assert "diff_id" in finding.message


def test_missing_layer_blob(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("a.txt", b"a")])])
    layout = write_layout(tmp_path / "layout", image)
    (layout / "blobs" / "sha256" / digest(image.layers[0]).partition(":")[2]).unlink()
    assert by_rule(inspect_image(layout), "image.missing-blob")


def test_config_env_and_history_secrets(tmp_path: Path) -> None:
    token = secrets_data.hf_token()
    image = build_image(
        [layer_tar([file("a.txt", b"a")])],
        config_extra={"config": {"Env": [f"HF_TOKEN={token}", "DB_PASSWORD=s3cr3t-v4lue"]}},
        history=[{"created_by": "RUN |1 ACCESS_KEY=zz99-yy88-xx77 /bin/sh -c make"}],
    )
    inspection = scan_layout(tmp_path, image)
    text = json.dumps([f.to_json() for f in inspection.findings])
    assert token not in text
    assert "s3cr3t" not in text
    assert by_rule(inspection, "secret.hf-token")[0].file.endswith(":Env[0]")
    locations = {f.file.rsplit(":", 1)[1] for f in by_rule(inspection, "secret.env-variable")}
    assert locations == {"Env[1]", "history[0].created_by"}


def _record_line(path: str, data: bytes) -> str:
    encoded = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={encoded},{len(data)}\n"


SITE = "usr/local/lib/python3.11/site-packages"


def _installed_package(module: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    record = _record_line("demo/__init__.py", module) + "demo-1.0.dist-info/RECORD,,\n"
    return [
        file(f"{SITE}/demo/__init__.py", module),
        file(f"{SITE}/demo-1.0.dist-info/METADATA", b"Name: demo\nVersion: 1.0\n"),
        file(f"{SITE}/demo-1.0.dist-info/RECORD", record.encode()),
    ]


def test_installed_package_changed_after_install(tmp_path: Path) -> None:
    installed = layer_tar(_installed_package(b"VALUE = 1\n"))
    patched = layer_tar([file(f"{SITE}/demo/__init__.py", b"import os; os.system('id')\n")])
    image = build_image([installed, patched])
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "deps.record-mismatch")
    assert finding.severity is Severity.HIGH
    assert finding.file.endswith("demo-1.0.dist-info/RECORD")


def test_installed_package_matching_record(tmp_path: Path) -> None:
    image = build_image([layer_tar(_installed_package(b"VALUE = 1\n"))])
    inspection = scan_layout(tmp_path, image)
    assert not by_rule(inspection, "deps.record-mismatch")
    dists = inspection.artifact.image["images"][0]["python_distributions"]
    assert dists["items"][0]["files_checked"] == 1


def _clean_layers() -> list[bytes]:
    import numpy as np
    from safetensors.numpy import save

    weights = save({"w": np.zeros((4, 4), dtype=np.float32)})
    requirement = b"numpy==1.26.4 --hash=sha256:" + b"0" * 64 + b"\n"
    return [
        layer_tar([directory("usr"), directory("usr/bin"), file("usr/bin/tool", b"#!/bin/sh\n")]),
        layer_tar(_installed_package(b"VALUE = 1\n")),
        layer_tar(
            [
                directory("app"),
                file("app/model.safetensors", weights),
                file("app/config.json", json.dumps({"model_type": "tiny"}).encode()),
                file("app/requirements.txt", requirement),
            ]
        ),
    ]


def test_clean_image_has_no_high_findings(tmp_path: Path) -> None:
    inspection = scan_layout(tmp_path, build_image(_clean_layers()))
    worst = max((f.severity for f in inspection.findings), default=Severity.INFO)
    assert worst < Severity.HIGH, [f.to_json() for f in inspection.findings]
    scanned = {f.path.rsplit(":", 1)[1] for f in inspection.artifact.files}
    assert scanned == {"/app/model.safetensors", "/app/config.json", "/app/requirements.txt"}


def test_uncompressed_layers(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("m.pkl", PAYLOAD)])], compress=False)
    assert by_rule(scan_layout(tmp_path, image), "pickle.unsafe-global")


def test_zstd_layer(tmp_path: Path) -> None:
    zstd = pytest.importorskip("backports.zstd")
    raw = layer_tar([file("m.pkl", PAYLOAD)])
    image = build_image([raw], compress=False)
    blob = zstd.compress(raw)
    manifest = json.loads(image.manifest)
    manifest["layers"][0] = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "digest": digest(blob),
        "size": len(blob),
    }
    image = BuiltImage(json.dumps(manifest).encode(), image.config, [blob], image.diff_ids, [])
    inspection = scan_layout(tmp_path, image)
    assert by_rule(inspection, "pickle.unsafe-global")
    assert inspection.artifact.image["images"][0]["layers"][0]["compression"] == "zstd"


@pytest.mark.parametrize("compressed", [False, True])
def test_docker_archive(tmp_path: Path, compressed: bool) -> None:
    token = secrets_data.hf_token()
    image = build_image(
        [layer_tar([file("app/model.pkl", PAYLOAD), file("app/.env", f"HF={token}".encode())])]
    )
    archive = write_docker_archive(tmp_path / "image.tar", image, gzip_archive=compressed)
    inspection = inspect_image(archive)
    assert inspection.artifact.sha256 == hashlib.sha256(image.config).hexdigest()
    assert inspection.artifact.to_json()["digest_method"] == "docker-image-id"
    assert (
        by_rule(inspection, "pickle.unsafe-global")[0].file
        == f"{image.diff_ids[0][:15]}:/app/model.pkl"
    )
    assert by_rule(inspection, "secret.hf-token")
    assert inspection.artifact.image["tags"] == ["example/app:1.0"]


def test_oci_artifact_layers_are_files(tmp_path: Path) -> None:
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.model",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest(config),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": digest(PAYLOAD),
                    "size": len(PAYLOAD),
                    "annotations": {"org.opencontainers.image.title": "model.pkl"},
                }
            ],
        }
    ).encode()
    image = BuiltImage(manifest, config, [PAYLOAD], [], [])
    inspection = scan_layout(tmp_path, image)
    [finding] = by_rule(inspection, "pickle.unsafe-global")
    assert finding.file == f"{short(PAYLOAD)}:/model.pkl"
    assert inspection.artifact.image["images"][0]["kind"] == "artifact"


def test_index_with_two_platforms(tmp_path: Path) -> None:
    amd = build_image([layer_tar([file("a.txt", b"amd")])])
    arm = build_image([layer_tar([file("m.pkl", PAYLOAD)])])
    layout = write_layout(tmp_path / "layout", amd)
    for name, data in arm.blobs().items():
        (layout / "blobs" / "sha256" / name.partition(":")[2]).write_bytes(data)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": img.digest,
                    "size": len(img.manifest),
                    "platform": {"os": "linux", "architecture": arch},
                }
                for img, arch in ((amd, "amd64"), (arm, "arm64"))
            ],
        }
    ).encode()
    (layout / "blobs" / "sha256" / digest(index).partition(":")[2]).write_bytes(index)
    top = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest(index),
                "size": len(index),
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(top))
    inspection = inspect_image(layout)
    assert inspection.artifact.sha256 == digest(index).partition(":")[2]
    assert len(inspection.artifact.image["images"]) == 2
    assert by_rule(inspection, "pickle.unsafe-global")


def test_unreadable_index_raises(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text("{}")
    (layout / "index.json").write_text("not json")
    with pytest.raises(IntakeError):
        inspect_image(layout)


def test_layer_blob_link_outside_layout_missing(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("a.txt", b"a")])])
    layout = write_layout(tmp_path / "layout", image)
    blob = layout / "blobs" / "sha256" / digest(image.layers[0]).partition(":")[2]
    outside = tmp_path / "outside"
    outside.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(outside)
    assert by_rule(inspect_image(layout), "image.missing-blob")


def test_layer_with_malformed_gzip(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("a.txt", b"a")])])
    manifest = json.loads(image.manifest)
    broken = image.layers[0][:40]
    manifest["layers"][0].update(digest=digest(broken), size=len(broken))
    image = BuiltImage(json.dumps(manifest).encode(), image.config, [broken], image.diff_ids, [])
    assert by_rule(scan_layout(tmp_path, image), "image.malformed-layer")


def test_pax_name_with_control_characters(tmp_path: Path) -> None:
    info = tarfile.TarInfo("app/evil\x1b[2Jname.pkl")
    info.size = len(PAYLOAD)
    image = build_image([layer_tar([(info, PAYLOAD)])])
    [finding] = by_rule(scan_layout(tmp_path, image), "pickle.unsafe-global")
    assert "\x1b" not in finding.file
