"""``bootstrap()``: the whole start-up as a list of small named steps.

The same code runs under ``opentelemetry-instrument`` (see ``_distro``) and
when an app calls ``bootstrap()`` itself; whichever comes first wins and the
other gets the same handle.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import NoOpTracerProvider

from . import _capture, _export_errors, _instrumentation, _metrics, _propagation, _providers, _resource, _startup
from ._logs import JsonLogHandler, LogSink, route_uvicorn_loggers
from ._settings import Settings, load_settings

__all__ = ["Telemetry", "bootstrap", "current"]

_log = logging.getLogger("otel_dist")
_lock = threading.Lock()
_current: Telemetry | None = None
_current_args: dict[str, Any] = {}


class Telemetry:
    """Handle on what ``bootstrap()`` set up: providers, settings, and shutdown."""

    def __init__(
        self,
        settings: Settings,
        resource: Resource,
        meter_provider: MeterProvider,
        metric_readers: list[MetricReader],
        tracer_provider: TracerProvider,
        logger_provider: LoggerProvider | None,
        log_sink: LogSink,
    ) -> None:
        self.settings = settings
        self.resource = resource
        self.meter_provider = meter_provider
        self.metric_readers = metric_readers
        self.tracer_provider = tracer_provider
        self.logger_provider = logger_provider
        self.log_sink = log_sink
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._is_shut_down = False

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def metrics_text(self, accept: str = "") -> tuple[bytes, str]:
        """Prometheus exposition of this handle's metrics (empty if the reader is off)."""
        for reader in self.metric_readers:
            try:
                registry = _metrics.registry_of(reader)  # type: ignore[arg-type]
            except KeyError:
                continue
            return _metrics.render(registry, accept)
        return b"", "text/plain; version=0.0.4; charset=utf-8"

    def force_flush(self, timeout_s: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout_s or self.settings.shutdown_timeout)
        ok = True
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            if provider is None or not hasattr(provider, "force_flush"):  # OTEL_SDK_DISABLED: no-op providers
                continue
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            ok = bool(provider.force_flush(remaining_ms)) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop all three signals within the shutdown timeout, even with the endpoint down."""
        if self._is_shut_down:
            return
        self._is_shut_down = True
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self.log_sink.otel_logger = None
        budget = self.settings.shutdown_timeout
        # Shut the providers down in parallel threads: each exporter may sit in
        # its own network timeout, and the total must stay within the budget.
        threads = [
            threading.Thread(target=_quiet_shutdown, args=(p, budget), daemon=True)
            for p in (self.tracer_provider, self.logger_provider, self.meter_provider)
            if p is not None
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + budget
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _quiet_shutdown(provider: Any, budget: float) -> None:
    try:
        if isinstance(provider, MeterProvider):
            provider.shutdown(timeout_millis=budget * 1000)
        else:
            provider.shutdown()
    except Exception:  # noqa: BLE001
        _log.debug("provider shutdown failed", exc_info=True)


# ---------------------------------------------------------------- steps


def _set_sdk_environment(settings: Settings) -> None:
    logging.getLogger("opentelemetry").setLevel(settings.otel_log_level.upper())
    # SDK self-metrics: spans/logs processed and dropped (error.type=queue_full),
    # exports failed; they make dropped telemetry visible in /metrics.
    os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    # Stable HTTP and database semantic conventions (http.request.method, url.full,
    # db.system.name, db.query.text, ...) in the contrib instrumentations, matching
    # our server span and database metrics (plus whatever the user opted into).
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = ",".join(settings.semconv_opt_in)
    # The contrib httpx instrumentation reads these itself: hand it the validated values (and
    # clear what an earlier bootstrap in this process set, so nothing leaks between them).
    capturing = settings.capture_client_request_headers or settings.capture_client_response_headers
    for variable, value in (
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", settings.capture_client_request_headers),
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", settings.capture_client_response_headers),
        (
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
            _capture.sanitize_fields(settings) if capturing else (),
        ),
        ("OTEL_PYTHON_HTTPX_EXCLUDED_URLS", settings.client_excluded_urls),
    ):
        if value:
            os.environ[variable] = ",".join(value)
        else:
            os.environ.pop(variable, None)


class Extras:
    """What the test kit plugs in beside the configured exporters (in-memory ones)."""

    def __init__(
        self,
        span_processors: Sequence[SpanProcessor] = (),
        metric_readers: Sequence[MetricReader] = (),
        log_processors: Sequence[LogRecordProcessor] = (),
        log_stream: IO[str] | None = None,
    ) -> None:
        self.span_processors = span_processors
        self.metric_readers = metric_readers
        self.log_processors = log_processors
        self.log_stream = log_stream


def _build_telemetry(settings: Settings, extras: Extras) -> Telemetry:
    resource = _resource.build_resource(settings)
    if settings.sdk_disabled:
        return _disabled_telemetry(settings, resource, extras)
    readers = [*_providers.build_metric_readers(settings), *extras.metric_readers]
    meter_provider = _providers.build_meter_provider(settings, resource, readers)
    tracer_provider = _providers.build_tracer_provider(settings, resource, meter_provider)
    for span_processor in extras.span_processors:
        tracer_provider.add_span_processor(span_processor)
    logger_provider = _providers.build_logger_provider(settings, resource, meter_provider)
    if extras.log_processors:
        logger_provider = logger_provider or LoggerProvider(resource=resource)
        for log_processor in extras.log_processors:
            logger_provider.add_log_record_processor(log_processor)
    sink = LogSink(
        service_name=settings.service_name,
        environment=settings.environment,
        stream=extras.log_stream,
        otel_logger=logger_provider.get_logger("otel_dist")
        if logger_provider and settings.log_records_bridged
        else None,
        json_lines=settings.json_logs,
    )
    return Telemetry(settings, resource, meter_provider, readers, tracer_provider, logger_provider, sink)


def _disabled_telemetry(settings: Settings, resource: Resource, extras: Extras) -> Telemetry:
    """OTEL_SDK_DISABLED=true: no-op providers (nothing recorded, nothing exported, /metrics empty).
    otel-dist's own JSON lines on stdout stay, without trace ids; so do auth and the app."""
    sink = LogSink(
        service_name=settings.service_name,
        environment=settings.environment,
        stream=extras.log_stream,
        otel_logger=None,
        json_lines=settings.json_logs,
    )
    no_tracing: Any = NoOpTracerProvider()
    no_metrics: Any = NoOpMeterProvider()
    return Telemetry(settings, resource, no_metrics, [], no_tracing, None, sink)


