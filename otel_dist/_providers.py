"""SDK providers for the three signals, built from Settings.

Nothing here retries forever: OTLP exporters get a short timeout and the batch
processors drop (and count) what does not fit in their bounded queues.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from ._settings import Settings

# Semantic-convention advisory buckets for durations in seconds, plus 1 and 2.5 ms
# so that fast internal services do not land in the first bucket.
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def build_sampler(settings: Settings) -> Sampler:
    name, ratio = settings.traces_sampler, settings.traces_sampler_arg
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), TraceIdRatioBased(ratio)
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


def _batch_size(settings: Settings) -> int:
    # The SDK refuses a batch (default 512) larger than the queue: a small
    # OTEL_BSP_MAX_QUEUE_SIZE would otherwise crash start-up without naming it.
    return min(512, settings.bsp_max_queue_size)


def _otlp_kwargs(settings: Settings, signal: str) -> dict[str, Any]:
    return {
        "endpoint": f"{settings.otlp_endpoint}/v1/{signal}",
        "headers": dict(settings.otlp_headers),
        "timeout": settings.otlp_timeout_ms / 1000,
    }


def _lean_drops(processor: Any) -> None:
    from ._otlp import lean_drops  # imported here: _otlp loads the OTLP exporter modules

    lean_drops(processor)


def _batching(settings: Settings, meter_provider: MeterProvider) -> dict[str, Any]:
    """The same bounded queue and schedule for span and log-record batches."""
    return {
        "max_queue_size": settings.bsp_max_queue_size,
        "max_export_batch_size": _batch_size(settings),
        "schedule_delay_millis": settings.bsp_schedule_delay_ms,
        "export_timeout_millis": settings.otlp_timeout_ms,
        "meter_provider": meter_provider,
    }


def _require_endpoint(settings: Settings, variable: str) -> None:
    from ._settings import ConfigError

    if not settings.otlp_endpoint:
        raise ConfigError(f"{variable}=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT; accepted: an http:// or https:// URL")


def build_tracer_provider(settings: Settings, resource: Resource, meter_provider: MeterProvider) -> TracerProvider:
    # No per-span self-metrics (otel.sdk.span.started/live: 3 metric updates per span,
    # ~1/6 of the server layer's cost); the batch processor's and exporter's
    # (processed, dropped, export failures) stay on `meter_provider`.
    provider = TracerProvider(resource=resource, sampler=build_sampler(settings), meter_provider=NoOpMeterProvider())
    for name in settings.trace_exporters:
        if name == "otlp":
            _require_endpoint(settings, "OTEL_TRACES_EXPORTER")
            from ._otlp import LeanOTLPSpanExporter

            exporter: Any = LeanOTLPSpanExporter(**_otlp_kwargs(settings, "traces"), meter_provider=meter_provider)
        else:
            exporter = ConsoleSpanExporter()
        span_processor = BatchSpanProcessor(exporter, **_batching(settings, meter_provider))
        _lean_drops(span_processor)  # collector down: drops counted in bulk, see _otlp
        provider.add_span_processor(span_processor)
    return provider


def build_metric_readers(settings: Settings) -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in settings.metric_exporters:
        if name == "prometheus":
            from ._metrics import prometheus_reader

            readers.append(prometheus_reader())  # registry: see _metrics
        elif name == "otlp":
            _require_endpoint(settings, "OTEL_METRICS_EXPORTER")
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(**_otlp_kwargs(settings, "metrics")),
                    export_interval_millis=settings.metric_export_interval_ms,
                    export_timeout_millis=settings.otlp_timeout_ms,
                )
            )
        else:
            readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(), export_interval_millis=settings.metric_export_interval_ms
                )
            )
    return readers


def build_meter_provider(settings: Settings, resource: Resource, readers: list[MetricReader]) -> MeterProvider:
    views = [
        View(
            instrument_type=Histogram,
            instrument_unit="s",
            aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S),
        )
    ]
    return MeterProvider(resource=resource, metric_readers=readers, views=views)


def build_logger_provider(
    settings: Settings, resource: Resource, meter_provider: MeterProvider
) -> LoggerProvider | None:
    if not settings.log_exporters:
        return None
    provider = LoggerProvider(resource=resource, meter_provider=NoOpMeterProvider())  # as for spans
    for name in settings.log_exporters:
        if name == "otlp":
            _require_endpoint(settings, "OTEL_LOGS_EXPORTER")
            from ._otlp import LeanOTLPLogExporter

            exporter: Any = LeanOTLPLogExporter(**_otlp_kwargs(settings, "logs"), meter_provider=meter_provider)
        else:
            exporter = ConsoleLogRecordExporter()
        log_processor = BatchLogRecordProcessor(exporter, **_batching(settings, meter_provider))
        _lean_drops(log_processor)
        provider.add_log_record_processor(log_processor)
    return provider
