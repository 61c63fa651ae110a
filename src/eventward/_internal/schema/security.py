"""The security-regression check: what a schema change weakens, compared to the active version.

Data compatibility says whether old and new can read each other; this says whether the new
schema protects less. Any finding here holds the change until a principal allowed
ApproveSecurity signs off. Kinds:

    tag_removed, tag_class_changed, tag_deterministic_added   sensitivity tags
    subject_changed                                            the data-subject field
    size_limit_raised, format_changed                          whole-schema limits
    guard_weakened                                             x-eventward-guard lowered (guard/modes.py)
    pattern_loosened (any change or removal), format_loosened, enum_widened, type_widened,
    max_length_raised, min_length_lowered, max_items_raised, min_items_lowered,
    maximum_raised, minimum_lowered, multiple_of_loosened, unique_items_removed,
    max_properties_raised, min_properties_lowered, unknown_fields_allowed
"""

from __future__ import annotations

from typing import Any

from eventward._internal.guard.modes import weakened as guard_weakened
from eventward._internal.schema.compat_avro import PROMOTIONS, signature
from eventward._internal.schema.compat_json import lower, lower_tighter, multiple_ok, upper, upper_tighter
from eventward._internal.schema.compiled import CompiledSchema
from eventward._internal.schema.json_schema import enum_of, json_key, types_of
from eventward._internal.schema.model import Finding


def regressions(old: CompiledSchema, new: CompiledSchema) -> list[Finding]:
    """Every way ``new`` protects less than ``old`` (empty: no security approval needed)."""
    out = _tags(old, new)
    for topic, before, after in guard_weakened(old.document, new.document):
        where = "every other topic" if topic == "*" else f"topic {topic}"
        out.append(Finding("$", "guard_weakened", f"producer guard on {where} lowered from {before} to {after}"))
    if new.max_event_bytes > old.max_event_bytes:
        out.append(
            Finding(
                "$",
                "size_limit_raised",
                f"maximum event size raised from {old.max_event_bytes} to {new.max_event_bytes} bytes",
            )
        )
    if old.fmt != new.fmt:
        out.append(
            Finding(
                "$", "format_changed", f"schema format changed from {old.fmt} to {new.fmt}: not comparable"
            )
        )
    elif new.fmt == "json":
        _json(old.tree, new.tree, "$", out)
    else:
        _avro(old.tree, new.tree, "$", out)
    return out


def _tags(old: CompiledSchema, new: CompiledSchema) -> list[Finding]:
    out = []
    new_rules = {r.path: r for r in new.spec.rules}
    for r in old.spec.rules:
        path = f"$.{r.path}"
        n = new_rules.get(r.path)
        if n is None:
            out.append(
                Finding(
                    path,
                    "tag_removed",
                    f"sensitivity class {r.cls!r} removed: the field would be sent in clear",
                )
            )
        elif n.cls != r.cls:
            out.append(
                Finding(path, "tag_class_changed", f"sensitivity class changed from {r.cls!r} to {n.cls!r}")
            )
        elif n.deterministic and not r.deterministic:
            out.append(
                Finding(
                    path,
                    "tag_deterministic_added",
                    "deterministic (equality-searchable) encryption leaks equal values",
                )
            )
    if old.spec.subject_path != new.spec.subject_path:
        before, after = old.spec.subject_path, new.spec.subject_path
        out.append(
            Finding(
                f"$.{after or before}",
                "subject_changed",
                f"data-subject field changed from {before or 'none'} to {after or 'none'}",
            )
        )
    return out


# --- JSON Schema ------------------------------------------------------------------------------


