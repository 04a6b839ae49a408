"""The service template: a new service in a few lines.

    from otel_dist import DbSession, create_app, downstream

    app = create_app("orders", metadata=Base.metadata, downstreams=["auth"])

    @app.get("/orders/{order_id}")
    async def read(order_id: int, session: DbSession, auth=Depends(downstream("auth"))): ...

``create_app`` gives the app, in this order:

1. telemetry: ``bootstrap()`` (or the handle ``opentelemetry-instrument`` already made),
   with `name` as the default ``service.name`` (``OTEL_SERVICE_NAME`` wins);
2. ``/health`` (liveness) and ``/ready`` (the checks below, ``READINESS_CHECK_TIMEOUT`` each);
3. ``instrument_app``: server span, HTTP metrics, access log, ``/metrics`` and service
   auth (``public=True`` for an edge service that takes no service tokens), then the
   fault-injection layer and ``POST /_faults`` outside production (production is every
   ``ENVIRONMENT`` not listed in ``NON_PRODUCTION_ENVIRONMENTS``, unset included);
4. a lifespan that opens what the service declared, in order, and closes it in reverse:
   the :class:`Database` (``metadata=`` creates its tables; readiness check ``database``),
   one :class:`ServiceClient` per downstream with service tokens for that audience
   (non-critical readiness check named after the downstream: ``degraded`` while its
   breaker is open, the instance stays ready), then
   the app's own ``lifespan``;
5. error handlers (``_errors``): a downstream the client gave up on is a clear 503/504
   (``Retry-After`` while its breaker is open), a database error a 503/500 without a
   trace, a validation error a 422 that never echoes the input, non-encodable text a
   422; the error responses are documented in the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.sql.schema import MetaData

from ._auth import JWKS_PATH, auth_config, service_auth
from ._auth._config import missing_key
from ._bootstrap import Telemetry, bootstrap, current
from ._db import Database, database_url
from ._doctor_route import DOCTOR_PATH, install_doctor_route
from ._errors import add_error_handlers, responses_for
from ._faults import FaultInjection, FaultState, install_fault_admin
from ._health import Readiness, ReadinessCheck, install_health
from ._instrumentation import MiddlewareFactory
from ._logs import get_logger
from ._redact import redact_url
from ._resilience import ServiceClient, breaker_states
from ._server import ASGIApp
from ._settings import ConfigError, Settings, load_settings, service_url, service_url_variable
from ._startup import worker_exit
from ._web import instrument_app

__all__ = ["create_app", "downstream"]

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]
_log = get_logger("otel_dist.service")


@worker_exit
def create_app(
    name: str,
    *,
    version: str | None = None,
    metadata: MetaData | None = None,
    database: bool | None = None,
    downstreams: Iterable[str] | Mapping[str, str] = (),
    checks: Mapping[str, ReadinessCheck] | None = None,
    lifespan: Lifespan | None = None,
    public: bool = False,
    middleware: list[MiddlewareFactory] | None = None,
    telemetry: Telemetry | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with telemetry, auth, health, readiness, database, downstream clients and faults wired.

    - `metadata`: SQLAlchemy ``MetaData`` whose tables are created at start-up; implies ``database=True``.
    - `database`: open a :class:`Database` (``DATABASE_URL``, default ``./<name>.db``) without creating tables.
    - `downstreams`: service names whose URL comes from ``<NAME>_SERVICE_URL`` (``["inventory"]`` reads
      ``INVENTORY_SERVICE_URL``; ``-`` and ``.`` become ``_``) or
      ``{"name": "http://..."}``; handlers get the clients with ``Depends(downstream("name"))``.
    - `checks`: extra readiness checks (async callables) by name.
    - `lifespan`: the app's own lifespan, entered after the database and clients are open.
    - `public`: an edge service: no service-token check on its routes, no ``/_faults`` route, and
      the caller's trace context only as a span link, its baggage dropped
      (``OTEL_DIST_PUBLIC_INBOUND_CONTEXT``).
    - `middleware`: extra pure-ASGI layers inside the server span (after auth, before fault injection).
    Other keyword arguments go to ``FastAPI(...)``.
    """
    tel = telemetry or _telemetry_for(name, version)
    settings = tel.settings
    # The identity the telemetry resource carries (name and version are only defaults for it).
    service, service_version = settings.service_name, settings.service_version
    if downstreams and settings.service_auth_off is None and auth_config(settings).signing_key is None:
        raise missing_key(settings, "sign")  # fail closed: calls without a token would all be refused anyway
    targets = _downstream_urls(settings, downstreams)
    use_database = bool(database) or (database is None and metadata is not None)
    readiness = Readiness(settings.readiness_timeout, cache_ttl=settings.readiness_cache_ttl)
    readiness.observe(tel.meter("otel_dist.health"))
    for check_name, check in (checks or {}).items():
        readiness.add(check_name, check)

    @asynccontextmanager
    async def service_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if use_database:
                db = Database(database_url(settings, service), telemetry=tel)
                stack.push_async_callback(db.close)
                if metadata is not None:
                    await db.create_tables(metadata)
                app.state.database = db
                readiness.add("database", db.ping)
            clients: dict[str, ServiceClient] = {}
            for target, base_url in targets.items():
                client = ServiceClient(
                    target,
                    base_url,
                    auth=service_auth(target, settings=settings),
                    telemetry=tel,
                )
                stack.push_async_callback(client.aclose)
                clients[target] = client
                # An open breaker degrades a dependency; it does not make this instance unhealthy.
                readiness.add(target, _breaker_check(target), critical=False)
            app.state.clients = clients
            if lifespan is not None:
                await stack.enter_async_context(lifespan(app))
            _log.info(
                "service started",
                service=service,
                version=service_version,
                database=db.system if use_database else None,
                downstreams={target: redact_url(url) for target, url in targets.items()},
                readiness_checks=readiness.names,
            )
            yield
            _log.info("service stopping", service=service)

    fastapi_kwargs.setdefault("title", service)
    fastapi_kwargs.setdefault("responses", responses_for(protected=not public))
    if not settings.docs_public:  # production default: no /docs, /redoc or /openapi.json (API_DOCS_PUBLIC=true)
        for key in ("docs_url", "redoc_url", "openapi_url"):
            fastapi_kwargs.setdefault(key, None)
    app = FastAPI(version=service_version, lifespan=service_lifespan, **fastapi_kwargs)
    app.state.settings = settings
    app.state.readiness = readiness
    install_health(app, service=service, version=service_version, readiness=readiness)
    layers = list(middleware or ())
    faults: FaultState | None = None
    if not settings.production:
        faults = FaultState(settings.fault_error_rate, settings.fault_latency_ms)
        app.state.faults = faults
        exempt = {*settings.untraced_paths, "/health", "/ready", settings.metrics_path, JWKS_PATH, DOCTOR_PATH}
        layers.append(_fault_layer(faults, exempt, app))
        if not public:
            install_fault_admin(app, faults)
        if faults.active:
            _log.warning("fault injection is on", **faults.as_dict())
    install_doctor_route(app, tel, public=public, faults=faults)
    add_error_handlers(app)
    return instrument_app(app, telemetry=tel, middleware=layers, auth=not public, public=public)


