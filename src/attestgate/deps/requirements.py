"""A parser for pip's requirements file format.

pip has no public API for its requirements format, so this module follows
the format as pip documents it ("Requirements File Format", pip 24):

1. A line that ends with a backslash continues on the next line.
2. ``#`` at the start of a line or after whitespace starts a comment.
3. Text before the first token that starts with ``-`` is the requirement.
   The rest are options: ``--hash`` per requirement, or global options such
   as ``--index-url``, ``-r`` and ``-c``.
4. A requirement is a PEP 508 string, a URL (``git+https://...``,
   ``https://.../x.whl``) or a local path; ``-e`` marks it editable.

Nothing is fetched, expanded or executed: ``${VAR}`` references stay as
written, and ``-r``/``-c`` files are recorded, and read only by
:func:`parse_requirements_tree` when they sit inside the given root.
"""

from __future__ import annotations

import logging
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from attestgate.deps.model import (
    MAX_DEPS_ENTRIES,
    MAX_DEPS_FILE_BYTES,
    Dependency,
    SourceKind,
    normalize_name,
    url_scheme,
)

logger = logging.getLogger(__name__)

MAX_TREE_DEPTH = 8
MAX_TREE_FILES = 256

_COMMENT = re.compile(r"(^|\s+)#.*$")
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".tar")
_HASH_OPTION = re.compile(r"^(\w+):([0-9a-fA-F]+)$")

# pip options that take a value, by every spelling, mapped to one key.
_VALUE_OPTIONS = {
    "-i": "index-url",
    "--index-url": "index-url",
    "--extra-index-url": "extra-index-url",
    "-f": "find-links",
    "--find-links": "find-links",
    "--trusted-host": "trusted-host",
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-e": "editable",
    "--editable": "editable",
    "--hash": "hash",
    "--no-binary": "no-binary",
    "--only-binary": "only-binary",
    "--use-feature": "use-feature",
    "--config-settings": "config-settings",
    "--global-option": "global-option",
    "--install-option": "install-option",
}
_FLAG_OPTIONS = {
    "--no-index": "no-index",
    "--require-hashes": "require-hashes",
    "--pre": "pre",
    "--prefer-binary": "prefer-binary",
}


@dataclass(frozen=True)
class NestedReference:
    """A ``-r`` or ``-c`` reference to another requirements file."""

    kind: str  # "requirement" or "constraint"
    target: str
    origin: str
    line: int
    reason: str = ""  # why it was not followed, when it was not


@dataclass(frozen=True)
class LineError:
    """A line that pip would reject, with the reason."""

    origin: str
    line: int
    text: str
    message: str


