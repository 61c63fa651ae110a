"""A tighter validator for the common shape of event data, generated from the normalized tree.

fastjsonschema's generated code is general: per property a key-set removal, two ``isinstance``
calls, a ``Decimal`` check on numbers, and sets built per object; on a 30-field event that is
most of the validation time. This module generates, for the keyword subset it fully
understands, a function answering ``True`` only for data it has checked completely: exact
types (``type(x) is str``, never subclasses; integers as ``int`` only, arrays as ``list``
only), the same length, bound, enum, pattern and format checks with the same matchers
(the RE2 or proven-linear twins of regex.py/anchored.py, the formats of formats.py), and
closed objects as one key-set comparison.

It only ever says "valid": ``False`` means "not decided here", and the caller then runs the
fastjsonschema validator and the worded slow path exactly as before. So the verdict on any
input is unchanged as long as every value accepted here is accepted by fastjsonschema, which
holds keyword by keyword (each check below is the same or stricter) and is tested
differentially (tests/schema/test_schema_tight.py, and the JSON Schema test suite in
tests/conformance runs through it). Anything outside the subset (``multipleOf``,
``uniqueItems``, ``patternProperties``, an ``additionalProperties`` schema, non-string enums,
deep nesting) gives no tight validator at all: fastjsonschema alone, as before.

``compile_batch`` generates the same code for ``validate_many`` with the pattern and format
checks batch.py can run over many strings at once collected instead of called, one bucket per
distinct pattern or format wherever it appears (nested objects and arrays included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventward._internal.schema.batch import BatchCheck, format_batch, pattern_batch
from eventward._internal.schema.formats import FORMATS
from eventward._internal.schema.regex import Matcher

Tight = Callable[[Any], bool]

_MAX_INDENT = 60  # Python's tokenizer allows 100 levels; deeper schemas get no tight validator
_MAX_LINES = 20_000
_MAX_LOOPS = 15  # statically nested for-loops in one function (CPython allows 20)
_SUPPORTED = frozenset(
    {
        "type", "enum", "properties", "required", "additionalProperties", "pattern", "format",
        "items", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "x-eventward",
    }
)
_TYPE_TEST = {
    "string": "type({v}) is str",
    "integer": "type({v}) is int",
    "number": "(type({v}) is int or type({v}) is float)",
    "boolean": "type({v}) is bool",
    "null": "{v} is None",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
}


class _Unsupported(Exception):
    """The tree uses something this generator does not handle: no tight validator."""


def compile_tight(tree: Mapping[str, Any], patterns: Mapping[str, Matcher]) -> Tight | None:
    """A function returning True only for data valid under ``tree``, or None when the tree is
    outside the supported subset (or too deep to generate flat code for)."""
    return _Gen(patterns).generate(tree)


@dataclass(frozen=True)
class BatchTight:
    """The tight validator for many events (``validate_many``), its string checks deferred.

    ``make(*appends)`` returns the tight validator with each batchable pattern or format check
    (batch.py) replaced by ``appends[i](value)`` (a closure: one per call of validate_many, so
    threads never share buckets): True means the data is valid as far as the checks made
    inline go, provided every string collected for bucket ``i`` passes ``checks[i]``.
    ``checks[i](values)`` is True only if each value passes the reference check."""

    make: Callable[..., Tight]
    checks: tuple[BatchCheck, ...]
    # The collector looks at every value, with exact types, and refuses a non-finite "number":
    # data it accepts holds no NaN or ±Infinity, so the caller need not search for them.
    finite: bool


def compile_batch(tree: Mapping[str, Any], patterns: Mapping[str, Matcher]) -> BatchTight | None:
    """The batch form of ``compile_tight``, or None when there is no tight validator or no
    string check to defer (the per-event tight validator is then as good)."""
    gen = _Gen(patterns, batch=True)
    fn = gen.generate(tree)
    if fn is None or not gen.checks:
        return None
    return BatchTight(fn, tuple(gen.checks), not gen.open)


class _Gen:
    def __init__(self, patterns: Mapping[str, Matcher], *, batch: bool = False) -> None:
        self.patterns = patterns
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0
        self.batch = batch
        self.buckets: dict[tuple[str, str], str | None] = {}  # (keyword, value) -> its append's name
        self.checks: list[BatchCheck] = []
        # Whether accepted data may hold values the code never looked at (open objects, arrays
        # without items); if not, the batch collector proves the data holds no NaN or ±Infinity.
        self.open = False

    def generate(self, tree: Mapping[str, Any]) -> Callable[..., Any] | None:
        """The tight validator (or, in batch mode, the function making it from the appends)."""
        try:
            self.node(tree, "data", 2, 0)
            if len(self.lines) > _MAX_LINES:
                raise _Unsupported
            # A closed object whose every property is required is checked by its size and by reading
            # each property (Gen.object): a missing one raises KeyError, which is "undecided" here.
            src = (
                "def tight(data):\n    try:\n" + "\n".join(self.lines)
                + "\n    except KeyError:\n        return False\n    return True\n"
            )
            if self.batch:  # the appends as the closure's free variables (faster than arguments)
                params = ", ".join(f"_a{i}" for i in range(len(self.checks)))
                body = "".join(f"    {line}\n" for line in src.splitlines())
                src = f"def make({params}):\n{body}    return tight\n"
            namespace: dict[str, Any] = dict(self.consts)
            exec(compile(src, "<eventward tight validator>", "exec"), namespace)  # noqa: S102 - generated from the normalized tree, names and values as constants only
        except (_Unsupported, SyntaxError, RecursionError, MemoryError):
            return None
        fn: Callable[..., Any] = namespace["make" if self.batch else "tight"]
        return fn

    def deferred(self, key: tuple[str, str], make: Callable[[], BatchCheck | None], v: str, ind: int) -> bool:
        """In batch mode, code collecting ``v`` for the batch check of ``key`` (True), or
        nothing (False: the caller checks ``v`` inline)."""
        if not self.batch:
            return False
        if key not in self.buckets:
            check = make()
            self.buckets[key] = None if check is None else f"_a{len(self.checks)}"
            if check is not None:
                self.checks.append(check)
        append = self.buckets[key]
        if append is None:
            return False
        self.emit(ind, f"{append}({v})")
        return True

    def const(self, value: Any) -> str:
        """A constant of the generated code: bound by name, never written into its source."""
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def emit(self, indent: int, line: str) -> None:
        if indent > _MAX_INDENT:
            raise _Unsupported
        self.lines.append("    " * indent + line)

    def node(self, s: Mapping[str, Any], v: str, ind: int, loops: int) -> None:
        """Code that returns False unless the value in variable ``v`` is valid under ``s``."""
        if not isinstance(s, Mapping) or any(k not in _SUPPORTED for k in s):
            raise _Unsupported
        t = s.get("type")
        if isinstance(t, str):
            types = [t]
        elif isinstance(t, list) and t:
            types = list(t)
        elif t is None and "enum" in s:
            types = []  # the enum decides alone
        else:
            raise _Unsupported
        if any(x not in _TYPE_TEST for x in types):
            raise _Unsupported
        if "enum" in s:
            values = s["enum"]
            if not isinstance(values, list) or not values or not all(type(x) is str for x in values):
                raise _Unsupported  # 1 vs True vs 1.0: left to fastjsonschema
            if types and "string" not in types:
                self.emit(ind, "return False")  # string values only, no string admitted: undecided
                return
            allowed = self.const(frozenset(values))
            self.emit(ind, f"if type({v}) is not str or {v} not in {allowed}:")
            self.emit(ind + 1, "return False")
            self.string(s, v, ind)
            return
        if len(types) == 1:
            self.emit(ind, f"if not {_TYPE_TEST[types[0]].format(v=v)}:")
            self.emit(ind + 1, "return False")
            self.typed(types[0], s, v, ind, loops)
            return
        for i, x in enumerate(types):
            self.emit(ind, f"{'if' if i == 0 else 'elif'} {_TYPE_TEST[x].format(v=v)}:")
            before = len(self.lines)
            self.typed(x, s, v, ind + 1, loops)
            if len(self.lines) == before:
                self.emit(ind + 1, "pass")
        self.emit(ind, "else:")
        self.emit(ind + 1, "return False")

    def typed(self, t: str, s: Mapping[str, Any], v: str, ind: int, loops: int) -> None:
        if t == "string":
            self.string(s, v, ind)
        elif t in ("integer", "number"):
            self.number(s, v, ind)
            if t == "number" and self.batch:  # NaN and ±Infinity pass every bound comparison
                inf = self.const(math.inf)
                self.emit(ind, f"if not -{inf} < {v} < {inf}:")
                self.emit(ind + 1, "return False")
        elif t == "object":
            self.object(s, v, ind, loops)
        elif t == "array":
            self.array(s, v, ind, loops)

    def string(self, s: Mapping[str, Any], v: str, ind: int) -> None:
        self.bounds(f"len({v})", s.get("minLength"), s.get("maxLength"), ind)
        if "pattern" in s:
            pattern = s["pattern"]
            matcher = self.patterns.get(pattern)
            if matcher is None:
                raise _Unsupported  # never a pattern without its linear-time twin
            if not self.deferred(("pattern", pattern), lambda: pattern_batch(pattern, matcher), v, ind):
                self.emit(ind, f"if not {self.const(matcher.search)}({v}):")
                self.emit(ind + 1, "return False")
        if "format" in s:
            name = s["format"]
            check = FORMATS.get(name)
            if check is None:
                raise _Unsupported
            if not self.deferred(("format", name), lambda: format_batch(name), v, ind):
                self.emit(ind, f"if not {self.const(check)}({v}):")
                self.emit(ind + 1, "return False")

    def bounds(self, x: str, lo: Any, hi: Any, ind: int) -> None:
        """Code returning False unless ``lo <= x <= hi`` (either bound may be None): counts,
        written as decimal literals (exact ints only), in one chained comparison when both are set."""
        if lo is not None and hi is not None:
            self.emit(ind, f"if not {_count(lo)} <= {x} <= {_count(hi)}:")
        elif lo is not None:
            self.emit(ind, f"if {x} < {_count(lo)}:")
        elif hi is not None:
            self.emit(ind, f"if {x} > {_count(hi)}:")
        else:
            return
        self.emit(ind + 1, "return False")

    def number(self, s: Mapping[str, Any], v: str, ind: int) -> None:
        lo, hi = s.get("minimum"), s.get("maximum")
        if type(lo) is int and type(hi) is int:  # the common case: one chained comparison of literals
            self.bounds(v, lo, hi, ind)
            s = {k: x for k, x in s.items() if k not in ("minimum", "maximum")}
        for key, op in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<="), ("exclusiveMaximum", ">=")):
            if key in s:
                bound = s[key]
                if type(bound) not in (int, float):
                    raise _Unsupported
                self.emit(ind, f"if {v} {op} {self.const(bound)}:")
                self.emit(ind + 1, "return False")

    def object(self, s: Mapping[str, Any], v: str, ind: int, loops: int) -> None:
        props = s.get("properties", {})
        required = s.get("required", [])
        add = s.get("additionalProperties", True)
        if not isinstance(props, Mapping) or not isinstance(required, list) or type(add) is not bool:
            raise _Unsupported  # an additionalProperties schema: left to fastjsonschema
        self.open = self.open or add  # values under undeclared keys are not looked at
        if not all(type(k) is str for k in props) or not all(type(r) is str for r in required):
            raise _Unsupported
        keys = self.var()
        if not add and set(required) == set(props):
            # keys == props, as its size and a read of each of them (below) that raises KeyError
            # if one is missing (compile_tight: False): no key-set comparison per object.
            self.emit(ind, f"if len({v}) != {len(props)}:")
            self.emit(ind + 1, "return False")
            required_set = set(props)
        elif not add and set(required) <= set(props):
            # keys == the required ones plus the optional ones present: each required one read
            # (KeyError if missing), the optional ones counted as found, the total compared at the end.
            self.emit(ind, f"{keys} = {len(set(required))}")
            self.closed(s, props, set(required), v, keys, ind, loops)
            return
        else:
            self.emit(ind, f"{keys} = {v}.keys()")
            if required:
                self.emit(ind, f"if not {keys} >= {self.const(frozenset(required))}:")
                self.emit(ind + 1, "return False")
            if not add:
                self.emit(ind, f"if not {keys} <= {self.const(frozenset(props))}:")
                self.emit(ind + 1, "return False")
            required_set = set(required)
        self.bounds(f"len({v})", s.get("minProperties"), s.get("maxProperties"), ind)
        self.properties(props, required_set, v, keys, None, ind, loops)

    def properties(
        self, props: Mapping[str, Any], required: set[str], v: str, keys: str, count: str | None, ind: int, loops: int
    ) -> None:
        """Each declared property's check: a required one read outright, an optional one when
        present in ``keys`` (and counted in ``count``, if given)."""
        for name, sub in props.items():
            child = self.var()
            if name in required:
                self.emit(ind, f"{child} = {v}[{self.const(name)}]")
                self.node(sub, child, ind, loops)
            else:
                self.emit(ind, f"if {self.const(name)} in {keys}:")
                if count is not None:
                    self.emit(ind + 1, f"{count} += 1")
                self.emit(ind + 1, f"{child} = {v}[{self.const(name)}]")
                self.node(sub, child, ind + 1, loops)

    def closed(
        self, s: Mapping[str, Any], props: Mapping[str, Any], required: set[str], v: str, n: str, ind: int, loops: int
    ) -> None:
        """A closed object with optional properties: ``n`` counts the declared keys present, and
        the object is valid only if that is all of its keys."""
        self.bounds(f"len({v})", s.get("minProperties"), s.get("maxProperties"), ind)
        self.properties(props, required, v, v, n, ind, loops)
        self.emit(ind, f"if len({v}) != {n}:")
        self.emit(ind + 1, "return False")

    def array(self, s: Mapping[str, Any], v: str, ind: int, loops: int) -> None:
        self.bounds(f"len({v})", s.get("minItems"), s.get("maxItems"), ind)
        items = s.get("items")
        if items is None:
            self.open = True  # items are not looked at
            return
        if loops + 1 > _MAX_LOOPS:
            raise _Unsupported
        item = self.var()
        self.emit(ind, f"for {item} in {v}:")
        before = len(self.lines)
        self.node(items, item, ind + 1, loops + 1)
        if len(self.lines) == before:
            self.emit(ind + 1, "pass")


def _count(value: Any) -> int:
    if type(value) is not int:
        raise _Unsupported
    return value
