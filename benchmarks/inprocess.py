"""In-process cost per request: the ASGI app driven directly, no network, no server.

Every variant is an ASGI app in the same process; each round runs every
variant once (order rotated per round), ``N`` requests each, and charges it
the process CPU time of those requests plus a flush of its batch processors,
so the background export threads' work (OTLP protobuf encoding) is counted
too.  Figures are medians over rounds; the added cost of a variant is the
median of its per-round difference to ``plain`` (paired, so a noisy round
moves both).

Components are attributed by switching one off at a time from ``full``:
span = full - (sampler always_off), metrics = full - (no-op meter), and so on.

    python -m benchmarks.inprocess [--rounds 7] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport
from opentelemetry.metrics import NoOpMeter

from benchmarks import auth_support
from benchmarks.app import TARGET, build_app
from benchmarks.calls import counting_calls

ASGIApp = Callable[..., Any]


# --- production exporters with the network cut out ---


class _Answer200(BaseHTTPResult):
    def content(self) -> bytes:
        return b""

    def headers(self) -> dict[str, str]:
        return {}


class NullTransport(BaseHTTPTransport):
    """Answers 200 to every export without I/O: the exporter still encodes and counts everything."""

    def request(self, method: str, url: str, **kwargs: Any) -> BaseHTTPResult:
        return _Answer200(status_code=200, reason="OK")

    def close(self) -> None:
        pass

    def is_connection_error(self, exception: Exception | None) -> bool:
        return False


def _exporters(tel: Any) -> list[Any]:
    """The exporters behind the batch processors otel-dist configured."""
    out = []
    processors = list(tel.tracer_provider._active_span_processor._span_processors)
    if tel.logger_provider is not None:
        processors += list(tel.logger_provider._multi_log_record_processor._log_record_processors)
    for processor in processors:
        batch = getattr(processor, "_batch_processor", None)
        if batch is not None:
            out.append(batch._exporter)
    return out


def cut_network(tel: Any) -> None:
    """Swap the OTLP exporters' HTTP transport for :class:`NullTransport` (harness only: private API)."""
    exporters = _exporters(tel)
    if not exporters:
        raise RuntimeError("no batch exporters found: did otel-dist's provider wiring change?")
    for reader in tel.metric_readers:  # the OTLP metric push: timer-driven, but keep it off the network too
        exporter = getattr(reader, "_exporter", None)
        if getattr(exporter, "_client", None) is not None:
            exporters.append(exporter)
    for exporter in exporters:
        exporter._client._transport = NullTransport()


_CLOSED_PORT = "http://127.0.0.1:9"  # never reached: the transport is replaced
_SDK_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"


def use_process_meter_provider() -> None:
    """A global SDK MeterProvider, as bootstrap() sets one: the SDK's self-metrics record into it.

    Two readers, as in production with a collector (Prometheus + OTLP push).
    """
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_dist._metrics import prometheus_reader

    if type(metrics.get_meter_provider()).__name__ != "MeterProvider":
        metrics.set_meter_provider(MeterProvider(metric_readers=[prometheus_reader(), InMemoryMetricReader()]))


# --- variants ---


@dataclass
class Variant:
    name: str
    app: ASGIApp
    flush: Callable[[], object] = lambda: None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    doc: str = ""


def plain_variant() -> Variant:
    app = build_app(native_telemetry=False)
    return Variant("plain", app, doc="FastAPI, no telemetry")


