"""Redaction pipelines: a declarative YAML from a raw stream to a clean one, per-field transforms.

    name: orders-analytics
    principal: redactor                 # its own principal: a Consumer and a Producer
    source: {topic: orders, types: [OrderPlaced]}
    sink: {topic: orders.analytics, type: OrderPlacedAnalytics}
    default: drop                       # fields no rule names: drop (the default) or keep
    fields:
      order_id: keep
      customer.id: keep                 # the data subject: forget reaches the tokens through it
      customer.email: tokenize          # AES-SIV under the subject's DEK (the sink schema tags it
                                        #   {"class": ..., "deterministic": true})
      customer.phone: {mask: 4}         # keep the last 4 letters/digits
      customer.ref: hmac                # HMAC-SHA256, key derived from the KMS's MAC secret
      placed_at: {generalize: month}    # or year, day
      total: {generalize: {bands: [0, 50, 100, 500]}}

Why this shape: the sink is an ordinary governed topic, so what analytics reads has a schema
(registered and approved like any other) and tokens are field encryption the key service
already authorizes, counts and crypto-shreds: ``forget(subject)`` destroys the DEK that made
that subject's tokens, in the clean stream too. The pipeline consumes as its principal
(Subscribe + Decrypt on the raw topic), emits as its principal (a sealed batch the clean
stream's readers verify), and records lineage (source event id -> output event id, metadata
only) in the audit log. An event whose transform fails, whose cleared values it cannot read,
or whose output still carries untagged PII or secrets is not emitted: the consumer retries and
then dead-letters it on the raw topic. Output ids derive from the source id, so a re-run
after a crash re-emits the same ids (consumers drop duplicates).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml

from eventward._internal.audit.base import AuditSink
from eventward._internal.client.types import Delivered
from eventward._internal.crypto.fields import ERASED, REDACTED
from eventward._internal.fieldspec import parse_path
from eventward._internal.guard.detectors import Detectors, default_detectors
from eventward._internal.guard.scan import findings
from eventward._internal.keys.kms.base import MAC_SUBJECT
from eventward.errors import ConfigError, RedactionError

LINEAGE_ACTION = "redact.lineage"
KEEP, DROP, MASK, HMAC, TOKENIZE, GENERALIZE = "keep", "drop", "mask", "hmac", "tokenize", "generalize"
_LINEAGE_NS = uuid.UUID("6f1c4c0e-5d0b-4e5e-9b8f-19a9e0c1d019")
_MAX_FIELDS = 256


@dataclass(frozen=True)
class Rule:
    path: str
    op: str
    arg: Any = None
    segments: tuple[tuple[str, bool], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    principal: str
    source_topic: str
    source_types: tuple[str, ...] | None
    sink_topic: str
    sink_type: str
    default: str
    rules: tuple[Rule, ...]

    @classmethod
    def from_yaml(cls, text: str) -> PipelineSpec:
        """Parse and check a pipeline file; ConfigError names the key at fault, never a value."""
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError("pipeline: not valid YAML") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: object) -> PipelineSpec:
        if not isinstance(doc, dict):
            raise ConfigError("pipeline: expected a mapping")
        unknown = set(doc) - {"name", "principal", "source", "sink", "default", "fields"}
        if unknown:
            raise ConfigError(f"pipeline: unknown key(s) {', '.join(sorted(map(str, unknown)))[:120]}")
        name, principal = doc.get("name"), doc.get("principal")
        src, sink = doc.get("source"), doc.get("sink")
        if not isinstance(name, str) or not name or not isinstance(principal, str) or not principal:
            raise ConfigError("pipeline: name and principal are required strings")
        if not isinstance(src, dict) or not isinstance(src.get("topic"), str):
            raise ConfigError("pipeline: source.topic is required")
        if not isinstance(sink, dict) or not all(isinstance(sink.get(k), str) for k in ("topic", "type")):
            raise ConfigError("pipeline: sink.topic and sink.type are required")
        types = src.get("types")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
            raise ConfigError("pipeline: source.types must be a list of event types")
        default = doc.get("default", DROP)
        if default not in (KEEP, DROP):
            raise ConfigError("pipeline: default must be keep or drop")
        fields = doc.get("fields") or {}
        if not isinstance(fields, dict) or len(fields) > _MAX_FIELDS:
            raise ConfigError(f"pipeline: fields must map at most {_MAX_FIELDS} paths to transforms")
        rules = tuple(_rule(str(p), v) for p, v in fields.items())
        if src["topic"] == sink["topic"]:
            raise ConfigError("pipeline: the sink must be another topic than the source")
        return cls(name, principal, src["topic"], tuple(types) if types else None, sink["topic"], sink["type"],
                   default, rules)


def _rule(path: str, value: object) -> Rule:
    try:
        segs = parse_path(path)
    except Exception:
        raise ConfigError(f"pipeline: field path {path[:80]!r} is not a dotted path") from None
    if isinstance(value, str):
        if value not in (KEEP, DROP, HMAC, TOKENIZE, MASK):
            raise ConfigError(f"pipeline: fields.{path}: unknown transform {value[:40]!r}")
        return Rule(path, value, 4 if value == MASK else None, segs)
    if isinstance(value, dict) and len(value) == 1:
        op, arg = next(iter(value.items()))
        if op == MASK and isinstance(arg, int) and not isinstance(arg, bool) and 0 <= arg <= 8:
            return Rule(path, MASK, arg, segs)
        if op == GENERALIZE and arg in ("year", "month", "day"):
            return Rule(path, GENERALIZE, arg, segs)
        if op == GENERALIZE and isinstance(arg, dict) and isinstance(arg.get("bands"), list):
            bands = arg["bands"]
            if bands and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bands) and bands == sorted(
                bands
            ):
                return Rule(path, GENERALIZE, tuple(bands), segs)
    raise ConfigError(
        f"pipeline: fields.{path}: expected keep, drop, hmac, tokenize, mask, {{mask: N}}, "
        "{generalize: year|month|day} or {generalize: {bands: [sorted numbers]}}"
    )


# --- transforms -------------------------------------------------------------------------------


def mask(value: object, keep: int) -> str:
    """Every letter and digit but the last ``keep`` becomes ``*``; separators stay."""
    text = value if isinstance(value, str) else str(value)
    alnum = [i for i, c in enumerate(text) if c.isalnum()]
    hidden = set(alnum[: max(0, len(alnum) - keep)]) if len(alnum) > keep else set(alnum)
    return "".join("*" if i in hidden else c for i, c in enumerate(text))


def generalize(value: object, how: Any) -> object:
    if isinstance(how, tuple):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RedactionError("generalize to bands needs a number")
        if value < how[0]:
            return f"<{how[0]}"
        for lo, hi in itertools.pairwise(how):
            if lo <= value < hi:
                return f"{lo}-{hi}"
        return f">={how[-1]}"
    if not isinstance(value, str):
        raise RedactionError("generalize to a date part needs an ISO 8601 date or time")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RedactionError("generalize to a date part needs an ISO 8601 date or time") from None
    return {"year": f"{t.year:04d}", "month": f"{t.year:04d}-{t.month:02d}", "day": t.date().isoformat()}[how]


class Redactor:
    """Applies a PipelineSpec's rules to one event's data (pure: no I/O)."""

    def __init__(self, spec: PipelineSpec, hmac_key: bytes, tokenized: frozenset[str],
                 detectors: Detectors | None = None, protected: frozenset[str] = frozenset()) -> None:
        self.spec = spec
        self._key = hmac_key
        self._tokenized = tokenized  # paths the sink schema encrypts deterministically
        self._detectors = detectors or default_detectors()
        self._protected = _paths_spec(protected | tokenized)  # the sink encrypts these: not scanned
        for r in spec.rules:
            if r.op == TOKENIZE and r.path not in tokenized:
                raise ConfigError(
                    f"pipeline: fields.{r.path} is tokenize, but the sink schema does not tag it "
                    '{"class": ..., "deterministic": true}: it would be emitted in clear'
                )

    def hmac(self, value: object) -> str:
        raw = value.encode() if isinstance(value, str) else repr(value).encode()
        return "hmac:" + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:32]

    def apply(self, data: dict[str, Any]) -> dict[str, Any]:
        """The clean data, or RedactionError naming the field path (never a value)."""
        out: dict[str, Any] = _skeleton(data, self.spec) if self.spec.default == DROP else _copy(data)
        for r in self.spec.rules:
            if r.op == DROP:
                _drop(out, r.segments)
                continue
            for container, key, value in list(_locate(data, out, r.segments, r.path)):
                container[key] = self._one(r, value)
        leaks = findings(out, self._protected, self._detectors)
        if leaks:
            shown = ", ".join(sorted({f"{p} ({k})" for p, k in leaks}))[:200]
            raise RedactionError(f"pipeline {self.spec.name}: output still carries untagged sensitive data: {shown}")
        return out

    def _one(self, r: Rule, value: object) -> object:
        if value == REDACTED:
            raise RedactionError(
                f"pipeline {self.spec.name}: {r.path} reads redacted: the pipeline's principal is not cleared for it"
            )
        if value == ERASED or value is None or r.op == KEEP or r.op == TOKENIZE:
            return value  # tokenize: the sink schema's deterministic tag encrypts it
        try:
            if r.op == MASK:
                return mask(value, r.arg)
            if r.op == HMAC:
                return self.hmac(value)
            return generalize(value, r.arg)
        except RedactionError as e:
            raise RedactionError(f"pipeline {self.spec.name}: {r.path}: {e.message}") from None


def _paths_spec(paths: frozenset[str]) -> Any:
    from eventward._internal.fieldspec import FieldRule, FieldSpec

    return FieldSpec(tuple(FieldRule(p, "pii") for p in sorted(paths)))


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def _skeleton(data: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """With ``default: drop``: only the paths some rule keeps or transforms, copied from data."""
    out: dict[str, Any] = {}
    for r in spec.rules:
        if r.op != DROP:
            _graft(data, out, r.segments)
    return out


def _graft(src: Any, dst: dict[str, Any], segs: tuple[tuple[str, bool], ...]) -> None:
    name, is_array = segs[0]
    if not isinstance(src, dict) or name not in src:
        return
    value = src[name]
    if len(segs) == 1:
        dst[name] = _copy(value)
        return
    if is_array:
        if not isinstance(value, list):
            return
        items = dst.setdefault(name, [{} for _ in value])
        for s, d in zip(value, items, strict=False):
            if isinstance(s, dict):
                _graft(s, d, segs[1:])
    elif isinstance(value, dict):
        _graft(value, dst.setdefault(name, {}), segs[1:])


def _locate(src: Any, dst: Any, segs: tuple[tuple[str, bool], ...], path: str) -> Any:
    """(output container, key, source value) for each occurrence of a rule's path."""
    name, is_array = segs[0]
    if src is None or dst is None:
        return
    if not isinstance(src, dict) or not isinstance(dst, dict):
        raise RedactionError(f"field {path}: expected an object on the way")
    if name not in src or name not in dst:
        return
    if len(segs) == 1 and not is_array:
        yield dst, name, src[name]
        return
    if is_array:
        if not isinstance(src[name], list):
            raise RedactionError(f"field {path}: expected an array")
        for i, (s, d) in enumerate(zip(src[name], dst[name], strict=False)):
            if len(segs) == 1:
                yield dst[name], i, s
            else:
                yield from _locate(s, d, segs[1:], path)
        return
    yield from _locate(src[name], dst[name], segs[1:], path)


