"""Which libraries are instrumented, and by whom.

- httpx: otel-dist's lean layer (``_httpx``: one CLIENT span per request sent, trace context only to
  this system's hosts), or the contrib ``HTTPXClientInstrumentor`` (``OTEL_DIST_CLIENT_INSTRUMENTATION=contrib``).
- FastAPI: otel-dist's lean :class:`ServerTelemetry` layer, added around every
  app's middleware stack when the stack is built.  FastAPI's native telemetry
  is switched off for that app so there is exactly one server span; the contrib
  FastAPI instrumentor is skipped by our distro for the same reason.  If an app
  already carries the contrib ``OpenTelemetryMiddleware`` we leave it alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _capture, _httpx
from ._httpx import redact_url
from ._logs import route_uvicorn_loggers
from ._server import ASGIApp, ServerTelemetry
from ._startup import wrap_lifespan

if TYPE_CHECKING:
    from ._bootstrap import Telemetry

MiddlewareFactory = Callable[[ASGIApp], ASGIApp]
_MARK = "_otel_dist_wrapped"
_active: dict[str, Telemetry] = {}


def _redact_url_full(span: Any, request: Any) -> None:
    url = str(request.url)
    if "?" in url and span.is_recording():
        span.set_attribute("url.full", redact_url(url))


async def _async_redact_url_full(span: Any, request: Any) -> None:
    _redact_url_full(span, request)


def instrument_httpx(telemetry: Telemetry) -> None:
    """otel-dist's lean httpx layer (default), or the contrib instrumentor; never both."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    settings = telemetry.settings
    contrib = HTTPXClientInstrumentor()
    if settings.client_instrumentation == "contrib":
        _httpx.uninstrument()
        if not contrib.is_instrumented_by_opentelemetry:
            contrib.instrument(request_hook=_redact_url_full, async_request_hook=_async_redact_url_full)
        return
    if contrib.is_instrumented_by_opentelemetry:
        contrib.uninstrument()
    service_urls = [getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name.endswith("_service_url")]
    _httpx.configure(
        telemetry.tracer("otel_dist.httpx"),
        telemetry.meter("otel_dist.httpx"),
        [settings.otlp_endpoint, *service_urls],
        excluded=_capture.client_exclusion(settings),
        capture=(_capture.build(settings, "client", "request"), _capture.build(settings, "client", "response")),
    )
    _httpx.instrument()


def _has_contrib_middleware(stack: Any) -> bool:
    seen: set[int] = set()
    while stack is not None and id(stack) not in seen:
        seen.add(id(stack))
        if type(stack).__name__ == "OpenTelemetryMiddleware":
            return True
        stack = getattr(stack, "app", None)
    return False


def app_middleware(app: Any) -> list[MiddlewareFactory]:
    """Inner ASGI layers (auth, faults...) that instrument_app registers for `app`."""
    factories: list[MiddlewareFactory] | None = getattr(app.state, "otel_dist_middleware", None)
    if factories is None:
        factories = []
        app.state.otel_dist_middleware = factories
    return factories


def instrument_fastapi_contrib() -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    instrumentor = FastAPIInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(exclude_spans=["receive", "send"])


def instrument_fastapi(telemetry: Telemetry) -> None:
    """Wrap every FastAPI app's middleware stack (built lazily on first request)."""
    from fastapi import FastAPI

    _active["telemetry"] = telemetry  # a re-bootstrap (tests) re-points existing hooks
    original = FastAPI.build_middleware_stack
    if getattr(original, _MARK, False):
        return

    def build_middleware_stack(self: FastAPI) -> ASGIApp:
        # Built on the first ASGI call, the lifespan's: a ConfigError there ends the process
        # with its one line (see _startup); no cost per request.
        self.router.lifespan_context = wrap_lifespan(self.router.lifespan_context)
        stack: ASGIApp = original(self)
        tel = _active["telemetry"]
        route_uvicorn_loggers()  # after uvicorn's own logging config, whichever launch path
        for factory in reversed(app_middleware(self)):
            stack = factory(stack)
        s = tel.settings
        disabled = s.sdk_disabled or "fastapi" in s.disabled_instrumentations
        if not disabled and (s.server_instrumentation != "otel-dist" or _has_contrib_middleware(stack)):
            return stack
        # FastAPI's native telemetry would add a second server span; the public
        # switch is FastAPI(telemetry=...) at construction, which we do not own.
        native = getattr(self, "_telemetry", None)
        if isinstance(native, dict):
            native.update(tracing=False, metrics=False, logs=False)
        if disabled:
            return stack  # no server telemetry at all; the layers above (auth...) stay
        return ServerTelemetry(
            stack,
            settings=tel.settings,
            tracer=tel.tracer("otel_dist.server"),
            meter=tel.meter("otel_dist.server"),
            sink=tel.log_sink,
            public=bool(getattr(self.state, "otel_dist_public", False)),
        )

    setattr(build_middleware_stack, _MARK, True)
    FastAPI.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
