"""Sensitivity tags (``x-eventward``) in a schema, turned into the FieldSpec encryption uses.

Tag shapes: ``{"class": "pii"}``, ``{"class": "pii", "deterministic": true}`` (equality
searchable), ``{"subject": true, "class": "pii"}`` (this field names the data subject and is
encrypted under the subject's key, so ``forget`` erases it from every event too). A subject
field in clear must say so on purpose: ``{"subject": true, "public": true}``; a bare
``{"subject": true}`` is refused, since the id in clear would link every event to the person
after ``forget``. JSON Schema: on a property schema or on array ``items``. Avro: on a record field.

Placement rules, refused with the path at fault: a tag needs a field path (not the root, not
under ``additionalProperties``/``patternProperties``/Avro maps, not inside an array of
arrays or a multi-branch union); no tag inside a tagged field; one subject field, outside
arrays, a string or integer, required and non-null all the way down from the root (a
missing subject would make encryption fail for valid events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventward._internal.fieldspec import FieldRule, FieldSpec, check_class
from eventward._internal.schema.json_schema import TAG_KEY, types_of
from eventward.errors import FieldSpecError, SchemaError

_TAG_KEYS = frozenset({"class", "deterministic", "subject", "public"})
_SUBJECT_JSON = frozenset({"string", "integer"})
_SUBJECT_AVRO = frozenset({"string", "int", "long"})


@dataclass(frozen=True)
class Tag:
    cls: str | None
    deterministic: bool
    subject: bool


def parse_tag(value: Any, at: str) -> Tag:
    """Check one ``x-eventward`` value; errors name ``at`` and the key at fault."""
    if not isinstance(value, dict):
        raise SchemaError(f'{at}: x-eventward must be an object such as {{"class": "pii"}}')
    for key in value:
        if key not in _TAG_KEYS:
            raise SchemaError(
                f"{at}: x-eventward key {str(key)[:40]!r} is unknown (use class, deterministic, subject, public)"
            )
    cls = value.get("class")
    if cls is not None:
        if not isinstance(cls, str):
            raise SchemaError(f"{at}: x-eventward class must be a string")
        try:
            check_class(cls)
        except FieldSpecError:
            raise SchemaError(
                f"{at}: x-eventward class must be 1..32 lowercase letters, digits, _ or -"
            ) from None
    det = value.get("deterministic", False)
    subject = value.get("subject", False)
    if not isinstance(det, bool) or not isinstance(subject, bool):
        raise SchemaError(f"{at}: x-eventward deterministic and subject must be booleans")
    public = value.get("public", False)
    if not isinstance(public, bool):
        raise SchemaError(f"{at}: x-eventward public must be a boolean")
    if public and (not subject or cls is not None):
        raise SchemaError(f'{at}: x-eventward public marks a data-subject field kept in clear: '
                          'use it with "subject": true and no class')
    if subject and cls is None and not public:
        raise SchemaError(
            f'{at}: the data-subject field would be in clear in every event, linking them to the person '
            'after forget: give it a class ({"subject": true, "class": "pii"}) to encrypt it, or mark it '
            '"public": true on purpose'
        )
    if det and cls is None:
        raise SchemaError(f"{at}: x-eventward deterministic needs a class")
    if cls is None and not subject:
        raise SchemaError(f'{at}: x-eventward needs a class or "subject": true')
    return Tag(cls, det, subject)


class _Builder:
    def __init__(self) -> None:
        self.rules: list[FieldRule] = []
        self.subject: str | None = None

    def add(
        self,
        segs: list[str] | None,
        tag: Tag,
        at: str,
        *,
        tagged_above: bool,
        subject_ok: bool,
        subject_type_ok: bool,
    ) -> None:
        if not segs:
            raise SchemaError(
                f"{at}: x-eventward can only tag a named field or the items of an array field "
                "(not the root, additional/pattern properties, maps, nested arrays or multi-branch unions)"
            )
        if tagged_above:
            raise SchemaError(f"{at}: a sensitive field cannot be nested inside another sensitive field")
        path = ".".join(segs)
        if tag.cls is not None:
            try:
                self.rules.append(FieldRule(path, tag.cls, tag.deterministic))
            except FieldSpecError:
                raise SchemaError(
                    f"{at}: a sensitive field's path may use only letters, digits, _ and - (no leading digit)"
                ) from None
        if tag.subject:
            if self.subject is not None:
                raise SchemaError(f"{at}: a second data-subject field (the first is $.{self.subject})")
            if any(s.endswith("[]") for s in segs):
                raise SchemaError(f"{at}: the data-subject field cannot be inside an array")
            if not subject_ok:
                raise SchemaError(
                    f"{at}: the data-subject field and every object above it must be required and non-null"
                )
            if not subject_type_ok:
                raise SchemaError(f"{at}: the data-subject field must be a (non-null) string or integer")
            self.subject = path

    def build(self) -> FieldSpec:
        try:
            return FieldSpec(tuple(self.rules), self.subject)
        except FieldSpecError as e:
            raise SchemaError(f"sensitivity tags do not form a valid field spec: {e.message}") from None


def _item_segs(segs: list[str] | None) -> list[str] | None:
    """Segments for an array's items: ``tags`` -> ``tags[]``; arrays of arrays have no path."""
    if not segs or segs[-1].endswith("[]"):
        return None
    return [*segs[:-1], segs[-1] + "[]"]


