"""Tests for the zip, PyTorch zip and TorchScript archive scanner."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickletools
import struct
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners import _REGISTRY, open_scanner
from attestgate.scanners import zip_scanner as zip_module
from attestgate.scanners.interface import (
    Limits,
    ReadAt,
    ScanContext,
    Scanner,
    ScanResult,
)
from attestgate.scanners.zip_scanner import ZipScanner

# A protocol 2 pickle, written by hand, whose REDUCE calls os.system("id").
EVIL_PICKLE = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
# A protocol 2 pickle of the dict {"a": 1}, with no global at all.
PLAIN_PICKLE = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."

HAS_PICKLE_SCANNER = importlib.util.find_spec("attestgate.scanners.pickle_scanner") is not None


class FakePickleScanner(Scanner):
    """Stands in for the pickle scanner while it is not in the tree.

    It walks opcodes with pickletools, which never executes them, and flags
    a GLOBAL from a module that runs commands.
    """

    check = "pickle"
    unsafe_modules = frozenset({"os", "posix", "nt", "subprocess", "builtins"})

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._parts: list[bytes] = []

    def feed(self, chunk: memoryview) -> None:
        self._parts.append(bytes(chunk))

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        findings = []
        stream = io.BytesIO(b"".join(self._parts))
        try:
            for opcode, argument, position in pickletools.genops(stream):
                module = str(argument).split(" ")[0]
                if opcode.name == "GLOBAL" and module in self.unsafe_modules:
                    findings.append(
                        self.finding(
                            "pickle.unsafe-global",
                            Severity.CRITICAL,
                            f"global {argument}",
                            "remove it",
                            offset=position,
                        )
                    )
        except ValueError:
            pass
        return ScanResult(findings=findings)


@pytest.fixture(autouse=True)
def member_scanners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the real pickle scanner when it exists, the fake one otherwise."""
    if not HAS_PICKLE_SCANNER:
        fake = f"{__name__}:FakePickleScanner"
        monkeypatch.setitem(_REGISTRY, Format.PICKLE, fake)
        monkeypatch.setitem(_REGISTRY, Format.MAYBE_PICKLE, fake)


# --- Helpers ------------------------------------------------------------------


def scan(
    data: bytes,
    name: str = "model.pt",
    limits: Limits | None = None,
    reread: bool = True,
    deadline: float = 0.0,
) -> ScanResult:
    ctx = ScanContext(name, len(data), limits or Limits(), deadline=deadline)
    scanner = ZipScanner(ctx, Format.ZIP)
    for start in range(0, len(data), 65536):
        scanner.feed(memoryview(data[start : start + 65536]))

    def read_at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return scanner.close(read_at if reread else None)


def make_zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def rewrite(
    data: bytes,
    replace: dict[str, bytes] | None = None,
    add: dict[str, bytes] | None = None,
) -> bytes:
    """Copy a zip, replacing and adding members, as an attacker would."""
    replace = replace or {}
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(buffer, "w") as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, replace.get(info.filename, source.read(info)))
        for name, content in (add or {}).items():
            target.writestr(name, content)
    return buffer.getvalue()


def central_entry(data: bytes, name: str) -> int:
    """Return the offset of ``name``'s central directory entry."""
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        length = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46 : position + 46 + length] == name.encode():
            return position
        position = data.find(b"PK\x01\x02", position + 4)
    raise AssertionError(f"no central directory entry for {name}")


def local_header(data: bytes, name: str) -> int:
    return struct.unpack_from("<L", data, central_entry(data, name) + 42)[0]


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, value)
    return bytes(patched)


def rules(result: ScanResult) -> list[str]:
    return sorted(finding.rule for finding in result.findings)


def only(result: ScanResult, rule: str) -> Finding:
    matches = [finding for finding in result.findings if finding.rule == rule]
    assert len(matches) == 1, rules(result)
    return matches[0]


def worst(result: ScanResult) -> Severity:
    return max((f.severity for f in result.findings), default=Severity.INFO)


def pickle_findings(result: ScanResult, member: str) -> list[Finding]:
    return [
        f for f in result.findings if f.rule.startswith("pickle.") and f.file.endswith(f":{member}")
    ]


