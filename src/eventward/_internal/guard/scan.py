"""Which untagged field paths of events carry which kinds of PII or secrets: counts, never values.

A path is written the way schemas tag it (``customer.notes``, ``items[].comment``), so a
finding can become a tag. Object keys that are not plain names (a map keyed by emails, say)
are written ``*``: a path never repeats a value. Paths the schema tags (the encrypted ones)
and the data-subject field are skipped: they are protected already.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eventward._internal.fieldspec import FieldSpec
from eventward._internal.guard.detectors import MIN_SCAN_CHARS as _MIN
from eventward._internal.guard.detectors import Detectors, default_detectors

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}\Z")
MAX_DEPTH = 64


_SEGMENTS: dict[str, str] = {}


def _segment(key: object) -> str:
    if type(key) is str:
        seg = _SEGMENTS.get(key)
        if seg is None:
            seg = key if _NAME.match(key) else "*"
            if len(_SEGMENTS) < 4096:
                _SEGMENTS[key] = seg
        return seg
    return "*"


def leaves(data: Any) -> Iterator[tuple[str, Any]]:
    """(tag-style path, value) for every scalar in ``data``; map keys that are not names are ``*``
    (and the key itself is yielded as ``path{key}``: a key may be the PII). Iterative, bounded depth."""
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        prefix, node, depth = stack.pop()
        if type(node) is dict:
            for k, v in node.items():
                seg = _segment(k)
                p = f"{prefix}.{seg}" if prefix else seg
                if type(v) is dict or type(v) is list:
                    if depth < MAX_DEPTH:
                        stack.append((p, v, depth + 1))
                else:
                    yield p, v
                if seg == "*" and isinstance(k, str):
                    yield p + "{key}", k
        elif type(node) is list:
            p = f"{prefix}[]" if prefix else "[]"
            for v in node:
                if type(v) is dict or type(v) is list:
                    if depth < MAX_DEPTH:
                        stack.append((p, v, depth + 1))
                else:
                    yield p, v


_PROTECTED: dict[int, tuple[FieldSpec, frozenset[str]]] = {}


def protected_paths(spec: FieldSpec) -> frozenset[str]:
    """Tagged paths (encrypted) and the data-subject field: not reported."""
    hit = _PROTECTED.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    paths = {r.path for r in spec.rules}
    if spec.subject_path:
        paths.add(spec.subject_path)
    out = frozenset(paths)
    if len(_PROTECTED) > 1024:
        _PROTECTED.clear()
    _PROTECTED[id(spec)] = (spec, out)
    return out


_COVERED: dict[tuple[frozenset[str], str], bool] = {}


def _covered(path: str, protected: frozenset[str]) -> bool:
    """Tagged paths, and everything under a tagged object or array (memoized: paths repeat)."""
    key = (protected, path)
    hit = _COVERED.get(key)
    if hit is None:
        hit = path in protected or any(path.startswith(p + ".") or path.startswith(p + "[]") for p in protected)
        if len(_COVERED) < 65536:
            _COVERED[key] = hit
    return hit


def findings(data: Any, spec: FieldSpec, detectors: Detectors | None = None) -> list[tuple[str, str]]:
    """(path, kind) for each untagged value of one event that a detector confirms.

    Hot path (the producer guard calls it per event): values no detector can match (short
    strings, small numbers, floats, values already found clean) are skipped before their path
    string is even built."""
    det = detectors or default_detectors()
    out: list[tuple[str, str]] = []
    todo: list[tuple[str, str]] = []
    _walk(data, "", 0, out, todo, det, protected_paths(spec))
    if todo:
        for (path, _), kinds in zip(todo, det.kinds_many([v for _, v in todo]), strict=True):
            out.extend((path, kind) for kind in sorted(kinds))
    return out


def _walk(node: Any, prefix: str, depth: int, out: list[tuple[str, str]], todo: list[tuple[str, str]],
          det: Detectors, protected: frozenset[str]) -> None:
    """Collects (path, text) of the values worth a detector's look into ``todo``."""
    clean, names = det.clean, _SEGMENTS
    if type(node) is dict:
        for k, v in node.items():
            t = type(v)
            nested = t is dict or t is list
            worth = (t is str and len(v) >= _MIN and v not in clean) or (t is int and not -(10**8) < v < 10**8)
            if not (nested or worth) and names.get(k) == k:
                continue  # most leaves: a known field name and nothing to look at
            seg = _segment(k)
            p = f"{prefix}.{seg}" if prefix else seg
            if seg == "*" and type(k) is str and not _covered(p, protected):
                out.extend((p + "{key}", kind) for kind in sorted(det.kinds(k)))
            if nested:
                if depth < MAX_DEPTH:
                    _walk(v, p, depth + 1, out, todo, det, protected)
            elif worth and not _covered(p, protected):
                todo.append((p, v if t is str else str(v)))
    elif type(node) is list:
        p = f"{prefix}[]" if prefix else "[]"
        for v in node:
            t = type(v)
            if t is dict or t is list:
                if depth < MAX_DEPTH:
                    _walk(v, p, depth + 1, out, todo, det, protected)
            elif ((t is str and len(v) >= _MIN and v not in clean) or (t is int and not -(10**8) < v < 10**8)) and (
                not _covered(p, protected)
            ):
                todo.append((p, v if t is str else str(v)))


