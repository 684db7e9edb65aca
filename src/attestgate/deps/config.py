"""Configuration of the dependency checks, read from environment variables.

============================== ===========================================
variable                       value
============================== ===========================================
ATTESTGATE_OSV_DB              an OSV database: a ``.json`` record, a folder
                               of records, or an osv.dev ``.zip`` export
ATTESTGATE_INTERNAL_PACKAGES   a text file of internal project names
ATTESTGATE_PUBLIC_INDEX_SNAPSHOT  the public index's project names (text,
                               PEP 691 JSON or PEP 503 HTML)
============================== ===========================================

Each file is loaded once per process and path, and loaded again when its
modification time or size changes. A variable that names a missing or
invalid file is reported in ``errors``, so that every dependency file
scanned gets a finding instead of passing unchecked.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from attestgate.deps.confusion import (
    ExposedNames,
    NameListError,
    load_index_snapshot,
    load_name_list,
)
from attestgate.deps.osv import OsvDatabase, OsvDatabaseError, load_osv_database

logger = logging.getLogger(__name__)

OSV_DB_VARIABLE = "ATTESTGATE_OSV_DB"
INTERNAL_PACKAGES_VARIABLE = "ATTESTGATE_INTERNAL_PACKAGES"
PUBLIC_INDEX_VARIABLE = "ATTESTGATE_PUBLIC_INDEX_SNAPSHOT"

_T = TypeVar("_T")
_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[tuple[int, int], object]] = {}
_warned: set[str] = set()


@dataclass(frozen=True)
class DepsConfig:
    """The optional data sources of the dependency checks."""

    osv: OsvDatabase | None = None
    names: ExposedNames | None = None
    errors: tuple[str, ...] = ()


def _stamp(path: Path) -> tuple[int, int]:
    # NOTE: a folder is stamped by its own entry only, so a record edited in
    # place inside it is read again only after a restart. Replacing the
    # folder, or adding or removing files in it, reloads it.
    status = path.stat()
    return (status.st_mtime_ns, status.st_size)


def _cached(kind: str, path: Path, load: Callable[[Path], _T]) -> _T:
    key = (kind, str(path))
    stamp = _stamp(path)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            value: _T = hit[1]  # type: ignore[assignment]
            return value
        # Loading under the lock makes parallel scanners wait for one load
        # instead of each reading a large database.
        loaded = load(path)
        _cache[key] = (stamp, loaded)
        return loaded


def load_config(environ: Mapping[str, str] | None = None) -> DepsConfig:
    """Build the configuration from environment variables (``os.environ`` by default)."""
    environ = os.environ if environ is None else environ
    errors: list[str] = []

    osv: OsvDatabase | None = None
    osv_path = environ.get(OSV_DB_VARIABLE, "").strip()
    if osv_path:
        try:
            osv = _cached("osv", Path(osv_path), load_osv_database)
        except (OSError, OsvDatabaseError) as exc:
            errors.append(f"{OSV_DB_VARIABLE}={osv_path}: {exc}")

    names: ExposedNames | None = None
    internal_path = environ.get(INTERNAL_PACKAGES_VARIABLE, "").strip()
    public_path = environ.get(PUBLIC_INDEX_VARIABLE, "").strip()
    if internal_path and public_path:
        try:
            internal = _cached("internal", Path(internal_path), load_name_list)
            public = _cached("public", Path(public_path), load_index_snapshot)
            names = ExposedNames(internal, public, public_path)
        except (OSError, NameListError) as exc:
            errors.append(f"{INTERNAL_PACKAGES_VARIABLE}/{PUBLIC_INDEX_VARIABLE}: {exc}")
    elif internal_path or public_path:
        missing = PUBLIC_INDEX_VARIABLE if internal_path else INTERNAL_PACKAGES_VARIABLE
        errors.append(f"{missing} is not set, so internal names cannot be checked")

    for error in errors:
        # Every scanner loads the configuration, so each problem is logged once.
        if error not in _warned:
            _warned.add(error)
            logger.warning("dependency check configuration: %s", error)
    return DepsConfig(osv=osv, names=names, errors=tuple(errors))


def clear_cache() -> None:
    """Forget every loaded database, so the next load reads the files again."""
    with _lock:
        _cache.clear()
