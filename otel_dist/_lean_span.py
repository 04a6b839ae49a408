"""A leaner start for spans whose attributes otel-dist builds itself (the server span).

The SDK's ``Tracer.start_span`` re-validates every attribute value (``BoundedAttributes``), builds
an empty event and link list with a lock each, and ``end`` copies the span into a new
``ReadableSpan`` for the processors: ~25 µs of the server layer's per-request cost.  Here the span
is still the SDK's ``Span`` class (same API for user code: ``set_attribute``, ``add_event``,
``record_exception``...), started with the tracer's own sampler, id generator, resource, limits and
span processors, but:

- attributes that are already clean (str/int/float/bool built by the server layer, within the
  configured limits) go into the attribute map as they are; anything else takes the SDK's path;
- the event and link lists are created on the first event or link, not per span;
- the ended span itself is what the processors receive: it is immutable once ended (the SDK
  refuses attribute, event, name and status changes after ``end``), so no copy is needed.

Any tracer that is not the SDK's (or a disabled one) gets ``tracer.start_span`` unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.metrics import NoOpUpDownCounter
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

__all__ = ["LeanSpan", "set_clean_attributes", "start_span"]

_UNSET = Status(StatusCode.UNSET)
_NOTHING: tuple[Any, ...] = ()
_CLEAN = (str, int, float, bool)
# (sampled, random trace id) -> flags: one shared object each instead of a new one per span
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT) | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


_DECIDED: dict[int, tuple[Any, tuple[Decision, Decision, Decision, Decision, Decision] | None]] = {}


def _static_decisions(sampler: Any) -> tuple[Decision, Decision, Decision, Decision, Decision] | None:
    """(root, remote sampled, remote not sampled, local sampled, local not sampled) decisions of a sampler
    whose answer depends on the parent only (the default ``parentbased_always_on``, ``always_on``...);
    None for any other (ratio, custom): that one is asked for every span."""
    found = _DECIDED.get(id(sampler))
    if found is not None and found[0] is sampler:
        return found[1]
    decisions = None
    if type(sampler) is StaticSampler:
        decisions = (sampler._decision,) * 5
    elif type(sampler) is ParentBased:
        delegates: tuple[Any, ...] = (
            sampler._root,
            sampler._remote_parent_sampled,
            sampler._remote_parent_not_sampled,
            sampler._local_parent_sampled,
            sampler._local_parent_not_sampled,
        )
        if all(type(d) is StaticSampler for d in delegates):
            decisions = (
                delegates[0]._decision,
                delegates[1]._decision,
                delegates[2]._decision,
                delegates[3]._decision,
                delegates[4]._decision,
            )
    if len(_DECIDED) > 64:
        _DECIDED.clear()
    _DECIDED[id(sampler)] = (sampler, decisions)  # the sampler kept alive: its id is not reused
    return decisions


def _no_end_metrics() -> None:
    pass


def _end_metrics(tracer: sdk_trace.Tracer, parent: Any, decision: Any) -> Any:
    """The SDK's span self-metrics hook, unless its instruments are no-ops (otel-dist's providers: see
    _providers): then no closure is allocated per span, nor kept alive with it in the export queue."""
    metrics = tracer._tracer_metrics
    if isinstance(getattr(metrics, "_live_spans", None), NoOpUpDownCounter):
        return _no_end_metrics
    return metrics.start_span(parent, decision)


class LeanSpan(sdk_trace.Span):
    """The SDK span, started without re-validating clean attributes and ended without a copy."""

    def __init__(self) -> None:
        # Span.__init__ is not called on purpose: start_span sets every field it would set.
        pass

    def _readable_span(self) -> sdk_trace.ReadableSpan:
        return self  # frozen once ended (see the module docstring)

    def _add_event(self, event: sdk_trace.EventBase) -> None:
        if self._events is _NOTHING:
            self._events = BoundedList(self._limits.max_events)
        super()._add_event(event)

    def _add_link(self, link: trace_api.Link) -> None:
        if self._links is _NOTHING:
            self._links = BoundedList(self._limits.max_links)
        super()._add_link(link)


def _clean(attributes: Mapping[str, Any], limits: sdk_trace.SpanLimits) -> bool:
    """Whether the SDK's validation would keep these attributes exactly as they are."""
    maxlen = limits.max_span_attributes
    if maxlen is not None and len(attributes) > maxlen:
        return False
    max_value_len = limits.max_span_attribute_length
    for key, value in attributes.items():
        kind = type(value)
        if not key or type(key) is not str:
            return False
        if kind is str:
            if max_value_len is not None and len(value) > max_value_len:
                return False
        elif kind not in _CLEAN:
            return False
    return True


