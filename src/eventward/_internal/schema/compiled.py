"""One schema document, checked and compiled: normalized tree, field spec, size limit, validator.

Compiling is the expensive part (code generation, RE2 programs), so results are cached per
process by fingerprint: every registry instance, version object and CLI command that sees
the same document shares one compiled validator.

Validation runs on the PLAINTEXT event data, on the producer side, before field encryption:
an encrypted event carries string tokens where sensitive values were, which the schema would
(rightly) refuse. Consumers check tokens structurally instead (the FieldEncryptor refuses
plaintext at a sensitive path).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventward._internal.fieldspec import FieldSpec
from eventward._internal.schema import avro_schema, json_schema
from eventward._internal.schema.avro_validate import compile_avro
from eventward._internal.schema.document import check_format, fingerprint, load
from eventward._internal.schema.json_tight import BatchTight
from eventward._internal.schema.json_validate import compile_json
from eventward._internal.schema.tags import avro_spec, json_spec
from eventward.errors import ValidationError

_CACHE_SIZE = 64
_SETTLE_BYTES = 1 << 20  # validate_many checks its collected strings at least every MiB of events
_dumps = orjson.dumps
_NULL = b"null"  # how orjson writes NaN and ±Infinity: only data containing it can hold one
_cache: OrderedDict[str, CompiledSchema] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class CompiledSchema:
    fmt: str
    fingerprint: str
    raw: bytes = field(repr=False)  # the document exactly as submitted
    document: dict[str, Any] = field(repr=False)  # parsed
    tree: dict[str, Any] = field(repr=False)  # normalized (json_schema.py / avro_schema.py)
    spec: FieldSpec
    max_event_bytes: int
    _check: Callable[[Any], ValidationError | None] = field(repr=False)
    # Optional hot path: returns for valid data, raises a ValueError for invalid data.
    _fast: Callable[[Any], Any] | None = field(default=None, repr=False)
    # Optional hotter path (json_tight.py): True only for data it checked completely, else undecided.
    _tight: Callable[[Any], bool] | None = field(default=None, repr=False)
    # Its form for validate_many (json_tight.BatchTight): string checks deferred and batched.
    _batch: BatchTight | None = field(default=None, repr=False)

    def validate(self, data: Any) -> None:
        """Raise ValidationError (path and rule, never the value) unless ``data`` is valid."""
        fast = self._fast
        if fast is not None:
            # problem() inlined for the common outcome: one size check and the generated
            # validator, no wrapper in between. Any failure goes to problem() to be worded.
            try:
                raw = _dumps(data)
                small = len(raw) <= self.max_event_bytes and (_NULL not in raw or not _has_non_finite(data))
            except TypeError:  # orjson.JSONEncodeError: problem() says "json"
                small = False
            if small:
                tight = self._tight
                if tight is not None and tight(data):
                    return
                try:
                    fast(data)
                except ValueError:  # JsonSchemaValueException
                    pass
                else:
                    return
        err = self.problem(data)
        if err is not None:
            raise err  # raised outside any except block: no chained exception can carry a value

    def validate_many(self, events: Iterable[Any]) -> None:
        """``validate`` of each event in order, the first invalid one raising its ValidationError:
        a producer's ``send_many``, with the per-call lookups hoisted out of the loop. An event the
        tight validator does not accept outright takes ``validate`` itself (same verdict, same
        error)."""
        if self._batch is not None and self._fast is not None:
            self._validate_batched(events, self._batch)
            return
        tight, limit, dumps, null = self._tight, self.max_event_bytes, _dumps, _NULL
        if tight is None or self._fast is None:
            for data in events:
                self.validate(data)
            return
        for data in events:
            try:
                raw = dumps(data)
            except TypeError:  # orjson.JSONEncodeError: validate() words it
                self.validate(data)
                continue
            if len(raw) > limit or (null in raw and _has_non_finite(data)) or not tight(data):
                self.validate(data)

    def _validate_batched(self, events: Iterable[Any], batch: BatchTight) -> None:
        """``validate_many`` with the string checks batched (batch.py): each event is checked
        structurally by the collector ``batch.make`` returns, which collects its pattern and
        format strings; the collected strings are checked together before an event the
        collector does not accept is validated on its own, every MiB of events, and at the end.
        When a batch check fails, the events it covered are validated one by one, so the first
        invalid event raises its own error, as in ``validate``. When ``batch.finite``, the
        collector's exact types stand in for the search for NaN and ±Infinity."""
        events = events if isinstance(events, list | tuple) else list(events)
        checks, limit, dumps, null, finite = batch.checks, self.max_event_bytes, _dumps, _NULL, batch.finite
        buckets: list[list[str]] = [[] for _ in checks]
        collect = batch.make(*[b.append for b in buckets])
        start = pending = 0
        for i, data in enumerate(events):
            try:
                raw = dumps(data)
            except TypeError:  # orjson.JSONEncodeError: validate() words it
                raw = None
            if (
                raw is not None
                and len(raw) <= limit
                and (finite or null not in raw or not _has_non_finite(data))  # finite: collect() checks
                and collect(data)
            ):
                pending += len(raw)
                if pending >= _SETTLE_BYTES:
                    self._settle(events, start, i + 1, checks, buckets)
                    start, pending = i + 1, 0
                continue
            self._settle(events, start, i, checks, buckets)  # earlier events first: their errors come first
            self.validate(data)
            start, pending = i + 1, 0
        self._settle(events, start, len(events), checks, buckets)

    def _settle(
        self, events: list[Any] | tuple[Any, ...], start: int, end: int, checks: tuple[Any, ...],
        buckets: list[list[str]],
    ) -> None:
        """Run the batch checks on the strings collected from ``events[start:end]`` (and
        perhaps a part of ``events[end]``'s, which can only send them to the slow path) and
        empty the buckets; if a check fails, ``validate`` each of those events."""
        if start < end and not all(check(b) for check, b in zip(checks, buckets, strict=True)):
            for data in events[start:end]:
                self.validate(data)
        for b in buckets:
            b.clear()

    def problem(self, data: Any) -> ValidationError | None:
        """The ValidationError ``validate`` would raise, or None."""
        try:
            raw = _dumps(data)
        except TypeError:  # orjson.JSONEncodeError: not JSON, or nested too deeply
            return ValidationError("$: json", path="$", rule="json")
        size = len(raw)
        if _NULL in raw and _has_non_finite(data):
            return non_finite(data, declared_names(self.tree))
        if size > self.max_event_bytes:
            return ValidationError(
                f"$: maxBytes (event data is {size} bytes, limit is {self.max_event_bytes})",
                path="$",
                rule="maxBytes",
                size=size,
                limit=self.max_event_bytes,
            )
        return self._check(data)


