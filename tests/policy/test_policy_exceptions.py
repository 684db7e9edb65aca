"""Exceptions: storage, audit records, expiry at the exact instant, two approvers, waivers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from policy_helpers import ARTIFACT, DIGEST, evidence, finding, policy_from

from attestgate.audit import AuditLog
from attestgate.errors import UsageError
from attestgate.findings import Severity
from attestgate.pipeline import admit
from attestgate.policy import Action, evaluate, load_default_policy
from attestgate.policy.exceptions import ExceptionStore
from attestgate.record import validate_record

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ID = f"sha256:{DIGEST}"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def store(tmp_path, clock):
    with ExceptionStore(tmp_path / "home", clock=clock) as opened:
        yield opened


def test_add_defaults_to_thirty_days(store):
    item, warnings = store.add(ID, "provenance.missing", reason="reviewed", approver="alice")
    assert item.expires_at == T0 + timedelta(days=30)
    assert item.approvers == ["alice"]
    assert warnings == []


def test_add_appends_audit_record(store):
    item, _ = store.add(ID, "provenance.missing", reason="reviewed", approver="alice")
    [record] = AuditLog(store.home).records()
    assert record.kind == "exception.add"
    assert record.artifact_digest == ID
    assert record.body["id"] == item.id
    assert record.body["reason"] == "reviewed"


def test_revoke_appends_audit_record(store):
    item, _ = store.add(ID, "provenance.missing", reason="reviewed", approver="alice")
    revoked = store.revoke(item.id, by="bob", reason="superseded")
    kinds = [r.kind for r in AuditLog(store.home).records()]
    assert kinds == ["exception.add", "exception.revoke"]
    assert revoked.state(T0) == "revoked"


def test_audit_chain_stays_intact(store):
    item, _ = store.add(ID, "provenance.missing", reason="reviewed", approver="alice")
    store.approve(item.id, "bob")
    store.revoke(item.id, by="carol", reason="done")
    assert AuditLog(store.home).verify().ok


@pytest.mark.parametrize("digest", ["model.safetensors", "sha256:abc", "sha512:" + "a" * 128])
def test_only_digests_accepted(store, digest):
    with pytest.raises(UsageError, match="sha256"):
        store.add(digest, "provenance.missing", reason="r", approver="a")


@pytest.mark.parametrize("rule", ["pickle.*", "check.failed", "dynamic.timeout", "nodot"])
def test_rule_must_be_one_waivable_id(store, rule):
    with pytest.raises(UsageError):
        store.add(ID, rule, reason="r", approver="a")


def test_unknown_rule_warns(store):
    _, warnings = store.add(ID, "pickle.unsafe-globl", reason="r", approver="a")
    assert "not in the rule catalogue" in warnings[0]


@pytest.mark.parametrize(
    ("expires", "message"),
    [(T0, "not after"), (T0 - timedelta(days=1), "not after"), (T0 + timedelta(days=367), "366")],
)
def test_expiry_bounds(store, expires, message):
    with pytest.raises(UsageError, match=message):
        store.add(ID, "provenance.missing", reason="r", approver="a", expires_at=expires)


def test_reason_and_approver_required(store):
    with pytest.raises(UsageError, match="reason"):
        store.add(ID, "provenance.missing", reason=" ", approver="a")
    with pytest.raises(UsageError, match="approver"):
        store.add(ID, "provenance.missing", reason="r", approver="")


def test_duplicate_active_exception_rejected(store):
    store.add(ID, "provenance.missing", reason="r", approver="a")
    with pytest.raises(UsageError, match="already waives"):
        store.add(ID, "provenance.missing", reason="r", approver="b")


def test_second_approver_must_differ(store):
    item, _ = store.add(ID, "provenance.missing", reason="r", approver="alice")
    with pytest.raises(UsageError, match="different person"):
        store.approve(item.id, "alice")
    assert store.approve(item.id, "bob").approvers == ["alice", "bob"]


def test_expired_exception_cannot_be_approved(store, clock):
    item, _ = store.add(
        ID, "provenance.missing", reason="r", approver="a", expires_at=T0 + timedelta(hours=1)
    )
    clock.now = T0 + timedelta(hours=1)
    with pytest.raises(UsageError, match="expired"):
        store.approve(item.id, "b")


def test_listing_by_digest(store):
    store.add(ID, "provenance.missing", reason="r", approver="a")
    store.add("sha256:" + "cd" * 32, "provenance.missing", reason="r", approver="a")
    assert len(store.list()) == 2
    assert [i.artifact_digest for i in store.list(ID)] == [ID]


# --- applying exceptions -----------------------------------------------------


def decide(exceptions, now, policy=None, findings=None):
    section, found = evidence("none")
    return evaluate(
        policy or load_default_policy(),
        "deployment",
        found if findings is None else findings,
        evidence=section,
        artifact=ARTIFACT,
        exceptions=exceptions,
        now=now,
    )


def test_expires_at_exact_instant(store):
    expires = T0 + timedelta(days=2)
    store.add(ID, "provenance.missing", reason="r", approver="a", expires_at=expires)
    items = store.list(ID)
    before = decide(items, expires - timedelta(microseconds=1))
    at = decide(items, expires)
    assert before.action is Action.ALLOW
    assert at.action is Action.QUARANTINE
    assert [e["id"] for e in at.evaluation["exceptions"]["expired"]] == [items[0].id]


def test_not_applied_before_creation(store):
    store.add(ID, "provenance.missing", reason="r", approver="a")
    decision = decide(store.list(ID), T0 - timedelta(seconds=1))
    assert decision.action is Action.QUARANTINE
    assert decision.evaluation["exceptions"]["ignored"][0]["why"].startswith("its creation")


def test_revoked_exception_stops_applying(store):
    item, _ = store.add(ID, "provenance.missing", reason="r", approver="a")
    store.revoke(item.id, by="b", reason="no longer needed")
    assert decide(store.list(ID), T0 + timedelta(hours=1)).action is Action.QUARANTINE


def test_waived_reason_recorded(store):
    item, _ = store.add(ID, "provenance.missing", reason="r", approver="a")
    decision = decide(store.list(ID), T0)
    assert decision.reasons == ()
    [(reason, exception_id)] = decision.waived
    assert reason.rule == "provenance.missing"
    assert exception_id == item.id
    assert decision.evaluation["exceptions"]["waived"][0]["exception"] == item.id
    assert "waived by exceptions" in decision.summary


def test_exception_for_other_rule_unused(store):
    store.add(ID, "pickle.unsafe-global", reason="r", approver="a")
    decision = decide(store.list(ID), T0)
    assert decision.action is Action.QUARANTINE
    assert len(decision.evaluation["exceptions"]["unused"]) == 1


def test_critical_reason_needs_two_approvers(store):
    item, _ = store.add(ID, "pickle.unsafe-global", reason="r", approver="alice")
    findings = [finding("pickle.unsafe-global", Severity.CRITICAL)]
    pending = decide(store.list(ID), T0, findings=findings)
    assert pending.action is Action.BLOCK
    assert pending.evaluation["exceptions"]["pending"][0]["id"] == item.id
    store.approve(item.id, "bob")
    waived = decide(store.list(ID), T0, findings=findings)
    assert waived.action is Action.ALLOW


def test_high_reason_needs_one_approver_by_default(store):
    store.add(ID, "pickle.unsafe-global", reason="r", approver="alice")
    findings = [finding("pickle.unsafe-global", Severity.HIGH)]
    assert decide(store.list(ID), T0, findings=findings).action is Action.ALLOW


def test_policy_two_approver_rules(store):
    policy = policy_from(
        load_default_policy_text().replace(
            "    severities: [critical]", "    severities: [critical]\n    rules: [provenance.*]"
        )
    )
    store.add(ID, "provenance.missing", reason="r", approver="alice")
    assert decide(store.list(ID), T0, policy=policy).action is Action.QUARANTINE


def test_policy_max_days(store):
    policy = policy_from(
        load_default_policy_text().replace("exceptions:\n", "exceptions:\n  maxDays: 7\n")
    )
    store.add(ID, "provenance.missing", reason="r", approver="a")
    decision = decide(store.list(ID), T0, policy=policy)
    assert decision.action is Action.QUARANTINE
    assert "maximum of 7 days" in decision.evaluation["exceptions"]["ignored"][0]["why"]


def load_default_policy_text():
    from attestgate.policy import default_policy_bytes

    return default_policy_bytes().decode()


# --- through the pipeline ----------------------------------------------------


def test_pipeline_marks_waived_finding(model, home):
    first = admit(model, home=home)
    digest = f"sha256:{first.record['artifact']['digest']['sha256']}"
    with ExceptionStore(home) as exceptions:
        item, _ = exceptions.add(digest, "provenance.missing", reason="r", approver="a")
    second = admit(model, home=home)
    assert first.action == "quarantine"
    assert second.action == "allow"
    [marked] = [f for f in second.record["findings"] if f["rule"] == "provenance.missing"]
    assert marked["waived"] == {"exception": item.id}
    validate_record(second.record)


def test_pipeline_reports_expired_exception(model, home):
    first = admit(model, home=home)
    digest = f"sha256:{first.record['artifact']['digest']['sha256']}"
    now = datetime.now(UTC)
    with ExceptionStore(home) as exceptions:
        exceptions.add(
            digest,
            "provenance.missing",
            reason="r",
            approver="a",
            expires_at=now + timedelta(days=1),
        )
    later = admit(model, home=home, now=now + timedelta(days=1))
    assert later.action == "quarantine"
    assert len(later.record["evaluation"]["exceptions"]["expired"]) == 1


def test_exception_for_other_digest_ignored(model, home):
    with ExceptionStore(home) as exceptions:
        other = "sha256:" + hashlib.sha256(b"other").hexdigest()
        exceptions.add(other, "provenance.missing", reason="r", approver="a")
    assert admit(model, home=home).action == "quarantine"