# --- PyTorch checkpoints and TorchScript archives ---------------------------------


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def checkpoint(torch: Any, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("checkpoint") / "archive.pt"
    torch.save({"w": torch.ones(3)}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def torchscript(torch: Any, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("torchscript") / "model.jit"
    layers = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript, but archives of it are still common.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(layers), str(path))
    return path.read_bytes()


@pytest.mark.torch
def test_checkpoint_format(checkpoint: bytes) -> None:
    assert scan(checkpoint).format is Format.PYTORCH_ZIP


@pytest.mark.torch
def test_checkpoint_clean(checkpoint: bytes) -> None:
    assert worst(scan(checkpoint)) < Severity.HIGH


@pytest.mark.torch
def test_checkpoint_facts(checkpoint: bytes) -> None:
    facts = scan(checkpoint).facts
    assert facts["archive_kind"] == "pytorch-zip"
    assert facts["pickle_members_scanned"] == ["archive/data.pkl"]
    assert facts["members"] >= 5


@pytest.mark.torch
def test_checkpoint_without_tensors(torch: Any, tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"step": 3}, path)
    result = scan(path.read_bytes())
    assert result.format is Format.PYTORCH_ZIP
    assert worst(result) < Severity.HIGH


@pytest.mark.torch
def test_checkpoint_tensor_data_unread(checkpoint: bytes) -> None:
    payload = rewrite(checkpoint, replace={"archive/data/0": EVIL_PICKLE})
    assert pickle_findings(scan(payload), "archive/data/0") == []


@pytest.mark.torch
def test_checkpoint_evil_data_pkl(checkpoint: bytes) -> None:
    hostile = rewrite(checkpoint, replace={"archive/data.pkl": EVIL_PICKLE})
    found = pickle_findings(scan(hostile), "archive/data.pkl")
    assert max(f.severity for f in found) >= Severity.HIGH


@pytest.mark.torch
def test_checkpoint_evil_location(checkpoint: bytes) -> None:
    hostile = rewrite(checkpoint, replace={"archive/data.pkl": EVIL_PICKLE})
    found = pickle_findings(scan(hostile, name="model.pt"), "archive/data.pkl")
    assert found[0].file == "model.pt:archive/data.pkl"


@pytest.mark.torch
def test_checkpoint_extra_pickle(checkpoint: bytes) -> None:
    hostile = rewrite(checkpoint, add={"archive/extra.pkl": EVIL_PICKLE})
    result = scan(hostile)
    assert result.format is Format.PYTORCH_ZIP
    found = pickle_findings(result, "archive/extra.pkl")
    assert max(f.severity for f in found) >= Severity.HIGH


@pytest.mark.torch
def test_checkpoint_python_member(checkpoint: bytes) -> None:
    hostile = rewrite(checkpoint, add={"archive/hook.py": b"import os\n"})
    files = [f.file for f in scan(hostile).findings]
    assert "model.pt:archive/hook.py" in files


@pytest.mark.torch
def test_torchscript_format(torchscript: bytes) -> None:
    assert scan(torchscript).format is Format.TORCHSCRIPT


@pytest.mark.torch
def test_torchscript_embedded_code(torchscript: bytes) -> None:
    finding = only(scan(torchscript), "torchscript.embedded-code")
    assert finding.severity is Severity.MEDIUM
    assert "model/code/__torch__" in finding.message


@pytest.mark.torch
def test_torchscript_worst_medium(torchscript: bytes) -> None:
    assert worst(scan(torchscript)) is Severity.MEDIUM


@pytest.mark.torch
def test_torchscript_no_pickle_findings(torchscript: bytes) -> None:
    result = scan(torchscript)
    found = [f for f in result.findings if f.rule.startswith("pickle.")]
    assert [f for f in found if f.severity >= Severity.MEDIUM] == []


@pytest.mark.torch
def test_torchscript_scans_pickles(torchscript: bytes) -> None:
    scanned = scan(torchscript).facts["pickle_members_scanned"]
    assert {"model/data.pkl", "model/constants.pkl"} <= set(scanned)


@pytest.mark.torch
def test_torchscript_evil_constants(torchscript: bytes) -> None:
    hostile = rewrite(torchscript, replace={"model/constants.pkl": EVIL_PICKLE})
    found = pickle_findings(scan(hostile), "model/constants.pkl")
    assert max(f.severity for f in found) >= Severity.HIGH


def test_real_torchscript(real_artifacts: dict[str, Path]) -> None:
    result = scan(real_artifacts["silero_jit"].read_bytes(), name="silero_vad.jit")
    assert result.format is Format.TORCHSCRIPT
    serious = [f.rule for f in result.findings if f.severity >= Severity.MEDIUM]
    assert serious == ["torchscript.embedded-code"]


def test_registered_for_zip() -> None:
    data = make_zip([("a.txt", b"hello")])
    scanner = open_scanner(Format.ZIP, ScanContext("a.zip", len(data)))
    assert scanner is not None
    scanner.feed(memoryview(data))
    assert scanner.close(lambda offset, length: data[offset : offset + length]).findings == []


# --- Plain zips ------------------------------------------------------------------


def test_plain_zip_clean() -> None:
    data = make_zip([("readme.txt", b"This is text"), ("w.pkl", PLAIN_PICKLE)])
    result = scan(data)
    assert result.findings == []
    assert result.format is Format.ZIP


def test_plain_zip_pickle_by_header() -> None:
    data = make_zip([("weights.bin", EVIL_PICKLE)])
    found = pickle_findings(scan(data, name="a.zip"), "weights.bin")
    assert found[0].file == "a.zip:weights.bin"


def test_plain_zip_deflated_pickle() -> None:
    data = make_zip([("dir/evil.pkl", EVIL_PICKLE)], zipfile.ZIP_DEFLATED)
    assert pickle_findings(scan(data), "dir/evil.pkl") != []


def test_plain_zip_text_unscanned() -> None:
    data = make_zip([("notes", b"This text starts like a protocol 0 pickle")])
    assert scan(data).facts["members_scanned"] == 0


def test_json_member_scanned() -> None:
    config = json.dumps({"auto_map": {"AutoModel": "evil/repo--model.Model"}})
    data = make_zip([("config.json", config.encode())])
    files = {f.file for f in scan(data, name="a.zip").findings}
    assert "a.zip:config.json" in files


def test_npz_format() -> None:
    data = make_zip([("a.npy", b"\x93NUMPY"), ("b.npy", b"\x93NUMPY")])
    assert scan(data).format is Format.NUMPY_NPZ


def test_numpy_npz_clean() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(10), b=np.ones((2, 3), dtype=np.float32))
    result = scan(buffer.getvalue(), name="arrays.npz")
    assert result.format is Format.NUMPY_NPZ
    assert result.findings == []


