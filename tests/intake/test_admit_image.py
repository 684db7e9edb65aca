"""`attestgate admit` on image layouts and archives: decisions, records and evidence."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from attestgate.cli.main import main
from attestgate.evidence.intoto import statement_json
from attestgate.evidence.produce import sign_statement
from attestgate.record import validate_record

from .images import build_image, file, layer_tar, write_docker_archive, write_layout

EXIT_ALLOW, EXIT_QUARANTINE, EXIT_BLOCK = 0, 3, 4


class _RunsCommand:
    def __reduce__(self):
        import os

        return (os.system, ("id",))


def admit(path: Path, home: Path, *extra: str) -> tuple[int, dict]:
    out = io.StringIO()
    code = main(["admit", str(path), "--home", str(home), "--format", "json", *extra], stdout=out)
    return code, json.loads(out.getvalue())


def test_layout_with_payload_blocks(tmp_path: Path) -> None:
    image = build_image(
        [layer_tar([file("srv/model.pkl", pickle.dumps(_RunsCommand(), protocol=2))])]
    )
    code, record = admit(write_layout(tmp_path / "image", image), tmp_path / "home")
    assert code == EXIT_BLOCK
    [reason] = [r for r in record["reasons"] if r["rule"] == "pickle.unsafe-global"]
    assert reason["file"].endswith(":/srv/model.pkl")
    assert record["artifact"]["image"]["digest"] == image.digest
    record.pop("audit")
    validate_record(record)


def test_clean_archive_only_lacks_provenance(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/main.txt", b"hello\n")])])
    archive = write_docker_archive(tmp_path / "image.tar", image)
    code, record = admit(archive, tmp_path / "home")
    assert code == EXIT_QUARANTINE
    assert {r["rule"] for r in record["reasons"]} == {"provenance.missing"}
    assert record["artifact"]["kind"] == "image"


def test_signed_statement_for_manifest_digest(tmp_path: Path) -> None:
    image = build_image([layer_tar([file("app/main.txt", b"signed\n")])])
    layout = write_layout(tmp_path / "image", image)
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
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
    statement = statement_json(
        [{"name": "image", "digest": {"sha256": image.hex}}],
        "https://example.com/test-attestation/v1",
        {},
    )
    evidence = tmp_path / "image.dsse.json"
    evidence.write_text(sign_statement(statement, key=private) + "\n")
    _, record = admit(
        layout, tmp_path / "home", "--evidence", str(evidence), "--trusted-key", str(public)
    )
    [piece] = record["evidence"]["pieces"]
    assert piece["bound"] is True
    assert piece["signer"]["trusted"] is True
