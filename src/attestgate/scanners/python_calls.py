"""Calls in Python source that run commands or code, found in the syntax tree.

A modeling file that ``auto_map`` names, or a dataset loading script, runs
when a loader imports it. Most such files only define classes, so one that
starts processes or evaluates code it builds at run time does more than a
model needs. The analysis resolves each dotted name through the file's own
imports (``import os as o``, ``from subprocess import run``, ``from os import
*``) and through the usual indirections: ``sys.modules['os']``,
``os.__dict__['system']``, ``vars(os)``, ``__builtins__``, ``globals()``,
``getattr`` with a literal name, ``__import__('os')`` and a module that
another module imported (``shutil.os.system``).

A dangerous function counts where the file calls it and also where it only
names it (``run = os.system``, ``map(os.system, commands)``, a decorator or
a class attribute), because a later call through the new name cannot be
followed. It is a static heuristic: a call reached through ``getattr`` with
a computed name is reported as such, and code that hides behind data (a
string passed to ``exec``) is caught at the ``exec``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# Modules whose every function runs a program or replaces the process.
_PROCESS_MODULES = frozenset({"subprocess", "pty", "asyncio.subprocess", "_posixsubprocess"})
# The functions of those modules that start a program. Naming one without
# calling it is reported, but naming a constant such as subprocess.PIPE is not.
_PROCESS_FUNCTIONS = frozenset(
    {
        "subprocess.run",
        "subprocess.Popen",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "pty.spawn",
        "pty.fork",
        "asyncio.subprocess.create_subprocess_exec",
        "asyncio.subprocess.create_subprocess_shell",
        "_posixsubprocess.fork_exec",
    }
)
# Individual functions that run a program, load native code or evaluate code.
# posix and nt functions are checked under their os names.
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
        "os.startfile",
        "builtins.exec",
        "builtins.eval",
        "builtins.compile",
        "builtins.__import__",
        "importlib.import_module",
        "importlib.__import__",
        "asyncio.create_subprocess_exec",
        "asyncio.create_subprocess_shell",
        "code.interact",
        "code.InteractiveInterpreter",
        "code.InteractiveConsole",
        "marshal.loads",
        "pickle.loads",
        "pickle.load",
        "pickle.Unpickler",
        "_pickle.loads",
        "_pickle.load",
        "_pickle.Unpickler",
        "ctypes.CDLL",
        "ctypes.PyDLL",
        "ctypes.WinDLL",
        "ctypes.OleDLL",
        "runpy.run_path",
        "runpy.run_module",
    }
)
# ctypes' library loaders: ctypes.cdll.LoadLibrary, and ctypes.cdll.libc,
# whose attribute lookup itself loads the library.
_DANGEROUS_PREFIXES = ("ctypes.cdll.", "ctypes.pydll.", "ctypes.windll.", "ctypes.oledll.")
# Module names that other modules import and so expose as attributes, as in
# shutil.os.system or tempfile._os.system, so a dotted name is also checked
# from each of these on.
_MODULE_ROOTS = frozenset(
    {
        "os",
        "_os",
        "posix",
        "nt",
        "subprocess",
        "_subprocess",
        "pty",
        "builtins",
        "importlib",
        "ctypes",
        "runpy",
        "marshal",
        "pickle",
        "_pickle",
        "asyncio",
        "_posixsubprocess",
    }
)
_RENAMED_MODULES = {"posix": "os", "nt": "os", "_os": "os", "_subprocess": "subprocess"}
# The most dotted parts a dangerous name has (ctypes.cdll.libc.system).
_MAX_NAME_PARTS = 4
# Modules on which getattr with a computed name can reach a dangerous function.
_RISKY_MODULES = frozenset({"os", "subprocess", "builtins", "pty", "ctypes", "importlib"})
_BUILTINS = frozenset({"exec", "eval", "compile", "__import__"})
_IMPORTERS = frozenset({"builtins.__import__", "importlib.import_module", "importlib.__import__"})
_COMPUTED = "<computed name>"
# Markers for the mappings that globals() and __dict__ or vars() return.
_GLOBALS = "<globals>"
_DICT = ".__dict__"
# Resolution stops at this nesting of attributes, subscripts and calls.
_MAX_DEPTH = 100
MAX_CALLS = 20


@dataclass(frozen=True)
class DangerousCall:
    """One call or reference that runs a program or code: its resolved name and line."""

    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.name} (line {self.line})"


@dataclass
class _Scope:
    """The names the file binds: import aliases, star imports and other bindings."""

    aliases: dict[str, str] = field(default_factory=dict)
    star_modules: list[str] = field(default_factory=list)
    bound: set[str] = field(default_factory=set)
    # The calls, names, attributes and subscripts, parents before children.
    expressions: list[ast.expr] = field(default_factory=list)


def _scope(tree: ast.AST) -> _Scope:
    """Collect the import aliases, star-imported modules, bound names and expressions."""
    scope = _Scope()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call | ast.Attribute | ast.Subscript):
            scope.expressions.append(node)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    scope.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    scope.aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name == "*":
                    scope.star_modules.append(node.module)
                else:
                    scope.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                scope.expressions.append(node)
            else:
                scope.bound.add(node.id)
        elif isinstance(node, ast.arg):
            scope.bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope.bound.add(node.name)
    return scope


def _canonical(name: str) -> str:
    """Return ``name`` under the module that defines it (posix.system is os.system)."""
    head, dot, rest = name.partition(".")
    renamed = _RENAMED_MODULES.get(head)
    if renamed is not None and dot:
        return f"{renamed}.{rest}"
    return name


def _is_dangerous(name: str, called: bool) -> bool:
    name = _canonical(name)
    if name in _DANGEROUS or name in _PROCESS_FUNCTIONS or name.startswith(_DANGEROUS_PREFIXES):
        return True
    if name.endswith("." + _COMPUTED):
        return True
    module, _, _attribute = name.rpartition(".")
    return called and module in _PROCESS_MODULES


def _dangerous_name(name: str, called: bool) -> str | None:
    """Return the dangerous function that ``name`` is or starts with, or None.

    The name is also checked from each module root on (shutil.os.system),
    and each of its dotted prefixes counts as a reference (os.system.__name__
    names os.system). Only the whole name of a call gets the call rules.
    """
    parts = name.split(".")
    starts = [0, *(i for i in range(1, len(parts) - 1) if parts[i] in _MODULE_ROOTS)]
    for start in starts:
        for end in range(min(len(parts), start + _MAX_NAME_PARTS), start + 1, -1):
            candidate = ".".join(parts[start:end])
            if _is_dangerous(candidate, called and end == len(parts)):
                return _canonical(candidate)
    return None


def _constant_text(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class _Resolver:
    """The resolution of expressions to the dotted names of the objects they denote."""

    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self._depth = 0

    def name(self, node: ast.expr, called: bool = False) -> str | None:
        """Return the dotted name ``node`` evaluates to, or None when it is not one.

        Expressions nested deeper than :data:`_MAX_DEPTH` resolve to None, so
        that a long chain cannot exhaust the interpreter's stack.
        """
        if self._depth >= _MAX_DEPTH:
            return None
        self._depth += 1
        try:
            return self._name(node, called)
        finally:
            self._depth -= 1

    def _name(self, node: ast.expr, called: bool) -> str | None:
        if isinstance(node, ast.Name):
            return self._bare(node.id, called)
        if isinstance(node, ast.Attribute):
            # Walked in a loop, so that a long chain does not use up the depth.
            attributes: list[str] = []
            value: ast.expr = node
            while isinstance(value, ast.Attribute):
                if value.attr != "__call__":
                    attributes.append(value.attr)
                value = value.value
            base = self.name(value)
            if base is None:
                return None
            return ".".join([base, *reversed(attributes)])
        if isinstance(node, ast.Subscript):
            return self._item(node)
        if isinstance(node, ast.Call):
            return self._call_result(node)
        return None

    def _bare(self, identifier: str, called: bool) -> str:
        scope = self.scope
        if identifier in scope.aliases:
            return scope.aliases[identifier]
        if identifier == "__builtins__":
            return "builtins"
        for module in scope.star_modules:
            candidate = f"{module}.{identifier}"
            if _is_dangerous(candidate, called):
                return candidate
        # A call of a bare builtin is checked even where the file binds the
        # name, because "exec = exec" would otherwise hide the call.
        if identifier in _BUILTINS and (called or identifier not in scope.bound):
            return f"builtins.{identifier}"
        return identifier

    def _item(self, node: ast.Subscript) -> str | None:
        key = _constant_text(node.slice)
        if key is None:
            return None
        container = node.value
        if isinstance(container, ast.Call) and not container.keywords:
            function = self.name(container.func)
            if function in ("vars", "builtins.vars") and len(container.args) == 1:
                base = self.name(container.args[0])
                return None if base is None else f"{base}.{key}"
        base = self.name(container)
        if base is None:
            return None
        if base == "sys.modules" or base.endswith(".sys.modules"):
            return key
        if base == _GLOBALS:
            return self._bare(key, called=False)
        if base == "builtins" or base.endswith("builtins" + _DICT):
            return f"builtins.{key}"
        if base.endswith(_DICT):
            return f"{base[: -len(_DICT)]}.{key}"
        return None

    def _call_result(self, node: ast.Call) -> str | None:
        """Return the name of what a call returns, for calls that return a named object."""
        function = node.func
        if isinstance(function, ast.Attribute) and function.attr in ("__getattribute__", "get"):
            owner = self.name(function.value)
            key = _constant_text(node.args[0]) if node.args else None
            if owner is None or key is None:
                return None
            if function.attr == "get":
                modules = owner == "sys.modules" or owner.endswith(".sys.modules")
                return key if modules else None
            return f"{owner}.{key}"
        callee = self.name(function, called=True)
        if callee in ("globals", "builtins.globals"):
            return _GLOBALS
        if callee in _IMPORTERS and node.args:
            return _constant_text(node.args[0])
        if callee in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            owner = self.name(node.args[0])
            if owner is None:
                return None
            attribute = _constant_text(node.args[1])
            if attribute is not None:
                return f"{owner}.{attribute}"
            root = _canonical(owner).split(".", 1)[0]
            return f"{owner}.{_COMPUTED}" if root in _RISKY_MODULES else None
        return None


def dangerous_calls(tree: ast.AST) -> list[DangerousCall]:
    """Return the calls and references in ``tree`` that run programs or code, in source order."""
    scope = _scope(tree)
    resolver = _Resolver(scope)
    found: dict[tuple[str, int], DangerousCall] = {}
    # The inner parts of a dotted name and a call's callee are checked with
    # the name or call that contains them (ast.walk visits parents first).
    inner: set[int] = set()
    for node in scope.expressions:
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
        elif isinstance(node, ast.Call):
            inner.add(id(node.func))
        if id(node) in inner and not isinstance(node, ast.Call):
            continue
        if isinstance(node, ast.Call):
            names = [(resolver.name(node.func, called=True), True), (resolver.name(node), False)]
        elif isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
            if not isinstance(node.ctx, ast.Load):
                continue
            names = [(resolver.name(node), False)]
        else:
            continue
        for name, called in names:
            dangerous = _dangerous_name(name, called) if name is not None else None
            if dangerous is not None:
                key = (dangerous, node.lineno)
                found.setdefault(key, DangerousCall(dangerous, node.lineno))
    return _without_prefixes(sorted(found.values(), key=lambda call: (call.line, call.name)))


def _without_prefixes(calls: list[DangerousCall]) -> list[DangerousCall]:
    """Drop a name whose longer dotted form is reported on the same line (ctypes.cdll.libc)."""
    by_line: dict[int, list[str]] = {}
    for call in calls:
        by_line.setdefault(call.line, []).append(call.name)
    reported = []
    for call in calls:
        longer = f"{call.name}."
        if not any(name.startswith(longer) for name in by_line[call.line]):
            reported.append(call)
    return reported
