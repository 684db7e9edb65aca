"""oci:// references against a real distribution registry on 127.0.0.1."""

from __future__ import annotations

import io
import json
import pickle
import tempfile
from pathlib import Path

import oras.provider
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestgate.cli.main import main
from attestgate.evidence.intoto import statement_json
from attestgate.evidence.produce import sign_statement
from attestgate.record import validate_record

from . import secrets_data
from .images import BuiltImage, build_image, digest, file, layer_tar, whiteout

EXIT_ALLOW, EXIT_INTERNAL, EXIT_USAGE, EXIT_QUARANTINE, EXIT_BLOCK = 0, 1, 2, 3, 4
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"


class _RunsCommand:
    def __reduce__(self):
        import os

        return (os.system, ("id",))


def client(registry: str) -> oras.provider.Registry:
    return oras.provider.Registry(hostname=registry, insecure=True)


def push_blob(registry: str, repository: str, data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as blob:
        blob.write(data)
        blob.flush()
        layer = {"digest": digest(data), "size": len(data), "mediaType": "application/octet-stream"}
        response = client(registry).upload_blob(blob.name, f"{registry}/{repository}", layer)
    assert response.status_code in (200, 201), response.text


def push_manifest(
    registry: str, repository: str, data: bytes, reference: str, media_type: str
) -> None:
    url = f"http://{registry}/v2/{repository}/manifests/{reference}"
    response = client(registry).do_request(
        url, "PUT", data=data, headers={"Content-Type": media_type}
    )
    assert response.status_code == 201, response.text


def push_image(registry: str, repository: str, image: BuiltImage, tag: str) -> str:
    for data in [image.config, *image.layers]:
        push_blob(registry, repository, data)
    push_manifest(registry, repository, image.manifest, tag, OCI_MANIFEST)
    return image.digest


def admit(target: str, home: Path, *extra: str) -> tuple[int, dict]:
    out = io.StringIO()
    code = main(["admit", target, "--home", str(home), "--format", "json", *extra], stdout=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


def rules(record: dict) -> dict[str, str]:
    return {f["rule"]: f["severity"] for f in record["findings"]}


def hostile_image() -> BuiltImage:
    token = secrets_data.hf_token()
    return build_image(
        [
            layer_tar([file("app/model.pkl", pickle.dumps(_RunsCommand(), protocol=2))]),
            layer_tar([file("root/.cache/huggingface/token", token.encode())]),
            layer_tar([whiteout("root/.cache/huggingface/token")]),
        ]
    )


def test_pull_by_digest_finds_payload_and_secret(registry: str, tmp_path: Path) -> None:
    image = hostile_image()
    pushed = push_image(registry, "team/hostile", image, "v1")
    code, record = admit(f"oci://{registry}/team/hostile@{pushed}", tmp_path / "home")
    assert code == EXIT_BLOCK
    assert record["artifact"]["digest"]["sha256"] == image.hex
    assert record["artifact"]["reference"]["resolved"] == pushed
    found = rules(record)
    assert found["pickle.unsafe-global"] == "critical"
    assert found["secret.hf-token"] == "critical"
    assert "intake.unpinned-tag" not in found
    secret = next(f for f in record["findings"] if f["rule"] == "secret.hf-token")
    assert secret["file"].startswith(digest(image.layers[1])[:15])
    record.pop("audit")
    validate_record(record)


def test_tag_resolved_and_flagged_at_deployment(registry: str, tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/readme.txt", b"hello\n")])])
    pushed = push_image(registry, "team/clean", image, "1.0")
    code, record = admit(f"oci://{registry}/team/clean:1.0", tmp_path / "home")
    assert record["artifact"]["reference"]["resolved"] == pushed
    assert record["artifact"]["reference"]["tag"] == "1.0"
    assert rules(record)["intake.unpinned-tag"] == "medium"
    assert code == EXIT_QUARANTINE


def test_tag_at_training_is_informational(registry: str, tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/readme.txt", b"training\n")])])
    push_image(registry, "team/train", image, "latest")
    _, record = admit(f"oci://{registry}/team/train", tmp_path / "home", "--stage", "training")
    assert rules(record)["intake.unpinned-tag"] == "info"


def test_moved_tag_recorded(registry: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    push_image(registry, "team/moving", build_image([layer_tar([file("a", b"1")])]), "stable")
    admit(f"oci://{registry}/team/moving:stable", home)
    push_image(registry, "team/moving", build_image([layer_tar([file("a", b"2")])]), "stable")
    _, record = admit(f"oci://{registry}/team/moving:stable", home)
    assert rules(record)["intake.tag-moved"] == "low"


def test_unknown_image_is_usage_error(registry: str, tmp_path: Path) -> None:
    code, _ = admit(f"oci://{registry}/team/absent:v9", tmp_path / "home")
    assert code == EXIT_USAGE


def test_unreachable_registry_is_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import free_port

    monkeypatch.setattr("attestgate.intake.registry.RETRY_SECONDS", 0.0)
    code, _ = admit(f"oci://127.0.0.1:{free_port()}/team/app:v1", tmp_path / "home")
    assert code == EXIT_INTERNAL


def _key_pair(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "key.pem", folder / "key.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _attach_envelope(registry: str, repository: str, image: BuiltImage, envelope: bytes) -> None:
    """Attach a DSSE envelope as an OCI 1.1 referrer, listed under the fallback tag."""
    empty = b"{}"
    push_blob(registry, repository, empty)
    push_blob(registry, repository, envelope)
    referrer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": DSSE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest(empty),
                "size": 2,
            },
            "layers": [{"mediaType": DSSE, "digest": digest(envelope), "size": len(envelope)}],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
            },
        }
    ).encode()
    push_manifest(registry, repository, referrer, digest(referrer), OCI_MANIFEST)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest(referrer),
                    "size": len(referrer),
                    "artifactType": DSSE,
                }
            ],
        }
    ).encode()
    push_manifest(registry, repository, index, f"sha256-{image.hex}", OCI_INDEX)


