"""Check the Python distributions installed in an image against their RECORD files.

pip writes ``<site>/<name>-<version>.dist-info/RECORD`` with the SHA-256 of
every file it installed. After the last layer is applied, for each RECORD
the final image contains:

1. Resolve every row's path against the site folder (``../../../bin/tool``
   for console scripts) and look the file up in the final filesystem.
2. Compare the recorded hash with the hash the gate computed while the layer
   streamed past. Compiled ``.pyc`` files are left out, because
   ``compileall`` rewrites them legitimately.
3. Report changed files as ``deps.record-mismatch``. Files that are missing
   are only counted, because slimmed images delete tests and caches.
4. Check the distribution's name and version with the dependency checks
   (typosquats, internal names, OSV advisories when a database is configured).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from attestgate.deps.checks import check_configuration, check_names, finding_factory
from attestgate.deps.config import load_config
from attestgate.deps.model import MAX_LISTED, Dependency, SourceKind, normalize_name
from attestgate.findings import Finding, Severity
from attestgate.intake.rootfs import FILE, RootFilesystem

MAX_RECORD_BYTES = 16 * 1024 * 1024
# RECORD bytes kept per image while the layers stream past.
MAX_RECORDS_TOTAL_BYTES = 256 * 1024 * 1024
RECORD_PATH = re.compile(
    r"^(?P<site>/.*/(?:site|dist)-packages)/(?P<folder>[^/]+)\.dist-info/RECORD$"
)
# Files the walk hashes so that RECORD rows can be compared: everything under
# a site folder and the console scripts pip writes to a bin folder.
_HASHED_PATH = re.compile(r"/(?:site|dist)-packages/|/bin/[^/]+$")


def needs_digest(path: str) -> bool:
    return _HASHED_PATH.search(path) is not None


@dataclass
class InstalledRecord:
    """A RECORD file read from a layer."""

    path: str
    layer: int
    location: str
    data: bytes


@dataclass
class RecordCollector:
    """Keeps RECORD files as the layers stream past, within a byte bound."""

    records: dict[tuple[int, str], InstalledRecord] = field(default_factory=dict)
    kept_bytes: int = 0
    dropped: int = 0

    def wants(self, path: str, size: int) -> bool:
        return RECORD_PATH.match(path) is not None and size <= MAX_RECORD_BYTES

    def keep(self, path: str, layer: int, location: str, data: bytes) -> None:
        if self.kept_bytes + len(data) > MAX_RECORDS_TOTAL_BYTES:
            self.dropped += 1
            return
        self.kept_bytes += len(data)
        self.records[(layer, path)] = InstalledRecord(path, layer, location, data)


def _rows(data: bytes) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    text = data.decode("utf-8", errors="replace")
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0]:
            rows.append((row[0], row[1]))
    return rows


def _expected_digest(value: str) -> bytes | None:
    algorithm, _, encoded = value.partition("=")
    if algorithm != "sha256" or not encoded:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass
class _Tally:
    checked: int = 0
    missing: int = 0
    unchecked: int = 0
    changed: list[str] = field(default_factory=list)


def _compare(record: InstalledRecord, site: str, fs: RootFilesystem) -> _Tally:
    tally = _Tally()
    for relative, hash_value in _rows(record.data):
        expected = _expected_digest(hash_value)
        if expected is None or relative.endswith(".pyc"):
            continue
        path = posixpath.normpath(relative if relative.startswith("/") else f"{site}/{relative}")
        entry = fs.lookup(path)
        if entry is None:
            tally.missing += 1
        elif entry.kind != FILE or entry.digest is None:
            tally.unchecked += 1
        elif entry.digest != expected:
            tally.changed.append(path)
        else:
            tally.checked += 1
    return tally


def check_installed(
    collector: RecordCollector, fs: RootFilesystem
) -> tuple[list[Finding], dict[str, Any]]:
    """Check every RECORD that the final image still contains; return findings and facts."""
    findings: list[Finding] = []
    distributions: list[dict[str, Any]] = []
    dependencies: list[Dependency] = []
    for (layer, path), record in sorted(collector.records.items(), key=lambda kv: kv[0][1]):
        final = fs.lookup(path)
        if final is None or final.layer != layer:
            continue  # a later layer deleted or replaced this RECORD
        match = RECORD_PATH.match(path)
        if match is None:
            continue
        name, _, version = match.group("folder").rpartition("-")
        tally = _compare(record, match.group("site"), fs)
        if tally.changed:
            findings.append(_mismatch(record, name, version, tally.changed))
        distributions.append(
            {
                "name": name,
                "version": version,
                "record": record.location,
                "files_checked": tally.checked,
                "files_missing": tally.missing,
                "files_changed": len(tally.changed),
            }
        )
        dependencies.append(
            Dependency(
                name=normalize_name(name),
                display_name=name,
                source=SourceKind.INDEX,
                version=version or None,
                origin=record.location.removesuffix("/RECORD"),
            )
        )
    if dependencies:
        config = load_config()
        make = finding_factory(dependencies[0].origin)
        findings += check_configuration(config, make)
        for dependency in dependencies:
            located = finding_factory(dependency.origin)
            findings += check_names([dependency], located, config, report_unchecked=False)
    facts: dict[str, Any] = {"count": len(distributions), "items": distributions[:MAX_LISTED]}
    if collector.dropped:
        facts["records_not_kept"] = collector.dropped
    return findings, facts


def _mismatch(record: InstalledRecord, name: str, version: str, changed: list[str]) -> Finding:
    location = record.location
    return Finding(
        rule="deps.record-mismatch",
        severity=Severity.HIGH,
        file=location,
        message=(
            f"{len(changed)} file(s) of the installed distribution {name} {version} differ "
            f"from the hashes in its RECORD ({', '.join(changed[:3])}), so they were changed "
            "after pip installed them"
        ),
        remediation=(
            "Find the build step that rewrote these files and check what it changed. Rebuild "
            "the image installing the distribution from a verified wheel, without patching "
            "its files afterwards, and admit the new image."
        ),
        check="deps",
        details={"distribution": name, "version": version, "changed": changed[:MAX_LISTED]},
    )
