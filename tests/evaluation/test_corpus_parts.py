"""Parts of the corpus generator: index server, wheels, pickles, keys, folders, real files."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import pickletools
import socket
import urllib.error
import zipfile
from pathlib import Path

import pytest

from attestgate.evaluation.corpus import CorpusBuildError, _prepare, pickles
from attestgate.evaluation.corpus._build import Build
from attestgate.evaluation.corpus.index import (
    LOOPBACK,
    fetch,
    serve_index,
    write_simple_index,
    write_wheel,
)
from attestgate.evaluation.corpus.signing import write_keys, write_provenance
from attestgate.evaluation.scenario import MANIFEST
from attestgate.evidence.collect import artifact_digest


def opcodes(data: bytes) -> list[tuple[str, object]]:
    """Disassemble a pickle without running it."""
    return [(op.name, arg) for op, arg, _pos in pickletools.genops(data)]


def tree_digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


# --- The index server --------------------------------------------------------------


@pytest.fixture
def index(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    wheel = write_wheel(folder / "packages", "demo-pkg", "1.0.0", {"demo_pkg/__init__.py": b""})
    write_simple_index(folder, [wheel])
    return folder


def test_server_binds_loopback(index: Path) -> None:
    with serve_index(index) as served:
        assert served.address[0] == LOOPBACK
        assert served.url.startswith(f"http://{LOOPBACK}:")


def test_server_serves_simple_page(index: Path) -> None:
    with serve_index(index) as served:
        page = fetch(served.simple)
    assert page == (index / "simple" / "index.html").read_bytes()


def test_server_serves_wheel_with_hash(index: Path) -> None:
    with serve_index(index) as served:
        project = fetch(f"{served.url}/simple/demo-pkg/").decode()
        wheel = fetch(f"{served.url}/packages/demo_pkg-1.0.0-py3-none-any.whl")
    assert f"#sha256={hashlib.sha256(wheel).hexdigest()}" in project


def test_server_stopped_after_block(index: Path) -> None:
    with serve_index(index) as served:
        address = served.address
    assert served.server.socket.fileno() == -1
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=2):
        pass


def test_server_stopped_after_error(index: Path) -> None:
    with pytest.raises(RuntimeError), serve_index(index) as served:
        raise RuntimeError("stop")
    assert served.server.socket.fileno() == -1


def test_missing_page_is_error(index: Path) -> None:
    with serve_index(index) as served, pytest.raises(urllib.error.HTTPError):
        fetch(f"{served.url}/simple/absent/")


@pytest.mark.parametrize(
    "url", ["http://example.com/simple/", "https://127.0.0.1:1/", "http://127.0.0.10:80/"]
)
def test_fetch_rejects_other_hosts(url: str) -> None:
    with pytest.raises(ValueError, match="only from its own servers"):
        fetch(url)


def test_index_needs_wheels_in_packages(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "elsewhere", "demo", "1.0", {"demo/__init__.py": b""})
    with pytest.raises(ValueError, match="is not in"):
        write_simple_index(tmp_path / "index", [wheel])


# --- Wheels ------------------------------------------------------------------------


def test_wheel_record_matches(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, "acme-demo", "2.0.0", {"acme_demo/__init__.py": b"X = 1\n"})
    assert wheel.path.name == "acme_demo-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel.path) as archive:
        record = archive.read("acme_demo-2.0.0.dist-info/RECORD").decode()
        for name, digest, size in csv.reader(io.StringIO(record)):
            if not digest:
                continue
            data = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={expected.decode()}", name
            assert int(size) == len(data), name


def test_wheel_metadata_names_project(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path, "acme-demo", "2.0.0", {})
    with zipfile.ZipFile(wheel.path) as archive:
        metadata = archive.read("acme_demo-2.0.0.dist-info/METADATA").decode()
    assert "Name: acme-demo\nVersion: 2.0.0\n" in metadata


def test_wheel_bytes_repeat(tmp_path: Path) -> None:
    first = write_wheel(tmp_path / "a", "demo", "1.0", {"demo/__init__.py": b"X = 1\n"})
    second = write_wheel(tmp_path / "b", "demo", "1.0", {"demo/__init__.py": b"X = 1\n"})
    assert first.sha256 == second.sha256


# --- Pickles -------------------------------------------------------------------------


def test_system_payload_opcodes() -> None:
    ops = opcodes(pickles.system_payload())
    assert ("GLOBAL", "os system") in ops
    assert ("REDUCE", None) in ops


def test_inject_keeps_content() -> None:
    clean = pickletools.optimize(b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s.")
    injected = pickles.inject(clean)
    ops = [name for name, _arg in opcodes(injected)]
    assert ops[:6] == ["PROTO", "GLOBAL", "BINUNICODE", "TUPLE1", "REDUCE", "POP"]
    assert injected.endswith(clean[2:])


def test_inject_needs_proto() -> None:
    with pytest.raises(ValueError, match="PROTO"):
        pickles.inject(b"}.")


def test_truncated_keeps_payload_only() -> None:
    clean = b"\x80\x04\x95" + bytes(8) + b"}" * 40 + b"."
    truncated = pickles.truncate_after_payload(clean, keep=5)
    assert b"os\nsystem\n" in truncated
    assert not truncated.endswith(b".")
    with pytest.raises(ValueError):
        list(pickletools.genops(truncated))


def test_npy_header_declares_objects() -> None:
    import numpy as np

    data = pickles.npy_object_array(pickles.system_payload(protocol=3))
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    assert version == (1, 0)
    shape, _fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    assert dtype == np.dtype(object)
    assert shape == (1,)
    assert stream.tell() % 64 == 0


# --- Keys and evidence --------------------------------------------------------------


def test_keys_repeat(tmp_path: Path) -> None:
    first = write_keys(tmp_path / "a")
    second = write_keys(tmp_path / "b")
    assert first.producer.public.read_bytes() == second.producer.public.read_bytes()
    assert first.producer_model.private.read_bytes() == second.producer_model.private.read_bytes()


def test_producer_and_outsider_differ(tmp_path: Path) -> None:
    keys = write_keys(tmp_path)
    assert keys.producer.public.read_bytes() != keys.outsider.public.read_bytes()
    assert keys.producer_model.public.read_bytes() != keys.outsider_model.public.read_bytes()


def test_provenance_binds_digest(tmp_path: Path) -> None:
    keys = write_keys(tmp_path / "keys")
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    evidence = write_provenance(artifact, tmp_path / "p.intoto.jsonl", keys.producer.private)
    envelope = json.loads(evidence.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["digest"]["sha256"] == artifact_digest(artifact)
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"


def test_provenance_signature_repeats(tmp_path: Path) -> None:
    keys = write_keys(tmp_path / "keys")
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    first = write_provenance(artifact, tmp_path / "a.jsonl", keys.producer.private)
    second = write_provenance(artifact, tmp_path / "b.jsonl", keys.producer.private)
    assert first.read_bytes() == second.read_bytes()


# --- The corpus folder ----------------------------------------------------------------


def test_prepare_replaces_earlier_corpus(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / "malicious-hub").mkdir()
    (tmp_path / "malicious-hub" / "x").write_text("x")
    (tmp_path / "notes.txt").write_text("kept")
    _prepare(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_prepare_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"x")
    with pytest.raises(CorpusBuildError, match="not empty"):
        _prepare(tmp_path)
    assert (tmp_path / "data.bin").exists()


def test_prepare_refuses_file(tmp_path: Path) -> None:
    target = tmp_path / "corpus"
    target.write_text("x")
    with pytest.raises(CorpusBuildError, match="is a file"):
        _prepare(target)


# --- Families built alone ---------------------------------------------------------------


def build_in(root: Path, quick: bool = True) -> Build:
    root.mkdir(parents=True, exist_ok=True)
    return Build(root, quick, write_keys(root / "keys"))


def write_formats(folder: Path) -> None:
    from attestgate.evaluation.corpus import archives, hostile, models

    hostile.write_torch_reduce(folder / "model.bin", "t", 256)
    archives.write_7z(folder / "model.7z", {"model.pkl": models.plain_pickle("p", 256)})
    archives.write_tar_gz(folder / "bundle.tar.gz", {"a/b.bin": b"x"})
    models.write_gguf(folder / "model.gguf", "g", 256)
    models.write_keras(folder / "model.keras", "k", 256, models.keras_sequential([]))
    models.write_h5(folder / "model.h5", "h", 256)
    models.write_joblib(folder / "model.joblib", "j", 256)


def test_formats_repeat(tmp_path: Path) -> None:
    write_formats(tmp_path / "a")
    write_formats(tmp_path / "b")
    assert tree_digests(tmp_path / "a") == tree_digests(tmp_path / "b")


def test_real_files_skipped_when_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attestgate.evaluation.corpus import baseline, realfiles

    def unreachable(cache: Path) -> dict[str, Path]:
        raise realfiles.RegistryUnreachableError("pip could not reach a package index")

    monkeypatch.setattr(realfiles, "ensure_artifacts", unreachable)
    build = build_in(tmp_path / "corpus")
    baseline.build_baseline(build, tmp_path / "cache")
    titles = {scenario.id: scenario.title for scenario in build.scenarios}
    assert build.facts["real_files"] == {
        "status": "skipped",
        "reason": "pip could not reach a package index",
    }
    assert "skipped" in titles["base-real-files"]
    assert not [case for case in build.cases if case.scenario == "base-real-files"]


def test_real_files_included(real_artifacts: dict[str, Path], tmp_path: Path) -> None:
    import fetch_artifacts

    from attestgate.evaluation.corpus import baseline

    cache = fetch_artifacts.default_cache()
    build = build_in(tmp_path / "corpus")
    baseline.build_baseline(build, cache)
    real = {case.id: case for case in build.cases if case.scenario == "base-real-files"}
    assert "base-real-silero-jit" in real
    assert real["base-real-silero-jit"].expected["training"] == "quarantine"
    assert real["base-real-silero-jit-signed"].expected["deployment"] == "allow"
    for case in real.values():
        assert case.path(build.root).exists(), case.id
