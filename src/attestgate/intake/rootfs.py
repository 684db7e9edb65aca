"""The image's root filesystem as its layers build it, with whiteouts applied.

Layers are applied in manifest order. Within one layer, the OCI image
specification's rules hold: a whiteout (``.wh.NAME``) or an opaque marker
(``.wh..wh..opq``) hides entries of lower layers only, never entries of its
own layer, whatever their order in the tar. So each layer's deletions are
applied first and its entries after.

After the last layer, the model provides three things: the entry each path
resolves to (to check installed distributions against their RECORD), the
watched files that a later layer deleted or replaced and which layer did it
(so that findings in them can name it), and how many entries each layer
removed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

FILE = "file"
DIRECTORY = "directory"
SYMLINK = "symlink"
HARDLINK = "hardlink"
SPECIAL = "special"

DELETED = "deleted"
REPLACED = "replaced"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Names starting with ".wh..wh." are reserved for the layer format's own metadata.
RESERVED_PREFIX = ".wh..wh."
# Deeper paths are counted but not tracked; PATH_MAX (4096) allows about this
# many two-character components.
MAX_PATH_COMPONENTS = 2048


@dataclass(frozen=True, slots=True)
class FsEntry:
    """One path as a layer left it."""

    layer: int
    kind: str
    digest: bytes | None = None  # raw SHA-256 of a regular file's bytes, when computed
    size: int = 0
    link: str = ""


@dataclass(frozen=True)
class Removal:
    """A watched file that a later layer deleted or replaced."""

    path: str
    layer: int  # the layer that added the file
    by_layer: int  # the layer that deleted or replaced it
    how: str  # DELETED or REPLACED


@dataclass
class LayerChanges:
    """One layer's changes to the filesystem, collected while its tar streams past."""

    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    entries: list[tuple[str, FsEntry]] = field(default_factory=list)


class _Node:
    __slots__ = ("children", "entry")

    def __init__(self, entry: FsEntry | None = None) -> None:
        self.entry = entry
        self.children: dict[str, _Node] = {}


def normalize_member_name(name: str) -> tuple[str, bool]:
    """Return a tar member name as an absolute path in the image, and whether it escapes the root.

    ``./a/b``, ``a/b`` and ``/a/b`` all name ``/a/b``. A ``..`` that climbs
    above the root makes the name escape, which only a hostile layer does.
    """
    parts: list[str] = []
    escaped = False
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            else:
                escaped = True
            continue
        parts.append(part)
    return "/" + "/".join(parts), escaped


def link_escapes(path: str, target: str) -> bool:
    """Tell whether a relative symbolic link target climbs above the image root.

    Absolute targets are resolved inside the root by container runtimes, so
    only a relative target with too many ``..`` components escapes, and only
    for a tool that unpacks the layer without a root boundary.
    """
    if target.startswith("/"):
        return False
    depth = len([p for p in posixpath.dirname(path).split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


class RootFilesystem:
    """The merged view of the layers applied so far."""

    def __init__(self) -> None:
        self._root = _Node(FsEntry(-1, DIRECTORY))
        self._watched: set[tuple[int, str]] = set()
        self.removals: list[Removal] = []
        self.removed_counts: dict[int, int] = {}

    def watch(self, layer: int, path: str) -> None:
        """Report the file ``path`` from ``layer`` in ``removals`` if a later layer removes it."""
        self._watched.add((layer, path))

    def apply(self, layer: int, changes: LayerChanges) -> None:
        """Apply one layer: its whiteouts and opaque markers, then its entries in tar order."""
        for directory in changes.opaque:
            node = self._find(directory)
            if node is not None and node.children:
                for name, child in list(node.children.items()):
                    self._removed(_join(directory, name), child, layer, DELETED)
                node.children = {}
        for path in changes.whiteouts:
            parent = self._find(posixpath.dirname(path))
            name = posixpath.basename(path)
            if parent is not None and name in parent.children:
                self._removed(path, parent.children.pop(name), layer, DELETED)
        for path, entry in changes.entries:
            self._add(path, entry, layer)

    def lookup(self, path: str) -> FsEntry | None:
        node = self._find(path)
        return node.entry if node is not None else None

    def files(self) -> list[tuple[str, FsEntry]]:
        """Return every regular file that the final image contains, in path order."""
        found: list[tuple[str, FsEntry]] = []
        stack: list[tuple[str, _Node]] = [("", self._root)]
        while stack:
            prefix, node = stack.pop()
            for name, child in node.children.items():
                path = f"{prefix}/{name}"
                if child.entry is not None and child.entry.kind == FILE:
                    found.append((path, child.entry))
                stack.append((path, child))
        found.sort()
        return found

    def _find(self, path: str) -> _Node | None:
        node = self._root
        for part in _parts(path):
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node

    def _add(self, path: str, entry: FsEntry, layer: int) -> None:
        parts = _parts(path)
        if not parts or len(parts) > MAX_PATH_COMPONENTS:
            return
        node = self._root
        prefix = ""
        for part in parts[:-1]:
            prefix = f"{prefix}/{part}"
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            elif child.entry is not None and child.entry.kind != DIRECTORY:
                # A directory entry of this layer replaces a lower file of the same name.
                self._removed(prefix, child, layer, REPLACED)
                child = node.children[part] = _Node()
            node = child
        name = parts[-1]
        existing = node.children.get(name)
        if existing is not None:
            kept_directory = entry.kind == DIRECTORY and (
                existing.entry is None or existing.entry.kind == DIRECTORY
            )
            if kept_directory:
                existing.entry = entry
                return
            self._removed(path, existing, layer, REPLACED)
        if entry.kind == HARDLINK:
            target = self._find(entry.link)
            if target is not None and target.entry is not None and target.entry.kind == FILE:
                entry = FsEntry(layer, FILE, target.entry.digest, target.entry.size, entry.link)
        node.children[name] = _Node(entry)

    def _removed(self, path: str, node: _Node, by_layer: int, how: str) -> None:
        stack = [(path, node)]
        while stack:
            current, item = stack.pop()
            if item.entry is not None and item.entry.layer >= 0:
                origin = item.entry.layer
                self.removed_counts[by_layer] = self.removed_counts.get(by_layer, 0) + 1
                if (origin, current) in self._watched:
                    self.removals.append(Removal(current, origin, by_layer, how))
            stack.extend((_join(current, n), c) for n, c in item.children.items())


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"
