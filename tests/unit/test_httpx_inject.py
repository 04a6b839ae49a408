"""The lean CLIENT span writes the same propagation headers as ``propagate.inject`` would."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_dist import _httpx
from otel_dist._lean_span import start_span

W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


@pytest.fixture
def textmap() -> Iterator[None]:
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


def _both(span: trace.Span, *, with_baggage: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """(headers from _inject, headers from propagate.inject) with `span` current."""
    ctx = trace.set_span_in_context(span)
    if with_baggage:
        ctx = baggage.set_baggage("user.id", "u-1", context=ctx)
    token = context.attach(ctx)
    try:
        lean, upstream = httpx.Headers({"accept": "*/*"}), httpx.Headers({"accept": "*/*"})
        _httpx._inject(lean, span)
        propagate.inject(upstream)
    finally:
        context.detach(token)
    return dict(lean), dict(upstream)


def _parent(sampled: bool, state: TraceState | None = None) -> trace.Span:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags, trace_state=state))


@pytest.mark.parametrize("with_baggage", [False, True])
@pytest.mark.parametrize("sampler", [None, ALWAYS_OFF])
@pytest.mark.parametrize("parent", [None, _parent(True), _parent(False), _parent(True, TraceState([("v", "1")]))])
def test_same_headers_as_propagate_inject(
    textmap: None, with_baggage: bool, sampler: object, parent: trace.Span | None
) -> None:
    propagate.set_global_textmap(W3C)
    tracer = (TracerProvider(sampler=sampler) if sampler else TracerProvider()).get_tracer("t")
    parent_ctx = trace.set_span_in_context(parent) if parent is not None else None
    span = start_span(tracer, "GET", context=parent_ctx, kind=SpanKind.CLIENT, attributes={})
    lean, upstream = _both(span, with_baggage=with_baggage)
    assert lean == upstream
    assert int(lean["traceparent"][-2:], 16) & 1 == span.get_span_context().trace_flags.sampled
    assert ("baggage" in lean) == with_baggage
    assert ("tracestate" in lean) == (parent is not None and bool(parent.get_span_context().trace_state))


def test_no_trace_context_from_an_invalid_span(textmap: None) -> None:
    propagate.set_global_textmap(W3C)
    assert _both(trace.INVALID_SPAN) == ({"accept": "*/*"}, {"accept": "*/*"})
    lean, upstream = _both(trace.INVALID_SPAN, with_baggage=True)
    assert lean == upstream and set(lean) == {"accept", "baggage"}


def test_other_propagators_run_as_configured(textmap: None) -> None:
    """OTEL_PROPAGATORS=baggage (no trace context), or any other set: the configured propagator writes."""
    propagate.set_global_textmap(CompositePropagator([W3CBaggagePropagator()]))
    span = start_span(TracerProvider().get_tracer("t"), "GET", context=None, kind=SpanKind.CLIENT, attributes={})
    lean, upstream = _both(span, with_baggage=True)
    assert lean == upstream and "traceparent" not in lean and lean["baggage"] == "user.id=u-1"
