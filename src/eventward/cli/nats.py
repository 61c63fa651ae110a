"""``eventward nats up|down|status|cert``: a local NATS JetStream deployment for this home.

``up`` starts 1, 3 or 5 nats-servers on 127.0.0.1 with mTLS from the deployment's own CA
(client certificate = principal, ``verify_and_map``) and the authorization compiled from the
active policy, plus one operator user (``eventward-operator``) that may create streams: the
compiled users get exactly the subjects their grants need and none may create streams.
``down`` stops exactly the processes ``up`` started (PID files, verified against /proc).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventward import pki
from eventward.cli import common
from eventward.errors import ConfigError, NotFoundError
from eventward.home import Home
from eventward.log import natsserver
from eventward.log.natsserver import Node, TlsFiles

OPERATOR = "eventward-operator"
SERVER_CERT = "nats-server"

nats_app = typer.Typer(help="A local NATS JetStream deployment (mTLS, policy-compiled permissions).",
                       no_args_is_help=True)


def run_root(home: Home) -> Path:
    return home.run_dir / "nats"


def server_tls(home: Home) -> TlsFiles:
    """The CA and server certificate, issued on first use."""
    cert, key = pki.ensure_server_cert(home.certs, SERVER_CERT)
    return TlsFiles(pki.ca_paths(home.certs)[0], cert, key)


def operator_user() -> str:
    """The operator's authorization entry: stream administration only, private inbox."""
    from eventward.log.nats import admin_permissions, inbox_prefix_for

    user = {
        "user": OPERATOR,
        "permissions": {
            "publish": {"allow": admin_permissions()},
            "subscribe": {"allow": [inbox_prefix_for(OPERATOR) + ".>"]},
        },
    }
    return json.dumps(user)


def with_operator(auth_text: str) -> str:
    """Add the operator to a compiled ``authorization { users = [...] }`` block."""
    if re.search(rf'"user":\s*"{re.escape(OPERATOR)}"', auth_text):
        raise ConfigError(f"the policy names a principal {OPERATOR!r}, reserved for the NATS operator")
    lines = auth_text.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\s*users\s*=\s*\[\s*", line):
            lines.insert(i + 1, "    " + operator_user())
            return "\n".join(lines) + "\n"
    raise ConfigError("the compiled NATS authorization has no 'users = [' list to add the operator to")


def compiled_authorization(home: Home) -> tuple[str, list[str]]:
    """The active policy as nats-server authorization (with the operator), and its literal topics."""
    from eventward.policy.compile_nats import compile_nats, with_dlq
    from eventward.policy.spec import LITERAL
    from eventward.policy.store import PolicyStore, build

    store = PolicyStore.open(home)
    try:
        version = store.get()
    except NotFoundError:
        raise ConfigError(
            "no policy has been applied: run 'eventward policy init', or pass --auth-config FILE, "
            "or --open (mTLS only: every certificate from the deployment CA gets full access)"
        ) from None
    finally:
        store.close()
    spec, compiled = build(version.yaml, version.cedar)
    topics = sorted(
        {
            t
            for g in spec.grants()
            if g.kind == "Topic" and g.match == LITERAL and not g.is_wildcard
            for n in g.names
            for t in with_dlq(n)
        }
    )
    return with_operator(compile_nats(spec, compiled)), topics


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=common.console, transient=False,
    )


def _create_streams(
    home: Home, nodes: list[Node], topics: list[str], replicas: int, progress: Progress
) -> None:
    from eventward.log.nats import NatsTransport

    if not topics:
        return
    cert, key = pki.ensure_client_cert(home.certs, OPERATOR)
    task = progress.add_task("creating streams", total=len(topics))
    urls = [n.url(tls=True) for n in nodes]
    with NatsTransport(urls, replicas=replicas, ca=pki.ca_paths(home.certs)[0], cert=cert, key=key) as t:
        for topic in topics:
            t.create_stream(topic)
            progress.advance(task)


@nats_app.command("up")
def up_cmd(
    cluster: int = typer.Option(1, "--cluster", help="Number of servers: 1, 3 or 5."),
    port: int = typer.Option(4222, "--port", help="Client port of the first server (others follow)."),
    auth_config: Path = typer.Option(
        None, "--auth-config", help="nats-server authorization include to use instead of the compiled policy."
    ),
    open_access: bool = typer.Option(
        False, "--open", help="No authorization: any certificate from the deployment CA has full access."
    ),
) -> None:
    """Start nats-server(s) on 127.0.0.1 with JetStream, mTLS and policy-compiled permissions."""
    home = common.home().ensure()
    tls = server_tls(home)
    topics: list[str] = []
    if auth_config is not None:
        try:
            auth: str | None = auth_config.read_text()
        except OSError:
            raise ConfigError(f"cannot read --auth-config {auth_config}") from None
    elif open_access:
        auth = None
    else:
        auth, topics = compiled_authorization(home)
    replicas = 3 if cluster >= 3 else 1
    with _progress() as progress:
        task = progress.add_task("starting nats-server", total=cluster)
        nodes = natsserver.start_all(
            run_root(home), size=cluster, port=port, tls=tls, auth_config=auth,
            on_started=lambda _node: progress.advance(task),
        )
        try:
            _create_streams(home, nodes, topics, replicas, progress)
        except BaseException:
            natsserver.stop_all(run_root(home))
            raise
    _print_nodes(nodes)
    clients = home.certs / "clients"
    common.console.print(
        "\nClients: `eventward nats cert PRINCIPAL` issues a client certificate; in eventward.yaml set\n"
        f"  transport: nats\n  nats:\n    servers: {json.dumps([n.url(tls=True) for n in nodes])}\n"
        f"    replicas: {replicas}\n    ca: {tls.ca}\n"
        f"    cert: {clients}/<principal>.crt\n    key: {clients}/<principal>.key",
        highlight=False, markup=False,
    )


def _print_nodes(nodes: list[Node]) -> None:
    table = Table("server", "client url", "route port", "pid", "store")
    for n in nodes:
        pid = natsserver.running(n)
        state = str(pid) if pid else "[red]stopped[/]"
        table.add_row(n.name, n.url(tls=True), str(n.cluster_port or "-"), state, str(n.store))
    common.console.print(table)


@nats_app.command("down")
def down_cmd() -> None:
    """Stop the nats-servers 'up' started (and nothing else)."""
    stopped = natsserver.stop_all(run_root(common.home()))
    if not stopped:
        common.console.print("no nats-server of this deployment is running")
    for name, pid in stopped:
        common.console.print(f"stopped {name} (pid {pid})")


@nats_app.command("status")
def status_cmd() -> None:
    """Servers of this deployment and whether they run."""
    nodes = natsserver.discover(run_root(common.home()))
    if not nodes:
        common.console.print("no NATS deployment in this home; run 'eventward nats up'")
        return
    _print_nodes(nodes)


@nats_app.command("cert")
def cert_cmd(principal: str = typer.Argument(..., help="Principal the certificate authenticates.")) -> None:
    """Issue (once) a client certificate whose CN is PRINCIPAL, from the deployment CA."""
    cert, key = pki.ensure_client_cert(common.home().ensure().certs, principal)
    common.console.print(f"certificate {cert}\nkey         {key} (0600)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``eventward nats ...`` to the root app."""
    app.add_typer(nats_app, name="nats")
