"""Throttling for a public edge: token buckets per key, answered with 429 and ``Retry-After``.

    login_throttle = throttle(app, "login")   # LOGIN_RATE_LIMIT_PER_USERNAME / _PER_CLIENT

    @app.post("/login")
    async def login(body: Credentials, request: Request):
        login_throttle.check(request, body.username)   # raises a 429 when over either limit

Two limits per route: per submitted username (slows password guessing against one
account, whether or not the account exists, so the answer never tells which names are
taken) and per client address (slows one client trying many names).  Each key has a
token bucket of ``limit`` attempts refilled evenly over ``window`` seconds; the table of
keys is an LRU bounded by ``max_keys``.  Rejections are counted in
``otel_dist.throttle.rejections`` and logged at most a few times a second, with the
number of lines suppressed in between.

Why a small layer of our own: none of the project's libraries limits rates, and a
per-process bucket is all one edge instance needs (a shared store is a known limit).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from opentelemetry.metrics import Meter

from ._logs import RateLimitedLog, get_logger
from ._settings import _rate

__all__ = ["Rate", "Throttle", "TokenBuckets", "parse_rate", "throttle"]

Rate = tuple[int, float]
"""(attempts, per seconds)."""
_MAX_KEY = 128  # usernames and addresses longer than this are cut before they become keys
_log = get_logger("otel_dist.throttle")


def parse_rate(value: str) -> Rate:
    """``"5/60"`` -> (5, 60.0): 5 attempts per 60 seconds.  ``"0"`` turns the limit off."""
    text = _rate(value)
    if text == "0":
        return (0, 0.0)
    count, _, window = text.partition("/")
    return (int(count), float(window))


def throttle(app: Any, name: str) -> Throttle:
    """A :class:`Throttle` for `app` from its settings (``LOGIN_RATE_LIMIT_PER_USERNAME`` / ``_PER_CLIENT``)."""
    settings = app.state.settings
    return Throttle(
        name,
        per_username=parse_rate(settings.login_rate_per_username),
        per_client=parse_rate(settings.login_rate_per_client),
        meter=app.state.otel_dist_telemetry.meter("otel_dist.throttle"),
    )


class TokenBuckets:
    """One token bucket per key: ``limit`` tokens, refilled at ``limit / window`` per second."""

    def __init__(self, rate: Rate, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window = rate
        self._per_second = self.limit / self.window if self.limit else 0.0
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, updated]
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 if allowed, else the seconds until the next one."""
        if not self.limit:
            return 0.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(self.limit), now]
                if len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(float(self.limit), bucket[0] + (now - bucket[1]) * self._per_second)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / self._per_second

    def __len__(self) -> int:
        return len(self._buckets)


class Throttle:
    """Per-username and per-client limits for one route; :meth:`check` raises a 429."""

    def __init__(
        self,
        name: str,
        *,
        per_username: Rate,
        per_client: Rate,
        meter: Meter | None = None,
        max_keys: int = 100_000,
    ) -> None:
        self.name = name
        self.by_username = TokenBuckets(per_username, max_keys=max_keys)
        self.by_client = TokenBuckets(per_client, max_keys=max_keys)
        self._rejections = (
            meter.create_counter(
                "otel_dist.throttle.rejections",
                unit="{request}",
                description="Requests refused with 429 by a throttle, by throttle name and key kind.",
            )
            if meter is not None
            else None
        )
        self._attrs = {
            kind: {"otel_dist.throttle.name": name, "otel_dist.throttle.key": kind} for kind in ("username", "client")
        }
        self._log = RateLimitedLog(_log, per_second=2.0)

    def check(self, request: Request, username: str | None) -> None:
        """Count one attempt; raise ``HTTPException(429)`` with ``Retry-After`` when over either limit."""
        client = request.client.host if request.client else "unknown"
        # Both buckets are charged, so guessing across names still spends the client's budget.
        wait_client = self.by_client.take(client[:_MAX_KEY])
        wait_user = self.by_username.take(username.strip().lower()[:_MAX_KEY]) if username is not None else 0.0
        wait = max(wait_client, wait_user)
        if not wait:
            return
        kind = "username" if wait_user >= wait_client else "client"
        if self._rejections is not None:
            self._rejections.add(1, self._attrs[kind])
        fields: dict[str, Any] = {"otel_dist.throttle.name": self.name, "otel_dist.throttle.key": kind}
        self._log.warning("request throttled", **fields)
        retry_after = max(1, math.ceil(wait))
        # The same body whichever limit it was and whether or not the user exists: no enumeration.
        raise HTTPException(
            429,
            {"error": "too_many_requests", "detail": f"too many attempts; retry in {retry_after} s"},
            headers={"Retry-After": str(retry_after)},
        )
