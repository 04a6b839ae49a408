"""The lean OTLP encoder produces exactly the message the upstream encoder produces."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from otel_dist._otlp import encode_logs_request, encode_spans_request

VALUES = {
    "str": "GET",
    "empty": "",
    "unicode": "héllo wörld ✓",
    "long": "x" * 300,
    "int": 8000,
    "zero": 0,
    "negative": -5,
    "big": 2**62,
    "true": True,
    "false": False,
    "float": 0.125,
    "ints": [1, 2, 3],
    "strs": ("a", "b"),
}


def _spans() -> list:
    exporter = InMemorySpanExporter()
    resources = [Resource.create({"service.name": "a", "n": 1}), Resource.create({"service.name": "b"})]
    spans = []
    for resource in resources:
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope, version in (("s1", "1.0"), ("s2", None)):
            tracer = provider.get_tracer(scope, version, schema_url="https://opentelemetry.io/schemas/1.21.0")
            with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes=VALUES) as root:
                root.set_status(Status(StatusCode.ERROR, "boom"))
                root.add_event("ev", {"k": "v", "n": 2})
                with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
                    child.set_status(Status(StatusCode.OK))
            remote = SpanContext(
                0x0AF7651916CD43DD8448EB211C80319C,
                0xB7AD6B7169203331,
                is_remote=True,
                trace_flags=TraceFlags(1),
                trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
            )
            link = Link(remote, {"link.attr": "v"})
            ctx = set_span_in_context(NonRecordingSpan(remote))
            tracer.start_span("remote-child", context=ctx, kind=SpanKind.CONSUMER, links=[link]).end()
            tracer.start_span("", kind=SpanKind.PRODUCER).end()
        spans = exporter.get_finished_spans()
    return list(spans)


def test_spans_decode_to_the_upstream_message() -> None:
    spans = _spans()
    assert len(spans) >= 10
    ours = ExportTraceServiceRequest.FromString(encode_spans_request(spans))
    assert ours == encode_spans(spans)


def test_logs_decode_to_the_upstream_message() -> None:
    exporter = InMemoryLogRecordExporter()
    for resource in (Resource.create({"service.name": "a"}), Resource.create({"service.name": "b"})):
        provider = LoggerProvider(resource=resource)
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        logger = provider.get_logger("otel_dist", "1.0")
        other = provider.get_logger("other")
        from opentelemetry._logs import SeverityNumber

        span_ctx = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body="GET /hello/{name} 200",
            attributes={"http.route": "/hello/{name}", "http.response.status_code": 200, "duration_ms": 0.5},
            context=set_span_in_context(NonRecordingSpan(span_ctx)),
        )
        logger.emit(body={"structured": [1, 2]}, severity_number=SeverityNumber.ERROR, event_name="my.event")
        other.emit(body=None)
        other.emit(body="plain", attributes={"list": ["a", "b"], "flag": False})
    batch = list(exporter.get_finished_logs())
    ours = ExportLogsServiceRequest.FromString(encode_logs_request(batch))
    assert ours == encode_logs(batch)


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_each_attribute_type(value: object) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span("s", attributes={"k": value}).end()
    spans = list(exporter.get_finished_spans())
    assert ExportTraceServiceRequest.FromString(encode_spans_request(spans)) == encode_spans(spans)


def test_lean_spans_and_dropped_counts_decode_to_the_upstream_message() -> None:
    """The fast path (the SDK's fields read directly) for the server layer's LeanSpan and for
    ReadableSpans with dropped attributes, events and links."""
    from opentelemetry.sdk.trace import SpanLimits

    from otel_dist._lean_span import LeanSpan, set_clean_attributes, start_span

    exporter = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=3, max_events=1, max_links=1)
    provider = TracerProvider(resource=Resource.create({"service.name": "lean"}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otel_dist.server", "1.0")
    attrs = {"http.request.method": "GET", "url.path": "/hello/world", "server.port": 8000}
    plain = start_span(tracer, "GET", context=None, kind=SpanKind.SERVER, attributes=dict(attrs))
    assert type(plain) is LeanSpan
    plain.update_name("GET /hello/{name}")
    plain.end()
    failed = start_span(tracer, "POST", context=None, kind=SpanKind.SERVER, attributes={"a": 1, "b": 2})
    set_clean_attributes(failed, {"http.response.status_code": 500, "error.type": "500"})  # one dropped
    failed.set_status(Status(StatusCode.ERROR, "boom"))
    failed.add_event("first", {"n": 1})
    failed.add_event("second")  # dropped: max_events=1
    failed.end()
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True)
    links = [Link(remote), Link(remote, {"k": "v"})]  # one dropped
    tracer.start_span("linked", links=links, attributes={"x": "y", "y": 2, "z": 0.5, "w": True}).end()
    spans = list(exporter.get_finished_spans())
    assert [type(s) for s in spans][:2] == [LeanSpan, LeanSpan]
    assert spans[1].dropped_attributes == 1 and spans[1].dropped_events == 1 and spans[2].dropped_links == 1
    for _ in range(2):  # the second time from the encoder's caches
        assert ExportTraceServiceRequest.FromString(encode_spans_request(spans)) == encode_spans(spans)
