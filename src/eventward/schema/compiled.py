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

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventward.errors import ValidationError
from eventward.fieldspec import FieldSpec
from eventward.schema import avro_schema, json_schema
from eventward.schema.avro_validate import compile_avro
from eventward.schema.document import check_format, fingerprint, load
from eventward.schema.json_validate import compile_json
from eventward.schema.tags import avro_spec, json_spec

_CACHE_SIZE = 64
_dumps = orjson.dumps
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

    def validate(self, data: Any) -> None:
        """Raise ValidationError (path and rule, never the value) unless ``data`` is valid."""
        fast = self._fast
        if fast is not None:
            # problem() inlined for the common outcome: one size check and the generated
            # validator, no wrapper in between. Any failure goes to problem() to be worded.
            try:
                small = len(_dumps(data)) <= self.max_event_bytes
            except TypeError:  # orjson.JSONEncodeError: problem() says "json"
                small = False
            if small:
                try:
                    fast(data)
                except ValueError:  # JsonSchemaValueException
                    pass
                else:
                    return
        err = self.problem(data)
        if err is not None:
            raise err  # raised outside any except block: no chained exception can carry a value

    def problem(self, data: Any) -> ValidationError | None:
        """The ValidationError ``validate`` would raise, or None."""
        try:
            size = len(_dumps(data))
        except TypeError:  # orjson.JSONEncodeError: not JSON, or nested too deeply
            return ValidationError("$: json", path="$", rule="json")
        if size > self.max_event_bytes:
            return ValidationError(
                f"$: maxBytes (event data is {size} bytes, limit is {self.max_event_bytes})",
                path="$",
                rule="maxBytes",
                size=size,
                limit=self.max_event_bytes,
            )
        return self._check(data)


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


def _replace_raw(hit: CompiledSchema, raw: bytes, parsed: dict[str, Any]) -> CompiledSchema:
    """Same schema, different formatting: share the compiled parts, keep the caller's bytes."""
    return CompiledSchema(
        hit.fmt, hit.fingerprint, raw, parsed, hit.tree, hit.spec, hit.max_event_bytes, hit._check, hit._fast
    )


def _compile(fmt: str, fp: str, raw: bytes, parsed: dict[str, Any]) -> CompiledSchema:
    if fmt == "json":
        norm = json_schema.normalize(parsed)
        spec = json_spec(norm.tree)
        check = compile_json(norm)
        return CompiledSchema(fmt, fp, raw, parsed, norm.tree, spec, norm.max_event_bytes, check, check.fast)
    anorm = avro_schema.normalize(parsed)
    spec = avro_spec(anorm.tree)
    return CompiledSchema(
        fmt, fp, raw, parsed, anorm.tree, spec, anorm.max_event_bytes, compile_avro(anorm.tree)
    )
