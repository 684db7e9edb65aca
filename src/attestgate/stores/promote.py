"""Promotion: act on a decision by copying the scanned bytes into a store.

Steps, in this order, so that a crash at any point leaves either no entry or
a complete one, and never an entry without its audit record:

1. Check that the record's per-file digests add up to the artifact digest.
2. Copy every file into a temporary directory, hashing while copying, and
   compare each size and SHA-256 with the record.
3. Append the ``promotion`` audit record.
4. Publish the temporary directory with one ``rename``.
5. For the quarantine store, insert the artifact's row in the quarantine
   queue table, or update the digest's queued row.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from attestgate.audit import AuditLog
from attestgate.storage import db_error
from attestgate.stores.local import (
    RECORD_FILE,
    ContentStore,
    ManifestFile,
    StoreError,
    parse_digest,
    write_json,
)
from attestgate.stores.queue_table import enqueue

logger = logging.getLogger(__name__)

STORE_FOR_DECISION = {"allow": "trusted", "quarantine": "quarantine"}


@dataclass(frozen=True)
class Promotion:
    """The store an artifact was copied into and the sequence number of its audit record."""

    store: str
    digest: str
    path: Path
    created: bool
    audit_seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "digest": f"sha256:{self.digest}",
            "path": str(self.path),
            "created": self.created,
            "audit_seq": self.audit_seq,
        }


def manifest_of(record: dict[str, Any]) -> tuple[Path, str, str, list[ManifestFile]]:
    """Return the source path, kind, digest and files named by a decision record."""
    artifact = record["artifact"]
    kind = artifact.get("kind")
    if kind not in ("file", "directory"):
        raise StoreError(
            f"artifacts of kind {kind!r} cannot be promoted",
            hint="promote a model file or directory; images and references are recorded only",
        )
    digest = parse_digest(artifact["digest"]["sha256"])
    files = [
        ManifestFile(f["path"], int(f["size"]), f["digest"]["sha256"]) for f in artifact["files"]
    ]
    if kind == "file":
        if len(files) != 1 or files[0].sha256 != digest:
            raise StoreError(
                f"record for sha256:{digest} does not describe one file with that digest"
            )
    else:
        outer = hashlib.sha256()
        for item in sorted(files, key=lambda f: f.path):
            outer.update(bytes.fromhex(item.sha256))
        if outer.hexdigest() != digest:
            raise StoreError(
                f"the file digests in the record for sha256:{digest} do not add up to it",
                hint="the decision record is damaged; admit the artifact again",
            )
    return Path(artifact["path"]), kind, digest, files


def promote(
    home: Path,
    record: dict[str, Any],
    store_name: str,
    *,
    source: Path | None = None,
    audit: AuditLog | None = None,
) -> Promotion:
    """Copy the artifact a decision record describes into ``store_name``.

    ``source`` replaces the path in the record, for example the quarantine
    copy when an approved artifact moves to the trusted store.
    """
    path, kind, digest, files = manifest_of(record)
    source = source or path
    store = ContentStore(home, store_name)
    log = audit or AuditLog(home)
    try:
        existed = store.contains(digest)
        work = None if existed else store.stage(source, kind, files)
        try:
            if store_name == "quarantine" and work is not None:
                write_json(work / RECORD_FILE, record)
            entry = log.append(
                "promotion",
                {
                    "store": store_name,
                    "decision_record_id": record["id"],
                    "stage": record.get("stage"),
                    "files": len(files),
                    "size": sum(f.size for f in files),
                    "already_present": existed,
                },
                artifact_digest=f"sha256:{digest}",
            )
        except BaseException:
            if work is not None:
                ContentStore.discard(work)
            raise
        created = store.publish(work, digest) if work is not None else False
        if store_name == "quarantine":
            if not created:
                # A later quarantine decision on the same digest replaces the record.
                write_json(store.entry(digest) / RECORD_FILE, record)
            _enqueue(log, record, entry.seq, entry.created_at)
        return Promotion(store_name, digest, store.entry(digest), created, entry.seq)
    finally:
        if audit is None:
            log.close()


def _enqueue(log: AuditLog, record: dict[str, Any], audit_seq: int, queued_at: str) -> None:
    # A failure here leaves a store entry without its queue row, which
    # attestgate.stores.reconcile.reconcile adds later from the audit log.
    try:
        with log.engine.begin() as conn:
            enqueue(conn, record, audit_seq, queued_at=queued_at)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            f"sha256:{record['artifact']['digest']['sha256']} is in the quarantine store, but "
            f"its quarantine queue row could not be written: {db_error(exc)}",
            hint="run `attestgate quarantine reconcile` once the database is writable",
        ) from exc


def act_on_admission(home: Path, record: dict[str, Any]) -> Promotion | None:
    """Store an admitted artifact as its decision requires; a block stores nothing."""
    store_name = STORE_FOR_DECISION.get(record["decision"])
    if store_name is None:
        logger.info("sha256:%s was blocked; nothing stored", record["artifact"]["digest"]["sha256"])
        return None
    return promote(home, record, store_name)
