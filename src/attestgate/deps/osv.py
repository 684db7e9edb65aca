"""Known-vulnerable and known-malicious releases from a local OSV database.

The database is a copy of OSV records (the schema at ossf.github.io/osv-schema)
that the operator downloads: one ``.json`` record, a folder of them, or the
per-ecosystem ``.zip`` that osv.dev exports. The gate reads it and never
fetches anything. Only ``PyPI`` entries are kept, keyed by PEP 503 names.

A version is affected when it is listed in ``affected[].versions`` or falls
in an ``ECOSYSTEM`` or ``SEMVER`` range. A range is walked as the schema
describes: events sorted by version, ``introduced`` opens an interval,
``fixed`` closes it at that version and ``last_affected`` after it.
Records whose id (or an alias) starts with ``MAL-`` report malicious
packages rather than vulnerabilities.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from attestgate.deps.model import normalize_name

logger = logging.getLogger(__name__)

MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_RECORDS = 2_000_000
MAX_DATABASE_BYTES = 8 * 1024 * 1024 * 1024

_RANGE_TYPES = {"ECOSYSTEM", "SEMVER"}


class OsvDatabaseError(Exception):
    """The OSV database path cannot be read as OSV records."""


@dataclass(frozen=True)
class Event:
    kind: str  # "introduced", "fixed" or "last_affected"
    version: Version | None  # None stands for "0", below every version


@dataclass(frozen=True)
class Advisory:
    """One OSV record's statement about one PyPI package."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    malicious: bool
    versions: frozenset[str]
    ranges: tuple[tuple[Event, ...], ...]

    def affects(self, version: str) -> bool:
        """Tell whether the advisory covers ``version`` of its package."""
        if version in self.versions:
            return True
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False
        if any(_same_version(listed, parsed) for listed in self.versions):
            return True
        return any(_in_range(events, parsed) for events in self.ranges)

    @property
    def all_versions(self) -> bool:
        """Tell whether some range opens at "0" and never closes."""
        for events in self.ranges:
            opens_at_zero = bool(events) and events[0].version is None
            if opens_at_zero and all(event.kind == "introduced" for event in events):
                return True
        return False


def _same_version(text: str, version: Version) -> bool:
    try:
        return Version(text) == version
    except InvalidVersion:
        return False


def _in_range(events: tuple[Event, ...], version: Version) -> bool:
    affected = False
    for event in events:
        if event.kind == "introduced":
            if event.version is None or version >= event.version:
                affected = True
        elif event.kind == "fixed" and event.version is not None and version >= event.version:
            affected = False
        elif event.kind == "last_affected" and event.version is not None:
            affected = affected and version <= event.version
    return affected


def _sort_key(event: Event) -> tuple[int, Version, int]:
    # "0" sorts first; at equal versions an interval opens before it closes.
    rank = {"introduced": 0, "last_affected": 1, "fixed": 2}[event.kind]
    if event.version is None:
        return (0, Version("0"), rank)
    return (1, event.version, rank)


def _parse_events(raw: Any) -> tuple[Event, ...] | None:
    if not isinstance(raw, list):
        return None
    events: list[Event] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        for kind in ("introduced", "fixed", "last_affected"):
            value = item.get(kind)
            if not isinstance(value, str):
                continue
            if kind == "introduced" and value == "0":
                events.append(Event(kind, None))
                continue
            try:
                events.append(Event(kind, Version(value)))
            except InvalidVersion:
                # A bound that cannot be compared would make the whole range
                # guesswork, so the range is dropped rather than misread.
                logger.debug("skipping an OSV range with the invalid version %r", value)
                return None
    return tuple(sorted(events, key=_sort_key))


