"""The CloudEvents HTTP protocol binding at the gateway, driven by the ``cloudevents`` SDK (2.2.0).

Events are built and encoded by the SDK in structured, batched and binary mode, published through
a real mTLS gateway over a real Deployment, consumed by a cleared principal and parsed back by the
SDK: ``time``, ``dataschema``, ``traceparent``/``tracestate`` and other extensions arrive as sent,
with eventward's own acceptance time in ``ewtime``. Ambiguous or spoofing requests are refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from eventward._internal import envelope

from .gw_deployment import ORDERS, SHIPPING, TYPE, cloudevent, order
from .gw_support import Reply, call

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
DATASCHEMA = "https://schemas.example.com/orders/OrderPlaced/v1.json"
FMT = JSONFormat()


def topic() -> str:
    return f"orders.ce{uuid.uuid4().hex[:10]}"


def sdk_event(i: int, *, data: Any = None) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": f"ce-{uuid.uuid4()}",
            "source": "/tests/gateway/cloudevents",
            "type": TYPE,
            "time": datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
            "dataschema": DATASCHEMA,
            "datacontenttype": "application/json",
            "traceparent": TRACEPARENT,
            "tracestate": TRACESTATE,
            "comexampletenant": "acme",
        },
        data=order(i, customer=f"cust-ce-{i}") if data is None else data,
    )


def post(world: Any, t: str, body: bytes, headers: dict[str, str], who: str = ORDERS) -> Reply:
    return call(world.port, world.ctx(who), "POST", f"/v1/topics/{t}/events", raw=body, headers=headers)


def consumed(world: Any, t: str) -> list[dict[str, Any]]:
    r = world.consume(SHIPPING, t, "ce-readers")
    assert r.status == 200, r.json
    return [d["event"] for d in r.json["events"]]


def assert_round_trip(sent: CloudEvent, got: dict[str, Any]) -> None:
    """What the SDK reads back is what it sent, attribute by attribute, data decrypted."""
    back = FMT.read(None, orjson.dumps(got))
    assert back.get_id() == sent.get_id() and back.get_source() == sent.get_source()
    assert back.get_time() == sent.get_time()  # the producer's time, not eventward's
    assert back.get_dataschema() == DATASCHEMA
    assert back.get_extension("traceparent") == TRACEPARENT
    assert back.get_extension("tracestate") == TRACESTATE
    assert back.get_extension("comexampletenant") == "acme"
    expected = sent.get_data()
    assert back.get_data() == (orjson.loads(expected) if isinstance(expected, bytes) else expected)
    received = envelope.parse_time(got[envelope.EXT_RECEIVED])  # eventward's own time, kept apart
    assert received > sent.get_time().timestamp() + 3600


@pytest.mark.parametrize("mode", ["structured", "batched", "binary"])
def test_the_sdk_round_trips_events_through_the_gateway(dep_world, mode: str) -> None:
    t = topic()
    sent = [sdk_event(1), sdk_event(2)]
    if mode == "structured":
        replies = [post(dep_world, t, m.body, m.headers) for m in map(ce_http.to_structured_event, sent)]
    elif mode == "binary":
        replies = [post(dep_world, t, m.body, m.headers) for m in map(ce_http.to_binary_event, sent)]
    else:
        body = b"[" + b",".join(FMT.write(e) for e in sent) + b"]"
        replies = [post(dep_world, t, body, {"Content-Type": "application/cloudevents-batch+json"})]
    for r in replies:
        assert r.status == 200, r.json
    got = consumed(dep_world, t)
    assert [g["id"] for g in got] == [e.get_id() for e in sent]
    for e, g in zip(sent, got, strict=True):
        assert_round_trip(e, g)


def test_json_data_sent_as_data_base64_is_accepted_and_stored_as_data(dep_world) -> None:
    """The SDK writes bytes data as data_base64; JSON bytes under a JSON content type are JSON data."""
    t = topic()
    sent = sdk_event(3, data=orjson.dumps(order(3, customer="cust-ce-b64")))
    msg = ce_http.to_structured_event(sent)
    assert b'"data_base64"' in msg.body
    r = post(dep_world, t, msg.body, msg.headers)
    assert r.status == 200, r.json
    (got,) = consumed(dep_world, t)
    assert "data_base64" not in got and got["data"] == order(3, customer="cust-ce-b64")
    assert_round_trip(sent, got)


def test_null_attributes_are_unset_at_the_gateway(dep_world) -> None:
    t = topic()
    ev = cloudevent(order(4), subject=None, dataschema=None, comexampletenant=None, time=None)
    r = dep_world.publish(ORDERS, t, [ev])
    assert r.status == 200, r.json
    (got,) = consumed(dep_world, t)
    assert not {"subject", "dataschema", "comexampletenant"} & set(got)
    assert got["time"] == got[envelope.EXT_RECEIVED]  # no producer time: eventward's is the event's


# --- refusals -------------------------------------------------------------------------------------


def binary_headers(**over: str) -> dict[str, str]:
    h = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": f"bin-{uuid.uuid4()}",
        "ce-source": "/tests/gateway/binary",
        "ce-type": TYPE,
    }
    h.update(over)
    return h


def test_attack_binary_mode_header_cannot_spoof_eventwards_producer_attribute(dep_world) -> None:
    """A client naming itself someone else through eventward's own extension is refused by name."""
    t = topic()
    r = post(dep_world, t, orjson.dumps(order(5)), binary_headers(**{"ce-ewproducer": "shipping-svc"}))
    assert r.status == 400 and "'ewproducer' is reserved" in r.json["detail"], r.json
    r = post(dep_world, t, orjson.dumps(order(5)), binary_headers(**{"ce-ewtime": "2020-01-01T00:00:00Z"}))
    assert r.status == 400 and "'ewtime' is reserved" in r.json["detail"], r.json
    assert dep_world.end(t) == 0


