"""Attacks on the NATS transport: spoofed and missing certificates, escalation past compiled
permissions (refused by nats-server itself), sniffing other principals' replies, poisoned
and forged messages in a stream, header injection, credentials leaking into errors."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from eventward._internal import pki
from eventward._internal.cli.nats import OPERATOR
from eventward._internal.log import framing, natsserver
from eventward._internal.log.nats import NatsTransport, inbox_prefix_for, stream_name, subject_for
from eventward.errors import (
    AccessDenied,
    AuthenticationError,
    ConfigError,
    KeyFilePermissionError,
    TransportError,
    TransportUnavailable,
)
from support_wait import async_wait_until

from .conftest import FAST, nats_client, port_block
from .nats_world import OPERATOR_PASSWORD, Deployment, raw_publish, start_mtls, start_passwords

TOPIC = "customers"
WRITER_PW, READER_PW = "s3cret-writer-pw", "s3cret-reader-pw"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    principals = ["signup-svc", "billing", "analytics", "intruder"]
    d = start_mtls(tmp_path_factory.mktemp("mtls"), principals=principals)
    try:
        with d.client(OPERATOR) as op:
            op.create_stream(TOPIC)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def writer(dep: Deployment) -> Iterator[NatsTransport]:
    with dep.client("signup-svc") as t:
        yield t


@pytest.fixture(scope="module")
def reader(dep: Deployment) -> Iterator[NatsTransport]:
    with dep.client("billing") as t:
        yield t


def refused_fast(fn) -> AccessDenied:
    """The server's permissions violation must surface at once, not as a retried timeout."""
    t0 = time.monotonic()
    with pytest.raises(AccessDenied) as e:
        fn()
    assert time.monotonic() - t0 < 1.5
    return e.value


def test_principals_get_exactly_their_grants(writer: NatsTransport, reader: NatsTransport) -> None:
    first = writer.append(TOPIC, "grant-1", [b"e1", b"e2"], b"seal")
    recs = reader.read(TOPIC, first, 10)
    assert [r.data for r in recs] == [b"e1", b"e2"] and recs[0].batch == "grant-1"
    reader.commit("billing", TOPIC, first + 2)
    assert reader.committed("billing", TOPIC) == first + 2


def test_reader_cannot_publish_and_nothing_is_stored(writer: NatsTransport, reader: NatsTransport) -> None:
    end = writer.end_offset(TOPIC)
    e = refused_fast(lambda: reader.append(TOPIC, "forged", [b"fake order"], b"seal"))
    assert subject_for(TOPIC) in e.message and "fake" not in e.message
    assert writer.end_offset(TOPIC) == end


def test_producer_cannot_read_or_commit(writer: NatsTransport) -> None:
    writer.append(TOPIC, "w-only", [b"x"], b"seal")
    fresh_writer_view = refused_fast(lambda: writer.read(TOPIC, 0, 10))
    assert "GET" in fresh_writer_view.message
    refused_fast(lambda: writer.commit("billing", TOPIC, 0))


def test_subscriber_of_another_topic_cannot_read_or_move_offsets(
    dep: Deployment, reader: NatsTransport
) -> None:
    with dep.client("analytics") as other:
        refused_fast(lambda: other.read(TOPIC, 0, 10))
        refused_fast(lambda: other.commit("billing", TOPIC, 0))  # rewinding billing's position
    assert reader.committed("billing", TOPIC) is not None


def test_only_the_operator_creates_streams(dep: Deployment, reader: NatsTransport) -> None:
    refused_fast(lambda: reader.create_stream("customers-shadow"))
    with dep.client(OPERATOR) as op:
        op.create_stream("customers-shadow")
        assert "customers-shadow" in op.streams()


def test_certificate_of_a_principal_outside_the_policy_is_refused(dep: Deployment) -> None:
    with pytest.raises(AuthenticationError):
        dep.client("intruder")


