"""``ServiceClient``: one resilient, observable httpx client per target service.

Layers, outermost first (as .NET's standard resilience pipeline):

1. logical call span + total deadline (monotonic; never past the deadline of the request being handled)
   + the call duration metric;
2. retry (``backoff.on_exception`` over :mod:`._retry`'s rules), within the target's retry budget;
3. circuit breaker (:mod:`._breaker`, pybreaker per target, shared process-wide);
4. per-attempt timeout (never past the deadline), sent along as ``x-otel-dist-deadline-ms``;
5. service auth: the ``httpx.Auth`` given to the client runs on every attempt (it may resend once on a 401);
6. the instrumented httpx transport: one CLIENT span per attempt (``_httpx``, or contrib's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from http.cookiejar import CookieJar
from typing import Any

import backoff
import httpx
from backoff.types import Details
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _httpx
from .._bootstrap import Telemetry, bootstrap
from .._deadline import HEADER as DEADLINE_HEADER
from .._deadline import REQUEST
from .._lean_span import set_clean_attributes, start_span
from .._transport import service_transport
from ._breaker import FAILURE, NEUTRAL, SUCCESS, Rejected, Ticket, breaker_for
from ._budget import budget_for
from ._errors import CircuitOpenError, ServiceCallError
from ._options import ClientOptions, resolve_options
from ._retry import (
    RETRYABLE_STATUSES,
    AttemptFailed,
    CallState,
    error_retry_reason,
    parse_retry_after,
    should_give_up,
    wait_times,
)
from ._telemetry import TARGET, client_telemetry

__all__ = ["ServiceClient"]


class _NoResponseCookies(CookieJar):
    """A jar that never keeps what a response sets: one ServiceClient serves every end user, so a cookie
    from one user's answer would otherwise ride on the next user's call (httpx keeps a client-wide jar)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"))
POOL_SIZE = 100  # connections per target (httpx's default), and concurrent attempts admitted to them
TraceHook = Callable[[str, dict[str, Any]], Awaitable[None]]


def _resend_marker(count: int, user_hook: TraceHook | None) -> TraceHook:
    """httpx ``trace`` extension that tags the attempt's CLIENT span with ``http.request.resend_count``.

    httpcore calls it inside the instrumented transport, where that span is current; the contrib
    instrumentation itself never sets the attribute.
    """
    marked = False

    async def hook(event_name: str, info: dict[str, Any]) -> None:
        nonlocal marked
        if not marked:
            marked = True
            trace.get_current_span().set_attribute("http.request.resend_count", count)
        if user_hook is not None:
            await user_hook(event_name, info)

    return hook