def test_numpy_npz_object_array() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, evil=np.array([os.system], dtype=object))
    result = scan(buffer.getvalue(), name="arrays.npz")
    found = [f for f in result.findings if f.file.startswith("arrays.npz:evil.npy")]
    assert max(f.severity for f in found) >= Severity.HIGH


def test_keras_format() -> None:
    members = [("config.json", b"{}"), ("metadata.json", b"{}")]
    data = make_zip([*members, ("model.weights.h5", b"x")])
    assert scan(data).format is Format.KERAS


LAMBDA_CONFIG = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "model",
        "layers": [
            {
                "module": "keras.layers",
                "class_name": "Lambda",
                "config": {
                    "name": "hook",
                    "function": {
                        "class_name": "__lambda__",
                        "config": {"code": "4wEAAAAAAAAA", "defaults": None, "closure": None},
                    },
                },
                "registered_name": None,
            }
        ],
    },
}


def test_keras_lambda_config() -> None:
    members = [("config.json", json.dumps(LAMBDA_CONFIG).encode()), ("metadata.json", b"{}")]
    data = make_zip([*members, ("model.weights.h5", b"weights")])
    result = scan(data, name="model.keras")
    found = [f for f in result.findings if f.rule.startswith("keras.")]
    assert found[0].file == "model.keras:config.json"
    assert max(f.severity for f in found) >= Severity.HIGH


def test_wheel_format() -> None:
    members = [("pkg/data.txt", b"x"), ("pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0")]
    data = make_zip([*members, ("pkg-1.0.dist-info/RECORD", b"")])
    assert scan(data).format is Format.WHEEL


