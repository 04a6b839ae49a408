"""One circuit breaker per target service, shared process-wide: pybreaker's state machine, made right for asyncio.

Why a layer on top of pybreaker 1.4.1: it has no asyncio support, and driving it with
``with breaker.calling(): await ...`` admits every concurrent caller while half-open, counts a
``CancelledError`` as a failure, counts excluded errors (our 4xx) as successes that heal the breaker,
and reports closed->closed changes.  So admission and outcome are split here: :meth:`Breaker.admit`
decides before any I/O (one probe slot while half-open), the I/O runs outside every lock, and
:meth:`Breaker.record` replays only real successes and failures through ``CircuitBreaker.call``, so
pybreaker still owns the counters, thresholds and transitions.  Neutral outcomes (4xx, cancellation)
are never replayed, and a result that belongs to an earlier breaker period is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pybreaker

__all__ = ["Breaker", "Rejected", "Ticket", "Transition", "breaker_for", "breaker_states"]

SUCCESS, FAILURE, NEUTRAL = "success", "failure", "neutral"
STATE_VALUES = {"closed": 0, "open": 1, "half_open": 2}
_NAMES = {pybreaker.STATE_CLOSED: "closed", pybreaker.STATE_OPEN: "open", pybreaker.STATE_HALF_OPEN: "half_open"}
_NO_TRANSITIONS: tuple[Transition, ...] = ()
_log = logging.getLogger("otel_dist.client")


@dataclass(frozen=True, slots=True)
class Transition:
    target: str
    from_state: str
    to_state: str


class Rejected(Exception):
    """Admission refused without I/O: open (``retry_in`` seconds left) or half-open with the probe in flight."""

    def __init__(self, state: str, retry_in: float | None) -> None:
        super().__init__(state)
        self.state = state
        self.retry_in = retry_in


class Ticket:
    """One admitted attempt: the breaker period it belongs to, and whether it is the half-open probe."""

    __slots__ = ("generation", "probe")

    def __init__(self, generation: int, probe: bool) -> None:
        self.generation = generation
        self.probe = probe


class _UpstreamFailure(Exception):
    """Replayed into pybreaker to count one failure."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _UpstreamFailure


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        if old_state is not None and old_state.name != new_state.name:  # pybreaker repeats closed->closed
            self._breaker._changed(old_state.name, new_state.name)


