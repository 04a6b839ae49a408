"""OTLP/HTTP exporters with a lean protobuf encoder for spans and log records.

The upstream exporters build one generated protobuf object per span, attribute
and value, then serialize the tree: about 45 µs per server span and 27 µs per
log record on the benchmark machine, spent on the export thread but on the
same core (and under the same GIL) as the requests.  Here the wire format is
written directly: a span is a few byte concatenations, and the bytes of an
attribute key, of a short string value, of the resource and of the scope are
computed once and reused.  The payload decodes to exactly the message the
upstream encoder produces (``tests/unit/test_otlp_encoder.py`` checks this).
Anything unusual (array or map values, events, links) is handed to the upstream
encoder for that one item, so the output never differs.

Transport, retries, timeouts, compression and the exporter self-metrics are the
upstream exporter's: only ``export`` is replaced.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common._internal import _encode_key_value, _encode_value
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_events, _encode_links
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, StatusCode

from ._lean_span import LeanSpan

__all__ = ["LeanOTLPLogExporter", "LeanOTLPSpanExporter", "encode_logs_request", "encode_spans_request"]

_log = logging.getLogger(__name__)

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack
_SMALL = [bytes((i,)) for i in range(128)]
_MAX_CACHE = 8192


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


# --- common: AnyValue, KeyValue, Resource, InstrumentationScope ---

_PRIMITIVE = frozenset((str, int, float, bool))
_key_cache: dict[str, bytes] = {}
_str_cache: dict[str, bytes] = {}
_attr_cache: dict[bytes, dict[str, dict[Any, bytes]]] = {}  # tag -> key -> value -> field


def _any_value(value: Any) -> bytes:
    """AnyValue bytes (oneof: always present, even when the value is the default)."""
    if isinstance(value, str):
        cached = _str_cache.get(value)
        if cached is None:
            cached = _field(b"\x0a", value.encode("utf-8"))
            if len(value) <= 64:
                if len(_str_cache) >= _MAX_CACHE:
                    _str_cache.clear()
                _str_cache[value] = cached
        return cached
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if value is None:
        return b""
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    return _encode_value(value).SerializeToString()  # arrays, maps: rare, upstream encoder


def _key_value(key: str, value: Any) -> bytes:
    """KeyValue bytes."""
    prefix = _key_cache.get(key)
    if prefix is None:
        prefix = _field(b"\x0a", key.encode("utf-8")) if key else b""
        if len(_key_cache) < _MAX_CACHE:
            _key_cache[key] = prefix
    if type(value) in _PRIMITIVE or not isinstance(value, (Sequence, Mapping)) or isinstance(value, (str, bytes)):
        return prefix + _field(b"\x12", _any_value(value))
    return _encode_key_value(key, value).SerializeToString()


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    parts = []
    by_key = _attr_cache.get(tag)
    if by_key is None:
        by_key = _attr_cache[tag] = {}
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int:
            # Whole attribute fields for repeated (key, value) pairs: method, scheme, route, status...
            # (key -> value -> bytes: no tuple per lookup; bools stay out, True == 1.)
            by_value = by_key.get(key)
            if by_value is None:
                by_value = by_key[key] = {}
            encoded = by_value.get(value)
            if encoded is None:
                encoded = _field(tag, _key_value(key, value))
                if kind is not str or len(value) <= 64:
                    if len(by_value) >= _MAX_CACHE or len(by_key) >= _MAX_CACHE:
                        by_value.clear()
                        if len(by_key) >= _MAX_CACHE:
                            by_key.clear()
                            by_key[key] = by_value
                    by_value[value] = encoded
            parts.append(encoded)
            continue
        try:
            parts.append(_field(tag, _key_value(key, value)))
        except Exception:  # noqa: BLE001 - as upstream: skip the attribute, keep the item
            _log.exception("Failed to encode key %s", key)
    return b"".join(parts)


_resource_cache: dict[Any, bytes] = {}
_scope_cache: dict[Any, bytes] = {}


def _resource(resource: Any) -> bytes:
    """Resource message bytes (cached: a process has one or two resources)."""
    cached = _resource_cache.get(resource)
    if cached is None:
        cached = _attributes(b"\x0a", resource.attributes)
        if len(_resource_cache) < 64:
            _resource_cache[resource] = cached
    return cached


def _scope(scope: Any) -> bytes:
    """InstrumentationScope message bytes."""
    if scope is None:
        return b""
    cached = _scope_cache.get(scope)
    if cached is None:
        out = _field(b"\x0a", scope.name.encode()) if scope.name else b""
        if scope.version:
            out += _field(b"\x12", scope.version.encode())
        out += _attributes(b"\x1a", scope.attributes)
        cached = out
        if len(_scope_cache) < 1024:
            _scope_cache[scope] = cached
    return cached


def _group(items: Sequence[Any], encode: Any) -> dict[Any, dict[Any, list[bytes]]]:
    """resource -> scope -> encoded items, in first-seen order (as upstream groups them)."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    by_id: dict[int, dict[Any, list[bytes]]] = {}  # Resource.__hash__ JSON-encodes its attributes
    for item in items:
        resource = item.resource
        by_scope = by_id.get(id(resource))
        if by_scope is None:
            by_scope = groups.get(resource)
            if by_scope is None:
                by_scope = groups[resource] = {}
            by_id[id(resource)] = by_scope
        scope = item.instrumentation_scope or None
        encoded = by_scope.get(scope)
        if encoded is None:
            encoded = by_scope[scope] = []
        encoded.append(encode(item))
    return groups


