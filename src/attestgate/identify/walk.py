"""List an artifact's files without following anything out of its root.

The walk never opens a file. It reports what it will not read (links that
leave the root, FIFOs and devices, directory loops) as findings, so that the
streaming pass only ever opens regular files inside the artifact.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from attestgate.findings import Finding, Severity

logger = logging.getLogger(__name__)

# Paths that OpenSSF Model Signing leaves out of a model's digest by default
# (model-signing 1.1, `ignore_paths` of its file serializer), so that the gate
# and a model signature agree on what the directory is. A path is ignored
# when it or any of its parents matches.
DIGEST_IGNORED = frozenset({".git", ".gitattributes", ".gitignore", ".github"})
# Signature files that sit inside the directory they sign.
SIGNATURE_FILES = frozenset({"model.sig"})

MAX_WALK_DEPTH = 64
MAX_WALK_ENTRIES = 1_000_000

CHECK = "identify"


@dataclass(frozen=True)
class Entry:
    """One regular file of the artifact."""

    path: str  # relative, with "/" separators; the file name for a single file
    location: Path  # where to open it (the link target for a file symlink)
    # The file the walk saw, so that the pass can refuse a file that another
    # process swapped in (a link to a file outside the root, say) before it
    # was opened. None when unknown.
    identity: tuple[int, int] | None = None


@dataclass
class WalkResult:
    entries: list[Entry] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _finding(rule: str, severity: Severity, path: str, message: str, fix: str) -> Finding:
    return Finding(rule, severity, path, message, fix, check=CHECK)


def _ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(part in DIGEST_IGNORED for part in parts) or rel in SIGNATURE_FILES


def _display_name(name: str, where: str, result: WalkResult) -> str:
    """Return ``name`` as text that every output can carry.

    Names that are not UTF-8 reach Python as lone surrogates, which no JSON
    writer or terminal accepts, so they are shown with backslash escapes. They
    are also reported, because the escaped form may collide with a real name.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        path = where + shown
        result.findings.append(
            _finding(
                "identify.undecodable-name",
                Severity.MEDIUM,
                path,
                f"the name of {path} is not valid UTF-8; it is shown with backslash "
                "escapes, which another file's name may spell the same way",
                "Rename the file with a UTF-8 name; model-signing and most tools "
                "cannot record other names.",
            )
        )
        return shown
    return name


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk(root: Path) -> WalkResult:
    """List the files of ``root``, a regular file or a directory."""
    result = WalkResult()
    st = root.stat()
    if stat.S_ISREG(st.st_mode):
        location = Path(os.path.realpath(root))
        name = _display_name(root.name, "", result)
        result.entries.append(Entry(name, location, (st.st_dev, st.st_ino)))
        return result
    if not stat.S_ISDIR(st.st_mode):
        result.findings.append(
            _finding(
                "identify.special-file",
                Severity.MEDIUM,
                root.name,
                f"{root} is neither a regular file nor a directory, so it was not read",
                "Admit the regular file or directory that holds the artifact.",
            )
        )
        return result
    real_root = os.path.realpath(root)
    _walk_dir(Path(real_root), "", real_root, set(), 0, result)
    result.entries.sort(key=lambda e: e.path)
    result.excluded.sort()
    return result


def _walk_dir(
    directory: Path,
    prefix: str,
    real_root: str,
    visited: set[tuple[int, int]],
    depth: int,
    result: WalkResult,
) -> None:
    st = directory.stat()
    key = (st.st_dev, st.st_ino)
    where = prefix.rstrip("/") or "."
    if key in visited:
        result.findings.append(
            _finding(
                "identify.directory-loop",
                Severity.MEDIUM,
                where,
                f"directory {where} was already visited (a bind mount or hard-linked "
                "directory forms a loop), so it was not walked again",
                "Remove the loop so that every file has one path in the artifact.",
            )
        )
        return
    visited.add(key)
    if depth > MAX_WALK_DEPTH:
        result.findings.append(
            _finding(
                "identify.too-deep",
                Severity.MEDIUM,
                where,
                f"directory {where} is nested more than {MAX_WALK_DEPTH} levels deep; "
                "deeper files were not read",
                "Flatten the artifact's layout, or admit the subdirectory that holds the model.",
            )
        )
        return
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda d: d.name)
    except OSError as exc:
        result.findings.append(
            _finding(
                "identify.unreadable",
                Severity.MEDIUM,
                where,
                f"directory {where} could not be listed: {exc.strerror or exc}",
                "Make the directory readable by the gate and admit the artifact again.",
            )
        )
        return
    for child in children:
        rel = prefix + _display_name(child.name, prefix, result)
        if len(result.entries) + len(result.excluded) >= MAX_WALK_ENTRIES:
            result.findings.append(
                _finding(
                    "identify.too-many-files",
                    Severity.MEDIUM,
                    where,
                    f"the artifact has more than {MAX_WALK_ENTRIES} files; the rest were not read",
                    "Split the artifact into smaller units and admit each one.",
                )
            )
            return
        if _ignored(rel):
            result.excluded.append(rel)
            continue
        _visit(child, rel, real_root, visited, depth, result)


