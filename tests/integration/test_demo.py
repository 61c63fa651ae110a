"""The demo is the product's story end to end: every claim it prints is asserted here."""

import subprocess
import sys
from pathlib import Path

import pytest

from eventward._internal import demo
from eventward._internal.crypto.fields import ERASED, REDACTED
from eventward._internal.home import Home


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    home = Home.resolve(tmp_path_factory.mktemp("demo") / "home")
    return home, demo.run(home)


def test_schema_poisoning_is_held_for_security_approval(result):
    _, r = result
    assert r.schema_version == 1
    assert r.poison_held and r.poison_signoff_refused  # bob cannot sign off his own approval
    assert any("email" in f and "tag_removed" in f for f in r.poison_findings)


def test_clearance_decides_what_each_consumer_reads(result):
    _, r = result
    assert r.shipping.stats.delivered == len(r.produced) == 6
    assert r.analytics.stats.delivered == 6
    names = {c[1] for c in demo.CUSTOMERS}
    assert {e.data["customer"]["name"] for e in r.shipping.events} == names
    for e in r.analytics.events:
        assert e.data["customer"]["name"] == REDACTED
        assert e.data["customer"]["email"] == REDACTED
        assert e.data["customer"]["country"] in {"GB", "US", "NL"}  # untagged fields stay readable


def test_spoofed_tampered_replayed_events_are_refused_and_good_ones_flow(result):
    _, r = result
    assert r.attacks == {
        "spoofed event": "unknown_key",
        "replayed event": "batch_mismatch",
        "tampered event": "digest_mismatch",
    }
    # the untouched second event of the tampered batch is still delivered
    assert r.after_attacks.stats.delivered == 1
    assert r.after_attacks.events[0].data["order_id"] == "ord-1007"


def test_forgotten_customer_reads_as_erased_others_still_read(result):
    _, r = result
    # the subject field is encrypted under the subject's key too: forgotten, it reads as erased
    forgotten = [e for e in r.after_forget.events if e.data["customer"]["id"] == ERASED]
    others = [e for e in r.after_forget.events if e.data["customer"]["id"] != ERASED]
    assert forgotten and others
    assert all(e.data["customer"]["email"] == ERASED for e in forgotten)
    assert {e.data["customer"]["id"] for e in others} == {c[0] for c in demo.CUSTOMERS} - {demo.FORGOTTEN}
    assert {e.data["customer"]["email"] for e in others} <= {c[2] for c in demo.CUSTOMERS}
    assert demo.FORGOTTEN not in r.receipt  # the receipt names the subject by keyed hash only
    assert r.certificate_index >= 0


def test_gateway_part_publishes_consumes_and_explains_a_denial(result):
    _, r = result
    g = r.gateway
    assert g.published.status == 200 and len(g.published_ids) == 4
    assert len(g.consumed) == 4
    assert {e["data"]["customer"]["name"] for e in g.consumed} <= {c[1] for c in demo.CUSTOMERS}
    assert g.denied.status == 403
    assert "analytics-svc" in g.explanation and "Publish" in g.explanation
    assert any(cmd.startswith("curl") and "--cert" in cmd for cmd in g.commands)


def test_client_mode_part_services_hold_only_their_own_keys(result):
    _, r = result
    c = r.client_mode
    assert c.read == {demo.SHIPPING: demo.CUSTOMERS[0][1], demo.ANALYTICS: "[redacted]"}
    assert c.refused == "forbidden"
    assert {"seal.key", "dead-letter.key", "tls.key", "grant.json"} <= set(c.files)
    assert not {"master.key", "keyring.bin", "keys.db", "audit.key", "ca.key"} & set(c.files)
    for path in Path(c.directory).rglob("*"):  # the services' directories hold no PII either
        if path.is_file():
            assert not any(v.encode() in path.read_bytes() for v in demo.pii_values()), path.name


def test_audit_verifies_and_no_store_contains_plaintext_pii(result):
    home, r = result
    assert r.audit_ok and r.audit_size > 10
    files = [p for p in Path(home.root).rglob("*") if p.is_file()]
    assert any(p.name == "audit.db" for p in files)
    for path in files:
        raw = path.read_bytes()
        for value in demo.pii_values():
            assert value.encode() not in raw, f"plaintext PII found in {path.name}"


def test_demo_cli_runs_on_a_fresh_home(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "eventward._internal.cli", "--home", str(tmp_path / "h"), "demo"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "demo complete" in out.stdout
    assert "unknown_key" in out.stdout and "digest_mismatch" in out.stdout
    assert "[erased]" in out.stdout and "[redacted]" in out.stdout  # markers survive Rich rendering
    # a second run refuses to reuse a non-empty home rather than wiping it
    again = subprocess.run(
        [sys.executable, "-m", "eventward._internal.cli", "--home", str(tmp_path / "h"), "demo"],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 9 and "not empty" in again.stderr  # configuration error
