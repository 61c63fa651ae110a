"""Property tests for the gateway's request bodies against the real deployment backend: random
bytes, random JSON and structure-aware mutations of valid requests (publish batches and the
control-plane bodies) never get a 5xx (the gateway's answer to an exception outside
eventward's typed errors), and every refusal is a problem document with its status.

The app runs in-process through aiohttp's test client on 127.0.0.1 (no TLS: the principal is
fixed by the dev authenticator, which is all body parsing needs). Schema proposals are left to
the schema loaders' own property tests.
"""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from eventward._internal import demo
from eventward._internal.deployment import Deployment
from eventward._internal.gateway.app import BATCH, JSON, build_app
from eventward._internal.gateway.auth import DevAuthenticator
from eventward._internal.gateway.config import LimitsConfig
from eventward._internal.gateway.deployment_backend import DeploymentBackend
from eventward._internal.home import Home

from .gw_deployment import ADMIN, APPROVER, AUTHOR, FUZZER, ORDERS, POLICY, TYPE, cloudevent, order

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
PROBLEM = "application/problem+json"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["1.0", TYPE, "orders", "pii", "g1", "cust-1", "ew1.g.k1.AAAA", "2024-01-01T00:00:00Z"])
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)

CONTROL = {
    "/v1/topics/{topic}/ack": {"group": "g1", "offset": 0},
    "/v1/subjects/hold": {"subject": "cust-hold-1", "reason": "case-1"},
    "/v1/subjects/release": {"subject": "cust-hold-1"},
    "/v1/subjects/forget": {"subject": "cust-gone-1"},
    "/v1/policy/explain": {"principal": ORDERS, "action": "publish", "resource": {"type": "Topic", "id": "orders"}},
    "/v1/keys/unwrap": {"kid": "k1", "class": "pii"},
}
READING = "MeterReading"
READING_SCHEMA = {
    "type": "object",
    "properties": {"meter": {"type": "string"}, "kwh": {"type": "number"}},
    "required": ["meter", "kwh"],
}


def reading(i: int) -> dict[str, Any]:
    return cloudevent({"meter": f"m-{i}", "kwh": 1.5 + i}, type_=READING)


class Gateway:
    """A deployment home, its backend and the gateway app on an in-process test server."""

    def __init__(self, root: Path) -> None:
        self.dep = Deployment.init(Home(root / "home"), admin=ADMIN, policy_yaml=POLICY)
        for p in (ORDERS, FUZZER):
            self.dep.trust.ensure(p, by=ADMIN)
        prop = self.dep.registry.propose(AUTHOR, TYPE, orjson.loads(demo.example("order_placed.schema.json")))
        self.dep.registry.approve(APPROVER, TYPE, prop.version)
        prop = self.dep.registry.propose(AUTHOR, READING, READING_SCHEMA)  # nothing to encrypt
        self.dep.registry.approve(APPROVER, READING, prop.version)
        self.backend = DeploymentBackend(self.dep, poll_interval=0.05)
        limits = LimitsConfig(rate_events_per_s=1e6, burst_events=1_000_000, max_wait_s=0.0)
        app = build_app(self.backend, DevAuthenticator(FUZZER), limits, audit=self.backend.audit)
        self.loop = asyncio.new_event_loop()

        async def start() -> TestClient:
            client = TestClient(TestServer(app, host="127.0.0.1"))
            await client.start_server()
            return client

        self.client = self.loop.run_until_complete(start())
        self.topic = f"orders.p{uuid.uuid4().hex[:8]}"

    def post(self, path: str, body: bytes, ctype: str = JSON) -> tuple[int, Any, str]:
        async def go() -> tuple[int, bytes, str]:
            async with self.client.post(path, data=body, headers={"Content-Type": ctype}) as r:
                return r.status, await r.read(), r.content_type

        status, raw, rtype = self.loop.run_until_complete(go())
        return status, orjson.loads(raw) if raw else None, rtype

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.client.close())
            self.loop.close()
        finally:
            self.backend.close()
            self.dep.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("gw-prop"))
    yield g
    g.close()


def answered(gw: Gateway, path: str, body: bytes, ctype: str = JSON) -> tuple[int, Any]:
    """POST and check the property: no 5xx, and a refusal is a problem document."""
    status, doc, rtype = gw.post(path.format(topic=gw.topic), body, ctype)
    if currently_in_test_context():  # the spread shows in --hypothesis-show-statistics
        event(f"{path.rsplit('/', 1)[-1]}: HTTP {status}")
    assert status < 500, (status, doc)
    if status >= 400:
        assert rtype == PROBLEM and isinstance(doc, dict) and doc.get("status") == status, (status, doc)
    return status, doc


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """``doc`` with one place at any depth replaced by an arbitrary value or deleted."""
    doc = copy.deepcopy(doc)
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            return data.draw(values)
        key = data.draw(st.sampled_from(keys))
        if isinstance(node[key], dict | list) and node[key] and data.draw(st.booleans()):
            node = node[key]
            continue
        if data.draw(st.booleans()):
            node[key] = data.draw(values)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
        return doc


