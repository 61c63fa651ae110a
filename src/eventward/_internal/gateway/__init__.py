"""The HTTP gateway: central enforcement for non-Python clients (mTLS/JWT, limits, problem details).

Public entry points: ``create_server`` (config + home + backend -> a checked, ready listener),
``build_app`` (the aiohttp application alone), the ``GatewayBackend`` protocol a deployment
implements, and ``GatewayConfig`` (the ``gateway:`` section of ``eventward.yaml``).
"""

from eventward._internal.gateway.app import build_app
from eventward._internal.gateway.auth import DevAuthenticator, JwtAuthenticator, MtlsAuthenticator, Principal
from eventward._internal.gateway.backend import GatewayBackend
from eventward._internal.gateway.config import GatewayConfig
from eventward._internal.gateway.mapping import PrincipalMapper
from eventward._internal.gateway.server import GatewayServer, create_server

__all__ = [
    "DevAuthenticator",
    "GatewayBackend",
    "GatewayConfig",
    "GatewayServer",
    "JwtAuthenticator",
    "MtlsAuthenticator",
    "Principal",
    "PrincipalMapper",
    "build_app",
    "create_server",
]