class ServiceClient:
    """Async client for one target service: deadline, retries, circuit breaker, auth, telemetry.

    ``ServiceClient("orders", base_url="http://orders:8000", auth=service_auth)``; keyword overrides
    (``max_retries``, ``retry_backoff``, ``max_backoff``, ``timeout``, ``attempt_timeout``,
    ``failure_threshold``, ``success_threshold``, ``breaker_timeout``, ``retry_budget``,
    ``retry_budget_min_per_second``, ``retry_budget_window``) win over the settings table; the
    breaker and the retry budget are per target and process-wide (the first client's settings win).
    Methods return the ``httpx.Response`` (any status that is not retried is returned as is);
    when the client gives up it raises :class:`ServiceCallError` (:class:`CircuitOpenError` when
    the breaker refused the call).
    """

    def __init__(
        self,
        target: str,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        max_retries: int | None = None,
        retry_backoff: float | None = None,
        max_backoff: float | None = None,
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        failure_threshold: int | None = None,
        success_threshold: int | None = None,
        breaker_timeout: float | None = None,
        retry_budget: float | None = None,
        retry_budget_min_per_second: float | None = None,
        retry_budget_window: float | None = None,
        telemetry: Telemetry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
        max_connections: int = POOL_SIZE,
    ) -> None:
        if not isinstance(target, str) or not target.strip():
            raise ValueError("ServiceClient: target must be a non-empty service name, e.g. 'orders'")
        tel = telemetry or bootstrap()
        self.target = target.strip()
        self.config: ClientOptions = resolve_options(
            tel.settings,
            {
                "max_retries": max_retries,
                "retry_backoff": retry_backoff,
                "max_backoff": max_backoff,
                "timeout": timeout,
                "attempt_timeout": attempt_timeout,
                "failure_threshold": failure_threshold,
                "success_threshold": success_threshold,
                "breaker_timeout": breaker_timeout,
                "retry_budget": retry_budget,
                "retry_budget_min_per_second": retry_budget_min_per_second,
                "retry_budget_window": retry_budget_window,
            },
        )
        opts = self.config
        self.breaker = breaker_for(
            self.target,
            failure_threshold=opts.failure_threshold,
            success_threshold=opts.success_threshold,
            reset_timeout=opts.breaker_timeout,
        )
        self.budget = budget_for(
            self.target,
            ratio=opts.retry_budget,
            min_per_second=opts.retry_budget_min_per_second,
            window=opts.retry_budget_window,
        )
        self._auth = auth
        self._telemetry = client_telemetry(tel)
        _httpx.allow_propagation(base_url)  # a service of this system: its requests carry the trace context
        self._contrib_spans = tel.settings.client_instrumentation == "contrib"
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if transport is None:  # a plain-HTTP service of this system: the leaner connection layer (_transport)
            transport = service_transport(base_url, limits)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            headers=headers,
            cookies=_NoResponseCookies(),
            timeout=opts.attempt_timeout,
            limits=limits,
        )
        # Callers queue here, not in httpcore's pool: its wait gets slow with hundreds of queued
        # requests (~20 ms CPU each at 1,000), and time spent queued behind our own pool is not
        # the upstream's slowness, so it must not eat the attempt timeout nor trip the breaker.
        self._slots = asyncio.Semaphore(max_connections)
        self._span_names = {m: f"{m} {self.target}" for m in _KNOWN_METHODS}
        # Most calls succeed at once: the first attempt runs directly, and backoff's loop (its clock, wait
        # generator and handler calls: ~25 function calls) starts only after it failed, replaying that
        # failure as its own first try (see _retry_attempt), so tries, waits and give-ups are backoff's.
        self._send_with_retries = backoff.on_exception(
            wait_times,
            AttemptFailed,
            max_tries=opts.max_retries + 1,
            jitter=None,  # wait_times applies full jitter itself, and none to Retry-After
            giveup=should_give_up,
            on_backoff=self._on_backoff,
            logger=None,  # give-ups are logged once, by this client, inside the caller's trace
            base=opts.retry_backoff,
            max_value=opts.max_backoff,
        )(self._retry_attempt)

    # ------------------------------------------------------------------ public

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one logical call; the body must be replayable (bytes, json, form) for retries."""
        method = method.upper()
        if method not in _KNOWN_METHODS:
            method_attr = "_OTHER"
        else:
            method_attr = method
        tel = self._telemetry
        target = self.target
        request = self._client.build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            extensions=extensions,
        )
        start = time.monotonic()
        deadline = start + self.config.timeout
        handling = REQUEST.get()
        if handling is not None:  # inside a request: never past its deadline; stop if its caller leaves
            deadline = min(deadline, handling.deadline)
            handling.watch()
        call = CallState(request, deadline, self.breaker, self.budget)
        self.budget.deposit()
        span = start_span(
            tel.tracer,
            self._span_names.get(method_attr, f"{method_attr} {target}"),
            context=None,
            kind=SpanKind.INTERNAL,
            attributes={TARGET: target, "http.request.method": method_attr},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        outcome, error_type = "failure", None
        end_attrs: dict[str, Any] = {}
        try:
            try:
                try:
                    response: httpx.Response = await self._attempt(call)
                except AttemptFailed as first:
                    call.replay = first
                    response = await self._send_with_retries(call)
            except AttemptFailed as failed:
                error, error_type = self._give_up(call, failed, method_attr, time.monotonic() - start)
                end_attrs["otel_dist.give_up.reason"] = error.reason
                # rejected: the breaker refused the call before any I/O; failure otherwise
                outcome = "rejected" if call.attempts == 0 and error.reason == "circuit_open" else "failure"
                last = call.last_failure
                raise error from (last.error if last is not None else None)
            status = response.status_code
            end_attrs["http.response.status_code"] = status
            if status < 400:
                outcome = "success"
            else:
                error_type = str(status)
            return response
        except BaseException as exc:
            if error_type is None:
                error_type = type(exc).__qualname__
            raise
        finally:
            elapsed = time.monotonic() - start
            end_attrs["otel_dist.attempts"] = call.attempts
            end_attrs["otel_dist.outcome"] = outcome
            if error_type is not None:
                end_attrs["error.type"] = error_type
                span.set_status(Status(StatusCode.ERROR, error_type))
            set_clean_attributes(span, end_attrs)
            tel.record_call(target, method_attr, outcome, error_type, elapsed)  # exemplar: this call's span
            span.end()
            otel_context.detach(token)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ServiceClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._client.__aexit__(*exc_info)

    # ------------------------------------------------------------------ layers

    async def _retry_attempt(self, call: CallState) -> httpx.Response:
        """What backoff retries: the first attempt's failure (already sent) once, then real attempts."""
        replay = call.replay
        if replay is not None:
            call.replay = None
            raise replay
        return await self._attempt(call)

    async def _attempt(self, call: CallState) -> httpx.Response:
        """One attempt: breaker admission, a connection slot, attempt timeout, auth, instrumented transport."""
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            raise AttemptFailed(call, give_up="deadline")
        try:
            ticket, transitions = self.breaker.admit()
        except Rejected as rejected:
            self._telemetry.record_rejection(self.target)
            raise AttemptFailed(call, give_up="circuit_open", rejected=rejected) from None
        if transitions:
            self._telemetry.record_transitions(transitions)
        slots = self._slots
        if slots.locked():  # queued: bounded by the deadline only (a free slot is taken without waiting)
            try:
                async with asyncio.timeout(remaining):
                    await slots.acquire()
            except BaseException as exc:
                self._record(ticket, NEUTRAL)
                if isinstance(exc, TimeoutError):
                    raise AttemptFailed(call, give_up="deadline") from None
                raise
            remaining = call.deadline - time.monotonic()
        else:
            await slots.acquire()
        try:
            budget = min(self.config.attempt_timeout, remaining)
            if budget <= 0:
                self._record(ticket, NEUTRAL)
                raise AttemptFailed(call, give_up="deadline")
            request = call.request
            resends = call.attempts
            call.attempts += 1
            request.extensions["timeout"] = {"connect": budget, "read": budget, "write": budget, "pool": budget}
            # What this attempt will wait for: the upstream can drop the work after that.
            request.headers[DEADLINE_HEADER] = str(int(budget * 1000))
            if resends:
                request.extensions[_httpx.RESEND_EXTENSION] = resends
                if self._contrib_spans:
                    request.extensions["trace"] = _resend_marker(resends, call.trace_hook)
            try:
                async with asyncio.timeout(budget):
                    response = await self._client.send(request, auth=self._auth)
            except (httpx.HTTPError, TimeoutError) as exc:
                reason = error_retry_reason(exc)
                if reason is None:  # a local error (bad URL, consumed stream...): not the upstream's fault
                    self._record(ticket, NEUTRAL)
                    failure = AttemptFailed(call, give_up="non_retryable", error=exc)
                else:
                    self._record(ticket, FAILURE)
                    give_up = None if call.replayable else "non_retryable"
                    failure = AttemptFailed(call, reason=reason, give_up=give_up, error=exc)
                call.last_failure = failure
                raise failure from exc
            except BaseException:
                self._record(ticket, NEUTRAL)  # cancelled by the caller: not the upstream's failure
                raise
        finally:
            slots.release()
        status = response.status_code
        # 4xx neither trips nor heals the breaker; 5xx trips it
        self._record(ticket, SUCCESS if status < 400 else (FAILURE if status >= 500 else NEUTRAL))
        if status in RETRYABLE_STATUSES:
            call.last_failure = AttemptFailed(
                call,
                reason=f"status_{status}",
                give_up=None if call.replayable else "non_retryable",
                response=response,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
            raise call.last_failure
        return response

    def _record(self, ticket: Ticket, outcome: str) -> None:
        transitions = self.breaker.record(ticket, outcome)
        if transitions:
            self._telemetry.record_transitions(transitions)

    def _on_backoff(self, details: Details) -> None:
        failure = details.get("exception")
        reason = failure.reason if isinstance(failure, AttemptFailed) else None
        self._telemetry.record_retry(self.target, reason or "unknown")

    def _give_up(
        self, call: CallState, failed: AttemptFailed, method: str, elapsed: float
    ) -> tuple[ServiceCallError, str]:
        """The error for the caller and its ``error.type``; records the give-up (metric + one log line)."""
        reason = call.give_up_reason or "max_tries"
        last = call.last_failure  # the last attempt that did I/O, if any
        error_type = last.error_type if last is not None else failed.error_type
        self._telemetry.record_give_up(self.target, method, reason, call.attempts, error_type, elapsed)
        attempts = f"{call.attempts} attempt{'s' if call.attempts != 1 else ''}"
        if last is None:
            detail = "no request sent"
        elif last.response is not None:
            detail = f"HTTP {last.response.status_code}"
        else:
            detail = f"{type(last.error).__name__}: {last.error}".rstrip(": ")
        rejected = failed.rejected
        if rejected is not None and rejected.state == "open":
            why = f"circuit breaker open, next probe in {rejected.retry_in:.2f} s"
        elif rejected is not None:
            why = "circuit breaker half-open with its probe in flight"
        else:
            why = {
                "max_tries": f"no attempts left (max_retries={self.config.max_retries})",
                "deadline": f"deadline reached or too close (own {self.config.timeout:g} s, or the request's)",
                "non_retryable": f"{call.request.method} without Idempotency-Key, or an error retrying cannot fix",
                "circuit_open": "the circuit breaker is open",
                "budget_exhausted": f"the retry budget of {self.target} is spent "
                f"(SERVICE_CLIENT_RETRY_BUDGET={self.config.retry_budget:g})",
            }[reason]
        message = f"{self.target}: gave up after {attempts} ({reason}: {why}); last: {detail}"
        if call.attempts == 0 and rejected is not None:
            message = f"{self.target}: call rejected without I/O ({why})"
        fields: dict[str, Any] = {
            "target": self.target,
            "reason": reason,
            "attempts": call.attempts,
            "response": last.response if last is not None else None,
            "request": call.request,
        }
        if reason == "circuit_open":
            retry_in = rejected.retry_in if rejected is not None else None
            return CircuitOpenError(message, retry_in=retry_in, **fields), error_type
        return ServiceCallError(message, **fields), error_type
