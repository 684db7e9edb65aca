"""Zip archives built so that the gate and torch.load read different members.

torch.load reads a checkpoint with miniz. It finds data.pkl by a name
comparison that ignores case, does not check CRC-32 values, and reads a
member's bytes at the offset and size that its directory entry gives.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

from attestgate.findings import Finding

Decide = Callable[[Path], tuple[str, list[Finding]]]
Write = Callable[[str, bytes], Path]

SYSTEM = b"cos\nsystem\n(S'id'\ntR."
SYSTEM_P2 = b"\x80\x02" + SYSTEM


def rules(findings: list[Finding]) -> set[str]:
    return {finding.rule for finding in findings}


def make_zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytearray:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buffer, "w", method) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return bytearray(buffer.getvalue())


def checkpoint(pickle_name: str, data: bytes, method: int = zipfile.ZIP_STORED) -> bytearray:
    return make_zip([(pickle_name, data), ("archive/version", b"3\n")], method)


def central_entry(archive: bytearray, index: int) -> int:
    offset = archive.find(b"PK\x01\x02")
    for _ in range(index):
        name_length, extra_length, comment_length = struct.unpack_from("<3H", archive, offset + 28)
        offset += 46 + name_length + extra_length + comment_length
    return offset


def break_crc(archive: bytearray) -> bytearray:
    # Change the first member's CRC-32 in its local header and directory entry.
    crc = struct.unpack_from("<I", archive, 14)[0] ^ 0xFFFF
    struct.pack_into("<I", archive, 14, crc)
    struct.pack_into("<I", archive, central_entry(archive, 0) + 16, crc)
    return archive


def test_pickle_name_in_capitals(decide: Decide, write: Write) -> None:
    data = checkpoint("archive/DATA.PKL", SYSTEM)
    action, findings = decide(write("model.pt", bytes(data)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_stored_member_with_wrong_crc(decide: Decide, write: Write) -> None:
    data = break_crc(checkpoint("archive/data.pkl", SYSTEM_P2))
    action, findings = decide(write("model.pt", bytes(data)))
    assert {"pickle.unsafe-global", "zip.corrupt"} <= rules(findings)
    assert action == "block"


def test_deflated_member_with_wrong_crc(decide: Decide, write: Write) -> None:
    data = break_crc(checkpoint("archive/data.pkl", SYSTEM_P2, zipfile.ZIP_DEFLATED))
    action, findings = decide(write("model.pt", bytes(data)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_protocol0_pickle_without_pkl_name(decide: Decide, write: Write) -> None:
    data = make_zip([("pytorch_model.bin", SYSTEM)])
    action, findings = decide(write("model.zip", bytes(data)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_member_running_into_directory(decide: Decide, write: Write) -> None:
    # The directory entry claims more stored bytes than lie before the
    # directory; miniz reads them all.
    data = make_zip([("evil.pkl", SYSTEM)])
    directory = central_entry(data, 0)
    size = struct.unpack_from("<I", data, directory + 20)[0] + 8
    for field in (directory + 20, directory + 24):
        struct.pack_into("<I", data, field, size)
    struct.pack_into("<II", data, 18, size, size)
    action, findings = decide(write("model.zip", bytes(data)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_duplicate_member_names(decide: Decide, write: Write) -> None:
    data = make_zip(
        [
            ("archive/data.pkl", b"\x80\x02N."),
            ("archive/data.pkl", SYSTEM_P2),
            ("archive/version", b"3\n"),
        ]
    )
    action, findings = decide(write("model.pt", bytes(data)))
    assert {"zip.duplicate-name", "pickle.unsafe-global"} <= rules(findings)
    assert action == "block"


def test_local_header_names_another_member(decide: Decide, write: Write) -> None:
    data = make_zip([("archive/data.pkl", SYSTEM_P2)])
    data[30 : 30 + len("archive/data.pkl")] = b"archive/data.pkX"
    action, findings = decide(write("model.pt", bytes(data)))
    assert "zip.header-mismatch" in rules(findings)
    assert action == "block"


def test_zip_inside_zip(decide: Decide, write: Write) -> None:
    inner = make_zip([("weights.bin", SYSTEM)])
    data = make_zip([("inner.zip", bytes(inner))], zipfile.ZIP_DEFLATED)
    action, findings = decide(write("bundle.zip", bytes(data)))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"
