"""Scanners for dependency sets: requirements files and lock files.

The registry routes files to these scanners by name (``requirements*.txt``,
``requirements*.in``, ``constraints*.txt``, ``pylock*.toml``, ``uv.lock``,
``poetry.lock``, ``Pipfile.lock``, ``environment.yml``), in addition to the
scanner chosen from the bytes. Each file is read whole, up to 32 MiB, and
parsed without installing or fetching anything.

Optional data sources come from environment variables read when a scanner is
created (see :mod:`attestgate.deps.config`): ``ATTESTGATE_OSV_DB`` for
known-vulnerable and known-malicious releases, and
``ATTESTGATE_INTERNAL_PACKAGES`` with ``ATTESTGATE_PUBLIC_INDEX_SNAPSHOT``
for internal names that a public index also serves.
"""

from __future__ import annotations

import logging
from typing import Any

from attestgate.deps.assess import (
    assess_lock,
    assess_requirements,
    dependency_facts,
    requirement_sources,
    requirements_kind,
)
from attestgate.deps.checks import check_configuration, check_malformed
from attestgate.deps.conda import parse_environment
from attestgate.deps.config import load_config
from attestgate.deps.lockfiles import PARSERS, LockFileError, lock_kind
from attestgate.deps.model import MAX_DEPS_FILE_BYTES
from attestgate.deps.requirements import decode_requirements, parse_requirements_text
from attestgate.findings import Finding, Severity
from attestgate.scanners import base_name
from attestgate.scanners.interface import ReadAt, Scanner, ScanResult

logger = logging.getLogger(__name__)


class _WholeFileScanner(Scanner):
    """Keeps a dependency file's bytes, up to the size bound, for parsing at close."""

    check = "deps"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parts: list[bytes] = []
        self._size = 0
        self.config = load_config()

    def feed(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        if self._size <= MAX_DEPS_FILE_BYTES:
            self._parts.append(bytes(chunk))

    @property
    def name(self) -> str:
        return base_name(self.ctx.file)

    def _too_large(self) -> ScanResult | None:
        if self._size <= MAX_DEPS_FILE_BYTES:
            return None
        finding = self.finding(
            "deps.too-large",
            Severity.MEDIUM,
            f"{self.name} is {self._size} bytes, over the {MAX_DEPS_FILE_BYTES}-byte bound "
            "for dependency files, so its entries were not checked",
            "Split the dependency set into smaller files, or review this one by hand.",
            size=self._size,
        )
        return ScanResult(findings=[finding])


class RequirementsScanner(_WholeFileScanner):
    """Checks a pip requirements or constraints file."""

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        too_large = self._too_large()
        if too_large is not None:
            return too_large
        text, valid = decode_requirements(b"".join(self._parts))
        parsed = parse_requirements_text(text, self.ctx.file)
        kind = requirements_kind(self.name)
        findings: list[Finding] = []
        if not valid:
            findings += check_malformed(
                ["the file is not valid UTF-8, so invalid bytes were replaced"],
                self.finding,
                self.name,
            )
        findings += assess_requirements(
            parsed, kind, self.finding, self.config, self.name, expired=self.ctx.expired
        )
        entries = parsed.requirements + parsed.constraints
        facts = dependency_facts(kind, entries, requirement_sources(parsed))
        logger.debug("%s: %d requirements, %d findings", self.ctx.file, len(entries), len(findings))
        return ScanResult(findings=findings, facts={"dependencies": facts})


class LockFileScanner(_WholeFileScanner):
    """Checks a lock file or a conda environment file."""

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        too_large = self._too_large()
        if too_large is not None:
            return too_large
        kind = lock_kind(self.name)
        if kind is None:
            logger.debug("%s is not a lock file name this scanner knows", self.ctx.file)
            return ScanResult()
        parser = PARSERS.get(kind, parse_environment)
        try:
            lock = parser(b"".join(self._parts), self.ctx.file)
        except LockFileError as exc:
            findings = check_configuration(self.config, self.finding)
            findings += check_malformed([f"{kind}: {exc}"], self.finding, self.name)
            return ScanResult(findings=findings, facts={"dependencies": {"kind": kind}})
        findings = assess_lock(lock, self.finding, self.config, self.name, expired=self.ctx.expired)
        entries = lock.entries.dependencies
        facts = dependency_facts(kind, entries, lock.entries.indexes)
        logger.debug(
            "%s: %d locked packages, %d findings", self.ctx.file, len(entries), len(findings)
        )
        return ScanResult(findings=findings, facts={"dependencies": facts})
