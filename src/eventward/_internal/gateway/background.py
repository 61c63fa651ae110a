"""A gateway served from a background thread, for programs that embed one (the demo, benchmarks).

The server gets an event loop of its own in a daemon thread; ``start`` returns once it listens
(or raises what stopped it from listening), ``stop`` closes every connection and the loop.
"""

from __future__ import annotations

import asyncio
import threading

from eventward._internal.gateway.server import GatewayServer

START_TIMEOUT_S = 30.0


class BackgroundGateway:
    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="eventward-gateway", daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> BackgroundGateway:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(START_TIMEOUT_S)
        except BaseException:
            self._halt()
            raise
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(START_TIMEOUT_S)
        finally:
            self._halt()

    def _halt(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
