"""A full export queue (collector down) drops like upstream, counted in bulk."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_dist._otlp import lean_drops


class BlockedExporter(SpanExporter):
    """An exporter stuck in its network timeout until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported: list[str] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.exported += [s.name for s in spans]
        return SpanExportResult.SUCCESS


def _dropped(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    total = 0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "otel.sdk.processor.span.processed":
                    for point in metric.data.data_points:
                        if point.attributes.get("error.type") == "queue_full":
                            total += int(point.value)
    return total


@pytest.mark.parametrize("lean", [False, True], ids=["upstream", "lean"])
def test_drops_are_counted_and_the_newest_spans_kept(
    lean: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = BlockedExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=20, max_export_batch_size=10, meter_provider=meters)
    if lean:
        lean_drops(processor)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    caplog.set_level(logging.WARNING)
    for duplicate_filter in logging.getLogger("opentelemetry.sdk._shared_internal").filters:
        duplicate_filter.last_log = None  # type: ignore[attr-defined]  # the other parameter's warning
    # First one batch, and wait until the worker is stuck exporting it: from then on nothing
    # pops the queue while spans arrive (upstream's full-queue check races with a concurrent
    # pop and can count one drop too many, which is not what this test is about).
    for i in range(10):
        tracer.start_span(f"s{i}").end()
    assert exporter.entered.wait(5)
    for i in range(10, 200):
        tracer.start_span(f"s{i}").end()
    exporter.release.set()
    processor.force_flush()
    provider.shutdown()
    # What was queued when the collector came back: the newest spans, as upstream keeps them.
    assert exporter.exported[-20:] == [f"s{i}" for i in range(180, 200)]
    assert exporter.exported[:10] == [f"s{i}" for i in range(10)]  # the batch in flight
    assert _dropped(reader) == 200 - len(exporter.exported) == 170
    assert sum("Queue full" in r.getMessage() for r in caplog.records) == 1
