"""Hugging Face repository files that make loaders run code.

``transformers`` imports the Python modules that ``auto_map`` names in
``config.json`` or ``tokenizer_config.json`` when a caller passes
``trust_remote_code=True``, and any ``.py`` file in a repository is code that
such a load may run. Both are embedded code the policy should weigh. The
``chat_template`` of ``tokenizer_config.json`` and ``chat_template.json`` is a
Jinja2 template that loaders render, so it goes through the chat-template
analysis.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.scanners import base_name
from attestgate.scanners.chat_template import analyze_chat_template
from attestgate.scanners.interface import ReadAt, Scanner, ScanResult
from attestgate.scanners.python_calls import MAX_CALLS, dangerous_calls

# An auto_map value naming code in another repository: "owner/repo--module.Class".
_REMOTE_REFERENCE = re.compile(r"^[\w.-]+/[\w.-]+--")
MAX_PYTHON_BYTES = 4 * 1024 * 1024
# A tokenizer_config.json with 200,000 added tokens contains about 1.4 million.
MAX_JSON_VALUES = 4_000_000
MAX_LISTED = 50
# Named chat templates analysed per file; tokenizers ship a handful
# (default, tool_use, rag).
MAX_NAMED_TEMPLATES = 64


# Files that transformers reads for auto_map and custom_pipelines. None of
# them comes near the JSON size limit unless it was padded on purpose.
_CONFIG_NAMES = frozenset(
    {
        "config.json",
        "tokenizer_config.json",
        "processor_config.json",
        "preprocessor_config.json",
        "feature_extractor_config.json",
        "image_processor_config.json",
        "video_preprocessor_config.json",
        "generation_config.json",
        "adapter_config.json",
        "chat_template.json",
    }
)


def _auto_map_targets(value: Any) -> list[str]:
    # Iterative: a deeply nested value must not exhaust the stack, which
    # would turn this file's findings into a check failure.
    targets: list[str] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, str):
            targets.append(item)
    return targets


def _custom_pipeline_targets(value: Any) -> list[str]:
    # custom_pipelines maps a task to {"impl": "module.Class", "pt": [...], ...};
    # pipeline() imports "impl" with trust_remote_code=True.
    if not isinstance(value, dict):
        return []
    return [
        task["impl"]
        for task in value.values()
        if isinstance(task, dict) and isinstance(task.get("impl"), str)
    ]


class JsonConfigScanner(Scanner):
    """Finds ``auto_map``, ``trust_remote_code`` and chat templates in JSON configuration."""

    check = "huggingface"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        if self._size <= self.ctx.limits.max_json_bytes:
            self._parts.append(bytes(chunk))

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        limit = self.ctx.limits.max_json_bytes
        if self._size > limit:
            # Large JSON files are data (tokenizer vocabularies, datasets);
            # configuration that loaders act on is small.
            return self._not_parsed(f"is {self._size} bytes, over the limit of {limit}")
        text = b"".join(self._parts)
        # Every value costs tens of bytes once parsed, so "[{},{},...]" would
        # take twenty times its size in memory. Each value but the first
        # follows a comma or opens a container.
        values = text.count(b",") + text.count(b"[") + text.count(b"{")
        if values > MAX_JSON_VALUES:
            return self._not_parsed(f"holds more than {MAX_JSON_VALUES} values")
        try:
            document = json.loads(text)
        except RecursionError:
            # transformers, running with a shallower stack, may parse what
            # the gate cannot, so the file is not simply invalid.
            return ScanResult(
                findings=[self._unparsed("nests too deeply to parse")],
                facts={"json": "too deeply nested"},
            )
        except ValueError:
            return ScanResult(facts={"json": "not valid JSON"})
        if not isinstance(document, dict):
            return ScanResult()
        findings = []
        auto_map = document.get("auto_map")
        custom_pipelines = _custom_pipeline_targets(document.get("custom_pipelines"))
        if auto_map is not None or custom_pipelines:
            targets = _auto_map_targets(auto_map) + custom_pipelines
            keys = " and ".join(
                key
                for key, present in (
                    ("auto_map", auto_map is not None),
                    ("custom_pipelines", custom_pipelines),
                )
                if present
            )
            remote = [t for t in targets if _REMOTE_REFERENCE.match(t)]
            if remote:
                findings.append(
                    self.finding(
                        "hf.auto-map-remote",
                        Severity.HIGH,
                        f"{keys} names code in another repository ({', '.join(remote[:5])}); "
                        "loading with trust_remote_code=True downloads and runs it",
                        "Do not load this model with trust_remote_code=True. Vendor the "
                        "referenced code into a reviewed repository, or use a model whose "
                        "architecture ships in the transformers library.",
                        targets=remote[:MAX_LISTED],
                    )
                )
            findings.append(
                self.finding(
                    "hf.auto-map",
                    Severity.MEDIUM,
                    f"{keys} maps model classes or pipelines to custom code "
                    f"({', '.join(targets[:5])}); loaders run that code when "
                    "trust_remote_code=True",
                    f"Review the Python modules that {keys} names before admitting, or use "
                    f"an architecture that ships in the transformers library and remove {keys}.",
                    targets=targets[:MAX_LISTED],
                )
            )
        if document.get("trust_remote_code") is True:
            findings.append(
                self.finding(
                    "hf.trust-remote-code",
                    Severity.MEDIUM,
                    "the configuration sets trust_remote_code to true, so loaders run the "
                    "repository's Python code without asking",
                    "Remove trust_remote_code from the configuration and review any custom code.",
                )
            )
        # transformers treats a null chat_template as no template.
        if document.get("chat_template") is not None:
            findings.extend(self._chat_templates(document["chat_template"]))
        return ScanResult(findings=findings)

    def _chat_templates(self, value: Any) -> list[Finding]:
        """Analyse ``chat_template``: a string, or a list of {"name", "template"} objects."""
        location = f"{self.ctx.file}:chat_template"
        if isinstance(value, str):
            return analyze_chat_template(value, self, location)
        if not isinstance(value, list):
            return [self._invalid_template(location, f"a JSON {_json_type(value)}")]
        findings: list[Finding] = []
        for index, item in enumerate(value):
            if index == MAX_NAMED_TEMPLATES or self.ctx.expired():
                findings.append(self._too_many_templates(location, len(value) - index))
                break
            name = item.get("name") if isinstance(item, dict) else None
            template = item.get("template") if isinstance(item, dict) else None
            if not isinstance(name, str) or not isinstance(template, str):
                findings.append(
                    self._invalid_template(
                        f"{location}[{index}]", 'not an object with string "name" and "template"'
                    )
                )
                continue
            findings.extend(analyze_chat_template(template, self, f"{location}.{name[:100]}"))
        return findings

    def _too_many_templates(self, location: str, skipped: int) -> Finding:
        return self.finding(
            "chat-template.limit-exceeded",
            Severity.MEDIUM,
            f"{skipped} named chat templates were not analysed, because the file has more "
            f"than {MAX_NAMED_TEMPLATES} or the time budget for the file ran out",
            "Have a reviewer read the remaining templates; tokenizers ship only a few "
            "named chat templates, so this many deserves a close look.",
            file=location,
            skipped=skipped,
        )

    def _not_parsed(self, problem: str) -> ScanResult:
        facts = {"json": f"not parsed: the file {problem}"}
        if base_name(self.ctx.file) not in _CONFIG_NAMES:
            return ScanResult(facts=facts)
        return ScanResult(findings=[self._unparsed(problem)], facts=facts)

    def _unparsed(self, problem: str) -> Finding:
        return self.finding(
            "hf.config-unparsed",
            Severity.MEDIUM,
            f"the JSON file {problem}, so the gate could not check it for auto_map, "
            "custom_pipelines or trust_remote_code, which transformers acts on",
            "Have a reviewer read the file, or replace it with the producer's "
            "unpadded original and admit the artifact again.",
        )

    def _invalid_template(self, location: str, problem: str) -> Finding:
        return self.finding(
            "hf.invalid-chat-template",
            Severity.MEDIUM,
            f"the chat template is {problem}, so transformers rejects it and the gate "
            "could not analyse it",
            "Have a reviewer check the value, then store the chat template as a string or "
            'as a list of {"name", "template"} objects.',
            file=location,
        )


def _json_type(value: Any) -> str:
    names = {dict: "object", str: "string", bool: "boolean"}
    return names.get(type(value), "number")


class PythonCodeScanner(Scanner):
    """Reports a Python source file as embedded code and lists what it imports."""

    check = "huggingface"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        if self._size <= MAX_PYTHON_BYTES:
            self._parts.append(bytes(chunk))

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        tree, problem = self._tree()
        imports = _imports(tree) if tree is not None else []
        unread = ""
        if problem:
            # A file that this Python cannot parse may still import under a
            # newer one (its grammar grows), so the message states that no
            # call was checked.
            unread = (
                f". The gate could not parse it ({problem}), so it did not look for calls "
                "that run programs or evaluate code; read the whole file"
            )
        details: dict[str, Any] = {"imports": imports[:MAX_LISTED]}
        if problem:
            details["unparsed"] = problem
        findings = [
            self.finding(
                "hf.embedded-code",
                Severity.MEDIUM,
                f"the artifact contains Python code ({self._size} bytes"
                + (f"; imports {', '.join(imports[:8])}" if imports else "")
                + "), which loaders such as transformers run with trust_remote_code=True"
                + unread,
                "Review the code before admitting, or remove it and use an "
                "architecture that ships in the transformers library.",
                **details,
            )
        ]
        calls = dangerous_calls(tree) if tree is not None else []
        if calls:
            listed = ", ".join(str(call) for call in calls[:MAX_CALLS])
            findings.append(
                self.finding(
                    "hf.dangerous-call",
                    Severity.HIGH,
                    f"the Python code calls or names functions that run programs or evaluate "
                    f"code: {listed}"
                    + (f" and {len(calls) - MAX_CALLS} more" if len(calls) > MAX_CALLS else ""),
                    "Do not admit this code. Ask the publisher for a version without these "
                    "calls, or load the weights with an architecture that ships in the "
                    "transformers library and delete the Python files.",
                    calls=[str(call) for call in calls[:MAX_CALLS]],
                )
            )
        return ScanResult(findings=findings, facts={"imports": imports[:MAX_LISTED]})

    def _tree(self) -> tuple[ast.AST | None, str]:
        """Parse the file; return its syntax tree, or None and why it could not be parsed."""
        if self._size > MAX_PYTHON_BYTES:
            return None, f"it is larger than {MAX_PYTHON_BYTES} bytes"
        try:
            # ast.parse only builds a syntax tree; nothing in the file runs.
            return ast.parse(b"".join(self._parts)), ""
        except SyntaxError as exc:
            return None, f"invalid syntax at line {exc.lineno}: {exc.msg}"
        except (ValueError, RecursionError, MemoryError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:200]


def _imports(tree: ast.AST) -> list[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return sorted(names)
