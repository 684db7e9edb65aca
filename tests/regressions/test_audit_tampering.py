"""Edits to the audit log by someone who can write its database.

The chain catches any edit that leaves a later hash stale, and the head file
catches records removed from or added to the end. Someone who can write both
the database and the head file can rewrite everything consistently. Only a
head kept outside the state directory (``--expect-head``) catches that.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestgate.audit import AuditLog
from attestgate.audit.log import DB_FILE, GENESIS, HEAD_FILE, record_hash


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path)
    for i in range(4):
        log.append("decision", {"n": i, "decision": "block"}, artifact_digest=f"sha256:{i:064x}")
    yield log
    log.close()


def rechain(home: Path, edit_seq: int, body: str) -> None:
    """Replace one record's body and recompute every hash after it, as a forger would."""
    with sqlite3.connect(home / DB_FILE) as conn:
        conn.execute("UPDATE audit_records SET body = ? WHERE seq = ?", (body, edit_seq))
        rows = conn.execute(
            "SELECT seq, record_id, created_at, kind, artifact_digest, body FROM audit_records "
            "ORDER BY seq"
        ).fetchall()
        prev = GENESIS
        for seq, record_id, created_at, kind, digest, text in rows:
            new = record_hash(seq, record_id, created_at, kind, digest, prev, text)
            conn.execute(
                "UPDATE audit_records SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, new, seq)
            )
            prev = new


def forge_append(home: Path) -> None:
    """Add a record with a valid hash, without the gate and without its head file."""
    with sqlite3.connect(home / DB_FILE) as conn:
        seq, last = conn.execute(
            "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        body = '{"decision":"allow"}'
        digest = record_hash(seq + 1, "forged", "2026-01-01T00:00:00", "decision", None, last, body)
        conn.execute(
            "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq + 1, "forged", "2026-01-01T00:00:00", "decision", None, body, last, digest),
        )


def test_edit_with_rechained_hashes(log: AuditLog, tmp_path: Path) -> None:
    rechain(tmp_path, 2, '{"decision":"allow","n":1}')
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 4


def test_forged_record_appended(log: AuditLog, tmp_path: Path) -> None:
    forge_append(tmp_path)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 5


def test_rewrite_with_head_file_needs_outside_anchor(log: AuditLog, tmp_path: Path) -> None:
    # The limit: the forger also rewrites the head file, so the log verifies
    # on its own, and only a head kept elsewhere shows the rewrite.
    anchor = log.head()
    assert anchor is not None
    rechain(tmp_path, 2, '{"decision":"allow","n":1}')
    new_head = log.head()
    assert new_head is not None
    (tmp_path / HEAD_FILE).write_text(f'{{"seq": {new_head[0]}, "hash": "{new_head[1]}"}}')
    assert log.verify().ok
    assert not log.verify(expect_head=anchor).ok
