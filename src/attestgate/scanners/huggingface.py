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
from attestgate.scanners.chat_template import analyze_chat_template
from attestgate.scanners.interface import ReadAt, Scanner, ScanResult

# An auto_map value naming code in another repository: "owner/repo--module.Class".
_REMOTE_REFERENCE = re.compile(r"^[\w.-]+/[\w.-]+--")
MAX_PYTHON_BYTES = 4 * 1024 * 1024
MAX_LISTED = 50
# Named chat templates analysed per file; tokenizers ship a handful
# (default, tool_use, rag).
MAX_NAMED_TEMPLATES = 64


def _auto_map_targets(value: Any) -> list[str]:
    targets: list[str] = []
    if isinstance(value, dict):
        for item in value.values():
            targets.extend(_auto_map_targets(item))
    elif isinstance(value, list):
        for item in value:
            targets.extend(_auto_map_targets(item))
    elif isinstance(value, str):
        targets.append(value)
    return targets


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
        if self._size > self.ctx.limits.max_json_bytes:
            # Large JSON files are data (tokenizer vocabularies, datasets);
            # configuration that loaders act on is small.
            return ScanResult(facts={"json": "not parsed: larger than the JSON limit"})
        try:
            document = json.loads(b"".join(self._parts))
        except (ValueError, RecursionError):
            return ScanResult(facts={"json": "not valid JSON"})
        if not isinstance(document, dict):
            return ScanResult()
        findings = []
        auto_map = document.get("auto_map")
        if auto_map is not None:
            targets = _auto_map_targets(auto_map)
            remote = [t for t in targets if _REMOTE_REFERENCE.match(t)]
            if remote:
                findings.append(
                    self.finding(
                        "hf.auto-map-remote",
                        Severity.HIGH,
                        f"auto_map names code in another repository ({', '.join(remote[:5])}); "
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
                    f"auto_map maps model classes to custom code ({', '.join(targets[:5])}); "
                    "loaders run that code when trust_remote_code=True",
                    "Review the Python modules that auto_map names before admitting, or use "
                    "an architecture that ships in the transformers library and remove auto_map.",
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
        imports = self._imports()
        return ScanResult(
            findings=[
                self.finding(
                    "hf.embedded-code",
                    Severity.MEDIUM,
                    f"the artifact contains Python code ({self._size} bytes"
                    + (f"; imports {', '.join(imports[:8])}" if imports else "")
                    + "), which loaders such as transformers run with trust_remote_code=True",
                    "Review the code before admitting, or remove it and use an "
                    "architecture that ships in the transformers library.",
                    imports=imports[:MAX_LISTED],
                )
            ],
            facts={"imports": imports[:MAX_LISTED]},
        )

    def _imports(self) -> list[str]:
        if self._size > MAX_PYTHON_BYTES:
            return []
        try:
            # ast.parse only builds a syntax tree; nothing in the file runs.
            tree = ast.parse(b"".join(self._parts))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return []
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        return sorted(names)
