"""``eventward demo``: the whole security story on the embedded default, rendered for a person."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import orjson
import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from eventward._internal.cli import common
from eventward.errors import ConfigError

if TYPE_CHECKING:
    from eventward._internal import demo as scenario


def _section(title: str, text: str = "") -> None:
    common.console.rule(f"[bold cyan]{title}")
    if text:
        common.console.print(text, highlight=False)


def _customer_table(title: str, views: dict[str, scenario.View]) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("order")
    for who in views:
        table.add_column(f"{who} sees: name / email", overflow="fold")
    rows: dict[str, list[str]] = {}
    for view in views.values():
        for ev in view.events:
            c = ev.data["customer"]
            # escape: "[erased]" and "[redacted]" would otherwise be read as Rich markup and vanish
            rows.setdefault(ev.data["order_id"], []).append(escape(f"{c['name']} / {c['email']}"))
    for order_id, cells in rows.items():
        table.add_row(order_id, *cells)
    return table


def _render(name: str, data: Any) -> None:
    from eventward._internal import demo as scenario

    r: scenario.DemoResult = data if isinstance(data, scenario.DemoResult) else scenario.DemoResult()
    if name == "policy":
        _section("1. Deny-by-default policy", f"Applied the demo policy as version {data} (Cedar, compiled from YAML).")
    elif name == "trust":
        common.console.print(f"Registered Ed25519 signing keys for: {', '.join(data)}")
    elif name == "schema":
        _section(
            "2. Schema registry",
            f"alice proposed OrderPlaced, bob approved it: version {data} is active. "
            "Its x-eventward tags make customer.name, .email and .address PII, keyed by customer.id.",
        )
    elif name == "poison":
        status = "[green]held: needs security approval[/]" if r.poison_held else "[red]ACTIVATED[/]"
        if r.poison_signoff_refused:
            status += " (bob's own sign-off refused: a security-admin must give it)"
        common.console.print(
            f"Poisoning attempt (email tag removed): findings {r.poison_findings} -> {status}; rejected."
        )
    elif name == "produce":
        _section("3. Produce", f"orders-svc sent {len(r.produced)} OrderPlaced events, sealed in one batch.")
        stored = orjson.loads(r.stored_sample)
        common.console.print(Panel(orjson.dumps(stored["data"]["customer"], option=orjson.OPT_INDENT_2).decode(),
                                   title="what the log stores (customer of the first event)"))
    elif name == "views":
        assert r.shipping and r.analytics
        common.console.print(_customer_table("Two consumers, two clearances",
                                             {"shipping-svc (pii)": r.shipping, "analytics-svc": r.analytics}))
    elif name == "attacks":
        _section("4. Attacks on the log")
        table = Table()
        table.add_column("attack")
        table.add_column("refused because")
        for attack, reason in r.attacks.items():
            table.add_row(attack, f"[red]{reason}[/]")
        common.console.print(table)
        assert r.after_attacks
        common.console.print(
            f"shipping-svc still received the {r.after_attacks.stats.delivered} genuine new event(s); "
            f"{r.after_attacks.stats.dead_lettered} refused event(s) went to the dead-letter stream, still encrypted."
        )
    elif name == "forget":
        _section("5. Right to erasure (crypto-shredding)", f"forget({scenario.FORGOTTEN}): {r.receipt}")
        common.console.print(f"Signed erasure certificate recorded in the audit log at index {r.certificate_index}.")
        assert r.after_forget
        common.console.print(_customer_table("shipping-svc re-reads the log", {"shipping-svc": r.after_forget}))
    elif name == "gateway":
        g = r.gateway
        assert g is not None and g.published and g.denied
        _section("6. Any language: the HTTP gateway (mTLS)", f"eventward serve listening on {g.url}")
        for cmd in g.commands:
            common.console.print(f"  $ {cmd}", highlight=False, markup=False)
        common.console.print(
            f"orders-svc published {len(g.published_ids)} events (HTTP {g.published.status}); "
            f"shipping-svc consumed {len(g.consumed)} decrypted and acked up to offset {g.committed}."
        )
        common.console.print(f"analytics-svc tried to publish: HTTP [red]{g.denied.status}[/]. Why?")
        common.console.print(Panel(g.explanation.strip(), title="policy explain"), highlight=False)
    elif name == "client_mode":
        c = r.client_mode
        assert c is not None
        _section("7. Services in client mode: each holds only its own keys",
                 f"enrolled directories under {c.directory}")
        common.console.print(f"shipping-svc's directory holds: {', '.join(c.files)} (no master key, keyring or store)")
        for svc, name_read in c.read.items():
            common.console.print(f"{svc} read the first order's customer as {escape(name_read)!s}", highlight=False)
        common.console.print(f"analytics-svc asked the control plane for the pii key directly: [red]{c.refused}[/] "
                             "(audited, naming the class, never the key)")
    elif name == "audit":
        _section("8. Tamper-evident audit log")
        verdict = "[green]verifies[/]" if r.audit_ok else "[red]FAILED[/]"
        common.console.print(f"{r.audit_size} metadata-only records; full Merkle verification {verdict}.")
        common.console.print(Panel(r.checkpoint.strip(), title="signed checkpoint (publish it anywhere)"))


def demo(
    fresh: bool = typer.Option(False, "--fresh", help="Wipe the home first (only for a demo home!)."),
) -> None:
    """Encrypt, seal, authorize, attack, forget and audit OrderPlaced events, end to end."""
    from eventward._internal import demo as scenario

    home = common.home()
    if home.root.exists() and any(home.root.iterdir()):
        if not fresh:
            raise ConfigError(f"the demo needs an empty home; {home.root} is not empty (use --home DIR or --fresh)")
        shutil.rmtree(home.root)
    common.console.print(f"[bold]eventward demo[/] in {home.root} (embedded SQLite transport)")
    result = scenario.run(home, _render)
    ok = result.poison_held and len(result.attacks) == 3 and result.audit_ok
    common.console.rule("[bold green]demo complete" if ok else "[bold red]demo found a problem")
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
