"""The ``eventward`` command. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from eventward._internal.cli import common, remote

common.readable_help()

app = typer.Typer(
    cls=remote.RootGroup,  # client mode (--connect/--profile) resolves commands from cli/remote.py
    name="eventward",
    help=(
        "Secure-by-default event streaming: encryption, crypto-shredding, seals, policy, audit.\n\n"
        "Tables and reports take --json (stable fields). Exit codes: 0 ok, 1 a check found a problem, "
        "2 usage error, 3 forbidden, 4 not found, 5 invalid input, 6 unavailable, 7 conflict, "
        "8 refused as unsafe, 9 configuration, 10 other error (docs/cli.md)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    epilog=common.examples(
        "eventward init --admin admin",
        "eventward policy apply policy.yaml --as admin",
        "eventward consume orders --as shipping-svc --from-beginning",
        "eventward schema list --as alice --json",
        "eventward --profile ops forget c1   (client mode: as your certificate's principal)",
    ),
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"eventward {version('eventward')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("eventward (version unknown: not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    home: str = typer.Option(
        None,
        "--home",
        envvar="EVENTWARD_HOME",
        metavar="DIR",
        help="Deployment directory; default ./.eventward in the current directory.",
    ),
    connect: str = typer.Option(
        None,
        "--connect",
        envvar=remote.CONNECT_ENV,
        metavar="URL[,URL...]",
        help="Client mode: run against these control-plane URLs (fail-over in order) as the principal "
        "your credentials authenticate (profile, or EVENTWARD_CA/CERT/KEY); --as does not exist there.",
    ),
    profile: str = typer.Option(
        None,
        "--profile",
        envvar=remote.PROFILE_ENV,
        metavar="NAME",
        help="Client mode with a stored profile (eventward profile add); the profile in use applies "
        "when neither --home nor --connect is given.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    common.STATE.home = home
    common.setup_logging()


def _register() -> None:
    from eventward._internal.cli import audit, demo, gateway, harden, keys, log, nats, policy, schema, service, witness
    from eventward._internal.cli import backup as backup_cli
    from eventward._internal.cli import erasure as erasure_cli

    for mod in (keys, schema, policy, audit, log, nats, gateway, demo, witness, service, harden):
        mod.register(app)
    from eventward._internal.cli import profiles  # operator profiles for client mode (cli/remote.py)

    profiles.register(app)
    backup_cli.register(app)
    erasure_cli.register(app)
    from eventward._internal.cli import db as db_cli  # the PostgreSQL control-plane database (store.backend)

    db_cli.register(app)
    from eventward._internal.cli import pki as pki_cli  # the deployment CA: issue, renew, revoke, CRL

    pki_cli.register(app)
    from eventward._internal.cli import monitor as monitor_cli  # monitor, alerts, lag, siem

    monitor_cli.register(app)

    from eventward._internal.cli import guard as guard_cli  # after schema: it adds `schema suggest-tags`

    guard_cli.register(app)


_register()


def main() -> None:
    common.run(app)
