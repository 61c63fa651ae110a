"""Running the gateway: the TLS listener, slow-client cut-offs, connection caps, JWKS refresh.

aiohttp has no request-head timeout of its own, but its keep-alive timer is armed when a
connection opens and closes the connection if no *complete* request head has arrived when it
fires; the gateway sets it to ``header_timeout_s``, which cuts off a client trickling headers
byte by byte (slowloris). The TLS handshake has its own deadline (``handshake_timeout_s``).
Lingering (reading and discarding the rest of a refused body) is off: a refused body is never
read. Malformed requests are answered with problem details and logged without the raw bytes
the HTTP parser would otherwise quote (they may contain a bearer token).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import time
from asyncio import sslproto
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from eventward._internal.audit.base import AuditSink
from eventward._internal.gateway import problems
from eventward._internal.gateway.app import build_app
from eventward._internal.gateway.auth import (
    Authenticator,
    DevAuthenticator,
    JwtAuthenticator,
    MtlsAuthenticator,
)
from eventward._internal.gateway.backend import GatewayBackend
from eventward._internal.gateway.config import GatewayConfig, LimitsConfig, tls_files
from eventward._internal.gateway.jwks import VerifyKey, fetch_url, load_file
from eventward._internal.gateway.mapping import PrincipalMapper
from eventward._internal.gateway.metrics import GatewayMetrics
from eventward._internal.gateway.tls import RevokedSerials, server_context
from eventward._internal.home import Home
from eventward.errors import ConfigError, EventwardError

log = logging.getLogger("eventward.gateway")

DEV_WARNING = (
    "INSECURE: --insecure-dev-no-auth: this gateway authenticates NO ONE; every request runs as "
    "principal %r. Never use this outside a developer machine."
)


class _Throttled:
    """At most one warning per ``every`` seconds per kind, with a count of what was folded in:
    floods (connection storms, garbage requests) must not turn into log floods."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.every) < self.every:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        folded = self._suppressed.pop(kind, 0)
        log.warning(msg + (f" (+{folded} similar since the last warning)" if folded else ""), *args)


_warn = _Throttled()


