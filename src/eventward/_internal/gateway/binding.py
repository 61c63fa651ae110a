"""The CloudEvents HTTP protocol binding for publishing: which events a request body carries.

Modes, chosen by Content-Type as the binding says:

- structured: ``application/cloudevents+json``, one event in the JSON format;
- batched: ``application/cloudevents-batch+json``, a JSON array of events;
- eventward's batch body: ``application/json`` holding a JSON array (what clients sent before);
- binary: any other request with ``ce-*`` headers: attributes in the headers (percent-decoded
  UTF-8), ``Content-Type`` is ``datacontenttype`` and the body is the data.

Ambiguous requests are refused rather than resolved by a guess: ``ce-*`` headers on a structured
or batched request (two places for one attribute), a repeated ``ce-*`` header, a
``ce-datacontenttype`` header (binary mode carries it in ``Content-Type``). Binary-mode data must
be JSON (the registered schema validates it); other data is refused with 415, never stored as
opaque bytes the gateway cannot validate or encrypt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson
from multidict import CIMultiDictProxy

from eventward._internal import envelope
from eventward.errors import EnvelopeError, InputError, UnsupportedMediaType

JSON = "application/json"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BODY_TYPES = (JSON, BATCH, STRUCTURED)
CE_PREFIX = "ce-"
_MAX_HEADERS = 64  # the document's maxProperties for one event
_MAX_EVENTS_SCANNED = 1000  # the hard batch limit; longer batches are refused as oversize anyway


def ce_headers(headers: CIMultiDictProxy[str]) -> list[str]:
    """The lowercased names of the request's ``ce-*`` headers (repeats included)."""
    return [k.lower() for k in headers if k.lower().startswith(CE_PREFIX)]


def is_binary(content_type: str, headers: CIMultiDictProxy[str]) -> bool:
    """Binary mode: ``ce-specversion`` present and the body is not a structured event format
    (``application/cloudevents+<format>``, of which the gateway reads only the JSON one)."""
    structured = content_type.startswith("application/cloudevents")
    return not structured and CE_PREFIX + "specversion" in ce_headers(headers)


def check_structured(content_type: str, headers: CIMultiDictProxy[str]) -> None:
    """Refuses ``ce-*`` headers next to a body that carries the attributes itself."""
    names = ce_headers(headers)
    if names:
        raise EnvelopeError(
            f"'{names[0][:40]}' header on a {content_type} request: in structured and batched mode the "
            "attributes are in the body; send either ce-* headers (binary mode) or a CloudEvents body",
            rule="binding",
        )


def binary_event(content_type: str | None, headers: CIMultiDictProxy[str], body: bytes) -> dict[str, Any]:
    """The event of a binary-mode request. ``content_type`` is None when the request had none."""
    names = ce_headers(headers)
    if len(names) > _MAX_HEADERS:
        raise EnvelopeError(f"more than {_MAX_HEADERS} ce-* headers", rule="binding")
    event: dict[str, Any] = {}
    for name in names:
        attr = name[len(CE_PREFIX) :]
        if attr in event:
            raise EnvelopeError(f"header 'ce-{attr[:40]}' is repeated", rule="binding")
        if attr in ("datacontenttype", "data", "data_base64"):
            raise EnvelopeError(
                f"header 'ce-{attr}' is not allowed: in binary mode Content-Type is datacontenttype and "
                "the body is the data",
                rule="binding",
            )
        values = headers.getall(name)
        if len(values) > 1:
            raise EnvelopeError(f"header 'ce-{attr[:40]}' is repeated", rule="binding")
        try:
            event[attr] = unquote(values[0], errors="strict")
        except UnicodeDecodeError:
            raise EnvelopeError(f"header 'ce-{attr[:40]}' is not percent-encoded UTF-8", rule="binding") from None
    if content_type is not None:
        event["datacontenttype"] = content_type
    if body:
        if not envelope.is_json_type(content_type):
            raise UnsupportedMediaType(
                "binary-mode data must be JSON (Content-Type application/json or a +json type): the "
                "registered schema validates it and the gateway encrypts its sensitive fields"
            )
        try:
            event["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InputError(f"request body is not valid JSON (at byte {e.pos})", rule="json") from None
    return event


def check_reserved(events: Any) -> None:
    """eventward's own ``ew*`` attributes, refused by name before the schema check (which would only
    say the name breaks a pattern): a client must not set who produced an event or when."""
    if not isinstance(events, list):
        return
    for i, ev in enumerate(events[:_MAX_EVENTS_SCANNED]):
        if isinstance(ev, dict):
            for name in ev:
                if isinstance(name, str) and name.startswith(envelope.RESERVED_PREFIX):
                    raise EnvelopeError(
                        f"events[{i}]: extension attribute '{name[:40]}' is reserved (eventward sets its own "
                        "ew* attributes)",
                        index=i,
                    )


def json_data(event: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The event with ``data_base64`` (JSON bytes under a JSON ``datacontenttype``) as ``data``:
    one representation of the same data, so the schema validates it and fields are encrypted."""
    if "data_base64" not in event:
        return dict(event)
    out = {k: v for k, v in event.items() if k != "data_base64"}
    raw = envelope.decode_data_base64(event["data_base64"])
    if not raw:
        return out  # no bytes: no data
    if not envelope.is_json_type(event.get("datacontenttype")):
        raise UnsupportedMediaType(
            f"events[{index}]: data_base64 of a non-JSON datacontenttype is refused: event data must be "
            "JSON the registered schema validates",
            index=index,
        )
    try:
        out["data"] = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EnvelopeError(
            f"events[{index}]: data_base64 does not hold JSON (datacontenttype says it does)", index=index
        ) from None
    return out
