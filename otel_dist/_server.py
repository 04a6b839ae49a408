"""The lean server-side ASGI layer: one span, HTTP metrics and one access-log line.

Why our own layer instead of FastAPI's native telemetry or the contrib ASGI
middleware: both cost 2-3x more per request (operation and receive/send spans,
attribute re-validation, a second route scan).  This layer reads everything it
needs once from the ASGI scope and keeps the semantic-convention names:
span ``GET /orders/{order_id}`` with ``http.route`` etc., metrics
``http.server.request.duration`` and ``http.server.active_requests``.
The route template is the one the router already matched (``scope["route"]``),
so no route is scanned twice, and a 404 never adds a series.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from . import _capture
from ._deadline import HEADER_BYTES, REQUEST, RequestContext, parse_deadline
from ._lean_histogram import BatchedHistogram
from ._lean_span import set_clean_attributes, start_span
from ._logs import LogSink, trace_ids_text
from ._propagation import clean_correlation_id, correlation_id, extract_from_all_headers, extract_from_headers
from ._settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
_SCOPE_NAME = "otel_dist.server"
ACCESS_LOGGER = "otel_dist.access"
# Bounds on values taken from the request (the whole head may arrive in one 64 KB read).
_MAX_PATH = 2048
_MAX_HOST = 255
_MAX_ADDRESS = 64
_INBOUND_LINK = {"otel_dist.link.type": "inbound_untrusted"}
_MAX_LIST_HEADER = 8192
_DEADLINE_BODY = b'{"error":"deadline_exceeded","detail":"the deadline of this request passed before it was answered"}'
_DEADLINE_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_DEADLINE_BODY)).encode())]
_CLIENT_CLOSED = 499  # nginx's "client closed request": no response was sent


async def _answer_deadline_exceeded(send: Send) -> None:
    await send({"type": "http.response.start", "status": 504, "headers": list(_DEADLINE_HEADERS)})
    await send({"type": "http.response.body", "body": _DEADLINE_BODY})


async def _expired_on_arrival(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer_deadline_exceeded(send)


def _freeze_after_startup(send: Send) -> Send:
    """``send`` of the lifespan: freezes the garbage collector's view once start-up completed.

    Spans and log records queued for export survive long enough to trigger collections (plain
    FastAPI triggers none), and a full collection walks every object of the process: in the
    benchmark server ~7% of its CPU, half of it after gc.freeze() (``BENCH_GC_STATS=1``).
    Frozen objects are still freed when nothing refers to them; only cycles among them are not.
    """

    async def wrapped(message: Message) -> None:
        if message.get("type") == "lifespan.startup.complete":
            gc.collect()
            gc.freeze()
        await send(message)

    return wrapped


class _Expiry:
    """Expires, in arrival order, the requests of one event loop that run on the service's own timeout.

    They all get the same budget, so their deadlines come in the order they arrived: one dict
    (insertion-ordered) and one loop timer for the oldest serve them all, instead of a timer per
    request (a TimerHandle, a heap push and a cancel each: ~3 µs).  A request with a shorter inbound
    deadline gets its own timer (``loop.call_at``).
    """

    __slots__ = ("_in_flight", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._in_flight: dict[RequestContext, float] = {}  # request -> its deadline (loop time)
        self._timer: asyncio.TimerHandle | None = None

    def add(self, request: RequestContext, when: float) -> None:
        self._in_flight[request] = when
        if self._timer is None:
            self._timer = self.loop.call_at(when, self._fire)

    def discard(self, request: RequestContext) -> None:
        self._in_flight.pop(request, None)

    def _fire(self) -> None:
        self._timer = None
        in_flight = self._in_flight
        now = self.loop.time()
        for request, when in list(in_flight.items()):
            if when > now:
                self._timer = self.loop.call_at(when, self._fire)  # the oldest still running
                return
            del in_flight[request]
            request.expire()


class ActiveRequests:
    """``http.server.active_requests`` as an asynchronous up-down counter.

    A synchronous UpDownCounter costs two SDK measurements per request (each
    hashing its attributes once per metric reader: ~25 µs with Prometheus +
    OTLP); here a request moves a plain counter and the SDK reads the counts
    when it collects.  Same name, unit, kind (non-monotonic sum) and attributes.
    One instance per meter, so several apps on one meter share one instrument.
    """

    _by_meter: weakref.WeakKeyDictionary[Any, ActiveRequests] = weakref.WeakKeyDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, meter: Meter) -> None:
        # (method, scheme) -> [requests in flight, attributes]; bounded: methods are normalised.  The
        # count is the length of a deque: append and pop are atomic (no lock per request, any thread).
        self._slots: dict[tuple[str, str], list[Any]] = {}
        # The SDK runs this instrument's callback before every collection of every reader: the
        # duration histograms of the apps on this meter aggregate their queued measurements then.
        self._batched: weakref.WeakSet[BatchedHistogram] = weakref.WeakSet()
        meter.create_observable_up_down_counter(
            "http.server.active_requests",
            callbacks=[self._observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    @classmethod
    def of(cls, meter: Meter) -> ActiveRequests:
        with cls._registry_lock:
            try:
                found = cls._by_meter.get(meter)
            except TypeError:  # a meter that cannot be weakly referenced
                return cls(meter)
            if found is None:
                found = cls._by_meter[meter] = cls(meter)
            return found

    def enter(self, method: str, scheme: str) -> collections.deque[None]:
        slot = self._slots.get((method, scheme))
        if slot is None:
            attrs = {"http.request.method": method, "url.scheme": scheme}
            slot = self._slots.setdefault((method, scheme), [collections.deque(), attrs])
        in_flight: collections.deque[None] = slot[0]
        in_flight.append(None)
        return in_flight

    @staticmethod
    def leave(in_flight: collections.deque[None]) -> None:
        in_flight.pop()

    def flush_before_collection(self, histogram: BatchedHistogram) -> None:
        self._batched.add(histogram)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        for histogram in list(self._batched):
            histogram.flush()
        return [Observation(len(in_flight), attrs) for in_flight, attrs in list(self._slots.values())]


def _combine(current: str | None, value: bytes) -> str | None:
    """Repeated list headers join with a comma (RFC 9110); stops growing once past any size bound."""
    if not value.strip():
        return current
    if current is None:
        return value.decode("latin-1")
    if len(current) > _MAX_LIST_HEADER:
        return current  # already too long: the size check in extract_from_headers drops it
    return current + "," + value.decode("latin-1")


def route_template(scope: Scope) -> str | None:
    """The matched route's template (``/orders/{order_id}``), mount prefix included."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if template is None:
        return None
    root = scope.get("root_path") or ""
    return root + template if root and not template.startswith(root) else template


