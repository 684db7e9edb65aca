"""Value types shared by the dependency-set parsers and checks."""

from __future__ import annotations

import enum
import re
import urllib.parse
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

# The index pip uses when a requirements file names none.
PYPI_SIMPLE = "https://pypi.org/simple"

# Bounds for one dependency file. Real lock files of large monorepos stay
# under a few MiB and a few thousand entries.
MAX_DEPS_FILE_BYTES = 32 * 1024 * 1024
MAX_DEPS_ENTRIES = 100_000

# Entries listed in one finding's details and message.
MAX_LISTED = 100
MAX_IN_MESSAGE = 10

_FULL_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


class SourceKind(enum.StrEnum):
    """The kind of source an installer gets a dependency from."""

    INDEX = "index"  # resolved by name and version from a package index
    URL = "url"  # a direct URL to an archive (sdist or wheel)
    VCS = "vcs"  # a version-control repository
    PATH = "path"  # a local file or directory
    PROJECT = "project"  # the locked project itself or a workspace member


@dataclass(frozen=True)
class Dependency:
    """One requirement or locked package.

    ``name`` is the PEP 503 normalized name ("" when a URL or path does not
    reveal it). ``version`` is set only when exactly one version is pinned
    (``==``/``===`` in a requirement, or the version a lock file records).
    ``url`` is the archive URL, VCS URL or path for direct sources and the
    index URL for index sources when the file records it. ``revision`` is the
    VCS revision an installer checks out, which lock files record as a commit.
    """

    name: str
    display_name: str
    source: SourceKind
    version: str | None = None
    specifier: str = ""
    url: str = ""
    revision: str = ""
    hashes: tuple[str, ...] = ()
    editable: bool = False
    marker: str = ""
    line: int | None = None
    origin: str = ""
    ecosystem: str = "PyPI"

    @property
    def pinned(self) -> bool:
        return self.version is not None

    @property
    def label(self) -> str:
        """Name and version as a person would write them, for messages."""
        name = self.display_name or self.name or self.url or "unnamed requirement"
        return f"{name}=={self.version}" if self.version else name

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.display_name or self.name}
        if self.version:
            out["version"] = self.version
        if self.specifier and not self.version:
            out["specifier"] = self.specifier
        if self.url:
            out["url"] = redact_url(self.url)
        if self.line is not None:
            out["line"] = self.line
        if self.origin:
            out["file"] = self.origin
        return out


@dataclass
class DependencySet:
    """The entries of one dependency file and the sources it resolves against.

    ``indexes`` lists the package indexes and link pages an installer
    consults for index entries (as configured in a requirements file, or as
    recorded per entry in a lock file). ``hashes_expected`` is true when the
    format normally records a hash for every index and archive entry.
    """

    kind: str
    dependencies: list[Dependency] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    hashes_expected: bool = True
    errors: list[str] = field(default_factory=list)
    truncated: bool = False


def normalize_name(name: str) -> str:
    """Return the PEP 503 normalized form of a project name."""
    return str(canonicalize_name(name))


def is_full_commit(revision: str) -> bool:
    """Tell whether a VCS revision is a full SHA-1 or SHA-256 commit id."""
    return bool(_FULL_COMMIT.match(revision.lower()))


def redact_url(url: str) -> str:
    """Replace the user and password of a URL with ``***``.

    Index URLs often carry access tokens, which must not reach findings,
    logs or the audit record.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def canonical_index(url: str) -> str:
    """Return an index URL in a form that compares equal for the same index."""
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return text.rstrip("/")
    if not parts.scheme or not parts.netloc:
        return text.rstrip("/")
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    return urllib.parse.urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def url_scheme(url: str) -> str:
    """Return the lowercase scheme of a URL, or "" for a plain path."""
    head, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head):
        return ""
    return head.lower()


def is_plain_http(url: str) -> bool:
    """Tell whether a URL travels without TLS (http, git://, svn://, git+http)."""
    scheme = url_scheme(url)
    transport = scheme.split("+", 1)[-1]
    return transport in {"http", "git", "svn", "ftp"}


def listed(items: list[str]) -> str:
    """Join names for a message, naming the first few and counting the rest."""
    shown = ", ".join(items[:MAX_IN_MESSAGE])
    if len(items) > MAX_IN_MESSAGE:
        shown += f" and {len(items) - MAX_IN_MESSAGE} more"
    return shown
