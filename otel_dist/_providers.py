"""SDK providers for the three signals, built from Settings.

Nothing here retries forever: OTLP exporters get a short timeout and the batch
processors drop (and count) what does not fit in their bounded queues.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
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


def _otlp_exporter(settings: Settings, signal: str, meter_provider: MeterProvider | None, cap_ms: int) -> Any:
    """The OTLP exporter of one signal, configured only from the settings table (the upstream
    exporters would read any parameter we leave out from os.environ).

    `cap_ms`: OTEL_BSP/BLRP/METRIC_EXPORT_TIMEOUT.  The SDK's batch processors do not apply it
    (no way to pass it to export), so it caps the exporter's own timeout.
    """
    target = settings.otlp(signal)
    target = dataclasses.replace(target, timeout_s=min(target.timeout_s, cap_ms / 1000))
    if target.protocol == "grpc":
        from ._grpc import grpc_exporter

        return grpc_exporter(target, metric_preferences(settings), meter_provider)
    from opentelemetry.exporter.otlp.proto.http import Compression

    kwargs: dict[str, Any] = {
        "endpoint": target.endpoint,
        "headers": target.headers,
        "timeout": target.timeout_s,
        "compression": Compression.Gzip if target.compression == "gzip" else Compression.NoCompression,
        "certificate_file": target.certificate or True,  # True: the system CA store, not the environment's
        "client_key_file": target.client_key,
        "client_certificate_file": target.client_certificate,
    }
    if target.certificate:
        kwargs["session"] = _pinned_ca_session()
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**kwargs, **metric_preferences(settings))
    from ._otlp import LeanOTLPLogExporter, LeanOTLPSpanExporter

    lean = LeanOTLPSpanExporter if signal == "traces" else LeanOTLPLogExporter
    return lean(**kwargs, meter_provider=meter_provider)


def _pinned_ca_session() -> Any:
    """A requests session whose CA bundle is the OTLP certificate setting.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override ``Session.verify`` (psf/requests#3829),
    and the upstream exporters set only ``Session.verify``: wherever those variables are set (corporate
    machines, CI images), OTEL_EXPORTER_OTLP_CERTIFICATE would be silently ignored and TLS would fail.
    """
    import requests

    class PinnedCASession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            merged = super().merge_environment_settings(*args, **kwargs)
            merged["verify"] = self.verify
            return merged

    return PinnedCASession()


def metric_preferences(settings: Settings) -> dict[str, Any]:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE as the spec defines its three values."""
    from opentelemetry.sdk.metrics import (
        Counter,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    mode = settings.metrics_temporality
    sums = delta if mode in ("delta", "lowmemory") else cumulative
    return {
        "preferred_temporality": {
            Counter: sums,
            Histogram: sums,
            ObservableCounter: delta if mode == "delta" else cumulative,
            UpDownCounter: cumulative,
            ObservableUpDownCounter: cumulative,
            ObservableGauge: cumulative,
        }
    }


def _lean_drops(processor: Any) -> None:
    from ._otlp import lean_drops  # imported here: _otlp loads the OTLP exporter modules

    lean_drops(processor)


def _batching(prefix: str, settings: Settings, meter_provider: MeterProvider) -> dict[str, Any]:
    """OTEL_BSP_* (spans) or OTEL_BLRP_* (log records)."""
    queue = getattr(settings, f"{prefix}_max_queue_size")
    return {
        "max_queue_size": queue,
        # The SDK refuses a batch larger than the queue; an explicit one is checked in _settings.
        "max_export_batch_size": min(getattr(settings, f"{prefix}_max_export_batch_size"), queue),
        "schedule_delay_millis": getattr(settings, f"{prefix}_schedule_delay_ms"),
        "export_timeout_millis": getattr(settings, f"{prefix}_export_timeout_ms"),
        "meter_provider": meter_provider,
    }


def span_limits(settings: Settings) -> SpanLimits:
    """OTEL_*_LIMIT: the model-specific value, else the general one, else the SDK default."""
    s = settings

    def pick(specific: int | None, general: int | None) -> int | None:
        value = specific if specific is not None else general
        return SpanLimits.UNSET if value is None else value

    return SpanLimits(
        max_attributes=pick(s.span_attribute_count_limit, s.attribute_count_limit),
        max_events=pick(s.span_event_count_limit, None),
        max_links=pick(s.span_link_count_limit, None),
        max_span_attributes=pick(s.span_attribute_count_limit, s.attribute_count_limit),
        max_event_attributes=pick(s.event_attribute_count_limit, s.attribute_count_limit),
        max_link_attributes=pick(s.link_attribute_count_limit, s.attribute_count_limit),
        max_attribute_length=pick(s.span_attribute_value_length_limit, s.attribute_value_length_limit),
        max_span_attribute_length=pick(s.span_attribute_value_length_limit, s.attribute_value_length_limit),
    )


def log_limits(settings: Settings) -> LogRecordLimits:
    s = settings
    count = s.logrecord_attribute_count_limit
    length = s.logrecord_attribute_value_length_limit
    return LogRecordLimits(
        max_attributes=s.attribute_count_limit if s.attribute_count_limit is not None else 128,
        max_attribute_length=s.attribute_value_length_limit,
        max_log_record_attributes=count if count is not None else s.attribute_count_limit,
        max_log_record_attribute_length=length if length is not None else s.attribute_value_length_limit,
    )


def build_tracer_provider(settings: Settings, resource: Resource, meter_provider: MeterProvider) -> TracerProvider:
    # No per-span self-metrics (otel.sdk.span.started/live: 3 metric updates per span,
    # ~1/6 of the server layer's cost); the batch processor's and exporter's
    # (processed, dropped, export failures) stay on `meter_provider`.
    provider = TracerProvider(
        resource=resource,
        sampler=build_sampler(settings),
        span_limits=span_limits(settings),
        meter_provider=NoOpMeterProvider(),
    )
    for name in settings.trace_exporters:
        if name == "otlp":
            exporter: Any = _otlp_exporter(settings, "traces", meter_provider, settings.bsp_export_timeout_ms)
        else:
            exporter = ConsoleSpanExporter()
        span_processor = BatchSpanProcessor(exporter, **_batching("bsp", settings, meter_provider))
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
            readers.append(
                PeriodicExportingMetricReader(
                    _otlp_exporter(settings, "metrics", None, settings.metric_export_timeout_ms),
                    export_interval_millis=settings.metric_export_interval_ms,
                    export_timeout_millis=settings.metric_export_timeout_ms,
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
    filters: dict[str, Any] = {
        "always_on": AlwaysOnExemplarFilter,
        "always_off": AlwaysOffExemplarFilter,
        "trace_based": TraceBasedExemplarFilter,
    }
    exemplar_filter = filters[settings.metrics_exemplar_filter]()
    return MeterProvider(resource=resource, metric_readers=readers, views=views, exemplar_filter=exemplar_filter)


def build_logger_provider(
    settings: Settings, resource: Resource, meter_provider: MeterProvider
) -> LoggerProvider | None:
    if not settings.log_exporters:
        return None
    provider = LoggerProvider(
        resource=resource, log_record_limits=log_limits(settings), meter_provider=NoOpMeterProvider()
    )  # no per-record self-metrics, as for spans
    for name in settings.log_exporters:
        if name == "otlp":
            exporter: Any = _otlp_exporter(settings, "logs", meter_provider, settings.blrp_export_timeout_ms)
        else:
            exporter = ConsoleLogRecordExporter()
        log_processor = BatchLogRecordProcessor(exporter, **_batching("blrp", settings, meter_provider))
        _lean_drops(log_processor)
        provider.add_log_record_processor(log_processor)
    return provider
