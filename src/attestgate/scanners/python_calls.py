"""Calls in Python source that run commands or code, found in the syntax tree.

A modeling file that ``auto_map`` names, or a dataset loading script, runs
when a loader imports it. Most such files only define classes, so one that
starts processes or evaluates code it builds at run time does more than a
model needs. The analysis resolves each call's dotted name through the
file's own imports (``import os as o``, ``from subprocess import run``), so
the common aliasing does not hide a call. It is a static heuristic: a call
reached through ``getattr`` with a computed name is reported as such, and
code that hides behind data (a string passed to ``exec``) is caught at the
``exec``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Modules whose every function runs a program or replaces the process.
_PROCESS_MODULES = frozenset({"subprocess", "pty"})
# Individual functions that run a program, load native code or evaluate code.
_DANGEROUS = frozenset(
    {
        "os.system",
        "os.popen",
        "os.execl",
        "os.execle",
        "os.execlp",
        "os.execlpe",
        "os.execv",
        "os.execve",
        "os.execvp",
        "os.execvpe",
        "os.spawnl",
        "os.spawnle",
        "os.spawnlp",
        "os.spawnlpe",
        "os.spawnv",
        "os.spawnve",
        "os.spawnvp",
        "os.spawnvpe",
        "os.posix_spawn",
        "os.posix_spawnp",
        "os.fork",
        "os.forkpty",
        "posix.system",
        "builtins.exec",
        "builtins.eval",
        "builtins.compile",
        "builtins.__import__",
        "importlib.import_module",
        "marshal.loads",
        "pickle.loads",
        "pickle.load",
        "ctypes.CDLL",
        "ctypes.cdll.LoadLibrary",
        "ctypes.PyDLL",
        "runpy.run_path",
        "runpy.run_module",
    }
)
_BUILTINS = frozenset({"exec", "eval", "compile", "__import__"})
MAX_CALLS = 20


@dataclass(frozen=True)
class DangerousCall:
    """One call that runs a program or code: its resolved name and line."""

    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.name} (line {self.line})"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Map each local name bound by an import to the dotted name it is."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _resolve(name: str, aliases: dict[str, str]) -> str:
    head, _, rest = name.partition(".")
    if head in aliases:
        base = aliases[head]
        return f"{base}.{rest}" if rest else base
    if head in _BUILTINS and not rest:
        return f"builtins.{head}"
    return name


def _is_dangerous(name: str) -> bool:
    module = name.split(".", 1)[0]
    return name in _DANGEROUS or (module in _PROCESS_MODULES and "." in name)


def dangerous_calls(tree: ast.AST) -> list[DangerousCall]:
    """Return the calls in ``tree`` that run programs or code, in source order."""
    aliases = _aliases(tree)
    found: list[DangerousCall] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        if dotted is not None:
            name = _resolve(dotted, aliases)
            if _is_dangerous(name):
                found.append(DangerousCall(name, node.lineno))
            elif name in {"getattr", "builtins.getattr"}:
                looked_up = _getattr_target(node, aliases)
                if looked_up is not None:
                    found.append(DangerousCall(looked_up, node.lineno))
    found.sort(key=lambda call: call.line)
    return found


def _getattr_target(node: ast.Call, aliases: dict[str, str]) -> str | None:
    """Return the dangerous name a ``getattr`` on a risky module looks up, if any.

    A literal attribute name counts only when it names a dangerous function,
    and a computed one always counts, because it can name any of them.
    """
    if len(node.args) < 2:
        return None
    target = _dotted(node.args[0])
    if target is None:
        return None
    module = _resolve(target, aliases)
    if module.split(".", 1)[0] not in {"os", "posix", "subprocess", "builtins", "pty", "ctypes"}:
        return None
    attribute = node.args[1]
    if isinstance(attribute, ast.Constant) and isinstance(attribute.value, str):
        name = f"{module}.{attribute.value}"
        return name if _is_dangerous(name) else None
    return f"{module}.<computed name>"
