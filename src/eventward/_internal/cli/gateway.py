"""``eventward serve``: run the HTTP gateway for the selected deployment home.

The gateway never listens without TLS and authentication; ``--insecure-dev-no-auth`` is the
one exception, restricted to loopback addresses and logged loudly at startup and per request.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from eventward._internal.cli import common
from eventward.errors import ConfigError

if TYPE_CHECKING:
    from eventward._internal.home import Home

DEFAULT_BACKEND = "eventward._internal.gateway.deployment_backend:gateway_backend"

gateway_app = typer.Typer(help="The HTTP gateway's certificates (serve it with 'eventward serve').")


@gateway_app.command("cert")
def cert_cmd(
    principal: str = typer.Argument(..., help="Principal the client certificate authenticates."),
) -> None:
    """Issue (once) a client certificate whose CN is PRINCIPAL, from the deployment CA."""
    from eventward._internal import pki
    from eventward._internal.gateway.config import GatewayConfig

    home = common.home().require()
    cert, key = pki.ensure_client_cert(home.certs, principal)
    ca = pki.ca_paths(home.certs)[0]
    port = GatewayConfig.load(home).port
    common.console.print(
        f"certificate {cert}\nkey         {key} (0600)\nCA          {ca}\n"
        f"curl --cacert {ca} --cert {cert} --key {key} https://127.0.0.1:{port}/v1/whoami",
        highlight=False,
        soft_wrap=True,
    )


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
    from rich.logging import RichHandler

    handler = RichHandler(console=common.err_console, show_path=False, rich_tracebacks=False)
    gw = logging.getLogger("eventward.gateway")
    gw.setLevel(logging.INFO)
    if not gw.handlers:
        gw.addHandler(handler)


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")

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
        monitor_rules: str = typer.Option(
            None, "--monitor-rules", metavar="FILE", help="Anomaly rules YAML (default: the shipped rules)."
        ),
        no_monitor: bool = typer.Option(False, "--no-monitor", help="Do not run the anomaly rules in the background."),
    ) -> None:
        """Serve the HTTP gateway (mTLS or OAuth2 JWT; never unauthenticated unless told so).

        With a deployment backend it also runs the anomaly rules over the audit log in the
        background (alerts are audit records and metrics; see ``eventward alerts``), and /metrics
        shows the process-wide eventward metrics next to the gateway's (docs/monitoring.md)."""
        import asyncio

        from eventward._internal.gateway.config import SERVER_CERT, GatewayConfig
        from eventward._internal.gateway.deployment_backend import DeploymentBackend
        from eventward._internal.gateway.server import create_server
        from eventward._internal.gateway.tls import ensure_home_material

        _logging()
        home = common.home()
        cfg = GatewayConfig.load(home)
        overrides = {k: v for k, v in (("host", host), ("port", port), ("auth", auth)) if v is not None}
        cfg = GatewayConfig.from_mapping(dataclasses.replace(cfg, **overrides), "--host/--port/--auth")
        be = load_backend(backend, home)
        watcher = None
        epochs = None
        reconciler = None
        try:
            deployed = isinstance(be, DeploymentBackend)
            if deployed and not no_monitor:
                from eventward._internal.monitor.rules import load_rules
                from eventward._internal.monitor.service import Monitor

                watcher = Monitor(be.audit, be.deployment.transport, rules=load_rules(monitor_rules)).start()
            if deployed:  # KEK epochs end on schedule (keys.kek_max_age_days in eventward.yaml)
                from eventward._internal.keys.epochs import EpochKeeper

                kc = be.deployment.config.keys
                epochs = EpochKeeper(be.deployment.keys, max_age_days=kc.kek_max_age_days,
                                     interval=kc.rotate_check_s).start()
            dc = be.deployment.config if deployed else None
            if dc is not None and dc.transport == "nats" and dc.reconciler.enabled:
                from eventward._internal.control.reconciler import DirectAuditor  # the direct path, audited

                rc = dc.reconciler
                reconciler = DirectAuditor(be.deployment, interval_s=rc.interval_s, grace_s=rc.grace_s,
                                           progress_s=rc.progress_s).start()
            if deployed and not cfg.tls.cert and not insecure_dev_no_auth:
                ensure_home_material(home, cfg.host, SERVER_CERT)  # the home's CA, its gateway certificate
            server = create_server(
                cfg,
                home,
                be,
                dev_no_auth=insecure_dev_no_auth,
                dev_principal=dev_principal,
                audit=be.audit if deployed else None,
            )

            def ready(s: Any) -> None:
                mode = "NO AUTH (dev)" if insecure_dev_no_auth else cfg.auth
                common.console.print(
                    f"eventward gateway listening on {s.url} (auth: {mode})", highlight=False
                )

            asyncio.run(server.serve_forever(on_ready=ready))
        finally:
            if reconciler is not None:
                reconciler.stop()
            if epochs is not None:
                epochs.stop()
            if watcher is not None:
                watcher.stop()
            close = getattr(be, "close", None)
            if callable(close):
                close()