def test_certificate_from_a_foreign_ca_cannot_impersonate(dep: Deployment, tmp_path: Path) -> None:
    rogue = pki.issue_ca("rogue CA")
    forged = pki.issue_cert(rogue, "billing", client=True)
    cert, key = tmp_path / "forged.crt", tmp_path / "forged.key"
    pki.save(forged, cert, key)
    with pytest.raises(AuthenticationError):
        NatsTransport(dep.urls, ca=dep.ca, cert=cert, key=key, backoff=FAST, timeout_s=2.0)


def test_client_without_a_certificate_is_refused(dep: Deployment) -> None:
    with pytest.raises(AuthenticationError):
        NatsTransport(dep.urls, ca=dep.ca, backoff=FAST, timeout_s=2.0)


def test_client_refuses_a_server_it_cannot_verify(dep: Deployment, tmp_path: Path) -> None:
    """A man in the middle with another CA's certificate gets no connection (and no data)."""
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(pki.issue_ca("someone else").cert_pem())
    cert, key = pki.ensure_client_cert(dep.certs, "billing")
    with pytest.raises(AuthenticationError):
        NatsTransport(dep.urls, ca=other_ca, cert=cert, key=key, backoff=FAST, timeout_s=2.0)


def test_world_readable_client_key_is_refused_before_connecting(dep: Deployment, tmp_path: Path) -> None:
    cert, key = pki.ensure_client_cert(dep.certs, "billing")
    leaky = tmp_path / "leaky.key"
    shutil.copy(key, leaky)
    leaky.chmod(0o644)
    with pytest.raises(KeyFilePermissionError):
        NatsTransport(dep.urls, ca=dep.ca, cert=cert, key=leaky)


def test_replies_to_another_principal_cannot_be_sniffed(dep: Deployment, reader: NatsTransport) -> None:
    """Message gets are answered on the reader's private inbox; nobody else may subscribe to it."""
    import ssl

    cert, key = pki.ensure_client_cert(dep.certs, "analytics")
    ctx = ssl.create_default_context(cafile=str(dep.ca))
    ctx.load_cert_chain(str(cert), str(key))

    async def sniff() -> tuple[list[str], int]:
        errors: list[str] = []
        got: list[bytes] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        async def on_msg(m) -> None:
            got.append(m.data)

        own_inbox = inbox_prefix_for("analytics")
        nc = await nats.connect(dep.urls, tls=ctx, error_cb=on_error, inbox_prefix=own_inbox)
        await nc.subscribe(inbox_prefix_for("billing") + ".>", cb=on_msg)
        await nc.flush()
        await asyncio.to_thread(reader.read, TOPIC, 0, 10)
        # the replies billing got were routed before this PING reached the server, so anything
        # routed to us would have arrived before the PONG: the PONG is the marker
        await nc.flush()
        await async_wait_until(lambda: errors, timeout=5, what="subscription refused")
        await nc.close()
        return errors, len(got)

    errors, sniffed = asyncio.run(sniff())
    assert sniffed == 0
    assert any("permissions violation for subscription" in e for e in errors)


@pytest.fixture(scope="module")
def pw_dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = start_passwords(tmp_path_factory.mktemp("pw"), {"signup-svc": WRITER_PW, "billing": READER_PW})
    try:
        yield d
    finally:
        d.stop()


def as_user(d: Deployment, user: str, password: str) -> NatsTransport:
    return NatsTransport(d.urls, user=user, password=password, backoff=FAST, timeout_s=2)


def test_password_user_is_held_to_its_grants_by_the_server(pw_dep: Deployment) -> None:
    with as_user(pw_dep, OPERATOR, OPERATOR_PASSWORD) as op:
        op.create_stream(TOPIC)
    with as_user(pw_dep, "signup-svc", WRITER_PW) as w:
        refused_fast(lambda: w.create_stream("elsewhere"))
        assert w.append(TOPIC, "pw-1", [b"x"], b"s") == 0
    with as_user(pw_dep, "signup-svc", WRITER_PW) as w:
        refused_fast(lambda: w.read(TOPIC, 0, 1))  # a fresh view must fetch: direct get refused
    with as_user(pw_dep, "billing", READER_PW) as r:
        refused_fast(lambda: r.append(TOPIC, "b", [b"y"], b"s"))
        assert [x.data for x in r.read(TOPIC, 0, 10)] == [b"x"]