@dataclass
class ParsedRequirements:
    """Requirements, constraints and pip options read from one or more files.

    ``nested`` lists references that were not followed: every reference in
    single-file parsing, and URLs, files outside the root, missing files and
    cycles in tree parsing.
    """

    requirements: list[Dependency] = field(default_factory=list)
    constraints: list[Dependency] = field(default_factory=list)
    index_urls: list[str] = field(default_factory=list)
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_index: bool = False
    require_hashes: bool = False
    nested: list[NestedReference] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    truncated: bool = False

    def merge(self, other: ParsedRequirements, *, as_constraints: bool = False) -> None:
        """Add another file's content, as pip does for ``-r`` (or ``-c``) files."""
        if as_constraints:
            self.constraints.extend(other.requirements)
        else:
            self.requirements.extend(other.requirements)
        self.constraints.extend(other.constraints)
        self.index_urls.extend(other.index_urls)
        self.extra_index_urls.extend(other.extra_index_urls)
        self.find_links.extend(other.find_links)
        self.trusted_hosts.extend(other.trusted_hosts)
        self.no_index = self.no_index or other.no_index
        self.require_hashes = self.require_hashes or other.require_hashes
        self.nested.extend(other.nested)
        self.errors.extend(other.errors)
        self.files.extend(other.files)
        self.truncated = self.truncated or other.truncated


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines and strip comments, keeping first line numbers."""
    result: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\") and not _COMMENT.match(raw.strip()):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        line = _COMMENT.sub("", "".join(pending)).strip()
        pending = []
        if line:
            result.append((start, line))
    if pending:
        line = _COMMENT.sub("", "".join(pending)).strip()
        if line:
            result.append((start, line))
    return result


def _split_options(line: str) -> tuple[str, str]:
    # pip treats tokens up to the first one starting with "-" as the
    # requirement and hands the rest to its option parser.
    tokens = line.split()
    for index, token in enumerate(tokens):
        if token.startswith("-"):
            return " ".join(tokens[:index]).strip(), " ".join(tokens[index:])
    return line.strip(), ""


def _parse_options(text: str) -> list[tuple[str, str]]:
    """Return (key, value) pairs for an option string; raise ValueError if invalid."""
    # shlex is slow, and without quotes or backslashes it splits as str.split does.
    tokens = shlex.split(text) if any(c in text for c in "'\"\\") else text.split()
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token in _FLAG_OPTIONS:
            pairs.append((_FLAG_OPTIONS[token], ""))
            continue
        name, sep, value = token.partition("=")
        if name in _VALUE_OPTIONS and name.startswith("--") and sep:
            pairs.append((_VALUE_OPTIONS[name], value))
            continue
        if token in _VALUE_OPTIONS:
            if position >= len(tokens):
                raise ValueError(f"option {token} needs a value")
            pairs.append((_VALUE_OPTIONS[token], tokens[position]))
            position += 1
            continue
        short = token[:2]
        if short in _VALUE_OPTIONS and not token.startswith("--") and len(token) > 2:
            pairs.append((_VALUE_OPTIONS[short], token[2:].lstrip("=")))
            continue
        raise ValueError(f"unknown or misplaced option {token!r}")
    return pairs


def _looks_like_path(text: str) -> bool:
    if text.startswith((".", "/", "~")) or "/" in text or "\\" in text:
        return True
    if re.match(r"^[A-Za-z]:[\\/]", text):
        return True
    return text.lower().endswith(_ARCHIVE_SUFFIXES)


def _name_from_location(location: str) -> tuple[str, str | None]:
    """Return the project name and version a URL or path reveals, if any."""
    fragment = urllib.parse.urlsplit(location).fragment if "#" in location else ""
    egg = urllib.parse.parse_qs(fragment).get("egg", [""])[0]
    if egg:
        return egg, None
    path = location.split("#", 1)[0].split("?", 1)[0]
    filename = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return str(name), str(version)
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return str(name), str(version)
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return "", None


def _location_kind(location: str) -> SourceKind:
    scheme = url_scheme(location)
    if scheme.startswith(_VCS_PREFIXES) or scheme in {"git", "svn", "hg", "bzr"}:
        return SourceKind.VCS
    if scheme in {"", "file"}:
        return SourceKind.PATH
    return SourceKind.URL


def vcs_revision(url: str) -> str:
    """Return the revision after ``@`` in a VCS URL's path, or ""."""
    try:
        path = urllib.parse.urlsplit(url.split("+", 1)[-1]).path
    except ValueError:
        return ""
    return path.rsplit("@", 1)[1] if "@" in path else ""


def _from_location(location: str, *, marker: str, editable: bool, name: str = "") -> Dependency:
    kind = _location_kind(location)
    found_name, version = _name_from_location(location)
    name = name or found_name
    fragment = urllib.parse.urlsplit(location).fragment if "#" in location else ""
    hashes = tuple(
        f"{algorithm}:{value}"
        for algorithm, values in urllib.parse.parse_qs(fragment).items()
        if algorithm in {"sha256", "sha384", "sha512"}
        for value in values
    )
    return Dependency(
        name=normalize_name(name) if name else "",
        display_name=name,
        source=kind,
        version=version if kind is not SourceKind.VCS else None,
        url=location,
        revision=vcs_revision(location) if kind is SourceKind.VCS else "",
        hashes=hashes,
        editable=editable,
        marker=marker,
    )


