"""Static evaluation of Jinja2 expressions for the chat-template analysis.

Injection payloads hide names such as ``__class__`` by building them from
pieces: ``'__cla' ~ 'ss__'``, ``'ssalc__'|reverse``, ``'%c%c'|format(95, 95)``,
``dict(__class__=1)|first``. The evaluator computes what such expressions
yield when every leaf is a constant, following ``set``, ``for`` and ``with``
bindings. It only calls pure string, number and container operations on the
constants, each bounded in size, and gives up (``Unknown``) on anything that
depends on render-time data. It also decides whether an expression is an
integer (``loop.index0 - 1``) or a value read from the rendered data
(``message.role``), because ordinary templates compute lookup keys of these
two kinds.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

# Maximum length of a string, and of a list, that the evaluator builds.
MAX_STRING = 64 * 1024
MAX_SEQUENCE = 4096
# Alternative values kept for one expression (a variable set in two branches
# has two) and the deepest expression the evaluator follows.
MAX_ALTERNATIVES = 16
MAX_EVAL_DEPTH = 48
# Evaluation steps for one template. Variables that reach each other through
# both branches of a condition would otherwise cost time exponential in the
# chain's length.
MAX_STEPS = 100_000

# Names that the engine or the model's own configuration supplies, so a key
# read from them is not data from the conversation.
_ENGINE_GLOBALS = frozenset(
    {
        "lipsum",
        "self",
        "config",
        "request",
        "url_for",
        "get_flashed_messages",
        "cycler",
        "joiner",
        "namespace",
        "range",
        "dict",
        "raise_exception",
        "strftime_now",
        # Inside a macro: the extra arguments and the caller block.
        "varargs",
        "kwargs",
        "caller",
    }
)
_CONFIG_NAMES = frozenset({"additional_special_tokens", "chat_template"})

_LOOP_NUMBERS = frozenset({"index", "index0", "revindex", "revindex0", "length", "depth", "depth0"})
_NUMERIC_FILTERS = frozenset(
    {"length", "count", "int", "float", "abs", "round", "sum", "wordcount"}
)
_DATA_FILTERS = frozenset(
    {
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "map",
        "batch",
        "slice",
        "groupby",
        "join",
        "min",
        "max",
        "trim",
        "lower",
        "upper",
        "title",
        "capitalize",
        "string",
        "first",
        "last",
        "list",
        "items",
        "dictsort",
        "sort",
        "unique",
        "reverse",
        "default",
        "d",
        "e",
        "escape",
        "safe",
        "tojson",
        "replace",
    }
)
_DATA_METHODS = frozenset(
    {
        "strip",
        "lstrip",
        "rstrip",
        "lower",
        "upper",
        "title",
        "split",
        "rsplit",
        "get",
        "items",
        "keys",
        "values",
    }
)
# Codecs the evaluator decodes with, named as _codec normalises them. The
# list keeps attacker-chosen names away from Python's codec search, which
# imports modules of the encodings package by name.
_CODECS = frozenset(
    {"utf-8", "utf8", "ascii", "latin-1", "latin1", "unicode-escape", "raw-unicode-escape"}
)
_HTML_SPECIAL = re.compile(r"[<>&'\"]")
_PERCENT_DIRECTIVE = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])?"
)
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?#?0?\d{0,3}[,_]?(?:\.\d{1,3})?[bcdeEfFgGnosxX%]?")
_SCALARS = (str, int, float, bool, type(None))


class Unknown(Exception):
    """The value depends on render-time data, or computing it would exceed a bound."""


@dataclass(frozen=True)
class _Binding:
    """One way a template gives a variable its value.

    ``kind`` is ``expr`` (``set``, ``with``), ``iter`` (a ``for`` target),
    ``unpack`` (one name of a tuple target), ``block`` (``{% set %}`` with a
    body), ``macro``, ``param`` (parameter ``index`` of the macro ``node``) or
    ``unknown`` (imports and ``{% call %}`` block parameters).
    """

    kind: str
    node: nodes.Node | None = None
    index: int = 0


class ConstantEvaluator:
    """Evaluate constant expressions of one template, given its name bindings."""

    def __init__(self) -> None:
        self._bindings: dict[str, list[_Binding]] = {}
        self._memo: dict[int, list[Any] | None] = {}
        self._active: set[str] = set()
        # Direct calls of each name, and every read of each name, to tell a
        # macro that is only ever called by name from one passed around.
        self._calls: dict[str, list[nodes.Call]] = {}
        self._loads: dict[str, int] = {}
        self._kinds: dict[tuple[str, int], bool] = {}
        self._constant_memo: dict[int, list[Any]] = {}
        # Times a cycle was assumed to have the kind asked for; a result that
        # rests on such an assumption is not cached.
        self._assumptions = 0
        self._steps = 0

    # --- Bindings ----------------------------------------------------------

    def bind(self, node: nodes.Node) -> None:
        """Record the names that ``node`` binds, if it is a binding statement."""
        if isinstance(node, nodes.Assign):
            self._bind_target(node.target, node.node)
        elif isinstance(node, nodes.AssignBlock):
            self._add(_target_key(node.target), _Binding("block", node))
        elif isinstance(node, nodes.For):
            self._bind_iteration(node.target, node.iter)
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values, strict=False):
                self._bind_target(target, value)
        elif isinstance(node, nodes.Macro):
            self._add(node.name, _Binding("macro", node))
            for index, arg in enumerate(node.args):
                self._add(arg.name, _Binding("param", node, index))
        elif isinstance(node, nodes.CallBlock):
            for arg in node.args:
                self._add(arg.name, _Binding("unknown"))
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            self._calls.setdefault(node.node.name, []).append(node)
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            self._loads[node.name] = self._loads.get(node.name, 0) + 1
        elif isinstance(node, nodes.Import):
            self._add(node.target, _Binding("unknown"))
        elif isinstance(node, nodes.FromImport):
            for name in node.names:
                self._add(name if isinstance(name, str) else name[1], _Binding("unknown"))

    def is_bound(self, name: str) -> bool:
        """Return True when the template itself assigns ``name``."""
        return name in self._bindings

    def _bind_target(self, target: nodes.Node, value: nodes.Node) -> None:
        if isinstance(target, nodes.Tuple):
            items = value.items if isinstance(value, nodes.Tuple | nodes.List) else None
            for index, item in enumerate(target.items):
                if items is not None and len(items) == len(target.items):
                    self._bind_target(item, items[index])
                else:
                    self._add(_target_key(item), _Binding("unpack", value))
        else:
            self._add(_target_key(target), _Binding("expr", value))

    def _bind_iteration(self, target: nodes.Node, iterable: nodes.Node) -> None:
        if isinstance(target, nodes.Tuple):
            for item in target.items:
                self._add(_target_key(item), _Binding("unpack", iterable))
        else:
            self._add(_target_key(target), _Binding("iter", iterable))

    def _add(self, key: str | None, binding: _Binding) -> None:
        if key is not None:
            self._bindings.setdefault(key, []).append(binding)

    def _arguments(self, binding: _Binding) -> list[nodes.Node] | None:
        """Return the expressions that the call sites pass for a macro parameter.

        Returns None when the sources are unknown: the macro is read other
        than in a direct call (so other names may call it), or a call passes
        ``*args`` or ``**kwargs``.
        """
        macro = binding.node
        if not isinstance(macro, nodes.Macro):
            return None
        calls = self._calls.get(macro.name, [])
        if self._loads.get(macro.name, 0) > len(calls):
            return None
        param = macro.args[binding.index]
        first_default = len(macro.args) - len(macro.defaults)
        sources: list[nodes.Node] = []
        for call in calls:
            if call.dyn_args is not None or call.dyn_kwargs is not None:
                return None
            if binding.index < len(call.args):
                sources.append(call.args[binding.index])
                continue
            passed = [kw.value for kw in call.kwargs if kw.key == param.name]
            if passed:
                sources.extend(passed)
            elif binding.index >= first_default:
                sources.append(macro.defaults[binding.index - first_default])
        return sources

    # --- Evaluation --------------------------------------------------------

    def evaluate(self, node: nodes.Node) -> list[Any]:
        """Return the values ``node`` can take, or raise Unknown."""
        return self._eval(node, 0)

    def possible_constants(self, node: nodes.Node) -> list[Any]:
        """Return the constant values among a variable's or a branch's sources."""
        return self._constants(node, 0)[:MAX_SEQUENCE]

    def _constants(self, node: nodes.Node, depth: int) -> list[Any]:
        try:
            return self._eval(node, depth)
        except Unknown:
            pass
        key = id(node)
        if key in self._constant_memo:
            return self._constant_memo[key]
        if depth > MAX_EVAL_DEPTH or self._exhausted():
            return []

        assumptions = self._assumptions
        found: list[Any] = []
        if isinstance(node, nodes.CondExpr):
            for branch in (node.expr1, node.expr2):
                if branch is not None:
                    found.extend(self._constants(branch, depth + 1))
        elif isinstance(node, nodes.Name) and node.name in self._active:
            self._assumptions += 1
        elif isinstance(node, nodes.Name):
            self._active.add(node.name)
            try:
                for binding in self._bindings.get(node.name, []):
                    found.extend(self._binding_constants(binding, depth + 1))
            finally:
                self._active.discard(node.name)

        result = _distinct(found)
        if self._assumptions == assumptions:
            self._constant_memo[key] = result
        return result

    def block_values(self, node: nodes.AssignBlock) -> list[Any]:
        """Return the text that a ``{% set x %}...{% endset %}`` block assigns, if constant."""
        try:
            return self._binding_values(_Binding("block", node), 0)
        except Unknown:
            return []

    def _binding_constants(self, binding: _Binding, depth: int) -> list[Any]:
        try:
            return self._binding_values(binding, depth)
        except Unknown:
            pass
        if binding.kind == "expr" and binding.node is not None:
            return self._constants(binding.node, depth)
        if binding.kind == "param":
            arguments = self._arguments(binding) or []
            return [value for node in arguments for value in self._constants(node, depth)]
        return []

    def _eval(self, node: nodes.Node, depth: int) -> list[Any]:
        if depth > MAX_EVAL_DEPTH:
            raise Unknown
        key = id(node)
        if key in self._memo:
            cached = self._memo[key]
            if cached is None:
                raise Unknown
            return cached
        if self._exhausted():
            raise Unknown
        self._memo[key] = None  # a cycle back to this node is Unknown
        result = _dedupe(self._compute(node, depth + 1))
        self._memo[key] = result
        return result

    def _compute(self, node: nodes.Node, depth: int) -> list[Any]:
        if isinstance(node, nodes.Const):
            return [_checked(node.value)]
        if isinstance(node, nodes.TemplateData):
            return [_checked(node.data)]

        if isinstance(node, nodes.List | nodes.Tuple):
            return self._sequence(node, depth)
        if isinstance(node, nodes.Dict):
            return [self._dict(node, depth)]
        if isinstance(node, nodes.Concat):
            combos = _product([self._eval(part, depth) for part in node.nodes])
            return [_checked("".join(_text(value) for value in combo)) for combo in combos]
        if isinstance(node, nodes.BinExpr):
            combos = _product([self._eval(node.left, depth), self._eval(node.right, depth)])
            return [_binary(node.operator, left, right) for left, right in combos]
        if isinstance(node, nodes.UnaryExpr):
            return [_unary(node.operator, value) for value in self._eval(node.node, depth)]
        if isinstance(node, nodes.CondExpr):
            return self._conditional(node, depth)

        if isinstance(node, nodes.Getitem):
            return self._item(node, depth)
        if isinstance(node, nodes.Getattr):
            return self._attribute(node, depth)
        if isinstance(node, nodes.Filter):
            if node.node is None:
                raise Unknown
            return self._filter(node, self._eval(node.node, depth), depth)
        if isinstance(node, nodes.Call):
            return self._call(node, depth)
        if isinstance(node, nodes.Name):
            return self._name(node.name, depth)
        raise Unknown

    def _sequence(self, node: nodes.List | nodes.Tuple, depth: int) -> list[Any]:
        if len(node.items) > MAX_SEQUENCE:
            raise Unknown
        combos = _product([self._eval(item, depth) for item in node.items])
        if isinstance(node, nodes.Tuple):
            return [tuple(combo) for combo in combos]
        return [list(combo) for combo in combos]

    def _dict(self, node: nodes.Dict, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for pair in node.items[: MAX_SEQUENCE + 1]:
            keys = self._eval(pair.key, depth)
            values = self._eval(pair.value, depth)
            if len(keys) != 1 or len(values) != 1 or not isinstance(keys[0], _SCALARS):
                raise Unknown
            result[keys[0]] = values[0]
        if len(result) > MAX_SEQUENCE:
            raise Unknown
        return result

    def _conditional(self, node: nodes.CondExpr, depth: int) -> list[Any]:
        branches = [node.expr1, node.expr2]
        try:
            tests = self._eval(node.test, depth)
        except Unknown:
            tests = []
        if len(tests) == 1:
            branches = [node.expr1 if tests[0] else node.expr2]
        values: list[Any] = []
        for branch in branches:
            # A missing else branch renders as an empty string.
            values.extend([""] if branch is None else self._eval(branch, depth))
        return values

    def _item(self, node: nodes.Getitem, depth: int) -> list[Any]:
        bases = self._eval(node.node, depth)
        if isinstance(node.arg, nodes.Slice):
            keys = [self._slice(node.arg, depth)]
        else:
            keys = self._eval(node.arg, depth)
        return [_subscript(base, key) for base, key in _product([bases, keys])]

    def _slice(self, node: nodes.Slice, depth: int) -> slice:
        parts: list[int | None] = []
        for part in (node.start, node.stop, node.step):
            if part is None:
                parts.append(None)
                continue
            values = self._eval(part, depth)
            if len(values) != 1 or not isinstance(values[0], int):
                raise Unknown
            parts.append(values[0])
        if parts[2] == 0:
            raise Unknown
        return slice(*parts)

    def _attribute(self, node: nodes.Getattr, depth: int) -> list[Any]:
        if isinstance(node.node, nodes.Name) and node.node.name in self._bindings:
            sources = self._namespace_sources(node.node.name, node.attr)
            if sources:
                return _flatten([self._eval(source, depth) for source in sources])
        # Jinja falls back from an attribute to an item of the same name.
        return [_subscript(base, node.attr) for base in self._eval(node.node, depth)]

    def _namespace_sources(self, name: str, attr: str) -> list[nodes.Node]:
        """Return the expressions that ``namespace(attr=...)`` and ``set ns.attr`` give."""
        sources: list[nodes.Node] = []
        for binding in self._bindings.get(name, []):
            call = binding.node
            if (
                binding.kind == "expr"
                and isinstance(call, nodes.Call)
                and isinstance(call.node, nodes.Name)
                and call.node.name == "namespace"
            ):
                sources.extend(kw.value for kw in call.kwargs if kw.key == attr)
        for binding in self._bindings.get(f"{name}.{attr}", []):
            if binding.node is not None:
                sources.append(binding.node)
        return sources

    def _filter(self, node: nodes.Filter, bases: list[Any], depth: int) -> list[Any]:
        args = _product([self._eval(arg, depth) for arg in node.args])
        kwargs = self._keywords(node.kwargs, depth)
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unknown
        return [
            _apply_filter(node.name, base, list(combo), kwargs)
            for base, combo in itertools.product(bases, args)
        ][: MAX_ALTERNATIVES + 1]

    def _keywords(self, keywords: list[Any], depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for keyword in keywords:
            values = self._eval(keyword.value, depth)
            if len(values) != 1:
                raise Unknown
            result[keyword.key] = values[0]
        return result

    def _call(self, node: nodes.Call, depth: int) -> list[Any]:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unknown
        callee = node.node
        if isinstance(callee, nodes.Name) and callee.name == "dict":
            if callee.name in self._bindings or node.args:
                raise Unknown
            return [dict(self._keywords(node.kwargs, depth))]
        if isinstance(callee, nodes.Name):
            macros = [b.node for b in self._bindings.get(callee.name, []) if b.kind == "macro"]
            if len(macros) == 1 and isinstance(macros[0], nodes.Macro) and not macros[0].args:
                return [self._body_text(macros[0].body, depth)]
            raise Unknown
        if not isinstance(callee, nodes.Getattr):
            raise Unknown
        bases = self._eval(callee.node, depth)
        args = _product([self._eval(arg, depth) for arg in node.args])
        kwargs = self._keywords(node.kwargs, depth)
        return [
            _call_method(base, callee.attr, list(combo), kwargs)
            for base, combo in itertools.product(bases, args)
        ][: MAX_ALTERNATIVES + 1]

    def _name(self, name: str, depth: int) -> list[Any]:
        bindings = self._bindings.get(name)
        if not bindings or name in self._active:
            raise Unknown
        self._active.add(name)
        try:
            return _flatten([self._binding_values(binding, depth) for binding in bindings])
        finally:
            self._active.discard(name)

    def _binding_values(self, binding: _Binding, depth: int) -> list[Any]:
        node = binding.node
        if binding.kind == "expr" and node is not None:
            return self._eval(node, depth)
        if binding.kind == "iter" and node is not None:
            return _flatten([_elements(value) for value in self._eval(node, depth)])
        if binding.kind == "block" and isinstance(node, nodes.AssignBlock):
            text = self._body_text(node.body, depth)
            return self._filter_chain(node.filter, text, depth)
        if binding.kind == "param":
            arguments = self._arguments(binding)
            if arguments is not None:
                return _flatten([self._eval(argument, depth) for argument in arguments])
        raise Unknown

    def _body_text(self, body: list[nodes.Node], depth: int) -> str:
        """Return the text that a block body of plain output renders."""
        pieces: list[str] = []
        for statement in body:
            if not isinstance(statement, nodes.Output):
                raise Unknown
            for expression in statement.nodes:
                values = self._eval(expression, depth)
                if len(values) != 1:
                    raise Unknown
                pieces.append(_text(values[0]))
        return str(_checked("".join(pieces)))

    def _filter_chain(self, chain: nodes.Filter | None, value: Any, depth: int) -> list[Any]:
        """Apply ``{% set x | f | g %}`` filters, innermost first, to ``value``."""
        filters: list[nodes.Filter] = []
        while chain is not None:
            filters.append(chain)
            inner = chain.node
            chain = inner if isinstance(inner, nodes.Filter) else None
        values = [value]
        for applied in reversed(filters):
            values = _flatten([self._filter(applied, [item], depth) for item in values])
        return values

    # --- Kinds of keys -----------------------------------------------------

    def is_numeric(self, node: nodes.Node) -> bool:
        """Return True when ``node`` can only be a number (an index, not a name)."""
        return self._numeric(node, 0)

    def _exhausted(self) -> bool:
        self._steps += 1
        return self._steps > MAX_STEPS

    def _kind(
        self, kind: str, node: nodes.Node, depth: int, test: Callable[[nodes.Node, int], bool]
    ) -> bool:
        """Return ``test(node)``, cached per node; False beyond the depth or step bound."""
        key = (kind, id(node))
        cached = self._kinds.get(key)
        if cached is not None:
            return cached
        if depth > MAX_EVAL_DEPTH or self._exhausted():
            return False
        assumptions = self._assumptions
        result = test(node, depth + 1)
        if self._assumptions == assumptions:
            self._kinds[key] = result
        return result

    def _numeric(self, node: nodes.Node, depth: int) -> bool:
        return self._kind("numeric", node, depth, self._test_numeric)

    def _test_numeric(self, node: nodes.Node, depth: int) -> bool:
        try:
            values = self.evaluate(node)
        except Unknown:
            values = None
        if values is not None:
            return all(isinstance(value, int | float) for value in values)

        # Only numbers survive these operators at render time.
        if isinstance(node, nodes.Neg | nodes.Pos | nodes.Sub | nodes.Div | nodes.FloorDiv):
            return True
        if isinstance(node, nodes.Pow):
            return True
        if isinstance(node, nodes.Add | nodes.Mul):
            return self._numeric(node.left, depth) and self._numeric(node.right, depth)
        if isinstance(node, nodes.Mod):
            return self._numeric(node.left, depth)
        if isinstance(node, nodes.Filter):
            return node.name in _NUMERIC_FILTERS
        if isinstance(node, nodes.CondExpr):
            branches = [b for b in (node.expr1, node.expr2) if b is not None]
            return all(self._numeric(branch, depth) for branch in branches)

        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            base = node.node.name
            if base == "loop" and base not in self._bindings:
                return node.attr in _LOOP_NUMBERS
            return self._namespace_kind(base, node.attr, depth, self._numeric) is True
        if isinstance(node, nodes.Name):
            return self._name_kind(node.name, depth, self._numeric_binding)
        return False

    def _numeric_binding(self, binding: _Binding, depth: int) -> bool:
        node = binding.node
        if binding.kind == "expr" and node is not None:
            return self._numeric(node, depth)
        if binding.kind == "iter" and isinstance(node, nodes.Call):
            return isinstance(node.node, nodes.Name) and node.node.name == "range"
        if binding.kind == "param":
            arguments = self._arguments(binding)
            return arguments is not None and all(self._numeric(a, depth) for a in arguments)
        return False

    def is_data(self, node: nodes.Node) -> bool:
        """Return True when ``node`` is a value read from the rendered conversation."""
        return self._data(node, 0)

    def _data(self, node: nodes.Node, depth: int) -> bool:
        return self._kind("data", node, depth, self._test_data)

    def _test_data(self, node: nodes.Node, depth: int) -> bool:
        if isinstance(node, nodes.Const):
            return True
        if isinstance(node, nodes.Name):
            if node.name not in self._bindings:
                return _is_conversation_name(node.name)
            return self._name_kind(node.name, depth, self._data_binding)
        if isinstance(node, nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name in self._bindings:
                kind = self._namespace_kind(node.node.name, node.attr, depth, self._plain)
                if kind is not None:
                    return kind
            return self._data(node.node, depth)
        if isinstance(node, nodes.Getitem):
            arg = node.arg
            key_ok = isinstance(arg, nodes.Slice) or self._plain(arg, depth)
            return key_ok and self._data(node.node, depth)
        if isinstance(node, nodes.Filter):
            return (
                node.node is not None
                and node.name in _DATA_FILTERS
                and self._data(node.node, depth)
            )
        if isinstance(node, nodes.Call):
            callee = node.node
            return (
                isinstance(callee, nodes.Getattr)
                and callee.attr in _DATA_METHODS
                and self._data(callee.node, depth)
            )
        if isinstance(node, nodes.CondExpr):
            branches = [b for b in (node.expr1, node.expr2) if b is not None]
            return all(self._plain(branch, depth) for branch in branches)
        return False

    def _plain(self, node: nodes.Node, depth: int) -> bool:
        """Return True for a constant, a number or data: anything but a built name."""
        try:
            self.evaluate(node)
        except Unknown:
            return self._numeric(node, depth) or self._data(node, depth)
        return True

    def _data_binding(self, binding: _Binding, depth: int) -> bool:
        node = binding.node
        if node is None:
            return False
        if binding.kind in ("expr", "iter", "unpack"):
            return self._plain(node, depth)
        if binding.kind == "param":
            arguments = self._arguments(binding)
            return arguments is not None and all(self._plain(a, depth) for a in arguments)
        return False

    def _name_kind(self, name: str, depth: int, test: Callable[[_Binding, int], bool]) -> bool:
        if name not in self._bindings:
            return False
        if name in self._active:
            # A binding that refers back to its own name ({% set i = i + 1 %})
            # has the kind of the other bindings, which the caller checks.
            self._assumptions += 1
            return True
        self._active.add(name)
        try:
            return all(test(binding, depth) for binding in self._bindings[name])
        finally:
            self._active.discard(name)

    def _namespace_kind(
        self, base: str, attr: str, depth: int, test: Callable[[nodes.Node, int], bool]
    ) -> bool | None:
        """Apply ``test`` to every source of ``base.attr``, or return None if there is none."""
        sources = self._namespace_sources(base, attr)
        if not sources:
            return None
        key = f"{base}.{attr}"
        if key in self._active:
            self._assumptions += 1
            return True
        self._active.add(key)
        try:
            return all(test(source, depth) for source in sources)
        finally:
            self._active.discard(key)


def _is_conversation_name(name: str) -> bool:
    """Return True for a context variable that carries the caller's data."""
    if name in _ENGINE_GLOBALS or name in _CONFIG_NAMES:
        return False
    # bos_token, eos_token and the like come from the model's own
    # configuration, which is as untrusted as the template.
    return not name.endswith("_token")