class Breaker:
    """Admission and outcome recording for one target; safe across threads and event loops."""

    def __init__(
        self,
        target: str,
        *,
        failure_threshold: int,
        success_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self._clock = clock
        self._lock = threading.Lock()  # never held across an await
        self._generation = 0
        self._opened_at = 0.0  # monotonic; pybreaker's own opened_at is wall-clock
        self._probe: Ticket | None = None
        self._pending: list[Transition] = []
        # Closed with no failure counted: a success would change nothing in pybreaker, so it is not replayed,
        # and admission needs no lock (one shared ticket of the current period; it is never a probe).
        self._healthy = True
        self._healthy_ticket: Ticket | None = Ticket(0, False)
        self.pybreaker = pybreaker.CircuitBreaker(
            fail_max=failure_threshold,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
            listeners=[_Listener(self)],
            name=target,
            throw_new_error_on_trip=False,
        )

    @property
    def config(self) -> tuple[int, int, float]:
        cb = self.pybreaker
        return cb.fail_max, cb.success_threshold, cb.reset_timeout

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``.

        An open breaker whose timeout has elapsed reads ``half_open``: the next call will be its probe.
        (pybreaker only moves on that call; a readiness check that waited for it would never see it.)
        """
        cb = self.pybreaker
        name = _NAMES[cb.current_state]
        if name == "open" and self._clock() >= self._opened_at + cb.reset_timeout:
            return "half_open"
        return name

    @property
    def failures(self) -> int:
        """Consecutive failures counted by pybreaker."""
        return self.pybreaker.fail_counter

    def admit(self) -> tuple[Ticket, tuple[Transition, ...]]:
        """Let one attempt through, or raise :class:`Rejected`; returns the transitions it caused."""
        ticket = self._healthy_ticket
        if ticket is not None:  # closed, nothing counted, nothing pending: admitted without the lock
            return ticket, _NO_TRANSITIONS
        with self._lock:
            cb = self.pybreaker
            state = cb.current_state
            if state == pybreaker.STATE_OPEN:
                retry_in = self._opened_at + cb.reset_timeout - self._clock()
                if retry_in > 0:
                    raise Rejected("open", retry_in)
                cb.half_open()
                state = pybreaker.STATE_HALF_OPEN
            ticket = Ticket(self._generation, state == pybreaker.STATE_HALF_OPEN)
            if ticket.probe:
                if self._probe is not None:
                    raise Rejected("half_open", None)
                self._probe = ticket
            return ticket, self._drain()

    def record(self, ticket: Ticket, outcome: str) -> tuple[Transition, ...]:
        """Count the attempt's outcome (``success``/``failure``/``neutral``); returns the transitions it caused."""
        if outcome == SUCCESS and ticket is self._healthy_ticket:
            return _NO_TRANSITIONS  # still healthy, same period: nothing to count
        with self._lock:
            if self._probe is ticket:
                self._probe = None
            if outcome == NEUTRAL or ticket.generation != self._generation:
                return self._drain()
            if outcome == SUCCESS and self._healthy:
                return _NO_TRANSITIONS  # nothing pending: transitions are drained under this lock
            cb = self.pybreaker
            try:
                cb.call(_succeed if outcome == SUCCESS else _fail)
            except (_UpstreamFailure, pybreaker.CircuitBreakerError):
                pass
            self._healthy = outcome == SUCCESS and cb.current_state == pybreaker.STATE_CLOSED and cb.fail_counter == 0
            transitions = self._drain()
            self._healthy_ticket = Ticket(self._generation, False) if self._healthy else None
            return transitions

    def _changed(self, old: str, new: str) -> None:
        self._healthy = False  # the next success is replayed (and re-checks)
        self._healthy_ticket = None
        self._generation += 1
        self._probe = None
        if new == pybreaker.STATE_OPEN:
            self._opened_at = self._clock()
        self._pending.append(Transition(self.target, _NAMES[old], _NAMES[new]))

    def _drain(self) -> tuple[Transition, ...]:
        if not self._pending:
            return _NO_TRANSITIONS
        out = tuple(self._pending)
        self._pending.clear()
        return out


_registry: dict[str, Breaker] = {}
_registry_lock = threading.Lock()


def breaker_for(target: str, *, failure_threshold: int, success_threshold: int, reset_timeout: float) -> Breaker:
    """The process-wide breaker of `target`; the first client's configuration wins."""
    with _registry_lock:
        breaker = _registry.get(target)
        if breaker is None:
            breaker = _registry[target] = Breaker(
                target,
                failure_threshold=failure_threshold,
                success_threshold=success_threshold,
                reset_timeout=reset_timeout,
            )
        elif breaker.config != (failure_threshold, success_threshold, reset_timeout):
            _log.warning(
                "circuit breaker already configured; keeping its settings",
                extra={"otel_dist_fields": {"otel_dist.target": target, "kept": list(breaker.config)}},
            )
        return breaker


def breaker_states() -> dict[str, str]:
    """Target service -> ``closed``/``open``/``half_open`` for every breaker in this process (for ``/ready``)."""
    with _registry_lock:
        breakers = list(_registry.values())
    return {b.target: b.state for b in breakers}


def all_breakers() -> list[Breaker]:
    with _registry_lock:
        return list(_registry.values())


def _forget_breakers(*targets: Any) -> None:
    """Drop breakers (all when no target is given); tests only."""
    with _registry_lock:
        for target in targets or list(_registry):
            _registry.pop(target, None)