class ServerTelemetry:
    """Pure ASGI middleware; one instance per app, created when the stack is built."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        tracer: trace.Tracer,
        meter: Meter,
        sink: LogSink,
        public: bool = False,
    ) -> None:
        self.app = app
        # A public edge does not let the internet choose its trace, sampling or baggage.
        self._inbound = settings.public_inbound_context if public else "trust"
        # A public edge starts every request's deadline itself; an internal service takes the
        # caller's when it is shorter (never longer: a caller cannot extend this service's work).
        self._public = public
        self._request_timeout = settings.request_timeout
        self._expiry: _Expiry | None = None  # of the loop that served the last request
        self._gc_freeze = settings.gc_freeze
        self._tracer = tracer
        self._sink = sink
        self._untraced = frozenset(settings.untraced_paths)
        # Spec switches; each is None when unset, so the default path pays one `is None` test.
        self._excluded = _capture.server_exclusion(settings)
        self._capture_request = _capture.build(settings, "server", "request")
        self._capture_response = _capture.build(settings, "server", "response")
        w3c = {"tracecontext", "baggage"}
        self._extract_all = not w3c.issuperset(settings.propagators)  # b3, jaeger...: they read other headers
        self._correlation_header = settings.correlation_header.encode("latin-1")
        self._access_log = settings.access_log
        # The exported server span already carries every field of the access line; sending
        # the line as a log record too would store each request twice and cost ~25 µs.
        self._export_access = settings.access_log_export
        self._spans_exported = bool(settings.trace_exporters)
        self._duration = BatchedHistogram(
            meter.create_histogram(
                "http.server.request.duration", unit="s", description="Duration of HTTP server requests."
            )
        )
        self._active = ActiveRequests.of(meter)
        self._active.flush_before_collection(self._duration)
        self._cancellations = meter.create_counter(
            "otel_dist.server.cancellations",
            unit="{request}",
            description="Requests whose work was cancelled: deadline expired on arrival or while handled, "
            "or the caller disconnected.",
        )
        self._cancel_attrs = {
            r: {"otel_dist.cancel.reason": r} for r in ("expired_on_arrival", "deadline", "client_disconnect")
        }
        # Metric attribute dicts are reused per (method, scheme, route, status, error):
        # bounded because every member is low-cardinality.
        self._attr_cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._gc_freeze:
            await self.app(scope, receive, _freeze_after_startup(send))
            return
        if (
            scope["type"] != "http"
            or scope["path"] in self._untraced
            or (self._excluded is not None and self._excluded(scope))
        ):
            await self.app(scope, receive, send)
            return

        traceparent = tracestate = baggage = legacy = deadline_raw = None
        user_agent = host = None
        corr_header = self._correlation_header
        for name, value in scope["headers"]:
            # One pass over the raw headers. W3C: a repeated traceparent is invalid (the
            # trace restarts), repeated tracestate/baggage headers are one list; other
            # duplicated headers keep the first value.
            if name == b"traceparent":
                traceparent = value.decode("latin-1") if traceparent is None else ""
            elif name == b"tracestate":
                tracestate = _combine(tracestate, value)
            elif name == b"baggage":
                baggage = _combine(baggage, value)
            elif name == corr_header:
                legacy = legacy or value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == HEADER_BYTES:
                deadline_raw = deadline_raw or value

        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "_OTHER"  # semconv: unknown methods never become labels
        scheme = scope.get("scheme", "http")
        if self._extract_all:
            parent = extract_from_all_headers(scope["headers"])
        else:
            parent = extract_from_headers(traceparent, tracestate, baggage)
        links = None
        if parent is not None and self._inbound != "trust":
            caller_context = trace.get_current_span(parent).get_span_context()
            if caller_context.is_valid and self._inbound == "link":
                links = [Link(caller_context, _INBOUND_LINK)]
            parent = None  # a new root: our sampler decides, and the caller's baggage stays outside
        url_path = scope["path"][:_MAX_PATH]
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": url_path,
            "url.scheme": scheme,
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        server = scope.get("server")
        if host:
            hostname, _, port = host.rpartition(":") if host[-1:].isdigit() and ":" in host else (host, "", "")
            attributes["server.address"] = hostname[:_MAX_HOST]
            # Not "1²" (str.isdigit accepts superscripts), and a real port: an out-of-range
            # integer cannot be encoded by OTLP (the exporter logs an error per span).
            if port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535:
                attributes["server.port"] = int(port)
        elif server:
            attributes["server.address"] = server[0]
            attributes["server.port"] = server[1]
        client = scope.get("client")
        if client:
            # Behind a trusted proxy uvicorn takes it from X-Forwarded-For: any text, any length.
            attributes["client.address"] = str(client[0])[:_MAX_ADDRESS]
        if user_agent:
            attributes["user_agent.original"] = user_agent[:256]
        if self._capture_request is not None:
            attributes.update(self._capture_request.attributes(scope["headers"]))
        corr = clean_correlation_id(legacy)
        if corr is not None:
            attributes["otel_dist.correlation_id"] = corr

        budget = self._request_timeout
        if deadline_raw is not None and not self._public:
            inbound = parse_deadline(deadline_raw)  # invalid: ignored, this service's own timeout applies
            if inbound is not None:
                attributes["otel_dist.deadline_ms"] = int(inbound * 1000)
                budget = min(budget, inbound)
        app = self.app if budget > 0 else _expired_on_arrival
        cancel_reason = "expired_on_arrival" if budget <= 0 else None

        start = time.perf_counter()
        span = start_span(
            self._tracer, method, context=parent, kind=SpanKind.SERVER, attributes=attributes, links=links
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        corr_token = correlation_id.set(corr)
        span_ctx = span.get_span_context()
        trace_id = format(span_ctx.trace_id, "032x")
        span_hex = format(span_ctx.span_id, "016x")
        response_headers = [
            (b"traceresponse", f"00-{trace_id}-{span_hex}-{span_ctx.trace_flags:02x}".encode()),
            (corr_header, (corr or trace_id).encode()),
        ]
        active = self._active.enter(method, scheme)
        status = 500
        error_type: str | None = None
        started = False
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        request = RequestContext(time.monotonic() + budget, receive, task)
        # A loop timer cancels the task at the deadline (fewer calls than asyncio.timeout): shared by
        # the requests on the own timeout, one of its own for a shorter inbound deadline.
        timer = expiry = None
        if budget == self._request_timeout > 0:
            expiry = self._expiry
            if expiry is None or expiry.loop is not loop:
                expiry = self._expiry = _Expiry(loop)
            expiry.add(request, loop.time() + budget)
        elif budget > 0:
            timer = loop.call_at(loop.time() + budget, request.expire)
        request_token = REQUEST.set(request)

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                if self._capture_response is not None:
                    span.set_attributes(self._capture_response.attributes(message.get("headers", ())))
                message["headers"] = [*message.get("headers", ()), *response_headers]
            elif not message.get("more_body", False):
                request.done = True  # a disconnect or the deadline from now on cancels nothing
            await send(message)

        try:
            try:
                await app(scope, request.app_receive, send_with_headers)
            except asyncio.CancelledError:
                if request.cancelled is None or task is None:
                    raise
                task.uncancel()  # ours: the deadline passed or the caller left; not an error
                cancel_reason = request.cancelled
                if not started and cancel_reason == "deadline":
                    await _answer_deadline_exceeded(send_with_headers)
                elif not started:
                    status = _CLIENT_CLOSED
        except BaseException as exc:
            error_type = type(exc).__qualname__
            span.set_status(Status(StatusCode.ERROR, error_type))
            raise
        finally:
            if expiry is not None:
                expiry.discard(request)
            elif timer is not None:
                timer.cancel()
            request.close()
            REQUEST.reset(request_token)
            duration = time.perf_counter() - start
            template = route_template(scope)
            if error_type is None and status >= 500:
                error_type = str(status)
                span.set_status(Status(StatusCode.ERROR))
            end_attrs: dict[str, Any] = {"http.response.status_code": status}
            if template is not None:
                end_attrs["http.route"] = template
                span.update_name(f"{method} {template}")
            if error_type is not None:
                end_attrs["error.type"] = error_type
            if cancel_reason is not None:
                # Expected when a caller gave up: counted and on the span, never an ERROR log line.
                self._cancellations.add(1, self._cancel_attrs[cancel_reason])
                end_attrs["otel_dist.cancel.reason"] = cancel_reason
            set_clean_attributes(span, end_attrs)
            span.end()
            key = (method, scheme, template, status, error_type)
            metric_attrs = self._attr_cache.get(key)
            if metric_attrs is None:
                metric_attrs = {"http.request.method": method, "url.scheme": scheme, **end_attrs}
                metric_attrs.pop("otel_dist.cancel.reason", None)
                if len(self._attr_cache) < 4096:
                    self._attr_cache[key] = metric_attrs
            # Recorded while the request's span is still current: that is what gives the
            # histogram its trace_id/span_id exemplar.
            self._duration.record(duration, metric_attrs, key)
            otel_context.detach(token)
            self._active.leave(active)
            if self._access_log:
                self._sink.access(
                    30 if status >= 500 and cancel_reason is None else 20,
                    ACCESS_LOGGER,
                    method,
                    url_path,
                    template,
                    status,
                    round(duration * 1000, 3),
                    span=span,
                    ids=trace_ids_text(trace_id, span_hex, span_ctx.trace_flags) if span_ctx.is_valid else None,
                    export=self._export_access == "always"
                    or (
                        self._export_access == "unsampled"
                        and not (self._spans_exported and span_ctx.trace_flags.sampled)
                    ),
                )
            correlation_id.reset(corr_token)
