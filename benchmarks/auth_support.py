"""Service-token verification in the benchmarks: on when otel-dist ships it.

The full scenario verifies a service token on every request.  The auth layer
is installed by ``instrument_app`` when ``SERVICE_JWT_SECRET`` is set; the
load generator sends one valid token (HS256, iss=sub=caller, aud=service
name, iat, exp, jti) minted here with PyJWT.
"""

from __future__ import annotations

import importlib
import time
import uuid
from typing import Any

SERVICE = "bench"
CALLER = "loadgen"
SECRET = "benchmark-secret-0123456789abcdef-0123456789"  # >= 32 bytes


def _auth_module() -> Any:
    try:
        return importlib.import_module("otel_dist._auth")
    except ImportError:
        return None


def available() -> bool:
    """True when otel-dist ships its service-token middleware (installed by instrument_app)."""
    try:
        import otel_dist
    except ImportError:
        return False
    module = _auth_module()
    return module is not None and hasattr(otel_dist, "ServiceTokenAuth") and hasattr(module, "auth_layers")


def server_env() -> dict[str, str]:
    """Environment that turns service-token verification on for the benchmark service."""
    return {"OTEL_SERVICE_NAME": SERVICE, "SERVICE_JWT_SECRET": SECRET}


def token(lifetime: int = 3600) -> str:
    import jwt

    now = int(time.time())
    claims = {"iss": CALLER, "sub": CALLER, "aud": SERVICE, "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def client_headers() -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token()}".encode())]


def middleware_for(app: Any, telemetry: Any) -> list[Any]:
    """The ASGI layer factories instrument_app installs for `app` when a secret is set."""
    module = _auth_module()
    if module is None or not hasattr(module, "auth_layers"):
        return []
    return list(module.auth_layers(app, telemetry))
