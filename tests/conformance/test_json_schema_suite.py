"""JSON-Schema-Test-Suite (draft 2020-12) through eventward's normalizer and validator.

Every case of the required suite, plus ``optional/format`` for every format the registry
accepts, is run through ``compile_without_strict_defaults`` (the registry's keyword checks,
normalizer, generated validator and its fast path, without the strict defaults: closed objects,
default bounds, required ``type``/``items``, object root). Each case ends as one of:

- agree: eventward's verdict is the suite's;
- refused by design: the schema uses what the registry refuses at registration (counted per
  reason, each listed in docs/CONFORMANCE.md), or the case tests a documented deliberate
  difference (formats are asserted, not annotations);
- disagree: anything else. It must be 0.

Then the same accepted schemas run with the strict defaults the registry really applies, and
the cases whose verdict those defaults change (or which strict registration refuses) are
counted per reason, as the price of strictness, so the docs can state it with numbers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eventward._internal.schema.compiled import CompiledSchema, compile_schema, compile_without_strict_defaults
from eventward._internal.schema.formats import FORMATS
from eventward.errors import EventwardError, ValidationError

# Deliberate differences in validation (not registration), by suite file: these cases test
# behaviour eventward changes on purpose, and are counted as refused by design.
BY_DESIGN_FILES = {
    "format.json": "format is asserted (format-assertion vocabulary), never annotation-only",
}

# Registration refusals: the message pattern and the reason it is counted under.
REASONS: list[tuple[str, str]] = [
    (r"keyword '([^']+)' is not supported \(allowed only at the root\)", r"keyword \1 below the root"),
    (r"keyword '([^']+)' is not supported", r"keyword \1"),
    (r"schema document must be", "boolean schema"),
    (r"format '([^']+)' is not supported", r"format \1"),
    (r"\$schema '[^']*' is not supported", "custom metaschema ($schema)"),
    (r"a schema must be a JSON object", "boolean schema"),
    (r"remote \$ref", "remote $ref"),
    (r"\$ref .* must point into", "$ref outside #/$defs"),
    (r"\$ref .* does not resolve", "$ref outside #/$defs"),
    (r"keywords next to \$ref", "keywords beside $ref"),
    (r"\$ref cycle", "$ref cycle"),
    (r"needs backtracking|not valid RE2", "pattern outside RE2"),
    (r"repeats a repeated group", "pattern with a nested quantifier"),
    (r"must be a non-negative integer", "count keyword not a JSON integer"),
    (r"items must be one schema", "tuple items"),
    (r"on a schema that does not admit", "keyword for a type the schema excludes"),
    (r"is greater than", "contradictory bounds"),
    (r"required but not declared", "required property not declared (closed object)"),
    (r"every schema needs a type", "schema without type"),
    (r"root schema must have type \"object\"", "root is not an object schema"),
    (r"an array schema must declare items", "array without items"),
    (r"enum values must be unique|use either const or enum", "enum/const form"),
]


def reason_of(e: EventwardError) -> str:
    msg = str(e)
    for pattern, reason in REASONS:
        m = re.search(pattern, msg)
        if m:
            return m.expand(reason)
    return "other: " + msg[:80]


def suite_files(root: Path) -> list[Path]:
    files = sorted(root.glob("*.json"))
    files += [root / "optional" / "format" / f"{name}.json" for name in sorted(FORMATS)]
    return files


def verdict(compiled: CompiledSchema, data: Any) -> bool:
    try:
        compiled.validate(data)
    except ValidationError:
        return False
    return True


def test_json_schema_2020_12_suite(json_schema_suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agree = disagree = 0
    refused: Counter[str] = Counter()
    strict: Counter[str] = Counter()
    strict_same = 0
    problems: list[str] = []
    for path in suite_files(json_schema_suite):
        for group in json.loads(path.read_text()):
            cases = group["tests"]
            try:
                compiled = compile_without_strict_defaults(group["schema"])
            except EventwardError as e:
                refused[reason_of(e)] += len(cases)
                continue
            by_design = BY_DESIGN_FILES.get(path.name)
            try:
                strict_compiled: CompiledSchema | None = compile_schema(group["schema"])
            except EventwardError as e:
                strict_compiled = None
                strict[f"refused: {reason_of(e)}"] += len(cases)
            for case in cases:
                got = verdict(compiled, case["data"])
                if got == case["valid"]:
                    agree += 1
                elif by_design:
                    refused[by_design] += 1
                else:
                    disagree += 1
                    problems.append(f"{path.name}: {group['description']}: {case['description']}")
                if strict_compiled is not None:
                    if verdict(strict_compiled, case["data"]) == got:
                        strict_same += 1
                    else:
                        strict["verdict changed by the strict defaults"] += 1
    total = agree + sum(refused.values()) + disagree
    lines = [
        f"JSON Schema 2020-12 suite: {total} cases: agree {agree} / refused by design "
        f"{sum(refused.values())} / disagree {disagree}",
        *(f"  refused by design, {reason}: {n}" for reason, n in sorted(refused.items())),
        f"  with the registry's strict defaults: same verdict {strict_same}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(strict.items())),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert disagree == 0, "\n".join([*lines, *problems[:40]])
    assert agree > 600, lines[0]  # the suite really ran
    assert not [r for r in refused if r.startswith("other")], lines
    documented = (Path(__file__).resolve().parents[2] / "docs" / "CONFORMANCE.md").read_text()
    missing = [r for r in refused if f"`{r}`" not in documented]
    assert not missing, f"refused by design but not listed in docs/CONFORMANCE.md: {missing}"
