"""Parse remote references and recognise local image and hub-cache layouts.

Remote references:

- ``oci://HOST[:PORT]/NAME[:TAG][@sha256:HEX]``: an image or artifact in an OCI
  registry. Without a tag or digest the tag is ``latest``, as with ``docker pull``.
- ``hf://OWNER/NAME[@REVISION]``, ``hf://datasets/OWNER/NAME[@REVISION]``: a
  Hugging Face Hub repository. Without a revision it is ``main``.

``pathlib.Path`` collapses ``//``, so a reference that went through a ``Path``
arrives as ``oci:/HOST/...``. Both spellings are accepted when no local file of
that name exists.

Local layouts, recognised from their contents rather than their names:

- an OCI image layout directory (``oci-layout`` and ``index.json``);
- a ``docker save`` archive, plain or gzip-compressed (``manifest.json``, and
  from Docker 25 on also an OCI layout inside the tar);
- a Hugging Face cache snapshot, ``models--OWNER--NAME/snapshots/COMMIT/``.
"""

from __future__ import annotations

import enum
import gzip
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from attestgate.errors import UsageError
from attestgate.identify.formats import SNIFF_BYTES, Format, sniff

OCI_SCHEME = "oci"
HF_SCHEME = "hf"
DEFAULT_TAG = "latest"
DEFAULT_REVISION = "main"

# The OCI distribution specification's grammar for repository names and tags.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_MAX_REPOSITORY = 255
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
# Hugging Face repository names: letters, digits, ".", "_" and "-", at most 96
# characters, without "--" or ".." (huggingface_hub's validate_repo_id).
_HF_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HF_REVISION = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HF_REPO_TYPES = {"datasets": "dataset", "spaces": "space"}

# First member names that ``docker save`` (every version) and OCI archive
# writers put at the start of the tar.
_ARCHIVE_FIRST_MEMBER = re.compile(
    r"^(?:\./)?(?:blobs(?:/|$)|oci-layout$|index\.json$|manifest\.json$|repositories$|"
    r"[0-9a-f]{64}(?:/|\.json$))"
)
SNAPSHOT_REPO = re.compile(r"^(models|datasets|spaces)--(.+)$")
# Members listed to confirm that an uncompressed tar is an image archive.
_MAX_ARCHIVE_PROBE_MEMBERS = 200_000


