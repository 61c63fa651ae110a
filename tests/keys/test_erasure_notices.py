"""Erasure notices with acknowledgements (issue 18, item 4).

Every consumer group registered in the home hears of each forget, drops its cached keys, runs
the application's ``on_forget(pseudonym)`` hooks and acknowledges. ``erasure status`` lists
each group (acknowledged when, pending since when, failed with the hook's error code); the
completion record joins the certificate in the audit log once every group acknowledged, and a
group that never acknowledges is reported, never forgotten.
"""

from __future__ import annotations

import orjson
import pytest
import typer
from typer.testing import CliRunner

from eventward._internal import demo
from eventward._internal.cli import common
from eventward._internal.cli import erasure as erasure_cli
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.notices import ACK_ACTION, ACKED, COMPLETE_ACTION, FAILED, PENDING, error_code
from eventward.errors import AccessDenied, InputError, NotFoundError

SUBJECT = demo.FORGOTTEN
GROUPS = ("billing", "search", "crm", "mailer", "analytics")


class IndexDown(Exception):
    code = "index_unavailable"


@pytest.fixture
def shop(tmp_path) -> Home:
    home = Home(tmp_path / "home")
    dep = Deployment.init(home, admin=demo.ADMIN)
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        demo.produce(dep, demo.DemoResult(), lambda *a: None)
    finally:
        dep.close()
    return home


@pytest.fixture
def cli(shop, monkeypatch):
    monkeypatch.setattr(common.STATE, "home", str(shop.root))
    monkeypatch.delenv("EVENTWARD_PRINCIPAL", raising=False)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        return None

    erasure_cli.register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def _records(dep: Deployment, action: str) -> list:
    dep.audit.flush()
    return [r for r in dep.audit.tail(500) if r.action == action]


def test_five_groups_one_failing_hook_status_and_completion(shop, cli):
    with Deployment.open(shop) as dep:
        consumers = {g: dep.consumer(demo.SHIPPING, demo.TOPIC, group=g, from_beginning=True) for g in GROUPS}
        read_models: dict[str, dict[str, list[str]]] = {g: {} for g in GROUPS}
        for g, c in consumers.items():
            for ev in c.poll(100):  # each application builds a read model keyed by the pseudonym
                read_models[g].setdefault(ev.attributes["ewsubject"], []).append(ev.id)

            def purge(p: str, g: str = g) -> None:
                if g == "search" and broken:
                    raise IndexDown("search index for SENTINEL-ish data is down")  # message never recorded
                read_models[g].pop(p, None)

            c.on_forget(purge)
        broken = True
        pseudonym = dep.keys.known_subject(SUBJECT)
        assert all(pseudonym in m for m in read_models.values())
        done = dep.forget(SUBJECT, principal=demo.ADMIN, reason="gdpr-art17")
        assert done.receipt.subject_hash == pseudonym
        for c in consumers.values():
            assert c.check_notices() == 1
        st = dep.notices.status(pseudonym)
        states = {g.group: g for g in st.groups}
        assert {g: s.state for g, s in states.items()} == {
            "billing": ACKED, "search": FAILED, "crm": ACKED, "mailer": ACKED, "analytics": ACKED}
        assert states["search"].error == "index_unavailable" and states["search"].at is not None
        assert st.completed is None and not _records(dep, COMPLETE_ACTION)
        assert all(pseudonym not in read_models[g] for g in GROUPS if g != "search")

        r = cli("erasure", "status", pseudonym, "--hash", "--json", "--as", demo.ADMIN)
        assert r.exit_code == 1  # incomplete
        doc = orjson.loads(r.stdout)
        by = {g["group"]: g for g in doc["groups"]}
        assert by["search"]["state"] == "failed" and by["search"]["error_code"] == "index_unavailable"
        assert by["billing"]["acknowledged"] is not None and by["billing"]["waiting_s"] is None
        assert not doc["complete"] and doc["certificate_index"] == done.certificate.index
        assert "SENTINEL" not in r.stdout and SUBJECT not in r.stdout

        # the index comes back: the failed group retries (after retry_s) and acknowledges
        broken = False
        dep.notices.retry_s = 0.0
        assert consumers["search"].check_notices() == 1
        assert dep.notices.status(pseudonym).completed is not None
        complete = _records(dep, COMPLETE_ACTION)
        assert len(complete) == 1 and complete[0].meta["certificate_index"] == done.certificate.index
        assert complete[0].meta["groups"] == 5 and complete[0].meta["subject_hash"] == pseudonym
        assert complete[0].index > done.certificate.index  # it joins the certificate, after it
        acks = _records(dep, ACK_ACTION)
        assert len(acks) == 6 and {a.reason for a in acks if a.outcome != "ok"} == {"index_unavailable"}
        assert not any(b"SENTINEL" in orjson.dumps(a.meta) for a in acks)
        for c in consumers.values():
            assert c.check_notices() == 0  # answered once
        assert len(_records(dep, COMPLETE_ACTION)) == 1
        for c in consumers.values():
            c.close()
    r = cli("erasure", "status", pseudonym, "--hash", "--as", demo.ADMIN)
    assert r.exit_code == 0 and "complete" in r.stdout