def _visit(
    child: os.DirEntry[str],
    rel: str,
    real_root: str,
    visited: set[tuple[int, int]],
    depth: int,
    result: WalkResult,
) -> None:
    try:
        st = child.stat(follow_symlinks=False)
        mode = st.st_mode
    except OSError as exc:
        result.findings.append(
            _finding(
                "identify.unreadable",
                Severity.MEDIUM,
                rel,
                f"{rel} could not be examined: {exc.strerror or exc}",
                "Make the file readable by the gate and admit the artifact again.",
            )
        )
        return
    if stat.S_ISLNK(mode):
        _visit_link(child, rel, real_root, result)
    elif stat.S_ISDIR(mode):
        _walk_dir(Path(child.path), rel + "/", real_root, visited, depth + 1, result)
    elif stat.S_ISREG(mode):
        result.entries.append(Entry(rel, Path(child.path), (st.st_dev, st.st_ino)))
    else:
        result.findings.append(
            _finding(
                "identify.special-file",
                Severity.MEDIUM,
                rel,
                f"{rel} is a FIFO, socket or device, which no model format uses; it was not opened",
                "Remove the special file from the artifact.",
            )
        )


def _visit_link(child: os.DirEntry[str], rel: str, real_root: str, result: WalkResult) -> None:
    target = os.path.realpath(child.path)
    if not _inside(target, real_root):
        result.findings.append(
            _finding(
                "identify.symlink-escape",
                Severity.HIGH,
                rel,
                f"symbolic link {rel} points outside the artifact (to {os.readlink(child.path)}); "
                "it was not followed",
                "Replace the link with the file it should contain, or remove it.",
            )
        )
        return
    try:
        target_st = os.stat(target)
        target_mode = target_st.st_mode
    except OSError:
        result.findings.append(
            _finding(
                "identify.symlink-dangling",
                Severity.LOW,
                rel,
                f"symbolic link {rel} points to {os.readlink(child.path)}, which does not exist",
                "Remove the dangling link.",
            )
        )
        return
    if stat.S_ISREG(target_mode):
        # Hashed under the link's own path, as model-signing does when
        # symbolic links are allowed.
        result.entries.append(Entry(rel, Path(target), (target_st.st_dev, target_st.st_ino)))
    elif stat.S_ISDIR(target_mode) and _inside(os.path.dirname(child.path), target):
        # The link points at a directory that contains it: following it
        # would walk forever.
        result.findings.append(
            _finding(
                "identify.directory-loop",
                Severity.MEDIUM,
                rel,
                f"symbolic link {rel} points to {os.readlink(child.path)}, a directory that "
                "contains the link, which forms a loop; it was not followed",
                "Remove the looping link from the artifact.",
            )
        )
    elif stat.S_ISDIR(target_mode):
        result.findings.append(
            _finding(
                "identify.symlink-directory",
                Severity.LOW,
                rel,
                f"symbolic link {rel} points to a directory inside the artifact; "
                "it was not followed, and the files are read under their real paths",
                "Replace the directory link with a real directory if loaders need that path.",
            )
        )
    else:
        result.findings.append(
            _finding(
                "identify.special-file",
                Severity.MEDIUM,
                rel,
                f"symbolic link {rel} points to a FIFO, socket or device; it was not opened",
                "Remove the link from the artifact.",
            )
        )
