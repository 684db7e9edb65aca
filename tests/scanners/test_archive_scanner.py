"""Tests for the archive scanner: compressed streams, tar, 7z, and joblib files."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import py7zr
import pytest
from backports import zstd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format, sniff
from attestgate.pipeline import admit, inspect
from attestgate.scanners import archive_7z, archive_scanner
from attestgate.scanners.archive_scanner import ArchiveScanner, compression_kind
from attestgate.scanners.interface import GiB, Limits, MiB, ScanContext, ScanResult

# --- Helpers --------------------------------------------------------------------


def scan(
    data: bytes,
    name: str,
    chunk: int = 0,
    limits: Limits | None = None,
    fmt: Format | None = None,
    reread: bool = True,
) -> ScanResult:
    fmt = fmt or sniff(data[:512], len(data), name)
    scanner = ArchiveScanner(ScanContext(name, len(data), limits or Limits()), fmt)
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        scanner.feed(memoryview(data[start : start + step]))
    read_at = (lambda offset, length: data[offset : offset + length]) if reread else None
    return scanner.close(read_at)


def rules(result: ScanResult) -> list[str]:
    return sorted(finding.rule for finding in result.findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


def located(result: ScanResult) -> set[tuple[str, str]]:
    return {(finding.rule, finding.file) for finding in result.findings}


def summary(result: ScanResult) -> list[tuple[str, str, str, str]]:
    return [(f.rule, f.severity.label, f.file, f.message) for f in result.findings]


def member(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, None


def tar_bytes(
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    mode: str = "w",
    tar_format: int = tarfile.PAX_FORMAT,
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, format=tar_format) as archive:
        for info, content in members:
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def sevenzip(files: list[tuple[str, bytes]], **options: Any) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", **options) as archive:
        for name, content in files:
            archive.writestr(content, name)
    return buffer.getvalue()


def hostile_pickle(command: bytes = b"echo owned") -> bytes:
    """A protocol 2 pickle, written opcode by opcode, that calls os.system."""
    return (
        b"\x80\x02"  # PROTO 2
        + b"cos\nsystem\n"  # GLOBAL os.system
        + b"X"  # BINUNICODE
        + struct.pack("<I", len(command))
        + command
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE
        + b"."  # STOP
    )


def safetensors_bytes() -> bytes:
    return save({"weight": np.ones((4, 4), dtype=np.float32)})


CLEAN_MEMBERS = [
    member("model/model.safetensors", safetensors_bytes()),
    member("model/config.json", b'{"model_type": "bert", "hidden_size": 4}'),
]


def gzip_of_zeros(total: int) -> bytes:
    """Gzip ``total`` zero bytes (a multiple of 1 MiB) without ever holding them.

    After a full flush, deflate compresses the next MiB of zeros to the same
    bytes, so one block is repeated and only the CRC walks the whole length.
    """
    block = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    count = total // MiB
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, total & 0xFFFFFFFF)
    return header + first + repeated * (count - 1) + final + trailer


# --- Clean archives ------------------------------------------------------------------

COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "tar": lambda data: data,
    "tar.gz": gzip.compress,
    "tar.bz2": bz2.compress,
    "tar.xz": lzma.compress,
    "tar.zst": zstd.compress,
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSIONS))
def test_clean_tar_no_findings(suffix: str) -> None:
    data = COMPRESSIONS[suffix](tar_bytes(CLEAN_MEMBERS))
    result = scan(data, f"model.{suffix}")
    assert result.findings == []
    assert result.facts["members"] == 2
    assert result.facts["member_formats"] == {"json": 1, "safetensors": 1}


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
def test_clean_tar_formats(tar_format: int) -> None:
    data = tar_bytes(CLEAN_MEMBERS, "w:gz", tar_format)
    assert scan(data, "model.tar.gz").findings == []


def test_clean_7z_no_findings() -> None:
    data = sevenzip([("model.safetensors", safetensors_bytes()), ("config.json", b'{"a": 1}')])
    result = scan(data, "model.7z")
    assert result.findings == []
    assert result.facts["member_formats"] == {"json": 1, "safetensors": 1}


def test_single_gzip_located_by_stored_name() -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile("weights.pkl", "wb", fileobj=buffer) as stream:
        stream.write(hostile_pickle())
    result = scan(buffer.getvalue(), "upload.bin")
    assert ("pickle.unsafe-global", "upload.bin:weights.pkl") in located(result)


def test_single_gzip_located_without_suffix() -> None:
    result = scan(gzip.compress(hostile_pickle(), mtime=0), "weights.pkl.gz")
    assert ("pickle.unsafe-global", "weights.pkl.gz:weights.pkl") in located(result)


def test_small_zero_run_not_bomb() -> None:
    result = scan(gzip.compress(bytes(512 * 1024)), "zeros.gz")
    assert "archive.bomb" not in rules(result)


@pytest.mark.parametrize("suffix", ["tar.gz", "tar.bz2", "tar.xz"])
def test_one_byte_feeds_same_result(suffix: str) -> None:
    hostile = [
        *CLEAN_MEMBERS,
        member("../escape.txt", b"x"),
        member("model.pkl", hostile_pickle()),
        special("link", tarfile.SYMTYPE, "/etc/passwd"),
    ]
    data = COMPRESSIONS[suffix](tar_bytes(hostile))
    assert summary(scan(data, f"a.{suffix}", chunk=1)) == summary(scan(data, f"a.{suffix}"))


def test_one_byte_feeds_same_result_7z() -> None:
    data = sevenzip([("model.pkl", hostile_pickle()), ("config.json", b"{}")])
    assert summary(scan(data, "a.7z", chunk=1)) == summary(scan(data, "a.7z"))


# --- Hostile tar members ----------------------------------------------------------------


def test_dotdot_member_high() -> None:
    data = tar_bytes([member("../../etc/cron.d/x", b"* * * * * root sh\n")], "w:gz")
    finding = only(scan(data, "a.tar.gz"), "archive.path-traversal")
    assert finding.severity is Severity.HIGH
    assert finding.details["members"] == ["../../etc/cron.d/x"]


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "C:\\Windows\\x.dll", "a\\..\\..\\x"])
def test_absolute_and_backslash_names_high(name: str) -> None:
    finding = only(scan(tar_bytes([member(name, b"x")]), "a.tar"), "archive.path-traversal")
    assert finding.severity is Severity.HIGH


def test_long_name_traversal_gnu_and_pax() -> None:
    name = "a/" * 60 + "../" * 61 + "etc/passwd"
    for tar_format in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = tar_bytes([member(name, b"x")], tar_format=tar_format)
        assert "archive.path-traversal" in rules(scan(data, "a.tar"))


def test_symlink_to_absolute_high() -> None:
    data = tar_bytes([special("passwd", tarfile.SYMTYPE, "/etc/passwd")], "w:gz")
    finding = only(scan(data, "a.tar.gz"), "archive.link")
    assert finding.severity is Severity.HIGH
    assert "/etc/passwd" in finding.message


def test_symlink_relative_escape_high() -> None:
    data = tar_bytes([special("a/b/link", tarfile.SYMTYPE, "../../../outside")])
    assert only(scan(data, "a.tar"), "archive.link").severity is Severity.HIGH


def test_symlink_inside_medium() -> None:
    data = tar_bytes(
        [*CLEAN_MEMBERS, special("model/latest", tarfile.SYMTYPE, "model.safetensors")]
    )
    finding = only(scan(data, "a.tar"), "archive.link")
    assert finding.severity is Severity.MEDIUM


def test_hardlink_medium() -> None:
    data = tar_bytes([*CLEAN_MEMBERS, special("copy", tarfile.LNKTYPE, "model/config.json")])
    finding = only(scan(data, "a.tar"), "archive.link")
    assert finding.severity is Severity.MEDIUM
    assert "hard link" in finding.message


def test_hardlink_escape_high() -> None:
    data = tar_bytes([special("copy", tarfile.LNKTYPE, "../../etc/shadow")])
    assert only(scan(data, "a.tar"), "archive.link").severity is Severity.HIGH


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_special_members_medium(kind: bytes) -> None:
    finding = only(scan(tar_bytes([special("dev", kind)]), "a.tar"), "archive.special-member")
    assert finding.severity is Severity.MEDIUM


def test_too_many_members() -> None:
    data = tar_bytes([member(f"f{index}.txt", b"x") for index in range(10)], "w:gz")
    result = scan(data, "a.tar.gz", limits=Limits(max_archive_members=3))
    assert only(result, "archive.too-many-members").severity is Severity.MEDIUM


def test_many_names_listed_once() -> None:
    data = tar_bytes([member(f"../f{index}", b"x") for index in range(50)])
    finding = only(scan(data, "a.tar"), "archive.path-traversal")
    assert finding.details["member_count"] == 50
    assert "and 30 more" in finding.message


def test_pickle_member_located() -> None:
    data = tar_bytes([*CLEAN_MEMBERS, member("./model/model.pkl", hostile_pickle())], "w:gz")
    finding = only(scan(data, "outer.tar.gz"), "pickle.unsafe-global")
    assert finding.file == "outer.tar.gz:model/model.pkl"
    assert finding.severity is Severity.CRITICAL


def test_nested_tar_member_located() -> None:
    inner = tar_bytes([member("model.pkl", hostile_pickle())])
    data = tar_bytes([member("inner.tar", inner)], "w:gz")
    result = scan(data, "outer.tar.gz")
    assert ("pickle.unsafe-global", "outer.tar.gz:inner.tar:model.pkl") in located(result)


def test_zip_member_reread_from_spool() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", hostile_pickle())
    data = tar_bytes([member("weights.zip", buffer.getvalue())], "w:xz")
    result = scan(data, "outer.tar.xz")
    assert ("pickle.unsafe-global", "outer.tar.xz:weights.zip:archive/data.pkl") in located(result)


def v7_tar(members: list[tuple[str, bytes]]) -> bytes:
    """Build a v7 tar (no ustar magic), which sniffs as something else."""
    out = bytearray()
    for name, content in members:
        header = bytearray(512)
        header[: len(name)] = name.encode()
        header[100:108] = b"0000644\x00"
        header[124:136] = f"{len(content):011o}\x00".encode()
        header[136:148] = b"00000000000\x00"
        header[156:157] = b"0"
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}\x00 ".encode()
        out += header + content + bytes(-len(content) % 512)
    return bytes(out + bytes(1024))


def test_v7_tar_inside_gzip_walked() -> None:
    data = gzip.compress(v7_tar([("data.pkl", hostile_pickle())]))
    result = scan(data, "old.tar.gz")
    assert ("pickle.unsafe-global", "old.tar.gz:data.pkl") in located(result)


def with_checksum(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\x00 ".encode()
    return bytes(header)


def test_gnu_sparse_member_scanned() -> None:
    content = hostile_pickle()
    header = bytearray(
        tar_bytes([member("data.pkl", content)], tar_format=tarfile.GNU_FORMAT)[:512]
    )
    header[156:157] = b"S"
    header[482] = 1
    extension = bytearray(512)
    data = with_checksum(header) + bytes(extension) + content + bytes(-len(content) % 512)
    result = scan(data + bytes(1024), "sparse.tar", fmt=Format.TAR)
    assert ("pickle.unsafe-global", "sparse.tar:data.pkl") in located(result)


@pytest.mark.parametrize("size", ["9" * 5000, "-5", "\u00b2", "1" * 25, " 12 "])
def test_pax_size_edge_cases_never_raise(size: str) -> None:
    info, content = member("x.txt", b"abc")
    info.pax_headers = {"size": size}
    result = scan(tar_bytes([(info, content)]), "a.tar")
    assert set(rules(result)) <= {"archive.corrupt"}


def test_pax_record_length_overflow() -> None:
    info, content = member("x.txt", b"abc")
    info.pax_headers = {"comment": "x" * 6000}
    data = bytearray(tar_bytes([(info, content)]))
    record = b"9" * 5000 + b" comment=x\n"
    data[512 : 512 + len(record)] = record
    result = scan(bytes(data), "a.tar", fmt=Format.TAR)
    assert result.facts["members"] == 1


def test_corrupt_tar_checksum() -> None:
    data = bytearray(tar_bytes(CLEAN_MEMBERS))
    data[148:156] = b"0000000\x00"
    assert only(scan(bytes(data), "a.tar", fmt=Format.TAR), "archive.corrupt").offset == 0


def test_truncated_tar() -> None:
    data = tar_bytes(CLEAN_MEMBERS)[:700]
    assert only(scan(data, "a.tar"), "archive.truncated").severity is Severity.MEDIUM


def test_data_after_end_marker() -> None:
    data = tar_bytes(CLEAN_MEMBERS) + tar_bytes([member("hidden.pkl", hostile_pickle())])
    assert "archive.trailing-data" in rules(scan(data, "a.tar"))


# --- Compression bounds -------------------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    return gzip_of_zeros(1 * GiB)


def test_gzip_bomb_high(gzip_bomb: bytes) -> None:
    tracemalloc.start()
    try:
        result = scan(gzip_bomb, "bomb.gz", chunk=4 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert only(result, "archive.bomb").severity is Severity.HIGH
    assert result.facts["expanded_bytes"] < 64 * MiB
    assert peak < 32 * MiB


def test_expanded_bytes_limit() -> None:
    data = gzip_of_zeros(32 * MiB)
    limits = Limits(max_expanded_bytes=8 * MiB, max_compression_ratio=10**9)
    finding = only(scan(data, "big.gz", limits=limits), "archive.bomb")
    assert str(8 * MiB) in finding.message


def test_bzip2_bomb_high() -> None:
    data = bz2.compress(bytes(16 * MiB))
    assert "archive.bomb" in rules(scan(data, "bomb.bz2"))


def nested_gzip(levels: int) -> bytes:
    data = b'{"a": 1}'
    for _ in range(levels):
        data = gzip.compress(data, mtime=0)
    return data


def test_nesting_beyond_limit_too_deep() -> None:
    finding = only(scan(nested_gzip(6), "n.gz"), "archive.too-deep")
    assert finding.severity is Severity.MEDIUM
    assert finding.file == "n.gz" + ":n" * 5


def test_nesting_within_limit_opened() -> None:
    assert scan(nested_gzip(5), "n.gz").findings == []


def test_truncated_gzip() -> None:
    data = gzip.compress(tar_bytes(CLEAN_MEMBERS))
    finding = only(scan(data[: len(data) // 2], "a.tar.gz"), "archive.truncated")
    assert finding.severity is Severity.MEDIUM


def test_gzip_header_only_truncated() -> None:
    assert rules(scan(b"\x1f\x8b\x08\x00", "a.gz")) == ["archive.truncated"]


def test_corrupt_gzip() -> None:
    data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + b"\xff" * 64
    assert only(scan(data, "a.gz"), "archive.corrupt").severity is Severity.MEDIUM


def test_multi_member_gzip_continues() -> None:
    archive = tar_bytes([*CLEAN_MEMBERS, member("model.pkl", hostile_pickle())])
    data = gzip.compress(archive[:1000]) + gzip.compress(archive[1000:])
    result = scan(data, "a.tar.gz")
    assert result.facts["streams"] == 2
    assert ("pickle.unsafe-global", "a.tar.gz:model.pkl") in located(result)


def test_trailing_garbage_after_gzip() -> None:
    data = gzip.compress(tar_bytes(CLEAN_MEMBERS)) + b"hidden payload"
    assert "archive.trailing-data" in rules(scan(data, "a.tar.gz"))


def test_trailing_zeros_after_gzip_ignored() -> None:
    data = gzip.compress(tar_bytes(CLEAN_MEMBERS)) + bytes(4096)
    assert scan(data, "a.tar.gz").findings == []


def test_zstd_without_decompressor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_scanner, "_zstd_decompressor", lambda: None)
    data = zstd.compress(tar_bytes(CLEAN_MEMBERS))
    finding = only(scan(data, "a.tar.zst"), "archive.unsupported-compression")
    assert finding.severity is Severity.MEDIUM


def test_lz4_without_decompressor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_scanner, "_lz4_decompressor", lambda: None)
    data = b"\x04\x22\x4d\x18" + bytes(60)
    result = scan(data, "model.joblib", fmt=Format.UNKNOWN)
    assert rules(result) == ["archive.unsupported-compression"]


def test_unknown_compression_reported() -> None:
    result = scan(b"\x00\x01\x02 not compressed" * 4, "x.bin", fmt=Format.UNKNOWN)
    assert rules(result) == ["archive.unsupported-compression"]


# --- 7z -----------------------------------------------------------------------------------


def test_7z_malicious_pickle_located() -> None:
    data = sevenzip([("config.json", b"{}"), ("weights/model.pkl", hostile_pickle())])
    finding = only(scan(data, "evil.7z"), "pickle.unsafe-global")
    assert finding.file == "evil.7z:weights/model.pkl"


def test_7z_corrupt() -> None:
    data = bytearray(sevenzip([("model.pkl", hostile_pickle()), ("config.json", b"{}")]))
    data[40] ^= 0xFF
    data[45] ^= 0xFF
    assert only(scan(bytes(data), "bad.7z"), "archive.corrupt").severity is Severity.MEDIUM


def test_7z_truncated() -> None:
    data = sevenzip([("config.json", b"{}")])
    assert rules(scan(data[:-10], "cut.7z")) == ["archive.truncated"]


@pytest.mark.parametrize("header_encryption", [False, True])
def test_7z_encrypted(header_encryption: bool) -> None:
    data = sevenzip(
        [("model.pkl", hostile_pickle())], password="secret", header_encryption=header_encryption
    )
    assert rules(scan(data, "locked.7z")) == ["archive.encrypted"]


def test_7z_without_reread() -> None:
    data = sevenzip([("config.json", b"{}")])
    assert rules(scan(data, "a.7z", reread=False)) == ["archive.unscanned"]


def test_7z_declared_bomb() -> None:
    data = sevenzip([("zeros.bin", bytes(8 * MiB))])
    assert only(scan(data, "zeros.7z"), "archive.bomb").severity is Severity.HIGH


def test_7z_large_dictionary_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_7z, "MAX_DICTIONARY_BYTES", 1 * MiB)
    data = sevenzip([("model.pkl", hostile_pickle())])
    finding = only(scan(data, "big-dict.7z"), "archive.unsupported-compression")
    assert finding.details["dictionary"] == 16 * MiB


def test_lzma_huge_dictionary_not_allocated() -> None:
    # LZMA-alone header: properties, a 4 GiB dictionary, unknown size.
    data = b"\x5d\x00\x00\x00\xff" + b"\xff" * 8 + bytes(32)
    finding = only(scan(data, "model.joblib", fmt=Format.UNKNOWN), "archive.corrupt")
    assert "Memory usage limit" in finding.message


def test_7z_symlink_escape(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to("/etc/passwd")
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        archive.write(link, "passwd")
    finding = only(scan(buffer.getvalue(), "l.7z"), "archive.link")
    assert finding.severity is Severity.HIGH


# --- joblib -----------------------------------------------------------------------------------

JOBLIB_ARRAYS = {
    "weights": np.arange(1000, dtype=np.float32).reshape(10, 100),
    "bias": np.ones(7),
}


def joblib_bytes(tmp_path: Path, compress: Any) -> bytes:
    path = tmp_path / "model.joblib"
    joblib.dump(JOBLIB_ARRAYS, path, compress=compress)
    return path.read_bytes()


def test_joblib_plain_sniffs_as_pickle(tmp_path: Path) -> None:
    data = joblib_bytes(tmp_path, 0)
    assert sniff(data[:512], len(data), "model.joblib") is Format.PICKLE


@pytest.mark.parametrize("compress", ["gzip", "bz2", "xz", "zlib", "lzma", 3])
def test_joblib_compressed_reaches_pickle(tmp_path: Path, compress: Any) -> None:
    data = joblib_bytes(tmp_path, compress)
    fmt = sniff(data[:512], len(data), "model.joblib")
    routed = fmt if fmt in (Format.GZIP, Format.BZIP2, Format.XZ) else Format.UNKNOWN
    result = scan(data, "model.joblib", fmt=routed)
    assert [f.rule for f in result.findings if f.check == "archive"] == []
    assert result.facts["member_formats"] == {"pickle": 1}
    assert result.facts["inner_name"] == "model.joblib"


@pytest.mark.parametrize("compress", [0, "gzip"])
def test_joblib_clean_not_high(tmp_path: Path, compress: Any) -> None:
    joblib_bytes(tmp_path, compress)
    findings = inspect(tmp_path / "model.joblib").findings
    assert max((f.severity for f in findings), default=Severity.INFO) < Severity.HIGH


def test_hostile_joblib_gzip_blocked(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(gzip.compress(hostile_pickle(), mtime=0))
    findings = inspect(path).findings
    assert ("pickle.unsafe-global", "model.joblib:model.joblib") in {
        (f.rule, f.file) for f in findings
    }
    assert admit(path, home=tmp_path / "home").action == "block"


def zfile(payload: bytes) -> bytes:
    """joblib's pre-0.10 ZF format: "ZF", the length in hex padded to 19, then zlib."""
    return b"ZF" + hex(len(payload)).encode().ljust(19) + zlib.compress(payload)


