"""``eventward nats up|down|status|cert|streams|consumers``: a local NATS JetStream deployment for this home.

``up`` starts 1, 3 or 5 nats-servers on 127.0.0.1 with mTLS from the deployment's own CA
(client certificate = principal, ``verify_and_map``) and the authorization compiled from the
active policy, plus one operator user (``eventward-operator``) that may create streams: the
compiled users get exactly the subjects their grants need and none may create streams.
``down`` stops exactly the processes ``up`` started (PID files, verified against /proc).
``streams`` and ``consumers`` read the JetStream management API of the servers the home's
configuration names, as the operator (listing every stream is an operator's right).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventward._internal.cli import common
from eventward.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from eventward._internal.home import Home
    from eventward._internal.log.natsserver import Node, TlsFiles

OPERATOR = "eventward-operator"
SERVER_CERT = "nats-server"

nats_app = typer.Typer(help="A local NATS JetStream deployment (mTLS, policy-compiled permissions).",
                       no_args_is_help=True)
_JSON = common.json_option()
_OPERATOR_AS = typer.Option(
    OPERATOR, "--as", metavar="PRINCIPAL",
    help="Whose NATS credentials to use when nats.cert names <principal> (listing needs the operator's).",
)


def run_root(home: Home) -> Path:
    return home.run_dir / "nats"


def server_tls(home: Home) -> TlsFiles:
    """The CA and server certificate, issued on first use."""
    from eventward._internal import pki
    from eventward._internal.log.natsserver import TlsFiles

    cert, key = pki.ensure_server_cert(home.certs, SERVER_CERT)
    return TlsFiles(pki.ca_paths(home.certs)[0], cert, key)


def nats_pins(home: Home) -> list[str] | None:
    """Once ``eventward pki init`` manages the CA, nats-server accepts only the client keys of
    valid, unrevoked certificates (``pinned_certs``); the operator's is issued first."""
    from eventward._internal import pki
    from eventward._internal.certstore import CertRegistry

    if not CertRegistry.managed(home.certs):
        return None
    pki.ensure_client_cert(home.certs, OPERATOR)
    reg = CertRegistry(home.certs)
    try:
        return reg.pins()
    finally:
        reg.close()


def operator_user() -> str:
    """The operator's authorization entry: stream administration only, private inbox."""
    from eventward._internal.log.nats import admin_permissions, inbox_prefix_for

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
    """The active policy as nats-server authorization (with the operator), and its literal topics
    (with their dead-letter and partition streams: ``nats up`` creates them)."""
    from eventward._internal.log.partitions import partition_streams
    from eventward._internal.policy.compile_nats import compile_nats, with_dlq
    from eventward._internal.policy.spec import LITERAL
    from eventward._internal.policy.store import PolicyStore, build

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
            for t in (*with_dlq(n), *partition_streams(n, spec.partitions(n))[1:])
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
    from eventward._internal import pki
    from eventward._internal.log.nats import NatsTransport

    if not topics:
        return
    cert, key = pki.ensure_client_cert(home.certs, OPERATOR)
    task = progress.add_task("creating streams", total=len(topics))
    urls = [n.url(tls=True) for n in nodes]
    with NatsTransport(urls, replicas=replicas, ca=pki.ca_paths(home.certs)[0], cert=cert, key=key) as t:
        for topic in topics:
            t.create_stream(topic)
            progress.advance(task)