def test_folder_without_markers_plain() -> None:
    data = make_zip([("archive/data.pkl", PLAIN_PICKLE), ("archive/other", b"x")])
    assert scan(data).format is Format.ZIP


def test_unreadable_without_read_at() -> None:
    finding = only(scan(make_zip([("a", b"x")]), reread=False), "zip.unreadable")
    assert finding.severity is Severity.MEDIUM


# --- Names and flags --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.pkl", "/etc/cron.d/x", "a\\..\\b", "C:/x", "ok/../../x"])
def test_path_traversal(name: str) -> None:
    finding = only(scan(make_zip([(name, b"x")])), "zip.path-traversal")
    assert finding.severity is Severity.HIGH


def test_nul_in_name() -> None:
    # zipfile cuts names at NUL when writing, so the byte is patched in.
    data = make_zip([("aXb.txt", b"x")]).replace(b"aXb.txt", b"a\x00b.txt")
    assert rules(scan(data)) == ["zip.path-traversal"]


def test_path_traversal_lists_all() -> None:
    data = make_zip([("../a", b"x"), ("../b", b"y"), ("fine", b"z")])
    finding = only(scan(data), "zip.path-traversal")
    assert finding.details["members"] == ["../a", "../b"]


def test_dots_inside_name_allowed() -> None:
    assert scan(make_zip([("a..b/c...d", b"x")])).findings == []


def test_encrypted_member() -> None:
    data = make_zip([("evil.pkl", EVIL_PICKLE)])
    data = patch(data, local_header(data, "evil.pkl") + 6, "<H", 1)
    data = patch(data, central_entry(data, "evil.pkl") + 8, "<H", 1)
    result = scan(data)
    assert only(result, "zip.encrypted").severity is Severity.MEDIUM
    assert pickle_findings(result, "evil.pkl") == []


def test_unsupported_compression() -> None:
    data = make_zip([("a.pkl", PLAIN_PICKLE)])
    data = patch(data, local_header(data, "a.pkl") + 8, "<H", 99)
    data = patch(data, central_entry(data, "a.pkl") + 10, "<H", 99)
    finding = only(scan(data), "zip.unsupported-compression")
    assert "method 99" in finding.message


def test_symbolic_link() -> None:
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, "/etc/passwd")
    assert rules(scan(buffer.getvalue())) == ["zip.link"]


def test_duplicate_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = make_zip([("a.pkl", PLAIN_PICKLE), ("a.pkl", EVIL_PICKLE)])
    result = scan(data)
    assert only(result, "zip.duplicate-name").severity is Severity.HIGH
    assert pickle_findings(result, "a.pkl") != []


def test_local_name_mismatch() -> None:
    data = make_zip([("good.pkl", EVIL_PICKLE)])
    offset = local_header(data, "good.pkl") + 30
    data = data[:offset] + b"evil.pkl" + data[offset + 8 :]
    result = scan(data)
    finding = only(result, "zip.header-mismatch")
    assert finding.severity is Severity.HIGH
    assert "'evil.pkl'" in finding.message


def test_local_method_mismatch() -> None:
    data = make_zip([("a.txt", b"x")])
    data = patch(data, local_header(data, "a.txt") + 8, "<H", zipfile.ZIP_DEFLATED)
    assert rules(scan(data)) == ["zip.header-mismatch"]


def test_prepended_bytes() -> None:
    data = b"junk" + make_zip([("a.txt", b"x")])
    finding = only(scan(data), "zip.header-mismatch")
    assert "offset 4" in finding.message


def make_zip64(members: list[tuple[str, bytes]]) -> bytes:
    """Write a zip with zip64 end records whose classic record defers to them."""
    buffer = io.BytesIO()
    with (
        mock.patch.object(zipfile, "ZIP_FILECOUNT_LIMIT", 0),
        zipfile.ZipFile(buffer, "w") as archive,
    ):
        for name, content in members:
            archive.writestr(name, content)
    data = buffer.getvalue()
    eocd = data.rfind(b"PK\x05\x06")
    data = patch(data, eocd + 8, "<H", 0xFFFF)
    data = patch(data, eocd + 10, "<H", 0xFFFF)
    data = patch(data, eocd + 12, "<L", 0xFFFFFFFF)
    return patch(data, eocd + 16, "<L", 0xFFFFFFFF)