@dataclass
class ScanReport:
    """Counts per (event type, path, kind), the schema versions seen, and how many events were read."""

    events: int = 0
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    versions: dict[str, set[int]] = field(default_factory=dict)
    skipped: int = 0  # events that could not be read (no schema, not JSON)

    def add(self, type_: str, version: int | None, found: Iterable[tuple[str, str]]) -> None:
        self.events += 1
        if version is not None:
            self.versions.setdefault(type_, set()).add(version)
        for path, kind in set(found):  # an event counts once per (path, kind)
            self.counts[(type_, path, kind)] += 1

    def rows(self) -> list[dict[str, Any]]:
        """The stable --json rows: type, schema versions, path, kind, events; never a value."""
        return [
            {
                "type": t,
                "schema_versions": sorted(self.versions.get(t, ())),
                "path": p,
                "kind": k,
                "events": n,
            }
            for (t, p, k), n in sorted(self.counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
        ]

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "skipped": self.skipped, "findings": self.rows()}


# --- schema-guided scan (the producer guard's hot path) ----------------------------------------

_SAFE_FORMATS = frozenset({"date-time", "date", "time", "duration", "uuid"})
_BIG = 10**8


@dataclass(frozen=True)
class _Plan:
    """Where, in data valid against one JSON Schema, a detector can find anything: children
    that matter, array items, whether this value is a candidate, or ``generic`` (a map or an
    open object: everything below is walked)."""

    props: tuple[tuple[str, _Plan], ...] = ()
    items: _Plan | None = None
    leaf: bool = False
    generic: bool = False
    #: which leaf values the schema admits (the compiled scan tests only those types)
    strings: bool = False
    integers: bool = False


def _plan(node: dict[str, Any], path: str, protected: frozenset[str], depth: int = 0) -> _Plan | None:
    from eventward._internal.schema.json_schema import types_of

    if path in protected or "enum" in node or "const" in node or depth > MAX_DEPTH:
        return None  # encrypted, or values the schema itself lists
    if node.get("additionalProperties", False) is not False or node.get("patternProperties"):
        return _Plan(generic=True)
    types = types_of(node)
    strings = "string" in types and node.get("format") not in _SAFE_FORMATS and node.get("maxLength", 1 << 30) >= _MIN
    integers = "integer" in types and not (node.get("minimum", -_BIG) > -_BIG and node.get("maximum", _BIG) < _BIG)
    leaf = strings or integers
    props = []
    for name, child in (node.get("properties") or {}).items():
        sub = _plan(child, f"{path}.{name}" if path else name, protected, depth + 1)
        if sub is not None:
            props.append((name, sub))
    items = _plan(node["items"], f"{path}[]", protected, depth + 1) if isinstance(node.get("items"), dict) else None
    if not (props or items or leaf):
        return None
    return _Plan(tuple(props), items, leaf, strings=strings, integers=integers)


