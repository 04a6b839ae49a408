"""W3C trace context + baggage, and the bridge for the legacy X-Correlation-ID.

Inbound headers come from the network: values are size-bounded before any
parser sees them and a malformed ``traceparent`` simply starts a new trace.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from importlib.metadata import entry_points

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._settings import Settings

# W3C limits: tracestate 32 members (~512 chars is the recommended floor), baggage 8192 bytes.
_MAX_TRACESTATE = 512
_MAX_BAGGAGE = 8192
_MAX_CORRELATION_ID = 128
_CORRELATION_OK = re.compile(r"[A-Za-z0-9._:\-/+=@]{1,128}")

correlation_id: ContextVar[str | None] = ContextVar("otel_dist_correlation_id", default=None)


def build_propagator(settings: Settings) -> TextMapPropagator:
    """OTEL_PROPAGATORS in order: the W3C ones built in, any other name from the installed
    `opentelemetry_propagator` entry points (b3, b3multi, jaeger, xray...), as upstream loads them."""
    parts: list[TextMapPropagator] = []
    for name in settings.propagators:
        if name == "tracecontext":
            parts.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            parts.append(W3CBaggagePropagator())
        else:
            (entry_point,) = entry_points(group="opentelemetry_propagator", name=name)  # checked in _settings
            parts.append(entry_point.load()())
    return CompositePropagator(parts)


def install_propagator(settings: Settings) -> None:
    propagate.set_global_textmap(build_propagator(settings))


def extract_from_headers(traceparent: str | None, tracestate: str | None, baggage: str | None) -> Context | None:
    """Parent context from already-decoded header values; None when nothing usable came in."""
    if traceparent is None and baggage is None:
        return None
    carrier: dict[str, str] = {}
    if traceparent is not None and len(traceparent) <= 128:
        carrier["traceparent"] = traceparent
        if tracestate is not None and len(tracestate) <= _MAX_TRACESTATE:
            carrier["tracestate"] = tracestate
    if baggage is not None and len(baggage) <= _MAX_BAGGAGE:
        carrier["baggage"] = baggage
    if not carrier:
        return None
    try:
        return propagate.extract(carrier)
    except Exception:  # noqa: BLE001 - a hostile header must never fail the request
        return None


def extract_from_all_headers(raw_headers: list[tuple[bytes, bytes]]) -> Context | None:
    """Parent context when a non-W3C propagator is configured: it may read any header.

    Each header is size-bounded; a repeated one keeps its first value.
    """
    carrier: dict[str, str] = {}
    for name, value in raw_headers:
        if len(value) <= _MAX_BAGGAGE:
            carrier.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    if len(carrier.get("traceparent", "")) > 128 or len(carrier.get("tracestate", "")) > _MAX_TRACESTATE:
        carrier.pop("traceparent", None)
        carrier.pop("tracestate", None)
    try:
        return propagate.extract(carrier)
    except Exception:  # noqa: BLE001 - a hostile header must never fail the request
        return None


def clean_correlation_id(raw: str | None) -> str | None:
    """Keep a legacy correlation id only if it is a short, plain token."""
    if raw is None or len(raw) > _MAX_CORRELATION_ID or not _CORRELATION_OK.fullmatch(raw):
        return None
    return raw
