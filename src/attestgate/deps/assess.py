"""Checks and severities for each kind of dependency file.

Severities follow what the file is used for:

- ``requirements*.txt`` is what pip installs. Unpinned entries are MEDIUM.
  A pinned entry without ``--hash`` is MEDIUM when hash-checking mode is on
  (``--require-hashes``, or ``--hash`` on another line), because pip then
  rejects the file. When no line has a hash, the file gets one LOW finding,
  because most real requirements files carry no hashes.
- ``requirements*.in`` (pip-compile input) and ``constraints*.txt`` only
  feed a resolver or narrow one, so unpinned entries are LOW and missing
  hashes are reported only in hash-checking mode.
- Lock files always pin, and every format but conda's records hashes, so a
  missing hash is MEDIUM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attestgate.deps.checks import (
    FindingFactory,
    check_configuration,
    check_direct_sources,
    check_indexes,
    check_insecure_sources,
    check_malformed,
    check_missing_hashes,
    check_names,
    check_unpinned,
)
from attestgate.deps.config import DepsConfig
from attestgate.deps.lockfiles import LockFile
from attestgate.deps.model import (
    MAX_DEPS_ENTRIES,
    MAX_LISTED,
    PYPI_SIMPLE,
    Dependency,
    SourceKind,
    canonical_index,
    redact_url,
    url_scheme,
)
from attestgate.deps.requirements import NestedReference, ParsedRequirements
from attestgate.findings import Finding, Severity

REQUIREMENTS = "requirements"
REQUIREMENTS_INPUT = "requirements-input"
CONSTRAINTS = "constraints"


def requirements_kind(file_name: str) -> str:
    """Return the role of a requirements file from its name."""
    if file_name.startswith("constraints"):
        return CONSTRAINTS
    if file_name.endswith(".in"):
        return REQUIREMENTS_INPUT
    return REQUIREMENTS


def requirement_sources(parsed: ParsedRequirements) -> list[str]:
    """Return the indexes and link pages pip consults for this file.

    Every ``--index-url`` counts, although pip uses only the last one,
    because two of them in one dependency set deserve a review.
    """
    if parsed.no_index:
        return list(parsed.find_links)
    return (parsed.index_urls or [PYPI_SIMPLE]) + parsed.extra_index_urls + parsed.find_links


def _truncated(make: FindingFactory, what: str) -> list[Finding]:
    return [
        make(
            "deps.too-large",
            Severity.MEDIUM,
            f"{what} has more than {MAX_DEPS_ENTRIES} entries; the entries after that "
            "were not checked",
            "Split the dependency set into smaller files, or review the rest by hand.",
        )
    ]


def _nested_findings(references: list[NestedReference], make: FindingFactory) -> list[Finding]:
    findings: list[Finding] = []
    for reference in references[:MAX_LISTED]:
        remote = url_scheme(reference.target) not in {"", "file"}
        option = "-r" if reference.kind == "requirement" else "-c"
        reason = f" ({reference.reason})" if reference.reason else ""
        findings.append(
            make(
                "deps.nested-requirements",
                Severity.MEDIUM if remote else Severity.INFO,
                f"line {reference.line} includes {option} {redact_url(reference.target)}"
                f"{reason}; its requirements are checked only when that file is part of "
                "the artifact and scanned itself",
                "Include the referenced file in the artifact so that it is scanned, or "
                "inline its requirements; the gate never fetches a referenced URL.",
                file=reference.origin or None,
                target=redact_url(reference.target),
                kind=reference.kind,
                line=reference.line,
            )
        )
    return findings


def _trusted_hosts(hosts: list[str], make: FindingFactory, what: str) -> list[Finding]:
    if not hosts:
        return []
    distinct = list(dict.fromkeys(hosts))
    return [
        make(
            "deps.trusted-host",
            Severity.MEDIUM,
            f"{what} marks {', '.join(distinct[:10])} as trusted hosts, which turns off "
            "TLS certificate checks for them, so a machine on the network path can "
            "serve altered packages",
            "Remove --trusted-host and give the index a certificate that verifies.",
            hosts=distinct[:MAX_LISTED],
        )
    ]


def assess_requirements(
    parsed: ParsedRequirements,
    kind: str,
    make: FindingFactory,
    config: DepsConfig,
    what: str,
    *,
    report_configuration: bool = True,
    expired: Callable[[], bool] | None = None,
) -> list[Finding]:
    """Run every requirements-file check; ``what`` names the file in messages."""
    findings = check_configuration(config, make) if report_configuration else []
    problems = [f"line {error.line}: {error.message}" for error in parsed.errors]
    findings += check_malformed(problems, make, what)
    if parsed.truncated:
        findings += _truncated(make, what)
    findings += _nested_findings(parsed.nested, make)

    sources = requirement_sources(parsed)
    findings += check_indexes(sources, make, what)
    findings += check_insecure_sources(sources, [], make)
    findings += _trusted_hosts(parsed.trusted_hosts, make, what)

    installing = kind == REQUIREMENTS
    entries = parsed.requirements
    findings += check_unpinned(entries, make, Severity.MEDIUM if installing else Severity.LOW)
    if parsed.require_hashes or any(d.hashes for d in entries):
        findings += check_missing_hashes(
            entries,
            make,
            Severity.MEDIUM,
            "hash-checking mode is on (--require-hashes, or --hash on other lines), so "
            "pip rejects the file as it stands",
        )
    elif installing:
        findings += check_missing_hashes(
            entries,
            make,
            Severity.LOW,
            "no entry in the file carries one, so altered files served for these "
            "versions would go unnoticed",
        )
    everything = parsed.requirements + parsed.constraints
    findings += check_direct_sources(everything, make)
    findings += check_names(everything, make, config, expired=expired)
    return findings


def assess_lock(
    lock: LockFile,
    make: FindingFactory,
    config: DepsConfig,
    what: str,
    *,
    expired: Callable[[], bool] | None = None,
) -> list[Finding]:
    """Run every lock-file check; ``what`` names the file in messages."""
    entries = lock.entries
    findings = check_configuration(config, make)
    findings += check_malformed(entries.errors, make, what)
    if entries.truncated:
        findings += _truncated(make, what)
    findings += check_indexes(entries.indexes, make, what, locked=True)
    findings += check_insecure_sources(entries.indexes, lock.unverified_sources, make)

    locked = [d for d in entries.dependencies if d.source is not SourceKind.PROJECT]
    findings += check_unpinned(locked, make, Severity.MEDIUM)
    if entries.hashes_expected:
        findings += check_missing_hashes(
            locked,
            make,
            Severity.MEDIUM,
            f"{entries.kind} records a hash for every downloaded file, so a missing one "
            "means the file was edited by hand or locked without hashes",
        )
    findings += check_direct_sources(locked, make)
    findings += check_names(locked, make, config, expired=expired)
    if lock.pip is not None:
        findings += assess_requirements(
            lock.pip,
            REQUIREMENTS,
            make,
            config,
            f"the pip section of {what}",
            report_configuration=False,
            expired=expired,
        )
    return findings


def dependency_facts(
    kind: str, dependencies: list[Dependency], sources: list[str]
) -> dict[str, Any]:
    """Summarize a dependency set for the decision record's facts."""
    return {
        "kind": kind,
        "count": len(dependencies),
        "pinned": sum(1 for d in dependencies if d.pinned),
        "hashed": sum(1 for d in dependencies if d.hashes),
        "direct": sum(
            1 for d in dependencies if d.source in {SourceKind.URL, SourceKind.VCS, SourceKind.PATH}
        ),
        "indexes": [redact_url(s) for s in dict.fromkeys(canonical_index(s) for s in sources if s)][
            :MAX_LISTED
        ],
    }
