"""Regression: a broker permission denial on a mixed-case subject is AccessDenied at once.

nats-py lowercases the server's -ERR text while subjects (and stream names) keep their case,
so a case-sensitive match missed ``$JS.API.STREAM.INFO.EW_Payments``: the request was retried
for the whole backoff budget and ended as TransportUnavailable, as if the broker were down."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from eventward._internal.cli.nats import OPERATOR
from eventward._internal.log.nats import NatsTransport, _violation_about, stream_name
from eventward.errors import AccessDenied

from .conftest import FAST
from .nats_world import OPERATOR_PASSWORD, Deployment, start_passwords

POLICY = """
principals:
  Pay-Writer: {type: service, roles: [writer]}
  reader: {type: service, roles: [reader]}
roles:
  writer: [{allow: publish, topic: Payments.EU}]
  reader: [{allow: subscribe, topic: Refunds}]
"""
PASSWORDS = {"Pay-Writer": "pw-writer-4f1c", "reader": "pw-reader-9a2e"}
TOPIC = "Payments.EU"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = start_passwords(tmp_path_factory.mktemp("mixed-case"), PASSWORDS, policy=POLICY)
    try:
        with NatsTransport(d.urls, user=OPERATOR, password=OPERATOR_PASSWORD, backoff=FAST, timeout_s=2) as op:
            op.create_stream(TOPIC)
            op.create_stream("Refunds")
        yield d
    finally:
        d.stop()


def login(d: Deployment, user: str) -> NatsTransport:
    return NatsTransport(d.urls, user=user, password=PASSWORDS[user], backoff=FAST, timeout_s=2)


def refused_fast(fn) -> AccessDenied:
    t0 = time.monotonic()
    with pytest.raises(AccessDenied) as e:
        fn()
    assert time.monotonic() - t0 < 1.5, "a denial must not be retried like an outage"
    return e.value


def test_mixed_case_denials_surface_as_access_denied_at_once(dep: Deployment) -> None:
    with login(dep, "Pay-Writer") as writer, login(dep, "reader") as reader:
        assert writer.append(TOPIC, "b-1", [b"x"], b"seal") == 0  # granted mixed-case subjects work
        e = refused_fast(lambda: reader.end_offset(TOPIC))
        assert f"$JS.API.STREAM.INFO.{stream_name(TOPIC)}" in e.message  # the original case, named
        refused_fast(lambda: reader.read(TOPIC, 0, 10))
        refused_fast(lambda: reader.append(TOPIC, "forged", [b"fake"], b"seal"))
        refused_fast(lambda: writer.read(TOPIC, 0, 10))
        assert writer.end_offset(TOPIC) == 1  # nothing forged was stored


def test_violation_matching_is_case_insensitive_and_exact() -> None:
    text = 'nats: permissions violation for publish to "$js.api.stream.info.ew_payments_2eeu"'
    assert _violation_about("$JS.API.STREAM.INFO.EW_Payments_2EEU", text)
    assert not _violation_about("$JS.API.STREAM.INFO.EW_Payments", text)  # a prefix is another subject
    assert not _violation_about("$JS.API.STREAM.INFO.EW_Payments_2EEU", "nats: maximum payload exceeded")
    # a subject containing the word "subscription" is not a refused subscription
    pub = 'nats: permissions violation for publish to "ew.subscription-events"'
    assert not _violation_about("$JS.API.STREAM.INFO.EW_other", pub)
    sub = 'nats: permissions violation for subscription to "_inbox_reader.*"'
    assert _violation_about("$JS.API.STREAM.INFO.EW_other", sub)  # our reply inbox: every request fails