def _target_key(target: nodes.Node) -> str | None:
    if isinstance(target, nodes.Name):
        return str(target.name)
    if isinstance(target, nodes.NSRef):
        return f"{target.name}.{target.attr}"
    return None


# --- Pure operations on constants -------------------------------------------


def _checked(value: Any) -> Any:
    """Return ``value`` if it is a scalar or container within the size bounds."""
    if isinstance(value, str | bytes):
        if len(value) > MAX_STRING:
            raise Unknown
    elif isinstance(value, list | tuple | dict):
        if len(value) > MAX_SEQUENCE:
            raise Unknown
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 256:
            raise Unknown
    elif not isinstance(value, float | bool | type(None)):
        raise Unknown
    return value


def _dedupe(values: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for value in values:
        if not any(type(value) is type(seen) and value == seen for seen in unique):
            unique.append(value)
    if len(unique) > MAX_ALTERNATIVES:
        raise Unknown
    return unique


def _distinct(values: list[Any]) -> list[Any]:
    """Return up to MAX_SEQUENCE distinct values, keeping their order."""
    unique: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for value in values:
        key = (type(value).__name__, repr(value))
        if key not in seen:
            seen.add(key)
            unique.append(value)
            if len(unique) >= MAX_SEQUENCE:
                break
    return unique


def _flatten(groups: Iterable[list[Any]]) -> list[Any]:
    values = [value for group in groups for value in group]
    return _dedupe(values[: MAX_ALTERNATIVES * 4])


def _product(groups: list[list[Any]]) -> list[tuple[Any, ...]]:
    total = 1
    for group in groups:
        total *= len(group)
        if total > MAX_ALTERNATIVES:
            raise Unknown
    return list(itertools.product(*groups))


def _text(value: Any) -> str:
    """Convert a scalar as Jinja's ``~`` and ``|string`` do."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | type(None)):
        try:
            return str(value)
        except ValueError:  # an int beyond Python's digit limit
            raise Unknown from None
    raise Unknown


def _elements(value: Any) -> list[Any]:
    if isinstance(value, str | list | tuple):
        return list(value)[:MAX_SEQUENCE]
    if isinstance(value, dict):
        return list(value)[:MAX_SEQUENCE]
    raise Unknown


def _number(value: Any) -> bool:
    return isinstance(value, int | float)


def _binary(operator: str, left: Any, right: Any) -> Any:
    """Apply a Jinja arithmetic operator to two constants, within the bounds."""
    if operator == "+":
        if isinstance(left, str) and isinstance(right, str):
            return _checked(left + right) if len(left) + len(right) <= MAX_STRING else _raise()
        if isinstance(left, list) and isinstance(right, list):
            return _checked(left + right) if len(left) + len(right) <= MAX_SEQUENCE else _raise()
        if isinstance(left, tuple) and isinstance(right, tuple):
            return _checked(left + right) if len(left) + len(right) <= MAX_SEQUENCE else _raise()
        if _number(left) and _number(right):
            return _checked(left + right)
    elif operator == "*":
        return _repeat(left, right)
    elif operator == "%":
        if isinstance(left, str):
            return percent_format(left, right)
        if _number(left) and _number(right) and right:
            return _checked(left % right)
    elif operator in ("-", "/", "//") and _number(left) and _number(right):
        if operator == "-":
            return _checked(left - right)
        if right:
            return _checked(left / right if operator == "/" else left // right)
    elif operator == "**" and _number(left) and _number(right):
        return _power(left, right)
    raise Unknown


def _repeat(left: Any, right: Any) -> Any:
    if isinstance(left, int) and not isinstance(right, int | float):
        left, right = right, left
    if isinstance(left, str | list | tuple) and isinstance(right, int):
        bound = MAX_STRING if isinstance(left, str) else MAX_SEQUENCE
        if right <= 0 or len(left) * right <= bound:
            return _checked(left * right)
        raise Unknown
    if _number(left) and _number(right) and abs(left) <= 2**64 and abs(right) <= 2**64:
        return _checked(left * right)
    raise Unknown


def _power(base: Any, exponent: Any) -> Any:
    if abs(base) <= 2**32 and 0 <= exponent <= 64:
        return _checked(base**exponent)
    raise Unknown


def _raise() -> Any:
    raise Unknown


def _unary(operator: str, value: Any) -> Any:
    if operator == "not":
        return not value
    if _number(value):
        return -value if operator == "-" else +value
    raise Unknown


def _subscript(base: Any, key: Any) -> Any:
    try:
        if isinstance(base, str | list | tuple) and isinstance(key, int | slice):
            return _checked(base[key])
        if isinstance(base, dict) and isinstance(key, _SCALARS):
            return _checked(base[key])
    except (IndexError, KeyError, TypeError, ValueError):
        pass
    raise Unknown


def percent_format(template: str, arguments: Any) -> str:
    """Apply printf-style formatting to constants, rejecting wide fields."""
    for match in _PERCENT_DIRECTIVE.finditer(template):
        width, precision, _ = match.groups()
        for part in (width, precision):
            if part == "*" or (part is not None and int(part) > 256):
                raise Unknown
    if isinstance(arguments, list):
        arguments = tuple(arguments)
    values = arguments.values() if isinstance(arguments, dict) else arguments
    items = values if isinstance(values, tuple) else (values,)
    if not all(isinstance(item, _SCALARS) for item in items):
        raise Unknown
    try:
        result = template % arguments
    except (TypeError, ValueError, OverflowError, KeyError):
        raise Unknown from None
    return str(_checked(result))


def _safe_str_format(template: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """Apply str.format to constants when every field is a plain position or name."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        raise Unknown from None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if not re.fullmatch(r"\d*|[A-Za-z]\w*", field):
            raise Unknown
        if conversion not in (None, "s", "r") or not _FORMAT_SPEC.fullmatch(spec or ""):
            raise Unknown
    if not all(isinstance(item, _SCALARS) for item in [*args, *kwargs.values()]):
        raise Unknown
    try:
        return str(_checked(template.format(*args, **kwargs)))
    except (ValueError, IndexError, KeyError, TypeError, OverflowError):
        raise Unknown from None


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | list | tuple | dict):
        return list(value)
    raise Unknown


