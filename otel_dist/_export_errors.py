"""Failed OTLP exports, reported once per signal with the likely cause, then rate-limited.

The upstream OTLP/HTTP exporters log every failed attempt of every batch (``Transient error
BadStatusLine('\\x00\\x00...')``, then ``Failed to export ... batch``): several lines a second per
signal, none of which says what to change.  A filter on their loggers keeps the first failure of
each signal, rewritten to name the endpoint, the likely cause ("this looks like a gRPC port") and
the setting to fix, and drops the rest, with one summary line (and a count) per signal at most
every ``interval`` seconds while failures go on.  What is dropped stays counted in the SDK's own
exporter metrics (``otel_sdk_exporter_span_exported_total{error_type=...}``).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

__all__ = ["EXPORTER_LOGGERS", "ExportErrorFilter", "likely_cause"]

EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
# The upstream client's messages (opentelemetry/exporter/otlp/common/http.py), by their format string.
_TRANSIENT = "Transient error %s encountered while exporting %s batch, retrying in %.2fs."
_GAVE_UP = "Failed to export %s batch due to timeout, max retries or shutdown."
_FAILED = "Failed to export %s batch code: %s, reason: %s"
_SIGNAL = {"spans": "traces", "metrics": "metrics", "logs": "logs"}
GRPC_PORT, HTTP_PORT = 4317, 4318
GRPC_CAUSE = (
    "this looks like a gRPC port: it answers HTTP/1.1 with HTTP/2 frames; OTEL_EXPORTER_OTLP_ENDPOINT "
    f"must be the collector's OTLP/HTTP address (usually port {HTTP_PORT}), or set OTEL_EXPORTER_OTLP_PROTOCOL=grpc "
    "(pip install 'otel-dist[grpc]')"
)
CLOSED_CAUSE = "the server closed the connection without an HTTP/1.1 answer"


def likely_cause(error: str, status: object, endpoint: str | None) -> str:
    """What a person should check, from the error text, the HTTP status and the configured endpoint."""
    port_match = re.search(r"port=(\d+)", error)
    port = int(port_match.group(1)) if port_match else _port(endpoint)
    if ("BadStatusLine" in error and ("\\x00\\x00" in error or "\\x04" in error)) or (
        port == GRPC_PORT and re.search(r"RemoteDisconnected|Connection aborted|BadStatusLine", error)
    ):
        return GRPC_CAUSE
    if re.search(r"Connection reset|RemoteDisconnected|Connection aborted", error):
        return CLOSED_CAUSE
    if re.search(r"Connection refused|Failed to establish a new connection", error):
        hint = f"; {GRPC_PORT} is the OTLP gRPC port, OTLP/HTTP is usually {HTTP_PORT}" if port == GRPC_PORT else ""
        return f"nothing listens there: is the collector running (otel-dist stack up starts one locally)?{hint}"
    if re.search(r"Name or service not known|nodename nor servname|getaddrinfo|NameResolutionError", error):
        return "the host name does not resolve: check the host in OTEL_EXPORTER_OTLP_ENDPOINT"
    if re.search(r"WRONG_VERSION_NUMBER|SSLError|CERTIFICATE_VERIFY_FAILED", error):
        return "TLS failed: an https:// endpoint on a plain-HTTP port, or an untrusted certificate"
    if re.search(r"[Tt]imed? ?out|ReadTimeout|ConnectTimeout", error):
        return "no answer within OTEL_EXPORTER_OTLP_TIMEOUT: a slow or overloaded collector, or a firewall"
    if status == 404:
        return (
            "the endpoint answered 404: OTEL_EXPORTER_OTLP_ENDPOINT is the base URL (the /v1/<signal> path is "
            "added), or this is not an OTLP/HTTP receiver"
        )
    if status in (401, 403):
        return f"the collector refused the request ({status}): check the credentials in OTEL_EXPORTER_OTLP_HEADERS"
    if isinstance(status, int) and status >= 400:
        return f"the collector answered {status}"
    return error[:300] or "unknown error"


class ExportErrorFilter(logging.Filter):
    """Install on the exporters' loggers; one per process (``bootstrap`` does it)."""

    def __init__(
        self,
        endpoint: str | Mapping[str, str | None] | None,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`endpoint`: one for every signal, or one per signal (``{"traces": ..., ...}``)."""
        super().__init__()
        per_signal = endpoint if isinstance(endpoint, Mapping) else {}
        self.endpoint = None if isinstance(endpoint, Mapping) else _shown(endpoint)
        self._endpoints = {signal: _shown(url) for signal, url in per_signal.items()}
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_report: dict[str, float] = {}
        self._cause: dict[str, str] = {}  # the most telling cause seen per signal
        self._suppressed: dict[str, int] = {}
        self._http2: dict[str | None, bool] = {}  # does an endpoint speak HTTP/2 only? probed once each

    def filter(self, record: logging.LogRecord) -> bool:
        parsed = self._parse(record)
        if parsed is None:
            return True  # not an export failure: leave it alone
        signal, error, status = parsed
        if signal is None:
            return False  # "Failed to export ... due to timeout": the transient line before it said why
        endpoint = self._endpoints.get(signal, self.endpoint)
        cause = likely_cause(error, status, endpoint)
        if cause == CLOSED_CAUSE and self._speaks_http2(endpoint):
            cause = GRPC_CAUSE  # a gRPC server resets some HTTP/1.1 requests instead of answering with frames
        now = self._clock()
        with self._lock:
            known = self._cause.get(signal)
            # Reported at once: a signal's first failure, and a cause more telling than the one reported.
            first = known is None or (known != cause and known == CLOSED_CAUSE)
            if not first and known is not None and cause == CLOSED_CAUSE:
                cause = known
            due = now - self._last_report.get(signal, now) >= self.interval
            if not first and not due:
                self._suppressed[signal] = self._suppressed.get(signal, 0) + 1
                return False
            more = self._suppressed.pop(signal, 0)
            self._cause[signal] = cause
            self._last_report[signal] = now
        where = f" to {endpoint}" if endpoint else ""
        if first:
            record.msg = "OTLP %s export%s failed: %s (%s). Reported once; then at most every %d s with a count."
            record.args = (signal, where, cause, _short(error), int(self.interval))
        else:
            record.msg = "OTLP %s export%s still failing: %d more failed attempts in the last %d s (%s)"
            record.args = (signal, where, more + 1, int(self.interval), cause)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def _speaks_http2(self, endpoint: str | None) -> bool:
        if endpoint not in self._http2:
            self._http2[endpoint] = speaks_http2(endpoint)
        return self._http2[endpoint]

    @staticmethod
    def _parse(record: logging.LogRecord) -> tuple[str | None, str, object] | None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == _TRANSIENT and len(args) == 3:
            return _SIGNAL.get(str(args[1]), str(args[1])), str(args[0]), None
        if record.msg == _FAILED and len(args) == 3:
            return _SIGNAL.get(str(args[0]), str(args[0])), str(args[2]), args[1]
        if record.msg == _GAVE_UP:
            return None, "", None
        return None


def speaks_http2(endpoint: str | None, timeout: float = 1.0) -> bool:
    """Whether the endpoint answers an HTTP/1.1 request with an HTTP/2 frame header (what gRPC servers do).

    A diagnostic byte check, run once per process after an unexplained reset; not an HTTP client.
    """
    parts = urlsplit(endpoint or "")
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        port = parts.port or 80
        with socket.create_connection((parts.hostname, port), timeout=timeout) as conn:
            conn.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: otel-dist\r\nContent-Length: 0\r\n\r\n")
            head = conn.recv(9)
    except (OSError, ValueError):
        return False
    # An HTTP/2 frame header: a 24-bit length, then type 0x04 (SETTINGS) or 0x07 (GOAWAY).
    return len(head) >= 4 and head[:1] == b"\x00" and head[3] in (0x04, 0x07)


def install(
    endpoint: str | Mapping[str, str | None] | None,
    *,
    interval: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> ExportErrorFilter:
    """Attach one filter to every OTLP exporter logger, replacing one installed earlier."""
    error_filter = ExportErrorFilter(endpoint, interval=interval, clock=clock)
    for name in EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ExportErrorFilter)]:
            logger.removeFilter(old)
        logger.addFilter(error_filter)
    return error_filter


def _port(endpoint: str | None) -> int | None:
    if not endpoint:
        return None
    try:
        return urlsplit(endpoint).port
    except ValueError:
        return None


def _shown(endpoint: str | None) -> str | None:
    """The endpoint without credentials in its URL."""
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = f":{parts.port}" if _port(endpoint) else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _short(error: str) -> str:
    return error if len(error) <= 200 else error[:200] + "..."