# --- publish ---------------------------------------------------------------------------------

PUBLISH = "/v1/topics/{topic}/events"


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([JSON, BATCH]))
def test_property_gateway_publish_random_bytes(gw: Gateway, body: bytes, ctype: str) -> None:
    answered(gw, PUBLISH, body, ctype)


@SETTINGS
@given(values)
def test_property_gateway_publish_random_json(gw: Gateway, doc: Any) -> None:
    answered(gw, PUBLISH, orjson.dumps(doc), BATCH)
    answered(gw, PUBLISH, orjson.dumps([doc]), BATCH)


@SETTINGS
@given(data=st.data())
def test_property_gateway_publish_mutated_batches(gw: Gateway, data: st.DataObject) -> None:
    batch = data.draw(
        st.sampled_from([[reading(0), reading(1)], [cloudevent(order(i, customer=f"cust-{i}")) for i in range(2)]])
    )
    answered(gw, PUBLISH, orjson.dumps(_mutate(batch, data)), BATCH)


# --- control-plane bodies --------------------------------------------------------------------


@SETTINGS
@given(st.sampled_from(sorted(CONTROL)), st.binary(max_size=200) | st.builds(orjson.dumps, values))
def test_property_gateway_control_random_bodies(gw: Gateway, path: str, body: bytes) -> None:
    answered(gw, path, body)


@SETTINGS
@given(st.sampled_from(sorted(CONTROL)), st.data())
def test_property_gateway_control_mutated_bodies(gw: Gateway, path: str, data: st.DataObject) -> None:
    answered(gw, path, orjson.dumps(_mutate(CONTROL[path], data)))


# --- non-finite numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1E+400", "nan", "inf"])
def test_attack_nan_at_gateway(gw: Gateway, literal: str) -> None:
    """JSON has no NaN or Infinity: a body spelling one (or a number too large for a double) is a
    400 problem, nothing is stored, and the next good request from the same client is accepted."""
    topic = f"orders.n{uuid.uuid4().hex[:8]}"
    path = f"/v1/topics/{topic}/events"
    good = orjson.dumps([reading(1)]).decode()
    bad = good.replace('"kwh":2.5', f'"kwh":{literal}')
    assert bad != good
    status, doc = answered(gw, path, bad.encode(), BATCH)
    assert status == 400 and "json" in str(doc.get("rule", "")) + str(doc.get("detail", "")).lower()
    status, doc = answered(gw, path, good.encode(), BATCH)
    assert status in (200, 201, 202) and doc["accepted"] == 1, doc
    assert gw.dep.transport.end_offset(topic) == 1  # only the good event is stored


# --- query strings -------------------------------------------------------------------------------

QUERY_VALUES = st.text(max_size=12) | st.sampled_from(["0", "-1", "5.0", "1e308", "1e999", "nan", "9" * 40, "0x10"])


@SETTINGS
@given(
    st.sampled_from(["/v1/topics/{topic}/events", "/v1/audit/proof"]),
    st.lists(st.tuples(st.sampled_from(["group", "max", "wait", "index", "tree_size", "x"]), QUERY_VALUES), max_size=4),
)
def test_property_gateway_query_strings(gw: Gateway, path: str, query: list[tuple[str, str]]) -> None:
    async def go() -> tuple[int, bytes, str]:
        async with gw.client.get(path.format(topic=gw.topic), params=query) as r:
            return r.status, await r.read(), r.content_type

    status, raw, rtype = gw.loop.run_until_complete(go())
    assert status < 500, (status, raw[:200])
    if status >= 400:
        assert rtype == PROBLEM and orjson.loads(raw)["status"] == status


def test_property_gateway_query_integer_beyond_int_digit_limit(gw: Gateway) -> None:
    """4,400 digits: past Python's int-parsing limit, and infinite as a float: a typed 400."""
    async def go() -> tuple[int, Any]:
        async with gw.client.get("/v1/audit/proof", params={"index": "9" * 4400}) as r:
            return r.status, await r.json(content_type=None)

    status, doc = gw.loop.run_until_complete(go())
    assert status == 400 and doc["status"] == 400
