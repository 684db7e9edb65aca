"""Load YAML with the line of every value, so that policy errors can name it.

PyYAML's SafeLoader (already a dependency, and it builds plain data only)
composes a node tree whose nodes carry their start marks. The document is
constructed from that tree as usual, and a walk over the same tree records
the line of each mapping key and sequence item by its path. ruamel.yaml
keeps line numbers too, but would add a second YAML parser for one feature.

Before anything is constructed, the tree is checked for duplicate keys,
which PyYAML otherwise resolves silently in favour of the last one, and for
its size after alias expansion, which bounds a "billion laughs" document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from attestgate.policy.model import DocPath

MAX_NODES = 100_000
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlProblem:
    """The reason a document could not be loaded, and its line (1-based, 0 when unknown)."""

    line: int
    message: str


class YamlLoadError(Exception):
    def __init__(self, problem: YamlProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def load_with_lines(data: bytes) -> tuple[Any, dict[DocPath, int]]:
    """Return the document in ``data`` and a map from each value's path to its line.

    Raises :class:`YamlLoadError` for invalid YAML, a duplicate key, or a
    document that is too deep or expands to too many nodes.
    """
    loader = yaml.SafeLoader(data)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            raise YamlLoadError(YamlProblem(line, str(exc.problem or exc))) from exc
        except yaml.YAMLError as exc:
            raise YamlLoadError(YamlProblem(0, str(exc))) from exc
        except RecursionError as exc:
            raise YamlLoadError(
                YamlProblem(0, f"the document is nested more than {MAX_DEPTH} levels deep")
            ) from exc
        if node is None:
            return None, {}
        _check_tree(node)
        try:
            document = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            raise YamlLoadError(YamlProblem(line, str(exc.problem or exc))) from exc
        lines: dict[DocPath, int] = {(): node.start_mark.line + 1}
        _record_lines(loader, node, (), lines)
        return document, lines
    finally:
        loader.dispose()


def _check_tree(root: yaml.Node) -> None:
    # Iterative, and an alias is walked each time it is referenced, so the
    # count is the size of the document as the schema validator will see it.
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise YamlLoadError(
                YamlProblem(0, f"the document expands to more than {MAX_NODES} values")
            )
        if depth > MAX_DEPTH:
            raise YamlLoadError(
                YamlProblem(
                    node.start_mark.line + 1,
                    f"the document is nested more than {MAX_DEPTH} levels deep",
                )
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if key.tag != _MERGE_TAG and isinstance(key, yaml.ScalarNode):
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise YamlLoadError(
                            YamlProblem(
                                line,
                                f"duplicate key {key.value!r} (first given on line "
                                f"{seen[key.value]})",
                            )
                        )
                    seen[key.value] = line
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


def _record_lines(
    loader: yaml.SafeLoader, root: yaml.Node, path: DocPath, lines: dict[DocPath, int]
) -> None:
    # After construction, merge keys are already flattened into each
    # mapping's node list, so merged entries get the line they came from.
    stack: list[tuple[yaml.Node, DocPath]] = [(root, path)]
    while stack and len(lines) <= MAX_NODES:
        node, where = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = loader.construct_object(key, deep=True)
                child = (*where, name if isinstance(name, int) else str(name))
                lines.setdefault(child, key.start_mark.line + 1)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*where, index)
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((item, child))
