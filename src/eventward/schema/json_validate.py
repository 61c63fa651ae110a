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
from typing import Any

import fastjsonschema
from fastjsonschema import JsonSchemaValueException

from eventward.errors import ConfigError, SchemaError, ValidationError
from eventward.schema.formats import FORMATS
from eventward.schema.json_schema import DRAFT_07, NormalizedJson

_NAME_PART = re.compile(r"\[(\d+)\]|\.([^.\[]+)")

Check = Callable[[Any], "ValidationError | None"]


def compile_json(norm: NormalizedJson) -> Check:
    """A function returning None for valid data, else a ValidationError (never raising).

    Two validators from one definition: a lean one (no exception details, about a quarter
    faster) for the hot path, and a detailed one run only on failure to name path and rule.
    """
    fast = _compile(norm, detailed=False)
    detailed = _compile(norm, detailed=True)
    names = norm.names

    def check(data: Any) -> ValidationError | None:
        try:
            fast(data)
        except JsonSchemaValueException:
            pass
        else:
            return None
        try:
            detailed(data)
        except JsonSchemaValueException as e:
            return _error(e, names)
        return ValidationError("$: invalid", path="$", rule="invalid")  # the two disagree: fail closed

    return check


def _compile(norm: NormalizedJson, *, detailed: bool) -> Callable[[Any], Any]:
    definition = {**norm.tree, "$schema": DRAFT_07}  # the subset means the same in both drafts
    try:
        fn = fastjsonschema.compile(
            definition, formats=FORMATS, use_default=False, detailed_exceptions=detailed
        )
    except Exception as e:  # the generator runs on proposer input: any failure is a refusal
        raise SchemaError(f"schema cannot be compiled ({type(e).__name__})") from None
    _use_linear_matchers(fn, norm)
    return fn


def _use_linear_matchers(fn: Callable[..., Any], norm: NormalizedJson) -> None:
    target = fn.func if isinstance(fn, partial) else fn
    table = target.__globals__.get("REGEX_PATTERNS")
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
