"""FastAPI wiring: the layer ``instrument_app`` installs, the JWKS route, the caller dependency."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, Response

from .._settings import ConfigError
from ._config import JWKS_PATH, AuthConfig, auth_config
from ._jwks import TrustStore
from ._keys import jwks_document
from ._middleware import SCOPE_KEY, ServiceAuthMiddleware
from ._verify import ANONYMOUS, MISSING, ServiceIdentity, TokenVerifier

if TYPE_CHECKING:
    from .._bootstrap import Telemetry
    from .._server import ASGIApp

__all__ = ["CallingService", "auth_layers", "calling_service"]

_log = logging.getLogger("otel_dist.auth")
_STATE = "otel_dist_auth"


def build_verifier(config: AuthConfig, settings: Any) -> TokenVerifier:
    trust = TrustStore(
        dict(config.jwks_sources),
        refresh_interval=settings.jwt_jwks_refresh,
        min_refresh_interval=settings.jwt_jwks_min_refresh,
    )
    if config.published and config.service_name not in dict(config.jwks_sources):
        trust.trust(config.service_name, {key.kid: key for key in config.published})  # calls to itself
    return TokenVerifier(
        config.service_name,
        algorithms=config.algorithms,
        secrets=config.hmac_keys,
        trust=trust,
        leeway=settings.jwt_leeway,
        allowed_callers=settings.jwt_allowed_callers,
        cache_size=settings.jwt_cache_size,
    )


def auth_layers(app: Any, telemetry: Telemetry) -> list[Callable[[ASGIApp], ASGIApp]]:
    """Set up service auth for `app`; the ASGI layer to place inside the server span (none if off).

    Raises ConfigError for unusable keys, so a misconfigured service fails at start-up.
    """
    settings = telemetry.settings
    config = auth_config(settings)
    app.state.otel_dist_auth = config
    exempt = [*settings.auth_exempt_paths, settings.metrics_path]
    if config.publishes_jwks:
        _add_jwks_route(app, config)
        exempt.append(JWKS_PATH)
    if not config.enabled:
        _warn_disabled(config, settings.environment)
        return []
    if config.service_name == "unknown_service":
        # Tokens are addressed to this service by name: without one, every valid token would be
        # refused as wrong_audience at run time.
        raise ConfigError(
            "OTEL_SERVICE_NAME: required when service auth is on (tokens are addressed to the service by name); "
            "accepted: the service's name (or service.name in OTEL_RESOURCE_ATTRIBUTES)"
        )
    verifier = build_verifier(config, settings)
    app.state.otel_dist_auth_verifier = verifier
    meter = telemetry.meter("otel_dist.auth")
    sink = telemetry.log_sink

    def layer(inner: ASGIApp) -> ASGIApp:
        return ServiceAuthMiddleware(inner, verifier=verifier, exempt_paths=exempt, meter=meter, sink=sink)

    return [layer]


def _warn_disabled(config: AuthConfig, environment: str) -> None:
    _log.warning(
        "!!! SERVICE AUTH IS DISABLED: every endpoint of %s accepts requests without a service token "
        "(%s, ENVIRONMENT=%s). Set SERVICE_JWT_SECRET (at least 32 bytes) to turn it on; "
        "ENVIRONMENT=production refuses to start without it.",
        config.service_name,
        config.disabled_reason,
        environment,
        extra={"otel_dist_fields": {"otel_dist.auth.enabled": False}},
    )


def _add_jwks_route(app: Any, config: AuthConfig) -> None:
    if any(getattr(route, "path", None) == JWKS_PATH for route in app.router.routes):
        return
    body = json.dumps(jwks_document(config.published)).encode()

    async def jwks(request: Request) -> Response:
        return Response(
            body,
            media_type="application/jwk-set+json",
            headers={"cache-control": "public, max-age=300"},
        )

    app.add_route(JWKS_PATH, jwks, methods=["GET"], include_in_schema=False)


def calling_service(request: Request) -> ServiceIdentity:
    """FastAPI dependency: the verified calling service of this request.

    With auth disabled (development without a secret) it returns an unverified
    ``anonymous`` identity (``verified=False``); on an exempt path, where no
    token was checked, it answers 401.
    """
    identity: ServiceIdentity | None = request.scope.get(SCOPE_KEY)
    if identity is not None:
        return identity
    config: AuthConfig | None = getattr(request.app.state, _STATE, None)
    if config is not None and not config.enabled:
        return ANONYMOUS
    raise HTTPException(
        status_code=401,
        detail={"error": "invalid_token", "reason": MISSING},
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


CallingService = Annotated[ServiceIdentity, Depends(calling_service)]
"""``async def handler(caller: CallingService): ...``"""