def _has_non_finite(data: Any) -> bool:
    """Whether ``data`` holds a NaN or ±Infinity anywhere (no paths built: the common answer is no)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, float) and not math.isfinite(value):
            return True
    return False


def non_finite(data: Any, names: frozenset[str] = frozenset()) -> ValidationError | None:
    """The ValidationError for the first NaN or ±Infinity in ``data``, else None.

    JSON has no such numbers: orjson writes them as ``null``, so a number field would be
    stored as null (or a value the schema never allowed). Object keys appear in the path only
    if the schema declares them (``names``), as in every other validation error.
    """
    stack: list[tuple[Any, str]] = [(data, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            items = list(value.items())
            stack.extend((v, f"{path}.{k}" if k in names else f"{path}.*") for k, v in reversed(items))
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):
            return ValidationError(
                f"{path}: finite (NaN and Infinity are not JSON numbers)", path=path, rule="finite"
            )
    return None


def declared_names(tree: Any) -> frozenset[str]:
    """Object keys a normalized schema declares (JSON ``properties``, Avro record ``fields``)."""
    out: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                out.update(k for k in props if isinstance(k, str))
            fields_ = node.get("fields")
            if isinstance(fields_, list):
                out.update(f["name"] for f in fields_ if isinstance(f, dict) and isinstance(f.get("name"), str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return frozenset(out)


def compile_schema(
    document: bytes | bytearray | str | Mapping[str, Any], fmt: str = "json"
) -> CompiledSchema:
    """Check and compile a document (SchemaError / SchemaSecurityError naming the problem)."""
    check_format(fmt)
    raw, parsed = load(document)
    fp = fingerprint(fmt, parsed)
    with _cache_lock:
        hit = _cache.get(fp)
        if hit is not None:
            _cache.move_to_end(fp)
    if hit is not None:
        return hit if hit.raw == raw else _replace_raw(hit, raw, parsed)
    compiled = _compile(fmt, fp, raw, parsed)
    with _cache_lock:
        _cache[fp] = compiled
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def compile_without_strict_defaults(document: Mapping[str, Any]) -> CompiledSchema:
    """A JSON Schema compiled without eventward's strict defaults, for the JSON Schema test
    suite only (docs/CONFORMANCE.md): same keyword checks and the same validator code and
    fast path, never cached (so never served for a registry document)."""
    raw, parsed = load(document)
    norm = json_schema.normalize(parsed, strict_defaults=False)
    check = compile_json(norm)
    fp = "conformance:" + fingerprint("json", parsed)
    spec = json_spec(norm.tree)
    return CompiledSchema(
        "json", fp, raw, parsed, norm.tree, spec, norm.max_event_bytes, check, check.fast, check.tight,
        check.batch,
    )


def _replace_raw(hit: CompiledSchema, raw: bytes, parsed: dict[str, Any]) -> CompiledSchema:
    """Same schema, different formatting: share the compiled parts, keep the caller's bytes."""
    return CompiledSchema(
        hit.fmt, hit.fingerprint, raw, parsed, hit.tree, hit.spec, hit.max_event_bytes, hit._check, hit._fast,
        hit._tight, hit._batch,
    )


def _compile(fmt: str, fp: str, raw: bytes, parsed: dict[str, Any]) -> CompiledSchema:
    if fmt == "json":
        norm = json_schema.normalize(parsed)
        spec = json_spec(norm.tree)
        check = compile_json(norm)
        return CompiledSchema(
            fmt, fp, raw, parsed, norm.tree, spec, norm.max_event_bytes, check, check.fast, check.tight,
            check.batch,
        )
    anorm = avro_schema.normalize(parsed)
    spec = avro_spec(anorm.tree)
    return CompiledSchema(
        fmt, fp, raw, parsed, anorm.tree, spec, anorm.max_event_bytes, compile_avro(anorm.tree)
    )
