"""The lean histogram record (`_lean_histogram`) exports what the SDK's ``Histogram.record`` exports."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider

from otel_dist._lean_histogram import LeanHistogram

OK = {"http.request.method": "GET", "server.address": "orders", "server.port": 8000, "http.response.status_code": 200}
FAILED = {**OK, "http.response.status_code": 503, "error.type": "503"}
VALUES = (0.004, 0.0007, 0.12, 0.004, 3.0, 0.0)


def _points(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name.startswith("otel.sdk."):  # the SDK's self-metrics, when a bootstrap enabled them
                    continue
                for p in metric.data.data_points:
                    out.append(
                        {
                            "name": metric.name,
                            "attributes": dict(p.attributes),
                            "count": p.count,
                            "sum": round(p.sum, 9),
                            "buckets": list(p.bucket_counts),
                            "min_max": (p.min, p.max),
                            "exemplars": sorted(
                                (e.value, e.span_id, e.trace_id, tuple(sorted((e.filtered_attributes or {}).items())))
                                for e in p.exemplars
                            ),
                        }
                    )
    return sorted(out, key=lambda p: sorted(p["attributes"].items()))


def _record_in_span(tracer: Any, name: str, histogram: Any, lean: Any, value: float, attrs: dict[str, Any]) -> None:
    """One record inside its own current span (the exemplar's trace); through `lean` unless it is None."""
    span = tracer.start_span(name)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        if lean is None:
            histogram.record(value, attrs)
        else:
            lean.record(value, attrs, (attrs["http.response.status_code"],))
    finally:
        otel_context.detach(token)
        span.end()


def _record_both(temporality: AggregationTemporality, views: tuple[View, ...] = ()) -> tuple[Any, Any]:
    """The same measurements, inside the same spans, through the SDK and through LeanHistogram."""
    tracer = TracerProvider().get_tracer("t")
    readers = []
    for _ in range(2):
        reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality})
        readers.append(reader)
        provider = MeterProvider(metric_readers=[reader], views=list(views))
        histogram = provider.get_meter("m").create_histogram("http.client.request.duration", unit="s")
        lean = LeanHistogram(histogram) if len(readers) == 2 else None
        for round_ in range(3):
            for i, value in enumerate(VALUES):
                attrs = FAILED if i == 2 else OK
                _record_in_span(tracer, f"call {round_}-{i}", histogram, lean, value, attrs)
            if round_ == 1:
                readers[-1].collect()  # a collection in the middle (delta: aggregations start afresh)
    return readers[0], readers[1]