def downstream(target: str) -> Callable[[Request], Awaitable[ServiceClient]]:
    """FastAPI dependency factory: the app's :class:`ServiceClient` for `target` (declared in ``downstreams``)."""

    # async: FastAPI runs a plain-def dependency in its thread pool (a thread handoff per request).
    async def client(request: Request) -> ServiceClient:
        clients: dict[str, ServiceClient] = getattr(request.app.state, "clients", {})
        try:
            return clients[target]
        except KeyError:
            raise RuntimeError(f"no client for {target!r}: add it to create_app(downstreams=[...])") from None

    client.__name__ = f"downstream_{target}"
    return client


# ---------------------------------------------------------------- pieces


def _telemetry_for(name: str, version: str | None) -> Telemetry:
    tel = current()
    if tel is not None:
        if tel.settings.service_name == Settings.service_name:  # the dataclass default: nobody named it
            _log.warning(
                "this service has no name: set OTEL_SERVICE_NAME when running under opentelemetry-instrument",
                expected=name,
            )
        return tel
    # `name` and `version` are defaults: the environment (OTEL_SERVICE_NAME, SERVICE_VERSION) wins.
    configured = load_settings()
    overrides: dict[str, Any] = {}
    if configured.service_name == Settings.service_name:
        overrides["service_name"] = name
    if version is not None and configured.service_version == Settings.service_version:
        overrides["service_version"] = version
    return bootstrap(**overrides)


def _downstream_urls(settings: Settings, downstreams: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(downstreams, Mapping):
        return {target: url.rstrip("/") for target, url in downstreams.items()}
    urls: dict[str, str] = {}
    for target in downstreams:
        variable = service_url_variable(target)
        url = service_url(target, settings)
        if not url:
            raise ConfigError(
                f"{variable}: required by create_app(downstreams=[{target!r}]); accepted: an http:// or https:// URL"
            )
        urls[target] = url
    return urls


def _breaker_check(target: str) -> ReadinessCheck:
    async def check() -> str | None:
        state = breaker_states().get(target, "closed")
        return f"circuit breaker {state}" if state == "open" else None

    return check


def _fault_layer(state: FaultState, exempt: set[str], app: FastAPI) -> MiddlewareFactory:
    def layer(inner: ASGIApp) -> ASGIApp:
        return FaultInjection(inner, state=state, exempt=exempt, routes=lambda: app.router.routes)

    return layer
