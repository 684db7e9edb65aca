"""List a Hugging Face cache snapshot, following its links into the repository's blob store.

``huggingface_hub`` keeps ``models--OWNER--NAME/blobs/<etag>`` and links each
file of ``snapshots/<commit>/`` to its blob with a relative symbolic link
(``../../blobs/<etag>``). The plain walk rejects those links because they
leave the snapshot folder. This walk follows a link only when its resolved
target is a regular file inside that repository's ``blobs`` folder. Any other
link becomes a finding and is not read, so a tampered cache cannot point the
gate, or a loader, at files elsewhere on the machine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.identify.walk import (
    DIGEST_IGNORED,
    MAX_WALK_DEPTH,
    MAX_WALK_ENTRIES,
    SIGNATURE_FILES,
    Entry,
    WalkResult,
)
from attestgate.intake.identity import intake_finding
from attestgate.intake.references import SNAPSHOT_REPO


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def snapshot_identity(snapshot: Path) -> dict[str, Any]:
    """Describe the repository and commit a cache snapshot folder holds."""
    real = snapshot.resolve()
    repo_folder = real.parent.parent
    match = SNAPSHOT_REPO.match(repo_folder.name)
    kind, encoded = (match.group(1), match.group(2)) if match else ("models", "")
    repo_id = encoded.replace("--", "/", 1)
    refs: list[str] = []
    refs_folder = repo_folder / "refs"
    if refs_folder.is_dir():
        for ref in sorted(refs_folder.rglob("*"))[:256]:
            try:
                if ref.is_file() and ref.read_text("utf-8").strip() == real.name:
                    refs.append(ref.relative_to(refs_folder).as_posix())
            except (OSError, UnicodeDecodeError):
                continue
    return {
        "scheme": "hf",
        "source": "cache",
        "uri": f"hf://{'' if kind == 'models' else kind + '/'}{repo_id}@{real.name}",
        "repo_type": kind.removesuffix("s"),
        "name": repo_id,
        "owner": {"name": repo_id.split("/", 1)[0]},
        "requested": real.name,
        "resolved": real.name,
        "pinned": True,
        "refs": refs,
    }


def walk_snapshot(snapshot: Path) -> WalkResult:
    """List a snapshot's files, each located at its blob; report links that leave the blob store."""
    result = WalkResult()
    real = os.path.realpath(snapshot)
    blobs = os.path.join(os.path.dirname(os.path.dirname(real)), "blobs")
    _walk(Path(real), "", os.path.realpath(blobs), 0, result)
    result.entries.sort(key=lambda e: e.path)
    result.excluded.sort()
    return result


def _ignored(rel: str) -> bool:
    return any(part in DIGEST_IGNORED for part in rel.split("/")) or rel in SIGNATURE_FILES


def _walk(folder: Path, prefix: str, blobs: str, depth: int, result: WalkResult) -> None:
    if depth > MAX_WALK_DEPTH:
        result.findings.append(_limit(prefix or ".", f"nested more than {MAX_WALK_DEPTH} levels"))
        return
    try:
        with os.scandir(folder) as it:
            children = sorted(it, key=lambda d: d.name)
    except OSError as exc:
        result.findings.append(_limit(prefix or ".", f"not listable: {exc.strerror or exc}"))
        return
    for child in children:
        rel = prefix + child.name
        if len(result.entries) + len(result.excluded) >= MAX_WALK_ENTRIES:
            result.findings.append(_limit(rel, f"more than {MAX_WALK_ENTRIES} files"))
            return
        if _ignored(rel):
            result.excluded.append(rel)
            continue
        mode = child.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            _link(child, rel, blobs, result)
        elif stat.S_ISDIR(mode):
            _walk(Path(child.path), rel + "/", blobs, depth + 1, result)
        elif stat.S_ISREG(mode):
            result.entries.append(Entry(rel, Path(child.path)))
        else:
            result.findings.append(_limit(rel, "a FIFO, socket or device"))


def _link(child: os.DirEntry[str], rel: str, blobs: str, result: WalkResult) -> None:
    target = os.path.realpath(child.path)
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        regular = False
    if _inside(target, blobs) and regular:
        result.entries.append(Entry(rel, Path(target)))
        return
    where = "outside the cache's blob store" if not _inside(target, blobs) else "to a non-file"
    result.findings.append(
        intake_finding(
            "intake.cache-link-escape",
            Severity.HIGH,
            rel,
            f"the cache snapshot's link {rel} points {where} (to {os.readlink(child.path)}); "
            "it was not followed, and a loader that follows it reads a file the snapshot "
            "does not vouch for",
            "Delete this snapshot and download the repository again with huggingface_hub; "
            "a cache whose links leave its blob store was tampered with.",
            link=rel,
        )
    )


def _limit(rel: str, problem: str) -> Finding:
    return intake_finding(
        "intake.cache-unreadable",
        Severity.MEDIUM,
        rel,
        f"{rel} in the cache snapshot was not read: {problem}",
        "Download the repository again into a fresh cache folder and admit that snapshot.",
    )
