"""JSON Schema compatibility: does a reader schema accept every value a writer schema admits?

Backward compatibility is ``reader_accepts(new, old)``, forward is ``reader_accepts(old, new)``.
Both schemas are normalized (closed objects, explicit bounds), so the check is a structural
walk of the two trees. It is conservative: it may report a break that no real value would
trigger (for instance two different patterns that happen to accept the same strings), never
miss one for the supported keyword set. Every break is reported, not only the first.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Any

from eventward._internal.schema.json_schema import enum_of, json_key, types_of
from eventward._internal.schema.model import Finding
from eventward._internal.schema.regex import LinearRegex

ANY: dict[str, Any] = {}  # admits every value (what ``additionalProperties: true`` lets through)

Bound = tuple[float, bool]  # (limit, exclusive)


def reader_accepts(reader: dict[str, Any], writer: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    _accepts(reader, writer, "$", out)
    return out


def type_ok(reader_types: frozenset[str], t: str) -> bool:
    return t in reader_types or (t == "integer" and "number" in reader_types)


def upper(node: dict[str, Any]) -> Bound | None:
    """The effective upper bound from maximum/exclusiveMaximum; None if unbounded."""
    bounds = [(float(node["maximum"]), False)] if "maximum" in node else []
    if "exclusiveMaximum" in node:
        bounds.append((float(node["exclusiveMaximum"]), True))
    return min(bounds, key=lambda b: (b[0], not b[1])) if bounds else None


def lower(node: dict[str, Any]) -> Bound | None:
    bounds = [(float(node["minimum"]), False)] if "minimum" in node else []
    if "exclusiveMinimum" in node:
        bounds.append((float(node["exclusiveMinimum"]), True))
    return max(bounds, key=lambda b: (b[0], b[1])) if bounds else None


def upper_tighter(a: Bound | None, b: Bound | None) -> bool:
    """Is upper bound ``a`` stricter than ``b`` (None = unbounded)?"""
    if a is None:
        return False
    return b is None or a[0] < b[0] or (a[0] == b[0] and a[1] and not b[1])


def lower_tighter(a: Bound | None, b: Bound | None) -> bool:
    if a is None:
        return False
    return b is None or a[0] > b[0] or (a[0] == b[0] and a[1] and not b[1])


def multiple_ok(reader: float | None, writer: float | None) -> bool:
    """Is every multiple of ``writer`` a multiple of ``reader``?"""
    if reader is None:
        return True
    if writer is None:
        return False
    return (Fraction(str(writer)) / Fraction(str(reader))).denominator == 1


@lru_cache(maxsize=1024)
def pattern(p: str) -> LinearRegex:
    return LinearRegex(p)


def _accepts(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    wt, rt = types_of(w), types_of(r)
    lost = sorted(t for t in wt if not type_ok(rt, t))
    if lost:
        out.append(Finding(path, "type_narrowed", f"values of type {', '.join(lost)} are no longer accepted"))
    _enum(r, w, path, out)
    live = {t for t in wt if type_ok(rt, t)}
    if "string" in live:
        _strings(r, w, path, out)
    if live & {"integer", "number"}:
        _numbers(r, w, path, out)
    if "array" in live:
        _arrays(r, w, path, out)
    if "object" in live:
        _objects(r, w, path, out)


def _enum(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    r_enum = enum_of(r)
    if r_enum is None:
        return
    w_enum = enum_of(w)
    if w_enum is None:
        out.append(Finding(path, "enum_narrowed", "an enum/const now restricts values that were free"))
        return
    keys = {json_key(v) for v in r_enum}
    missing = [v for v in w_enum if json_key(v) not in keys]
    if missing:
        out.append(Finding(path, "enum_narrowed", f"{len(missing)} enum value(s) are no longer accepted"))


def _limit_lowered(
    r: dict[str, Any], w: dict[str, Any], key: str, path: str, kind: str, out: list[Finding]
) -> None:
    if key in r and (key not in w or r[key] < w[key]):
        out.append(Finding(path, kind, f"{key} is now {r[key]} (was {w.get(key, 'unbounded')})"))


def _minimum_raised(
    r: dict[str, Any], w: dict[str, Any], key: str, path: str, kind: str, out: list[Finding]
) -> None:
    if r.get(key, 0) > w.get(key, 0):
        out.append(Finding(path, kind, f"{key} is now {r[key]} (was {w.get(key, 0)})"))


def _strings(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    _limit_lowered(r, w, "maxLength", path, "max_length_lowered", out)
    _minimum_raised(r, w, "minLength", path, "min_length_raised", out)
    if "pattern" in r and r["pattern"] != w.get("pattern"):
        out.append(Finding(path, "pattern_changed", "the reader's pattern differs from the writer's"))
    if "format" in r and r["format"] != w.get("format"):
        out.append(Finding(path, "format_changed", f"format is now {r['format']}"))


def _numbers(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    if upper_tighter(upper(r), upper(w)):
        out.append(Finding(path, "maximum_lowered", "the upper bound is stricter"))
    if lower_tighter(lower(r), lower(w)):
        out.append(Finding(path, "minimum_raised", "the lower bound is stricter"))
    if not multiple_ok(r.get("multipleOf"), w.get("multipleOf")):
        out.append(Finding(path, "multiple_of_changed", "multipleOf refuses values accepted before"))


def _arrays(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    _limit_lowered(r, w, "maxItems", path, "max_items_lowered", out)
    _minimum_raised(r, w, "minItems", path, "min_items_raised", out)
    if r.get("uniqueItems") and not w.get("uniqueItems"):
        out.append(Finding(path, "unique_items_added", "items must now be unique"))
    _accepts(r.get("items", ANY), w.get("items", ANY), f"{path}[]", out)


def _objects(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    rprops, wprops = r.get("properties", {}), w.get("properties", {})
    radd, wadd = r.get("additionalProperties", False), w.get("additionalProperties", False)
    rpat, wpat = r.get("patternProperties", {}), w.get("patternProperties", {})
    for name in sorted(set(r.get("required", ())) - set(w.get("required", ()))):
        out.append(
            Finding(f"{path}.{name}", "required_added", "a field that was optional or absent is now required")
        )
    for name, ws in wprops.items():
        _value_for(r, name, ws, f"{path}.{name}", out)
    reader_only = [name for name in rprops if name not in wprops]
    if wadd is not False:
        ws = wadd if isinstance(wadd, dict) else ANY
        if radd is False:
            out.append(
                Finding(
                    path, "additional_properties_closed", "unknown fields accepted before are now refused"
                )
            )
        elif isinstance(radd, dict):
            _accepts(radd, ws, f"{path}.*", out)
        for name in reader_only:  # the writer may send it as an unknown field
            _accepts(rprops[name], ws, f"{path}.{name}", out)
    for wp, ws in wpat.items():
        if wp in rpat:
            _accepts(rpat[wp], ws, f"{path}.*", out)
        elif radd is False:
            out.append(
                Finding(
                    path, "pattern_properties_removed", "fields matched by a writer pattern are now refused"
                )
            )
        elif isinstance(radd, dict):
            _accepts(radd, ws, f"{path}.*", out)
        for name in reader_only:
            if pattern(wp).search(name):
                _accepts(rprops[name], ws, f"{path}.{name}", out)
    if any(rp not in wpat for rp in rpat) and (wadd is not False or wpat):
        out.append(
            Finding(path, "pattern_properties_added", "a new pattern constrains fields the writer may send")
        )
    _limit_lowered(r, w, "maxProperties", path, "max_properties_lowered", out)
    _minimum_raised(r, w, "minProperties", path, "min_properties_raised", out)


def _value_for(r: dict[str, Any], name: str, ws: dict[str, Any], path: str, out: list[Finding]) -> None:
    """Check a field the writer may send against every reader schema that applies to its name."""
    applies = [r["properties"][name]] if name in r.get("properties", {}) else []
    applies += [s for p, s in r.get("patternProperties", {}).items() if pattern(p).search(name)]
    for rs in applies:
        _accepts(rs, ws, path, out)
    if applies:
        return
    radd = r.get("additionalProperties", False)
    if radd is False:
        out.append(Finding(path, "property_removed", "a field the writer may send is no longer accepted"))
    elif isinstance(radd, dict):
        _accepts(radd, ws, path, out)
