"""Static analysis of Jinja2 chat templates.

A chat template ships with a model (``tokenizer_config.json``,
``chat_template.json``, ``*.jinja`` files, GGUF metadata) and loaders such as
transformers, llama.cpp and vLLM render it with the conversation. A hostile
template reaches Python internals through lookups like
``cycler.__init__.__globals__`` (server-side template injection) wherever the
engine renders without a sandbox.

The analysis parses the template into Jinja2's syntax tree and never renders
it. It flags lookups of dunder, internal and private attributes, lookups whose
name is computed at render time, names rebuilt from pieces (evaluated
statically from constants only), Jinja globals known from injection payloads,
and loads of other templates. Lookups with constant keys (``message['role']``,
``message.content``), integer indexes (``messages[loop.index0 - 1]``) and keys
taken from the rendered data (``param[key]`` inside ``for key in param``) are
normal template code and raise nothing.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.chat_template_values import ConstantEvaluator, Unknown
from attestgate.scanners.interface import MiB, ReadAt, ScanContext, Scanner, ScanResult

logger = logging.getLogger(__name__)

CHECK = "chat-template"


@dataclass(frozen=True)
class TemplateLimits:
    """Bounds on one template: UTF-8 size, tokens, syntax-tree nodes and nesting depth.

    The real chat templates measured for these bounds (ChatML, Llama, Mistral,
    Gemma and Qwen families) stay under 40 KiB, 4,000 tokens, 2,100 nodes and
    20 levels. At the token limit, Jinja2 takes a few seconds to parse.
    """

    max_bytes: int = 1 * MiB
    max_tokens: int = 50_000
    max_nodes: int = 100_000
    max_depth: int = 256


DEFAULT_LIMITS = TemplateLimits()

# Findings per rule and template before the rest are summed up in one finding.
_MAX_FINDINGS_PER_RULE = 10
# Characters of a name or parser message repeated in a finding's message.
_MAX_TEXT = 80

# Attributes that lead from ordinary objects to frames, code and globals
# without a leading underscore.
_INTERNAL_ATTRIBUTES = frozenset(
    {
        "mro",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "co_consts",
        "func_globals",
        "func_code",
        "func_closure",
        "im_func",
        "im_self",
        "im_class",
    }
)

# Words that injection payloads spell out piece by piece. A statically built
# string matches when, without surrounding underscores, it is one of them.
_SENSITIVE_WORDS = frozenset(
    {
        "class",
        "globals",
        "builtins",
        "import",
        "subclasses",
        "mro",
        "init",
        "base",
        "bases",
        "getattribute",
        "getitem",
        "dict",
        "module",
        "modules",
        "loader",
        "spec",
        "os",
        "popen",
        "system",
        "subprocess",
        "eval",
        "exec",
        "compile",
        "open",
        "sys",
        "code",
        "func",
    }
)

# Jinja and Flask globals that payloads use as a path to Python internals. A
# chat template has no reason to mention them at all.
_GADGET_GLOBALS = {
    "lipsum": "lipsum.__globals__ reaches the os module",
    "self": "self._TemplateReference__context exposes the render context",
    "config": "config.__class__ reaches Flask's module globals",
    "request": "request.application.__globals__ reaches builtins",
    "url_for": "url_for.__globals__ reaches builtins",
    "get_flashed_messages": "get_flashed_messages.__globals__ reaches builtins",
}

# Jinja globals with legitimate calls (``namespace(...)``, ``range(n)``)
# whose attributes, read as function objects, lead to module globals.
_GADGET_BASES = frozenset({"cycler", "joiner", "namespace", "range", "dict"})

# Filters that read the attribute named by an argument, and where it sits.
_ATTRIBUTE_FILTERS = frozenset(
    {"map", "selectattr", "rejectattr", "groupby", "sort", "unique", "min", "max", "sum"}
)
_POSITIONAL_ATTRIBUTE_FILTERS = frozenset({"selectattr", "rejectattr", "groupby", "sum"})

_CONSTRUCTED = (nodes.Concat, nodes.Add, nodes.Mul, nodes.Mod, nodes.Filter, nodes.Call)
_LOADS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
    nodes.Extends: "extends",
}
_SIMPLE_NAME = re.compile(r"[\w.\[\]'\"]+")

_REPLACE = (
    "Do not use this chat template. Replace it with the template that the model's "
    "original authors publish, or with a reviewed standard template, and admit "
    "the model again."
)
_REVIEW = (
    "Have a reviewer read the template. Lookups in chat templates use fixed names "
    "such as message['role']; replace the template with a reviewed one if the "
    "computed name has no clear purpose."
)


class _GenerationTag(jinja2.ext.Extension):
    """Parse transformers' ``{% generation %}`` block, which marks assistant text."""

    tags = {"generation"}  # noqa: RUF012 (Extension declares tags as a set)

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _environment() -> jinja2.Environment:
    # The same syntax that transformers accepts: loop controls and the
    # generation tag. The environment only parses; nothing is rendered.
    return ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTag],
    )


