"""Retry rules for the service client, as small pure pieces that ``backoff.on_exception`` is driven with.

- what is retryable: network errors, timeouts, 408, 429, 502, 503, 504; never another status;
- what may be resent: idempotent methods, or any request carrying an ``Idempotency-Key``;
- how long to wait: ``Retry-After`` as given (no jitter), else full jitter over backoff's capped ``expo``;
- when to stop early: the total deadline (monotonic), a non-retryable failure, an open breaker, a spent
  retry budget (:mod:`._budget`).

backoff's own ``max_time`` is measured with ``datetime.now()`` and lets the last attempt run past it, so the
deadline is enforced here: the wait generator ends the loop (backoff then gives up) when a wait would reach the
deadline, and the client gives each attempt at most the time left.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Generator
from datetime import UTC
from typing import TYPE_CHECKING, Any

import backoff
import httpx

if TYPE_CHECKING:
    from ._breaker import Breaker
    from ._budget import RetryBudget

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "AttemptFailed",
    "CallState",
    "error_retry_reason",
    "is_replayable",
    "parse_retry_after",
    "should_give_up",
    "wait_times",
]

IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE"))
RETRYABLE_STATUSES = frozenset((408, 429, 502, 503, 504))
GIVE_UP_REASONS = ("max_tries", "deadline", "non_retryable", "circuit_open", "budget_exhausted")


def is_replayable(request: httpx.Request) -> bool:
    """May this request be sent again after a failure that might have reached the server?"""
    return request.method in IDEMPOTENT_METHODS or "idempotency-key" in request.headers


def error_retry_reason(exc: BaseException) -> str | None:
    """The retry reason of a transport failure, or None if retrying cannot help (a local error)."""
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return "network_error"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date; None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class CallState:
    """One logical call: its deadline (monotonic), the request resent on every attempt, and how it ended."""

    __slots__ = (
        "attempts",
        "breaker",
        "budget",
        "deadline",
        "give_up_reason",
        "last_failure",
        "replay",
        "replayable",
        "request",
        "trace_hook",
    )

    def __init__(self, request: httpx.Request, deadline: float, breaker: Breaker, budget: RetryBudget) -> None:
        self.request = request
        self.deadline = deadline
        self.breaker = breaker
        self.budget = budget
        self.replayable = is_replayable(request)
        self.attempts = 0
        self.give_up_reason: str | None = None
        self.last_failure: AttemptFailed | None = None  # the last attempt that did I/O and failed
        self.replay: AttemptFailed | None = None  # the first attempt's failure, for backoff's loop to take over
        self.trace_hook: Any = request.extensions.get("trace")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


class AttemptFailed(Exception):
    """One attempt ended in a retryable-looking failure; backoff retries on this type only.

    ``reason`` is the retry reason (``status_503``, ``timeout``...); ``give_up`` is set when the failure must
    end the call at once (``non_retryable``, ``circuit_open``, ``deadline``).
    """

    def __init__(
        self,
        call: CallState,
        *,
        reason: str | None = None,
        give_up: str | None = None,
        response: httpx.Response | None = None,
        error: BaseException | None = None,
        retry_after: float | None = None,
        rejected: Any = None,
    ) -> None:
        super().__init__(reason or give_up)
        self.call = call
        self.reason = reason
        self.give_up = give_up
        self.response = response
        self.error = error
        self.retry_after = retry_after
        self.rejected = rejected

    @property
    def error_type(self) -> str:
        if self.rejected is not None:
            return "circuit_open"
        if self.response is not None:
            return str(self.response.status_code)
        if self.error is not None:
            return type(self.error).__qualname__
        return self.give_up or "unknown"


def should_give_up(failure: Exception) -> bool:
    """backoff's ``giveup`` predicate; records why on the call."""
    if not isinstance(failure, AttemptFailed):
        return True
    call = failure.call
    if failure.give_up is not None:
        call.give_up_reason = failure.give_up
    elif call.remaining() <= 0:
        call.give_up_reason = "deadline"
    elif call.breaker.state == "open":
        call.give_up_reason = "circuit_open"  # an open breaker ends the retry loop
    else:
        return False
    return True


def wait_times(*, base: float, max_value: float) -> Generator[float, Any, None]:
    """backoff wait generator: ``Retry-After`` as sent, else full jitter over ``expo(base)`` capped at `max_value`.

    Returning (instead of yielding) makes backoff give up: done when the wait would reach the deadline.
    """
    failure: AttemptFailed = yield 0.0  # backoff primes every wait generator with send(None)
    delays = backoff.expo(base=base, factor=1.0, max_value=max_value)  # after the first failure: calls that
    next(delays)  # succeed at once (most) never need it; expo yields once before its first value
    while True:
        if failure.retry_after is not None:
            wait = failure.retry_after
        else:
            wait = backoff.full_jitter(next(delays))
        if wait >= failure.call.remaining():
            failure.call.give_up_reason = "deadline"
            return
        if not failure.call.budget.try_withdraw():  # withdrawn only for a retry that will happen
            failure.call.give_up_reason = "budget_exhausted"
            return
        failure = yield wait