def _join(items: Any, separator: Any) -> str:
    if not isinstance(separator, str):
        raise Unknown
    pieces = [_text(item) for item in _as_list(items)]
    if sum(map(len, pieces)) + len(separator) * len(pieces) > MAX_STRING:
        raise Unknown
    return separator.join(pieces)


def _replace(value: Any, old: Any, new: Any, count: Any = -1) -> str:
    if not all(isinstance(part, str) for part in (value, old, new)):
        raise Unknown
    if not isinstance(count, int) or count is None:
        count = -1
    if (len(value) + 1) * max(len(new), 1) + len(value) > MAX_STRING:
        raise Unknown
    return str(_checked(value.replace(old, new, count)))


def _first_or_last(value: Any, index: int) -> Any:
    items = _as_list(value)
    if not items:
        raise Unknown
    return _checked(items[index])


def _escape(value: Any) -> Any:
    if isinstance(value, str) and not _HTML_SPECIAL.search(value):
        return value
    raise Unknown


def _string_method(name: str) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if not isinstance(value, str):
            raise Unknown
        return _checked(getattr(value, name)())

    return apply


def _center(value: Any, width: Any = 80) -> str:
    if not isinstance(value, str) or not isinstance(width, int) or width > MAX_STRING:
        raise Unknown
    return value.center(width)


