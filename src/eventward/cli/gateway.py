"""``eventward serve``: run the HTTP gateway for the selected deployment home.

The gateway never listens without TLS and authentication; ``--insecure-dev-no-auth`` is the
one exception, restricted to loopback addresses and logged loudly at startup and per request.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

import typer
from rich.logging import RichHandler

from eventward.cli import common
from eventward.errors import ConfigError
from eventward.home import Home

DEFAULT_BACKEND = "eventward.deployment:gateway_backend"


def load_backend(spec: str, home: Home) -> Any:
    """``module:callable``; the callable takes the Home and returns a GatewayBackend."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--backend must look like 'module:callable', got {spec[:80]!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"gateway backend module {module_name!r} cannot be imported") from None
    factory: Callable[[Home], Any] | None = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"gateway backend {spec!r} is not a callable")
    return factory(home)


def _logging() -> None:
    handler = RichHandler(console=common.err_console, show_path=False, rich_tracebacks=False)
    gw = logging.getLogger("eventward.gateway")
    gw.setLevel(logging.INFO)
    if not gw.handlers:
        gw.addHandler(handler)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option(None, "--host", help="Address to bind (default from config: 127.0.0.1)."),
        port: int = typer.Option(None, "--port", help="Port (default from config: 8443; 0 picks one)."),
        auth: str = typer.Option(None, "--auth", help="mtls or jwt (default from config: mtls)."),
        insecure_dev_no_auth: bool = typer.Option(
            False,
            "--insecure-dev-no-auth",
            help="DANGER: no authentication at all; loopback only, for development.",
        ),
        dev_principal: str = typer.Option(
            "dev", "--dev-principal", help="Principal every dev request runs as."
        ),
        backend: str = typer.Option(
            DEFAULT_BACKEND, "--backend", help="module:callable(home) -> GatewayBackend."
        ),
    ) -> None:
        """Serve the HTTP gateway (mTLS or OAuth2 JWT; never unauthenticated unless told so)."""
        from eventward.gateway.config import GatewayConfig
        from eventward.gateway.server import create_server

        _logging()
        home = common.home()
        cfg = GatewayConfig.load(home)
        if host is not None:
            cfg.host = host
        if port is not None:
            cfg.port = port
        if auth is not None:
            cfg.auth = auth
        server = create_server(
            cfg,
            home,
            load_backend(backend, home),
            dev_no_auth=insecure_dev_no_auth,
            dev_principal=dev_principal,
        )

        def ready(s: Any) -> None:
            mode = "NO AUTH (dev)" if insecure_dev_no_auth else cfg.auth
            common.console.print(f"eventward gateway listening on {s.url} (auth: {mode})", highlight=False)

        asyncio.run(server.serve_forever(on_ready=ready))
