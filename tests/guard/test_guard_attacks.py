"""Attacks on the guard's edges: a pipeline that is not cleared for what it transforms, a JWT
or private key hidden in an array, the CLI producer path, and oversize or hostile values."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventward._internal.cli import app, common
from eventward._internal.deployment import Deployment
from eventward._internal.guard.detectors import MAX_SCAN_CHARS, default_detectors
from eventward._internal.guard.pipeline import Pipeline, PipelineSpec
from eventward._internal.guard.scan import findings
from eventward._internal.home import Home
from eventward.errors import SensitiveDataRefused

from .conftest import ORDER, POLICY, order, order_schema, publish_schema
from .test_guard_pipeline import ANALYTICS, PIPELINE

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"

BLIND_POLICY = POLICY.replace(
    "  redactor: {type: service, roles: [redactor]}\n",
    "  redactor: {type: service, roles: [redactor]}\n  blind: {type: service, roles: [blind]}\n",
) + (
    "  blind:\n    - {allow: subscribe, topic: orders}\n    - {allow: publish, topic: orders.analytics}\n"
    "    - {allow: encrypt, class: pii}\n"
)


def test_attack_pipeline_not_cleared_for_a_field_emits_nothing(tmp_path: Path) -> None:
    """A redactor without Decrypt on pii reads "[redacted]": tokenizing that would emit a
    constant that looks like data. It refuses instead; nothing reaches the clean stream."""
    with Deployment.init(Home(tmp_path / "home"), admin="admin", policy_yaml=BLIND_POLICY) as dep:
        for p in ("orders-svc", "blind"):
            dep.trust.ensure(p, by="admin")
        publish_schema(dep, "OrderPlaced", copy.deepcopy(ORDER))
        publish_schema(dep, "OrderPlacedAnalytics", copy.deepcopy(ANALYTICS))
        with dep.producer("orders-svc", "orders") as producer:
            producer.send("OrderPlaced", order(1))
        spec = PipelineSpec.from_yaml(PIPELINE.replace("principal: redactor", "principal: blind"))
        stats = Pipeline(dep, spec).run(idle_timeout=0.3)
        assert stats.emitted == 0 and stats.refused >= 1
        assert not dep.transport.has_stream("orders.analytics") or dep.transport.end_offset("orders.analytics") == 0
        assert dep.transport.end_offset("orders.dlq") == 1


@pytest.mark.parametrize("secret", [JWT, PEM], ids=["jwt", "pem"])
def test_attack_secret_in_an_array_item_is_blocked(dep: Deployment, secret: str) -> None:
    doc = order_schema("block")
    doc["properties"]["lines"] = {"type": "array", "items": {"type": "object",
                                                            "properties": {"debug": {"type": "string"}}}}
    publish_schema(dep, "OrderPlaced", doc)
    with dep.producer("orders-svc", "orders") as producer, pytest.raises(SensitiveDataRefused) as ei:
        producer.send("OrderPlaced", order(1, lines=[{"debug": "ok"}, {"debug": f"token {secret}"}]))
    assert [p for p, _ in ei.value.findings] == ["lines[].debug"]
    assert secret[:20] not in ei.value.message


def test_attack_produce_cli_refuses_with_exit_8_naming_path_and_kind(
    dep: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_schema(dep, "OrderPlaced", order_schema("block"))
    line = json.dumps({"type": "OrderPlaced", "data": order(1, notes=f"auth {JWT}")})
    stdin = _Stdin(line + "\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "argv", ["eventward", "--home", str(dep.home.root), "produce", "orders",
                                      "--as", "orders-svc", "-"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as ei:
        common.run(app)
    out, err = capsys.readouterr()
    assert ei.value.code == 8
    assert "untagged_sensitive_data" in err and "notes (jwt)" in err and JWT[:20] not in err + out
    assert not dep.transport.has_stream("orders") or dep.transport.end_offset("orders") == 0


class _Stdin:
    def __init__(self, text: str) -> None:
        import io

        self.buffer = io.BytesIO(text.encode())

    def isatty(self) -> bool:
        return False

    def __iter__(self) -> Any:
        return iter(self.buffer.getvalue().decode().splitlines(keepends=True))

    def read(self, *a: Any) -> str:
        return self.buffer.read(*a).decode()


def test_attack_huge_and_hostile_values_scan_in_bounded_time() -> None:
    det = default_detectors()
    hostile = {"a": "9" * (MAX_SCAN_CHARS + 10), "b": "@" * 200_000, "c": "1.1." * 50_000,
               "d": [["x"] * 10] * 1000, "e": {"k" * 70: "v" * 10}}
    t0 = time.perf_counter()
    findings(hostile, _empty_spec())
    assert time.perf_counter() - t0 < 10
    assert det.kinds("x" * 100) == set()


def _empty_spec() -> Any:
    from eventward._internal.fieldspec import FieldSpec

    return FieldSpec()