def _request(groups: dict[Any, dict[Any, list[bytes]]], item_tag: bytes) -> bytes:
    """Export*ServiceRequest: resource_* (1) { resource (1), scope_* (2) { scope (1), items (2), schema_url (3) },
    schema_url (3) }."""
    out = []
    for resource, by_scope in groups.items():
        body = [_field(b"\x0a", _resource(resource))]
        for scope, items in by_scope.items():
            scoped = [_field(b"\x0a", _scope(scope))]
            scoped += [_field(item_tag, item) for item in items]
            if scope is not None and scope.schema_url:
                scoped.append(_field(b"\x1a", scope.schema_url.encode()))
            body.append(_field(b"\x12", b"".join(scoped)))
        if resource.schema_url:
            body.append(_field(b"\x1a", resource.schema_url.encode()))
        out.append(_field(b"\x0a", b"".join(body)))
    return b"".join(out)


# --- spans ---

_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_FLAGS_LOCAL = b"\x85\x01" + _pack_i(0x100)  # field 16 (fixed32): HAS_IS_REMOTE
_FLAGS_REMOTE = b"\x85\x01" + _pack_i(0x300)  # HAS_IS_REMOTE | IS_REMOTE
_name_cache: dict[str, bytes] = {}  # span name -> its field: names are route templates
_SDK_SPANS = frozenset((ReadableSpan, LeanSpan))  # exactly these: a subclass may override a property


