"""The local-directory content store: copy with hashing, publish by rename."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from attestgate.errors import StorageError

logger = logging.getLogger(__name__)

STORE_DIR = "store"
TMP_DIR = ".tmp"
ARTIFACT_DIR = "artifact"
MANIFEST_FILE = "manifest.json"
RECORD_FILE = "record.json"
COPY_CHUNK = 1024 * 1024
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class StoreError(StorageError):
    """A store could not copy, verify or publish an artifact."""


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str


def store_root(home: Path) -> Path:
    return home / STORE_DIR


def parse_digest(text: str) -> str:
    """Return the hex digest in ``sha256:<hex>`` or ``<hex>``; raise StoreError otherwise."""
    hex_digest = text.removeprefix("sha256:").lower()
    if not DIGEST_RE.match(hex_digest):
        raise StoreError(
            f"invalid digest {text!r}",
            hint="pass sha256: followed by 64 lowercase hexadecimal digits",
        )
    return hex_digest


def safe_relative(path: str) -> PurePosixPath:
    """Return ``path`` as a relative path that stays inside the store entry."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise StoreError(
            f"manifest path {path!r} is not a plain relative path",
            hint="the decision record is damaged; admit the artifact again",
        )
    return rel


def copy_hashed(source: Path, target: Path, expected: ManifestFile) -> None:
    """Copy ``source`` to ``target`` while hashing, and check size and SHA-256.

    A symbolic link is followed, as the scan followed it, but only to a
    regular file: ``O_NONBLOCK`` keeps a FIFO swapped in after the scan from
    blocking the open. The digest comparison rejects any other swapped content.
    """
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise StoreError(
            f"{source} could not be opened for promotion: {exc.strerror or exc}",
            hint="the artifact changed or moved after it was scanned; admit it again",
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(
            f"{source} is no longer a regular file",
            hint="the artifact changed after it was scanned; admit it again",
        )
    with os.fdopen(fd, "rb") as src, open(target, "xb") as dst:
        while chunk := src.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    if size != expected.size or digest.hexdigest() != expected.sha256:
        raise StoreError(
            f"{source} changed after it was scanned: expected {expected.size} bytes with "
            f"sha256 {expected.sha256}, copied {size} bytes with sha256 {digest.hexdigest()}",
            hint="admit the artifact again so that the bytes promoted are the bytes scanned",
        )


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    """One store (``trusted`` or ``quarantine``) under ``HOME/store``."""

    def __init__(self, home: Path, name: str) -> None:
        if name not in ("trusted", "quarantine"):
            raise ValueError(f"unknown store {name!r}")
        self.name = name
        self.root = store_root(home) / name / "sha256"
        self.tmp = store_root(home) / TMP_DIR

    def entry(self, digest: str) -> Path:
        hex_digest = parse_digest(digest)
        return self.root / hex_digest[:2] / hex_digest

    def contains(self, digest: str) -> bool:
        return (self.entry(digest) / MANIFEST_FILE).is_file()

    def stage(self, source: Path, kind: str, files: list[ManifestFile]) -> Path:
        """Copy the manifest's files from ``source`` into a new temporary directory.

        Return the temporary directory, which contains ``artifact/`` and
        ``manifest.json``. On any error the temporary directory is removed.
        """
        self.tmp.mkdir(parents=True, exist_ok=True)
        work = self.tmp / f"{self.name}-{os.getpid()}-{uuid.uuid4().hex}"
        work.mkdir()
        try:
            for item in files:
                rel = safe_relative(item.path)
                origin = source if kind == "file" else source.joinpath(*rel.parts)
                copy_hashed(origin, work / ARTIFACT_DIR / Path(*rel.parts), item)
            manifest = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]
            write_json(work / MANIFEST_FILE, {"kind": kind, "files": manifest})
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return work

    def publish(self, work: Path, digest: str) -> bool:
        """Rename the staged directory ``work`` to the digest's entry.

        Return False, and remove ``work``, when the entry already exists: the
        content is addressed by its digest, so the existing entry is the same.
        """
        target = self.entry(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_dir(work)
        try:
            os.rename(work, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                shutil.rmtree(work, ignore_errors=True)
                raise StoreError(
                    f"{self.name} store entry {target} could not be published: "
                    f"{exc.strerror or exc}",
                    hint="check free disk space and permissions on the state directory",
                ) from exc
            shutil.rmtree(work, ignore_errors=True)
            return False
        _fsync_dir(target.parent)
        logger.info("published %s in the %s store", digest, self.name)
        return True

    @staticmethod
    def discard(work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)

    def remove(self, digest: str) -> bool:
        """Remove the digest's entry: rename it into ``.tmp`` first, then delete it."""
        target = self.entry(digest)
        if not target.exists():
            return False
        self.tmp.mkdir(parents=True, exist_ok=True)
        doomed = self.tmp / f"removed-{os.getpid()}-{uuid.uuid4().hex}"
        os.rename(target, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def digests(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for prefix in sorted(self.root.iterdir()):
            for entry in sorted(prefix.iterdir()):
                if DIGEST_RE.match(entry.name) and (entry / MANIFEST_FILE).is_file():
                    yield entry.name

    def read_record(self, digest: str) -> dict[str, Any] | None:
        path = self.entry(digest) / RECORD_FILE
        try:
            value: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        return value

    def missing_files(self, digest: str) -> list[str]:
        """Return the manifest paths whose stored file is missing or has another size."""
        base = self.entry(digest) / ARTIFACT_DIR
        manifest = json.loads((self.entry(digest) / MANIFEST_FILE).read_text("utf-8"))
        missing = []
        for item in manifest["files"]:
            path = base.joinpath(*safe_relative(str(item["path"])).parts)
            try:
                info = path.lstat()
            except OSError:
                missing.append(str(item["path"]))
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_size != item["size"]:
                missing.append(str(item["path"]))
        return missing

    def artifact_path(self, digest: str) -> Path:
        """Return the stored copy: the file of a single-file artifact, else the directory."""
        base = self.entry(digest) / ARTIFACT_DIR
        manifest = json.loads((self.entry(digest) / MANIFEST_FILE).read_text("utf-8"))
        paths: list[str] = [str(f["path"]) for f in manifest["files"]]
        kind = manifest.get("kind", "directory")
        if kind == "file" and len(paths) == 1:
            return base.joinpath(*safe_relative(paths[0]).parts)
        return base


def _owner_alive(name: str) -> bool:
    """Return whether the process whose id is in a temporary directory's name still runs."""
    parts = name.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsck(home: Path) -> list[Path]:
    """Remove promotions that never finished (temporary directories); return what was removed.

    A crash leaves only such directories behind, never a partial entry. Each
    directory's name carries the id of the process that made it, and the
    directories of processes that still run are kept.
    NOTE: a process id reused by an unrelated process keeps its directory
    until the next check after that process ends.
    """
    tmp = store_root(home) / TMP_DIR
    removed: list[Path] = []
    if not tmp.is_dir():
        return removed
    for child in sorted(tmp.iterdir()):
        if _owner_alive(child.name):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
        logger.warning("removed unfinished promotion %s", child)
    return removed