def _unique(value: Any) -> list[Any]:
    seen: list[Any] = []
    for item in _as_list(value):
        if isinstance(item, _SCALARS) and item not in seen:
            seen.append(item)
    return seen


def _sort(value: Any) -> list[Any]:
    try:
        return sorted(_as_list(value))
    except TypeError:
        raise Unknown from None


_FILTERS: dict[str, Callable[..., Any]] = {
    "join": lambda value, separator="": _join(value, separator),
    "reverse": lambda value: value[::-1] if isinstance(value, str | list | tuple) else _raise(),
    "replace": _replace,
    "lower": _string_method("lower"),
    "upper": _string_method("upper"),
    "title": _string_method("title"),
    "capitalize": _string_method("capitalize"),
    "trim": lambda value, chars=None: value.strip(chars) if isinstance(value, str) else _raise(),
    "string": _text,
    "list": _as_list,
    "first": lambda value: _first_or_last(value, 0),
    "last": lambda value: _first_or_last(value, -1),
    "length": lambda value: len(_as_list(value)),
    "count": lambda value: len(_as_list(value)),
    "default": lambda value, *_: value,
    "d": lambda value, *_: value,
    "safe": lambda value: value,
    "e": _escape,
    "escape": _escape,
    "forceescape": _escape,
    "center": _center,
    "items": lambda value: list(value.items()) if isinstance(value, dict) else _raise(),
    "unique": _unique,
    "sort": _sort,
}