def test_wrong_password_is_refused_and_never_echoed(pw_dep: Deployment) -> None:
    with pytest.raises(AuthenticationError) as e:
        as_user(pw_dep, "billing", "guessed-pw-123")
    assert "guessed-pw-123" not in str(e.value) and "guessed-pw-123" not in repr(e.value)
    url = pw_dep.urls[0].replace("nats://", f"nats://billing:{READER_PW}@")
    with NatsTransport(url, backoff=FAST, timeout_s=2) as t:
        assert "s3cret" not in repr(t)


def test_unreachable_server_fails_fast_without_leaking_credentials() -> None:
    port = port_block(1)
    t0 = time.monotonic()
    with pytest.raises(TransportUnavailable) as e:
        NatsTransport(f"nats://admin:hunter2-pw@127.0.0.1:{port}", timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert "hunter2" not in str(e.value) and f"127.0.0.1:{port}" in str(e.value)


# --- poisoned streams (an attacker who may publish raw messages on the subject) ---------------


def test_foreign_message_is_refused_and_good_data_stays_readable(nats_node) -> None:
    t = nats_client(nats_node)
    s = "poison.foreign"
    t.create_stream(s)
    t.append(s, "good-1", [b"a", b"b"], b"seal")
    t.append(s, "good-2", [b"c"], b"seal")
    raw_publish(nats_node.url(tls=False), subject_for(s), b'{"secret-payload": 1}')
    with pytest.raises(TransportError) as e:
        nats_client(nats_node).read(s, 0, 100)
    assert "foreign" in e.value.message and "secret-payload" not in e.value.message
    assert [r.data for r in nats_client(nats_node).read(s, 0, 3)] == [b"a", b"b", b"c"]
    with pytest.raises(TransportError):  # nobody builds offsets on top of a foreign tail
        nats_client(nats_node).append(s, "good-3", [b"d"], b"seal")
    t.close()


def test_forged_offset_header_is_detected(nats_node) -> None:
    t = nats_client(nats_node)
    s = "poison.offsets"
    t.create_stream(s)
    t.append(s, "real", [b"x", b"y"], b"seal")
    forged = framing.encode("replayed", [b"evil"], b"stolen-seal")
    raw_publish(nats_node.url(tls=False), subject_for(s), forged, {"Ew-Offset": "0", "Ew-Count": "1"})
    with pytest.raises(TransportError) as e:
        nats_client(nats_node).read(s, 0, 100)
    assert "does not continue" in e.value.message
    miscount = framing.encode("lying", [b"1", b"2"], b"seal")
    s2 = "poison.count"
    t.create_stream(s2)
    raw_publish(nats_node.url(tls=False), subject_for(s2), miscount, {"Ew-Offset": "0", "Ew-Count": "5"})
    with pytest.raises(TransportError):
        nats_client(nats_node).read(s2, 0, 100)
    t.close()


def test_batch_id_cannot_inject_nats_headers(nats_node) -> None:
    t = nats_client(nats_node)
    s = "inject.headers"
    t.create_stream(s)
    evil = "b1\r\nNats-Expected-Last-Sequence: 0\r\nEw-Offset: 999"
    assert t.append(s, evil, [b"x"], b"seal") == 0
    assert t.append(s, "b2", [b"y"], b"seal") == 1
    assert t.append(s, evil, [b"x"], b"seal") == 0  # still deduplicated, still one copy
    recs = nats_client(nats_node).read(s, 0, 10)
    assert [(r.batch, r.offset) for r in recs] == [(evil, 0), ("b2", 1)]
    t.close()


def test_stream_cannot_be_emptied_behind_the_consumers_back(nats_node) -> None:
    """Streams are deny-delete/deny-purge: offsets can never be silently re-used."""
    t = nats_client(nats_node)
    s = "tamper.purge"
    t.create_stream(s)
    t.append(s, "b", [b"x"], b"seal")

    async def purge_and_delete() -> list[dict]:
        nc = await nats.connect(nats_node.url(tls=False))
        out = []
        for api, body in (("PURGE", {}), ("MSG.DELETE", {"seq": 1})):
            subject = f"$JS.API.STREAM.{api}.{stream_name(s)}"
            msg = await nc.request(subject, json.dumps(body).encode(), timeout=2)
            out.append(json.loads(msg.data))
        await nc.close()
        return out

    assert all("error" in r for r in asyncio.run(purge_and_delete()))
    assert [r.data for r in t.read(s, 0, 10)] == [b"x"]
    t.close()


def test_config_takes_the_password_from_the_environment_only(
    pw_dep: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventward._internal.config import NatsConfig

    cfg = NatsConfig(servers=pw_dep.urls, user="billing", password_env="EW_TEST_NATS_PW", timeout_s=2.0)
    monkeypatch.delenv("EW_TEST_NATS_PW", raising=False)
    with pytest.raises(ConfigError, match="EW_TEST_NATS_PW"):
        NatsTransport.from_config(cfg)
    monkeypatch.setenv("EW_TEST_NATS_PW", READER_PW)
    with NatsTransport.from_config(cfg) as t:
        assert t.end_offset(TOPIC) >= 0 and READER_PW not in repr(t)


def test_token_authentication_and_creds_file_hygiene(tmp_path: Path) -> None:
    token = "tok-" + "9" * 24
    auth = f'authorization {{ token: "{token}" }}\n'
    nodes = natsserver.start_all(tmp_path / "tok", port=port_block(1), auth_config=auth)
    url = nodes[0].url(tls=False)
    try:
        with NatsTransport(url, token=token, backoff=FAST, timeout_s=2) as t:
            t.create_stream("tok.s")
            assert t.append("tok.s", "b", [b"x"], b"seal") == 0
        with pytest.raises(AuthenticationError) as e:
            NatsTransport(url, token="tok-guess", backoff=FAST, timeout_s=2)
        assert "tok-guess" not in str(e.value)
        creds = tmp_path / "user.creds"
        creds.write_text("-----BEGIN NATS USER JWT-----\n...\n")
        creds.chmod(0o644)
        with pytest.raises(KeyFilePermissionError):  # an nkey seed others can read is refused unread
            NatsTransport(url, creds=creds)
    finally:
        natsserver.stop(nodes[0])


def test_a_refusal_cancels_only_the_requests_on_its_own_subject(writer: NatsTransport) -> None:
    """A permissions violation is matched to its subject: requests in flight on granted subjects
    of the same connection complete, and the refused one is AccessDenied (not a timeout)."""
    end = writer.end_offset(TOPIC)

    async def both() -> list[object]:
        return await asyncio.gather(
            writer._append(TOPIC, "beside-a-refusal", 1, framing.encode("beside-a-refusal", [b"ok"], b"seal")),
            writer._get_once(TOPIC, 1),  # a producer may not read: DIRECT.GET is refused
            writer._append(TOPIC, "after-a-refusal", 1, framing.encode("after-a-refusal", [b"ok"], b"seal")),
            return_exceptions=True,
        )

    t0 = time.monotonic()
    first, refused, second = writer._loop.run(both(), 30, "both")
    assert time.monotonic() - t0 < 1.5
    assert isinstance(refused, AccessDenied) and "DIRECT.GET" in refused.message
    assert (first, second) == (end, end + 1)
    assert writer.end_offset(TOPIC) == end + 2
