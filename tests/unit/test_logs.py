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
