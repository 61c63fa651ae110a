"""send_many refuses a batch with an invalid event as a whole, and names which event: its 0-based
index in the call, with validate's path and rule, never the value."""

from __future__ import annotations

from typing import Any

import pytest

from eventward.errors import ValidationError

from .client_world import SENTINEL_EMAIL, TOPIC, TYPE, World, customer


@pytest.mark.parametrize("bad", [0, 3, 6])
def test_attack_poisoned_event_in_a_batch_is_named_and_nothing_is_written(tmp_path: Any, bad: int) -> None:
    world = World(tmp_path / "home")
    try:
        events = [customer(i) for i in range(7)]
        events[bad] = customer(bad, plan=f"{SENTINEL_EMAIL}-not-a-plan")
        with world.producer() as p, pytest.raises(ValidationError) as err:
            p.send_many(TYPE, events)
        e = err.value
        assert e.details["index"] == bad and e.path == "$.plan" and e.rule == "enum"
        assert e.message.startswith(f"event {bad} of 7: ")
        assert SENTINEL_EMAIL not in e.message and SENTINEL_EMAIL not in repr(e.details)
        assert world.log.read(TOPIC, 0, 100) == []  # all or nothing
    finally:
        world.close()


def test_the_first_of_several_invalid_events_is_the_one_named(tmp_path: Any) -> None:
    world = World(tmp_path / "home")
    try:
        events = [customer(i) for i in range(5)]
        events[4] = customer(4, plan="nope")
        events[2] = {"customer_id": "c-2"}  # missing required fields
        with world.producer() as p, pytest.raises(ValidationError) as err:
            p.send_many(TYPE, events)
        assert err.value.details["index"] == 2 and err.value.message.startswith("event 2 of 5: ")
    finally:
        world.close()
