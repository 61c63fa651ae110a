"""The ``eventward`` command. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from eventward.cli import common

app = typer.Typer(
    name="eventward",
    help="Secure-by-default event streaming: encryption, crypto-shredding, seals, policy, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    home: str = typer.Option(None, "--home", envvar="EVENTWARD_HOME", help="Deployment directory."),
) -> None:
    common.STATE.home = home
    common.setup_logging()


def _register() -> None:
    from eventward.cli import audit, demo, gateway, keys, log, nats, policy, schema

    for mod in (keys, schema, policy, audit, log, nats, gateway, demo):
        mod.register(app)


_register()


def main() -> None:
    common.run(app)
