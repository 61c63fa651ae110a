"""``eventward policy diff V1 V2``: the broker delta between two stored versions, computed from
the compilers' own outputs (kafka-acls.sh --add/--remove lines, NATS permission changes)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventward._internal.cli import app
from eventward._internal.policy import diff

EXAMPLE = Path(__file__).resolve().parents[2] / "src" / "eventward" / "_internal" / "examples" / "policy.yaml"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Versions: 1 bootstrap, 2 the example policy, 3 the example with analytics-svc's read revoked
    and a new billing-svc reader."""
    runner = CliRunner()
    h = tmp_path / "home"
    v3 = EXAMPLE.read_text().replace(
        "  analytics-svc: {type: service, roles: [order-reader]}\n",
        "  analytics-svc: {type: service, roles: []}\n  billing-svc: {type: service, roles: [order-reader]}\n",
    )
    assert v3 != EXAMPLE.read_text()
    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / "policy.yaml").write_text(v3)
    for args in (
        ["init", "--admin", "admin"],
        ["policy", "apply", str(EXAMPLE), "--as", "admin"],
        ["policy", "apply", str(tmp_path / "v3" / "policy.yaml"), "--as", "admin"],
    ):
        r = runner.invoke(app, ["--home", str(h), *args])
        assert r.exit_code == 0, (r.output, r.exception)
    return h


def _diff(home: Path, *args: str) -> str:
    r = CliRunner().invoke(app, ["--home", str(home), "policy", "diff", *args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def test_revoked_reader_gets_remove_lines_and_new_reader_add_lines(home: Path) -> None:
    doc = json.loads(_diff(home, "2", "3", "--json"))
    assert (doc["from"], doc["to"]) == (2, 3)
    k = doc["kafka"]
    assert k["add"] and all("User:billing-svc" in x and " --add " in x for x in k["add"])
    assert k["remove"] and all("User:analytics-svc" in x for x in k["remove"])
    for line in k["remove"]:
        words = shlex.split(line)
        assert "--remove" in words and "--force" in words and "--add" not in words
    # the topic read analytics-svc had is among the removals, literally
    assert any("--topic orders " in x and "--operation Read" in x for x in k["remove"])
    assert sorted(k["script"]) == sorted(k["add"] + k["remove"])
    nats = {u["user"]: u for u in doc["nats"]}
    assert nats["billing-svc"]["change"] == "added"
    assert "ew.orders" in nats["billing-svc"]["added"]["subscribe.allow"]
    assert nats["analytics-svc"]["change"] == "changed"
    assert "ew.orders" in nats["analytics-svc"]["removed"]["subscribe.allow"]
    assert "shipping-svc" not in nats and "orders-svc" not in nats  # unchanged users are not listed


def test_same_version_is_an_empty_delta_and_v2_defaults_to_the_active_one(home: Path) -> None:
    assert json.loads(_diff(home, "3", "3", "--json"))["kafka"] == {"add": [], "remove": [], "script": []}
    assert json.loads(_diff(home, "2", "--json")) == json.loads(_diff(home, "2", "3", "--json"))


def test_the_text_form_is_a_shell_script_of_kafka_lines_and_nats_comments(home: Path) -> None:
    out = _diff(home, "2", "3")
    lines = [x for x in out.splitlines() if x.strip()]
    assert all(x.startswith(("#", "kafka-acls.sh ")) for x in lines)
    assert any(" --remove --force " in x for x in lines) and any(" --add " in x for x in lines)
    assert "# - user analytics-svc subscribe.allow ew.orders" in lines
    only_nats = _diff(home, "2", "3", "--target", "nats")
    assert "kafka-acls.sh" not in only_nats and "user billing-svc" in only_nats


def test_the_order_never_grants_more_than_either_version() -> None:
    old = (
        "kafka-acls.sh --bootstrap-server B --add --allow-principal User:a --operation Read --topic t\n"
        "kafka-acls.sh --bootstrap-server B --add --deny-principal User:a --operation Write --topic t\n"
    )
    new = (
        "kafka-acls.sh --bootstrap-server B --add --allow-principal User:a --operation Write --topic t\n"
        "kafka-acls.sh --bootstrap-server B --add --deny-principal User:a --operation Read --topic t\n"
    )
    script = diff.kafka_delta(old, new).script()
    kinds = [("add" if " --add " in x else "remove", "deny" if "--deny-principal" in x else "allow") for x in script]
    assert kinds == [("add", "deny"), ("remove", "allow"), ("add", "allow"), ("remove", "deny")]


def test_notes_on_what_eventward_enforces_are_diffed_too(home: Path) -> None:
    doc = json.loads(_diff(home, "2", "3", "--json"))
    assert set(doc["notes"]) == {"kafka", "nats"}
    old = "#!/bin/sh\n# header\n# --- enforced by eventward ---\n# a: type limit\n# b: kept\n"
    new = "#!/bin/sh\n# header\n# --- enforced by eventward ---\n# b: kept\n# c: new limit\n"
    assert diff.notes_delta(old, new) == {"added": ["c: new limit"], "removed": ["a: type limit"]}
    only_kafka = json.loads(_diff(home, "2", "3", "--target", "kafka", "--json"))
    assert "nats" not in only_kafka and set(only_kafka["notes"]) == {"kafka"}


def test_unknown_version_and_target_are_typed_errors(home: Path) -> None:
    r = CliRunner().invoke(app, ["--home", str(home), "policy", "diff", "2", "99"])
    assert r.exit_code != 0 and type(r.exception).__name__ == "NotFoundError"
    r = CliRunner().invoke(app, ["--home", str(home), "policy", "diff", "2", "3", "--target", "rabbit"])
    assert type(r.exception).__name__ == "InputError"
