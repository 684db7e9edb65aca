"""Python files that run programs through names the call analysis did not follow.

Each hostile source names a dangerous function in a way other than a plain
call of an imported name: a star import, an assignment, a mapping lookup,
an attribute of another module, or a reference passed on to other code.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from attestgate.findings import Finding
from attestgate.scanners.python_calls import dangerous_calls

Decide = Callable[[Path], tuple[str, list[Finding]]]
Write = Callable[[str, bytes], Path]


def names(source: str) -> list[str]:
    return [call.name for call in dangerous_calls(ast.parse(source))]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from os import *\nsystem('id')\n", "os.system"),
        ("from subprocess import *\ncheck_output(['id'])\n", "subprocess.check_output"),
        ("import os\nrun = os.system\nrun('id')\n", "os.system"),
        ("import os\nclass A:\n    run = os.system\nA.run('id')\n", "os.system"),
        ("import os\nlist(map(os.system, ['id']))\n", "os.system"),
        ("import os\n@os.system\ndef f():\n    pass\n", "os.system"),
        ("import os, threading\nthreading.Thread(target=os.system, args=('id',))\n", "os.system"),
        ("import os\nos.__dict__['system']('id')\n", "os.system"),
        ("import os\nvars(os)['system']('id')\n", "os.system"),
        ("import sys\nsys.modules['os'].system('id')\n", "os.system"),
        ("import sys\nsys.modules.get('subprocess').run(['id'])\n", "subprocess.run"),
        ("import builtins\nbuiltins.__dict__['exec']('1')\n", "builtins.exec"),
        ("__builtins__['exec']('1')\n", "builtins.exec"),
        ("__builtins__.eval('1')\n", "builtins.eval"),
        ("globals()['__builtins__']['exec']('1')\n", "builtins.exec"),
        ("import os\nglobals()['os'].system('id')\n", "os.system"),
        ("getattr(__builtins__, 'exec')('1')\n", "builtins.exec"),
        ("import importlib\nimportlib.__import__('os')\n", "importlib.__import__"),
        ("__import__('os').system('id')\n", "os.system"),
        ("import importlib\nimportlib.import_module('subprocess').run(['id'])\n", "subprocess.run"),
        ("import os\nos.system.__call__('id')\n", "os.system"),
        ("import os\nos.__getattribute__('system')('id')\n", "os.system"),
        ("import shutil\nshutil.os.system('id')\n", "os.system"),
        ("import tempfile\ntempfile._os.system('id')\n", "os.system"),
        ("import posix\nposix.execv('/bin/sh', ['sh'])\n", "os.execv"),
        (
            "import asyncio\nasyncio.create_subprocess_shell('id')\n",
            "asyncio.create_subprocess_shell",
        ),
        ("import ctypes\nctypes.cdll.libc.system(b'id')\n", "ctypes.cdll.libc.system"),
        ("def f(x, run=exec):\n    return run(x)\n", "builtins.exec"),
        ("exec = exec\nexec('1')\n", "builtins.exec"),
        ("import pickle\npickle.Unpickler(stream).load()\n", "pickle.Unpickler"),
    ],
)
def test_bypass_found(source: str, expected: str) -> None:
    assert expected in names(source)


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nmodel = torch.compile(model)\n",
        "import re\npattern = re.compile('x')\n",
        "model.eval()\nself.eval()\n",
        "import subprocess\nmode = subprocess.PIPE\n",
        "from subprocess import *\nmode = PIPE\n",
        "def forward(self, x, compile=False, eval=True):\n    return compile or eval\n",
        "import importlib.util\nfound = importlib.util.find_spec('flash_attn')\n",
        "import os\nvalue = os.environ.get('X')\npath = os.path.join('a', 'b')\n",
        "from typing import *\nx: Optional[int] = None\n",
        "value = getattr(self, name)\n",
        "import torch\nlayer = getattr(torch.nn, name)\n",
    ],
)
def test_modeling_code_clean(source: str) -> None:
    assert names(source) == []


def test_long_chain_bounded() -> None:
    # Resolution must neither exhaust the stack nor lose the name at the root.
    source = "import os\nos.system" + ".__call__" * 1500 + "('id')\n"
    assert names(source) == ["os.system"]


def test_star_import_blocked(decide: Decide, write: Write) -> None:
    path = write(
        "repo/modeling_evil.py",
        b"from os import *\n\nclass Model:\n    def __init__(self):\n        system('id')\n",
    )
    decision, findings = decide(path.parent)
    assert decision == "block"
    assert any(f.rule == "hf.dangerous-call" for f in findings)


def test_unparsable_code_says_unchecked(decide: Decide, write: Write) -> None:
    # Python 3.12 syntax does not parse under 3.11 but imports under 3.12.
    path = write("repo/modeling_new.py", b"type Alias = int\nimport os\nos.system('id')\n")
    decision, findings = decide(path.parent)
    embedded = [f for f in findings if f.rule == "hf.embedded-code"]
    assert decision != "allow"
    assert len(embedded) == 1
    assert "could not parse" in embedded[0].message
    assert embedded[0].details["unparsed"].startswith("invalid syntax at line 1")
