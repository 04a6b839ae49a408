import socket
import time

from opentelemetry import trace

from otel_dist import get_logger
from otel_dist.testing import capture_telemetry


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shutdown_with_unreachable_endpoint_returns_within_5_seconds():
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with capture_telemetry(otlp_endpoint=endpoint, otlp_timeout_ms=10000, shutdown_timeout=4.0) as cap:
        tracer = trace.get_tracer("t")
        for i in range(200):
            with tracer.start_as_current_span(f"op{i}"):
                get_logger("t").info("work", i=i)
        assert cap.telemetry.settings.trace_exporters == ("otlp",)
        started = time.monotonic()
        cap.telemetry.shutdown()
        elapsed = time.monotonic() - started
    assert elapsed < 5.0, elapsed