def _drop(out: Any, segs: tuple[tuple[str, bool], ...]) -> None:
    name, is_array = segs[0]
    if not isinstance(out, dict) or name not in out:
        return
    if len(segs) == 1:
        del out[name]
    elif is_array and isinstance(out[name], list):
        for item in out[name]:
            _drop(item, segs[1:])
    else:
        _drop(out[name], segs[1:])


# --- running ----------------------------------------------------------------------------------


def output_id(pipeline: str, source_id: str) -> str:
    """Deterministic: a re-run after a crash re-emits the same id (readers drop duplicates)."""
    return str(uuid.uuid5(_LINEAGE_NS, f"{pipeline}\x00{source_id}"))


@dataclass
class PipelineStats:
    emitted: int = 0
    refused: int = 0


class _FlushBeforeCommit:
    """The consumer's transport, except that committing a read position first waits for the
    pipeline's emitted events to be acknowledged: a crash never skips an event it did not emit."""

    def __init__(self, inner: Any, flush: Callable[[], object]) -> None:
        self._inner = inner
        self._flush = flush

    def commit(self, group: str, stream: str, pos: int) -> None:
        self._flush()
        self._inner.commit(group, stream, pos)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Pipeline:
    """One pipeline over a Deployment opened for its principal (home mode, NATS or Kafka)."""

    def __init__(self, dep: Any, spec: PipelineSpec, *, hmac_key: bytes | None = None) -> None:
        self.spec = spec
        self._dep = dep
        sink_schema = dep.registry.active(spec.sink_type)
        tokenized = frozenset(r.path for r in sink_schema.spec.rules if r.deterministic)
        self._sink_paths = frozenset(r.path for r in sink_schema.spec.rules) | (
            {sink_schema.spec.subject_path} if sink_schema.spec.subject_path else set()
        )
        key = hmac_key or dep.keys.kms.mac(MAC_SUBJECT, b"eventward.redact.hmac\x00" + spec.name.encode())
        self.redactor = Redactor(spec, key, tokenized, protected=self._sink_paths)
        self._audit: AuditSink = dep.audit
        self.stats = PipelineStats()

    def run(self, *, max_events: int | None = None, idle_timeout: float | None = 1.0,
            from_beginning: bool = True) -> PipelineStats:
        spec, dep = self.spec, self._dep
        with dep.producer(spec.principal, spec.sink_topic) as producer:
            consumer = dep.consumer(spec.principal, spec.source_topic, group=f"redact.{spec.name}",
                                    types=spec.source_types, from_beginning=from_beginning)
            consumer._transport = _FlushBeforeCommit(consumer._transport, producer.flush)

            def handle(event: Delivered) -> None:
                try:
                    clean = self.redactor.apply(event.data)
                except RedactionError:
                    self.stats.refused += 1
                    raise  # the consumer retries, then dead-letters it: nothing is emitted
                out_id = output_id(spec.name, event.id)
                producer.send(spec.sink_type, clean, id=out_id)
                self._audit.record(
                    LINEAGE_ACTION, principal=spec.principal, resource=f"Topic::{spec.sink_topic}",
                    pipeline=spec.name, source_topic=spec.source_topic, source_id=event.id,
                    source_offset=event.offset, output_id=out_id, event_type=spec.sink_type,
                )
                self.stats.emitted += 1

            try:
                consumer.run(handle, max_events=max_events, idle_timeout=idle_timeout)
            finally:
                consumer.close()
        return self.stats  # leaving the producer's block flushed what was left
