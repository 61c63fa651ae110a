"""Publishing a request's events through the SDK Producer, all or nothing.

One Producer per (principal, topic), so a gateway publish gets exactly the SDK's enforcement:
Publish authorization per event type, schema validation, field encryption under the
subjects' keys, the envelope, one seal over the request's events, the append, the audit
record. The producer never flushes on its own here (no size or time trigger, no background
thread): every event of the request is sent (authorized, validated, encrypted, buffered)
first, and only then is the batch sealed and appended. A refused event discards what the
request buffered, so the log gets the whole request or nothing of it.

A producer is used by one request at a time (its buffer is the request). Producers exist only
for (principal, topic) pairs the policy let publish, and at most ``max_producers`` are kept:
between requests a producer holds nothing, so dropping the least recently used one is free.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventward._internal import envelope
from eventward._internal.client.producer import Producer
from eventward._internal.crypto import seal as sealing
from eventward.errors import EnvelopeError, EventwardError, InputError, TransportError

# What the gateway takes from a client's CloudEvent: every attribute is carried as sent (``time``
# included: eventward's acceptance time goes in ``ewtime``) or refused by name, never dropped.
CARRIED = frozenset({"specversion", "id", "source", "type", "subject", "data"})
RESERVED_PREFIX = envelope.RESERVED_PREFIX
NO_DELAY_FLUSH_MS = 1e9  # never flush on time: the request decides when


@dataclass(frozen=True)
class Outgoing:
    type: str
    data: Any
    id: str
    source: str
    subject: str | None
    attributes: dict[str, Any] = field(default_factory=dict)  # time, dataschema, content type, extensions


def outgoing(events: Sequence[Mapping[str, Any]]) -> list[Outgoing]:
    """The request's events as the producer takes them (nulls already unset, ``data_base64``
    already turned into ``data``); refuses eventward's reserved attributes by name."""
    out: list[Outgoing] = []
    seen: dict[str, int] = {}
    for i, ev in enumerate(events):
        extra = sorted(set(ev) - CARRIED)
        if "data_base64" in extra:
            raise EnvelopeError(f"events[{i}]: data_base64 must be decoded before publishing", index=i)
        reserved = [name for name in extra if name.startswith(RESERVED_PREFIX)]
        if reserved:
            raise EnvelopeError(
                f"events[{i}]: extension attribute '{reserved[0]}' is reserved (the gateway sets "
                "eventward's attributes)",
                index=i,
            )
        event_id = str(ev["id"])
        if event_id in seen:
            raise InputError(
                f"events[{i}].id repeats the id of events[{seen[event_id]}]; event ids must be unique",
                path=f"events[{i}].id",
                rule="unique",
                index=i,
            )
        seen[event_id] = i
        subject = ev.get("subject")
        attributes = {name: ev[name] for name in extra}
        out.append(Outgoing(str(ev["type"]), ev.get("data"), event_id, str(ev["source"]), subject, attributes))
    return out


class _Slot:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.lock = threading.Lock()


class Publisher:
    """The producers of one gateway. ``make`` builds a producer for (principal, topic, **options)."""

    def __init__(self, make: Callable[..., Producer], *, max_producers: int = 1024) -> None:
        self._make = make
        self._max = max_producers
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def publish(self, principal: str, topic: str, events: Sequence[Outgoing]) -> list[str]:
        """Append ``events`` as one sealed batch; returns their ids. Raises (storing nothing) if
        any event is refused; ``index`` in the error names which."""
        slot = self._slot(principal, topic)
        with slot.lock:
            p = slot.producer
            for i, ev in enumerate(events):
                try:
                    attrs = dict(ev.attributes)
                    p.send(
                        ev.type,
                        ev.data,
                        id=ev.id,
                        source=ev.source,
                        subject=ev.subject,
                        time=attrs.pop("time", None),
                        dataschema=attrs.pop("dataschema", None),
                        datacontenttype=attrs.pop("datacontenttype", None),
                        extensions=attrs,
                    )
                except EventwardError as e:
                    p.discard()
                    e.details.setdefault("index", i)
                    e.message = f"events[{i}]: {e.message}"
                    e.args = (e.message,)
                    raise
                except BaseException:
                    p.discard()
                    raise
            try:
                return p.flush()
            except TransportError:
                # The sealed batch may or may not be stored: this producer is abandoned (never
                # re-sent by a later request), and a client retry with the same event ids is
                # safe because consumers refuse a second copy of an id as a replay.
                self._drop(principal, topic, slot)
                raise

    def _slot(self, principal: str, topic: str) -> _Slot:
        key = (principal, topic)
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                self._slots.move_to_end(key)
                return slot
        producer = self._make(principal, topic, max_batch=sealing.MAX_EVENTS, max_delay_ms=NO_DELAY_FLUSH_MS)
        with self._lock:
            slot = self._slots.setdefault(key, _Slot(producer))
            while len(self._slots) > self._max:
                # A request still holding an evicted slot finishes with it; nothing is lost.
                self._slots.popitem(last=False)
            return slot

    def _drop(self, principal: str, topic: str, slot: _Slot) -> None:
        with self._lock:
            if self._slots.get((principal, topic)) is slot:
                del self._slots[(principal, topic)]

    def close(self) -> None:
        """Nothing is ever left buffered between requests, so closing flushes nothing."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with slot.lock:
                slot.producer.discard()