#: A compiled plan: (data, findings out, candidate values out, detectors, protected paths).
_Collect = Callable[[Any, list[tuple[str, str]], list[tuple[str, str]], Detectors, frozenset[str]], None]
_PLANS: dict[int, tuple[Any, _Collect | None, frozenset[str]]] = {}


def _scanner(schema: Any, compiled: Any) -> tuple[Any, _Collect | None, frozenset[str]]:
    """The schema version's plan compiled to one function, and its protected paths: built once
    per compiled schema (id-keyed, identity-checked), so an event pays no planning at all."""
    hit = _PLANS.get(id(compiled))
    if hit is None or hit[0] is not compiled:
        protected = protected_paths(schema.spec)
        plan = _plan(compiled.tree, "", protected)
        if len(_PLANS) > 1024:
            _PLANS.clear()
        hit = _PLANS[id(compiled)] = (compiled, None if plan is None else compile_plan(plan), protected)
    return hit


def findings_for(schema: Any, data: Any, detectors: Detectors | None = None) -> list[tuple[str, str]]:
    """``findings`` for data that passed ``schema``'s validation: a strict JSON Schema says which
    paths can hold anything at all (no enum, float, bounded integer, short string, date-time or
    tagged field is looked at), so only those are visited, by code generated for that schema
    (``compile_plan``). Other schemas: the full walk."""
    det = detectors or default_detectors()
    out, todo = candidates_for(schema, data, det)
    if todo:
        for (path, _), kinds in zip(todo, det.kinds_many([v for _, v in todo]), strict=True):
            out.extend((path, kind) for kind in sorted(kinds))
    return out


def candidates_for(schema: Any, data: Any, det: Detectors) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``findings_for``'s first half: findings made already (map keys), and (path, value) of the
    values the detectors still have to look at (none memoized clean). The second half is
    ``det.kinds_many`` over the values, for one event or many (the producer guard's warn mode
    settles a buffer's worth at a time)."""
    out: list[tuple[str, str]] = []
    todo: list[tuple[str, str]] = []
    compiled = getattr(schema, "compiled", None)
    if compiled is None or getattr(compiled, "fmt", None) != "json":
        _walk(data, "", 0, out, todo, det, protected_paths(schema.spec))
        return out, todo
    _, collect, protected = _scanner(schema, compiled)
    if collect is not None:
        collect(data, out, todo, det, protected)
    return out, todo


def findings_many(schema: Any, events: list[Any], detectors: Detectors | None = None) -> list[list[tuple[str, str]]]:
    """``findings_for`` of each event of a batch (``Producer.send_many``), with the candidate
    values of all events going through ``Detectors.kinds_many`` together: one joint RE2 pre-check
    per chunk of values instead of one per event."""
    det = detectors or default_detectors()
    found = [candidates_for(schema, data, det) for data in events]
    settle(found, det)
    return [out for out, _ in found]


def settle(found: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]], det: Detectors) -> None:
    """Run the detectors over the values ``candidates_for`` left to check, for many events at once,
    adding what they confirm to each event's findings (the first list of each pair)."""
    texts = [v for _, todo in found for _, v in todo]
    if not texts:
        return
    kinds = iter(det.kinds_many(texts))
    for out, todo in found:
        for path, _ in todo:
            k = next(kinds)
            if k:
                out.extend((path, kind) for kind in sorted(k))


# --- the plan as code ---------------------------------------------------------------------------

#: Levels of the plan emitted inline; deeper sub-plans (and open objects) run interpreted (``_run``),
#: so generated code stays far from Python's nesting limits whatever the schema.
_INLINE_DEPTH = 12
_MAX_INLINE_NODES = 4096


def _size(plan: _Plan) -> int:
    return 1 + sum(_size(sub) for _, sub in plan.props) + (_size(plan.items) if plan.items is not None else 0)