def test_attack_binary_mode_spoofed_source_header_repeated(dep_world) -> None:
    """Two ce-source headers: a proxy may keep one, the gateway another; refuse instead of choosing."""
    t = topic()
    raw_headers = [*binary_headers().items(), ("ce-source", "/someone/else")]
    r = _post_raw_headers(dep_world, t, orjson.dumps(order(6)), raw_headers)
    assert r.status == 400 and "'ce-source' is repeated" in r.json["detail"], r.json
    assert dep_world.end(t) == 0


def test_attack_ce_headers_on_a_structured_request_are_refused(dep_world) -> None:
    """Structured body says one source, a ce-source header another: ambiguous, so refused."""
    t = topic()
    msg = ce_http.to_structured_event(sdk_event(7))
    r = post(dep_world, t, msg.body, {**msg.headers, "ce-source": "/someone/else"})
    assert r.status == 400 and "'ce-source' header" in r.json["detail"], r.json
    r = post(dep_world, t, orjson.dumps([cloudevent(order(7))]), {"Content-Type": "application/json", "ce-type": "X"})
    assert r.status == 400 and "'ce-type' header" in r.json["detail"], r.json
    assert dep_world.end(t) == 0


def test_an_empty_batch_is_refused_by_design(dep_world) -> None:
    t = topic()
    r = post(dep_world, t, b"[]", {"Content-Type": "application/cloudevents-batch+json"})
    assert r.status == 400 and r.json["rule"] == "minItems", r.json


def test_a_structured_format_other_than_json_is_415_whatever_the_headers(dep_world) -> None:
    t = topic()
    for headers in ({}, {"ce-specversion": "1.0"}):
        r = post(dep_world, t, b"\x00avro", {"Content-Type": "application/cloudevents+avro", **headers})
        assert r.status == 415 and "Content-Type must be" in r.json["detail"], r.json


def test_attack_binary_mode_non_json_data_is_415_and_datacontenttype_header_refused(dep_world) -> None:
    t = topic()
    r = post(dep_world, t, b"\x00\x01binary", binary_headers(**{"Content-Type": "application/octet-stream"}))
    assert r.status == 415 and "binary-mode data must be JSON" in r.json["detail"], r.json
    r = post(dep_world, t, orjson.dumps(order(8)), binary_headers(**{"ce-datacontenttype": "text/plain"}))
    assert r.status == 400 and "'ce-datacontenttype'" in r.json["detail"], r.json
    assert dep_world.end(t) == 0


def test_attack_binary_data_base64_is_refused_not_stored_opaque(dep_world) -> None:
    """Bytes the schema cannot validate and the gateway cannot encrypt never reach the log."""
    t = topic()
    ev = {k: v for k, v in cloudevent(None).items() if k != "data"}
    opaque = {**ev, "datacontenttype": "application/octet-stream", "data_base64": "AAECAw=="}
    r = dep_world.publish(ORDERS, t, [opaque])
    assert r.status == 400 and r.json["path"] == "body[0].datacontenttype", r.json  # JSON types only
    not_json = {**ev, "data_base64": "AAECAw=="}  # says JSON, holds bytes
    r = dep_world.publish(ORDERS, t, [not_json])
    assert r.status == 400 and "does not hold JSON" in r.json["detail"], r.json
    assert dep_world.end(t) == 0


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-abc",
        TRACEPARENT + "\n",  # a line break smuggled towards a tracer's header
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        "ff" + TRACEPARENT[2:],
    ],
)
def test_malformed_traceparent_is_refused_at_the_gateway(dep_world, traceparent: str) -> None:
    t = topic()
    r = dep_world.publish(ORDERS, t, [cloudevent(order(9), traceparent=traceparent)])
    assert r.status == 400, r.json
    assert "traceparent" in r.json["detail"] or r.json.get("path", "").endswith("traceparent")
    assert dep_world.end(t) == 0