@nats_app.command(
    "up",
    epilog=common.examples("eventward nats up --cluster 3", "eventward nats streams", "eventward nats consumers"),
)
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
    from eventward._internal.log import natsserver

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
    pinned = nats_pins(home)
    with _progress() as progress:
        task = progress.add_task("starting nats-server", total=cluster)
        nodes = natsserver.start_all(
            run_root(home), size=cluster, port=port, tls=tls, auth_config=auth,
            on_started=lambda _node: progress.advance(task), pinned=pinned,
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


def _nodes_json(nodes: list[Node]) -> dict[str, Any]:
    from eventward._internal.log import natsserver

    return {"servers": [
        {"name": n.name, "url": n.url(tls=True), "route_port": n.cluster_port, "pid": natsserver.running(n),
         "store": str(n.store)}
        for n in nodes
    ]}


def _print_nodes(nodes: list[Node]) -> None:
    from eventward._internal.log import natsserver

    table = Table("server", "client url", "route port", "pid", "store")
    for n in nodes:
        pid = natsserver.running(n)
        state = str(pid) if pid else "[red]stopped[/]"
        table.add_row(n.name, n.url(tls=True), str(n.cluster_port or "-"), state, str(n.store))
    common.console.print(table)


@nats_app.command("down")
def down_cmd() -> None:
    """Stop the nats-servers 'up' started (and nothing else)."""
    from eventward._internal.log import natsserver

    stopped = natsserver.stop_all(run_root(common.home()))
    if not stopped:
        common.console.print("no nats-server of this deployment is running")
    for name, pid in stopped:
        common.console.print(f"stopped {name} (pid {pid})")


@nats_app.command("status")
def status_cmd(as_json: bool = _JSON) -> None:
    """Servers of this deployment and whether they run (pid null: stopped)."""
    from eventward._internal.log import natsserver

    nodes = natsserver.discover(run_root(common.home()))
    if as_json:
        common.emit_json(_nodes_json(nodes))
        return
    if not nodes:
        common.console.print("no NATS deployment in this home; run 'eventward nats up'")
        return
    _print_nodes(nodes)


@nats_app.command("cert")
def cert_cmd(principal: str = typer.Argument(..., help="Principal the certificate authenticates.")) -> None:
    """Issue (once) a client certificate whose CN is PRINCIPAL, from the deployment CA."""
    from eventward._internal import pki

    cert, key = pki.ensure_client_cert(common.home().ensure().certs, principal)
    common.console.print(f"certificate {cert}\nkey         {key} (0600)", highlight=False)


@contextmanager
def _admin(principal: str) -> Iterator[Any]:
    """The NATS transport of this home's configuration, with ``principal``'s credentials."""
    from eventward._internal.client.trust import check_principal
    from eventward._internal.config import Config
    from eventward._internal.deployment import open_transport

    home = common.home().require()
    config = Config.load(home.config)
    if config.transport != "nats":
        raise ConfigError(f"this home's transport is {config.transport!r}, not nats (see {home.config})")
    transport = open_transport(home, config, check_principal(principal))
    try:
        yield transport
    finally:
        transport.close()


@nats_app.command("streams", epilog=common.examples("eventward nats streams", "eventward nats streams --json"))
def streams_cmd(principal: str = _OPERATOR_AS, as_json: bool = _JSON) -> None:
    """eventward's JetStream streams: events (offsets), sealed batches (messages), bytes, replicas, leader."""
    with _admin(principal) as t:
        stats = t.stream_stats()
    if as_json:
        common.emit_json({"streams": [
            {"stream": s.stream, "jetstream_stream": s.jetstream, "events": s.events, "batches": s.batches,
             "bytes": s.bytes, "first_seq": s.first_seq, "last_seq": s.last_seq, "replicas": s.replicas,
             "leader": s.leader, "jetstream_consumers": s.consumers, "error": s.error}
            for s in stats
        ]})
        return
    table = Table("stream", "events", "batches", "bytes", "replicas", "leader", "JetStream stream")
    for s in stats:
        table.add_row(s.stream, "unreadable" if s.events is None else str(s.events), str(s.batches), str(s.bytes),
                      str(s.replicas), s.leader or "-", s.jetstream)
    common.console.print(table)
    for s in stats:
        if s.error:
            common.err_console.print(f"warning: {s.error}")


@nats_app.command(
    "consumers", epilog=common.examples("eventward nats consumers", "eventward nats consumers --json")
)
def consumers_cmd(principal: str = _OPERATOR_AS, as_json: bool = _JSON) -> None:
    """Consumer groups per stream with their committed offset and lag (events not yet consumed)."""
    with _admin(principal) as t:
        stats = {s.stream: s for s in t.stream_stats()}
        offsets = t.group_offsets()
        native = [c for s in stats.values() if s.consumers for c in t.jetstream_consumers(s.stream)]
    ends = {name: s.events for name, s in stats.items()}  # None: the stream's tail is unreadable
    groups = [
        {"group": o.group, "stream": o.stream, "committed": o.committed, "end": ends.get(o.stream),
         "lag": None if ends.get(o.stream) is None else max(0, ends[o.stream] - o.committed)}  # type: ignore[operator]
        for o in offsets
    ]
    if as_json:
        common.emit_json({
            "groups": groups,
            "jetstream_consumers": [
                {"stream": c.stream, "name": c.name, "pending_batches": c.pending, "ack_pending": c.ack_pending}
                for c in native
            ],
        })
        return
    table = Table("group", "stream", "committed", "end", "lag (events)")
    for g in groups:
        table.add_row(g["group"], g["stream"], str(g["committed"]),
                      "-" if g["end"] is None else str(g["end"]), "-" if g["lag"] is None else str(g["lag"]))
    common.console.print(table)
    if native:
        jt = Table("stream", "JetStream consumer", "pending batches", "ack pending", title="native JetStream consumers")
        for c in native:
            jt.add_row(c.stream, c.name, str(c.pending), str(c.ack_pending))
        common.console.print(jt)


def register(app: typer.Typer) -> None:
    """Add ``eventward nats ...`` to the root app."""
    app.add_typer(nats_app, name="nats")
