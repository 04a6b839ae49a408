"""A test kit: capture every span, metric point and log line a piece of code produces.

    from otel_dist.testing import capture_telemetry

    def test_handler():
        with capture_telemetry(service_name="orders") as cap:
            ...  # drive the app
        assert cap.span("GET /orders/{order_id}").attributes["http.route"] == "/orders/{order_id}"

otel-dist's own tests use exactly this kit.  It uses the SDK's in-memory
exporter and reader; nothing is mocked.  OpenTelemetry's global providers may
be set only once per process, so the kit resets them (private API, pinned by
our tests) before and after each capture.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import _bootstrap

__all__ = ["TelemetryCapture", "capture_telemetry", "reset_telemetry"]


class _TeeStream(io.StringIO):
    """Keeps the JSON lines for assertions (and optionally echoes them)."""


class TelemetryCapture:
    def __init__(
        self,
        telemetry: _bootstrap.Telemetry,
        spans: InMemorySpanExporter,
        reader: InMemoryMetricReader,
        logs: InMemoryLogRecordExporter,
        stream: io.StringIO,
    ) -> None:
        self.telemetry = telemetry
        self._spans = spans
        self._reader = reader
        self._otel_logs = logs
        self._stream = stream

    # --- spans ---
    def spans(self) -> list[ReadableSpan]:
        self.telemetry.tracer_provider.force_flush()
        return list(self._spans.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        matches = [s for s in self.spans() if s.name == name]
        if len(matches) != 1:
            raise AssertionError(f"expected one span {name!r}, got {[s.name for s in self.spans()]}")
        return matches[0]

    # --- metrics ---
    def metric_points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) for every point of metric `name`."""
        data = self._reader.get_metrics_data()
        out: list[tuple[dict[str, Any], Any]] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
        return out

    def metric_value(self, name: str, **attributes: Any) -> float:
        """Sum (counters, gauges) or count (histograms) over points whose attributes include `attributes`."""
        total = 0.0
        for attrs, point in self.metric_points(name):
            if all(attrs.get(k.replace("__", ".")) == v for k, v in attributes.items()):
                total += float(getattr(point, "count", None) or getattr(point, "value", 0) or 0)
        return total

    # --- logs ---
    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line written to stdout, parsed."""
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line.strip()]

    def raw_log_text(self) -> str:
        return self._stream.getvalue()

    def otel_logs(self) -> list[ReadableLogRecord]:
        return list(self._otel_logs.get_finished_logs())

    def clear(self) -> None:
        self._spans.clear()
        self._otel_logs.clear()
        self._stream.seek(0)
        self._stream.truncate()


def reset_telemetry() -> None:
    """Forget the current handle and the OTel globals so a new bootstrap can run."""
    _bootstrap._forget()
    from opentelemetry import trace
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER._real_meter_provider = None
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # The httpx instrumentation keeps the tracer it got at instrument() time.
    if HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().uninstrument()


@contextmanager
def capture_telemetry(env: dict[str, str] | None = None, **overrides: Any) -> Iterator[TelemetryCapture]:
    """Bootstrap with in-memory exporters beside the configured ones; reset afterwards.

    `env` replaces the process environment for settings (defaults to empty, so
    the developer's shell cannot change a test's outcome).
    """
    reset_telemetry()
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    reader = InMemoryMetricReader()
    stream = _TeeStream()
    extras = _bootstrap.Extras(
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[reader],
        log_processors=[SimpleLogRecordProcessor(logs)],
        log_stream=stream,
    )
    tel = _bootstrap._bootstrap(overrides, extras, env if env is not None else {})
    try:
        yield TelemetryCapture(tel, spans, reader, logs, stream)
    finally:
        reset_telemetry()


@contextmanager
def serve_app(app: Any, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` on a real uvicorn server on a free loopback port (in a thread); yield its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets; without it
    # Nagle + delayed ACK add ~40 ms to every keep-alive request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server started as a real subprocess; stdout/stderr go to a file you can read."""

    def __init__(self, argv: list[str], *, port: int, env: dict[str, str], log_path: str, cwd: str | None) -> None:
        import subprocess

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)

    def wait_ready(self, path: str = "/health", timeout: float = 30.0) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args!r} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                httpx.get(self.url + path, timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.proc.args!r} not ready after {timeout}s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        if not self._log.closed:  # still readable after stop()
            self._log.flush()
        with open(self.log_path) as fh:
            return fh.read()

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def stop(self, timeout: float = 10.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)


@contextmanager
def run_server(
    argv: list[str],
    *,
    port: int,
    env: dict[str, str] | None = None,
    log_path: str,
    cwd: str | None = None,
    ready_path: str = "/health",
) -> Iterator[ServerProcess]:
    """Start `argv` (which must listen on `port`), wait until it answers, stop it afterwards."""
    import os

    proc = ServerProcess(argv, port=port, env={**os.environ, **(env or {})}, log_path=log_path, cwd=cwd)
    try:
        proc.wait_ready(ready_path)
        yield proc
    finally:
        proc.stop()