def analyze_chat_template(
    text: str,
    scanner: Scanner,
    location: str,
    *,
    offset: int | None = None,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> list[Finding]:
    """Parse ``text`` as a Jinja2 template and return findings located at ``location``.

    ``scanner`` builds the findings, so they carry its check name. ``offset``
    is where the template starts in the scanned file, when known.
    """
    return _Analysis(text, scanner, location, offset, limits).run()


def is_sensitive_name(value: str) -> bool:
    """Return True when a statically built string spells a name used by payloads."""
    stripped = value.strip()
    if not stripped or len(stripped) > 64 or not re.search(r"[A-Za-z0-9]", stripped):
        return False
    if "__" in stripped and _SIMPLE_NAME.fullmatch(stripped):
        return True
    return stripped.strip("_").lower() in _SENSITIVE_WORDS


def _name_problem(name: str) -> tuple[str, Severity, str] | None:
    """Classify an attribute or item name, or return None for an ordinary one."""
    if name.startswith("__"):
        return (
            "chat-template.dunder-access",
            Severity.CRITICAL,
            "the dunder attribute",
        )
    if name in _INTERNAL_ATTRIBUTES:
        return (
            "chat-template.dunder-access",
            Severity.CRITICAL,
            "the Python internal attribute",
        )
    if name.startswith("_"):
        return (
            "chat-template.private-attribute",
            Severity.HIGH,
            "the private attribute",
        )
    return None


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return f"the variable {_quote(node.name)}"
    if isinstance(node, nodes.Concat | nodes.Add):
        return "a concatenation"
    if isinstance(node, nodes.Filter):
        return f"the result of the {node.name!r} filter"
    if isinstance(node, nodes.Call):
        return "the result of a call"
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        return "a looked-up value"
    return f"an expression ({type(node).__name__})"


class _LimitExceeded(Exception):
    """The template is over one of the limits; the message names which."""


class _Analysis:
    """One template's analysis: parse, bind names, then check every node."""

    def __init__(
        self,
        text: str,
        scanner: Scanner,
        location: str,
        offset: int | None,
        limits: TemplateLimits,
    ) -> None:
        self.text = text
        self.scanner = scanner
        self.location = location
        self.offset = offset
        self.limits = limits
        self.findings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self.values = ConstantEvaluator()

    def run(self) -> list[Finding]:
        """Check the template in five steps.

        1. The template is within the byte limit.
        2. Its tokens are within the token limit, which bounds the parse time,
           and its string literals hide no name in escapes or in adjacent
           literals that Jinja joins.
        3. It parses as Jinja2 (a syntax error is reported, not raised).
        4. Its tree is within the node and depth limits, and every name that
           ``set``, ``for``, ``with`` and ``macro`` bind is recorded.
        5. Every node is checked for dunder, private, computed and gadget
           lookups and for names rebuilt from pieces.
        """
        size = len(self.text.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_bytes:
            self._limit(
                f"the chat template is {size} bytes, over the limit of "
                f"{self.limits.max_bytes} bytes, so it was not analysed"
            )
            return self._result()

        environment = _environment()
        try:
            self._check_tokens(environment)
        except _LimitExceeded as exc:
            self._limit(str(exc))
            return self._result()

        tree = self._parse(environment)
        if tree is None:
            return self._result()

        try:
            self._bind(tree)
        except _LimitExceeded as exc:
            self._limit(str(exc))
            return self._result()

        self._check_tree(tree)
        return self._result()

    # --- Step 2: tokens and literals ---------------------------------------

    def _check_tokens(self, environment: jinja2.Environment) -> None:
        """Count the tokens and report names hidden in string literals.

        Jinja2 lexes and parses at tens of microseconds per token, so the
        token count, not the byte size, bounds the time a template costs.
        """
        run: list[tuple[int, str]] = []
        count = 0
        try:
            for lineno, kind, raw in environment.lex(self.text):
                if kind == "whitespace":
                    continue
                count += 1
                if count > self.limits.max_tokens:
                    raise _LimitExceeded(
                        f"the chat template has more than {self.limits.max_tokens} tokens, "
                        "so it was not analysed"
                    )
                if kind == "string":
                    run.append((lineno, raw))
                else:
                    self._check_literal_run(run)
                    run = []
        except jinja2.TemplateSyntaxError:
            # The parser reports the same error with its line.
            return
        self._check_literal_run(run)

    def _check_literal_run(self, run: list[tuple[int, str]]) -> None:
        if not run:
            return
        escaped = any("\\" in raw for _, raw in run)
        if len(run) == 1 and not escaped:
            return
        value = "".join(_decode_literal(raw) for _, raw in run)
        if not is_sensitive_name(value):
            return
        technique = "escape sequences" if escaped else "adjacent string literals that Jinja joins"
        self._add(
            "chat-template.obfuscated-name",
            Severity.HIGH,
            f"the chat template spells the name {value!r} with {technique} on line {run[0][0]}; "
            "writing a name like this hides it from reviewers and scanners",
            _REPLACE,
            line=run[0][0],
            name=value[:200],
        )

    # --- Step 3: parsing ---------------------------------------------------

    def _parse(self, environment: jinja2.Environment) -> nodes.Template | None:
        try:
            return environment.parse(self.text)
        except jinja2.TemplateSyntaxError as exc:
            self._unparseable(f"line {exc.lineno}: {exc.message}", exc.lineno)
        except (ValueError, OverflowError) as exc:
            # Jinja2 converts number literals with int() and float(), which
            # reject literals of more than 4,300 digits.
            self._unparseable(str(exc), None)
        except RecursionError:
            self._limit("the chat template nests too deeply for the Jinja2 parser")
        return None

    def _unparseable(self, problem: str, line: int | None) -> None:
        self._add(
            "chat-template.unparseable",
            Severity.MEDIUM,
            f"the chat template is not valid Jinja2 ({_shorten(problem)}); loaders fail on "
            "it, so a reviewer should check what it was meant to do",
            "Have a reviewer read the template, then fix its syntax or replace it "
            "with the template that the model's original authors publish.",
            line=line,
        )

    # --- Step 4: bindings -------------------------------------------------

    def _bind(self, tree: nodes.Template) -> None:
        count = 0
        stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > self.limits.max_nodes:
                raise _LimitExceeded(
                    f"the chat template has more than {self.limits.max_nodes} syntax-tree "
                    "nodes, so it was not analysed"
                )
            if depth > self.limits.max_depth:
                raise _LimitExceeded(
                    f"the chat template nests deeper than {self.limits.max_depth} levels, "
                    "so it was not analysed"
                )
            if count % 4096 == 0 and self.scanner.ctx.expired():
                raise _LimitExceeded("the time budget for the file ran out during the analysis")
            self.values.bind(node)
            stack.extend((child, depth + 1) for child in node.iter_child_nodes())

    # --- Step 5: node checks ----------------------------------------------

    def _check_tree(self, tree: nodes.Template) -> None:
        # ``quiet`` marks the inside of an expression already reported as a
        # rebuilt name, so that its smaller pieces are not reported again.
        stack: list[tuple[nodes.Node, bool]] = [(tree, False)]
        while stack:
            node, quiet = stack.pop()
            if not quiet and self._check_constructed(node):
                quiet = True
            self._check_node(node)
            stack.extend((child, quiet) for child in node.iter_child_nodes())

    def _check_node(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr):
            self._check_name(node.attr, node)
            self._check_gadget_base(node.node, node.attr, node)
        elif isinstance(node, nodes.Getitem):
            self._check_item(node)
        elif isinstance(node, nodes.Filter):
            self._check_filter(node)
        elif isinstance(node, nodes.Call):
            self._check_call(node)
        elif isinstance(node, nodes.NSRef):
            self._check_name(node.attr, node, " of a namespace", verb="assigns")
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            self._check_global(node)
        elif type(node) in _LOADS:
            self._add(
                "chat-template.include",
                Severity.MEDIUM,
                f"the chat template loads another template with {{% {_LOADS[type(node)]} %}} "
                f"on line {node.lineno}; chat templates are self-contained, and an engine "
                "configured with a template loader would read that file",
                "Inline what the template needs, or replace it with a self-contained "
                "reviewed template.",
                line=node.lineno,
            )

    def _check_name(self, name: str, node: nodes.Node, via: str = "", verb: str = "reads") -> None:
        problem = _name_problem(name)
        if problem is None:
            return
        rule, severity, kind = problem
        if severity is Severity.CRITICAL:
            message = (
                f"the chat template {verb} {kind} {_quote(name)}{via} on line {node.lineno}; chat "
                "templates have no use for Python internals, and engines without a sandbox "
                "let such lookups reach code execution"
            )
        else:
            message = (
                f"the chat template {verb} {kind} {_quote(name)}{via} on line {node.lineno}; "
                "Jinja2's sandbox rejects it, and without a sandbox it exposes engine internals"
            )
        self._add(rule, severity, message, _REPLACE, line=node.lineno, name=_shorten(name))

    def _check_key(self, key: nodes.Node, node: nodes.Node, via: str, *, data_ok: bool) -> None:
        """Check the name given by ``key``: constant, numeric, data or computed."""
        complete = True
        try:
            candidates = self.values.evaluate(key)
        except Unknown:
            # A variable set in several places may have some constant values;
            # check those, then judge the rest by kind.
            candidates = self.values.possible_constants(key)
            complete = False
        for value in candidates:
            if isinstance(value, str):
                self._check_name(value, node, via)
        if complete:
            return
        if data_ok and (self.values.is_numeric(key) or self.values.is_data(key)):
            return
        self._add(
            "chat-template.computed-attribute",
            Severity.HIGH,
            f"the chat template reads an attribute or item{via} on line {node.lineno} whose "
            f"name is {_describe(key)}, computed at render time, so the name cannot be "
            "checked before the template runs",
            _REVIEW,
            line=node.lineno,
        )

    def _check_item(self, node: nodes.Getitem) -> None:
        if isinstance(node.arg, nodes.Slice):
            return
        self._check_key(node.arg, node, "", data_ok=True)
        try:
            keys = self.values.evaluate(node.arg)
        except Unknown:
            return
        for key in keys:
            if isinstance(key, str):
                self._check_gadget_base(node.node, key, node)

    def _check_filter(self, node: nodes.Filter) -> None:
        if node.name == "attr":
            if node.args:
                self._check_key(node.args[0], node, " through the attr filter", data_ok=False)
                self._check_attr_filter_base(node)
            return
        if node.name not in _ATTRIBUTE_FILTERS:
            return
        if node.name == "map" and node.args:
            # map('attr', name) applies the attr filter to every item, and
            # map(name) applies a filter chosen by name.
            self._check_key(
                node.args[0], node, " through a filter that map chooses by name", data_ok=False
            )
            first = _constant(node.args[0])
            if first == "attr" and len(node.args) > 1:
                self._check_key(node.args[1], node, " through map('attr')", data_ok=False)
        if node.name in _POSITIONAL_ATTRIBUTE_FILTERS and node.args:
            self._check_path(node.args[0], node)
        for keyword in node.kwargs:
            if keyword.key == "attribute":
                self._check_path(keyword.value, node)

    def _check_path(self, path: nodes.Node, node: nodes.Filter) -> None:
        """Check a dotted attribute path such as ``attribute='function.name'``."""
        try:
            candidates = self.values.evaluate(path)
        except Unknown:
            self._check_key(path, node, f" through the {node.name} filter", data_ok=False)
            return
        for value in candidates:
            if isinstance(value, str):
                for part in value.split("."):
                    self._check_name(part, node, f" through the {node.name} filter")

    def _check_call(self, node: nodes.Call) -> None:
        # str.format resolves "{0.__class__}" fields with getattr, so a format
        # string is a lookup path in disguise.
        callee = node.node
        if not isinstance(callee, nodes.Getattr) or callee.attr not in ("format", "format_map"):
            return
        try:
            candidates = self.values.evaluate(callee.node)
        except Unknown:
            return
        for value in candidates:
            if isinstance(value, str):
                for name in _format_field_names(value):
                    self._check_name(name, node, " through a format string")

    def _check_global(self, node: nodes.Name) -> None:
        if node.name not in _GADGET_GLOBALS or self.values.is_bound(node.name):
            return
        self._add(
            "chat-template.gadget",
            Severity.HIGH,
            f"the chat template uses the global {node.name!r} on line {node.lineno}, "
            f"a known entry point of template-injection payloads "
            f"({_GADGET_GLOBALS[node.name]})",
            _REPLACE,
            line=node.lineno,
            name=node.name,
        )

    def _check_gadget_base(self, base: nodes.Node, name: str, node: nodes.Node) -> None:
        if not isinstance(base, nodes.Name) or base.name not in _GADGET_BASES:
            return
        if self.values.is_bound(base.name):
            return
        self._add(
            "chat-template.gadget",
            Severity.HIGH,
            f"the chat template reads {_quote(name)} from the Jinja global {base.name!r} on line "
            f"{node.lineno}; payloads read attributes of {base.name!r} to reach its "
            "module globals",
            _REPLACE,
            line=node.lineno,
            name=base.name,
        )

    def _check_attr_filter_base(self, node: nodes.Filter) -> None:
        if node.node is None:
            return
        try:
            names = [
                value for value in self.values.evaluate(node.args[0]) if isinstance(value, str)
            ]
        except Unknown:
            names = ["a computed name"]
        for name in names:
            self._check_gadget_base(node.node, name, node)

    def _check_constructed(self, node: nodes.Node) -> bool:
        """Report a string built from pieces that spells a sensitive name."""
        if isinstance(node, nodes.AssignBlock):
            candidates = self.values.block_values(node)
        elif isinstance(node, (*_CONSTRUCTED, nodes.Getitem)):
            if isinstance(node, nodes.Getitem) and not isinstance(node.node, nodes.Const):
                return False
            try:
                candidates = self.values.evaluate(node)
            except Unknown:
                return False
        else:
            return False
        built = [value for value in candidates if isinstance(value, str)]
        hits = [value for value in built if is_sensitive_name(value)]
        if not hits:
            return False
        self._add(
            "chat-template.obfuscated-name",
            Severity.HIGH,
            f"the chat template builds the name {hits[0]!r} from pieces on line "
            f"{node.lineno}; splitting a name like this hides attribute lookups from "
            "reviewers and scanners",
            _REPLACE,
            line=node.lineno,
            name=hits[0][:200],
        )
        return True

    # --- Findings -----------------------------------------------------------

    def _limit(self, message: str) -> None:
        self._add(
            "chat-template.limit-exceeded",
            Severity.MEDIUM,
            message,
            "Have a reviewer read the template; real chat templates are far below these "
            "limits, so a template this large or deep deserves a close look.",
        )

    def _add(
        self, rule: str, severity: Severity, message: str, remediation: str, **details: Any
    ) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1
        if self.counts[rule] <= _MAX_FINDINGS_PER_RULE:
            self.findings.append(
                self.scanner.finding(
                    rule,
                    severity,
                    message,
                    remediation,
                    offset=self.offset,
                    file=self.location,
                    **details,
                )
            )

    def _result(self) -> list[Finding]:
        summaries: list[Finding] = []
        for rule, count in self.counts.items():
            hidden = count - _MAX_FINDINGS_PER_RULE
            if hidden > 0:
                first = next(finding for finding in self.findings if finding.rule == rule)
                summaries.append(
                    self.scanner.finding(
                        rule,
                        first.severity,
                        f"the chat template has {hidden} more {rule} problems beyond the "
                        f"{_MAX_FINDINGS_PER_RULE} listed",
                        first.remediation,
                        offset=self.offset,
                        file=self.location,
                        hidden=hidden,
                    )
                )
        return self.findings + summaries


def _shorten(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"... ({len(text)} characters)"


def _quote(text: str) -> str:
    return repr(_shorten(text))


def _constant(node: nodes.Node) -> object:
    return node.value if isinstance(node, nodes.Const) else None


def _decode_literal(raw: str) -> str:
    """Decode a Jinja string literal's escapes as the Jinja lexer does."""
    body = raw[1:-1]
    try:
        return body.encode("ascii", "backslashreplace").decode("unicode-escape")
    except UnicodeDecodeError:
        return body


def _format_field_names(template: str) -> list[str]:
    """Return the attribute and item names that a str.format template reads."""
    names: list[str] = []
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return names
    for _, field, spec, _ in fields:
        for text in (field or "", spec or ""):
            names.extend(part for part in re.split(r"[.\[\]{}!:]", text) if part)
    return names


class ChatTemplateFileScanner(Scanner):
    """Analyses a ``*.jinja`` file as a chat template."""

    check = CHECK

    def __init__(
        self, ctx: ScanContext, fmt: Format, limits: TemplateLimits = DEFAULT_LIMITS
    ) -> None:
        super().__init__(ctx, fmt)
        self.limits = limits
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: memoryview) -> None:
        # Nothing past the limit is kept, because close() reports an
        # oversized file from its size alone.
        room = self.limits.max_bytes - self._size
        if room > 0:
            self._parts.append(bytes(chunk[:room]))
        self._size += len(chunk)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        facts: dict[str, Any] = {"chat_template_bytes": self._size}
        if self._size > self.limits.max_bytes:
            finding = self.finding(
                "chat-template.limit-exceeded",
                Severity.MEDIUM,
                f"the chat template is {self._size} bytes, over the limit of "
                f"{self.limits.max_bytes} bytes, so it was not analysed",
                "Have a reviewer read the template; real chat templates are far below "
                "this size, so a template this large deserves a close look.",
            )
            return ScanResult(findings=[finding], facts=facts)
        text = b"".join(self._parts).decode("utf-8", "replace")
        findings = analyze_chat_template(text, self, self.ctx.file, limits=self.limits)
        return ScanResult(findings=findings, facts=facts)