def start_span(
    tracer: trace_api.Tracer,
    name: str,
    *,
    context: context_api.Context | None,
    kind: SpanKind,
    attributes: dict[str, Any],
    links: Sequence[trace_api.Link] | None = None,
) -> trace_api.Span:
    """As ``tracer.start_span(name, context, kind, attributes, links)``.

    `attributes` is taken over (not copied): the caller must not change it afterwards.
    """
    if type(tracer) is not sdk_trace.Tracer or not tracer._is_enabled():
        return tracer.start_span(name, context=context, kind=kind, attributes=attributes, links=links)
    parent: trace_api.SpanContext | None = trace_api.get_current_span(context).get_span_context()
    if parent is None or not parent.is_valid:
        parent = None
        trace_id = tracer.id_generator.generate_trace_id()
    else:
        trace_id = parent.trace_id
    links = links or _NOTHING
    decisions = _static_decisions(tracer.sampler)
    if decisions is not None:
        # What the SDK's ParentBased/StaticSampler would answer, without asking it (it looks the parent up
        # twice more and wraps the attributes): same decision, the parent's trace state, no attributes added.
        if parent is None:
            decision = decisions[0]
        elif parent.is_remote:
            decision = decisions[1] if parent.trace_flags.sampled else decisions[2]
        else:
            decision = decisions[3] if parent.trace_flags.sampled else decisions[4]
        trace_state = parent.trace_state if parent is not None else None
        sampled_attributes: Any = attributes
    else:
        result = tracer.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        decision, trace_state, sampled_attributes = result.decision, result.trace_state, result.attributes
    random_id = tracer.id_generator.is_trace_id_random() if parent is None else parent.trace_flags.random_trace_id
    flags = _FLAGS[decision.is_sampled(), bool(random_id)]
    span_context = trace_api.SpanContext(
        trace_id,
        tracer.id_generator.generate_span_id(),
        is_remote=False,
        trace_flags=flags,
        trace_state=trace_state,
    )
    record_end_metrics = _end_metrics(tracer, parent, decision)
    if not decision.is_recording():
        return trace_api.NonRecordingSpan(context=span_context)

    limits = tracer._span_limits
    if links or len(sampled_attributes) != len(attributes) or not _clean(attributes, limits):
        # A sampler that added attributes, links, or values the SDK would change: the SDK's own span.
        span: sdk_trace.Span = sdk_trace._Span(
            name=name,
            context=span_context,
            parent=parent,
            sampler=tracer.sampler,
            resource=tracer.resource,
            attributes=sampled_attributes,
            span_processor=tracer.span_processor,
            kind=kind,
            links=links,
            instrumentation_info=tracer.instrumentation_info,
            limits=limits,
            instrumentation_scope=tracer._instrumentation_scope,
            record_end_metrics=record_end_metrics,
        )
        span.start(parent_context=context)
        return span

    lean = LeanSpan()
    lean._name = name
    lean._context = span_context
    lean._kind = kind
    lean._instrumentation_info = tracer.instrumentation_info
    lean._instrumentation_scope = tracer._instrumentation_scope
    lean._parent = parent
    lean._end_time = None
    lean._resource = tracer.resource
    lean._status = _UNSET
    lean._sampler = tracer.sampler
    lean._trace_config = None
    lean._record_exception = True
    lean._set_status_on_exception = True
    lean._span_processor = tracer.span_processor
    lean._limits = limits
    lean._lock = threading.Lock()
    bounded = BoundedAttributes(limits.max_span_attributes, None, False, limits.max_span_attribute_length)
    bounded._dict = attributes
    lean._attributes = bounded
    lean._events = _NOTHING
    lean._links = _NOTHING
    lean._record_end_metrics = record_end_metrics
    lean._start_time = time_ns()
    tracer.span_processor.on_start(lean, parent_context=context)
    return lean


def set_clean_attributes(span: trace_api.Span, attributes: dict[str, Any]) -> None:
    """``span.set_attributes`` for values built clean; skips the SDK's re-validation when it can."""
    if type(span) is LeanSpan:
        bounded: Any = span._attributes
        limits = span._limits
        maxlen = limits.max_span_attributes
        if (maxlen is None or len(bounded) + len(attributes) <= maxlen) and _clean(attributes, limits):
            with span._lock:
                if span._end_time is None:
                    bounded._dict.update(attributes)
                    return
    span.set_attributes(attributes)