def test_attached_attestation_verified(registry: str, tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/readme.txt", b"signed\n")])])
    pushed = push_image(registry, "team/signed", image, "v1")
    private, public = _key_pair(tmp_path)
    statement = statement_json(
        [{"name": "image", "digest": {"sha256": image.hex}}],
        "https://example.com/test-attestation/v1",
        {},
    )
    _attach_envelope(
        registry, "team/signed", image, sign_statement(statement, key=private).encode()
    )
    _, record = admit(
        f"oci://{registry}/team/signed@{pushed}", tmp_path / "home", "--trusted-key", str(public)
    )
    [referrer] = record["artifact"]["reference"]["referrers"]
    assert referrer["source"] == "referrers-tag"
    [piece] = record["evidence"]["pieces"]
    assert piece["signature"] == "valid"
    assert piece["bound"] is True
    assert piece["signer"]["trusted"] is True
    assert "provenance.missing" not in rules(record)


def test_attestation_for_other_image_not_bound(registry: str, tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/readme.txt", b"other\n")])])
    pushed = push_image(registry, "team/mismatch", image, "v1")
    private, public = _key_pair(tmp_path)
    statement = statement_json(
        [{"name": "image", "digest": {"sha256": "0" * 64}}],
        "https://example.com/test-attestation/v1",
        {},
    )
    _attach_envelope(
        registry, "team/mismatch", image, sign_statement(statement, key=private).encode()
    )
    _, record = admit(
        f"oci://{registry}/team/mismatch@{pushed}", tmp_path / "home", "--trusted-key", str(public)
    )
    [piece] = record["evidence"]["pieces"]
    assert piece["bound"] is False


def test_pull_reuses_verified_layout(registry: str, tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/x", b"x")])])
    pushed = push_image(registry, "team/reuse", image, "v1")
    home = tmp_path / "home"
    admit(f"oci://{registry}/team/reuse@{pushed}", home)
    layout = home / "intake" / "oci" / image.hex
    blob = layout / "blobs" / "sha256" / digest(image.layers[0]).partition(":")[2]
    blob.write_bytes(b"tampered")
    _, record = admit(f"oci://{registry}/team/reuse@{pushed}", home)
    assert rules(record)["image.digest-mismatch"] == "high"


@pytest.mark.parametrize("size_change", [1, -1])
def test_blob_size_lie_rejected(registry: str, tmp_path: Path, size_change: int) -> None:
    layer = layer_tar([file("app/y", b"y")])
    image = build_image([layer])
    manifest = json.loads(image.manifest)
    manifest["layers"][0]["size"] += size_change
    lying = BuiltImage(
        json.dumps(manifest).encode(), image.config, image.layers, image.diff_ids, []
    )
    for data in [lying.config, *lying.layers]:
        push_blob(registry, "team/liar", data)
    try:
        push_manifest(registry, "team/liar", lying.manifest, "v1", OCI_MANIFEST)
    except AssertionError:
        pytest.skip("the registry itself refuses a manifest whose sizes are wrong")
    code, _ = admit(f"oci://{registry}/team/liar@{lying.digest}", tmp_path / "home")
    assert code == EXIT_INTERNAL


def test_cosign_attestation_tag_read(registry: str, tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/readme.txt", b"cosign\n")])])
    pushed = push_image(registry, "team/cosign", image, "v1")
    private, public = _key_pair(tmp_path)
    statement = statement_json(
        [{"name": "image", "digest": {"sha256": image.hex}}],
        "https://example.com/test-attestation/v1",
        {},
    )
    envelope = sign_statement(statement, key=private).encode()
    empty = b"{}"
    push_blob(registry, "team/cosign", empty)
    push_blob(registry, "team/cosign", envelope)
    attestations = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(empty),
                "size": 2,
            },
            "layers": [{"mediaType": DSSE, "digest": digest(envelope), "size": len(envelope)}],
        }
    ).encode()
    push_manifest(registry, "team/cosign", attestations, f"sha256-{image.hex}.att", OCI_MANIFEST)
    _, record = admit(
        f"oci://{registry}/team/cosign@{pushed}", tmp_path / "home", "--trusted-key", str(public)
    )
    [referrer] = record["artifact"]["reference"]["referrers"]
    assert referrer["source"] == "cosign-attestation-tag"
    [piece] = record["evidence"]["pieces"]
    assert piece["signature"] == "valid"
    assert piece["bound"] is True


class _Response:
    def __init__(self, status: int, body: bytes = b"", media_type: str = "") -> None:
        self.status_code = status
        self.body = body
        self.headers = {"Content-Type": media_type} if media_type else {}

    def iter_content(self, size: int):
        yield from (self.body[i : i + size] for i in range(0, len(self.body), size))

    def close(self) -> None:
        return None


class _FakeRegistry:
    """Serves canned paths the way _Session.get does, for a registry with the referrers API."""

    def __init__(self, paths: dict[str, tuple[bytes, str]]) -> None:
        self.paths = paths
        self.base = "http://registry.invalid/v2/team/app"

    def get(self, path: str, accept: str = "", stream: bool = False) -> _Response:
        if path not in self.paths:
            return _Response(404)
        body, media_type = self.paths[path]
        return _Response(200, body, media_type)


def test_referrers_api_listing_used(tmp_path: Path) -> None:
    from attestgate.intake.references import OciReference
    from attestgate.intake.registry import _referrers

    subject = "sha256:" + "c" * 64
    envelope = b'{"payloadType": "application/vnd.in-toto+json", "payload": "", "signatures": []}'
    empty = b"{}"
    referrer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": DSSE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest(empty),
                "size": 2,
            },
            "layers": [{"mediaType": DSSE, "digest": digest(envelope), "size": len(envelope)}],
        }
    ).encode()
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest(referrer), "size": len(referrer)}
            ],
        }
    ).encode()
    session = _FakeRegistry(
        {
            f"referrers/{subject}": (listing, OCI_INDEX),
            f"manifests/{digest(referrer)}": (referrer, OCI_MANIFEST),
            f"blobs/{digest(envelope)}": (envelope, "application/octet-stream"),
        }
    )
    ref = OciReference("registry.invalid", "team/app", None, subject)
    found, evidence = _referrers(session, ref, subject, tmp_path / "evidence")  # type: ignore[arg-type]
    assert [entry["source"] for entry in found] == ["referrers-api"]
    assert [path.read_bytes() for path in evidence] == [envelope]
    assert evidence[0].name.endswith(".dsse.json")