def compile_plan(plan: _Plan) -> _Collect:
    """``_run`` specialised to one plan: a Python function whose branches are the plan's, with the
    field names and paths as constants, so an event costs a few dict lookups and type checks
    instead of a recursive call per schema node (the producer guard's hot path).

    Only ``repr`` of strings (property names, paths) and integers we count enter the source:
    a schema's names are data in the generated code, never code. Tested equal to ``_run`` and to
    the full walk (tests/guard/test_guard_fastpath.py)."""
    if _size(plan) > _MAX_INLINE_NODES:
        return lambda data, out, todo, det, protected: _run(data, plan, "", out, todo, det, protected)
    lines = ["def collect(v0, out, todo, det, protected):", "    clean = det.clean"]
    subs: list[_Plan] = []
    names = iter(range(1, 1 << 30))

    def interpreted(p: _Plan, var: str, path: str, pad: str) -> None:
        subs.append(p)
        lines.append(f"{pad}_run({var}, _SUB[{len(subs) - 1}], {path!r}, out, todo, det, protected)")

    def emit(p: _Plan, var: str, path: str, indent: int, depth: int) -> None:
        pad = "    " * indent
        if p.generic or depth >= _INLINE_DEPTH:
            interpreted(p, var, path, pad)
            return
        t = f"t{next(names)}"
        branches: list[tuple[str, Callable[[], None]]] = []
        if p.leaf:
            def leaf_str() -> None:
                lines.append(f"{pad}    if len({var}) >= {_MIN} and {var} not in clean:")
                lines.append(f"{pad}        todo.append(({path!r}, {var}))")

            def leaf_int() -> None:
                lines.append(f"{pad}    if not {-_BIG} < {var} < {_BIG}:")
                lines.append(f"{pad}        todo.append(({path!r}, str({var})))")

            if p.strings:
                branches.append((f"{t} is str", leaf_str))
            if p.integers:
                branches.append((f"{t} is int", leaf_int))
        if p.props:
            def props() -> None:
                for name, sub in p.props:  # an absent field is None: no branch takes it
                    child = f"v{next(names)}"
                    lines.append(f"{pad}    {child} = {var}.get({name!r})")
                    emit(sub, child, f"{path}.{name}" if path else name, indent + 1, depth + 1)

            branches.append((f"{t} is dict", props))
        if p.items is not None:
            items = p.items

            def each() -> None:
                child = f"v{next(names)}"
                lines.append(f"{pad}    for {child} in {var}:")
                emit(items, child, f"{path}[]", indent + 2, depth + 1)

            branches.append((f"{t} is list", each))
        if len(branches) == 1:
            cond, body = branches[0]
            lines.append(f"{pad}if {cond.replace(t, f'type({var})', 1)}:")
            body()
            return
        lines.append(f"{pad}{t} = type({var})")
        for k, (cond, body) in enumerate(branches):
            lines.append(f"{pad}{'if' if k == 0 else 'elif'} {cond}:")
            body()

    emit(plan, "v0", "", 1, 0)
    namespace: dict[str, Any] = {"_run": _run, "_SUB": tuple(subs)}
    # generated from the plan above (names and paths as repr'd constants): no input is code
    exec(compile("\n".join(lines), "<eventward._internal.guard.scan plan>", "exec"), namespace)  # noqa: S102
    return namespace["collect"]  # type: ignore[no-any-return]


def _run(value: Any, plan: _Plan, path: str, out: list[tuple[str, str]], todo: list[tuple[str, str]],
         det: Detectors, protected: frozenset[str]) -> None:
    if plan.generic:
        if type(value) is dict or type(value) is list:
            _walk(value, path, 0, out, todo, det, protected)
        elif type(value) is str and len(value) >= _MIN and value not in det.clean:
            todo.append((path, value))
        return
    t = type(value)
    worth = (t is str and len(value) >= _MIN and value not in det.clean) or (t is int and not -_BIG < value < _BIG)
    if plan.leaf and worth:
        todo.append((path, value if t is str else str(value)))
    elif t is dict:
        for name, sub in plan.props:
            v = value.get(name)
            if v is not None:
                _run(v, sub, f"{path}.{name}" if path else name, out, todo, det, protected)
    elif t is list and plan.items is not None:
        p = f"{path}[]"
        for v in value:
            _run(v, plan.items, p, out, todo, det, protected)