def _advisories_from_record(record: Any) -> Iterator[tuple[str, Advisory]]:
    if not isinstance(record, dict) or record.get("withdrawn"):
        return
    record_id = record.get("id")
    if not isinstance(record_id, str):
        return
    aliases = tuple(a for a in record.get("aliases") or () if isinstance(a, str))
    summary = record.get("summary") or record.get("details") or ""
    summary = summary.strip().splitlines()[0][:200] if isinstance(summary, str) and summary else ""
    malicious = record_id.startswith("MAL-") or any(a.startswith("MAL-") for a in aliases)
    for affected in record.get("affected") or ():
        if not isinstance(affected, dict):
            continue
        package = affected.get("package")
        if not isinstance(package, dict):
            continue
        ecosystem, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem, str) or not isinstance(name, str):
            continue
        if ecosystem.split(":", 1)[0] != "PyPI":
            continue
        versions = frozenset(v for v in affected.get("versions") or () if isinstance(v, str))
        ranges: list[tuple[Event, ...]] = []
        for entry in affected.get("ranges") or ():
            if isinstance(entry, dict) and entry.get("type") in _RANGE_TYPES:
                events = _parse_events(entry.get("events"))
                if events:
                    ranges.append(events)
        advisory = Advisory(record_id, aliases, summary, malicious, versions, tuple(ranges))
        yield normalize_name(name), advisory


class OsvDatabase:
    """PyPI advisories indexed by normalized package name."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.record_count = 0
        self._by_name: dict[str, list[Advisory]] = {}

    def add_record(self, record: Any) -> None:
        self.record_count += 1
        for name, advisory in _advisories_from_record(record):
            self._by_name.setdefault(name, []).append(advisory)

    def advisories(self, name: str) -> list[Advisory]:
        """Return every advisory about the package, whatever the version."""
        return list(self._by_name.get(normalize_name(name), ()))

    def affecting(self, name: str, version: str) -> list[Advisory]:
        """Return the advisories that cover ``version`` of the package."""
        return [a for a in self._by_name.get(normalize_name(name), ()) if a.affects(version)]

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_name.values())


def load_osv_database(path: Path) -> OsvDatabase:
    """Read OSV records from a ``.json`` file, a folder of them or a ``.zip`` export.

    Raises OsvDatabaseError when the path is missing, unreadable, not JSON
    or larger than the bounds (16 MiB per record file, 2,000,000 records).
    """
    database = OsvDatabase(str(path))
    if path.is_dir():
        documents: Iterable[tuple[str, bytes]] = _folder_documents(path)
    elif path.suffix.lower() == ".zip":
        documents = _zip_documents(path)
    elif path.is_file():
        documents = [(path.name, _read_bounded(path))]
    else:
        raise OsvDatabaseError(f"the OSV database {path} does not exist")
    for name, data in documents:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise OsvDatabaseError(f"{name} in the OSV database is not valid JSON: {exc}") from None
        for record in document if isinstance(document, list) else [document]:
            if database.record_count >= MAX_RECORDS:
                raise OsvDatabaseError(f"the OSV database {path} has over {MAX_RECORDS} records")
            database.add_record(record)
    logger.info(
        "loaded %d PyPI advisories from %d OSV records in %s",
        len(database),
        database.record_count,
        path,
    )
    return database


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        raise OsvDatabaseError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_RECORD_BYTES:
        raise OsvDatabaseError(f"{path} is larger than {MAX_RECORD_BYTES} bytes")
    return data


def _folder_documents(folder: Path) -> Iterator[tuple[str, bytes]]:
    for count, path in enumerate(sorted(folder.rglob("*.json"))):
        if count >= MAX_RECORDS:
            raise OsvDatabaseError(f"the OSV database {folder} has over {MAX_RECORDS} files")
        if path.is_file():
            yield str(path.relative_to(folder)), _read_bounded(path)


def _zip_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise OsvDatabaseError(f"cannot open the OSV database {path}: {exc}") from None
    with archive:
        members = [m for m in archive.infolist() if m.filename.endswith(".json")]
        if len(members) > MAX_RECORDS:
            raise OsvDatabaseError(f"the OSV database {path} has over {MAX_RECORDS} members")
        total = 0
        for member in members:
            total += member.file_size
            if member.file_size > MAX_RECORD_BYTES or total > MAX_DATABASE_BYTES:
                raise OsvDatabaseError(f"{member.filename} in {path} exceeds the size bounds")
            try:
                with archive.open(member) as handle:
                    # The declared size can lie, so the read is bounded too.
                    data = handle.read(MAX_RECORD_BYTES + 1)
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise OsvDatabaseError(f"cannot read {member.filename} in {path}: {exc}") from None
            if len(data) > MAX_RECORD_BYTES:
                raise OsvDatabaseError(f"{member.filename} in {path} exceeds the size bounds")
            yield member.filename, data