def _trace_ids_replaced(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exemplars point at different spans in the two runs: compare everything else, and that they exist."""
    for p in points:
        p["exemplars"] = [
            (value, bool(span_id), bool(trace_id), attrs) for value, span_id, trace_id, attrs in p["exemplars"]
        ]
    return points


@pytest.mark.parametrize("temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA])
def test_same_points_and_exemplars_as_the_sdk(temporality: AggregationTemporality) -> None:
    sdk, lean = _record_both(temporality)
    expected = _trace_ids_replaced(_points(sdk))
    assert expected and expected[0]["exemplars"], "the SDK path recorded points with exemplars"
    assert _trace_ids_replaced(_points(lean)) == expected
    ok = next(p for p in expected if p["attributes"] == OK)
    assert ok["count"] == 5 if temporality is AggregationTemporality.DELTA else 15


def test_remembers_the_aggregations_only_where_they_stay() -> None:
    reader = InMemoryMetricReader()
    histogram = MeterProvider(metric_readers=[reader]).get_meter("m").create_histogram("d", unit="s")
    lean = LeanHistogram(histogram)
    lean.record(0.1, OK, "ok")
    assert lean._bound["ok"][1] is not None  # cumulative: the aggregation object lives as long as the provider

    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    histogram = MeterProvider(metric_readers=[delta]).get_meter("m").create_histogram("d", unit="s")
    lean = LeanHistogram(histogram)
    lean.record(0.1, OK, "ok")
    assert lean._bound["ok"][1] is None  # delta: replaced at each collection, so every record takes the SDK's path


def test_view_with_attribute_keys_and_negative_values() -> None:
    views = (View(instrument_name="http.client.request.duration", attribute_keys={"server.address"}),)
    sdk, lean = _record_both(AggregationTemporality.CUMULATIVE, views)
    assert _trace_ids_replaced(_points(lean)) == _trace_ids_replaced(_points(sdk))
    assert [p["attributes"] for p in _points(lean)] == [{"server.address": "orders"}]

    reader = InMemoryMetricReader()
    histogram = MeterProvider(metric_readers=[reader]).get_meter("m").create_histogram("d", unit="s")
    lean_histogram = LeanHistogram(histogram)
    for value in (0.5, -1.0, float("nan"), float("inf"), 0.25):
        lean_histogram.record(value, OK, "ok")
    (point,) = _points(reader)
    assert (point["count"], point["sum"]) == (2, 0.75)  # as the SDK: invalid values dropped


def test_readers_added_or_removed_later() -> None:
    first, later = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[first])
    lean = LeanHistogram(provider.get_meter("m").create_histogram("d", unit="s"))
    lean.record(0.1, OK, "ok")
    provider.add_metric_reader(later)
    lean.record(0.2, OK, "ok")
    lean.record(0.3, OK, "ok")
    assert [p["count"] for p in _points(first)] == [3]
    assert [p["count"] for p in _points(later)] == [2]
    assert len(lean._bound["ok"][2]) == 2  # bound again, to both readers' aggregations
    provider.remove_metric_reader(first)
    lean.record(0.4, OK, "ok")
    lean.record(0.5, OK, "ok")
    assert [p["count"] for p in _points(later)] == [4]


def test_no_op_instrument_is_left_to_itself() -> None:
    from opentelemetry.metrics import NoOpMeterProvider

    lean = LeanHistogram(NoOpMeterProvider().get_meter("m").create_histogram("d"))
    lean.record(0.1, OK, "ok")
    lean.record(0.2, OK, "ok")
    assert lean._bound == {}


def test_batched_histogram_collects_what_the_sdk_collects_with_two_readers() -> None:
    """BatchedHistogram (the server's duration histogram): queued measurements are aggregated when a
    reader collects (from an asynchronous instrument's callback, as the server layer does it) and every
    64 of one attribute set; both readers see the SDK's points, min/max and exemplars (the last sampled
    measurement of each bucket: spans alternate between sampled and not)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from otel_dist._lean_histogram import BatchedHistogram

    tracers = [TracerProvider().get_tracer("t"), TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")]
    runs = []
    for batched in (False, True):
        readers = (InMemoryMetricReader(), InMemoryMetricReader())
        provider = MeterProvider(metric_readers=list(readers))
        meter = provider.get_meter("m")
        histogram = meter.create_histogram("http.server.request.duration", unit="s")
        lean = BatchedHistogram(histogram) if batched else None
        if lean is not None:

            def flush(_options: Any, lean: BatchedHistogram = lean) -> list[Any]:
                lean.flush()
                return []

            meter.create_observable_up_down_counter("flush", callbacks=[flush])
        collected = []
        for i in range(300):
            attrs = FAILED if i % 7 == 3 else OK
            value = VALUES[i % len(VALUES)] + i * 1e-6  # distinct: the exemplar kept is the last one
            _record_in_span(tracers[(i // 3) % 2], f"request {i}", histogram, lean, value, attrs)
            if i in (10, 150):
                collected.append(_trace_ids_replaced(_points(readers[0])))  # one reader in the middle
        collected += [_trace_ids_replaced(_points(readers[0])), _trace_ids_replaced(_points(readers[1]))]
        runs.append(collected)
        if lean is not None:
            assert lean._queues, "the measurements were queued (batched path taken)"
    sdk, batched_run = runs
    assert all(p["exemplars"] for p in sdk[-1]), "the SDK path kept exemplars"
    assert batched_run == sdk
    ok = next(p for p in sdk[-1] if p["attributes"] == OK)
    assert ok["count"] == 300 - len([i for i in range(300) if i % 7 == 3])


def test_batched_histogram_falls_back_where_it_cannot_batch() -> None:
    """Delta temporality (aggregations replaced at each collection) and a view with another aggregation:
    every record is aggregated at once, as LeanHistogram does."""
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    from otel_dist._lean_histogram import BatchedHistogram

    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    lean = BatchedHistogram(MeterProvider(metric_readers=[delta]).get_meter("m").create_histogram("d", unit="s"))
    for value in (0.1, 0.2, 0.3):
        lean.record(value, OK, "ok")
    assert lean._queues == {} and [p["count"] for p in _points(delta)] == [3]

    reader = InMemoryMetricReader()
    view = View(instrument_name="d", aggregation=ExponentialBucketHistogramAggregation())
    lean = BatchedHistogram(MeterProvider(metric_readers=[reader], views=[view]).get_meter("m").create_histogram("d"))
    for value in (0.1, 0.2, 0.3):
        lean.record(value, OK, "ok")
    assert lean._queues == {}
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert metric.data.data_points[0].count == 3