def test_zip64_end_records() -> None:
    result = scan(make_zip64([("a.txt", b"x"), ("b.pkl", EVIL_PICKLE)]))
    assert result.facts["members"] == 2
    assert pickle_findings(result, "b.pkl") != []


def test_zip64_clean() -> None:
    assert scan(make_zip64([("a.txt", b"x")])).findings == []


def test_zip64_locator_mismatch() -> None:
    data = make_zip64([("a.txt", b"x")])
    locator = data.rfind(b"PK\x06\x07")
    data = patch(data, locator + 8, "<Q", 5)
    finding = only(scan(data), "zip.header-mismatch")
    assert "zip64 record at offset 5" in finding.message


# --- Damage ----------------------------------------------------------------------


def test_corrupt_central_directory() -> None:
    data = make_zip([("a.txt", b"x"), ("b.txt", b"y")])
    entry = central_entry(data, "b.txt")
    data = data[:entry] + b"XX\x01\x02" + data[entry + 4 :]
    finding = only(scan(data), "zip.corrupt")
    assert finding.severity is Severity.MEDIUM


def test_truncated_archive() -> None:
    data = make_zip([("a.txt", b"x" * 100)])
    assert rules(scan(data[:-30])) == ["zip.corrupt"]


def test_garbage_after_signature() -> None:
    assert rules(scan(b"PK\x03\x04" + b"\xff" * 200)) == ["zip.corrupt"]


def test_tiny_file() -> None:
    assert rules(scan(b"PK\x05\x06")) == ["zip.corrupt"]


def test_directory_offset_out_of_range() -> None:
    data = make_zip([("a.txt", b"x")])
    eocd = data.rfind(b"PK\x05\x06")
    data = patch(data, eocd + 12, "<L", 10_000)
    assert "zip.corrupt" in rules(scan(data))


def test_local_header_offset_out_of_range() -> None:
    data = make_zip([("a.txt", b"x")])
    data = patch(data, central_entry(data, "a.txt") + 42, "<L", 99_999)
    assert "zip.corrupt" in rules(scan(data))


def test_bad_crc() -> None:
    data = make_zip([("a.pkl", PLAIN_PICKLE)], zipfile.ZIP_DEFLATED)
    data = patch(data, central_entry(data, "a.pkl") + 16, "<L", 0)
    finding = only(scan(data), "zip.corrupt")
    assert "'a.pkl'" in finding.message


def test_entry_count_mismatch() -> None:
    data = make_zip([("a.txt", b"x"), ("b.txt", b"y")])
    eocd = data.rfind(b"PK\x05\x06")
    data = patch(data, eocd + 10, "<H", 1)
    assert rules(scan(data)) == ["zip.corrupt"]


# --- Bounds --------------------------------------------------------------------


def test_bomb_by_ratio() -> None:
    data = make_zip([("zeros.bin", bytes(20 * 1024 * 1024))], zipfile.ZIP_DEFLATED)
    finding = only(scan(data), "zip.bomb")
    assert finding.severity is Severity.HIGH
    assert "zeros.bin (20971520 bytes" in finding.message


def test_bomb_declared_size() -> None:
    data = make_zip([("small.pkl", PLAIN_PICKLE * 10)], zipfile.ZIP_DEFLATED)
    data = patch(data, central_entry(data, "small.pkl") + 24, "<L", 0xFFFFFFF0)
    result = scan(data)
    assert only(result, "zip.bomb").severity is Severity.HIGH


def test_bomb_members_unread() -> None:
    data = make_zip([("evil.pkl", EVIL_PICKLE + bytes(4 * 1024 * 1024))], zipfile.ZIP_DEFLATED)
    result = scan(data)
    assert "zip.bomb" in rules(result)
    assert pickle_findings(result, "evil.pkl") == []


def test_bomb_total_expanded() -> None:
    data = make_zip([("a.txt", b"a" * 600), ("b.txt", b"b" * 600)], zipfile.ZIP_DEFLATED)
    finding = only(scan(data, limits=Limits(max_expanded_bytes=1000)), "zip.bomb")
    assert "1200 bytes" in finding.message


