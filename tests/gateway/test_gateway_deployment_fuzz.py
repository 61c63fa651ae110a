"""Schemathesis against the real backend: random valid and invalid requests from the OpenAPI
document, as a principal allowed nearly everything. No 5xx, and every reply as documented."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from eventward._internal.gateway.openapi import document

from .conftest import AUDIENCE, ISSUER
from .gw_deployment import FUZZER, World
from .gw_support import claims
from .test_gateway_openapi import ACCEPTANCE, REJECTIONS

# Beyond what the document can say, the real backend refuses schema-valid requests on meaning:
# a schema document that is not a usable schema (422), two events with one id (400).
SCHEMA = schemathesis.openapi.from_dict(
    document(),
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTANCE, "400", "422"]},
            }
        }
    ),
)


@pytest.fixture(scope="module")
def real_target(
    jwks_file: Path, signers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    world = World(
        tmp_path_factory.mktemp("gw-fuzz"),
        gateway={
            "auth": "jwt",
            "jwt": {"jwks_file": str(jwks_file), "issuer": ISSUER, "audience": AUDIENCE,
                    "subject_rules": r"RULE:^idp\.test\.local:(fuzzer)$/$1/"},
            "limits": {"max_wait_s": 0.0, "rate_events_per_s": 1e6, "burst_events": 1_000_000},
        },
    )
    token = signers["ec"].sign(claims(ISSUER, AUDIENCE, sub=FUZZER, exp=int(time.time()) + 3600))
    session = requests.Session()
    yield {
        "base_url": f"https://127.0.0.1:{world.port}",
        "session": session,
        "verify": str(world.ca),
        # one connection per request: the gateway closes idle keep-alive connections (header timeout)
        # and requests would not retry a POST on a pooled connection the server just closed
        "headers": {"Authorization": f"Bearer {token}", "Connection": "close"},
    }
    session.close()
    world.close()


# 10 generated requests per operation (about 200 over the API), on top of schemathesis' coverage phase.
@SCHEMA.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_the_real_backend(case, real_target) -> None:
    case.call_and_validate(**real_target)
