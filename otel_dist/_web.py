"""Per-app wiring for FastAPI: the ``/metrics`` route and the inner ASGI layers.

The server span itself is added by ``_instrumentation`` around every app's
middleware stack; ``instrument_app`` adds what is per app and registers the
layers (auth, fault injection, ...) that sit just inside the server span.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response

from ._auth import auth_layers, publish_auth_state
from ._bootstrap import Telemetry, bootstrap
from ._instrumentation import MiddlewareFactory, app_middleware
from ._startup import worker_exit

__all__ = ["instrument_app"]


@worker_exit
def instrument_app(
    app: FastAPI,
    *,
    telemetry: Telemetry | None = None,
    middleware: list[MiddlewareFactory] | None = None,
    auth: bool = True,
    public: bool = False,
) -> FastAPI:
    """Instrument ``app`` once: server spans, HTTP metrics, access log, ``/metrics``.

    ``middleware`` are extra pure-ASGI layers placed inside the server span,
    outermost first (the auth and fault-injection layers use this hook).
    ``auth``: install service-token verification (deny by default; off only
    in development without a secret, with a loud warning), outermost.
    ``public``: an edge service: an inbound ``x-otel-dist-deadline-ms`` is ignored and every request
    starts its own deadline of ``SERVICE_REQUEST_TIMEOUT``.
    """
    tel = telemetry or bootstrap()
    if getattr(app.state, "otel_dist_instrumented", False):
        return app
    app.state.otel_dist_instrumented = True
    app.state.otel_dist_telemetry = tel
    app.state.otel_dist_public = public
    app_middleware(app).extend([*(auth_layers(app, tel) if auth else ()), *(middleware or ())])
    publish_auth_state(app, tel, verifies=auth)
    path = tel.settings.metrics_path
    if not any(getattr(r, "path", None) == path for r in app.router.routes):

        async def metrics(request: Request) -> Response:
            body, content_type = tel.metrics_text(request.headers.get("accept", ""))
            return Response(body, media_type=content_type)

        app.add_route(path, metrics, methods=["GET"], include_in_schema=False)
    return app


def telemetry_of(app: Any) -> Telemetry:
    tel: Telemetry = app.state.otel_dist_telemetry
    return tel
