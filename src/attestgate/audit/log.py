"""An append-only audit log whose records are chained by SHA-256.

Each record stores the hash of the record before it, and its own hash covers
its sequence number, id, time, kind, that previous hash and its body. Editing,
removing or reordering records in the database therefore breaks the chain at
the first record touched. Removing records from the end leaves a valid but
shorter chain, so every append also writes the head (last sequence number and
hash) to a file beside the database, and ``verify`` checks the chain against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from attestgate.errors import StorageError, UsageError
from attestgate.storage import DB_FILE, database_url, db_error, ensure_schema, open_engine

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
HEAD_FILE = "audit.head"

metadata = sa.MetaData()
audit_records = sa.Table(
    "audit_records",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("record_id", sa.String(36), nullable=False, unique=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("artifact_digest", sa.String(80), nullable=True, index=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


def _database_exists(home: Path) -> bool:
    return not database_url(home).startswith("sqlite") or (home / DB_FILE).is_file()


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` the same way on every run, for hashing.

    A lone surrogate (a file name that was not UTF-8) cannot be encoded as
    UTF-8, so it is written as its JSON escape, which reads back as the same
    string.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def record_hash(
    seq: int,
    record_id: str,
    created_at: str,
    kind: str,
    artifact_digest: str | None,
    prev_hash: str,
    body: str,
) -> str:
    """Return the hash that chains a record: every stored column but the hash itself."""
    material = {
        "seq": seq,
        "id": record_id,
        "created_at": created_at,
        "kind": kind,
        "artifact_digest": artifact_digest,
        "prev_hash": prev_hash,
        "body_sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
    }
    return hashlib.sha256(canonical_json(material)).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    record_id: str
    created_at: str
    kind: str
    artifact_digest: str | None
    body: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.record_id,
            "created_at": self.created_at,
            "kind": self.kind,
            "artifact_digest": self.artifact_digest,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "body": self.body,
        }


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    problem: str = ""


class AuditLog:
    """The audit log stored in a state directory (SQLite by default)."""

    def __init__(self, home: Path, *, create: bool = True) -> None:
        """Open the audit log in ``home``; with ``create=False`` it must already exist."""
        self.home = home
        if not create and not _database_exists(home):
            raise UsageError(
                f"no audit log at {home}",
                hint="check --home or ATTESTGATE_HOME; the log is created by the first admission",
            )
        if home.exists() and not home.is_dir():
            raise UsageError(
                f"state directory {home} is not a directory",
                hint="pass a directory with --home or ATTESTGATE_HOME",
            )
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"state directory {home} could not be created: {exc.strerror or exc}",
                hint="pass a writable directory with --home or ATTESTGATE_HOME",
            ) from exc
        self.head_path = home / HEAD_FILE
        # A shared database is written by several replicas, each with its
        # own state directory; one that never appended has no head file.
        self.shared = not database_url(home).startswith("sqlite")
        self.engine = open_engine(home)
        try:
            ensure_schema(self.engine)
        except StorageError:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def append(
        self,
        kind: str,
        body: dict[str, Any],
        artifact_digest: str | None = None,
        record_id: str | None = None,
    ) -> AuditRecord:
        """Append one record and return it once it is committed."""
        record_id = record_id or str(uuid.uuid4())
        created_at = datetime.now(UTC).isoformat(timespec="microseconds")
        body_text = canonical_json(body).decode("utf-8")
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Serialise appenders so that two replicas cannot both
                    # extend the same head; SQLite's BEGIN IMMEDIATE does this
                    # for the embedded database.
                    conn.execute(sa.text("LOCK TABLE audit_records IN EXCLUSIVE MODE"))
                last = conn.execute(
                    sa.select(audit_records.c.seq, audit_records.c.hash)
                    .order_by(audit_records.c.seq.desc())
                    .limit(1)
                ).first()
                seq = 1 if last is None else last.seq + 1
                prev_hash = GENESIS if last is None else last.hash
                digest = record_hash(
                    seq, record_id, created_at, kind, artifact_digest, prev_hash, body_text
                )
                conn.execute(
                    audit_records.insert().values(
                        seq=seq,
                        record_id=record_id,
                        created_at=created_at,
                        kind=kind,
                        artifact_digest=artifact_digest,
                        body=body_text,
                        prev_hash=prev_hash,
                        hash=digest,
                    )
                )
                # Written while the write lock is held, so heads never go backwards.
                self._write_head(seq, digest)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"audit record could not be appended in {self.home}: {db_error(exc)}",
                hint="check free disk space and that no other program holds the database",
            ) from exc
        logger.debug("appended audit record %s (seq %d, kind %s)", record_id, seq, kind)
        return AuditRecord(
            seq, record_id, created_at, kind, artifact_digest, body, prev_hash, digest
        )

    def _write_head(self, seq: int, digest: str) -> None:
        data = json.dumps({"seq": seq, "hash": digest}).encode()
        fd, tmp = tempfile.mkstemp(prefix=".audit.head.", dir=self.home)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.head_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read_head(self) -> tuple[int, str] | None:
        try:
            data = json.loads(self.head_path.read_text("utf-8"))
            return int(data["seq"]), str(data["hash"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return (-1, "")

    def _rows(self, limit: int | None = None, newest_first: bool = False) -> Iterator[Any]:
        order = audit_records.c.seq.desc() if newest_first else audit_records.c.seq.asc()
        query = sa.select(audit_records).order_by(order)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            yield from conn.execute(query)

    def records(
        self,
        limit: int | None = None,
        newest_first: bool = False,
        artifact_digest: str | None = None,
    ) -> list[AuditRecord]:
        order = audit_records.c.seq.desc() if newest_first else audit_records.c.seq.asc()
        query = sa.select(audit_records).order_by(order)
        if artifact_digest is not None:
            query = query.where(audit_records.c.artifact_digest == artifact_digest)
        if limit is not None:
            query = query.limit(limit)
        return self._to_records(query)

    def _to_records(self, query: Any) -> list[AuditRecord]:
        out = []
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        for row in rows:
            try:
                body = json.loads(row.body)
            except ValueError:
                body = {"unparseable_body": row.body[:200]}
            out.append(
                AuditRecord(
                    row.seq,
                    row.record_id,
                    row.created_at,
                    row.kind,
                    row.artifact_digest,
                    body,
                    row.prev_hash,
                    row.hash,
                )
            )
        return out

    def get(self, record_id: str) -> AuditRecord | None:
        """Return the record with ``record_id``, or None."""
        for record in self._to_records(
            sa.select(audit_records).where(audit_records.c.record_id == record_id)
        ):
            return record
        return None

    def verify(self, expect_head: tuple[int, str] | None = None) -> VerifyResult:
        """Walk the chain from the first record and report the first break.

        ``expect_head`` is a (sequence number, hash) pair kept outside the
        state directory, such as in a CI log; the record at that sequence
        number must carry that hash. Without such an anchor, someone who can
        write the state directory can rewrite the whole chain consistently.
        """
        try:
            result = self._verify_chain()
        except sa.exc.SQLAlchemyError as exc:
            return VerifyResult(False, 0, None, f"the database cannot be read: {db_error(exc)}")
        if result.ok and expect_head is not None:
            seq, digest = expect_head
            record = self.at(seq)
            if record is None:
                return VerifyResult(
                    False, result.records, seq, f"record {seq} of the expected head is missing"
                )
            if record.hash != digest:
                return VerifyResult(
                    False,
                    result.records,
                    seq,
                    f"record {seq} has hash {record.hash}, not the expected {digest}: "
                    "the log was rewritten",
                )
        return result

    def head(self) -> tuple[int, str] | None:
        """Return the last record's sequence number and hash."""
        records = self.records(limit=1, newest_first=True)
        return (records[0].seq, records[0].hash) if records else None

    def at(self, seq: int) -> AuditRecord | None:
        for record in self._to_records(sa.select(audit_records).where(audit_records.c.seq == seq)):
            return record
        return None

    def _verify_chain(self) -> VerifyResult:
        expected_prev = GENESIS
        expected_seq = 1
        count = 0
        head = self._read_head()
        head_seq = head[0] if head else 0
        hash_at_head = ""
        for row in self._rows():
            if row.seq != expected_seq:
                return VerifyResult(
                    False,
                    count,
                    expected_seq,
                    f"record {expected_seq} is missing (next stored record is {row.seq})",
                )
            if row.prev_hash != expected_prev:
                return VerifyResult(
                    False,
                    count,
                    row.seq,
                    f"record {row.seq} does not link to record {row.seq - 1}: "
                    "a record before it was edited, removed or reordered",
                )
            digest = record_hash(
                row.seq,
                row.record_id,
                row.created_at,
                row.kind,
                row.artifact_digest,
                row.prev_hash,
                row.body,
            )
            if digest != row.hash:
                return VerifyResult(
                    False,
                    count,
                    row.seq,
                    f"record {row.seq} was edited: its hash does not match",
                )
            if row.seq == head_seq:
                hash_at_head = row.hash
            expected_prev = row.hash
            expected_seq += 1
            count += 1
        if head is not None:
            head_seq, head_hash = head
            if head_seq < 0:
                return VerifyResult(False, count, None, f"head file {self.head_path} is corrupt")
            if head_seq > count:
                return VerifyResult(
                    False,
                    count,
                    count + 1,
                    f"the log ends at record {count} but record {head_seq} was appended: "
                    "records were removed from the end",
                )
            if head_seq < count and not self.shared:
                # append() writes the head before it commits, so the head is
                # never behind the log it describes. Other replicas extend a
                # shared database without touching this directory's head.
                return VerifyResult(
                    False,
                    count,
                    head_seq + 1,
                    f"records {head_seq + 1} to {count} were added without updating the "
                    f"head file {self.head_path}, so the gate did not append them",
                )
            if head_seq and hash_at_head != head_hash:
                return VerifyResult(
                    False,
                    count,
                    head_seq,
                    f"record {head_seq} differs from the head recorded when it was appended: "
                    "the log was rewritten",
                )
        elif count and not self.shared:
            return VerifyResult(
                False,
                count,
                None,
                f"head file {self.head_path} is missing for a non-empty log",
            )
        return VerifyResult(True, count)
