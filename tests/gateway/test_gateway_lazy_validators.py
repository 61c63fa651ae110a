"""The gateway compiles an operation's request validators at its first request, not at startup.

Compiling all ~66 fastjsonschema validators made every ``eventward serve`` start cost ~2 s of
CPU. Now building the app compiles none; an operation's path, query and body validators are
compiled once, from the same schemas, when it is first asked for, and a request is refused
exactly as the eagerly compiled validators refuse it (same status, code, detail, path, rule).
Counted with a wrapper around ``app._compile``, never timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from eventward._internal.gateway import app as gateway_app
from eventward._internal.gateway import openapi, problems
from eventward._internal.gateway.app import JSON, build_app, gateway_of
from eventward._internal.gateway.auth import DevAuthenticator
from eventward._internal.gateway.config import LimitsConfig
from eventward.errors import InputError


class _NoBackend:
    """Every request here is refused before the backend: reaching it is a 500, and a failure."""

    shared_quota = None  # no replicas sharing a quota

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"backend.{name} reached with invalid input")


class _Served:
    def __init__(self, limits: LimitsConfig) -> None:
        self.app = build_app(_NoBackend(), DevAuthenticator("tester"), limits)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.client: TestClient = self.loop.run_until_complete(self._start())

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.app, host="127.0.0.1"))
        await client.start_server()
        return client

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        async def go() -> tuple[int, bytes]:
            data = None if body is None else orjson.dumps(body)
            async with self.client.request(method, path, data=data, headers={"Content-Type": JSON}) as r:
                return r.status, await r.read()

        status, raw = self.loop.run_until_complete(go())
        return status, orjson.loads(raw)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The schemas ``app._compile`` was called with, in order."""
    seen: list[Any] = []
    real: Callable[..., Any] = gateway_app._compile

    def counted(schema: Any, schemas: Any) -> Any:
        seen.append(schema)
        return real(schema, schemas)

    monkeypatch.setattr(gateway_app, "_compile", counted)
    return seen


@pytest.fixture
def served(compiles: list[Any]) -> Iterator[_Served]:
    s = _Served(LimitsConfig(rate_events_per_s=1e6, burst_events=1_000_000, max_batch_events=7))
    yield s
    s.close()


def _op(op_id: str) -> openapi.Operation:
    return next(op for op in openapi.OPERATIONS if op.op_id == op_id)


def test_startup_compiles_no_validator(served: _Served, compiles: list[Any]) -> None:
    assert compiles == []
    assert gateway_of(served.app).validators == {}


def test_first_request_compiles_its_operation_once(served: _Served, compiles: list[Any]) -> None:
    status, doc = served.request("GET", "/healthz")
    assert (status, doc) == (200, {"status": "ok"})
    assert set(gateway_of(served.app).validators) == {"healthz"}
    first = len(compiles)
    assert first == 1  # healthz has a query validator only (no path parameters, no body)
    for _ in range(3):
        assert served.request("GET", "/healthz")[0] == 200
    assert len(compiles) == first  # kept, not compiled again
    served.request("POST", "/v1/topics/orders/ack", {"group": "g"})  # refused (no offset): compiled on the way
    assert set(gateway_of(served.app).validators) == {"healthz", "ack"}
    assert len(compiles) == first + 3  # ack: path, query and body


def _expected(op_id: str, where: str, doc: Any, limits: LimitsConfig) -> tuple[int, dict[str, Any]]:
    """What the validators compiled eagerly, as every gateway did before, answer for ``doc``."""
    v = gateway_app._validators(_op(op_id), openapi.schemas(limits.max_batch_events))
    with pytest.raises(InputError) as refused:
        gateway_app._check(getattr(v, where), doc, where)
    resp = problems.from_error(refused.value, "urn:x", payload=doc)
    assert isinstance(resp.body, bytes)
    return resp.status, orjson.loads(resp.body)


# (operation, method, path, body, which validator refuses, the document it sees)
INVALID = [
    ("ack", "POST", "/v1/topics/orders/ack", {"group": "g"}, "body", {"group": "g"}),
    ("ack", "POST", "/v1/topics/orders/ack", {"group": "g", "offset": "1"}, "body", {"group": "g", "offset": "1"}),
    ("ack", "POST", "/v1/topics/orders/ack", {"group": "g", "offset": 1, "extra": True}, "body",
     {"group": "g", "offset": 1, "extra": True}),
    ("forget", "POST", "/v1/subjects/forget", {"subject": "c1", "reason": "free text here"}, "body",
     {"subject": "c1", "reason": "free text here"}),
    ("publish", "POST", "/v1/topics/orders/events", [{"specversion": "1.0"}], "body", [{"specversion": "1.0"}]),
    ("consume", "GET", "/v1/topics/orders/events?group=g&max=0", None, "query", {"group": "g", "max": 0}),
    ("consume", "GET", "/v1/topics/orders/events?group=g&bogus=1", None, "query", {"group": "g", "bogus": "1"}),
    ("ack", "POST", "/v1/topics/" + "t" * 300 + "/ack", {"group": "g", "offset": 1}, "path", {"topic": "t" * 300}),
]


@pytest.mark.parametrize(("op_id", "method", "path", "body", "where", "seen"), INVALID)
def test_invalid_input_is_refused_as_the_eager_validators_refuse_it(
    served: _Served, op_id: str, method: str, path: str, body: Any, where: str, seen: Any
) -> None:
    status, doc = served.request(method, path, body)
    doc.pop("instance")
    want_status, want = _expected(op_id, where, seen, gateway_of(served.app).limits)
    want.pop("instance")
    assert status == want_status and status in (400, 413, 422), (status, doc)
    assert doc == want
    assert op_id in gateway_of(served.app).validators


def test_every_operation_compiles_and_is_kept(served: _Served) -> None:
    """What startup used to prove for every gateway: each operation's schemas compile (a broken
    one would now surface at its first request). Each is compiled once and then kept."""
    gw = gateway_of(served.app)
    for op in openapi.OPERATIONS:
        v = gw.validators_of(op)
        assert v.query is not None and (v.body is not None) == bool(op.body)
        assert (v.path is not None) == any(p.where == "path" for p in op.params)
        assert gw.validators_of(op) is v
    assert set(gw.validators) == {op.op_id for op in openapi.OPERATIONS}