def _span(span: Any) -> bytes:
    if type(span) in _SDK_SPANS:
        # The SDK's fields read directly: its properties copy (events, links) or wrap (attributes in a
        # MappingProxy over BoundedAttributes, iterated in Python): ~40% of the encoding time.
        ctx, parent, name, kind = span._context, span._parent, span._name, span._kind
        start, end, status = span._start_time, span._end_time, span._status
        attributes = span._attributes
        if type(attributes) is BoundedAttributes:
            dropped = attributes.dropped
            attributes = attributes._dict
        else:
            dropped = 0
        events, links = span._events, span._links
        dropped_events = events.dropped if type(events) is BoundedList else 0
        dropped_links = links.dropped if type(links) is BoundedList else 0
    else:
        ctx, parent, name, kind = span.context, span.parent, span.name, span.kind
        start, end, status = span.start_time, span.end_time, span.status
        attributes, dropped = span.attributes, span.dropped_attributes
        events, links = span.events, span.links
        dropped_events, dropped_links = span.dropped_events, span.dropped_links
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    trace_state = ctx.trace_state
    if trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()))
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if name:
        encoded_name = _name_cache.get(name)
        if encoded_name is None:
            encoded_name = _field(b"\x2a", name.encode("utf-8"))
            if len(_name_cache) >= _MAX_CACHE:
                _name_cache.clear()
            _name_cache[name] = encoded_name
        parts.append(encoded_name)
    parts.append(_KIND[kind])
    if start:
        parts.append(b"\x39" + _pack_q(start))
    if end:
        parts.append(b"\x41" + _pack_q(end))
    parts.append(_attributes(b"\x4a", attributes))
    if dropped:
        parts.append(b"\x50" + _varint(dropped))
    if events:
        parts += [_field(b"\x5a", e.SerializeToString()) for e in _encode_events(span.events) or ()]
    if dropped_events:
        parts.append(b"\x60" + _varint(dropped_events))
    if links:
        parts += [_field(b"\x6a", link.SerializeToString()) for link in _encode_links(span.links) or ()]
    if dropped_links:
        parts.append(b"\x70" + _varint(dropped_links))
    if status is not None and status.status_code is StatusCode.UNSET and not status.description:
        parts.append(b"\x7a\x00")  # an empty Status message
    elif status is not None:
        body = _field(b"\x12", status.description.encode("utf-8")) if status.description else b""
        code = status.status_code.value
        if code:
            body += b"\x18" + _varint(code)
        parts.append(_field(b"\x7a", body))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def encode_spans_request(spans: Sequence[Any]) -> bytes:
    """Serialized ExportTraceServiceRequest for `spans` (ReadableSpan)."""
    return _request(_group(spans, _span), b"\x12")


# --- log records ---


def _log_record(readable: Any) -> bytes:
    record = readable.log_record
    parts = []
    if record.timestamp:
        parts.append(b"\x09" + _pack_q(record.timestamp))
    severity = getattr(record.severity_number, "value", None)
    if severity:
        parts.append(b"\x10" + _varint(severity))
    if record.severity_text:
        parts.append(_field(b"\x1a", record.severity_text.encode("utf-8")))
    parts.append(_field(b"\x2a", _any_value(record.body)))
    parts.append(_attributes(b"\x32", record.attributes))
    if readable.dropped_attributes:
        parts.append(b"\x38" + _varint(readable.dropped_attributes))
    flags = int(record.trace_flags) if record.trace_flags is not None else 0
    if flags:
        parts.append(b"\x45" + _pack_i(flags))
    if record.trace_id:
        parts.append(b"\x4a\x10" + record.trace_id.to_bytes(16, "big"))
    if record.span_id:
        parts.append(b"\x52\x08" + record.span_id.to_bytes(8, "big"))
    if record.observed_timestamp:
        parts.append(b"\x59" + _pack_q(record.observed_timestamp))
    if record.event_name:
        parts.append(_field(b"\x62", record.event_name.encode("utf-8")))
    return b"".join(parts)


def encode_logs_request(batch: Sequence[Any]) -> bytes:
    """Serialized ExportLogsServiceRequest for `batch` (ReadableLogRecord)."""
    return _request(_group(batch, _log_record), b"\x12")


# --- exporters: upstream transport and self-metrics, lean encoding ---


def _export(exporter: Any, items: Sequence[Any], encode: Any, success: Any, failure: Any) -> Any:
    if exporter._shutdown:
        _log.warning("Exporter already shutdown, ignoring batch")
        return failure
    with exporter._metrics.export_operation(len(items)) as result:
        try:
            data = encode(items)
        except Exception as error:  # noqa: BLE001
            _log.error("Failed to encode batch: %s", error)
            result.error = error
            return failure
        limit = exporter._max_request_size
        if limit and limit > 0 and len(data) > limit:
            _log.warning("Dropping batch: serialized size %d bytes exceeds max_request_size %d", len(data), limit)
            result.error = ValueError("request too large")
            return failure
        outcome = exporter._client.export(data)
        if not outcome.success:
            result.error = outcome.error
            if outcome.status_code is not None:
                result.error_attrs = {"http.response.status_code": outcome.status_code}
            return failure
    return success


