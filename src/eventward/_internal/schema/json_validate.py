"""The compiled JSON Schema validator: fastjsonschema code, RE2 matching, value-free errors.

fastjsonschema generates Python code once per schema (fast to run), but matches ``pattern``
and ``patternProperties`` with Python ``re`` on the raw pattern. After compiling, every
regex in the generated module's ``REGEX_PATTERNS`` table is swapped for its linear-time twin
from regex.py (RE2, or a pattern proven backtracking-free); an entry without a twin fails
closed. Formats use formats.py (never fastjsonschema's own regexes).

fastjsonschema's exception message contains the offending value; errors are rebuilt from the
path and rule only, and object keys in the path are shown only if the schema declares them
(a key that came from the data, e.g. under patternProperties, appears as ``*``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from types import FunctionType
from typing import Any

import fastjsonschema
from fastjsonschema import JsonSchemaValueException

from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.json_schema import DRAFT_07, NormalizedJson
from eventward._internal.schema.json_tight import BatchTight, Tight, compile_batch, compile_tight
from eventward.errors import ConfigError, SchemaError, ValidationError

_NAME_PART = re.compile(r"\[(\d+)\]|\.([^.\[]+)")
_SIGNATURE = ("data", "custom_formats", "name_prefix")  # of fastjsonschema's generated function

Check = Callable[[Any], "ValidationError | None"]


def compile_json(norm: NormalizedJson) -> JsonCheck:
    """A callable returning None for valid data, else a ValidationError (never raising).

    Two validators from one definition: a lean one (no exception details, about a quarter
    faster) for the hot path, and a detailed one run only on failure to name path and rule.
    """
    check = JsonCheck(_compile(norm, detailed=False), _compile(norm, detailed=True), norm.names)
    check.tight = compile_tight(norm.tree, norm.patterns)
    check.batch = None if check.tight is None else compile_batch(norm.tree, norm.patterns)
    return check


class JsonCheck:
    """The compiled validators of one schema. Calling it returns None or the ValidationError;
    ``fast`` is the lean generated function itself, for callers that want no wrapper at all:
    it returns for valid data and raises a ValueError (JsonSchemaValueException) otherwise.
    ``tight`` (json_tight.py, None outside its subset) answers True only for data it checked
    completely; False means undecided, and ``fast`` decides. ``batch`` is its form for many
    events (json_tight.BatchTight). Calling the check never uses either: ``problem()`` stays
    the reference the hot paths are tested against."""

    __slots__ = ("_detailed", "_names", "batch", "fast", "tight")

    def __init__(
        self, fast: Callable[[Any], Any], detailed: Callable[[Any], Any], names: frozenset[str]
    ) -> None:
        self.fast = fast
        self._detailed = detailed
        self._names = names
        self.tight: Tight | None = None
        self.batch: BatchTight | None = None

    def __repr__(self) -> str:
        return "JsonCheck()"

    def __call__(self, data: Any) -> ValidationError | None:
        try:
            self.fast(data)
        except JsonSchemaValueException:
            pass
        else:
            return None
        try:
            self._detailed(data)
        except JsonSchemaValueException as e:
            return _error(e, self._names)
        return ValidationError("$: invalid", path="$", rule="invalid")  # the two disagree: fail closed


def _compile(norm: NormalizedJson, *, detailed: bool) -> Callable[[Any], Any]:
    definition = {**_lean(norm.tree), "$schema": DRAFT_07}  # the subset means the same in both drafts
    try:
        fn = fastjsonschema.compile(
            definition, formats=FORMATS, use_default=False, detailed_exceptions=detailed
        )
    except Exception as e:  # the generator runs on proposer input: any failure is a refusal
        if not detailed:
            raise SchemaError(f"schema cannot be compiled ({type(e).__name__})") from None
        # The detailed generator resolves every "$ref" key it finds, even inside enum/const
        # values (data, not schema: refs are inlined before this). Such a schema gets the
        # lean validator for its errors too: same verdicts, errors name "$: invalid".
        return _compile(norm, detailed=False)
    _use_linear_matchers(fn, norm)
    return _bound_formats(fn)


def _bound_formats(fn: Callable[..., Any]) -> Callable[[Any], Any]:
    """The generated function with the formats as its default argument instead of a
    ``partial(func, custom_formats=...)``: calling a keyword partial builds a dict per call
    (a few tenths of a microsecond per event). Falls back to the partial if the generated
    signature is not the one this relies on."""
    if not isinstance(fn, partial) or fn.args or set(fn.keywords) != {"custom_formats"}:
        return fn
    func = fn.func
    code = getattr(func, "__code__", None)
    if code is None or code.co_argcount != 3 or code.co_varnames[:3] != _SIGNATURE or code.co_kwonlyargcount:
        return fn
    defaults = (fn.keywords["custom_formats"], None)
    return FunctionType(code, func.__globals__, func.__name__, defaults, func.__closure__)


def _lean(node: dict[str, Any]) -> dict[str, Any]:
    """A copy of a normalized (sub)schema for the validator generator, without the length
    bounds that an ``enum`` of strings already implies: normalization puts ``maxLength`` on
    every string, enums included, and the generated code would check what cannot fail. Same
    verdicts, same (path, rule) errors: an out-of-enum value fails on ``enum`` first either way."""
    out = dict(node)
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {name: _lean(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _lean(out[key])
    values = out.get("enum")
    if values is not None:
        lo, hi = out.get("minLength", 0), out.get("maxLength")
        if all(lo <= len(v) and (hi is None or len(v) <= hi) for v in values if isinstance(v, str)):
            out.pop("minLength", None)
            out.pop("maxLength", None)
    return out


def _use_linear_matchers(fn: Callable[..., Any], norm: NormalizedJson) -> None:
    target = fn.func if isinstance(fn, partial) else fn
    table = target.__globals__.get("REGEX_PATTERNS")  # type: ignore[attr-defined]
    if not isinstance(table, dict):
        raise ConfigError("fastjsonschema's generated code has no REGEX_PATTERNS table: cannot swap matchers")
    for key in list(table):
        twin = norm.patterns.get(key)
        if twin is None:
            raise ConfigError("fastjsonschema compiled a regular expression that has no linear-time twin")
        table[key] = twin


def _error(e: JsonSchemaValueException, names: frozenset[str]) -> ValidationError:
    name = e.name or "data"
    path = "$"
    for index, key in _NAME_PART.findall(name[4:] if name.startswith("data") else name):
        path += f"[{index}]" if index else (f".{key}" if key in names else ".*")
    rule = e.rule or "invalid"
    if rule == "required" and isinstance(e.definition, dict) and isinstance(e.value, dict):
        missing = sorted(r for r in e.definition.get("required", ()) if r not in e.value)
        if missing:
            path += f".{missing[0]}"  # a name from the schema, not from the data
    return ValidationError(f"{path}: {rule}", path=path, rule=rule)