class _Handler(RequestHandler):
    """One per connection: caps connections and keeps raw request bytes out of errors and logs."""

    def __init__(self, manager: web.Server, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._ew_max_connections = max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if manager is not None and len(manager.connections) >= self._ew_max_connections:
            _warn.warning("cap", "gateway: connection refused, %d connections open", len(manager.connections))
            self._manager = None  # never registered: connection_lost has nothing to undo
            transport.abort()  # type: ignore[attr-defined]
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        _warn.warning("malformed", "gateway: malformed request refused (%d %s)", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        resp = problems.from_http(status, "urn:eventward:request:malformed")
        resp.force_close()
        return resp


class _AlertingTLS(sslproto.SSLProtocol):
    """asyncio's TLS protocol, except that a failed handshake sends OpenSSL's alert before the
    connection closes. asyncio aborts without flushing it, so a client without a certificate
    saw an empty reply; now it gets ``certificate_required`` (TLS 1.3) or ``handshake_failure``
    (TLS 1.2), and a bad certificate the alert naming why (unknown_ca, certificate_expired...)."""

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):  # best effort: the connection is closing anyway
                alert = self._outgoing.read()
                if alert and self._transport is not None:
                    self._transport.write(alert)
        super()._on_handshake_complete(handshake_exc)


_CAN_ALERT = all(hasattr(sslproto.SSLProtocol, a) for a in ("_on_handshake_complete", "_process_outgoing"))


class _Site(web.TCPSite):
    """A TCPSite whose connections use ``_Handler`` and whose TLS handshakes have a deadline."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout_s: float,
        handler_kwargs: dict[str, Any],
        max_connections: int,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        self._ew_handshake = handshake_timeout_s
        self._ew_kwargs = handler_kwargs
        self._ew_max = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        if server is None:
            raise ConfigError("gateway runner was not set up")

        ctx = self._ssl_context
        wrap = ctx is not None and _CAN_ALERT

        def factory() -> asyncio.BaseProtocol:
            handler = _Handler(server, loop=loop, max_connections=self._ew_max, **self._ew_kwargs)
            if not wrap:
                return handler
            # read per connection: a reloaded context (renewed certificate, new CRL) takes over
            return _AlertingTLS(
                loop, handler, self._ssl_context, None, server_side=True, ssl_handshake_timeout=self._ew_handshake
            )

        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            ssl=None if wrap else ctx,
            backlog=self._backlog,
            reuse_address=True,
            ssl_handshake_timeout=self._ew_handshake if ctx is not None and not wrap else None,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


class GatewayServer:
    """An app bound to one address. ``start``/``stop`` are async; ``serve_forever`` is for the CLI."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 8443,
        ssl_context: ssl.SSLContext | None,
        limits: LimitsConfig | None = None,
        handshake_timeout_s: float = 10.0,
        key_refresh: tuple[Callable[[], dict[str, VerifyKey]], JwtAuthenticator, float] | None = None,
        tls_reload: TlsReload | None = None,
        periodic: Sequence[tuple[Callable[[], None], float]] = (),
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.limits = limits or LimitsConfig()
        self.handshake_timeout_s = handshake_timeout_s
        self.key_refresh = key_refresh
        self.tls_reload = tls_reload
        self.periodic = list(periodic)
        self._runner: web.AppRunner | None = None
        self._site: _Site | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        return self._site.port if self._site is not None else self.requested_port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        kwargs: dict[str, Any] = {
            "keepalive_timeout": self.limits.header_timeout_s,
            "lingering_time": 0.0,
            "auto_decompress": False,
            "access_log": None,
            "max_line_size": 8190,
            "max_field_size": 8190,
            "max_headers": 100,
        }
        self._runner = web.AppRunner(self.app, handle_signals=False, **kwargs)
        await self._runner.setup()
        self._site = _Site(
            self._runner,
            self.host,
            self.requested_port,
            ssl_context=self.ssl_context,
            handshake_timeout_s=self.handshake_timeout_s,
            handler_kwargs=kwargs,
            max_connections=self.limits.max_connections,
        )
        try:
            await self._site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise ConfigError(
                f"gateway cannot listen on {self.host}:{self.requested_port} ({e.strerror})"
            ) from None
        if self.key_refresh is not None:
            self._refresher = asyncio.create_task(self._refresh_keys())
        if self.tls_reload is not None and self.tls_reload.every > 0:
            self.periodic.append((self._reload_tls, self.tls_reload.every))
        for fn, every in self.periodic:
            self._tasks.append(asyncio.create_task(self._every(fn, every)))

    def _reload_tls(self) -> None:
        """Swap in a new TLS context when the certificate, key, CA or CRL file changed; a file
        that does not load keeps the context in force (logged)."""
        r = self.tls_reload
        if r is None or not r.changed():
            return
        try:
            ctx = r.build()
            if r.revoked is not None:
                r.revoked.reload()
        except EventwardError as e:
            log.warning("gateway: TLS files changed but do not load, keeping the current ones: %s", e.message)
            return
        self.ssl_context = ctx
        if self._site is not None:
            self._site._ssl_context = ctx
        log.info("gateway: TLS certificate/CRL reloaded")

    async def _every(self, fn: Callable[[], None], every: float) -> None:
        """``fn`` at start (an expiry alert must not wait an hour) and then every ``every`` s."""
        while True:
            try:
                await asyncio.to_thread(fn)
            except EventwardError as e:
                log.warning("gateway: periodic %s failed: %s", getattr(fn, "__name__", "task"), e.message)
            await asyncio.sleep(every)

    async def _refresh_keys(self) -> None:
        assert self.key_refresh is not None
        load, auth, every = self.key_refresh
        while True:
            await asyncio.sleep(every)
            try:
                auth.set_keys(await asyncio.to_thread(load))
            except EventwardError as e:
                log.warning(
                    "gateway: JWKS refresh failed, keeping %d known keys until they are %.0fs old: %s",
                    len(auth.kids), auth.max_key_age_s or float("inf"), e.message,
                )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None

    async def serve_forever(self, on_ready: Callable[[GatewayServer], None] | None = None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            if on_ready is not None:
                on_ready(self)
            await stop.wait()
        finally:
            await self.stop()


class TlsReload:
    """What ``serve`` re-reads without a restart: the files, and how to rebuild the context."""

    def __init__(
        self, build: Callable[[], ssl.SSLContext], files: Sequence[Path | None], every: float,
        revoked: RevokedSerials | None = None,
    ) -> None:
        self.build, self.every, self.revoked = build, every, revoked
        self.files = [f for f in files if f is not None]
        self._seen = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for f in self.files:
            try:
                st = f.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def changed(self) -> bool:
        now = self._stamp()
        if now == self._seen:
            return False
        self._seen = now
        return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_authenticator(
    cfg: GatewayConfig, revoked: RevokedSerials | None = None
) -> tuple[Authenticator, Callable[[], dict[str, VerifyKey]] | None]:
    """The authenticator for ``cfg.auth``, and for JWT the JWKS loader to refresh it with."""
    if cfg.auth == "mtls":
        return MtlsAuthenticator(PrincipalMapper(cfg.principal_mapping_rules), revoked=revoked or ()), None
    j = cfg.jwt
    if j.jwks_url:
        url, timeout = j.jwks_url, j.fetch_timeout_s

        def load() -> dict[str, VerifyKey]:
            return fetch_url(url, timeout)
    else:
        path = j.jwks_file or ""

        def load() -> dict[str, VerifyKey]:
            return load_file(path)

    auth = JwtAuthenticator(
        load(),
        issuer=j.issuer,
        audience=j.audience,
        algorithms=j.algorithms,
        principal_claim=j.principal_claim,
        leeway_s=j.leeway_s,
        issuer_alias=j.issuer_alias,
        subject_rules=j.subject_rules,
        max_key_age_s=j.max_key_age_s,
    )
    return auth, load


def create_server(
    cfg: GatewayConfig,
    home: Home,
    backend: GatewayBackend,
    *,
    dev_no_auth: bool = False,
    dev_principal: str = "dev",
    audit: AuditSink | None = None,
    metrics: GatewayMetrics | None = None,
) -> GatewayServer:
    """Everything checked before a socket exists: no authenticated TLS, no listener (unless dev)."""
    cfg.validate()
    files = tls_files(cfg, home)
    key_refresh = None
    tls_reload: TlsReload | None = None
    if dev_no_auth:
        if not _is_loopback(cfg.host):
            raise ConfigError("--insecure-dev-no-auth only listens on a loopback address (127.0.0.1, ::1)")
        log.warning(DEV_WARNING, dev_principal)
        authenticator: Authenticator = DevAuthenticator(dev_principal)
        have_tls = files.cert.is_file() and files.key.is_file()
        ctx = server_context(files.cert, files.key, None, require_client_cert=False) if have_tls else None
        trust_peer = False
    else:
        if not files.cert.is_file():
            raise ConfigError(
                f"gateway TLS certificate {files.cert} does not exist; the gateway does not serve without "
                "TLS and authentication (use --insecure-dev-no-auth on a developer machine)"
            )
        def build_ctx() -> ssl.SSLContext:
            return server_context(
                files.cert, files.key, files.client_ca, require_client_cert=cfg.auth == "mtls", crl=files.crl
            )

        ctx = build_ctx()
        revoked = RevokedSerials(files.crl, files.client_ca)
        tls_reload = TlsReload(
            build_ctx, [files.cert, files.key, files.client_ca, files.crl], cfg.tls.reload_s, revoked
        )
        authenticator, load = build_authenticator(cfg, revoked)
        trust_peer = files.client_ca is not None
        if load is not None and isinstance(authenticator, JwtAuthenticator):
            key_refresh = (load, authenticator, cfg.jwt.refresh_s)
    app = build_app(
        backend,
        authenticator,
        cfg.limits,
        metrics=metrics,
        audit=audit,
        trust_peer_cert=trust_peer,
        dev=dev_no_auth,
    )
    return GatewayServer(
        app,
        host=cfg.host,
        port=cfg.port,
        ssl_context=ctx,
        limits=cfg.limits,
        handshake_timeout_s=cfg.tls.handshake_timeout_s,
        key_refresh=key_refresh,
        tls_reload=tls_reload,
        periodic=[*_pki_tasks(cfg, home, audit, metrics), *_settle_tasks(backend)],
    )


def _settle_tasks(backend: GatewayBackend) -> list[tuple[Callable[[], None], float]]:
    """A deployment's in-doubt erasures (a COMMIT that timed out but landed) finished and certified
    by the replica that ran them, every 5 s (nothing to do costs one dictionary check)."""
    settle = getattr(getattr(backend, "deployment", None), "settle_in_doubt", None)
    if settle is None:
        return []

    def settle_in_doubt() -> None:
        settle()

    return [(settle_in_doubt, 5.0)]


def _pki_tasks(
    cfg: GatewayConfig, home: Home, audit: AuditSink | None, metrics: GatewayMetrics | None
) -> list[tuple[Callable[[], None], float]]:
    """Once ``eventward pki init`` manages the home's CA: the expiry monitor and the CRL's
    republication (serve holds the CA key), hourly. With ``store.backend: postgres`` also the
    CRL sync: the CRL stored in the shared database (another replica revoked) is written to
    this replica's CRL file every ``tls.reload_s``, which the TLS reload then picks up."""
    from eventward._internal.certstore import CertRegistry, CrlSync, ExpiryMonitor

    tasks: list[tuple[Callable[[], None], float]] = []
    crl = tls_files(cfg, home).crl
    if crl is not None and cfg.tls.reload_s > 0 and CrlSync.applies(home.certs):
        tasks.append((CrlSync(home.certs, crl).run, cfg.tls.reload_s))
    if not CertRegistry.managed(home.certs):
        return tasks
    mon = ExpiryMonitor(home.certs, cfg.tls.expiry_warn_days, audit=audit, metrics=metrics)
    return [*tasks, (mon.check, 3600.0)]