def _lean_ready(exporter: Any) -> bool:
    """The upstream internals `export` relies on are there (else: upstream export)."""
    return all(hasattr(exporter, a) for a in ("_shutdown", "_metrics", "_client", "_max_request_size"))


class LeanOTLPSpanExporter(OTLPSpanExporter):
    """OTLPSpanExporter with the lean encoder."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if not _lean_ready(self):
            return super().export(spans)
        result: SpanExportResult = _export(
            self, spans, encode_spans_request, SpanExportResult.SUCCESS, SpanExportResult.FAILURE
        )
        return result


class LeanOTLPLogExporter(OTLPLogExporter):
    """OTLPLogExporter with the lean encoder."""

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if not _lean_ready(self):
            return super().export(batch)
        result: LogRecordExportResult = _export(
            self, batch, encode_logs_request, LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
        )
        return result


# --- drops while the collector is away ---

_WARN_EVERY_S = 20.0  # upstream's DuplicateFilter window for the "Queue full" warning
_FLUSH_EVERY_S = 1.0
_FLUSH_EVERY_N = 256


def lean_drops(processor: Any) -> None:
    """Make a full export queue cheap: the state the service is in while the collector is down.

    Upstream, every item that arrives at a full queue creates a "Queue full" log
    record (then filtered as a duplicate) and updates the dropped-items counter
    through every metric reader: ~25 µs per request for a span and an access-log
    record.  Here the item is queued the same way (the oldest one falls out) and
    the drops are counted in bulk (at most 1 s or 256 items late, and before a
    flush or shutdown); the warning still appears once per 20 s.  Processors
    without the upstream internals this relies on are left as they are.
    """
    batch = getattr(processor, "_batch_processor", None)
    needed = ("_queue", "_max_queue_size", "_metrics", "_shutdown", "_pid", "_worker_awaken", "emit")
    if batch is None or not all(hasattr(batch, name) for name in needed):
        return
    import os
    import threading
    import time

    upstream_emit, upstream_flush, upstream_shutdown = batch.emit, batch.force_flush, batch.shutdown
    queue, limit, metrics, awaken = batch._queue, batch._max_queue_size, batch._metrics, batch._worker_awaken
    lock = threading.Lock()
    state = {"pending": 0, "flushed": time.monotonic(), "warned": 0.0}

    def flush_drops() -> None:
        with lock:
            pending, state["pending"] = state["pending"], 0
            state["flushed"] = time.monotonic()
        if pending:
            metrics.drop_items(pending)

    def emit(data: Any) -> None:
        if len(queue) < limit or batch._shutdown or batch._pid != os.getpid():
            upstream_emit(data)
            return
        now = time.monotonic()
        if now - state["warned"] >= _WARN_EVERY_S:
            state["warned"] = now
            upstream_emit(data)  # the warning and this drop's count, as upstream
            return
        queue.appendleft(data)  # maxlen: the oldest item falls out, as upstream
        if not awaken.is_set():
            awaken.set()
        with lock:
            state["pending"] += 1
            due = state["pending"] >= _FLUSH_EVERY_N or now - state["flushed"] >= _FLUSH_EVERY_S
        if due:
            flush_drops()

    def force_flush(*args: Any, **kwargs: Any) -> Any:
        flush_drops()
        return upstream_flush(*args, **kwargs)

    def shutdown(*args: Any, **kwargs: Any) -> Any:
        flush_drops()
        return upstream_shutdown(*args, **kwargs)

    batch.emit, batch.force_flush, batch.shutdown = emit, force_flush, shutdown
