"""Parsers for lock files: pylock.toml, uv.lock, poetry.lock and Pipfile.lock.

Each parser reads the document that its tool writes and returns the locked
packages as :class:`~attestgate.deps.model.Dependency` entries with their
versions, hashes and sources. Every value comes from an untrusted file, so
each one is type-checked before use and an entry of the wrong shape becomes
an error message instead of an exception. Conda environment files live in
:mod:`attestgate.deps.conda`.
"""

from __future__ import annotations

import json
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from attestgate.deps.model import (
    MAX_DEPS_ENTRIES,
    PYPI_SIMPLE,
    Dependency,
    DependencySet,
    SourceKind,
    normalize_name,
)
from attestgate.deps.requirements import ParsedRequirements


class LockFileError(Exception):
    """The file is not a valid document of its format."""


@dataclass
class LockFile:
    """A parsed lock or environment file.

    ``unverified_sources`` lists sources that the file fetches without TLS
    verification (plain-HTTP file URLs, Pipfile sources with ``verify_ssl =
    false``). ``pip`` is the ``pip:`` section of a conda environment file.
    """

    entries: DependencySet
    unverified_sources: list[str] = field(default_factory=list)
    pip: ParsedRequirements | None = None


def lock_kind(file_name: str) -> str | None:
    """Return the lock format a file name denotes, or None."""
    if file_name == "pylock.toml" or (
        file_name.startswith("pylock.") and file_name.endswith(".toml")
    ):
        return "pylock.toml"
    if file_name in {"uv.lock", "poetry.lock", "Pipfile.lock"}:
        return file_name
    if file_name in {"environment.yml", "environment.yaml"}:
        return "environment.yml"
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tables(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _load_toml(data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LockFileError(f"not valid TOML: {exc}") from None


def _hash_pairs(hashes: Any) -> tuple[str, ...]:
    """Turn a PEP 751 ``hashes`` table into ``algorithm:hex`` strings."""
    return tuple(
        f"{algorithm.lower()}:{value.lower()}"
        for algorithm, value in _table(hashes).items()
        if isinstance(value, str) and value
    )


def _every_file_hashed(files: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """Return all hashes when every file has at least one, else ()."""
    if not files or not all(files):
        return ()
    return tuple(value for hashes in files for value in hashes)


def _bounded(items: list[dict[str, Any]], entries: DependencySet) -> Iterator[dict[str, Any]]:
    for count, item in enumerate(items):
        if count >= MAX_DEPS_ENTRIES:
            entries.truncated = True
            return
        yield item


def _name_of(item: dict[str, Any], entries: DependencySet, position: int) -> str:
    name = _text(item.get("name"))
    if not name:
        entries.errors.append(f"package #{position + 1} has no name")
    return name


def _insecure_file_urls(urls: list[str]) -> list[str]:
    found = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() == "http":
            found.append(f"http://{parts.netloc}")
    return found


def _base(name: str, item: dict[str, Any], origin: str) -> Dependency:
    """Return an index entry with the fields every lock format records."""
    return Dependency(
        name=normalize_name(name),
        display_name=name,
        source=SourceKind.INDEX,
        version=_text(item.get("version")) or None,
        marker=_text(item.get("marker")),
        origin=origin,
    )


def _pylock_entry(item: dict[str, Any], base: Dependency, result: LockFile) -> Dependency:
    vcs, directory, archive = (_table(item.get(k)) for k in ("vcs", "directory", "archive"))

    if vcs:
        return replace(
            base,
            source=SourceKind.VCS,
            url=_text(vcs.get("url")) or _text(vcs.get("path")),
            revision=_text(vcs.get("commit-id")) or _text(vcs.get("requested-revision")),
        )
    if directory:
        return replace(
            base,
            source=SourceKind.PATH,
            url=_text(directory.get("path")),
            editable=directory.get("editable") is True,
        )
    if archive:
        url = _text(archive.get("url"))
        return replace(
            base,
            source=SourceKind.URL if url else SourceKind.PATH,
            url=url or _text(archive.get("path")),
            hashes=_hash_pairs(archive.get("hashes")),
        )

    files = [_table(item.get("sdist"))] if item.get("sdist") else []
    files += _tables(item.get("wheels"))
    if not files:
        result.entries.errors.append(
            f"package {base.display_name} names no sdist, wheel or other source"
        )
    index = _text(item.get("index"))
    if index:
        result.entries.indexes.append(index)
    result.unverified_sources += _insecure_file_urls([_text(f.get("url")) for f in files])
    hashes = _every_file_hashed([_hash_pairs(f.get("hashes")) for f in files])
    return replace(base, url=index, hashes=hashes)


def parse_pylock(data: bytes, origin: str = "") -> LockFile:
    """Parse a PEP 751 ``pylock.toml``."""
    document = _load_toml(data)
    entries = DependencySet(kind="pylock.toml")
    result = LockFile(entries)
    if "lock-version" not in document:
        entries.errors.append("the lock-version key is missing")
    for position, item in enumerate(_bounded(_tables(document.get("packages")), entries)):
        name = _name_of(item, entries, position)
        if name:
            entries.dependencies.append(_pylock_entry(item, _base(name, item, origin), result))
    return result


def _uv_entry(item: dict[str, Any], base: Dependency, result: LockFile) -> Dependency | None:
    files = [_table(item.get("sdist"))] if item.get("sdist") else []
    files += _tables(item.get("wheels"))
    hashes = [(_text(f.get("hash")),) if _text(f.get("hash")) else () for f in files]
    result.unverified_sources += _insecure_file_urls([_text(f.get("url")) for f in files])
    base = replace(base, hashes=_every_file_hashed(hashes))

    source = _table(item.get("source"))
    if "registry" in source:
        index = _text(source.get("registry"))
        result.entries.indexes.append(index)
        return replace(base, url=index)
    if "git" in source:
        url = _text(source.get("git"))
        # uv writes the resolved commit as the URL fragment.
        revision = urllib.parse.urlsplit(url).fragment
        return replace(base, source=SourceKind.VCS, url=url, revision=revision)
    if "url" in source:
        return replace(base, source=SourceKind.URL, url=_text(source.get("url")))
    if "path" in source or "directory" in source:
        location = _text(source.get("path")) or _text(source.get("directory"))
        return replace(base, source=SourceKind.PATH, url=location)
    if "editable" in source or "virtual" in source:
        # The project being locked and its workspace members.
        location = _text(source.get("editable")) or _text(source.get("virtual"))
        return replace(base, source=SourceKind.PROJECT, url=location)
    result.entries.errors.append(f"package {base.display_name} has no recognised source")
    return None


def parse_uv_lock(data: bytes, origin: str = "") -> LockFile:
    """Parse uv's ``uv.lock``."""
    document = _load_toml(data)
    entries = DependencySet(kind="uv.lock")
    result = LockFile(entries)
    for position, item in enumerate(_bounded(_tables(document.get("package")), entries)):
        name = _name_of(item, entries, position)
        dependency = _uv_entry(item, _base(name, item, origin), result) if name else None
        if dependency is not None:
            entries.dependencies.append(dependency)
    return result


def _poetry_files(document: dict[str, Any], item: dict[str, Any], name: str) -> list[Any]:
    files = item.get("files")
    if isinstance(files, list):
        return files
    # Lock files of lock-version 1.x keep the file hashes under [metadata.files].
    legacy = _table(_table(document.get("metadata")).get("files"))
    found = legacy.get(name) or legacy.get(normalize_name(name))
    return found if isinstance(found, list) else []


def _poetry_entry(
    document: dict[str, Any], item: dict[str, Any], base: Dependency, result: LockFile
) -> Dependency | None:
    files = _tables(_poetry_files(document, item, base.display_name))
    hashes = [(_text(f.get("hash")),) if _text(f.get("hash")) else () for f in files]
    base = replace(base, hashes=_every_file_hashed(hashes), editable=item.get("develop") is True)

    source = _table(item.get("source"))
    kind, url = _text(source.get("type")), _text(source.get("url"))
    if not source or kind == "legacy":
        index = url or PYPI_SIMPLE
        result.entries.indexes.append(index)
        return replace(base, url=index)
    if kind == "git":
        revision = _text(source.get("resolved_reference")) or _text(source.get("reference"))
        return replace(base, source=SourceKind.VCS, url=url, revision=revision)
    if kind == "url":
        return replace(base, source=SourceKind.URL, url=url)
    if kind in {"file", "directory"}:
        return replace(base, source=SourceKind.PATH, url=url)
    result.entries.errors.append(
        f"package {base.display_name} has the unknown source type {kind!r}"
    )
    return None


def parse_poetry_lock(data: bytes, origin: str = "") -> LockFile:
    """Parse Poetry's ``poetry.lock``."""
    document = _load_toml(data)
    entries = DependencySet(kind="poetry.lock")
    result = LockFile(entries)
    for position, item in enumerate(_bounded(_tables(document.get("package")), entries)):
        name = _name_of(item, entries, position)
        base = _base(name, item, origin)
        dependency = _poetry_entry(document, item, base, result) if name else None
        if dependency is not None:
            entries.dependencies.append(dependency)
    return result


def _pipfile_version(value: Any) -> str | None:
    text = _text(value).strip()
    if text.startswith("==") and not text.startswith("===") and "*" not in text:
        return text[2:].strip() or None
    return None


def _pipfile_entry(
    name: str, item: dict[str, Any], sources: dict[str, str], first: str, origin: str
) -> Dependency:
    base = Dependency(
        name=normalize_name(name),
        display_name=name,
        source=SourceKind.INDEX,
        version=_pipfile_version(item.get("version")),
        specifier=_text(item.get("version")),
        marker=_text(item.get("markers")),
        origin=origin,
        hashes=tuple(h.lower() for h in item.get("hashes") or () if isinstance(h, str)),
        editable=item.get("editable") is True,
    )
    if "git" in item:
        return replace(
            base, source=SourceKind.VCS, url=_text(item.get("git")), revision=_text(item.get("ref"))
        )
    if "file" in item:
        url = _text(item.get("file"))
        remote = "://" in url and not url.startswith("file:")
        return replace(base, source=SourceKind.URL if remote else SourceKind.PATH, url=url)
    if "path" in item:
        return replace(base, source=SourceKind.PATH, url=_text(item.get("path")))
    return replace(base, url=sources.get(_text(item.get("index")), first))


def parse_pipfile_lock(data: bytes, origin: str = "") -> LockFile:
    """Parse Pipenv's ``Pipfile.lock`` (JSON)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise LockFileError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise LockFileError("the document is not a JSON object")
    entries = DependencySet(kind="Pipfile.lock")
    result = LockFile(entries)
    sources: dict[str, str] = {}
    for source in _tables(_table(document.get("_meta")).get("sources")):
        url = _text(source.get("url"))
        sources[_text(source.get("name"))] = url
        if source.get("verify_ssl") is False:
            result.unverified_sources.append(url)
    first = next(iter(sources.values()), PYPI_SIMPLE)
    count = 0
    for section in ("default", "develop"):
        for name, item in _table(document.get(section)).items():
            count += 1
            if count > MAX_DEPS_ENTRIES:
                entries.truncated = True
                return result
            if not isinstance(item, dict):
                entries.errors.append(f"the {section} entry {name!r} is not an object")
                continue
            dependency = _pipfile_entry(name, item, sources, first, origin)
            if dependency.source is SourceKind.INDEX:
                entries.indexes.append(dependency.url)
            entries.dependencies.append(dependency)
    return result


PARSERS: dict[str, Callable[[bytes, str], LockFile]] = {
    "pylock.toml": parse_pylock,
    "uv.lock": parse_uv_lock,
    "poetry.lock": parse_poetry_lock,
    "Pipfile.lock": parse_pipfile_lock,
}