def test_attack_group_never_acks_is_reported(shop, cli):
    """A group that never runs again is pending for good: no completion record, reported by
    status (pending since the notice) and by overdue, whatever time passes."""
    with Deployment.open(shop) as dep:
        live = dep.consumer(demo.SHIPPING, demo.TOPIC, group="live")
        dep.consumer(demo.SHIPPING, demo.TOPIC, group="gone").close()  # registered, then never runs
        pseudonym = dep.keys.known_subject(SUBJECT)
        dep.forget(SUBJECT, principal=demo.ADMIN)
        live.run(lambda ev: None, idle_timeout=0.0)  # the run loop answers notices by itself
        st = dep.notices.status(pseudonym)
        assert {g.group: g.state for g in st.groups} == {"live": ACKED, "gone": PENDING}
        assert st.completed is None and not _records(dep, COMPLETE_ACTION)
        later = dep.notices
        later._clock = lambda: st.issued + 30 * 86_400.0  # a month on
        assert later.overdue(86_400.0) == [(pseudonym, "gone", PENDING, st.issued)]
        assert later.status(pseudonym).pending()[0].group == "gone"
        live.close()
    r = cli("erasure", "status", pseudonym, "--hash", "--json", "--as", demo.ADMIN)
    assert r.exit_code == 1
    gone = next(g for g in orjson.loads(r.stdout)["groups"] if g["group"] == "gone")
    assert gone["state"] == "pending" and gone["since"] is not None and gone["waiting_s"] >= 0


def test_attack_status_needs_read_audit_and_never_echoes_the_subject(shop, cli):
    r = cli("erasure", "status", SUBJECT, "--as", demo.SHIPPING)
    assert isinstance(r.exception, AccessDenied) and SUBJECT not in r.output + str(r.exception)
    with Deployment.open(shop) as dep:
        dep.forget(SUBJECT, principal=demo.ADMIN)
    r = cli("erasure", "status", SUBJECT, "--as", demo.ADMIN)  # forgotten: only the reference finds it
    assert isinstance(r.exception, NotFoundError) and SUBJECT not in r.output and "--hash" in str(r.exception)
    r = cli("erasure", "status", "not-a-reference", "--hash", "--as", demo.ADMIN)
    assert isinstance(r.exception, InputError) and "not-a-reference" not in str(r.exception)


def test_no_group_means_complete_at_once_and_hook_codes_are_codes(shop):
    with Deployment.open(shop) as dep:
        p = dep.keys.known_subject(SUBJECT)
        dep.forget(SUBJECT, principal=demo.ADMIN)
        assert dep.notices.status(p).completed is not None
        assert len(_records(dep, COMPLETE_ACTION)) == 1
    assert error_code(IndexDown("x")) == "index_unavailable"
    assert error_code(ValueError("alice@example.org")) == "ValueError"

    class Bad(Exception):
        code = "alice@example.org is gone"

    assert error_code(Bad()) == "Bad"