# --- JSON Schema ------------------------------------------------------------------------------


def json_spec(tree: dict[str, Any]) -> FieldSpec:
    """The FieldSpec of a normalized JSON Schema tree."""
    b = _Builder()
    _walk_json(tree, [], "$", b, tagged=False, subject_ok=True)
    return b.build()


def _walk_json(
    node: dict[str, Any], segs: list[str] | None, at: str, b: _Builder, *, tagged: bool, subject_ok: bool
) -> None:
    types = types_of(node)
    if TAG_KEY in node:
        tag = parse_tag(node[TAG_KEY], at)
        b.add(
            segs,
            tag,
            at,
            tagged_above=tagged,
            subject_ok=subject_ok,
            subject_type_ok=bool(types) and types <= _SUBJECT_JSON,
        )
        tagged = tagged or tag.cls is not None
    strict_object = types == {"object"}
    required = node.get("required", ())
    for name, child in node.get("properties", {}).items():
        child_segs = None if segs is None else [*segs, name]
        _walk_json(
            child,
            child_segs,
            f"{at}.{name}",
            b,
            tagged=tagged,
            subject_ok=subject_ok and strict_object and name in required,
        )
    if "items" in node:
        _walk_json(node["items"], _item_segs(segs), f"{at}[]", b, tagged=tagged, subject_ok=False)
    if isinstance(node.get("additionalProperties"), dict):
        _walk_json(node["additionalProperties"], None, f"{at}.*", b, tagged=tagged, subject_ok=False)
    for child in node.get("patternProperties", {}).values():
        _walk_json(child, None, f"{at}.*", b, tagged=tagged, subject_ok=False)


# --- Avro ---------------------------------------------------------------------------------------


def avro_spec(tree: dict[str, Any]) -> FieldSpec:
    """The FieldSpec of a normalized Avro tree (see avro_schema.py for its shape)."""
    b = _Builder()
    _walk_avro(tree, [], "$", b, tagged=False, subject_ok=True)
    return b.build()


def _walk_avro(
    node: dict[str, Any], segs: list[str] | None, at: str, b: _Builder, *, tagged: bool, subject_ok: bool
) -> None:
    t = node["type"]
    if t == "record":
        for f in node["fields"]:
            child_at = f"{at}.{f['name']}"
            child_segs = None if segs is None else [*segs, f["name"]]
            child_tagged = tagged
            ftype = f["type"]
            field_subject_ok = subject_ok and not f["has_default"]
            if f.get("tag") is not None:
                tag = parse_tag(f["tag"], child_at)
                b.add(
                    child_segs,
                    tag,
                    child_at,
                    tagged_above=tagged,
                    subject_ok=field_subject_ok,
                    subject_type_ok=ftype["type"] in _SUBJECT_AVRO,
                )
                child_tagged = tagged or tag.cls is not None
            _walk_avro(ftype, child_segs, child_at, b, tagged=child_tagged, subject_ok=field_subject_ok)
    elif t == "array":
        _walk_avro(node["items"], _item_segs(segs), f"{at}[]", b, tagged=tagged, subject_ok=False)
    elif t == "map":
        _walk_avro(node["values"], None, f"{at}.*", b, tagged=tagged, subject_ok=False)
    elif t == "union":
        branches = [br for br in node["branches"] if br["type"] != "null"]
        inner = segs if len(branches) == 1 else None
        for br in branches:
            _walk_avro(br, inner, at, b, tagged=tagged, subject_ok=False)
