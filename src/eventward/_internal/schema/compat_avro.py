"""Avro compatibility by the specification's schema-resolution rules (reader vs writer).

fastavro resolves at read time but offers no static check, so this walks two normalized
trees (avro_schema.py) the way a reader would resolve data written with the writer schema:
promotions int->long->float->double and string<->bytes; named types match by unqualified
name or a reader alias; records match fields by name or reader field alias, and a reader
field missing from the writer needs a default; enums need every writer symbol (or a reader
default); fixed sizes must agree; a writer union needs every branch readable; a reader
union needs a branch matching the writer. Every failure is reported, not only the first.
"""

from __future__ import annotations

from typing import Any

from eventward._internal.schema.avro_schema import short
from eventward._internal.schema.model import Finding

PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_NAMED = frozenset({"record", "enum", "fixed"})


def reader_accepts(reader: dict[str, Any], writer: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    _resolve(reader, writer, "$", out)
    return out


def signature(node: dict[str, Any]) -> str:
    """A short human name of a type: ``string``, ``record Item``, ``array``."""
    t = node["type"]
    return f"{t} {short(node['name'])}" if t in _NAMED else t


def matches(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Do these two (non-union) schemas match, by the spec's first resolution step?"""
    rt, wt = reader["type"], writer["type"]
    if rt == wt:
        if rt in _NAMED:
            return short(writer["name"]) in (short(reader["name"]), *reader["aliases"])
        return True
    return rt in PROMOTIONS.get(wt, ())


def _resolve(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    if w["type"] == "union":
        for branch in w["branches"]:
            _resolve(r, branch, path, out)
        return
    if r["type"] == "union":
        for branch in r["branches"]:
            if matches(branch, w):
                _resolve(branch, w, path, out)
                return
        out.append(
            Finding(path, "union_branch_missing", f"no reader union branch reads the writer's {signature(w)}")
        )
        return
    if not matches(r, w):
        kind = "name_changed" if r["type"] == w["type"] else "type_mismatch"
        out.append(Finding(path, kind, f"the writer's {signature(w)} cannot be read as {signature(r)}"))
        return
    t = r["type"]
    if t == "record":
        _record(r, w, path, out)
    elif t == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            out.append(
                Finding(
                    path, "enum_symbol_missing", f"writer symbols missing in the reader: {', '.join(missing)}"
                )
            )
    elif t == "fixed" and r["size"] != w["size"]:
        out.append(
            Finding(path, "fixed_size_changed", f"fixed size {w['size']} cannot be read as {r['size']}")
        )
    elif t == "array":
        _resolve(r["items"], w["items"], f"{path}[]", out)
    elif t == "map":
        _resolve(r["values"], w["values"], f"{path}.*", out)


def _record(r: dict[str, Any], w: dict[str, Any], path: str, out: list[Finding]) -> None:
    writer_fields = {f["name"]: f for f in w["fields"]}
    for rf in r["fields"]:
        wf = next((writer_fields[n] for n in (rf["name"], *rf["aliases"]) if n in writer_fields), None)
        fpath = f"{path}.{rf['name']}"
        if wf is not None:
            _resolve(rf["type"], wf["type"], fpath, out)
        elif not rf["has_default"]:
            out.append(
                Finding(
                    fpath, "field_added_without_default", "the reader needs a field the writer does not have"
                )
            )
