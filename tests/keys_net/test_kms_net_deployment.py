"""A whole deployment with its KEKs in OpenBao Transit: the home holds no KEK, no master key,
and crypto-shredding plus KEK rotation end in the KMS itself."""

from __future__ import annotations

import pytest
import yaml

from eventward._internal import demo
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward.errors import KeyDestroyed, KMSUnavailable
from support_wait import frozen

from .conftest import TOKEN_ENV

ERASED = "[erased]"


def _transit_home(tmp_path, bao, prefix, monkeypatch) -> Home:
    monkeypatch.setenv(TOKEN_ENV, bao.token_for(prefix))
    home = Home(tmp_path / "home")
    home.ensure()
    home.config.write_text(yaml.safe_dump({"kms": {"backend": "transit", "transit": {
        "url": bao.url, "token_env": TOKEN_ENV, "key_prefix": prefix, "refresh_s": 0.0}}}))
    return home


def test_deployment_on_transit_reads_forgets_and_rotates_in_the_kms(tmp_path, bao, prefix, monkeypatch):
    home = _transit_home(tmp_path, bao, prefix, monkeypatch)
    dep = Deployment.init(home, admin=demo.ADMIN)
    try:
        assert not home.master_key.exists()  # the KEKs are in Transit, not next to the data
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        result = demo.DemoResult()
        demo.produce(dep, result, lambda *a: None)
        shipping = demo._collect(dep, demo.SHIPPING, demo.SHIPPING)
        names = {c[1] for c in demo.CUSTOMERS}
        assert {e.data["customer"]["name"] for e in shipping.events} <= names and len(shipping.events) == 6

        dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, reason="gdpr-art17")
        reread = demo._collect(dep, demo.SHIPPING, "reread")
        erased = [e for e in reread.events if e.data["customer"]["name"] == ERASED]
        assert erased and len(erased) < len(reread.events)

        report = dep.keys.rotate_kek("pii", principal=demo.ADMIN)
        assert report.new_kek_id == "pii.v2" and report.destroyed_kek_ids == ("pii.v1",) and report.failed == 0
        data = bao.root().secrets.transit.read_key(f"{prefix}.kek.pii")["data"]
        assert sorted(int(v) for v in data["keys"]) == [2]  # epoch 1 ended in the KMS itself
        after = demo._collect(dep, demo.SHIPPING, "after-rotation")
        assert [e.data for e in after.events] == [e.data for e in reread.events]  # re-wrapped, still readable
    finally:
        dep.close()


def test_attack_transit_down_mid_consume_stops_before_the_event(tmp_path, bao, prefix, monkeypatch):
    """KMS unreachable: the consumer neither dead-letters nor commits past what it cannot read yet.
    The server is frozen (every thread stopped) before the consumer runs: right after kill() a
    loaded machine still lets it answer a request or two, and an event whose DEK it unwrapped
    then is rightly delivered (seen as a flake: one event delivered under load)."""
    home = _transit_home(tmp_path, bao, prefix, monkeypatch)
    dep = Deployment.init(home, admin=demo.ADMIN)
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        demo.produce(dep, demo.DemoResult(), lambda *a: None)
        dep.keys.cache.clear()
        consumer = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True)
        seen = []
        try:
            with frozen(bao.proc.pid), pytest.raises((KMSUnavailable, KeyDestroyed)) as e:
                consumer.run(seen.append, idle_timeout=0.5, max_events=6)
            assert isinstance(e.value, KMSUnavailable)
        finally:
            consumer.close()
        assert seen == [] and dep.transport.end_offset(f"{demo.TOPIC}.dlq") == 0
        consumer = dep.consumer(demo.SHIPPING, demo.TOPIC, group="g", from_beginning=True)
        consumer.run(seen.append, idle_timeout=0.5, max_events=6)
        consumer.close()
        assert len(seen) == 6  # resumed at the first event: nothing skipped
    finally:
        dep.close()