def otel_dist_variant(
    name: str,
    *,
    auth: bool = True,
    span: bool = True,
    export: bool = True,
    metrics: bool = True,
    access_log: bool = True,
    sdk_metrics: bool = True,
    doc: str = "",
    traceparent: bool = False,
) -> Variant:
    """otel-dist exactly as bootstrap() + instrument_app() build it, with a collector configured.

    Built with otel-dist's own provider code and settings (endpoint set: OTLP
    traces, logs and metrics + Prometheus), the exporters' network cut out;
    not through the process globals, so several configurations live side by side.
    """
    from otel_dist import _bootstrap
    from otel_dist._server import ServerTelemetry
    from otel_dist._settings import load_settings

    use_process_meter_provider()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": _CLOSED_PORT, **(auth_support.server_env() if auth else {})}
    if "OTEL_DIST_ACCESS_LOG_EXPORT" in os.environ:  # to compare the access-record modes
        env["OTEL_DIST_ACCESS_LOG_EXPORT"] = os.environ["OTEL_DIST_ACCESS_LOG_EXPORT"]
    overrides: dict[str, Any] = {
        "service_name": auth_support.SERVICE,
        "access_log": access_log,
        "traces_sampler": "parentbased_always_on" if span else "always_off",
    }
    if not export:
        overrides.update(traces_exporter="none", logs_exporter="none")
    settings = load_settings(env, **overrides)
    _bootstrap._set_sdk_environment(settings)
    previous = os.environ.get(_SDK_METRICS)
    os.environ[_SDK_METRICS] = "true" if sdk_metrics else "false"
    try:
        devnull = open(os.devnull, "w", encoding="utf-8")  # lives as long as the variant
        tel = _bootstrap._build_telemetry(settings, _bootstrap.Extras(log_stream=devnull))
        if export:
            cut_network(tel)
        app = build_app(native_telemetry=False)
        stack = app.build_middleware_stack()
        for factory in reversed(auth_support.middleware_for(app, tel) if auth else []):
            stack = factory(stack)
        meter: Any = tel.meter("otel_dist.server") if metrics else NoOpMeter("off")
        app.middleware_stack = ServerTelemetry(
            stack, settings=settings, tracer=tel.tracer("otel_dist.server"), meter=meter, sink=tel.log_sink
        )
    finally:
        if previous is None:
            os.environ.pop(_SDK_METRICS, None)
        else:
            os.environ[_SDK_METRICS] = previous

    def flush() -> None:
        tel.tracer_provider.force_flush()
        if tel.logger_provider is not None:
            tel.logger_provider.force_flush()

    headers = auth_support.client_headers() if auth else []
    if traceparent:
        headers = [*headers, (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    variant = Variant(name, app, flush, headers, doc)
    variant.telemetry = tel  # type: ignore[attr-defined]
    return variant


def upstream_variant() -> Variant | None:
    """The contrib FastAPIInstrumentor (what ``opentelemetry-instrument`` loads), same providers/exporters."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_dist._metrics import prometheus_reader

    tracer_provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=_CLOSED_PORT + "/v1/traces", _transport=NullTransport())
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[prometheus_reader()])
    app = build_app(native_telemetry=False)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Variant(
        "upstream contrib",
        app,
        lambda: tracer_provider.force_flush(),
        doc="contrib FastAPIInstrumentor (receive/send spans on), upstream OTLP span export, Prometheus; "
        "no log line, no auth",
    )


def native_variant(operation_spans: bool) -> Variant:
    """FastAPI's own telemetry, as ``benchmarks.serve native[-noops]`` runs it: the SDK with upstream
    OTLP/HTTP exporters for traces, metrics and logs (network cut out), batch processors, no Prometheus."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=_CLOSED_PORT + "/v1/traces", _transport=NullTransport()))
    )
    metric_exporter = OTLPMetricExporter(endpoint=_CLOSED_PORT + "/v1/metrics", _transport=NullTransport())
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(metric_exporter)])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=_CLOSED_PORT + "/v1/logs", _transport=NullTransport()))
    )
    app = build_app(
        telemetry_config={
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
            "logger_provider": logger_provider,
            "operation_spans": operation_spans,
        }
    )

    def flush() -> None:
        tracer_provider.force_flush()
        logger_provider.force_flush()

    name = "FastAPI native" + ("" if operation_spans else ", operation spans off")
    return Variant(name, app, flush, doc="FastAPI's own telemetry, SDK + OTLP exporters (the throughput scenario)")


