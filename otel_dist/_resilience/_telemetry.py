"""What the service client records: one namespace, low-cardinality attributes, on the Telemetry handle's meter.

No OpenTelemetry semantic convention covers retries or circuit breakers, so every instrument lives under
``otel_dist.client.*`` / ``otel_dist.circuit_breaker.*`` and every attribute is bounded: the target
service name, the HTTP method, an outcome, a reason or a breaker state.  docs/how-to/service-client.md documents them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation

from .._lean_histogram import LeanHistogram
from .._logs import get_logger
from ._breaker import STATE_VALUES, Transition, all_breakers
from ._budget import all_budgets

if TYPE_CHECKING:
    from .._bootstrap import Telemetry

__all__ = ["ClientTelemetry", "client_telemetry"]

TARGET = "otel_dist.target"
_log = get_logger("otel_dist.client")
_MAX_CACHED = 1024


def _observe_states(options: CallbackOptions) -> Iterable[Observation]:
    for breaker in all_breakers():
        yield Observation(STATE_VALUES[breaker.state], {TARGET: breaker.target})


def _observe_budgets(options: CallbackOptions) -> Iterable[Observation]:
    for budget in all_budgets():
        yield Observation(budget.remaining(), {TARGET: budget.target})


class ClientTelemetry:
    """Instruments shared by every client bound to one Telemetry handle."""

    def __init__(self, telemetry: Telemetry) -> None:
        meter = telemetry.meter("otel_dist.client")
        self.tracer = telemetry.tracer("otel_dist.client")
        self.duration = LeanHistogram(
            meter.create_histogram(
                "otel_dist.client.call.duration",
                unit="s",
                description="Duration of logical service calls, retries and waits included.",
            )
        )
        self.retries = meter.create_counter(
            "otel_dist.client.retries", unit="{retry}", description="Attempts resent after a retryable failure."
        )
        self.give_ups = meter.create_counter(
            "otel_dist.client.give_ups", unit="{call}", description="Logical calls the client gave up on."
        )
        self.transitions = meter.create_counter(
            "otel_dist.circuit_breaker.transitions",
            unit="{transition}",
            description="Circuit breaker state changes.",
        )
        self.rejections = meter.create_counter(
            "otel_dist.circuit_breaker.rejections",
            unit="{call}",
            description="Attempts refused without I/O by an open (or probing half-open) breaker.",
        )
        meter.create_observable_gauge(
            "otel_dist.circuit_breaker.state",
            callbacks=[_observe_states],
            unit="{state}",
            description="Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        )
        meter.create_observable_gauge(
            "otel_dist.client.retry_budget.remaining",
            callbacks=[_observe_budgets],
            unit="{retry}",
            description="Retries the target's retry budget still allows in its sliding window.",
        )
        self._attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def _cached(self, key: tuple[Any, ...], build: dict[str, Any]) -> dict[str, Any]:
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = build
            if len(self._attrs) < _MAX_CACHED:
                self._attrs[key] = attrs
        return attrs

    def record_call(self, target: str, method: str, outcome: str, error_type: str | None, seconds: float) -> None:
        key = ("call", target, method, outcome, error_type)
        attrs = self._attrs.get(key)
        if attrs is None:
            build = {TARGET: target, "http.request.method": method, "otel_dist.outcome": outcome}
            if error_type is not None:
                build["error.type"] = error_type
            attrs = self._cached(key, build)
        self.duration.record(seconds, attrs, key)

    def record_retry(self, target: str, reason: str) -> None:
        self.retries.add(1, self._cached(("retry", target, reason), {TARGET: target, "otel_dist.retry.reason": reason}))

    def record_rejection(self, target: str) -> None:
        self.rejections.add(1, self._cached(("rejected", target), {TARGET: target}))

    def record_give_up(
        self, target: str, method: str, reason: str, attempts: int, error_type: str, elapsed: float
    ) -> None:
        self.give_ups.add(
            1, self._cached(("give_up", target, reason), {TARGET: target, "otel_dist.give_up.reason": reason})
        )
        log = _log.info if reason == "circuit_open" and attempts == 0 else _log.warning
        log(
            "service call gave up",
            **{
                TARGET: target,
                "otel_dist.give_up.reason": reason,
                "otel_dist.attempts": attempts,
                "http.request.method": method,
                "error.type": error_type,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )

    def record_transitions(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            attrs = {
                TARGET: t.target,
                "otel_dist.circuit_breaker.from": t.from_state,
                "otel_dist.circuit_breaker.to": t.to_state,
            }
            self.transitions.add(1, attrs)
            log = _log.warning if t.to_state == "open" else _log.info
            log(f"circuit breaker {t.from_state} -> {t.to_state}", **attrs)


_by_handle: weakref.WeakKeyDictionary[Telemetry, ClientTelemetry] = weakref.WeakKeyDictionary()
_by_handle_lock = threading.Lock()


def client_telemetry(telemetry: Telemetry) -> ClientTelemetry:
    """The instruments of `telemetry` (created once per handle, so tests with fresh handles see their own)."""
    with _by_handle_lock:
        found = _by_handle.get(telemetry)
        if found is None:
            found = _by_handle[telemetry] = ClientTelemetry(telemetry)
        return found
