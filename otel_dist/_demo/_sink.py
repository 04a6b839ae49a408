"""The demo's in-process OTLP span sink, and reading spans back: what a trace looks like.

:class:`SpanSink` receives OTLP/HTTP (protobuf) exports and keeps the spans as :class:`SinkSpan`;
:func:`spans_from_otlp_json` reads the same from the OTLP-JSON lines the collector stack writes;
:func:`span_tree` orders one trace's spans for printing.  Also used by the integration tests.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class SinkSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class SpanSink:
    """An OTLP/HTTP (protobuf) receiver that keeps the spans it is sent, for the demo and tests.

    ``POST /v1/traces`` is decoded (``ExportTraceServiceRequest``); metrics and logs are
    accepted and dropped.  Serve it with :meth:`serve` and point the services'
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the URL it yields.
    """

    def __init__(self, max_spans: int = 200_000) -> None:
        self._spans: list[SinkSpan] = []
        self._lock = threading.Lock()
        self._max = max_spans
        self.dropped = 0

    def spans(self, trace_id: str | None = None) -> list[SinkSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def add(self, body: bytes) -> int:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received: list[SinkSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", "unknown_service"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        SinkSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            kind=_KINDS.get(span.kind, str(span.kind)),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status=span.status.code,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            room = max(0, self._max - len(self._spans))
            self._spans.extend(received[:room])
            self.dropped += len(received) - min(room, len(received))
        return len(received)

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                self.add(body)
            except Exception as exc:  # noqa: BLE001 - a bad payload is the sender's 400, not our crash
                return Response(f"undecodable OTLP payload: {exc}", status_code=400)
            return Response(b"", media_type="application/x-protobuf")  # empty ExportTraceServiceResponse

        async def ignored(request: Request) -> Response:
            await request.body()
            return Response(b"", media_type="application/x-protobuf")

        return Starlette(
            routes=[
                Route("/v1/traces", traces, methods=["POST"]),
                Route("/v1/metrics", ignored, methods=["POST"]),
                Route("/v1/logs", ignored, methods=["POST"]),
            ]
        )

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run the sink on a free loopback port in a thread; yield its base URL."""
        from ..testing import serve_app

        with serve_app(self.app()) as url:
            yield url


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [_value(v) for v in value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.values}
    return value


def span_tree(spans: list[SinkSpan]) -> list[tuple[int, SinkSpan]]:
    """(depth, span) in tree order, children by start time; orphans are shown as roots."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SinkSpan]] = {}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)
    out: list[tuple[int, SinkSpan]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x.start_ns):
            out.append((depth, s))
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return out


def spans_from_otlp_json(path: Path, trace_id: str) -> list[SinkSpan]:
    """The spans of `trace_id` in an OTLP-JSON lines file (what the stack's collector exported)."""
    found: list[SinkSpan] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh if trace_id in line]
    except OSError:
        return found
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = _json_attributes(resource_spans.get("resource", {}).get("attributes", []))
                service = str(resource.get("service.name", "unknown_service"))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        if span.get("traceId", "").lower() != trace_id:
                            continue
                        found.append(
                            SinkSpan(
                                service=service,
                                trace_id=trace_id,
                                span_id=span["spanId"].lower(),
                                parent_span_id=span.get("parentSpanId", "").lower() or None,
                                name=span.get("name", ""),
                                kind=_KINDS.get(int(span.get("kind", 0)), str(span.get("kind"))),
                                start_ns=int(span.get("startTimeUnixNano", 0)),
                                end_ns=int(span.get("endTimeUnixNano", 0)),
                                status=int(span.get("status", {}).get("code", 0)),
                                attributes=_json_attributes(span.get("attributes", [])),
                            )
                        )
    return found


def _json_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        value = item.get("value", {})
        out[item["key"]] = next(iter(value.values()), None) if isinstance(value, dict) else value
    return out