def build_variants(*, components: bool = True, upstream: bool = True) -> list[Variant]:
    has_auth = auth_support.available()
    variants = [plain_variant(), otel_dist_variant("full", auth=has_auth, doc="everything on (the full scenario)")]
    if components:
        if has_auth:
            variants.append(otel_dist_variant("full - auth", auth=False, doc="service-token check off"))
        variants += [
            otel_dist_variant("full - span", auth=has_auth, span=False, doc="sampler always_off"),
            otel_dist_variant("full - export", auth=has_auth, export=False, doc="spans/log records not exported"),
            otel_dist_variant("full - metrics", auth=has_auth, metrics=False, doc="no-op meter"),
            otel_dist_variant(
                "full - SDK self-metrics", auth=has_auth, sdk_metrics=False, doc="OTEL_PYTHON_SDK_INTERNAL_METRICS off"
            ),
            otel_dist_variant("full - access log", auth=has_auth, access_log=False, doc="no access line"),
            otel_dist_variant(
                "full + traceparent", auth=has_auth, traceparent=True, doc="inbound W3C parent to extract"
            ),
        ]
    variants.append(native_variant(operation_spans=False))
    if upstream:
        up = upstream_variant()
        if up is not None:
            variants.append(up)
    return variants


# --- driving ---


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": TARGET,
        "raw_path": TARGET.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk/4.2.0"), (b"accept", b"*/*"), *headers],
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def drive(variant: Variant, n: int) -> int:
    """Send `n` requests through the variant's app; returns the last status."""
    sink = _Sink()
    app = variant.app
    template = _scope(variant.headers)
    for _ in range(n):
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        await app(scope, _receive, sink)
    return sink.status


def timed_round(loop: asyncio.AbstractEventLoop, variant: Variant, n: int) -> float:
    """CPU µs per request for one round (all threads: includes batch export)."""
    gc.collect()
    start = time.process_time()
    loop.run_until_complete(drive(variant, n))
    variant.flush()
    return (time.process_time() - start) / n * 1e6


def calls_per_request(variant: Variant, n: int = 200, warmup: int = 300) -> float:
    """Python and C function calls per request on the request path (the event loop's thread).

    Deterministic on any machine (for given library versions), so it makes a
    CI guard that cannot flake; a regression that adds work (a route scan, an
    extra span, attribute re-validation) adds calls.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(drive(variant, warmup))
        variant.flush()
        with counting_calls() as counted:
            loop.run_until_complete(drive(variant, n))
        return counted[0] / n
    finally:
        loop.close()


def gc_us_per_request(variant: Variant, n: int = 3000) -> tuple[float, list[int]]:
    """Time the cyclic garbage collector takes per request, and collections per generation.

    Plain FastAPI frees what it allocates (no collection at all); telemetry queued for
    export survives long enough to trigger collections, and a full one walks every
    object the process holds.
    """
    loop = asyncio.new_event_loop()
    spent = 0.0
    counts = [0, 0, 0]
    started = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal spent, started
        if phase == "start":
            started = time.perf_counter()
        else:
            spent += time.perf_counter() - started
            counts[info["generation"]] += 1

    try:
        loop.run_until_complete(drive(variant, 500))
        variant.flush()
        gc.collect()
        gc.callbacks.append(callback)
        try:
            loop.run_until_complete(drive(variant, n))
            variant.flush()
        finally:
            gc.callbacks.remove(callback)
    finally:
        loop.close()
    return spent / n * 1e6, counts


@dataclass
class Result:
    name: str
    doc: str
    samples: list[float]
    added: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def added_median(self) -> float:
        return statistics.median(self.added) if self.added else 0.0


def measure(variants: list[Variant], *, rounds: int, requests: int, warmup: int = 300) -> list[Result]:
    loop = asyncio.new_event_loop()
    try:
        for variant in variants:
            status = loop.run_until_complete(drive(variant, warmup))
            if status != 200:
                raise RuntimeError(f"{variant.name}: status {status}")
            variant.flush()
        samples: dict[str, list[float]] = {v.name: [] for v in variants}
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                samples[variant.name].append(timed_round(loop, variant, requests))
    finally:
        loop.close()
    base = samples[variants[0].name]
    return [
        Result(v.name, v.doc, samples[v.name], [s - b for s, b in zip(samples[v.name], base, strict=True)])
        for v in variants
    ]


def attribution(results: list[Result]) -> dict[str, float]:
    """µs per request of each component: full minus the variant without it."""
    by = {r.name: r for r in results}
    full = by.get("full")
    out: dict[str, float] = {}
    if full is None:
        return out
    pairs = {
        "service-token check": "full - auth",
        "span (create, attributes, end)": "full - span",
        "span + log export (OTLP encoding)": "full - export",
        "HTTP metrics (2 instruments)": "full - metrics",
        "access line (JSON; OTel record only if unsampled)": "full - access log",
        "SDK self-metrics (span.started/live, log.created)": "full - SDK self-metrics",
    }
    for label, other in pairs.items():
        if other in by:
            diffs = [f - o for f, o in zip(full.samples, by[other].samples, strict=True)]
            out[label] = statistics.median(diffs)
    if "full + traceparent" in by:
        diffs = [t - f for t, f in zip(by["full + traceparent"].samples, full.samples, strict=True)]
        out["inbound traceparent extraction"] = statistics.median(diffs)
    out["route lookup (scope['route'], no scan)"] = route_lookup_us()
    return out


def route_lookup_us(n: int = 100_000) -> float:
    """Cost of finding the route template: our layer reads the route the router already matched."""
    from otel_dist._server import route_template

    app = build_app(native_telemetry=False)
    route = next(r for r in app.router.routes if getattr(r, "path", "") == "/hello/{name}")
    scope = {"route": route, "root_path": ""}
    start = time.perf_counter()
    for _ in range(n):
        route_template(scope)
    return (time.perf_counter() - start) / n * 1e6


def report(results: list[Result], parts: dict[str, float]) -> str:
    base = results[0].median
    lines = [
        "| variant | µs/request (median) | added vs plain (paired median) | x plain | what |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.median:.1f} | {r.added_median:+.1f} | {r.median / base:.2f} | {r.doc} |")
    if parts:
        lines += ["", "| component (in `full`) | µs/request |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in parts.items()]
    return "\n".join(lines)


def run(rounds: int, requests: int, *, components: bool = True, upstream: bool = True) -> dict[str, Any]:
    variants = build_variants(components=components, upstream=upstream)
    results = measure(variants, rounds=rounds, requests=requests)
    parts = attribution(results)
    gc_costs = {v.name: gc_us_per_request(v) for v in variants if v.name in ("plain", "full")}
    return {
        "gc": {name: {"us_per_request": us, "collections": counts} for name, (us, counts) in gc_costs.items()},
        "results": [
            {"name": r.name, "doc": r.doc, "median_us": r.median, "added_us": r.added_median, "samples": r.samples}
            for r in results
        ],
        "components": parts,
        "auth": auth_support.available(),
        "table": report(results, parts),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="in-process µs per request, per component")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-components", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--calls", action="store_true", help="only count function calls per request")
    args = parser.parse_args(argv)
    if args.calls:
        for variant in build_variants(components=not args.no_components):
            print(f"{variant.name:28s} {calls_per_request(variant):8.1f} calls/request")
        return
    out = run(args.rounds, args.requests, components=not args.no_components)
    print(out["table"])
    for name, figures in out["gc"].items():
        print(f"cyclic GC, {name}: {figures['us_per_request']:.1f} µs/request, collections {figures['collections']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
