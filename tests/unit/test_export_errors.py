"""A failed OTLP export is reported once per signal with its likely cause, then at most once a minute."""

import logging

import pytest

from otel_dist import _export_errors
from otel_dist._export_errors import EXPORTER_LOGGERS, ExportErrorFilter, likely_cause
from otel_dist.testing import free_port

TRANSIENT = "Transient error %s encountered while exporting %s batch, retrying in %.2fs."
GAVE_UP = "Failed to export %s batch due to timeout, max retries or shutdown."
GRPC_ANSWER = (
    "('Connection aborted.', BadStatusLine('\\x00\\x00\\x06\\x04\\x00\\x00\\x00\\x00\\x00\\x00\\x05\\x00\\x00@\\x00'))"
)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def records():
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            captured.append(record)

    handler = Keep()
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    yield captured
    for logger in loggers:
        logger.removeHandler(handler)
        for f in [f for f in logger.filters if isinstance(f, ExportErrorFilter)]:
            logger.removeFilter(f)


def install(clock: Clock, endpoint: str | dict[str, str | None] = "http://collector:4317") -> None:
    _export_errors.install(endpoint, interval=60, clock=clock)  # replaces the one a bootstrap() installed


def test_a_grpc_port_is_named_once_per_signal_then_counted(records):
    clock = Clock()
    install(clock)
    traces = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    logs = logging.getLogger("opentelemetry.exporter.otlp.proto.http._log_exporter")
    for _ in range(20):  # a second of retries of two signals
        traces.warning(TRANSIENT, GRPC_ANSWER, "spans", 0.5)
        traces.error(GAVE_UP, "spans")
        logs.warning(TRANSIENT, GRPC_ANSWER, "logs", 0.5)
    shown = [r.getMessage() for r in records]
    assert len(shown) == 2
    assert shown[0].startswith("OTLP traces export to http://collector:4317 failed: this looks like a gRPC port")
    assert "usually port 4318" in shown[0] and "at most every 60 s" in shown[0]
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in shown[0]
    assert shown[1].startswith("OTLP logs export to http://collector:4317 failed: this looks like a gRPC port")
    assert all(r.levelname == "WARNING" for r in records)

    clock.now += 61
    traces.warning(TRANSIENT, GRPC_ANSWER, "spans", 0.5)
    assert records[-1].getMessage() == (
        "OTLP traces export to http://collector:4317 still failing: 20 more failed attempts in the last 60 s "
        "(this looks like a gRPC port: it answers HTTP/1.1 with HTTP/2 frames; OTEL_EXPORTER_OTLP_ENDPOINT "
        "must be the collector's OTLP/HTTP address (usually port 4318), or set OTEL_EXPORTER_OTLP_PROTOCOL=grpc "
        "(pip install 'otel-dist[grpc]'))"
    )
    assert len(records) == 3


def test_one_line_per_signal_a_more_telling_cause_once_more_and_other_records_pass(records):
    port = free_port()  # nothing listens: the probe after a reset finds no gRPC server
    install(Clock(), f"http://user:pw@127.0.0.1:{port}")
    metrics = logging.getLogger("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    traces = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    refused = "HTTPConnectionPool(host='127.0.0.1', port=4318): Failed to establish a new connection: [Errno 111]"
    metrics.warning(TRANSIENT, refused, "metrics", 1.0)
    metrics.error("Failed to export %s batch code: %s, reason: %s", "metrics", 404, "Not Found")  # same signal
    reset = "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    traces.warning(TRANSIENT, reset, "spans", 1.0)
    traces.warning(TRANSIENT, reset, "spans", 1.0)
    traces.warning(TRANSIENT, GRPC_ANSWER, "spans", 1.0)  # tells more than a reset: reported too
    traces.warning(TRANSIENT, reset, "spans", 1.0)
    metrics.warning("Exporter already shutdown, ignoring batch")
    shown = [r.getMessage() for r in records]
    assert len(shown) == 4, shown
    assert "nothing listens there: is the collector running (otel-dist stack up" in shown[0]
    assert f"http://127.0.0.1:{port}" in shown[0] and "pw" not in shown[0]
    assert "the server closed the connection without an HTTP/1.1 answer" in shown[1]
    assert "this looks like a gRPC port" in shown[2]
    assert shown[3] == "Exporter already shutdown, ignoring batch"


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        ("HTTPConnectionPool(host='x', port=4317): Failed to establish a new connection", None, "4317 is the OTLP"),
        ("Max retries exceeded (Caused by NameResolutionError(...))", None, "does not resolve"),
        ("SSLError([SSL: WRONG_VERSION_NUMBER] wrong version number)", None, "TLS failed"),
        ("ReadTimeout: read timed out", None, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ("Unauthorized", 401, "OTEL_EXPORTER_OTLP_HEADERS"),
    ],
)
def test_likely_causes(error, status, expected):
    assert expected in likely_cause(error, status, "http://x:4318")


def test_each_signal_is_named_by_its_own_endpoint(records):
    # (not the logs exporter here: the SDK's DuplicateFilter on its logger drops a repeated format for 20 s)
    install(Clock(), {"traces": "https://traces.example:4318/v1/traces", "metrics": None, "logs": "http://c:4318"})
    refused = "HTTPConnectionPool(host='x', port=1): Failed to establish a new connection: [Errno 111]"
    logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").warning(TRANSIENT, refused, "spans", 1)
    logging.getLogger("opentelemetry.exporter.otlp.proto.http.metric_exporter").warning(
        TRANSIENT, refused, "metrics", 1
    )
    shown = [r.getMessage().split(": nothing listens")[0] for r in records]
    assert shown == [
        "OTLP traces export to https://traces.example:4318/v1/traces failed",
        "OTLP metrics export failed",
    ]
