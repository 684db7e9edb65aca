"""Artifacts that change while the gate reads them, and names no output can carry."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from attestgate.cli.main import main
from attestgate.identify.stream import process_file, process_files
from attestgate.identify.walk import walk
from attestgate.scanners.interface import Limits

SYSTEM_P2 = b"\x80\x02cos\nsystem\n(S'id'\ntR."


def test_file_swapped_for_outside_link(tmp_path: Path) -> None:
    # Between the walk and the read, a file becomes a link to a file outside
    # the artifact. Its bytes must not be hashed as the artifact's.
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"weights")
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the artifact")
    listing = walk(root)
    (root / "weights.bin").unlink()
    (root / "weights.bin").symlink_to(secret)
    [report] = process_files(listing.entries, Limits())
    assert [f.rule for f in report.findings] == ["identify.file-changed"]
    assert report.sha256 == ""


def test_file_replaced_by_another_file(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"weights")
    listing = walk(root)
    replacement = tmp_path / "replacement"
    replacement.write_bytes(SYSTEM_P2)
    os.replace(replacement, root / "weights.bin")
    [report] = process_files(listing.entries, Limits())
    assert [f.rule for f in report.findings] == ["identify.file-changed"]


def test_file_that_keeps_growing(tmp_path: Path) -> None:
    # A writer appends whenever the gate reads; the pass must stop.
    path = tmp_path / "grows.bin"
    path.write_bytes(b"x" * 10)
    [entry] = walk(path).entries
    reads: list[int] = []

    def append_on_read(size: int) -> None:
        reads.append(size)
        if len(reads) < 1000:
            with path.open("ab") as fh:
                fh.write(b"y" * 10)

    report = process_file(entry, Limits(), append_on_read)
    assert len(reads) <= 2
    assert "identify.file-changed" in [f.rule for f in report.findings]


def test_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"\xffweights.pkl"), "wb") as fh:
        fh.write(SYSTEM_P2)
    stdout = io.StringIO()
    code = main(["admit", str(root), "--home", str(tmp_path / "home"), "--format", "json"], stdout)
    record = json.loads(stdout.getvalue())
    assert code == 4
    assert {"identify.undecodable-name", "pickle.unsafe-global"} <= {
        f["rule"] for f in record["findings"]
    }
