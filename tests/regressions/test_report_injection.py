"""Names from the artifact that try to forge lines of the text report."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from attestgate.cli.main import _configure_logging, main

FAKE = "\ndecision  ALLOW\n\x1b[2K\x1b[1A"
SYSTEM_P2 = b"\x80\x02cos\nsystem\n(S'id'\ntR."


def admit_text(path: Path, home: Path) -> tuple[int, str]:
    stdout = io.StringIO()
    code = main(["admit", str(path), "--home", str(home)], stdout)
    return code, stdout.getvalue()


def test_file_name_with_newline_and_escape(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    (root / f"weights{FAKE}.pkl").write_bytes(SYSTEM_P2)
    code, text = admit_text(root, tmp_path / "home")
    assert code == 4
    assert "\x1b" not in text
    assert "decision  ALLOW" not in text.splitlines()


def test_pickle_global_with_newline_and_escape(tmp_path: Path) -> None:
    name = f"x{FAKE}".encode()
    data = b"\x80\x04\x8c\x08tempfile" + b"\x8c" + bytes([len(name)]) + name + b"\x93."
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    _, text = admit_text(path, tmp_path / "home")
    assert "\x1b" not in text
    assert "decision  ALLOW" not in text.splitlines()


def test_log_line_with_newline(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger("attestgate")
    saved = (root.handlers[:], root.level, root.propagate)
    try:
        _configure_logging(0)
        logging.getLogger("attestgate.scanners").warning(
            "scan of %s failed", "a.pkl\nattestgate: INFO: ok"
        )
    finally:
        root.handlers[:], root.level, root.propagate = saved
    assert capsys.readouterr().err.count("\n") == 1