@dataclass(frozen=True)
class OciReference:
    """An image or artifact in an OCI registry."""

    registry: str  # host, or host:port
    repository: str
    tag: str | None
    digest: str | None  # "sha256:<hex>"

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    @property
    def host(self) -> str:
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def uri(self) -> str:
        text = f"oci://{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class HfReference:
    """A repository on the Hugging Face Hub at a revision."""

    repo_id: str  # OWNER/NAME
    revision: str
    repo_type: str = "model"  # "model", "dataset" or "space"

    @property
    def owner(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[1]

    @property
    def pinned(self) -> bool:
        return COMMIT.match(self.revision) is not None

    @property
    def uri(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"hf://{prefix}{self.repo_id}@{self.revision}"


Reference = OciReference | HfReference


class LocalKind(enum.StrEnum):
    """A local layout that the intake package reads in place of a plain walk."""

    OCI_LAYOUT = "oci-layout"
    DOCKER_ARCHIVE = "docker-archive"
    HF_CACHE_SNAPSHOT = "hf-cache-snapshot"


def _split_scheme(text: str) -> tuple[str, str] | None:
    for scheme in (OCI_SCHEME, HF_SCHEME):
        for prefix in (f"{scheme}://", f"{scheme}:/"):
            if text.startswith(prefix):
                return scheme, text[len(prefix) :]
    return None


def is_reference(target: str | Path) -> bool:
    """Tell whether ``target`` is an ``oci://`` or ``hf://`` reference, not a local path."""
    text = str(target)
    if _split_scheme(text) is None:
        return False
    # A local file or directory that happens to be named "hf:" wins.
    return not Path(text).exists()


def parse_reference(target: str | Path) -> Reference:
    """Parse an ``oci://`` or ``hf://`` reference; raise UsageError naming the bad part."""
    text = str(target).strip()
    split = _split_scheme(text)
    if split is None:
        raise UsageError(
            f"{text!r} is not an oci:// or hf:// reference",
            hint="write oci://HOST/NAME@sha256:DIGEST or hf://OWNER/NAME@COMMIT",
        )
    scheme, rest = split
    if scheme == OCI_SCHEME:
        return _parse_oci(text, rest)
    return _parse_hf(text, rest)


def _parse_oci(text: str, rest: str) -> OciReference:
    registry, slash, remainder = rest.partition("/")
    if "@" in registry:
        raise UsageError(
            f"reference {text} carries credentials in its host part",
            hint="remove them and log in with `docker login HOST`; the gate reads "
            "~/.docker/config.json",
        )
    if not slash or not _HOST.match(registry):
        raise UsageError(
            f"reference {text} has no valid registry host before the repository name",
            hint="write oci://HOST[:PORT]/NAME[:TAG][@sha256:DIGEST]",
        )
    name, at, digest = remainder.partition("@")
    if at and not _DIGEST.match(digest):
        raise UsageError(
            f"reference {text} has an invalid digest {digest!r}",
            hint="a digest is sha256: followed by 64 lowercase hexadecimal characters",
        )
    repository, tag = name, None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = name.rpartition(":")
        if not _TAG.match(tag):
            raise UsageError(
                f"reference {text} has an invalid tag {tag!r}",
                hint="a tag is up to 128 letters, digits, '_', '.' and '-'",
            )
    if not _REPOSITORY.match(repository) or len(repository) > _MAX_REPOSITORY:
        raise UsageError(
            f"reference {text} has an invalid repository name {repository!r}",
            hint="repository names are lowercase letters, digits and separators "
            "('.', '_', '-', '/')",
        )
    if tag is None and not at:
        tag = DEFAULT_TAG
    return OciReference(registry, repository, tag, digest if at else None)


def _parse_hf(text: str, rest: str) -> HfReference:
    name, at, revision = rest.partition("@")
    parts = name.strip("/").split("/")
    repo_type = "model"
    if len(parts) == 3 and parts[0] in _HF_REPO_TYPES:
        repo_type = _HF_REPO_TYPES[parts[0]]
        parts = parts[1:]
    if len(parts) != 2 or not all(_valid_hf_part(p) for p in parts):
        raise UsageError(
            f"reference {text} does not name a repository as OWNER/NAME",
            hint="write hf://OWNER/NAME@COMMIT; repositories without an owner are "
            "reachable under their owner's name on the Hub",
        )
    if at:
        if not _HF_REVISION.match(revision) or ".." in revision.split("/"):
            raise UsageError(
                f"reference {text} has an invalid revision {revision!r}",
                hint="give a 40-character commit hash, a branch or a tag",
            )
    else:
        revision = DEFAULT_REVISION
    return HfReference("/".join(parts), revision, repo_type)


def _valid_hf_part(part: str) -> bool:
    return bool(_HF_PART.match(part)) and "--" not in part and ".." not in part


def detect_local(path: Path) -> LocalKind | None:
    """Return the image or cache layout ``path`` holds, or None for a plain file or directory."""
    try:
        if path.is_dir():
            return _detect_directory(path)
        if path.is_file():
            return _detect_file(path)
    except OSError:
        # Unreadable paths are left to the plain walk, which reports them.
        return None
    return None


def _detect_directory(path: Path) -> LocalKind | None:
    if (path / "oci-layout").is_file() and (path / "index.json").is_file():
        return LocalKind.OCI_LAYOUT
    snapshot = path.resolve()
    repo_folder = snapshot.parent.parent
    if (
        snapshot.parent.name == "snapshots"
        and COMMIT.match(snapshot.name)
        and SNAPSHOT_REPO.match(repo_folder.name)
        and (repo_folder / "blobs").is_dir()
    ):
        return LocalKind.HF_CACHE_SNAPSHOT
    return None


def _detect_file(path: Path) -> LocalKind | None:
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    fmt = sniff(head, path.stat().st_size, path.name)
    if fmt is Format.TAR:
        return LocalKind.DOCKER_ARCHIVE if _tar_is_image_archive(path) else None
    if fmt is Format.GZIP:
        first = _first_gzip_member_name(path)
        if first is not None and _ARCHIVE_FIRST_MEMBER.match(first):
            return LocalKind.DOCKER_ARCHIVE
    return None


def _tar_is_image_archive(path: Path) -> bool:
    """List an uncompressed tar's member names, which costs one header read per member."""
    names: set[str] = set()
    try:
        from attestgate.intake.layers import BoundedTarInfo, forget_members

        with tarfile.open(path, "r:", tarinfo=BoundedTarInfo) as tar:
            while (member := tar.next()) is not None:
                if not names and not _ARCHIVE_FIRST_MEMBER.match(member.name):
                    return False
                if len(names) >= _MAX_ARCHIVE_PROBE_MEMBERS:
                    break
                names.add(member.name.removeprefix("./"))
                forget_members(tar)
    except (tarfile.TarError, OSError, EOFError):
        return False
    return "manifest.json" in names or {"index.json", "oci-layout"} <= names


def _first_gzip_member_name(path: Path) -> str | None:
    """Return the first member name of a gzip-compressed tar, decompressing only its start."""
    from attestgate.intake.layers import BoundedTarInfo

    try:
        with (
            gzip.open(path, "rb") as fh,
            tarfile.open(fileobj=fh, mode="r|", tarinfo=BoundedTarInfo) as tar,
        ):
            member = tar.next()
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        return None
    return member.name if member is not None else None