def _set_global_providers(tel: Telemetry) -> None:
    if tel.settings.sdk_disabled:
        return  # the API's no-op providers stay
    trace.set_tracer_provider(tel.tracer_provider)
    metrics.set_meter_provider(tel.meter_provider)
    if tel.logger_provider is not None:
        set_logger_provider(tel.logger_provider)


def _install_propagators(tel: Telemetry) -> None:
    _propagation.install_propagator(tel.settings)


def _route_stdlib_logging(tel: Telemetry) -> None:
    """Root logger -> JSON lines (+ OTel logs); uvicorn's own loggers too."""
    handler = JsonLogHandler(tel.log_sink)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, JsonLogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(tel.settings.log_level)
    tel._handlers.append((root, handler))
    route_uvicorn_loggers()
    # httpx's per-request INFO line repeats what the client span records.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _report_export_failures(tel: Telemetry) -> None:
    """A failing OTLP export: once per signal with its likely cause, then a count a minute."""
    s = tel.settings  # each signal named by its own endpoint variable when set, else by the generic one
    signals = ("traces", "metrics", "logs")
    _export_errors.install({signal: getattr(s, f"otlp_{signal}_endpoint") or s.otlp_endpoint for signal in signals})


def _instrument_libraries(tel: Telemetry) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS and OTEL_SDK_DISABLED switch these off (sqlalchemy: see _db)."""
    s = tel.settings
    if not s.sdk_disabled and "httpx" not in s.disabled_instrumentations:
        _instrumentation.instrument_httpx(tel)
    _instrumentation.instrument_fastapi(tel)  # always: it also installs the auth layers
    if s.server_instrumentation == "contrib" and not s.sdk_disabled and "fastapi" not in s.disabled_instrumentations:
        _instrumentation.instrument_fastapi_contrib()


def _register_exit_and_fork(tel: Telemetry) -> None:
    atexit.register(tel.shutdown)
    _flush_on_sigterm()
    pid = os.getpid()

    def after_fork() -> None:
        if os.getpid() != pid:
            _log.warning(
                "otel-dist was set up before this process forked; workers share service.instance.id. "
                "Call bootstrap() in each worker (gunicorn: post_fork hook, or preload_app=False)."
            )

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork)


_previous_sigterm: Any = None


def _on_sigterm(signum: int, frame: Any) -> None:
    tel = _current
    if tel is not None:
        tel.shutdown()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _flush_on_sigterm() -> None:
    """Flush before SIGTERM ends the process.

    uvicorn drains in-flight requests on SIGTERM, then re-raises the signal with
    the handler it found at startup; under the default handler the process dies
    without running ``atexit``, and every span and log still queued is lost.
    This handler (installed once, main thread only) flushes the current handle,
    then hands the signal on to whatever handler was there before.
    """
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is _on_sigterm or previous == signal.SIG_IGN:
        return
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)


def _log_configuration(tel: Telemetry) -> None:
    s = tel.settings
    _log.info(
        "otel-dist configured",
        extra={
            "otel_dist_fields": {
                "service.instance.id": tel.resource.attributes.get("service.instance.id"),
                "process.pid": os.getpid(),
                "config": json.loads(json.dumps(s.redacted(), default=str)),
                "traces": list(s.trace_exporters) or ["none"],
                "metrics": list(s.metric_exporters) or ["none"],
                "logs": ["json-stdout", *s.log_exporters],
            }
        },
    )


# After settings are loaded and providers built, in this order:
SETUP_STEPS = (
    _set_global_providers,
    _install_propagators,
    _route_stdlib_logging,
    _report_export_failures,
    _instrument_libraries,
    _register_exit_and_fork,
    _log_configuration,
)


@_startup.worker_exit
def bootstrap(**overrides: Any) -> Telemetry:
    """Set up traces, metrics and logs for this process; idempotent.

    Keyword overrides use the field names of :class:`Settings`
    (``service_name="orders"``) and win over the environment.
    """
    return _bootstrap(overrides, Extras())


def _bootstrap(overrides: dict[str, Any], extras: Extras, env: Mapping[str, str] | None = None) -> Telemetry:
    global _current, _current_args
    with _lock:
        if _current is not None:
            if overrides and overrides != _current_args:
                warnings.warn(
                    f"otel_dist.bootstrap() already ran with {sorted(_current_args)}; "
                    f"ignoring different arguments {sorted(overrides)}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return _current
        settings = load_settings(env, **overrides)
        _set_sdk_environment(settings)
        tel = _build_telemetry(settings, extras)
        for step in SETUP_STEPS:
            step(tel)
        _current, _current_args = tel, dict(overrides)
        return tel


def current() -> Telemetry | None:
    """The handle from the first ``bootstrap()``, or None."""
    return _current


def _forget() -> None:
    """Drop the handle so the next bootstrap starts afresh (test kit only)."""
    global _current, _current_args
    with _lock:
        if _current is not None:
            _current.shutdown()
            atexit.unregister(_current.shutdown)
        _current, _current_args = None, {}