def test_regular_ratio_allowed() -> None:
    data = make_zip([("zeros.bin", bytes(512 * 1024))], zipfile.ZIP_DEFLATED)
    assert scan(data).findings == []


def test_overlapping_members() -> None:
    data = make_zip([("a.txt", b"x" * 50), ("b.txt", b"y" * 50)])
    data = patch(data, central_entry(data, "b.txt") + 42, "<L", local_header(data, "a.txt"))
    assert "zip.bomb" in rules(scan(data))


def test_too_many_members() -> None:
    data = make_zip([(f"{i}.pkl", EVIL_PICKLE) for i in range(5)])
    result = scan(data, limits=Limits(max_archive_members=3))
    assert rules(result) == ["zip.too-many-members"]


def test_members_at_limit() -> None:
    data = make_zip([(f"{i}.txt", b"x") for i in range(3)])
    assert scan(data, limits=Limits(max_archive_members=3)).findings == []


def test_directory_too_large() -> None:
    data = make_zip([("n" * 3000, b"x")])
    result = scan(data, limits=Limits(max_archive_members=2))
    assert rules(result) == ["zip.too-many-members"]


def test_member_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    inner = make_zip([("a.txt", b"x" * 400)])
    data = make_zip([("inner.zip", inner)], zipfile.ZIP_DEFLATED)
    monkeypatch.setattr(zip_module, "MAX_MEMBER_BYTES", 100)
    finding = only(scan(data), "zip.member-too-large")
    assert finding.severity is Severity.MEDIUM


def test_timeout() -> None:
    data = make_zip([("a.pkl", PLAIN_PICKLE)])
    result = scan(data, deadline=time.monotonic() - 1)
    assert rules(result) == ["zip.timeout"]


# --- Nesting ----------------------------------------------------------------------


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_nested_payload(compression: int) -> None:
    inner = make_zip([("evil.pkl", EVIL_PICKLE)])
    outer = make_zip([("inner.zip", inner)], compression)
    found = pickle_findings(scan(outer, name="outer.zip"), "evil.pkl")
    assert found[0].file == "outer.zip:inner.zip:evil.pkl"


def test_nested_too_deep() -> None:
    innermost = make_zip([("evil.pkl", EVIL_PICKLE)])
    middle = make_zip([("c.zip", innermost)])
    outer = make_zip([("b.zip", middle)])
    result = scan(outer, name="a.zip", limits=Limits(max_nesting_depth=1))
    finding = only(result, "zip.too-deep")
    assert finding.file == "a.zip:b.zip:c.zip"


# --- Hostile inputs never raise -----------------------------------------------------

MUTATIONS: list[Callable[[bytes], bytes]] = [
    lambda data: data[: len(data) // 2],
    lambda data: data[:-1],
    lambda data: bytes(b ^ 0xFF if i % 7 == 0 else b for i, b in enumerate(data)),
    lambda data: data.replace(b"PK\x01\x02", b"PK\x03\x04"),
    lambda data: data + data,
]


@pytest.mark.parametrize("mutate", MUTATIONS)
def test_mutation_no_crash(mutate: Callable[[bytes], bytes]) -> None:
    data = make_zip([("a.pkl", PLAIN_PICKLE), ("b.txt", b"x" * 100)], zipfile.ZIP_DEFLATED)
    result = scan(mutate(data))
    assert "check.failed" not in rules(result)


FUZZ_BASE = make_zip(
    [
        ("m/data.pkl", PLAIN_PICKLE),
        ("m/version", b"3\n"),
        ("m/config.json", b'{"a": 1}'),
        ("m/inner.zip", make_zip([("i.pkl", PLAIN_PICKLE)])),
    ],
    zipfile.ZIP_DEFLATED,
)


@settings(max_examples=200, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(FUZZ_BASE) - 1), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=6,
    )
)
def test_fuzz_byte_edits(edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(FUZZ_BASE)
    for position, replacement in edits:
        data[position : position + len(replacement)] = replacement
    start = time.monotonic()
    result = scan(bytes(data))
    assert isinstance(result, ScanResult)
    assert time.monotonic() - start < 2.0
