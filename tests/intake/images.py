"""Build container images for the tests: layers written with tarfile, then a layout or archive.

Nothing here loads or runs what the images contain.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file(path: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = mode
    return info, data


def directory(path: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, b""


def symlink(path: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def hardlink(path: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, b""


def whiteout(path: str) -> tuple[tarfile.TarInfo, bytes]:
    """The whiteout that deletes ``path`` from lower layers."""
    folder, _, name = path.rpartition("/")
    return file(f"{folder}/.wh.{name}" if folder else f".wh.{name}", b"")


def opaque(folder: str) -> tuple[tarfile.TarInfo, bytes]:
    """The marker that hides everything lower layers put in ``folder``."""
    return file(f"{folder.rstrip('/')}/.wh..wh..opq", b"")


def layer_tar(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


@dataclass
class BuiltImage:
    """The blobs of one image, with its manifest and config bytes."""

    manifest: bytes
    config: bytes
    layers: list[bytes]
    diff_ids: list[str]
    layer_media_types: list[str]
    extra_blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    @property
    def hex(self) -> str:
        return self.digest.partition(":")[2]

    def blobs(self) -> dict[str, bytes]:
        found = {digest(self.manifest): self.manifest, digest(self.config): self.config}
        found.update({digest(layer): layer for layer in self.layers})
        found.update(self.extra_blobs)
        return found


def build_image(
    layers: list[bytes],
    *,
    compress: bool = True,
    config_extra: dict | None = None,
    history: list[dict] | None = None,
) -> BuiltImage:
    """Build an OCI image from uncompressed layer tars."""
    blobs = [gzip.compress(layer, mtime=0) if compress else layer for layer in layers]
    diff_ids = [digest(layer) for layer in layers]
    config_document = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history or [{"created_by": "COPY . /app"} for _ in layers],
    }
    for key, value in (config_extra or {}).items():
        config_document[key] = value
    config = json.dumps(config_document).encode()
    media_type = LAYER_GZIP if compress else LAYER_TAR
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
            "layers": [
                {"mediaType": media_type, "digest": digest(blob), "size": len(blob)}
                for blob in blobs
            ],
        }
    ).encode()
    return BuiltImage(manifest, config, blobs, diff_ids, [media_type] * len(blobs))


def write_layout(folder: Path, image: BuiltImage, tag: str = "v1") -> Path:
    """Write ``image`` as an OCI image layout directory."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, data in image.blobs().items():
        (blobs / name.partition(":")[2]).write_bytes(data)
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def write_docker_archive(path: Path, image: BuiltImage, *, gzip_archive: bool = False) -> Path:
    """Write ``image`` the way legacy ``docker save`` does: manifest.json and <id>/layer.tar."""
    members: list[tuple[str, bytes]] = []
    config_name = f"{hashlib.sha256(image.config).hexdigest()}.json"
    layer_names = []
    for position, blob in enumerate(image.layers):
        raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        folder = hashlib.sha256(f"layer{position}".encode()).hexdigest()
        layer_names.append(f"{folder}/layer.tar")
        members.append((f"{folder}/VERSION", b"1.0"))
        members.append((f"{folder}/layer.tar", raw))
    members.append((config_name, image.config))
    manifest = [{"Config": config_name, "RepoTags": ["example/app:1.0"], "Layers": layer_names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if gzip_archive else data)
    return path
