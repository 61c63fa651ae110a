"""The rule engine on synthetic audit records with exact times: each rule's episode fires once,
re-arms after the quiet period, and stays silent on ordinary traffic; the rules file is checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventward._internal.audit.records import AuditRecord, format_time
from eventward._internal.monitor.rules import RuleEngine, load_rules
from eventward.errors import ConfigError

MONDAY_NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()
SATURDAY_3AM = datetime(2026, 3, 7, 3, 0, tzinfo=UTC).timestamp()


class Log:
    def __init__(self) -> None:
        self.n = 0

    def rec(self, t: float, action: str, principal: str = "svc", resource: str = "Topic::orders",
            outcome: str = "ok", reason: str = "", **meta: object) -> AuditRecord:
        self.n += 1
        return AuditRecord(self.n, format_time(t), principal, action, resource, outcome, reason, meta)  # type: ignore[arg-type]


def _engine(**over: dict) -> RuleEngine:
    return RuleEngine({**load_rules(), **over})


def test_new_producer_fires_once_per_new_pair_and_never_for_a_topics_first_producer() -> None:
    e, log = _engine(), Log()
    assert e.feed(log.rec(MONDAY_NOON, "Publish", "orders-svc", count=5)) == []
    assert e.feed(log.rec(MONDAY_NOON + 1, "Publish", "orders-svc", count=5)) == []
    assert e.feed(log.rec(MONDAY_NOON, "Publish", "billing-svc", resource="Topic::billing", count=1)) == []
    [a] = e.feed(log.rec(MONDAY_NOON + 2, "Publish", "intruder", count=1))
    assert (a.rule, a.resource, a.meta["producer"], a.trigger) == ("new_producer", "Topic::orders", "intruder", 4)
    assert e.feed(log.rec(MONDAY_NOON + 3, "Publish", "intruder", count=1)) == []
    assert e.feed(log.rec(MONDAY_NOON + 3, "Publish", "intruder", outcome="denied")) == []  # a denial: other rule


def test_new_class_reader() -> None:
    e, log = _engine(), Log()
    assert e.feed(log.rec(MONDAY_NOON, "key.unwrap", "analytics", "class:pii")) == []
    assert e.feed(log.rec(MONDAY_NOON, "key.unwrap", "analytics", "class:pii")) == []
    [a] = e.feed(log.rec(MONDAY_NOON, "key.unwrap", "analytics", "class:payment"))
    assert (a.rule, a.resource, a.meta["reader"]) == ("new_class_reader", "class:payment", "analytics")
    assert e.feed(log.rec(MONDAY_NOON, "key.unwrap", "analytics", "class:payment")) == []
    assert e.feed(log.rec(MONDAY_NOON, "key.unwrap", "analytics", "class:health", outcome="denied")) == []


def test_burst_fires_once_per_episode_and_rearms_after_the_window_quiets() -> None:
    e, log = _engine(schema_failure_burst={"window_s": 60, "threshold": 4}), Log()
    fired = []
    for i in range(10):  # one episode, 10 failures in 10 s
        fired += e.feed(log.rec(MONDAY_NOON + i, "Subscribe", outcome="error", reason="schema", code="validation"))
    assert [a.rule for a in fired] == ["schema_failure_burst"]
    assert fired[0].meta["count"] == 4
    e.tick(MONDAY_NOON + 200)  # quiet: the window empties, the rule re-arms
    again = []
    for i in range(4):
        again += e.feed(log.rec(MONDAY_NOON + 200 + i, "Subscribe", outcome="error", code="bad_envelope"))
    assert [a.rule for a in again] == ["schema_failure_burst"]
    # below the threshold: nothing
    e2 = _engine(schema_failure_burst={"window_s": 60, "threshold": 4})
    assert e2.feed_all(log.rec(MONDAY_NOON + 100 * i, "Subscribe", outcome="error", code="validation")
                       for i in range(10)) == []


def test_forget_storm_and_seal_failures() -> None:
    e, log = _engine(forget_storm={"window_s": 300, "threshold": 3}), Log()
    out = e.feed_all(log.rec(MONDAY_NOON + i, "key.forget", "dpo", "subject:abc") for i in range(6))
    assert [a.rule for a in out] == ["forget_storm"] and out[0].resource == "Keys::store"
    out = e.feed_all(log.rec(MONDAY_NOON + i, "Subscribe", outcome="error", reason="bad_signature", code="bad_seal")
                     for i in range(5))
    assert [a.rule for a in out] == ["seal_failure_burst"]


def test_off_hours_admin_actions() -> None:
    e, log = _engine(), Log()
    assert e.feed(log.rec(MONDAY_NOON, "policy.apply", "admin", "Policy::current")) == []
    [a] = e.feed(log.rec(SATURDAY_3AM, "policy.apply", "admin", "Policy::current"))
    assert (a.rule, a.meta["actor"], a.meta["audit_action"], a.meta["hour"]) == ("off_hours_admin", "admin",
                                                                                  "policy.apply", 3)
    assert e.feed(log.rec(SATURDAY_3AM, "Publish", "orders-svc", count=1)) == []  # not an admin action
    quiet = _engine(off_hours_admin={"enabled": False})
    assert quiet.feed(log.rec(SATURDAY_3AM, "policy.apply", "admin", "Policy::current")) == []


def test_rate_spike_against_own_ewma_with_gaps() -> None:
    spike = {"window_s": 10, "alpha": 0.5, "factor": 4, "min_events": 50, "warmup_windows": 3}
    e, log = _engine(rate_spike=spike), Log()
    t0 = 1_800_000_000.0
    for w in range(5):
        assert e.feed(log.rec(t0 + 10 * w, "Publish", "p", count=20)) == []
        assert e.feed(log.rec(t0 + 10 * w, "Publish", "other", resource="Topic::b", count=500)) == []  # its own base
    # a spike after an idle stretch is still judged against p's own baseline (idle windows lower it)
    [a] = e.feed(log.rec(t0 + 10 * 8, "Publish", "p", count=200))
    assert (a.rule, a.meta["producer"]) == ("rate_spike", "p")
    assert e.feed(log.rec(t0 + 10 * 8 + 1, "Publish", "p", count=200)) == []  # same episode
    assert e.feed(log.rec(t0 + 10 * 9, "Publish", "p", count=5)) == []  # back to normal: re-armed
    assert [x.rule for x in e.feed(log.rec(t0 + 10 * 10, "Publish", "p", count=400))] == ["rate_spike"]


def test_alert_records_are_not_fed_back() -> None:
    e, log = _engine(denial_burst={"window_s": 60, "threshold": 1}), Log()
    assert e.feed(log.rec(MONDAY_NOON, "monitor.alert", "eventward-monitor", outcome="denied")) == []


def test_consumer_lag_alert_once_per_episode() -> None:
    e = _engine(consumer_lag={"threshold": 100})
    assert e.lag(0, [("orders", "g", 10)]) == []
    [a] = e.lag(1, [("orders", "g", 150), ("orders", "h", 5)])
    assert (a.rule, a.meta["group"], a.meta["lag"]) == ("consumer_lag", "g", 150)
    assert e.lag(2, [("orders", "g", 500)]) == []
    assert e.lag(3, [("orders", "g", 20)]) == []
    assert len(e.lag(4, [("orders", "g", 101)])) == 1


@pytest.mark.parametrize("text, what", [
    ("rules: {nonsense: {}}", "unknown rule"),
    ("rules: {denial_burst: {severity: apocalyptic}}", "severity"),
    ("rules: {denial_burst: {threshold: -1}}", "non-negative"),
    ("rules: {denial_burst: {threshold: .nan}}", "non-negative"),
    ("rules: [1]", "expected a mapping"),
    ("rules: {off_hours_admin: {actions: policy.apply}}", "list"),
    (": :", "YAML"),
])
def test_bad_rules_files_are_config_errors(tmp_path: Path, text: str, what: str) -> None:
    p = tmp_path / "rules.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=what):
        load_rules(p)


def test_rules_file_overrides_per_rule(tmp_path: Path) -> None:
    p = tmp_path / "rules.yaml"
    p.write_text("rules: {denial_burst: {threshold: 3}}")
    rules = load_rules(p)
    assert rules["denial_burst"]["threshold"] == 3 and rules["denial_burst"]["window_s"] == 60
    assert rules["forget_storm"] == load_rules()["forget_storm"]
