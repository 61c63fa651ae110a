"""The OpenAPI document: in sync with the repo copy and the routes, closed and bounded, and fuzzed
with schemathesis against a real mTLS gateway on the in-memory backend (no 5xx, conforming replies)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from eventward._internal.gateway.openapi import OPERATIONS, SCHEMAS, document

from .conftest import AUDIENCE, ISSUER, Running, gateway_config, start_gateway
from .gw_support import Pki, call, claims, event

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def test_repo_copy_matches_the_code() -> None:
    assert yaml.safe_load(DOC.read_text()) == document(), (
        "run: python -m eventward._internal.gateway > docs/openapi.yaml"
    )


def test_served_document_and_routes(mtls_gateway: Running, gw_pki: Pki) -> None:
    r = call(mtls_gateway.port, gw_pki.client_ctx("orders"), "GET", "/openapi.json")
    assert r.status == 200 and r.json == document()
    ops = {(m.upper(), p) for p, item in document()["paths"].items() for m in item}
    assert ops == {(op.method, op.path) for op in OPERATIONS}
    assert len({op.op_id for op in OPERATIONS}) == len(OPERATIONS)


def test_served_document_and_server_share_the_configured_batch_limit(
    gw_pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """maxItems in /openapi.json is the server's limits.max_batch_events: N events pass, N+1 get 413."""
    limits = {"max_batch_events": 7, "burst_events": 100}
    run = start_gateway(gateway_config(gw_pki, limits=limits), tmp_path_factory.mktemp("limit"))
    try:
        ctx = gw_pki.client_ctx("orders")
        served = call(run.port, ctx, "GET", "/openapi.json").json
        assert served["components"]["schemas"]["PublishRequest"]["maxItems"] == 7 == served["components"][
            "schemas"
        ]["PublishResponse"]["properties"]["accepted"]["maximum"]
        batch = [event(i) for i in range(7)]
        assert call(run.port, ctx, "POST", "/v1/topics/orders/events", batch).status == 200
        over = call(run.port, ctx, "POST", "/v1/topics/orders/events", [*batch, event(7)])
        assert over.status == 413 and over.json["limit"] == 7
    finally:
        run.gw.stop()


def _walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "type" in node:
            yield where, node
        for k, v in node.items():
            yield from _walk(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")


def test_schemas_are_closed_and_bounded() -> None:
    # user schemas / CloudEvents extensions: bounded otherwise
    loose = {"SchemaDocument", "CloudEvent", "DeliveredEvent"}
    for name, schema in SCHEMAS.items():
        for where, node in _walk(schema, name):
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            if "string" in types and "const" not in node and "enum" not in node:
                assert "maxLength" in node, f"{where}: unbounded string"
            if "array" in types:
                assert "maxItems" in node, f"{where}: unbounded array"
            if "integer" in types:
                assert "maximum" in node or "minimum" in node, f"{where}: unbounded integer"
            if "object" in types and name not in loose and "properties" in node:
                assert node.get("additionalProperties") is False, f"{where}: open object"
    assert SCHEMAS["CloudEvent"]["maxProperties"] == 64
    assert SCHEMAS["SchemaDocument"]["maxProperties"] == 256


# --- schemathesis ------------------------------------------------------------------------------

# 408 and 413 are how the gateway rejects slow or oversized input; the rest is schemathesis' default.
# Valid data may also meet 413: the document bounds each event, the total body size is configuration.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "408", "409", "413", "415", "422", "428", "429"]
ACCEPTANCE = ["2xx", "3xx", "401", "403", "404", "409", "413", "429"]
SCHEMA = schemathesis.openapi.from_dict(
    document(max_batch=1000),  # the fuzz target's configured limit
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
                # 400 too: schemathesis' coverage phase labels a case positive when only its path is
                # (a near-boundary topic) and its body is a negative one, e.g. `[0]` for a batch
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTANCE, "400"]},
            }
        }
    ),
)


@pytest.fixture(scope="module")
def fuzz_target(
    gw_pki: Pki, jwks_file: Path, signers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A JWT-mode gateway (so schemathesis' ignored-auth check has a token to tamper with) with a
    token for the principal holding the broadest grants; long polls off to keep the run short."""
    limits = {
        "max_wait_s": 0.0,
        "max_batch_events": 1000,
        "rate_events_per_s": 1e6,
        "burst_events": 1_000_000,
    }
    cfg = gateway_config(
        gw_pki,
        auth="jwt",
        limits=limits,
        jwt={"jwks_file": str(jwks_file), "issuer": ISSUER, "audience": AUDIENCE,
             "subject_rules": r"RULE:^idp\.test\.local:(admin)$/$1/"},  # the IdP's admin, mapped explicitly
    )
    run = start_gateway(cfg, tmp_path_factory.mktemp("home"))
    token = signers["ec"].sign(claims(ISSUER, AUDIENCE, sub="admin", exp=int(time.time()) + 3600))
    session = requests.Session()
    yield {
        "base_url": f"https://127.0.0.1:{run.port}",
        "session": session,
        "verify": str(gw_pki.ca_file),
        # one connection per request: the gateway closes idle keep-alive connections (header timeout)
        # and requests would not retry a POST on a pooled connection the server just closed
        "headers": {"Authorization": f"Bearer {token}", "Connection": "close"},
    }
    session.close()
    run.gw.stop()


@SCHEMA.parametrize()
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_api(case: schemathesis.Case, fuzz_target) -> None:
    """No 5xx; statuses, content types, headers and bodies as documented; bad input and bad auth refused."""
    case.call_and_validate(**fuzz_target)
