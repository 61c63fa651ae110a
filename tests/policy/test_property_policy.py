"""Property tests for the policy parsers: policy.yaml (roles, grants, principals, ABAC resource
attributes) and hand-written Cedar files. Whatever text arrives, ``build`` (parse + compile +
Cedar schema validation) returns a policy or raises PolicyError naming where, never another
exception: ``policy apply`` reads files a reviewer has not checked yet.

Inputs are random text, random YAML documents over the policy vocabulary, structure-aware
mutations of the reference policy (values retyped, keys dropped or added), YAML features a
careless loader trips on (aliases, recursion, tags, huge numbers), and mutated Cedar files.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventward._internal.policy import spec as policy_spec
from eventward._internal.policy.store import build
from eventward.errors import EventwardError, PolicyError

from .support import ABAC, POLICY

EXAMPLES = int(os.environ.get("EW_PROPERTY_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

VALID = yaml.safe_load(POLICY)
WORDS = sorted(
    {"principals", "roles", "resources", "type", "attributes", "service", "user", "match", "prefixed", "literal",
     "event_types", "*", "orders", "Topic", "Class", "zone", "tier", "pii"}
    | set(policy_spec.YAML_ACTIONS) | set(policy_spec._GRANT_KEYS) | set(policy_spec.KINDS)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
)
any_text = st.text(st.characters(exclude_categories=()), max_size=300)  # lone surrogates too
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10,
)


def refused_typed(text: str, cedar: dict[str, str] | None = None) -> None:
    """build() succeeds or raises PolicyError; nothing else (a typed error of another kind fails too)."""
    try:
        build(text, cedar)
    except PolicyError as e:
        assert isinstance(e.path, str)
    except EventwardError as e:
        raise AssertionError(f"policy build raised {type(e).__name__}, expected PolicyError") from e


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """The reference policy with 1..3 places (at any depth) deleted, replaced or extended."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        for _depth in range(draw(st.integers(0, 4))):
            if isinstance(node, dict) and node:
                node = node[draw(st.sampled_from(sorted(node, key=str)))]
            elif isinstance(node, list) and node:
                node = node[draw(st.integers(0, len(node) - 1))]
            else:
                break
        op = draw(st.sampled_from(("replace", "delete", "add")))
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            if op == "delete":
                del node[key]
            elif op == "replace":
                node[key] = draw(values)
            else:
                node[draw(st.sampled_from(WORDS) | st.integers(0, 3))] = draw(values)
        elif isinstance(node, list):
            if op == "delete" and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            else:
                node.append(draw(values))
    return doc


@SETTINGS
@given(any_text)
def test_property_policy_random_text(text: str) -> None:
    refused_typed(text)


@SETTINGS
@given(values)
def test_property_policy_random_documents(doc: Any) -> None:
    refused_typed(_dump(doc))
    refused_typed(_dump({"principals": doc, "roles": doc}))


@SETTINGS
@given(mutated())
def test_property_policy_mutations_of_a_valid_policy(doc: Any) -> None:
    refused_typed(_dump(doc))


@SETTINGS
@given(st.integers(0, len(POLICY)), st.text(max_size=20))
def test_property_policy_text_splices(at: int, chunk: str) -> None:
    refused_typed(POLICY[:at] + chunk + POLICY[at:])
    refused_typed(POLICY[:at] + chunk + POLICY[at + len(chunk):])


@SETTINGS
@given(st.integers(0, len(ABAC)), st.text(max_size=20), st.integers(0, 30))
def test_property_policy_cedar_file_mutations(at: int, chunk: str, cut: int) -> None:
    refused_typed(POLICY, {"abac.cedar": ABAC[:at] + chunk + ABAC[at + cut:]})


@SETTINGS
@given(any_text, st.text(max_size=12))
def test_property_policy_cedar_random_files(text: str, name: str) -> None:
    refused_typed(POLICY, {name or "x.cedar": text})


def test_property_policy_yaml_features_are_typed() -> None:
    """Loader features a hand-rolled check forgets: every one is a PolicyError or a policy."""
    docs = [
        "principals: &a {x: *a}\nroles: {}",  # recursive alias
        "roles: &r {r: [{allow: publish, topic: *r}]}",
        "roles: {r: &l [*l]}",
        "principals: {a: {type: [service], roles: []}}",  # unhashable where a name is looked up
        "principals: {a: {type: {service: 1}, roles: []}}",
        "principals: {a: {type: service, roles: [{r: 1}]}}\nroles: {}",
        "roles: {r: [{allow: [[publish]], topic: orders}]}",
        "roles: {r: [{allow: publish, topic: orders, match: [prefixed]}]}",
        "roles: {r: [{allow: publish, topic: orders, match: {a: 1}}]}",
        "roles: {r: [{allow: publish, topic: orders, event_types: [[OrderPlaced]]}]}",
        "resources: {[Topic]: {}}",
        "resources: {Topic: {orders: {tier: 99999999999999999999999}}}",
        "resources: {Topic: {orders: {tier: .nan}}}",
        "resources: {Topic: {orders: [1, 2]}}",
        "resources: {Topic: {1: {}}}",
        "roles: {r: [{allow: publish, topic: !!binary aGVsbG8=}]}",
        "roles: {r: [{allow: publish, topic: 2024-01-01}]}",
        "!!python/object:os.system {}",
        "roles: {<<: {r: []}}",
        "[" * 5000,
        "{a: " * 3000,
        "principals: {\ud800: {type: service}}",
        "\x00",
        "? [a, b]\n: c",
    ]
    for d in docs:
        refused_typed(d)
    refused_typed(POLICY, {"a.cedar": "\ud800"})
    refused_typed(POLICY, {"a.cedar": "permit(principal, action, resource) when { " + "(" * 5000 + " };"})


def test_attack_policy_files_not_utf8_are_typed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``policy apply`` on a Latin-1 policy or Cedar file: a typed error (one line from the CLI),
    not a UnicodeDecodeError traceback."""
    from typer.testing import CliRunner

    from eventward._internal.cli import app

    runner = CliRunner()
    home = str(tmp_path / "home")
    assert runner.invoke(app, ["--home", home, "policy", "init", "--admin", "alice"]).exit_code == 0
    work = tmp_path / "work"
    work.mkdir()
    (work / "policy.yaml").write_bytes("principals: {caf\xe9: {type: user}}\n".encode("latin-1"))
    result = runner.invoke(app, ["--home", home, "policy", "apply", str(work / "policy.yaml"), "--as", "alice"])
    assert isinstance(result.exception, PolicyError) and "not UTF-8" in result.exception.message
    (work / "policy.yaml").write_text(POLICY)
    (work / "bad.cedar").write_bytes(b"// caf\xe9\n")
    result = runner.invoke(app, ["--home", home, "policy", "apply", str(work / "policy.yaml"), "--as", "alice"])
    assert isinstance(result.exception, PolicyError) and "bad.cedar is not UTF-8" in result.exception.message
