"""Hostile pickles loaded in the sandbox: each payload leaves its signal and blocks."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest

from .conftest import admit_with_sandbox, reason_actions, signals
from .payloads import exec_pickle, reduce_pickle

pytestmark = pytest.mark.usefixtures("isolation")


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_connect_signal_and_block(tmp_path, listener):
    port = listener.getsockname()[1]
    path = write(
        tmp_path, "net.pkl", reduce_pickle("socket", "create_connection", ("127.0.0.1", port))
    )
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "network.connect")
    assert [(s["details"]["host"], s["details"]["port"]) for s in found] == [("127.0.0.1", port)]
    assert found[0]["details"]["loader"] == "pickle.load"
    assert reason_actions(record)["dynamic.network.connect"] == "block"
    assert record["decision"] == "block"
    with pytest.raises(TimeoutError):
        listener.accept()


def test_dns_signal_for_host_name(tmp_path, listener):
    port = listener.getsockname()[1]
    path = write(tmp_path, "dns.pkl", reduce_pickle("socket", "getaddrinfo", "localhost", port))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "dns.query")
    assert [s["details"]["host"] for s in found] == ["localhost"]
    assert reason_actions(record)["dynamic.dns.query"] == "block"


def test_subprocess_signal_and_block(tmp_path):
    path = write(tmp_path, "proc.pkl", reduce_pickle("subprocess", "call", ["/bin/true"]))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "process.exec")
    assert [s["details"]["argv"] for s in found] == [["/bin/true"]]
    assert found[0]["details"]["call"] == "subprocess.Popen"
    assert reason_actions(record)["dynamic.process.exec"] == "block"


def test_os_system_signal(tmp_path):
    path = write(tmp_path, "system.pkl", reduce_pickle("os", "system", "/bin/true"))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "process.exec")
    assert [s["details"].get("command") for s in found] == ["/bin/true"]


def test_write_outside_scratch(tmp_path, private_dir):
    marker = private_dir / "marker"
    path = write(tmp_path, "write.pkl", reduce_pickle("builtins", "open", str(marker), "w"))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "file.write")
    assert [s["details"]["path"] for s in found] == [str(marker)]
    assert reason_actions(record)["dynamic.file.write"] == "block"


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root gate runs the child as another user")
def test_write_is_denied_to_sandbox_user(tmp_path, private_dir):
    marker = private_dir / "marker"
    path = write(tmp_path, "write.pkl", reduce_pickle("builtins", "open", str(marker), "w"))
    admit_with_sandbox(path, tmp_path / "home")
    assert not marker.exists()


def test_credential_read_signal(tmp_path, private_dir):
    credentials = private_dir / ".aws" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text("[default]\naws_access_key_id = FAKEKEYFORTEST\n")
    path = write(tmp_path, "read.pkl", reduce_pickle("builtins", "open", str(credentials)))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "file.read.sensitive")
    assert [s["details"]["path"] for s in found] == [str(credentials)]
    assert reason_actions(record)["dynamic.file.read.sensitive"] == "block"


def test_exec_signal_and_block(tmp_path):
    path = write(tmp_path, "exec.pkl", exec_pickle("x = 1"))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "x-attestgate.code-exec")
    assert [s["details"]["call"] for s in found] == ["exec"]
    assert reason_actions(record)["dynamic.x-attestgate.code-exec"] == "block"


def test_clean_pickle_has_no_serious_signal(tmp_path):
    path = write(tmp_path, "clean.pkl", pickle.dumps({"weights": [0.5, 1.5], "name": "tiny"}))
    record = admit_with_sandbox(path, tmp_path / "home")
    dynamic = [f for f in record["findings"] if f["rule"].startswith("dynamic.")]
    assert [f for f in dynamic if f["severity"] not in ("info", "low")] == []
    assert record["dynamic"]["plugins"][0]["runs"][0]["status"] == "loaded"
    assert record["decision"] != "block"


def test_forged_frames_mark_tampering(tmp_path):
    # The payload writes a frame that is not JSON to every descriptor it has.
    source = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, b'\\x00\\x00\\x00\\x05hello')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    path = write(tmp_path, "tamper.pkl", exec_pickle(source))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "x-attestgate.monitor-tamper")
    assert len(found) == 1
    assert "not valid JSON" in found[0]["details"]["reason"]
    assert reason_actions(record)["dynamic.x-attestgate.monitor-tamper"] == "block"


def test_forged_kind_marks_tampering(tmp_path):
    frame = b'{"t":"ev","r":0,"k":"bogus.kind","d":{}}'
    source = (
        "import os, struct\n"
        f"frame = struct.pack('>I', {len(frame)}) + {frame!r}\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, frame)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    path = write(tmp_path, "forged.pkl", exec_pickle(source))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "x-attestgate.monitor-tamper")
    assert "bogus.kind" in found[0]["details"]["reason"]
    assert "bogus.kind" not in record["dynamic"]["signals"]


def test_numpy_object_array_payload(tmp_path):
    np = pytest.importorskip("numpy")
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    path = tmp_path / "objects.npy"
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(reduce_pickle("subprocess", "call", ["/bin/true"]))
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "process.exec")
    assert [s["details"]["loader"] for s in found] == ["numpy.load(allow_pickle=True)"]


def test_joblib_payload(tmp_path):
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")

    class Spawn:
        def __reduce__(self):
            import subprocess

            return (subprocess.call, (["/bin/true"],))

    path = tmp_path / "model.joblib"
    joblib.dump({"coef": np.arange(4.0), "hook": Spawn()}, path)
    record = admit_with_sandbox(path, tmp_path / "home")
    found = signals(record, "process.exec")
    assert [s["details"]["loader"] for s in found] == ["joblib.load"]


def test_python_module_import(tmp_path, listener):
    port = listener.getsockname()[1]
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "custom"}')
    (folder / "helpers.py").write_text("VALUE = 1\n")
    (folder / "modeling_custom.py").write_text(
        "import socket\n"
        "from .helpers import VALUE\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "except OSError:\n"
        "    pass\n"
    )
    record = admit_with_sandbox(folder, tmp_path / "home")
    found = signals(record, "network.connect")
    assert [s["details"]["loader"] for s in found] == ["importlib.import_module"]
    risky = [
        f
        for f in record["findings"]
        if f["rule"] == "dynamic.module.import" and f["severity"] == "medium"
    ]
    assert "socket" in risky[0]["details"]["names"]
    with pytest.raises(TimeoutError):
        listener.accept()


def test_wheel_install_hook_and_import(tmp_path):
    import zipfile

    path = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/__init__.py", "import os\nos.system('/bin/true')\n")
        archive.writestr("evil_hook.pth", "import subprocess; subprocess.call(['/bin/true'])\n")
        archive.writestr(
            "evil-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr("evil-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: evil\n")
        archive.writestr("evil-1.0.dist-info/top_level.txt", "evil\n")
        archive.writestr("evil-1.0.dist-info/RECORD", "")
    record = admit_with_sandbox(path, tmp_path / "home")
    calls = sorted(s["details"]["call"] for s in signals(record, "process.exec"))
    assert calls == ["os.system", "subprocess.Popen"]


def test_listener_is_reachable_from_gate(listener):
    # The canary itself works, so an empty accept in the tests above means isolation.
    client = socket.create_connection(listener.getsockname(), timeout=1)
    try:
        conn, _ = listener.accept()
        conn.close()
    finally:
        client.close()
