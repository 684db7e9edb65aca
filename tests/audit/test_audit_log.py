import itertools
import sqlite3

import pytest

from attestgate.audit import AuditLog
from attestgate.audit.log import DB_FILE


@pytest.fixture
def log(tmp_path):
    log = AuditLog(tmp_path)
    for i in range(5):
        log.append(
            "decision",
            {"n": i, "decision": "allow"},
            artifact_digest=f"sha256:{i:064x}",
        )
    yield log
    log.close()


def db(tmp_path):
    return sqlite3.connect(tmp_path / DB_FILE)


def test_intact_log_verifies(log):
    result = log.verify()
    assert result.ok
    assert result.records == 5


def test_records_chain(log):
    records = log.records()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash


def test_edited_body_detected(log, tmp_path):
    with db(tmp_path) as conn:
        conn.execute(
            "UPDATE audit_records SET body = ? WHERE seq = 3",
            ('{"n":3,"decision":"block"}',),
        )
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 3


def test_edited_kind_detected(log, tmp_path):
    with db(tmp_path) as conn:
        conn.execute("UPDATE audit_records SET kind = 'other' WHERE seq = 2")
    assert log.verify().first_bad_seq == 2


def test_removed_record_detected(log, tmp_path):
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 2")
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 2


def test_removed_and_renumbered_detected(log, tmp_path):
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 2")
        for seq in (3, 4, 5):
            conn.execute("UPDATE audit_records SET seq = ? WHERE seq = ?", (seq - 1, seq))
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 2


def test_reordered_records_detected(log, tmp_path):
    with db(tmp_path) as conn:
        conn.execute("UPDATE audit_records SET seq = 100 WHERE seq = 3")
        conn.execute("UPDATE audit_records SET seq = 3 WHERE seq = 4")
        conn.execute("UPDATE audit_records SET seq = 4 WHERE seq = 100")
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 3


def test_truncated_tail_detected(log, tmp_path):
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq >= 4")
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 4


def test_rewritten_log_detected(tmp_path):
    log = AuditLog(tmp_path)
    log.append("decision", {"n": 1})
    head = (tmp_path / "audit.head").read_bytes()
    log.close()
    (tmp_path / DB_FILE).unlink()
    log = AuditLog(tmp_path)
    log.append("decision", {"n": "forged"})
    (tmp_path / "audit.head").write_bytes(head)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 1
    log.close()


def test_empty_log_verifies(tmp_path):
    log = AuditLog(tmp_path)
    assert log.verify().ok
    log.close()


def test_concurrent_appends_keep_one_chain(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    logs = [AuditLog(tmp_path) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: logs[i % 4].append("decision", {"i": i}), range(40)))
    result = logs[0].verify()
    assert result.ok
    assert result.records == 40
    for log in logs:
        log.close()
