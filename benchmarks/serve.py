"""Run the benchmark app under uvicorn (1 worker) in one scenario.

    python -m benchmarks.serve plain --port 8001
    python -m benchmarks.serve otel-dist --port 8001      # configured by the OTEL_* / SERVICE_* env
    opentelemetry-instrument python -m benchmarks.serve upstream --port 8001   # in .venv-upstream
    python -m benchmarks.serve native --port 8001         # FastAPI's own telemetry (native-noops: no op spans)
    .venv-logfire/bin/python -m benchmarks.serve logfire --port 8001   # Pydantic Logfire, OTLP to OTEL_* endpoint

The harness (``benchmarks.throughput``) starts these pinned to one core.  With
``BENCH_PROFILE=file`` the event loop's thread runs under cProfile (stats dumped at exit).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn

from benchmarks.app import build_app


def _plain() -> tuple[Any, dict[str, Any]]:
    return build_app(), {"log_config": None, "access_log": False}


def _otel_dist() -> tuple[Any, dict[str, Any]]:
    import otel_dist

    otel_dist.bootstrap()
    return otel_dist.instrument_app(build_app()), {"log_config": None, "access_log": False}


def _upstream() -> tuple[Any, dict[str, Any]]:
    # The app was instrumented by `opentelemetry-instrument` (FastAPIInstrumentor patches
    # FastAPI before this module runs).  uvicorn's default access line on stdout is the
    # per-request log line; like otel-dist's default, it is not also exported over OTLP
    # (the server span carries its fields) unless BENCH_UPSTREAM_EXPORT_ACCESS=1.
    return build_app(), {"log_config": uvicorn.config.LOGGING_CONFIG, "access_log": True}


def _native(operation_spans: bool) -> tuple[Any, dict[str, Any]]:
    """FastAPI's own telemetry, the SDK exporting traces, metrics and logs by OTLP/HTTP (OTEL_* env)."""
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(logger_provider)
    app = build_app(telemetry_config={"operation_spans": operation_spans})
    return app, {"log_config": None, "access_log": False}


def _logfire() -> tuple[Any, dict[str, Any]]:
    """Pydantic Logfire as its docs set it up for another OTLP backend: ``configure(send_to_logfire=False)``
    with OTEL_EXPORTER_OTLP_ENDPOINT (traces, metrics, logs over OTLP/HTTP), ``instrument_fastapi``;
    its other defaults kept (console output of each span on stdout, scrubbing).  FastAPI's native
    telemetry is off (Logfire's contrib middleware would switch it off anyway)."""
    import logfire

    logfire.configure(send_to_logfire=False, service_name=os.environ.get("OTEL_SERVICE_NAME"))
    app = build_app(native_telemetry=False)
    logfire.instrument_fastapi(app)
    return app, {"log_config": None, "access_log": False}


SCENARIOS = {
    "plain": _plain,
    "otel-dist": _otel_dist,
    "upstream": _upstream,
    "native": lambda: _native(True),
    "native-noops": lambda: _native(False),
    "logfire": _logfire,
}


def _gc_experiments(server: Any) -> None:
    """Harness-only switches: BENCH_GC_STATS=1 prints the cyclic GC's time at shutdown (stderr);
    BENCH_GC_FREEZE=1 calls gc.freeze() once the app has started (what a service could do at start-up)."""
    import gc
    import sys
    import time

    if os.environ.get("BENCH_GC_FREEZE") == "1":
        original_startup = server.startup

        async def startup(*args: Any, **kwargs: Any) -> None:
            await original_startup(*args, **kwargs)
            gc.collect()
            gc.freeze()

        server.startup = startup
    if os.environ.get("BENCH_GC_STATS") != "1":
        return
    spent = [0.0, 0.0]
    counts = [0, 0, 0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            spent[1] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - spent[1]
            counts[info["generation"]] += 1

    gc.callbacks.append(callback)
    original_shutdown = server.shutdown

    async def shutdown(*args: Any, **kwargs: Any) -> None:
        print(f"gc: {spent[0]:.3f} s in {counts} collections", file=sys.stderr, flush=True)
        await original_shutdown(*args, **kwargs)

    server.shutdown = shutdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app, options = SCENARIOS[args.scenario]()
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, workers=1, lifespan="on", **options)
    if args.scenario == "upstream" and os.environ.get("BENCH_UPSTREAM_EXPORT_ACCESS") == "1":
        # uvicorn's loggers do not propagate to the root logger, where
        # OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED put the OTel handler: this
        # also sends every access line as an OTLP log record.
        access = logging.getLogger("uvicorn.access")
        for handler in logging.getLogger().handlers:
            if handler not in access.handlers:
                access.addHandler(handler)
    server = uvicorn.Server(config)
    _gc_experiments(server)
    profile_to = os.environ.get("BENCH_PROFILE")
    if not profile_to:
        server.run()
        return
    # Profile evidence for RESULTS.md: the event loop thread's profile, dumped at shutdown.
    import cProfile

    profiler = cProfile.Profile()
    original_shutdown = server.shutdown

    async def shutdown(*args: Any, **kwargs: Any) -> None:
        # Dump here: uvicorn re-raises SIGTERM after shutting down, so no `finally` would run.
        await original_shutdown(*args, **kwargs)
        profiler.disable()
        profiler.dump_stats(profile_to)

    server.shutdown = shutdown  # type: ignore[method-assign]
    profiler.enable()
    server.run()


if __name__ == "__main__":
    main()
