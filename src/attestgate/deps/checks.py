"""Checks that turn dependency entries into findings.

Each function takes the entries of one file and a finding factory (a
scanner's ``finding`` method, or :func:`finding_factory` outside a scanner)
and returns findings. A problem that a reviewer fixes once for the whole
file (unpinned requirements, missing hashes, malformed lines) gives one
finding that lists the entries. A problem that needs a decision per entry
(a direct URL, a typosquat, an advisory) gives one finding per entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from attestgate.deps.config import DepsConfig
from attestgate.deps.model import (
    MAX_LISTED,
    Dependency,
    SourceKind,
    canonical_index,
    is_full_commit,
    is_plain_http,
    listed,
    redact_url,
)
from attestgate.deps.osv import Advisory, OsvDatabase
from attestgate.deps.typosquat import typosquat_target
from attestgate.findings import Finding, Severity

CHECK = "deps"


class FindingFactory(Protocol):
    """The signature of :meth:`attestgate.scanners.interface.Scanner.finding`."""

    def __call__(
        self,
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        file: str | None = None,
        **details: Any,
    ) -> Finding: ...


def finding_factory(file: str) -> FindingFactory:
    """Return a factory for findings located in ``file``, for use outside a scanner."""
    default_file = file

    def make(
        rule: str,
        severity: Severity,
        message: str,
        remediation: str,
        *,
        offset: int | None = None,
        file: str | None = None,
        **details: Any,
    ) -> Finding:
        return Finding(
            rule=rule,
            severity=severity,
            file=default_file if file is None else file,
            message=message,
            remediation=remediation,
            check=CHECK,
            offset=offset,
            details=details,
        )

    return make


def _entries(dependencies: Iterable[Dependency]) -> list[dict[str, object]]:
    return [d.to_json() for d in list(dependencies)[:MAX_LISTED]]


def check_unpinned(
    dependencies: list[Dependency], make: FindingFactory, severity: Severity
) -> list[Finding]:
    """Report index requirements that do not pin exactly one version."""
    loose = [d for d in dependencies if d.source is SourceKind.INDEX and not d.pinned]
    if not loose:
        return []
    labels = [f"{d.display_name}{d.specifier}" if d.specifier else d.display_name for d in loose]
    return [
        make(
            "deps.unpinned",
            severity,
            f"{len(loose)} requirement(s) do not pin one version ({listed(labels)}), so "
            "each install can resolve to a different release, including one published "
            "after this review",
            "Pin every requirement to one version with == and record its hashes, for "
            "example with `pip-compile --generate-hashes` or `uv pip compile "
            "--generate-hashes`, and admit the compiled file.",
            count=len(loose),
            requirements=_entries(loose),
        )
    ]


def check_missing_hashes(
    dependencies: list[Dependency], make: FindingFactory, severity: Severity, reason: str
) -> list[Finding]:
    """Report pinned index entries that carry no hash.

    Direct URLs are left to :func:`check_direct_sources`, whose message
    states whether a hash is recorded. ``reason`` completes the message with why
    hashes are expected here.
    """
    pinned = [d for d in dependencies if d.source is SourceKind.INDEX and d.pinned]
    missing = [d for d in pinned if not d.hashes]
    if not missing:
        return []
    return [
        make(
            "deps.missing-hash",
            severity,
            f"{len(missing)} of {len(pinned)} pinned entries have no hash "
            f"({listed([d.label for d in missing])}); {reason}",
            "Record a sha256 hash for every file, for example with `pip-compile "
            "--generate-hashes` or `uv pip compile --generate-hashes`, so that an "
            "index or mirror serving altered files for the same version is detected.",
            count=len(missing),
            requirements=_entries(missing),
        )
    ]


def check_direct_sources(dependencies: list[Dependency], make: FindingFactory) -> list[Finding]:
    """Report URL, VCS and local-path entries, one finding each."""
    findings: list[Finding] = []
    for dependency in dependencies:
        if dependency.source is SourceKind.VCS:
            findings.append(_vcs_finding(dependency, make))
        elif dependency.source is SourceKind.URL:
            findings.append(_url_finding(dependency, make))
        elif dependency.source is SourceKind.PATH:
            findings.append(_path_finding(dependency, make))
    return findings


def _where(dependency: Dependency) -> dict[str, Any]:
    # The entry's own file locates the finding, which matters when a tree of
    # requirements files is checked at once.
    return {"requirement": dependency.to_json(), "file": dependency.origin or None}


def _vcs_finding(dependency: Dependency, make: FindingFactory) -> Finding:
    url = redact_url(dependency.url)
    name = dependency.display_name or url
    insecure = is_plain_http(dependency.url)
    pinned = is_full_commit(dependency.revision)
    problems = []
    if insecure:
        problems.append("it is fetched without TLS, so anyone on the network path can alter it")
    if not pinned:
        revision = dependency.revision or "the default branch"
        problems.append(
            f"it checks out {revision}, which is not a full commit id and can move "
            "to different code at any time"
        )
    message = f"{name} is installed from the repository {url}"
    if problems:
        message += "; " + " and ".join(problems)
    else:
        message += f" at commit {dependency.revision}"
    return make(
        "deps.vcs-requirement",
        Severity.HIGH if problems else Severity.MEDIUM,
        message,
        "Install a released version from the package index with a pinned version and "
        "hash. If the repository is needed, reference it over https or ssh at a full "
        "40-character commit id and review that commit.",
        **_where(dependency),
    )


def _url_finding(dependency: Dependency, make: FindingFactory) -> Finding:
    url = redact_url(dependency.url)
    name = dependency.display_name or url
    if is_plain_http(dependency.url):
        return make(
            "deps.direct-url",
            Severity.HIGH,
            f"{name} is downloaded from {url} over plain HTTP, so anyone on the network "
            "path can replace the archive",
            "Download it over https and record its sha256 hash, or install the released "
            "version from the package index.",
            **_where(dependency),
        )
    hashed = " with a recorded hash" if dependency.hashes else " without a recorded hash"
    return make(
        "deps.direct-url",
        Severity.MEDIUM,
        f"{name} is downloaded from the direct URL {url}{hashed}, outside the package "
        "index and its release history",
        "Install the released version from the package index instead, or review the "
        "archive at that URL and pin its sha256 hash.",
        **_where(dependency),
    )


def _path_finding(dependency: Dependency, make: FindingFactory) -> Finding:
    subject = dependency.display_name or "a requirement"
    mode = "an editable install of" if dependency.editable else "installed from"
    return make(
        "deps.direct-url",
        Severity.MEDIUM,
        f"{subject} is {mode} the local path {dependency.url}, so whatever sits at that "
        "path on the installing machine is installed, not a reviewed release",
        "Build the package, publish it to the package index you trust and pin its "
        "version and hash, or admit the local sources together with this file.",
        **_where(dependency),
    )


def check_indexes(
    sources: list[str], make: FindingFactory, what: str, *, locked: bool = False
) -> list[Finding]:
    """Report more than one package source; ``what`` names the file for the message.

    ``locked`` marks sources that a lock file recorded per package, rather
    than sources that an installer will search.
    """
    distinct = list(dict.fromkeys(canonical_index(s) for s in sources if s))
    if len(distinct) <= 1:
        return []
    shown = [redact_url(s) for s in distinct]
    if locked:
        effect = (
            f"{what} locks packages from {len(distinct)} package sources ({listed(shown)}); "
            "a resolver that searched them together takes the highest version on any of "
            "them, so a public package that takes an internal name can be locked in place "
            "of the internal one (dependency confusion)"
        )
    else:
        effect = (
            f"{what} uses {len(distinct)} package sources ({listed(shown)}); pip installs "
            "the highest version found on any of them, so a public package that takes an "
            "internal name wins (dependency confusion)"
        )
    return [
        make(
            "deps.multiple-indexes",
            Severity.HIGH,
            effect,
            "Install from one index that serves every package: remove "
            "--extra-index-url and extra find-links, and let a proxy resolve internal "
            "names only from the internal repository. Pin every package with --hash.",
            indexes=shown[:MAX_LISTED],
        )
    ]


def check_insecure_sources(
    sources: list[str], unverified: list[str], make: FindingFactory
) -> list[Finding]:
    """Report sources reached over plain HTTP or with TLS verification turned off."""
    findings: list[Finding] = []
    insecure = [s for s in sources if is_plain_http(s)] + unverified
    for source in dict.fromkeys(canonical_index(s) for s in insecure if s):
        shown = redact_url(source)
        findings.append(
            make(
                "deps.insecure-index",
                Severity.HIGH,
                f"packages are fetched from {shown} without TLS verification (plain HTTP "
                "or verification turned off), so anyone on the network path can serve "
                "altered packages",
                "Serve the source over https with a valid certificate and turn "
                "certificate verification back on.",
                index=shown,
            )
        )
    return findings


def check_names(
    dependencies: list[Dependency],
    make: FindingFactory,
    config: DepsConfig,
    *,
    report_unchecked: bool = True,
    expired: Callable[[], bool] | None = None,
) -> list[Finding]:
    """Report typosquats, exposed internal names and OSV advisories.

    With ``report_unchecked``, unpinned names that have advisories get one
    LOW finding saying that their versions cannot be checked. When
    ``expired`` returns true, the remaining entries are skipped and reported.
    """
    findings: list[Finding] = []
    seen_names: set[str] = set()
    seen_versions: set[tuple[str, str | None]] = set()
    unchecked: dict[str, int] = {}
    for position, dependency in enumerate(dependencies):
        if expired is not None and position % 256 == 0 and expired():
            findings.append(_incomplete_finding(len(dependencies) - position, make))
            break
        name = dependency.name
        if not name:
            continue
        if name not in seen_names:
            seen_names.add(name)
            findings.extend(_name_findings(dependency, make, config))
        if config.osv is None or dependency.ecosystem != "PyPI":
            continue
        key = (name, dependency.version)
        if key in seen_versions:
            continue
        seen_versions.add(key)
        if dependency.version is None:
            found, count = _unpinned_advisories(dependency, make, config.osv)
            findings.extend(found)
            if count:
                unchecked[dependency.display_name or name] = count
        else:
            findings.extend(_advisory_findings(dependency, make, config.osv))
    if unchecked and report_unchecked:
        findings.append(_unchecked_finding(unchecked, make))
    return findings


def _name_findings(
    dependency: Dependency, make: FindingFactory, config: DepsConfig
) -> list[Finding]:
    findings: list[Finding] = []
    shown = dependency.display_name or dependency.name
    target = typosquat_target(dependency.name)
    if target is not None:
        findings.append(
            make(
                "deps.typosquat",
                Severity.HIGH,
                f"{shown} differs from the popular package {target} by a typing slip or "
                "a look-alike character and is not a known legitimate project, so it is "
                "likely a typosquat",
                f"Check that {shown} is the package you meant. If you meant {target}, "
                "correct the name; if it is a legitimate project, record an exception "
                "for this rule with the reason.",
                imitates=target,
                **_where(dependency),
            )
        )
    if config.names is not None and config.names.exposed(dependency.name):
        findings.append(_exposed_finding(dependency, shown, make, config.names.public_source))
    return findings


def _exposed_finding(
    dependency: Dependency, shown: str, make: FindingFactory, source: str
) -> Finding:
    remediation = (
        "Install internal packages only from the internal index with a single "
        "--index-url and pinned hashes, and claim the name on the public index "
        "or move internal packages under a reserved prefix."
    )
    if dependency.pinned and dependency.hashes:
        # pip and uv install a hash-pinned entry only when the downloaded file
        # has one of the listed hashes, so a public upload cannot replace it.
        return make(
            "deps.internal-name-public",
            Severity.LOW,
            f"{shown} is an internal package name that also exists on the public index "
            f"(snapshot {source}); it is pinned to {dependency.version} with hashes, so an "
            "installer cannot substitute the public release",
            remediation,
            **_where(dependency),
        )
    return make(
        "deps.internal-name-public",
        Severity.HIGH,
        f"{shown} is an internal package name that also exists on the public "
        f"index (snapshot {source}), so an installer that can "
        "see the public index may install the public release (dependency confusion)",
        remediation,
        **_where(dependency),
    )


def _ids(advisories: list[Advisory]) -> list[str]:
    return sorted({a.id for a in advisories})


def _advisory_findings(
    dependency: Dependency, make: FindingFactory, osv: OsvDatabase
) -> list[Finding]:
    affecting = osv.affecting(dependency.name, dependency.version or "")
    malicious = [a for a in affecting if a.malicious]
    vulnerable = [a for a in affecting if not a.malicious]
    findings: list[Finding] = []
    if malicious:
        findings.append(_malicious_finding(dependency, malicious, make))
    if vulnerable:
        ids = _ids(vulnerable)
        summary = next((a.summary for a in vulnerable if a.summary), "")
        findings.append(
            make(
                "deps.known-vulnerable",
                Severity.HIGH,
                f"{dependency.label} is affected by {listed(ids)}"
                + (f" ({summary})" if summary else ""),
                f"Upgrade {dependency.display_name or dependency.name} to a release that "
                "the advisories list as fixed, then regenerate the pinned file and its "
                "hashes.",
                advisories=ids[:MAX_LISTED],
                aliases=sorted({alias for a in vulnerable for alias in a.aliases})[:MAX_LISTED],
                **_where(dependency),
            )
        )
    return findings


def _malicious_finding(
    dependency: Dependency, advisories: list[Advisory], make: FindingFactory
) -> Finding:
    ids = _ids(advisories)
    return make(
        "deps.known-malicious",
        Severity.CRITICAL,
        f"{dependency.label} is a known malicious package ({listed(ids)})",
        f"Remove {dependency.display_name or dependency.name} from the dependency set. "
        "Treat any machine that installed it as compromised and rotate the credentials "
        "it could reach.",
        advisories=ids[:MAX_LISTED],
        **_where(dependency),
    )


def _unpinned_advisories(
    dependency: Dependency, make: FindingFactory, osv: OsvDatabase
) -> tuple[list[Finding], int]:
    advisories = osv.advisories(dependency.name)
    # A package whose every release is malicious is reported whatever the
    # version; other advisories need a version to match.
    every_release = [a for a in advisories if a.malicious and a.all_versions]
    if every_release:
        return [_malicious_finding(dependency, every_release, make)], 0
    return [], len(advisories)


def _incomplete_finding(remaining: int, make: FindingFactory) -> Finding:
    return make(
        "deps.check-incomplete",
        Severity.MEDIUM,
        f"the time budget ran out before {remaining} entries were checked against the "
        "typosquat list, the internal names and the OSV database",
        "Scan the file again with a larger time budget, or split the dependency set.",
        remaining=remaining,
    )


def _unchecked_finding(unchecked: dict[str, int], make: FindingFactory) -> Finding:
    names = [f"{name} ({count})" for name, count in unchecked.items()]
    return make(
        "deps.vulnerability-unchecked",
        Severity.LOW,
        f"the OSV database lists advisories for {listed(names)}, but their versions are "
        "not pinned, so the gate cannot check whether an affected release will be installed",
        "Pin these packages to exact versions so that the advisories can be checked.",
        advisories_per_package=dict(list(unchecked.items())[:MAX_LISTED]),
    )


def check_configuration(config: DepsConfig, make: FindingFactory) -> list[Finding]:
    """Report configured data sources that could not be loaded."""
    if not config.errors:
        return []
    return [
        make(
            "deps.config-invalid",
            Severity.MEDIUM,
            "the dependency checks were configured with data that could not be loaded, "
            f"so they did not run in full: {'; '.join(config.errors)}",
            "Fix the file that the environment variable names (it must exist and be "
            "readable in the documented format), or unset the variable.",
            errors=list(config.errors),
        )
    ]


def check_malformed(problems: list[str], make: FindingFactory, what: str) -> list[Finding]:
    """Report entries that could not be parsed, in one finding."""
    if not problems:
        return []
    return [
        make(
            "deps.malformed",
            Severity.MEDIUM,
            f"{what} has {len(problems)} part(s) that could not be parsed, so the gate "
            f"cannot tell what they install: {'; '.join(problems[:3])}",
            "Fix or remove the invalid entries so that installers and the gate read the "
            "same dependency set, then scan the file again.",
            problems=problems[:MAX_LISTED],
        )
    ]
