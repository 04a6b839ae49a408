"""FastAPI wiring: the layer ``instrument_app`` installs, the JWKS route, the caller dependency."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from opentelemetry.metrics import CallbackOptions, Observation

from .._settings import ConfigError
from ._config import JWKS_PATH, AuthConfig, auth_config, missing_key
from ._jwks import TrustStore
from ._keys import jwks_document
from ._middleware import SCOPE_KEY, ServiceAuthMiddleware
from ._verify import ANONYMOUS, MISSING, ServiceIdentity, TokenVerifier

if TYPE_CHECKING:
    from .._bootstrap import Telemetry
    from .._server import ASGIApp

__all__ = ["CallingService", "auth_layers", "auth_state", "calling_service", "publish_auth_state"]

_log = logging.getLogger("otel_dist.auth")
_STATE = "otel_dist_auth"
_DOCS_PATHS = frozenset(("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"))


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
        replay_cache_size=settings.jwt_replay_cache_size,
    )


def auth_layers(app: Any, telemetry: Telemetry) -> list[Callable[[ASGIApp], ASGIApp]]:
    """Set up service auth for `app`; the ASGI layer to place inside the server span (none if off).

    Raises ConfigError for unusable keys, so a misconfigured service fails at start-up.
    """
    settings = telemetry.settings
    config = auth_config(settings)
    app.state.otel_dist_auth = config
    exempt = [*settings.auth_exempt_paths, settings.metrics_path]
    if not settings.docs_public:  # production: the API's description is not for everyone (API_DOCS_PUBLIC)
        exempt = [p for p in exempt if p not in _DOCS_PATHS]
    if config.publishes_jwks:
        _add_jwks_route(app, config)
        exempt.append(JWKS_PATH)
    if not config.enabled:
        _warn_disabled(config, settings.environment)
        return []
    if not config.can_verify:
        raise missing_key(settings, "verify")
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
    lines, _, window = settings.auth_rejection_log_rate.partition("/")
    log_rate = (int(lines), float(window or 60))

    def layer(inner: ASGIApp) -> ASGIApp:
        return ServiceAuthMiddleware(
            inner, verifier=verifier, exempt_paths=exempt, meter=meter, sink=sink, log_rate=log_rate
        )

    return [layer]


# ---------------------------------------------------------------- what the operator sees

ENFORCED, DISABLED, PUBLIC = "enforced", "disabled", "public"
_MODE_STATE = "otel_dist_auth_mode"
_gauges: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


def publish_auth_state(app: Any, telemetry: Telemetry, *, verifies: bool) -> str:
    """Record whether `app` checks service tokens: ``/ready`` shows it, ``otel_dist.auth.enabled`` reports it.

    Modes: ``enforced`` (tokens checked), ``disabled`` (an explicit opt-out), ``public``
    (an edge app created with ``public=True``: it takes no service tokens by design).
    """
    config: AuthConfig | None = getattr(app.state, _STATE, None)
    if not verifies:
        mode = PUBLIC
    elif config is not None and not config.enabled:
        mode = DISABLED
    else:
        mode = ENFORCED
    setattr(app.state, _MODE_STATE, mode)
    meter = telemetry.meter("otel_dist.auth")
    modes = _gauges.get(meter)
    if modes is None:
        modes = _gauges[meter] = {}

        def observe(options: CallbackOptions) -> list[Observation]:
            seen = set(modes.values())
            return [Observation(1 if m == ENFORCED else 0, {"otel_dist.auth.mode": m}) for m in sorted(seen)]

        meter.create_observable_gauge(
            "otel_dist.auth.enabled",
            callbacks=[observe],
            unit="1",
            description="1 when this app verifies service tokens; 0 when service auth is disabled or the app is "
            "public (otel_dist.auth.mode says which).",
        )
    modes[id(app)] = mode
    return mode


def auth_state(app: Any) -> str | None:
    """``enforced``, ``disabled: <opt-out>``, ``public``, or None for an app otel-dist did not instrument."""
    mode: str | None = getattr(app.state, _MODE_STATE, None)
    if mode == DISABLED:
        config: AuthConfig | None = getattr(app.state, _STATE, None)
        return f"disabled: {config.disabled_reason}" if config is not None else mode
    return mode


def _warn_disabled(config: AuthConfig, environment: str | None) -> None:
    _log.warning(
        "!!! SERVICE AUTH IS DISABLED: every endpoint of %s accepts requests without a service token "
        "(%s, ENVIRONMENT=%s). Remove the opt-out to turn it on (SERVICE_AUTH_ENABLED=false is refused "
        "in production).",
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


async def calling_service(request: Request) -> ServiceIdentity:
    """FastAPI dependency: the verified calling service of this request.

    (async: FastAPI would run a plain-def dependency in its thread pool.)

    With auth disabled (an explicit opt-out) it returns an unverified
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