def _json(o: dict[str, Any], n: dict[str, Any], path: str, out: list[Finding]) -> None:
    ot, nt = types_of(o), types_of(n)
    added = sorted(t for t in nt if t not in ot and not (t == "integer" and "number" in ot))
    if added:
        out.append(Finding(path, "type_widened", f"now also accepts {', '.join(added)}"))
    o_enum, n_enum = enum_of(o), enum_of(n)
    if o_enum is not None:
        keys = {json_key(v) for v in o_enum}
        if n_enum is None:
            out.append(Finding(path, "enum_widened", "the enum/const restriction was removed"))
        elif any(json_key(v) not in keys for v in n_enum):
            out.append(Finding(path, "enum_widened", "the enum accepts new values"))
    if "pattern" in o and n.get("pattern") != o["pattern"]:
        out.append(Finding(path, "pattern_loosened", "the pattern was changed or removed"))
    if "format" in o and n.get("format") != o["format"]:
        out.append(Finding(path, "format_loosened", "the format was changed or removed"))
    for key, kind in (
        ("maxLength", "max_length_raised"),
        ("maxItems", "max_items_raised"),
        ("maxProperties", "max_properties_raised"),
    ):
        if key in o and (key not in n or n[key] > o[key]):
            out.append(Finding(path, kind, f"{key} raised from {o[key]} to {n.get(key, 'unbounded')}"))
    for key, kind in (
        ("minLength", "min_length_lowered"),
        ("minItems", "min_items_lowered"),
        ("minProperties", "min_properties_lowered"),
    ):
        if o.get(key, 0) > n.get(key, 0):
            out.append(Finding(path, kind, f"{key} lowered from {o[key]} to {n.get(key, 0)}"))
    if upper_tighter(upper(o), upper(n)):
        out.append(Finding(path, "maximum_raised", "the upper bound was raised or removed"))
    if lower_tighter(lower(o), lower(n)):
        out.append(Finding(path, "minimum_lowered", "the lower bound was lowered or removed"))
    if not multiple_ok(o.get("multipleOf"), n.get("multipleOf")):
        out.append(Finding(path, "multiple_of_loosened", "multipleOf admits values it refused before"))
    if o.get("uniqueItems") and not n.get("uniqueItems"):
        out.append(Finding(path, "unique_items_removed", "items no longer need to be unique"))
    _json_objects(o, n, path, out)
    if "items" in o and "items" in n:
        _json(o["items"], n["items"], f"{path}[]", out)


def _json_objects(o: dict[str, Any], n: dict[str, Any], path: str, out: list[Finding]) -> None:
    oadd, nadd = o.get("additionalProperties", False), n.get("additionalProperties", False)
    if (oadd is False and nadd is not False) or (isinstance(oadd, dict) and nadd is True):
        out.append(
            Finding(path, "unknown_fields_allowed", "fields not declared in the schema are now accepted")
        )
    elif isinstance(oadd, dict) and isinstance(nadd, dict):
        _json(oadd, nadd, f"{path}.*", out)
    opat, npat = o.get("patternProperties", {}), n.get("patternProperties", {})
    if any(p not in opat for p in npat):
        out.append(
            Finding(path, "unknown_fields_allowed", "a new patternProperties pattern admits more fields")
        )
    for p in opat.keys() & npat.keys():
        _json(opat[p], npat[p], f"{path}.*", out)
    oprops, nprops = o.get("properties", {}), n.get("properties", {})
    for name in oprops.keys() & nprops.keys():
        _json(oprops[name], nprops[name], f"{path}.{name}", out)


# --- Avro ---------------------------------------------------------------------------------------


def _avro(o: dict[str, Any], n: dict[str, Any], path: str, out: list[Finding]) -> None:
    if o["type"] == "union" or n["type"] == "union":
        obranches = o["branches"] if o["type"] == "union" else [o]
        nbranches = n["branches"] if n["type"] == "union" else [n]
        osigs = {signature(b): b for b in obranches}
        for b in nbranches:
            match = osigs.get(signature(b))
            if match is None:
                out.append(Finding(path, "type_widened", f"now also accepts {signature(b)}"))
            else:
                _avro(match, b, path, out)
        return
    ot, nt = o["type"], n["type"]
    if ot != nt:
        if nt in PROMOTIONS.get(ot, ()):
            out.append(Finding(path, "type_widened", f"{ot} widened to {nt}"))
        return  # any other type change is a compatibility question, not a loosening
    if ot == "record":
        nfields = {f["name"]: f for f in n["fields"]}
        for f in o["fields"]:
            if f["name"] in nfields:
                _avro(f["type"], nfields[f["name"]]["type"], f"{path}.{f['name']}", out)
    elif ot == "enum":
        added = [s for s in n["symbols"] if s not in o["symbols"]]
        if added:
            out.append(Finding(path, "enum_widened", f"new enum symbols: {', '.join(added)}"))
    elif ot == "array":
        _avro(o["items"], n["items"], f"{path}[]", out)
    elif ot == "map":
        _avro(o["values"], n["values"], f"{path}.*", out)
