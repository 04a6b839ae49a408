import io
import json
import logging

from opentelemetry import trace

from otel_dist import get_logger
from otel_dist._logs import JsonLogHandler, LogSink


def test_structured_fields_and_trace_ids(telemetry):
    log = get_logger("checkout")
    with telemetry.telemetry.tracer("t").start_as_current_span("work") as span:
        log.info("service call", target="auth", endpoint="/health")
    (line,) = [e for e in telemetry.log_lines() if e["message"] == "service call"]
    assert line["target"] == "auth" and line["endpoint"] == "/health"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["logger"] == "checkout" and line["level"] == "INFO"


def test_logs_outside_a_span_have_no_trace_fields(telemetry):
    get_logger("x").warning("no span here")
    (line,) = [e for e in telemetry.log_lines() if e["message"] == "no span here"]
    assert "trace_id" not in line and line["level"] == "WARNING"


def test_credential_like_fields_are_redacted(telemetry):
    get_logger("x").info("call", authorization="Bearer abc.def.ghi", api_key="k-123", password="hunter2")
    text = telemetry.raw_log_text()
    for secret in ("abc.def.ghi", "k-123", "hunter2"):
        assert secret not in text
    otel = [r for r in telemetry.otel_logs() if r.log_record.body == "call"]
    assert otel and otel[0].log_record.attributes["authorization"] == "<redacted>"


def test_stdlib_logging_and_extra_fields_become_json(telemetry):
    logging.getLogger("thirdparty").error("failed", extra={"order_id": 7})
    (line,) = [e for e in telemetry.log_lines() if e["message"] == "failed"]
    assert line["order_id"] == 7 and line["level"] == "ERROR"


def test_exceptions_are_included(telemetry):
    try:
        raise ValueError("bad")
    except ValueError:
        get_logger("x").exception("it broke", step=3)
    (line,) = [e for e in telemetry.log_lines() if e["message"] == "it broke"]
    assert "ValueError: bad" in line["exception"] and line["step"] == 3


def test_same_record_goes_to_otel_logs_with_span_context(telemetry):
    with trace.get_tracer("t").start_as_current_span("work") as span:
        get_logger("x").info("hello otel", n=1)
    (record,) = [r for r in telemetry.otel_logs() if r.log_record.body == "hello otel"]
    assert record.log_record.trace_id == span.get_span_context().trace_id
    assert record.log_record.attributes["n"] == 1


def test_a_broken_stdout_never_raises():
    stream = io.StringIO()
    stream.close()
    sink = LogSink(service_name="s", environment="e", stream=stream)
    handler = JsonLogHandler(sink)
    handler.emit(logging.makeLogRecord({"msg": "x", "levelno": 20, "levelname": "INFO"}))


