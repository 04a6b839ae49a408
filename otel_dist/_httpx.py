"""otel-dist's own httpx instrumentation: one CLIENT span per request sent, HTTP client metrics.

Why not the contrib ``HTTPXClientInstrumentor`` (still selectable: ``OTEL_DIST_CLIENT_INSTRUMENTATION=contrib``):
it costs ~200 µs per request (wrapt proxies, a second attribute pass, semconv-mode switches), and it injects
``traceparent``/``baggage`` into every request, to every host.  Here the trace context goes only to hosts
otel-dist knows to be part of the system: the base URL of every ``ServiceClient``, the ``*_SERVICE_URL``
settings and the OTLP endpoint.  A JWKS host, a payment API or any other third party gets no trace id and
no baggage (which may carry user data); the span is still recorded.

Each span follows the stable HTTP client conventions: name ``GET`` (the method), ``http.request.method``,
``url.full`` (credentials and credential-like query values redacted), ``server.address``, ``server.port``,
``network.protocol.version``, ``http.response.status_code``, ``error.type`` (status code >= 400 or exception
class), ``http.request.resend_count`` (set by ``ServiceClient`` through the request extension
``otel_dist.resend_count``); the histogram ``http.client.request.duration`` (s) is recorded when the response
headers arrive, like the contrib instrumentation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.metrics import Meter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._lean_histogram import LeanHistogram
from ._lean_span import set_clean_attributes, start_span
from ._redact import redact_url

__all__ = [
    "RESEND_EXTENSION",
    "allow_propagation",
    "configure",
    "instrument",
    "propagates_to",
    "redact_url",
    "uninstrument",
]

RESEND_EXTENSION = "otel_dist.resend_count"
_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY
_SUPPRESS_HTTP_KEY = otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY
_MAX_ATTR_SETS = 2048
_MAX_URLS = 2048


def _url_full(url: httpx.URL) -> str:
    if not url.userinfo and not url.query:
        return str(url)  # nothing to redact: skip the parsing
    return redact_url(str(url))


def _host_port(url: httpx.URL | str) -> tuple[str, int] | None:
    url = httpx.URL(url) if isinstance(url, str) else url
    if not url.host:
        return None
    return url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 80)


class _State:
    """What the patched transports use; re-pointed by each ``configure`` (tests bootstrap many times)."""

    def __init__(self) -> None:
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self.duration: LeanHistogram | None = None
        self.hosts: frozenset[tuple[str, int]] = frozenset()
        self.attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        # parsed URL -> (url.full, host, port, scheme): the same few URLs are called over and over
        self.urls: dict[Any, tuple[str, str, int, str]] = {}
        self.lock = threading.Lock()
        # OTEL_PYTHON_(HTTPX_)EXCLUDED_URLS and client header capture (see _capture): None when unset.
        self.excluded: Callable[[str], bool] | None = None
        self.capture_request: Any = None
        self.capture_response: Any = None


_state = _State()


def configure(
    tracer: trace.Tracer,
    meter: Meter,
    urls: Iterable[str | None],
    *,
    excluded: Callable[[str], bool] | None = None,
    capture: tuple[Any, Any] = (None, None),
) -> None:
    """Point the instrumentation at this telemetry handle; `urls` are hosts that may get the trace context.

    `excluded`: URLs that get no span or metrics; `capture`: request and response header capture.
    """
    _state.tracer = tracer
    _state.excluded = excluded
    _state.capture_request, _state.capture_response = capture
    _state.duration = LeanHistogram(
        meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
    )
    _state.attrs = {}
    _state.urls = {}
    _state.hosts = frozenset()
    allow_propagation(*urls)


def allow_propagation(*urls: str | None) -> None:
    """Requests to these URLs' host and port carry ``traceparent``/``baggage`` (a ServiceClient's base URL...)."""
    found = {hp for hp in (_host_port(u) for u in urls if u) if hp is not None}
    if found - _state.hosts:
        with _state.lock:
            _state.hosts = _state.hosts | found


def propagates_to(url: str) -> bool:
    hp = _host_port(url)
    return hp is not None and hp in _state.hosts


def _suppressed() -> bool:
    context = otel_context.get_current()
    return bool(context.get(_SUPPRESS_KEY) or context.get(_SUPPRESS_HTTP_KEY))


_W3C = (TraceContextTextMapPropagator, W3CBaggagePropagator)
_w3c_checked: list[Any] = [None, False]  # [the global propagator last looked at, whether it is W3C's own pair]


def _is_w3c(textmap: Any) -> bool:
    """Whether `textmap` is the W3C pair (``OTEL_PROPAGATORS`` = tracecontext,baggage: the default)."""
    if _w3c_checked[0] is not textmap:
        parts = getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else None
        _w3c_checked[:] = [textmap, parts is not None and tuple(type(p) for p in parts) == _W3C]
    return bool(_w3c_checked[1])


def _inject(headers: httpx.Headers, span: trace.Span) -> None:
    """``propagate.inject(headers)`` with `span` current: the same headers, written directly for the W3C pair.

    (The generic path looks the current span up again, formats through helpers and asks the baggage
    propagator to find nothing: ~20 function calls per request.)  Any other propagator runs as configured.
    """
    textmap = propagate.get_global_textmap()
    if not _is_w3c(textmap):
        textmap.inject(headers)
        return
    ctx = span.get_span_context()
    if ctx != trace.INVALID_SPAN_CONTEXT:
        headers["traceparent"] = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        if ctx.trace_state:
            headers["tracestate"] = ctx.trace_state.to_header()
    if otel_baggage.get_all():
        textmap._propagators[1].inject(headers)  # type: ignore[attr-defined]


def _url_info(url: httpx.URL) -> tuple[str, str, int, str]:
    """(url.full, server.address, server.port, url.scheme) of `url`, cached by its parsed form."""
    key = getattr(url, "_uri_reference", None)  # httpx's own parse result: hashable, no re-parsing
    info = _state.urls.get(key) if key is not None else None
    if info is None:
        scheme = url.scheme
        info = (_url_full(url), url.host, url.port or _DEFAULT_PORTS.get(scheme, 80), scheme)
        if key is not None and len(_state.urls) < _MAX_URLS:
            _state.urls[key] = info
    return info


def _start(request: httpx.Request) -> tuple[Any, Any, str, str, int, str]:
    method = request.method
    method_attr = method if method in _KNOWN_METHODS else "_OTHER"
    url_full, host, port, scheme = _url_info(request.url)
    attributes: dict[str, Any] = {
        "http.request.method": method_attr,
        "url.full": url_full,
        "server.address": host,
        "server.port": port,
    }
    if method_attr == "_OTHER":
        attributes["http.request.method_original"] = method
    resend = request.extensions.get(RESEND_EXTENSION)
    if resend:
        attributes["http.request.resend_count"] = resend
    if _state.capture_request is not None:
        attributes.update(_state.capture_request.attributes(request.headers.raw))
    span = start_span(_state.tracer, method_attr, context=None, kind=SpanKind.CLIENT, attributes=attributes)
    # Current while the transport runs: the duration's exemplar and any log line inside point at it.
    token = otel_context.attach(trace.set_span_in_context(span))
    if (host, port) in _state.hosts:
        _inject(request.headers, span)
    return span, token, method_attr, host, port, scheme


def _end(
    span: Any,
    method: str,
    host: str,
    port: int,
    scheme: str,
    started: float,
    response: httpx.Response | None,
    error: BaseException | None,
) -> None:
    elapsed = time.perf_counter() - started
    status = response.status_code if response is not None else None
    version = response.http_version.removeprefix("HTTP/") if response is not None else None
    error_type: str | None = None
    if error is not None:
        error_type = type(error).__qualname__
    elif status is not None and status >= 400:
        error_type = str(status)
    end: dict[str, Any] = {}
    if status is not None:
        end["http.response.status_code"] = status
        end["network.protocol.version"] = version
    if error_type is not None:
        end["error.type"] = error_type
        span.set_status(Status(StatusCode.ERROR, error_type if error is not None else None))
    if response is not None and _state.capture_response is not None:
        span.set_attributes(_state.capture_response.attributes(response.headers.raw))
    if end:
        set_clean_attributes(span, end)
    span.end()
    duration = _state.duration
    if duration is None:
        return
    key = (method, host, port, scheme, status, version, error_type)
    attrs = _state.attrs.get(key)
    if attrs is None:
        attrs = {"http.request.method": method, "server.address": host, "server.port": port, "url.scheme": scheme}
        attrs.update(end)
        if len(_state.attrs) < _MAX_ATTR_SETS:  # bounded: hosts and statuses of one service are few
            _state.attrs[key] = attrs
    duration.record(elapsed, attrs, key)


_MARK = "_otel_dist_lean"


def instrument() -> None:
    """Patch httpx's two default transports once (every client that uses them gets spans)."""
    async_original = httpx.AsyncHTTPTransport.handle_async_request
    if getattr(async_original, _MARK, False):
        return
    sync_original = httpx.HTTPTransport.handle_request

    async def handle_async_request(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        if _suppressed() or (_state.excluded is not None and _state.excluded(str(request.url))):
            return await async_original(self, request)
        span, token, method, host, port, scheme = _start(request)
        started = time.perf_counter()
        try:
            response = await async_original(self, request)
        except BaseException as exc:
            _end(span, method, host, port, scheme, started, None, exc)
            raise
        else:
            _end(span, method, host, port, scheme, started, response, None)
        finally:
            otel_context.detach(token)
        return response

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        if _suppressed() or (_state.excluded is not None and _state.excluded(str(request.url))):
            return sync_original(self, request)
        span, token, method, host, port, scheme = _start(request)
        started = time.perf_counter()
        try:
            response = sync_original(self, request)
        except BaseException as exc:
            _end(span, method, host, port, scheme, started, None, exc)
            raise
        else:
            _end(span, method, host, port, scheme, started, response, None)
        finally:
            otel_context.detach(token)
        return response

    setattr(handle_async_request, _MARK, True)
    setattr(handle_request, _MARK, True)
    handle_async_request.__wrapped__ = async_original  # type: ignore[attr-defined]
    handle_request.__wrapped__ = sync_original  # type: ignore[attr-defined]
    httpx.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]
    httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]


def uninstrument() -> None:
    """Put httpx's transports back (when the contrib instrumentation is selected instead)."""
    for cls, name in ((httpx.AsyncHTTPTransport, "handle_async_request"), (httpx.HTTPTransport, "handle_request")):
        current = getattr(cls, name)
        if getattr(current, _MARK, False):
            setattr(cls, name, current.__wrapped__)
