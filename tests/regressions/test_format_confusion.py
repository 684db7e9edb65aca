"""Files whose bytes are two formats at once, or look like one and are another.

pickle.load and torch.load read any file as a pickle whatever its first
bytes resemble, and zipfile finds an archive at the end of any file. The
gate must scan what those loaders would run, whichever format it detects.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from attestgate.findings import Finding
from attestgate.identify.formats import Format, sniff

Decide = Callable[[Path], tuple[str, list[Finding]]]
Write = Callable[[str, bytes], Path]

SYSTEM = b"cos\nsystem\n(S'id'\ntR."
POP = b"0"


def rules(findings: list[Finding]) -> set[str]:
    return {finding.rule for finding in findings}


def tar_with_pickle_name() -> bytes:
    # A valid tar whose first member's name field contains a protocol 0 pickle.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name="x" * len(SYSTEM))
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    data = bytearray(buffer.getvalue())
    data[: len(SYSTEM)] = SYSTEM
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\x00 " % sum(data[:512])
    return bytes(data)


def safetensors_bytes(header_length: int) -> bytes:
    # One F32 tensor of one element, with the header padded by spaces.
    header = json.dumps({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    raw = header.encode().ljust(header_length, b" ")
    return struct.pack("<Q", header_length) + raw + b"\x00\x00\x80\x3f"


def test_tar_header_is_a_pickle(decide: Decide, write: Write) -> None:
    action, findings = decide(write("model.tar", tar_with_pickle_name()))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_windows_executable_magic_is_a_pickle(decide: Decide, write: Write) -> None:
    # "MZ" is BININT2; the DOS stub sentence rides in a STRING that is popped.
    data = b"MZ\x90" + POP + b"S'This program cannot be run in DOS mode'\n" + POP + SYSTEM
    action, findings = decide(write("tool.exe", data + b"\x00" * 64))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_bzip2_magic_is_a_pickle(decide: Decide, write: Write) -> None:
    # "B" is BINBYTES: "Zh\x01\x00" is the length of the bytes it pushes.
    (length,) = struct.unpack("<I", b"Zh\x01\x00")
    data = b"BZh\x01\x00" + b"\x00" * length + POP + SYSTEM
    action, findings = decide(write("weights.bz2", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


def test_gguf_magic_is_a_pickle(decide: Decide, write: Write) -> None:
    # "G" is BINFLOAT, which swallows "GUF" and the version field.
    data = b"GGUF\x03\x00\x00\x00\x00" + POP + SYSTEM + b"\x00" * 64
    _, findings = decide(write("model.gguf", data))
    assert "pickle.unsafe-global" in rules(findings)


def test_safetensors_shaped_pickle(decide: Decide, write: Write) -> None:
    # "X" is BINUNICODE: its length field is bytes 1-4 of the header length,
    # and its string covers the "{" at byte 8 that the sniffer looks for.
    string = b"\x00\x00\x00{" + b"a" * 12
    data = b"X" + struct.pack("<I", len(string)) + string + POP + SYSTEM
    header_length = struct.unpack("<Q", data[:8])[0]
    data += b"\x00" * (header_length + 8 - len(data))
    assert sniff(data[:512], len(data)) is Format.SAFETENSORS
    action, findings = decide(write("model.safetensors", data))
    assert "pickle.unsafe-global" in rules(findings)
    assert action == "block"


@pytest.mark.parametrize(
    "header_length",
    [376, 0x5E78, 640, 0x8B1F, 0x120308],
    ids=["zlib", "zlib-level-1", "pickle-protocol-2", "gzip", "onnx"],
)
def test_safetensors_header_length_like_magic(
    decide: Decide, write: Write, header_length: int
) -> None:
    # The header length's bytes spell another format's magic (376 starts the
    # file with 0x78 0x01, zlib's, and 640 with 0x80 0x02, PROTO 2): a clean
    # file must still be read as safetensors.
    path = write("model.safetensors", safetensors_bytes(header_length))
    action, findings = decide(path)
    assert findings == []
    assert action == "allow"


def test_zip_appended_to_text(decide: Decide, write: Write) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil.pkl", SYSTEM)
    data = b"#!/bin/sh\necho hello\nexit 0\n" + buffer.getvalue()
    action, findings = decide(write("model", data))
    assert {"zip.appended", "pickle.unsafe-global"} <= rules(findings)
    assert action == "block"


def test_end_record_lookalike_is_not_an_archive(decide: Decide, write: Write) -> None:
    data = b"\x01\x02" * 1000 + b"PK\x05\x06" + b"\xff" * 18
    _, findings = decide(write("blob.bin", data))
    assert "zip.appended" not in rules(findings)


@pytest.mark.parametrize("padding", [b" " * 600, b"\xef\xbb\xbf" + b"\n" * 600])
def test_json_config_after_long_whitespace(decide: Decide, write: Write, padding: bytes) -> None:
    config = padding + json.dumps({"auto_map": {"AutoModel": "evil/repo--model.Model"}}).encode()
    action, findings = decide(write("repo/config.json", config))
    assert "hf.auto-map-remote" in rules(findings)
    assert action == "block"
