"""OpenTelemetry spans around publish and handle, joined by the envelope's W3C ``traceparent``.

OpenTelemetry is optional (``pip install eventward[otel]``); without it every helper here is a
plain pass-through. The helpers are opt-in wrappers (``send`` and ``traced``), so the producer and
consumer hot paths carry no tracing cost for processes that do not trace. The producer side puts
the current span's context into the event (CloudEvents distributed-tracing extension:
``traceparent``/``tracestate``, which the envelope checks and carries to consumers unchanged); the
consumer side continues that trace. Span attributes carry the topic, the event type and the
producer principal, never event ids, subjects or data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

try:  # optional dependency
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROP: Any = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised where OTel is absent
    _trace = None  # type: ignore[assignment]
    _PROP = None

TRACER = "eventward"


def available() -> bool:
    return _trace is not None


def send(producer: Any, type_: str, data: Any, *, extensions: Mapping[str, Any] | None = None, **kw: Any) -> str:
    """``producer.send`` inside a PRODUCER span whose context travels in the event's ``traceparent``.

    An explicit ``traceparent`` in ``extensions`` wins (the caller already continues a trace)."""
    if _trace is None:
        return producer.send(type_, data, extensions=extensions, **kw)  # type: ignore[no-any-return]
    tracer = _trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"publish {producer.topic}",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "eventward", "messaging.destination.name": producer.topic,
                    "cloudevents.event_type": type_},
    ):
        carrier: dict[str, str] = {}
        _PROP.inject(carrier)
        ext = {**carrier, **(extensions or {})}
        return producer.send(type_, data, extensions=ext, **kw)  # type: ignore[no-any-return]


def traced(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A consumer handler that runs inside a CONSUMER span continuing the event's trace."""
    if _trace is None:
        return handler
    tracer = _trace.get_tracer(TRACER)

    def run(event: Any) -> Any:
        attrs = getattr(event, "attributes", {}) or {}
        carrier = {k: attrs[k] for k in ("traceparent", "tracestate") if isinstance(attrs.get(k), str)}
        ctx = _PROP.extract(carrier) if carrier else None
        with tracer.start_as_current_span(
            f"process {event.stream}",
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "eventward", "messaging.destination.name": event.stream,
                        "cloudevents.event_type": event.type, "eventward.producer": event.producer,
                        "eventward.verified": bool(event.verified)},
        ):
            return handler(event)

    return run
