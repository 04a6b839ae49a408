"""What a caller of :class:`ServiceClient` can catch when a call does not get through."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["CircuitOpenError", "ServiceCallError"]


class ServiceCallError(httpx.RequestError):
    """The client gave up on a call to `target`.

    ``reason`` is the low-cardinality give-up reason also used in metrics
    (``max_tries``, ``deadline``, ``non_retryable``, ``circuit_open``);
    ``attempts`` is how many requests were actually sent; ``response`` is the
    last response received (a retryable status), if any.  The last exception,
    if any, is the ``__cause__``.  Being an ``httpx.RequestError``, it is caught
    by code that already handles httpx's own errors.
    """

    def __init__(
        self,
        message: str,
        *,
        target: str,
        reason: str,
        attempts: int,
        response: httpx.Response | None = None,
        request: httpx.Request | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.target = target
        self.reason = reason
        self.attempts = attempts
        self.response = response


class CircuitOpenError(ServiceCallError):
    """The breaker of `target` is open (or half-open with its probe in flight): the call was stopped.

    ``retry_in`` is the number of seconds until the breaker admits a probe (None when unknown, e.g. a probe
    is in flight or the breaker opened during this call's retries).
    """

    def __init__(self, message: str, *, retry_in: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_in = retry_in