def test_json_line_is_one_line_per_record():
    stream = io.StringIO()
    sink = LogSink(service_name="s", environment="e", stream=stream)
    sink.emit(20, "l", "multi\nline", {"k": "v"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "multi\nline"


def _reference_line(sink, levelno, logger_name, message, fields, *, span, created, exc_text, legacy=None):
    """The line as json.dumps writes the record's dict (what LogSink wrote before its fast path)."""
    import json

    from otel_dist._logs import _clean, _iso, _level_name

    line = {"timestamp": _iso(created), "level": _level_name(levelno), "logger": logger_name, "message": message}
    ctx = span.get_span_context() if span is not None else None
    if ctx is not None and ctx.is_valid:
        line["trace_id"] = format(ctx.trace_id, "032x")
        line["span_id"] = format(ctx.span_id, "016x")
        line["trace_flags"] = format(ctx.trace_flags, "02x")
    line.update(sink._static)
    if legacy is not None:
        line["correlation_id"] = legacy
    for key, value in _clean(fields).items():
        line.setdefault(key, value)
    if exc_text:
        line["exception"] = exc_text
    return json.dumps(line, default=str, ensure_ascii=False) + "\n"


def test_json_line_is_exactly_what_json_dumps_writes():
    import io
    from decimal import Decimal

    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from otel_dist._logs import LogSink
    from otel_dist._propagation import correlation_id

    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)))
    cases = [
        {"http.request.method": "GET", "url.path": '/a"b\\c\n\u00e9\u2028', "http.route": None,
         "http.response.status_code": 200, "duration_ms": 1.234},
        {"n": float("nan"), "i": float("inf"), "b": True, "d": Decimal("1.5"), "l": [1, "x"], "m": {"k": object}},
        {"message": "shadowed", "service.name": "shadowed", "token": "s3cret", "correlation_id": "field"},
        {"exception": "field", "big": 10**30, "neg": -0.0, "e": 1e300},
    ]  # fmt: skip
    for environment in (None, "prod \u00fc"):
        sink = LogSink(service_name='svc "q"', environment=environment, stream=io.StringIO())
        for fields in cases:
            for legacy, exc_text, with_span in (("corr-1", None, True), (None, "Traceback\n  x", False)):
                sink._stream = io.StringIO()
                token = correlation_id.set(legacy)
                try:
                    sink.emit(20, "otel_dist.access", "GET /a\t\u00e9 200", fields, span=span if with_span else None,
                              created=1764600000.123456, exc_text=exc_text, export=False)  # fmt: skip
                finally:
                    correlation_id.reset(token)
                expected = _reference_line(
                    sink, 20, "otel_dist.access", "GET /a\t\u00e9 200", fields,
                    span=span if with_span else None, created=1764600000.123456, exc_text=exc_text, legacy=legacy,
                )  # fmt: skip
                assert sink._stream.getvalue() == expected


def test_access_line_fast_path_writes_and_exports_what_emit_does(monkeypatch):
    """LogSink.access (the server's per-request line) against the general emit: same text, same record."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from otel_dist._logs import trace_ids_text
    from otel_dist._propagation import correlation_id

    monkeypatch.setattr("time.time", lambda: 1764600000.123456)
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    cases = [
        ("GET", "/hello/world", "/hello/{name}", 200, 0.123),
        ("_OTHER", '/a"b\\c\n\u00e9\u2028', None, 404, 12.5),
        ("POST", "/orders", "/orders", 503, 1000.0),
    ]
    for valid in (True, False):
        ctx = SpanContext(0xABC if valid else 0, 0xDEF if valid else 0, is_remote=False, trace_flags=TraceFlags(1))
        span = NonRecordingSpan(ctx)
        ids = trace_ids_text(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", ctx.trace_flags) if valid else None
        for environment, legacy in ((None, None), ("prod \u00fc", 'corr "1"')):
            for method, path, route, status, duration in cases:
                level = 30 if status >= 500 else 20
                written = []
                for fast in (True, False):
                    sink = LogSink(service_name="svc", environment=environment, stream=io.StringIO())
                    sink.otel_logger = provider.get_logger("otel_dist")
                    token = correlation_id.set(legacy)
                    try:
                        if fast:
                            sink.access(level, "otel_dist.access", method, path, route, status, duration,
                                        span=span, ids=ids, export=True)  # fmt: skip
                        else:
                            fields = {"http.request.method": method, "url.path": path, "http.route": route,
                                      "http.response.status_code": status, "duration_ms": duration}  # fmt: skip
                            sink.emit(level, "otel_dist.access", f"{method} {route or path} {status}", fields,
                                      span=span, export=True)  # fmt: skip
                    finally:
                        correlation_id.reset(token)
                    written.append(sink._stream.getvalue())
                assert written[0] == written[1]
                assert json.loads(written[0])["http.response.status_code"] == status
                fast_record, slow_record = (r.log_record for r in exporter.get_finished_logs()[-2:])
                exporter.clear()
                for name in ("body", "severity_number", "severity_text", "trace_id", "span_id", "timestamp"):
                    assert getattr(fast_record, name) == getattr(slow_record, name), name
                assert dict(fast_record.attributes) == dict(slow_record.attributes)
