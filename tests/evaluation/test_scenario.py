"""The corpus manifest: loading, validation and the paths each case names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from attestgate.evaluation import scenario
from attestgate.evaluation.scenario import (
    CLEAN_BASELINE,
    Case,
    Corpus,
    CorpusError,
    CorpusPathError,
    Scenario,
)


def write_manifest(root: Path, **fields: Any) -> Path:
    """Write a one-case manifest whose case has ``fields`` on top of a valid clean case."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.bin").write_bytes(b"weights")
    case = Case("clean", "base", CLEAN_BASELINE, "model.bin", {"deployment": "allow"}, False)
    Corpus(root, [Scenario("base", CLEAN_BASELINE, "clean")], [case]).write()
    manifest = root / scenario.MANIFEST
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["cases"][0].update(fields)
    manifest.write_text(json.dumps(document), encoding="utf-8")
    return root


def test_load_valid(tmp_path: Path) -> None:
    corpus = scenario.load(write_manifest(tmp_path / "corpus"))
    assert [case.id for case in corpus.cases] == ["clean"]


def test_load_root_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    corpus = scenario.load(Path("corpus"))
    assert corpus.root == (tmp_path / "corpus").resolve()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"artifact": "../../x"}, "artifact"),
        ({"artifact": "/etc/passwd"}, "artifact"),
        ({"evidence": ["ok.sig", "../outside.sig"]}, "evidence"),
        ({"trust_keys": ["/keys/producer.pub"]}, "trust_keys"),
        ({"policy": "policies/../../policy.yaml"}, "policy"),
        (
            {"env": {"ATTESTGATE_OSV_DB": "../osv"}, "env_paths": ["ATTESTGATE_OSV_DB"]},
            "env.ATTESTGATE_OSV_DB",
        ),
    ],
)
def test_load_rejects_escape(tmp_path: Path, fields: dict[str, Any], named: str) -> None:
    root = write_manifest(tmp_path / "corpus", **fields)
    with pytest.raises(CorpusPathError) as caught:
        scenario.load(root)
    assert f"case 'clean', {named}:" in str(caught.value)


def test_load_names_path(tmp_path: Path) -> None:
    root = write_manifest(tmp_path / "corpus", artifact="../../x")
    with pytest.raises(CorpusPathError, match=r"'\.\./\.\./x'"):
        scenario.load(root)


def test_env_without_env_paths_kept(tmp_path: Path) -> None:
    # A value not listed in env_paths is a plain string, not a corpus path.
    root = write_manifest(tmp_path / "corpus", env={"ATTESTGATE_OSV_DB": "/srv/osv"})
    corpus = scenario.load(root)
    assert corpus.cases[0].environment(corpus.root) == {"ATTESTGATE_OSV_DB": "/srv/osv"}


def test_load_rejects_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    root = write_manifest(tmp_path / "corpus", artifact="link.bin")
    os.symlink(tmp_path / "secret.txt", root / "link.bin")
    with pytest.raises(CorpusPathError) as caught:
        scenario.load(root)
    message = str(caught.value)
    assert "case 'clean', artifact:" in message
    assert str((tmp_path / "secret.txt").resolve()) in message


def test_load_rejects_symlinked_folder(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.bin").write_bytes(b"x")
    root = write_manifest(tmp_path / "corpus", artifact="dir/model.bin")
    os.symlink(tmp_path / "elsewhere", root / "dir")
    with pytest.raises(CorpusPathError):
        scenario.load(root)


def test_load_accepts_symlink_inside(tmp_path: Path) -> None:
    root = write_manifest(tmp_path / "corpus", artifact="link.bin")
    os.symlink("model.bin", root / "link.bin")
    corpus = scenario.load(root)
    assert corpus.cases[0].path(corpus.root) == corpus.root / "link.bin"


def test_load_through_symlinked_root(tmp_path: Path) -> None:
    # The corpus folder itself may be reached through a link.
    write_manifest(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    corpus = scenario.load(tmp_path / "alias")
    assert corpus.root == (tmp_path / "real").resolve()


def test_load_rejects_symlink_loop(tmp_path: Path) -> None:
    root = write_manifest(tmp_path / "corpus", artifact="loop")
    os.symlink("loop", root / "loop")
    with pytest.raises(CorpusPathError):
        scenario.load(root)


def test_load_rejects_non_string(tmp_path: Path) -> None:
    root = write_manifest(tmp_path / "corpus", evidence=[5])
    with pytest.raises(CorpusPathError, match="not a string"):
        scenario.load(root)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        scenario.load(tmp_path)


def test_inside_returns_unresolved(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    os.symlink("model.bin", tmp_path / "link.bin")
    assert scenario.inside(tmp_path, "link.bin") == tmp_path / "link.bin"


def test_manifest_paths_every_field() -> None:
    case = Case(
        "c",
        "s",
        CLEAN_BASELINE,
        "a.bin",
        {"deployment": "allow"},
        False,
        evidence=("e.sig",),
        trust_keys=("k.pub",),
        policy="p.yaml",
        env={"NAMES": "n.txt", "MODE": "strict"},
        env_paths=("NAMES",),
    )
    assert scenario.manifest_paths(case) == [
        ("artifact", "a.bin"),
        ("evidence", "e.sig"),
        ("trust_keys", "k.pub"),
        ("policy", "p.yaml"),
        ("env.NAMES", "n.txt"),
    ]
