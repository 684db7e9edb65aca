"""Admission end to end: hostile and clean artifacts through `attestgate admit`.

Each hostile case asserts the exit status (the decision) and the rule that
fired. Hostile pickles are written opcode by opcode; nothing here is loaded.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest

from attestgate.cli.main import main

EXIT_ALLOW, EXIT_QUARANTINE, EXIT_BLOCK = 0, 3, 4


def admit(path: Path, home: Path, *extra: str) -> tuple[int, dict]:
    out = io.StringIO()
    code = main(["admit", str(path), "--home", str(home), "--format", "json", *extra], stdout=out)
    return code, json.loads(out.getvalue())


def rules(record: dict) -> set[str]:
    return {f["rule"] for f in record["findings"]}


def locations(record: dict, rule: str) -> set[str]:
    return {f["file"] for f in record["findings"] if f["rule"] == rule}


def reduce_pickle(module: str, name: str, arg: str, protocol: int = 2) -> bytes:
    """A pickle that calls module.name(arg) when loaded, in GLOBAL form."""
    out = bytes([0x80, protocol])
    out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    encoded = arg.encode()
    out += b"X" + struct.pack("<I", len(encoded)) + encoded
    out += b"\x85"  # TUPLE1
    out += b"R"  # REDUCE
    out += b"."  # STOP
    return out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_reduce_to_os_system_blocks(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(reduce_pickle("os", "system", "id"))
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "pickle.unsafe-global" in rules(record)


def test_protocol0_posix_system_blocks(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"cposix\nsystem\n(S'id'\ntR.")
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "pickle.unsafe-global" in rules(record)


def test_builtins_print_call_blocks(tmp_path: Path, home: Path) -> None:
    # A callable on no denylist: default-deny must still stop it.
    path = tmp_path / "model.pkl"
    path.write_bytes(reduce_pickle("builtins", "print", "hello"))
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "pickle.unknown-global-call" in rules(record)


def test_payload_in_second_pickle_blocks(tmp_path: Path, home: Path) -> None:
    import pickle

    path = tmp_path / "model.pkl"
    path.write_bytes(
        pickle.dumps({"w": [1, 2, 3]}, protocol=4) + reduce_pickle("os", "system", "id")
    )
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "pickle.unsafe-global" in rules(record)


def test_truncated_pickle_quarantines(tmp_path: Path, home: Path, lenient_policy: Path) -> None:
    import pickle

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": list(range(100))}, protocol=4)[:-20])
    code, record = admit(path, home, "--policy", str(lenient_policy))
    assert code == EXIT_QUARANTINE
    assert "pickle.truncated" in rules(record)


def test_disguised_pickle_blocks(tmp_path: Path, home: Path) -> None:
    import pickle

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=4))
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "identify.extension-mismatch" in rules(record)


def test_overlapping_safetensors_blocks(tmp_path: Path, home: Path) -> None:
    header = json.dumps(
        {
            "a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
            "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]},
        }
    ).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "safetensors.overlap" in rules(record)


def test_symlink_escape_blocks(tmp_path: Path, home: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").symlink_to("/etc/passwd")
    code, record = admit(model, home)
    assert code == EXIT_BLOCK
    assert "identify.symlink-escape" in rules(record)


def test_auto_map_quarantines(tmp_path: Path, home: Path, lenient_policy: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"auto_map": {"AutoModel": "modeling_evil.EvilModel"}})
    )
    (model / "modeling_evil.py").write_text("import os\n")
    code, record = admit(model, home, "--policy", str(lenient_policy))
    assert code == EXIT_QUARANTINE
    assert {"hf.auto-map", "hf.embedded-code"} <= rules(record)


@pytest.fixture
def lenient_policy(tmp_path: Path) -> Path:
    """The default policy, except that missing provenance is allowed.

    Every unsigned artifact quarantines under the default policy; this one
    lets a test show what a finding alone leads to.
    """
    from attestgate.policy.engine import default_policy_bytes

    path = tmp_path / "lenient.yaml"
    path.write_bytes(
        default_policy_bytes().replace(
            b"provenance.missing: quarantine", b"provenance.missing: allow"
        )
    )
    return path


# --- PyTorch checkpoints written by torch itself -------------------------------

torch = pytest.importorskip("torch")


def test_torch_state_dict_allowed_without_provenance_rule(
    tmp_path: Path, home: Path, lenient_policy: Path
) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"layer.weight": torch.ones(4, 4), "layer.bias": torch.zeros(4)}, path)
    code, record = admit(path, home, "--policy", str(lenient_policy))
    assert code == EXIT_ALLOW
    assert record["artifact"]["files"][0]["format"] == "pytorch-zip"
    assert rules(record) == {"provenance.missing"}


def test_torch_legacy_checkpoint_allowed(tmp_path: Path, home: Path, lenient_policy: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(10)}, path, _use_new_zipfile_serialization=False)
    code, record = admit(path, home, "--policy", str(lenient_policy))
    assert code == EXIT_ALLOW
    assert record["artifact"]["files"][0]["format"] == "pytorch-legacy"


def test_torch_checkpoint_with_payload_blocks(tmp_path: Path, home: Path) -> None:
    clean = tmp_path / "clean.bin"
    torch.save({"w": torch.ones(2)}, clean)
    hostile = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = reduce_pickle("subprocess", "check_output", "id")
            dst.writestr(info, data)
    code, record = admit(hostile, home)
    assert code == EXIT_BLOCK
    assert locations(record, "pickle.unsafe-global") == {"pytorch_model.bin:clean/data.pkl"}


def test_full_model_pickle_blocks(tmp_path: Path, home: Path) -> None:
    # torch.save(model) pickles the module's class, which a loader must import.
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    code, record = admit(path, home)
    assert code == EXIT_BLOCK
    assert "pickle.unknown-global-call" in rules(record)