def _apply_filter(name: str, value: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Apply a Jinja filter to constants, or raise Unknown for other filters."""
    if name == "format":
        if not isinstance(value, str) or (args and kwargs):
            raise Unknown
        return percent_format(value, kwargs or tuple(args))
    function = _FILTERS.get(name)
    if function is None or kwargs:
        raise Unknown
    try:
        return _checked(function(value, *args))
    except (TypeError, ValueError, AttributeError):
        raise Unknown from None


_STRING_METHODS = frozenset(
    {
        "lower",
        "upper",
        "strip",
        "lstrip",
        "rstrip",
        "title",
        "capitalize",
        "swapcase",
        "casefold",
        "removeprefix",
        "removesuffix",
        "split",
        "rsplit",
        "startswith",
        "endswith",
    }
)


def _call_method(value: Any, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call a pure method of a constant string, bytes or dict, within the bounds."""
    scalars = all(isinstance(item, _SCALARS) for item in [*args, *kwargs.values()])
    if not scalars and not (method == "join" and len(args) == 1):
        raise Unknown
    try:
        if isinstance(value, str):
            return _checked(_string_call(value, method, args, kwargs))
        if isinstance(value, bytes) and method == "decode":
            codec = _codec(args[0] if args else kwargs.get("encoding", "utf-8"))
            return _checked(value.decode(codec))
        if isinstance(value, dict) and method in ("get", "keys", "values", "items"):
            return _checked(_dict_call(value, method, args))
    except (TypeError, ValueError, IndexError, UnicodeError):
        raise Unknown from None
    raise Unknown


def _string_call(value: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if method in _STRING_METHODS:
        return getattr(value, method)(*args, **kwargs)
    if method == "replace":
        return _replace(value, *args)
    if method == "join" and len(args) == 1:
        return _join(args[0], value)
    if method == "format":
        return _safe_str_format(value, args, kwargs)
    if method == "encode":
        return value.encode(_codec(args[0] if args else kwargs.get("encoding", "utf-8")))
    if method in ("center", "ljust", "rjust", "zfill"):
        if not args or not isinstance(args[0], int) or args[0] > MAX_STRING:
            raise Unknown
        return getattr(value, method)(*args)
    raise Unknown


def _dict_call(value: dict[Any, Any], method: str, args: list[Any]) -> Any:
    if method == "get":
        return value.get(*args[:2])
    return list(getattr(value, method)())


def _codec(name: Any) -> str:
    normalised = str(name).lower().replace("_", "-")
    if normalised not in _CODECS:
        raise Unknown
    return normalised
