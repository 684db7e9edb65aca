"""Wheels given as artifacts reach the wheel checks through the zip scanner."""

import base64
import hashlib
import zipfile
from pathlib import Path

from attestgate.pipeline import inspect


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(path: Path, members: dict[str, bytes]) -> None:
    dist = "demo-1.0.dist-info"
    members = dict(members)
    members[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    members[f"{dist}/METADATA"] = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    lines = [record_line(name, data) for name, data in members.items()]
    lines.append(f"{dist}/RECORD,,")
    members[f"{dist}/RECORD"] = ("\n".join(lines) + "\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def rules(path: Path) -> set[str]:
    return {f.rule for f in inspect(path).findings}


def test_clean_pure_wheel_has_no_wheel_finding(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    write_wheel(path, {"demo/__init__.py": b"VALUE = 1\n"})
    found = rules(path)
    assert not {r for r in found if r.startswith("deps.")}


def test_native_library_in_pure_wheel_flagged(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    write_wheel(path, {"demo/__init__.py": b"", "demo/_fast.so": b"\x7fELF" + bytes(60)})
    assert "deps.native-in-pure-wheel" in rules(path)


def test_pth_file_in_wheel_flagged(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    write_wheel(path, {"demo/__init__.py": b"", "demo-hook.pth": b"import os\n"})
    assert "deps.pth-file" in rules(path)