def parse_requirement(text: str, *, editable: bool = False) -> Dependency:
    """Parse the requirement part of one line; raise ValueError if pip would reject it."""
    text = text.strip()
    if url_scheme(text):
        # pip separates the markers of a URL requirement with "; ".
        location, _, marker = text.partition("; ")
        return _from_location(location.strip(), marker=marker.strip(), editable=editable)
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        location, _, marker = text.partition(";")
        if _looks_like_path(location.strip()):
            return _from_location(location.strip(), marker=marker.strip(), editable=editable)
        raise ValueError(str(exc).splitlines()[0]) from None
    if requirement.name.lower().endswith(_ARCHIVE_SUFFIXES) and not requirement.url:
        # "pkg-1.0-py3-none-any.whl" parses as a project name, but pip
        # installs it as a local archive.
        location, _, marker = text.partition(";")
        return _from_location(location.strip(), marker=marker.strip(), editable=editable)
    marker = str(requirement.marker) if requirement.marker else ""
    if requirement.url:
        return _from_location(
            requirement.url, marker=marker, editable=editable, name=requirement.name
        )
    pinned = [
        spec
        for spec in requirement.specifier
        if spec.operator in {"==", "==="} and not spec.version.endswith(".*")
    ]
    return Dependency(
        name=normalize_name(requirement.name),
        display_name=requirement.name,
        source=SourceKind.INDEX,
        version=pinned[0].version if pinned else None,
        specifier=str(requirement.specifier),
        editable=editable,
        marker=marker,
    )


def _with_place(dependency: Dependency, origin: str, line: int, hashes: list[str]) -> Dependency:
    return replace(dependency, hashes=dependency.hashes + tuple(hashes), line=line, origin=origin)


def _apply_options(
    parsed: ParsedRequirements, pairs: list[tuple[str, str]], origin: str, line: int
) -> list[str]:
    """Record global options and return the per-requirement ``--hash`` values."""
    hashes: list[str] = []
    for key, value in pairs:
        if key == "hash":
            match = _HASH_OPTION.match(value)
            if not match:
                raise ValueError(f"invalid --hash value {value!r}; expected ALGORITHM:HEX")
            hashes.append(f"{match.group(1).lower()}:{match.group(2).lower()}")
        elif key == "index-url":
            parsed.index_urls.append(value)
        elif key == "extra-index-url":
            parsed.extra_index_urls.append(value)
        elif key == "find-links":
            parsed.find_links.append(value)
        elif key == "trusted-host":
            parsed.trusted_hosts.append(value)
        elif key == "no-index":
            parsed.no_index = True
        elif key == "require-hashes":
            parsed.require_hashes = True
        elif key in {"requirement", "constraint"}:
            parsed.nested.append(NestedReference(key, value, origin, line))
    return hashes


def _parse_line(parsed: ParsedRequirements, origin: str, number: int, line: str) -> None:
    requirement_text, option_text = _split_options(line)
    pairs = _parse_options(option_text) if option_text else []
    editables = [value for key, value in pairs if key == "editable"]
    if requirement_text and editables:
        raise ValueError("a line cannot contain both a requirement and -e")
    hashes = _apply_options(parsed, pairs, origin, number)
    targets = [(requirement_text, False)] if requirement_text else []
    targets += [(value, True) for value in editables]
    if hashes and not targets:
        raise ValueError("--hash must follow a requirement on the same line")
    for text, editable in targets:
        dependency = parse_requirement(text, editable=editable)
        parsed.requirements.append(_with_place(dependency, origin, number, hashes))


