"""The lean span start (`_lean_span`) gives processors and exporters what the SDK's start_span gives."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from otel_dist._lean_span import LeanSpan, set_clean_attributes, start_span

ATTRS = {"http.request.method": "GET", "url.path": "/orders/7", "server.port": 8000, "ok": True, "ratio": 0.5}


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _comparable(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "links": [(link.context.span_id, dict(link.attributes or {})) for link in span.links],
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "parent": span.parent.span_id if span.parent else None,
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "resource": dict(span.resource.attributes),
        "sampled": span.context.trace_flags.sampled,
    }


def _use(span: trace.Span) -> None:
    """What a handler and the server layer do with the request's span."""
    span.set_attribute("app.user", "u-1")
    span.add_event("cache miss", {"key": "k"})
    span.update_name("GET /orders/{order_id}")
    set_clean_attributes(span, {"http.response.status_code": 500, "http.route": "/orders/{order_id}"})
    span.set_status(StatusCode.ERROR)
    span.end()


def test_same_exported_span_as_the_sdk_start() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("otel_dist.server")
    parent = tracer.start_span("caller")
    context = trace.set_span_in_context(parent)
    lean = start_span(tracer, "GET", context=context, kind=SpanKind.SERVER, attributes=dict(ATTRS))
    sdk = tracer.start_span("GET", context=context, kind=SpanKind.SERVER, attributes=dict(ATTRS))
    assert type(lean) is LeanSpan
    _use(lean)
    _use(sdk)
    got_lean, got_sdk = exporter.get_finished_spans()
    assert _comparable(got_lean) == _comparable(got_sdk)
    assert got_lean.attributes["app.user"] == "u-1"
    assert got_lean.attributes["http.response.status_code"] == 500
    assert got_lean.context.trace_id == parent.get_span_context().trace_id
    assert got_lean.status.status_code is StatusCode.ERROR


def test_ended_span_is_frozen() -> None:
    provider, exporter = _provider()
    span = start_span(provider.get_tracer("t"), "GET", context=None, kind=SpanKind.SERVER, attributes=dict(ATTRS))
    span.end()
    span.set_attribute("late", 1)
    set_clean_attributes(span, {"later": 2})
    span.add_event("late")
    span.update_name("renamed")
    (exported,) = exporter.get_finished_spans()
    assert exported.name == "GET"
    assert "late" not in exported.attributes and "later" not in exported.attributes
    assert exported.events == ()


@pytest.mark.parametrize(
    ("limits", "attributes"),
    [
        (SpanLimits(max_span_attribute_length=4), dict(ATTRS)),  # values to truncate
        (SpanLimits(max_span_attributes=2), dict(ATTRS)),  # attributes to drop
        (SpanLimits(), {**ATTRS, "http.request.header.accept": ["a", "b"]}),  # a list: becomes a tuple
    ],
)
def test_sdk_validation_applies_when_values_need_it(limits: SpanLimits, attributes: dict[str, Any]) -> None:
    provider, exporter = _provider(span_limits=limits)
    tracer = provider.get_tracer("t")
    start_span(tracer, "GET", context=None, kind=SpanKind.SERVER, attributes=dict(attributes)).end()
    tracer.start_span("GET", kind=SpanKind.SERVER, attributes=dict(attributes)).end()
    lean, sdk = exporter.get_finished_spans()
    assert _comparable(lean) == _comparable(sdk)


def test_links_and_unsampled() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    caller = tracer.start_span("caller").get_span_context()
    start_span(
        tracer, "GET", context=None, kind=SpanKind.SERVER, attributes={}, links=[Link(caller, {"why": "x"})]
    ).end()
    (linked,) = exporter.get_finished_spans()
    assert [(link.context.span_id, dict(link.attributes or {})) for link in linked.links] == [
        (caller.span_id, {"why": "x"})
    ]

    off, off_exporter = _provider(sampler=ParentBased(ALWAYS_OFF))
    span = start_span(off.get_tracer("t"), "GET", context=None, kind=SpanKind.SERVER, attributes=dict(ATTRS))
    assert not span.is_recording() and span.get_span_context().is_valid
    span.end()
    assert off_exporter.get_finished_spans() == ()


def test_span_self_metrics_when_the_tracer_has_a_real_meter(monkeypatch: pytest.MonkeyPatch) -> None:
    """otel-dist's providers switch them off (no-op meter: nothing is allocated per span); a user's provider
    with OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED and a real meter gets the SDK's counts from lean spans too."""
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_dist._lean_span import _no_end_metrics

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    provider, _ = _provider(meter_provider=MeterProvider(metric_readers=[reader]))
    tracer = provider.get_tracer("t")
    spans = [start_span(tracer, "GET", context=None, kind=SpanKind.CLIENT, attributes=dict(ATTRS)) for _ in range(3)]
    spans[0].end()

    def value(name: str) -> int:
        data = reader.get_metrics_data()
        assert data is not None
        metrics = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
        return sum(p.value for m in metrics if m.name == name for p in m.data.data_points)

    assert (value("otel.sdk.span.started"), value("otel.sdk.span.live")) == (3, 2)

    quiet, _ = _provider(meter_provider=NoOpMeterProvider())
    span = start_span(quiet.get_tracer("t"), "GET", context=None, kind=SpanKind.CLIENT, attributes=dict(ATTRS))
    assert span._record_end_metrics is _no_end_metrics  # type: ignore[attr-defined]


def _parents() -> list[trace.Span | None]:
    """No parent; remote parents sampled (with a trace state) and not; local parents sampled and not."""
    state = TraceState([("vendor", "v1")])

    def remote(sampled: bool) -> trace.Span:
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        return NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags, trace_state=state))

    def local(sampled: bool) -> trace.Span:
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        return NonRecordingSpan(SpanContext(0xABC, 0x123, is_remote=False, trace_flags=flags, trace_state=state))

    return [None, remote(True), remote(False), local(True), local(False)]


@pytest.mark.parametrize(
    "sampler",
    [
        ParentBased(ALWAYS_ON),  # the default: answered without asking the sampler for every span
        ParentBased(ALWAYS_OFF),
        ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON, local_parent_sampled=ALWAYS_OFF),
        ALWAYS_ON,
        ALWAYS_OFF,
        ParentBased(TraceIdRatioBased(0.5)),  # asked for every span
        TraceIdRatioBased(0.5),
    ],
)
def test_same_sampling_decision_and_trace_state_as_the_sdk(sampler: Sampler) -> None:
    provider, exporter = _provider(sampler=sampler)
    tracer = provider.get_tracer("t")
    for parent in _parents():
        context = trace.set_span_in_context(parent) if parent is not None else None
        for _ in range(8):  # ratio samplers: several trace ids
            lean = start_span(tracer, "GET", context=context, kind=SpanKind.CLIENT, attributes=dict(ATTRS))
            sdk = tracer.start_span("GET", context=context, kind=SpanKind.CLIENT, attributes=dict(ATTRS))
            if parent is not None:  # same trace id: ratio samplers decide the same for both
                got = [
                    (s.is_recording(), s.get_span_context().trace_flags, s.get_span_context().trace_state)
                    for s in (lean, sdk)
                ]
                assert got[0] == got[1], (sampler.get_description(), parent)
            lean.end()
            sdk.end()
    exported = exporter.get_finished_spans()
    assert all(s.attributes == ATTRS for s in exported)
    if sampler is ALWAYS_ON:
        assert len(exported) == 2 * 8 * 5
        assert {s.context.trace_state.get("vendor") for s in exported if s.parent is not None} == {"v1"}
