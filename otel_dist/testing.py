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

import dataclasses
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import _bootstrap

__all__ = [
    "TelemetryCapture",
    "capture_telemetry",
    "leaked_secrets",
    "note_http_exchange",
    "record_captured",
    "register_secret",
    "reset_telemetry",
]


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
        self._flush_spans()
        return list(self._spans.get_finished_spans())

    def _flush_spans(self) -> None:
        # Spans only: flushing the meter provider would collect the in-memory reader (and its exemplars).
        flush = getattr(self.telemetry.tracer_provider, "force_flush", None)  # None: OTEL_SDK_DISABLED
        if flush is not None:
            flush()

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

    def record(self) -> None:
        """Hand everything captured so far to the secrets check (see ``leaked_secrets``)."""
        try:
            self._flush_spans()
            parts = [self._stream.getvalue()]
            parts += [span.to_json(indent=None) for span in self._spans.get_finished_spans()]
            parts += [log.to_json(indent=None) for log in self._otel_logs.get_finished_logs()]
            data = self._reader.get_metrics_data()
            if data is not None:
                parts.append(data.to_json(indent=None))
        except Exception as exc:  # noqa: BLE001 - recording must never fail the test itself
            parts = [f"<capture not recorded: {exc!r}>"]
        record_captured("capture_telemetry", "\n".join(parts))

    def clear(self) -> None:
        self.record()
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
    the developer's shell cannot change a test's outcome).  The environment is
    ``test`` unless `env` or `overrides` name one: ``ENVIRONMENT=""`` in `env` leaves it unset (production rules).
    """
    named_in_resource = "deployment.environment" in (env or {}).get("OTEL_RESOURCE_ATTRIBUTES", "")
    if "environment" not in overrides and "ENVIRONMENT" not in (env or {}) and not named_in_resource:
        overrides = {**overrides, "environment": "test"}
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
    register_settings_secrets(tel.settings)
    capture = TelemetryCapture(tel, spans, reader, logs, stream)
    try:
        yield capture
    finally:
        capture.record()
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


# ---------------------------------------------------------------- secrets check
# Tests register the secrets they use (settings and Authorization values are registered
# for them); capture_telemetry, ServerProcess and the suite's httpx hook record what was
# captured: log lines, spans, metric points, process output, /metrics, error bodies.
# tests/conftest.py fails the session if any registered secret, or any token-shaped
# string, turns up in any of it.

_SECRETS: set[str] = set()
_CAPTURED: list[tuple[str, str]] = []
MIN_SECRET_LENGTH = 8
# Signed tokens (JWS compact form) are never acceptable in telemetry, whoever minted them.
_TOKEN_SHAPES = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def register_secret(*values: str | None) -> None:
    """Declare strings that must never appear in captured logs, spans, metrics or error bodies."""
    for value in values:
        # Long enough and not a run of one or two characters ("x" * 40 is a test's filler, not a secret).
        if value and len(value) >= MIN_SECRET_LENGTH and len(set(value)) >= 4:
            _SECRETS.add(value)


def _register_value(value: Any) -> None:
    from urllib.parse import urlsplit

    if isinstance(value, tuple):  # key=value pairs (OTLP headers): the values are the secrets
        for item in value:
            _register_value(item[1] if isinstance(item, tuple) else item)
    elif isinstance(value, str):
        if "://" in value and "\n" not in value:  # a URL: only its password is secret
            try:
                register_secret(urlsplit(value).password)
            except ValueError:
                register_secret(value)
        else:  # a secret, or a PEM key: each line of key material too
            register_secret(value, *(line for line in value.splitlines() if not line.startswith("-----")))


def register_settings_secrets(settings: Any) -> None:
    """Register the value of every setting marked secret."""
    for f in dataclasses.fields(settings):
        if f.metadata.get("secret"):
            _register_value(getattr(settings, f.name))


def register_env_secrets(env: Mapping[str, str]) -> None:
    """Register the secret settings found in a process environment."""
    from ._settings import Settings

    for f in dataclasses.fields(Settings):
        if not f.metadata["secret"]:
            continue
        for name in f.metadata["env"]:
            raw = env.get(name, "").strip()
            if raw:
                try:
                    _register_value(f.metadata["parse"](raw))
                except (ValueError, TypeError):
                    register_secret(raw)


def record_captured(where: str, text: str) -> None:
    """Keep `text` for the end-of-session secrets check; `where` says what it was."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    _CAPTURED.append((f"{test}: {where}" if test else where, text))


def note_http_exchange(response: Any) -> None:
    """Register the credential a request sent; record the body of an error response."""
    request = response.request
    for header in ("authorization", "proxy-authorization"):
        value = request.headers.get(header)
        if value:
            register_secret(value, value.split(" ", 1)[-1].strip())
    if response.status_code >= 400:
        try:
            body = response.text
        except Exception:  # noqa: BLE001 - a streamed body that was not read: nothing to record
            return
        record_captured(f"error body of {request.method} {request.url}", body)


def leaked_secrets(
    secrets: Iterable[str] | None = None, captured: Iterable[tuple[str, str]] | None = None
) -> list[str]:
    """One line per leak found (the secret itself masked); default: everything registered and recorded."""
    secrets = sorted(_SECRETS if secrets is None else secrets, key=len, reverse=True)
    found = []
    for where, text in _CAPTURED if captured is None else captured:
        hits = [(text.find(s), s) for s in secrets]
        hits += [(m.start(), m.group()) for m in _TOKEN_SHAPES.finditer(text)]
        for at, secret in hits:
            if at >= 0:
                context = text[max(0, at - 60) : at + len(secret) + 60].replace(secret, "<SECRET>")
                found.append(f"{where}: a secret ({len(secret)} chars) in ...{context!r}...")
    return found


def secrets_check_stats() -> tuple[int, int, int]:
    """(secrets registered, captures recorded, characters recorded)."""
    return len(_SECRETS), len(_CAPTURED), sum(len(text) for _, text in _CAPTURED)


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
        register_env_secrets(env)

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
            self._record_metrics()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
            record_captured(f"process {' '.join(map(str, self.proc.args))}", self.output())  # type: ignore[arg-type]
        return int(self.proc.returncode)

    def _record_metrics(self) -> None:
        """The process's /metrics (labels included) for the secrets check, if it serves one."""
        import httpx

        try:
            response = httpx.get(self.url + "/metrics", timeout=2.0)
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            record_captured(f"/metrics of {self.url}", response.text)


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
