"""The Redactor's transforms on nested objects and arrays, with ``default: drop`` and ``keep``."""

from __future__ import annotations

import pytest

from eventward._internal.guard.pipeline import PipelineSpec, Redactor, generalize
from eventward.errors import ConfigError, RedactionError

BASE = "name: p\nprincipal: r\nsource: {topic: raw}\nsink: {topic: clean, type: T}\n"
KEY = b"k" * 32


def _redactor(fields: str, default: str = "drop", tokenized: frozenset[str] = frozenset()) -> Redactor:
    return Redactor(PipelineSpec.from_yaml(BASE + f"default: {default}\nfields:\n{fields}"), KEY, tokenized)


DATA = {
    "id": "o-1",
    "items": [{"sku": "SKU-1", "note": "call +44 20 7946 0018"}, {"sku": "SKU-2", "note": "fine"}],
    "tags": ["a", "b"],
    "customer": {"ref": "cust-77", "born": "1990-05-17", "score": 73},
}


def test_default_drop_keeps_only_named_paths_and_transforms_array_items() -> None:
    r = _redactor("  id: keep\n  items[].sku: keep\n  customer.ref: hmac\n  customer.born: {generalize: year}\n"
                  "  customer.score: {generalize: {bands: [0, 50, 100]}}\n  tags[]: {mask: 0}\n")
    out = r.apply(DATA)
    assert out == {
        "id": "o-1",
        "items": [{"sku": "SKU-1"}, {"sku": "SKU-2"}],
        "tags": ["*", "*"],
        "customer": {"ref": r.hmac("cust-77"), "born": "1990", "score": "50-100"},
    }
    assert out["customer"]["ref"].startswith("hmac:") and r.hmac("cust-77") != r.hmac("cust-78")
    assert DATA["customer"]["ref"] == "cust-77"  # the input is not modified


def test_default_keep_still_refuses_to_emit_pii_it_kept() -> None:
    r = _redactor("  customer.born: drop\n", default="keep")
    with pytest.raises(RedactionError) as ei:
        r.apply(DATA)
    assert "items[].note (phone)" in ei.value.message and "7946" not in ei.value.message
    clean = _redactor("  items[].note: drop\n", default="keep").apply(DATA)
    assert "note" not in clean["items"][0] and clean["customer"]["born"] == "1990-05-17"


def test_transform_failures_name_the_path_not_the_value() -> None:
    r = _redactor("  customer.ref: {generalize: month}\n")
    with pytest.raises(RedactionError) as ei:
        r.apply(DATA)
    assert "customer.ref" in ei.value.message and "cust-77" not in ei.value.message
    with pytest.raises(RedactionError):
        generalize("12", (0, 10))


def test_tokenize_without_a_deterministic_sink_tag_is_refused() -> None:
    with pytest.raises(ConfigError):
        _redactor("  customer.ref: tokenize\n")
    assert _redactor("  customer.ref: tokenize\n", tokenized=frozenset({"customer.ref"})).apply(DATA) == {
        "customer": {"ref": "cust-77"}  # left for the sink schema's deterministic encryption
    }