def parse_requirements_text(text: str, origin: str = "") -> ParsedRequirements:
    """Parse one requirements file's text; invalid lines become ``errors``."""
    parsed = ParsedRequirements(files=[origin] if origin else [])
    for number, line in logical_lines(text):
        if len(parsed.requirements) >= MAX_DEPS_ENTRIES:
            parsed.truncated = True
            break
        try:
            _parse_line(parsed, origin, number, line)
        except ValueError as exc:
            parsed.errors.append(LineError(origin, number, line[:200], str(exc)))
    return parsed


def decode_requirements(data: bytes) -> tuple[str, bool]:
    """Decode a requirements file as pip does for UTF-8; return (text, valid)."""
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), False


def parse_requirements_tree(
    path: Path, root: Path, *, max_depth: int = MAX_TREE_DEPTH
) -> ParsedRequirements:
    """Parse ``path`` and the ``-r``/``-c`` files it names that lie inside ``root``.

    Relative references resolve against the including file's folder, as pip
    resolves them. A reference is left in ``nested`` with a reason, and not
    read, when it is a URL, leaves ``root`` (symbolic links included), does
    not exist, is deeper than ``max_depth``, or closes a cycle. Each file is
    read at most once, and the whole tree reads at most 256 files.
    """
    root = root.resolve()
    result = ParsedRequirements()
    seen: set[Path] = set()
    _parse_tree_file(path.resolve(), root, (), max_depth, seen, result, as_constraints=False)
    return result


def _parse_tree_file(
    path: Path,
    root: Path,
    chain: tuple[Path, ...],
    max_depth: int,
    seen: set[Path],
    result: ParsedRequirements,
    *,
    as_constraints: bool,
) -> None:
    seen.add(path)
    origin = _relative(path, root)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DEPS_FILE_BYTES + 1)
    except OSError as exc:
        result.errors.append(LineError(origin, 0, "", f"cannot read the file: {exc.strerror}"))
        return
    if len(data) > MAX_DEPS_FILE_BYTES:
        result.errors.append(
            LineError(origin, 0, "", f"larger than {MAX_DEPS_FILE_BYTES} bytes, not parsed")
        )
        return
    text, _ = decode_requirements(data)
    parsed = parse_requirements_text(text, origin)
    references, parsed.nested = parsed.nested, []
    result.merge(parsed, as_constraints=as_constraints)

    for reference in references:
        reason, target = _resolve_reference(reference, path, root, chain, max_depth, seen)
        if target is None:
            if reason:
                result.nested.append(_with_reason(reference, reason))
            continue
        _parse_tree_file(
            target,
            root,
            (*chain, path),
            max_depth,
            seen,
            result,
            as_constraints=as_constraints or reference.kind == "constraint",
        )


def _resolve_reference(
    reference: NestedReference,
    including: Path,
    root: Path,
    chain: tuple[Path, ...],
    max_depth: int,
    seen: set[Path],
) -> tuple[str, Path | None]:
    """Return (reason, None) for a reference not to follow, or ("", path)."""
    if url_scheme(reference.target) not in {"", "file"}:
        return "a URL; the gate never fetches it", None
    target_text = reference.target
    if target_text.startswith("file://"):
        target_text = urllib.parse.unquote(urllib.parse.urlsplit(target_text).path)
    target = (including.parent / target_text).resolve()
    if not target.is_relative_to(root):
        return "outside the artifact", None
    if target == including or target in chain:
        return "includes itself (a cycle)", None
    if target in seen:
        return "", None
    if len(chain) + 1 > max_depth:
        return f"nested deeper than {max_depth} files", None
    if len(seen) >= MAX_TREE_FILES:
        return f"the tree already contains {MAX_TREE_FILES} files", None
    if not target.is_file():
        return "not found in the artifact", None
    return "", target


def _with_reason(reference: NestedReference, reason: str) -> NestedReference:
    return NestedReference(
        reference.kind, reference.target, reference.origin, reference.line, reason
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
