"""``eventward service``: enroll a service for client mode.

``enroll`` and ``install`` run on the service's host and never open a home: they make and keep
the service's own keys in its directory. ``approve`` runs on the control plane (needs
rotate_keys on the producer) and writes the grant to hand back.
"""

from __future__ import annotations

from pathlib import Path

import typer

from eventward._internal.cli import common
from eventward._internal.cli.context import as_admin, deployment
from eventward.errors import InputError, NotFoundError

service_app = typer.Typer(help="Enroll services for client mode: each keeps only its own keys.", no_args_is_help=True)
_DIR = typer.Option(..., "--dir", help="The service's own directory (never a home).", metavar="DIR")
_JSON = common.json_option()


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")


def _may_seal(pairs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        topic, sep, event_type = pair.partition(":")
        if not sep or not topic or not event_type:
            raise InputError(f"--seal takes TOPIC:TYPE, got {pair[:80]!r}")
        out.setdefault(topic, []).append(event_type)
    return out


@service_app.command(epilog=common.examples("eventward service enroll --dir /etc/orders-svc --name orders-svc"))
def enroll(directory: Path = _DIR, name: str = typer.Option(..., "--name", help="The service's principal.",
                                                             metavar="PRINCIPAL"), json: bool = _JSON) -> None:
    """Make the service's keys (seal, dead-letter, TLS; all 0600) and its enrollment request."""
    from eventward._internal.control.identity import ServiceIdentity

    ident = ServiceIdentity.create(directory, name)
    if json:
        common.emit_json({"principal": name, "request": str(ident.request_path)})
        return
    common.console.print(f"enrollment request for {name}: {ident.request_path}")
    common.console.print("an administrator approves it with: eventward service approve "
                         f"{ident.request_path.name} --seal TOPIC:TYPE ... --out grant.json")


@service_app.command(epilog=common.examples(
    "eventward service approve enrollment.json --seal orders:OrderPlaced --control-url https://cp:8443 "
    "--nats tls://nats:4222 --out grant.json --as admin"))
def approve(
    request: Path = typer.Argument(..., help="The service's enrollment.json.", metavar="REQUEST"),
    seal: list[str] = typer.Option([], "--seal", help="TOPIC:TYPE the service may seal (repeat).",
                                   metavar="TOPIC:TYPE"),
    control_url: list[str] = typer.Option([], "--control-url", help="Control-plane URL (repeat for replicas).",
                                           metavar="URL"),
    nats: list[str] = typer.Option([], "--nats", help="NATS server URL for the direct data path (repeat).",
                                   metavar="URL"),
    days: int = typer.Option(30, "--days", help="TLS certificate lifetime.", min=1, max=397),
    out: Path = typer.Option(..., "--out", help="Where to write the grant.", metavar="FILE"),
    principal: str = as_admin(),
) -> None:
    """Trust the service's keys, certify its TLS key and write the grant it installs."""
    from eventward._internal.control.plane import ControlPlane

    try:
        raw = request.read_bytes()
    except OSError:
        raise NotFoundError(f"cannot read enrollment request {request}") from None
    with deployment(principal) as dep:
        plane = ControlPlane.open(dep)
        try:
            grant = plane.approve(principal, raw, _may_seal(seal), days=days, control_urls=control_url,
                                  nats_servers=nats)
        finally:
            plane.close()
    out.write_bytes(grant)
    from eventward._internal.certstore import apply_nats_pins
    from eventward._internal.cli.nats import run_root

    apply_nats_pins(common.home().certs, run_root(common.home()))  # NATS admits the new certificate at once
    common.console.print(f"grant written to {out}: give it to the service (eventward service install)")


@service_app.command(epilog=common.examples("eventward service install grant.json --dir /etc/orders-svc"))
def install(grant: Path = typer.Argument(..., help="The grant from the administrator.", metavar="GRANT"),
            directory: Path = _DIR) -> None:
    """Install an approved grant (checked: signed by the anchor it names, for this service's keys)."""
    from eventward._internal.control.identity import ServiceIdentity

    try:
        raw = grant.read_bytes()
    except OSError:
        raise NotFoundError(f"cannot read grant {grant}") from None
    body = ServiceIdentity(directory).install(raw)
    common.console.print(f"{body['principal']} enrolled; control plane {', '.join(body['control_urls']) or '-'}")


@service_app.command(epilog=common.examples("eventward service status --dir /etc/orders-svc --json"))
def status(directory: Path = _DIR, json: bool = _JSON) -> None:
    """Who this directory is, where it connects, and what it may seal (never a key)."""
    from eventward._internal.control.identity import ServiceIdentity

    ident = ServiceIdentity(directory)
    g = ident.grant()
    doc = {"principal": g["principal"], "kids": g["kids"], "may_seal": g["may_seal"],
           "control_urls": g["control_urls"], "nats_servers": g["nats_servers"],
           "files": sorted(p.name for p in directory.iterdir())}
    if json:
        common.emit_json(doc)
        return
    for k, v in doc.items():
        common.console.print(f"{k}: {v}")
