"""``eventward nats streams`` and ``eventward nats consumers`` against a real nats-server: the
numbers an operator reads (events, sealed batches, committed offsets, lag) are the transport's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import nats

from eventward._internal.log import natsserver
from eventward._internal.log.nats import stream_name

from .conftest import nats_client


def _home(tmp_path: Path, node: natsserver.Node) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "eventward.yaml").write_text(f"transport: nats\nnats:\n  servers: [{node.url(tls=False)}]\n")
    return home


def _ew(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventward._internal.cli", "--home", str(home), "nats", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_streams_and_consumers_report_events_batches_and_lag(tmp_path: Path, nats_node: natsserver.Node) -> None:
    topic = f"admin.{uuid.uuid4().hex[:10]}"
    t = nats_client(nats_node)
    try:
        t.create_stream(topic)
        t.append(topic, "b1", [b"e0", b"e1", b"e2"], b"seal")
        t.append(topic, "b2", [b"e3", b"e4"], b"seal")
        t.commit("billing", topic, 2)
        t.commit("audit-team", topic, 5)
    finally:
        t.close()
    home = _home(tmp_path, nats_node)

    r = _ew(home, "streams", "--json")
    assert r.returncode == 0, r.stderr
    mine = [s for s in json.loads(r.stdout)["streams"] if s["stream"] == topic]
    assert len(mine) == 1
    s = mine[0]
    assert (s["events"], s["batches"], s["replicas"]) == (5, 2, 1)
    assert s["jetstream_stream"].startswith("EW_") and s["bytes"] > 0

    r = _ew(home, "consumers", "--json")
    assert r.returncode == 0, r.stderr
    groups = {g["group"]: g for g in json.loads(r.stdout)["groups"] if g["stream"] == topic}
    assert groups["billing"] == {"group": "billing", "stream": topic, "committed": 2, "end": 5, "lag": 3}
    assert groups["audit-team"]["lag"] == 0

    table = _ew(home, "consumers")
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if "billing" in line and topic in line)
    # piped, so never wrapped: the whole row (full stream name included) is one line
    assert [c.strip() for c in row.split("│")[1:6]] == ["billing", topic, "2", "5", "3"]


def test_native_jetstream_consumers_are_listed_with_their_backlog(tmp_path: Path, nats_node: natsserver.Node) -> None:
    """A consumer made by another tool (not an eventward group) shows its pending sealed batches."""
    topic = f"native.{uuid.uuid4().hex[:10]}"
    t = nats_client(nats_node)
    try:
        t.create_stream(topic)
        for i in range(3):
            t.append(topic, f"b{i}", [b"e"], b"seal")
    finally:
        t.close()

    async def add_consumer() -> None:
        nc = await nats.connect(nats_node.url(tls=False))
        try:
            await nc.jetstream().add_consumer(stream_name(topic), durable_name="mirror-tool", ack_policy="explicit")
        finally:
            await nc.close()

    asyncio.run(add_consumer())
    r = _ew(_home(tmp_path, nats_node), "consumers", "--json")
    assert r.returncode == 0, r.stderr
    native = [c for c in json.loads(r.stdout)["jetstream_consumers"] if c["stream"] == topic]
    assert native == [{"stream": topic, "name": "mirror-tool", "pending_batches": 3, "ack_pending": 0}]


def test_a_home_without_nats_is_one_line_and_a_configuration_exit_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "eventward.yaml").write_text("transport: embedded\n")
    r = _ew(home, "streams", "--json")
    assert r.returncode == 9
    assert r.stderr.count("\n") == 1 and "not nats" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_attack_poisoned_stream_does_not_hide_the_others(tmp_path: Path, nats_node: natsserver.Node) -> None:
    """A message forged straight onto one stream (lying offset headers) makes that stream's end unknown,
    reported as such; the operator still sees every other stream and group."""
    from eventward._internal.log import framing
    from eventward._internal.log.nats import subject_for

    from .nats_world import raw_publish

    good, bad = f"admin.{uuid.uuid4().hex[:10]}", f"poisoned.{uuid.uuid4().hex[:10]}"
    t = nats_client(nats_node)
    try:
        t.create_stream(good)
        t.append(good, "b1", [b"e0", b"e1"], b"seal")
        t.commit("billing", good, 1)
        t.create_stream(bad)
        t.commit("billing", bad, 0)
    finally:
        t.close()
    raw_publish(nats_node.url(tls=False), subject_for(bad), framing.encode("lying", [b"1"], b"seal"),
                {"Ew-Offset": "0", "Ew-Count": "5"})
    home = _home(tmp_path, nats_node)

    r = _ew(home, "streams", "--json")
    assert r.returncode == 0, r.stderr
    by_name = {s["stream"]: s for s in json.loads(r.stdout)["streams"]}
    assert by_name[good]["events"] == 2 and by_name[good]["error"] is None
    assert by_name[bad]["events"] is None and "corrupted" in by_name[bad]["error"]
    r = _ew(home, "streams")
    assert r.returncode == 0 and "unreadable" in r.stdout and "corrupted" in r.stderr

    r = _ew(home, "consumers", "--json")
    assert r.returncode == 0, r.stderr
    groups = {g["stream"]: g for g in json.loads(r.stdout)["groups"] if g["group"] == "billing"}
    assert groups[good]["lag"] == 1 and groups[bad]["end"] is None and groups[bad]["lag"] is None
