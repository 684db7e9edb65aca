"""Internal package names that a public index also serves (dependency confusion).

An internal package's name may also exist on a public index. An installer
that searches both indexes, or an internal proxy that mirrors the public
one, can then pick the public release, because pip installs the highest
version it finds on any index. The gate checks names against two local files:

- the internal names: text, one project name per line, ``#`` comments;
- a snapshot of the public index's project list: the same text format, a
  PEP 691 JSON simple-index root (``{"projects": [{"name": ...}]}``), or a
  PEP 503 HTML simple-index root (one ``<a>`` per project).
"""

from __future__ import annotations

import html.parser
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from attestgate.deps.model import normalize_name

logger = logging.getLogger(__name__)

# PyPI's project list was about 60 MB as PEP 691 JSON in 2025.
MAX_NAME_LIST_BYTES = 512 * 1024 * 1024


class NameListError(Exception):
    """A names file cannot be read or parsed."""


@dataclass(frozen=True)
class ExposedNames:
    """Internal names together with the public index's names."""

    internal: frozenset[str]
    public: frozenset[str]
    public_source: str

    def exposed(self, name: str) -> bool:
        """Tell whether ``name`` is internal and also on the public index."""
        normalized = normalize_name(name)
        return normalized in self.internal and normalized in self.public


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_NAME_LIST_BYTES + 1)
    except OSError as exc:
        raise NameListError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_NAME_LIST_BYTES:
        raise NameListError(f"{path} is larger than {MAX_NAME_LIST_BYTES} bytes")
    return data.decode("utf-8-sig", errors="replace")


def _text_names(text: str) -> frozenset[str]:
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(normalize_name(name) for name in names if name)


class _AnchorText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self._in_anchor = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_anchor = tag == "a"

    def handle_endtag(self, tag: str) -> None:
        self._in_anchor = False

    def handle_data(self, data: str) -> None:
        if self._in_anchor and data.strip():
            self.names.add(normalize_name(data.strip()))


def load_name_list(path: Path) -> frozenset[str]:
    """Read a text file of project names, one per line."""
    return _text_names(_read(path))


def load_index_snapshot(path: Path) -> frozenset[str]:
    """Read a public index's project names from text, PEP 691 JSON or PEP 503 HTML."""
    text = _read(path)
    head = text.lstrip()[:1]
    if head == "{":
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise NameListError(f"{path} is not valid JSON: {exc}") from None
        projects = document.get("projects") if isinstance(document, dict) else None
        if not isinstance(projects, list):
            raise NameListError(f"{path} has no PEP 691 'projects' list")
        return frozenset(
            normalize_name(item["name"])
            for item in projects
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        )
    if head == "<":
        parser = _AnchorText()
        parser.feed(text)
        parser.close()
        return frozenset(parser.names)
    return _text_names(text)