def _post_raw_headers(world: Any, t: str, body: bytes, headers: list[tuple[str, str]]) -> Reply:
    """A request with repeated headers (http.client's dict API cannot send them)."""
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", world.port, context=world.ctx(ORDERS), timeout=10)
    try:
        conn.putrequest("POST", f"/v1/topics/{t}/events")
        for k, v in [*headers, ("Content-Length", str(len(body)))]:
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


# --- the Python SDK: the same attributes, kept by Producer.send and delivered by the Consumer ------


def test_the_python_sdk_keeps_and_delivers_the_attributes(dep_world) -> None:
    t = topic()
    with dep_world.dep.producer(ORDERS, t) as p:
        p.send(
            TYPE,
            order(10, customer="cust-ce-sdk"),
            time="2020-01-02T03:04:05.123456Z",
            dataschema=DATASCHEMA,
            extensions={"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "comexampletenant": "acme"},
        )
    c = dep_world.dep.consumer(SHIPPING, t, group=f"sdk-{uuid.uuid4().hex[:8]}", from_beginning=True)
    got: list[Any] = []
    c.run(got.append, idle_timeout=0)
    c.close()
    (e,) = got
    assert e.time == "2020-01-02T03:04:05.123456Z"
    assert e.attributes["traceparent"] == TRACEPARENT and e.attributes["tracestate"] == TRACESTATE
    assert e.attributes["dataschema"] == DATASCHEMA and e.attributes["comexampletenant"] == "acme"
    assert envelope.parse_time(e.attributes[envelope.EXT_RECEIVED]) > envelope.parse_time(e.time) + 3600
    back = FMT.read(None, orjson.dumps(e.to_json()))  # what a handler forwards is a valid CloudEvent
    assert back.get_extension("traceparent") == TRACEPARENT and back.get_data() == e.data


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"extensions": {"ewproducer": "shipping-svc"}}, "'ewproducer' is reserved"),
        ({"extensions": {"ewtime": "2020-01-01T00:00:00Z"}}, "'ewtime' is reserved"),
        ({"extensions": {"time": "2020-01-01T00:00:00Z"}}, "not an extension"),
        ({"datacontenttype": "text/plain"}, "must be a JSON media type"),
        ({"extensions": {"traceparent": "00-abc"}}, "traceparent"),
        ({"dataschema": "relative/path"}, "dataschema"),
    ],
)
def test_attack_sdk_producer_refuses_attributes_it_cannot_keep(dep_world, kwargs: dict[str, Any], why: str) -> None:
    """Refused by name before anything is buffered: eventward's own attributes cannot be forged."""
    from eventward.errors import EnvelopeError

    t = topic()
    with dep_world.dep.producer(ORDERS, t) as p:
        with pytest.raises(EnvelopeError, match=why):
            p.send(TYPE, order(11), **kwargs)
        assert p.pending() == 0
    assert dep_world.end(t) == 0


def test_cli_produce_keeps_a_full_cloudevents_attributes(dep_world) -> None:
    """`eventward produce` with full CloudEvents lines: time, dataschema and extensions are kept
    (they were silently ignored before), eventward's own attributes refused naming the line."""
    from typer.testing import CliRunner

    from eventward._internal.cli import app

    t = topic()
    ev = {
        **cloudevent(order(12, customer="cust-ce-cli"), id_="cli-1"),
        "time": "2020-01-02T03:04:05Z",
        "dataschema": DATASCHEMA,
        "traceparent": TRACEPARENT,
        "subject": None,
    }
    args = ["--home", str(dep_world.home.root), "produce", t, "-", "--as", ORDERS]
    env = {"EVENTWARD_PRINCIPAL": None}
    r = CliRunner().invoke(app, args, input=orjson.dumps(ev).decode() + "\n", env=env)
    assert r.exit_code == 0, r.output
    (got,) = consumed(dep_world, t)
    assert got["id"] == "cli-1" and got["time"] == "2020-01-02T03:04:05Z" and "subject" not in got
    assert got["dataschema"] == DATASCHEMA and got["traceparent"] == TRACEPARENT
    spoof = orjson.dumps({**ev, "id": "cli-2", "ewproducer": SHIPPING}).decode()
    r = CliRunner().invoke(app, args, input=spoof + "\n", env=env)
    assert r.exception is not None and "line 1" in r.exception.message and "'ewproducer' is reserved" in (
        r.exception.message
    )
    assert dep_world.end(t) == 1
