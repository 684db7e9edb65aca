"""Deterministic zip, tar and 7z writers: fixed timestamps, owners and member order."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

# 2024-01-01 00:00:00 UTC, the timestamp of every member the corpus writes.
EPOCH = 1_704_067_200
ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def zip_bytes(members: Mapping[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Return a zip archive with ``members`` in the given order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def write_zip(
    path: Path, members: Mapping[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes(members, compression=compression))
    return path


def tar_gz_bytes(members: Mapping[str, bytes]) -> bytes:
    """Return a gzip-compressed tar archive of regular files with fixed metadata."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = EPOCH
            info.mode = 0o644
            info.uname = info.gname = "corpus"
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def write_tar_gz(path: Path, members: Mapping[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_gz_bytes(members))
    return path


def write_7z(path: Path, members: Mapping[str, bytes]) -> Path:
    """Write a 7z archive (LZMA2) with py7zr.

    py7zr stamps members added from memory with the current time, so each
    member is written to a temporary file with the fixed timestamp first.
    """
    import py7zr

    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="attestgate-7z-") as scratch,
        py7zr.SevenZipFile(path, "w") as archive,
    ):
        for index, (name, data) in enumerate(members.items()):
            source = Path(scratch) / str(index)
            source.write_bytes(data)
            os.utime(source, (EPOCH, EPOCH))
            archive.write(source, name)
    return path
