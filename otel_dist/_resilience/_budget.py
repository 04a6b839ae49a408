"""Retry budget per target service: retries may add at most a fraction of the calls, plus a small floor.

The idea of Finagle's ``RetryBudget`` (and Envoy's retry budgets, gRPC's retry throttling): without it,
N callers that each retry up to 3 times send a failing service up to 4x its load exactly when it can
least take it.  Here every logical call deposits ``ratio`` of a retry and every retry withdraws one,
over a sliding window; ``min_per_second`` x window retries are always allowed so that a quiet service
still gets its single transient failure retried.  Neither backoff nor pybreaker has a budget, hence
this small layer (one per target, shared process-wide like the breaker).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RetryBudget", "all_budgets", "budget_for"]

_BUCKETS = 10  # the window slides in tenths


class RetryBudget:
    """Calls and retries counted in ``_BUCKETS`` slices of `window` seconds; thread-safe."""

    def __init__(
        self,
        target: str,
        *,
        ratio: float,
        min_per_second: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._width = window / _BUCKETS
        self._clock = clock
        self._lock = threading.Lock()
        self._calls = [0] * _BUCKETS
        self._retries = [0] * _BUCKETS
        self._total_calls = 0
        self._total_retries = 0
        self._slice = math.floor(clock() / self._width)

    @property
    def config(self) -> tuple[float, float, float]:
        return self.ratio, self.min_per_second, self.window

    def _advance(self) -> int:
        """Drop the slices that left the window; returns the index of the current one."""
        now = math.floor(self._clock() / self._width)
        passed = now - self._slice
        if passed > 0:
            for step in range(1, min(passed, _BUCKETS) + 1):
                i = (self._slice + step) % _BUCKETS
                self._total_calls -= self._calls[i]
                self._total_retries -= self._retries[i]
                self._calls[i] = self._retries[i] = 0
            self._slice = now
        return now % _BUCKETS

    def _allowed(self) -> float:
        return self.ratio * self._total_calls + self.min_per_second * self.window

    def deposit(self) -> None:
        """One logical call started."""
        with self._lock:
            self._calls[self._advance()] += 1
            self._total_calls += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            i = self._advance()
            if self._total_retries + 1 > self._allowed():
                return False
            self._retries[i] += 1
            self._total_retries += 1
            return True

    def remaining(self) -> float:
        """Retries still allowed in the current window (for the gauge)."""
        with self._lock:
            self._advance()
            return float(max(0, math.floor(self._allowed() - self._total_retries + 1e-9)))


_registry: dict[str, RetryBudget] = {}
_registry_lock = threading.Lock()


def budget_for(target: str, *, ratio: float, min_per_second: float, window: float) -> RetryBudget:
    """The process-wide budget of `target`; the first client's configuration wins (like its breaker)."""
    with _registry_lock:
        budget = _registry.get(target)
        if budget is None:
            budget = _registry[target] = RetryBudget(target, ratio=ratio, min_per_second=min_per_second, window=window)
        return budget


def all_budgets() -> list[RetryBudget]:
    with _registry_lock:
        return list(_registry.values())


def _forget_budgets(*targets: str) -> None:
    """Drop budgets (all when no target is given); tests only."""
    with _registry_lock:
        for target in targets or list(_registry):
            _registry.pop(target, None)