CONTENT_CODECS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.compress,
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    "zfile": zfile,
}


@pytest.mark.parametrize("codec", sorted(CONTENT_CODECS))
def test_content_detected_codecs(codec: str) -> None:
    data = CONTENT_CODECS[codec](hostile_pickle())
    assert compression_kind(data[:64]) == codec
    result = scan(data, "model.joblib", fmt=Format.UNKNOWN)
    assert ("pickle.unsafe-global", "model.joblib:model.joblib") in located(result)


@pytest.mark.parametrize("codec", ["zlib", "lzma"])
def test_hostile_joblib_content_codec_blocked(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(CONTENT_CODECS[codec](hostile_pickle()))
    assert admit(path, home=tmp_path / "home").action == "block"


# --- Through the pipeline -------------------------------------------------------------------


def test_admit_blocks_hostile_tar_gz(tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(tar_bytes([member("../../etc/cron.d/x", b"x")], "w:gz"))
    assert admit(path, home=tmp_path / "home").action == "block"


def test_clean_tar_gz_not_blocked(tmp_path: Path) -> None:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(tar_bytes(CLEAN_MEMBERS, "w:gz"))
    findings = inspect(path).findings
    assert all(finding.severity < Severity.HIGH for finding in findings)
    assert admit(path, home=tmp_path / "home").action != "block"


# --- Fuzzing ------------------------------------------------------------------------------------

FUZZ_TAR = tar_bytes(
    [
        member("config.json", b'{"a": [1, 2, 3]}'),
        member("notes.txt", b"plain text\n" * 20),
        special("link", tarfile.SYMTYPE, "config.json"),
    ],
    tar_format=tarfile.GNU_FORMAT,
)
FUZZ_TAR_GZ = gzip.compress(FUZZ_TAR, mtime=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_tar_and_gzip(data: st.DataObject) -> None:
    compressed = data.draw(st.booleans())
    blob = bytearray(FUZZ_TAR_GZ if compressed else FUZZ_TAR)
    for _ in range(data.draw(st.integers(0, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(1, len(blob)))]
    fmt = Format.GZIP if compressed else Format.TAR
    chunk = data.draw(st.integers(1, 97))

    whole = scan(bytes(blob), "f.tar.gz", fmt=fmt)
    pieces = scan(bytes(blob), "f.tar.gz", chunk=chunk, fmt=fmt)
    assert summary(pieces) == summary(whole)
    assert all(finding.rule != "check.failed" for finding in whole.findings)


def test_fuzz_fixture_is_clean() -> None:
    result = scan(FUZZ_TAR_GZ, "f.tar.gz")
    assert rules(result) == ["archive.link"]
    assert os.path.basename(result.findings[0].file) == "f.tar.gz"
