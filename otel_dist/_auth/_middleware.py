"""The server side: a pure ASGI layer just inside the server span.

Deny by default: every HTTP and WebSocket request needs a valid service token
unless its path is exempt.  A path is exempt only when the request target is
byte-for-byte one of the exempt paths (``raw_path``, query excluded): dot
segments, percent-escapes, doubled or trailing slashes and case changes are
never normalised *into* an exemption, so ``/health/../orders/1``,
``/health%2F..%2Forders/1``, ``/HEALTH`` and ``/health/`` all need a token.

On success the caller goes into ``scope["otel_dist.caller"]`` and
``scope["state"]["service_identity"]`` (so ``request.state.service_identity``
works) and onto the server span.  On failure: 401 (403 for a caller outside
the allow-list) with a JSON reason code, span status ERROR, and one JSON log
line (``SERVICE_AUTH_REJECTION_LOG_RATE``, default at most 300 at once and 5 a second on
average: the next line says how many were suppressed in ``otel_dist.log.suppressed``).
Every outcome is counted in ``otel_dist.auth.verifications``.

Why an asynchronous counter rather than a duration histogram: a synchronous
SDK instrument costs ~10 us per call (attribute lookup, exemplar sampling),
five times a cached verification.  Here each layer keeps plain integer
tallies, and one callback per meter reports their sums at collection time.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import Status, StatusCode

from .._lean_span import set_clean_attributes
from .._logs import SUPPRESSED, LogBudget, LogSink
from .._server import ASGIApp, Receive, Scope, Send
from ._verify import INTERNAL_ERROR, MALFORMED, AuthFailure, KeysNeeded, TokenVerifier

__all__ = ["SCOPE_KEY", "ServiceAuthMiddleware"]

SCOPE_KEY = "otel_dist.caller"
STATE_KEY = "service_identity"
LOGGER = "otel_dist.auth"
CALLER = "otel_dist.auth.caller"
RESULT = "otel_dist.auth.result"
REASON = "otel_dist.auth.reason"
METRIC = "otel_dist.auth.verifications"
_SUCCESS = ("success", "")
_MAX_ADDRESS = 64  # an IPv6 address with zone fits; a proxy-supplied value may be anything
_get_span = trace.get_current_span


class _Outcomes:
    """One asynchronous counter per meter, summing the tallies of every auth layer using it."""

    def __init__(self, meter: Meter) -> None:
        self.tallies: list[dict[tuple[str, str], int]] = []
        self._attrs: dict[tuple[str, str], dict[str, str]] = {}
        meter.create_observable_counter(
            METRIC,
            callbacks=[self._observe],
            unit="{verification}",
            description="Service-token verifications, by result (success/failure/denied) and reason.",
        )

    def tally(self) -> dict[tuple[str, str], int]:
        counts = {_SUCCESS: 0}
        self.tallies.append(counts)  # kept for the process's life: a counter must never go down
        return counts

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        totals: dict[tuple[str, str], int] = {}
        for counts in self.tallies:
            for key, value in list(counts.items()):
                totals[key] = totals.get(key, 0) + value
        out = []
        for (result, reason), value in totals.items():
            if not value:
                continue
            attrs = self._attrs.get((result, reason))
            if attrs is None:
                attrs = self._attrs[(result, reason)] = {RESULT: result, REASON: reason} if reason else {RESULT: result}
            out.append(Observation(value, attrs))
        return out


_outcomes: weakref.WeakKeyDictionary[Meter, _Outcomes] = weakref.WeakKeyDictionary()


def _tally_for(meter: Meter) -> dict[tuple[str, str], int]:
    outcomes = _outcomes.get(meter)
    if outcomes is None:
        outcomes = _outcomes[meter] = _Outcomes(meter)
    return outcomes.tally()


class ServiceAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        exempt_paths: Iterable[str],
        meter: Meter,
        sink: LogSink,
        log_rate: tuple[int, float] = (300, 60.0),
    ) -> None:
        self.app = app
        self.verifier = verifier
        exempt = [p for p in exempt_paths if p]
        self._exempt = frozenset(exempt)
        self._exempt_raw = frozenset(p.encode("utf-8") for p in exempt)
        self._sink = sink
        self._counts = _tally_for(meter)
        self._bodies: dict[tuple[int, str], bytes] = {}
        # Anyone can send bad tokens: bound the lines (limit at once, limit per window on average).
        lines, window = log_rate
        self._log_budget = LogBudget(per_second=lines / window, burst=lines) if lines else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path")
        if raw_path is not None:
            exempt = raw_path in self._exempt_raw
        else:
            exempt = scope["path"] in self._exempt
        if exempt:
            await self.app(scope, receive, send)
            return

        value: bytes | None = None
        duplicate = False
        for name, header in scope["headers"]:
            if name == b"authorization":
                duplicate = value is not None
                value = header
        verifier = self.verifier
        try:
            if duplicate:
                raise AuthFailure(MALFORMED)  # two credentials: ambiguous, never pick one
            try:
                identity = verifier.verify(value)
            except KeysNeeded as needed:
                identity = await verifier.verify_after_refresh(value, needed)
        except AuthFailure as failure:
            await self._reject(scope, receive, send, failure)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must fail closed, and never as a 500
            internal = AuthFailure(INTERNAL_ERROR)
            internal.__cause__ = exc
            await self._reject(scope, receive, send, internal)
            return
        self._counts[_SUCCESS] += 1
        span = _get_span()
        if span.is_recording():
            set_clean_attributes(span, {CALLER: identity.name, RESULT: "success"})  # str values: no re-validation
        scope[SCOPE_KEY] = identity
        state = scope.get("state")
        if state is None:
            scope["state"] = {STATE_KEY: identity}
        else:
            state[STATE_KEY] = identity
        await self.app(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, failure: AuthFailure) -> None:
        reason, result = failure.reason, failure.result
        key = (result, reason)  # bounded: both members come from fixed sets
        self._counts[key] = self._counts.get(key, 0) + 1
        span = _get_span()
        fields: dict[str, Any] = {
            RESULT: result,
            REASON: reason,
            "http.request.method": scope.get("method", "GET"),
            "url.path": scope["path"][:256],
        }
        client = scope.get("client")
        if client:
            fields["client.address"] = str(client[0])[:_MAX_ADDRESS]
        if failure.identity is not None:
            fields[CALLER] = failure.identity.name
        if failure.__cause__ is not None:
            fields["error.type"] = type(failure.__cause__).__qualname__
        if span.is_recording():
            span.set_attributes({RESULT: result, REASON: reason})
            if failure.identity is not None:
                span.set_attribute(CALLER, failure.identity.name)
            span.set_status(Status(StatusCode.ERROR, reason))
        suppressed = self._log_budget.allow() if self._log_budget is not None else 0
        if suppressed is not None:
            if suppressed:
                fields[SUPPRESSED] = suppressed
            line = "service request denied" if failure.denied else "service token rejected"
            self._sink.emit(30, LOGGER, line, fields, span=span)
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        status = failure.status
        body = self._bodies.get((status, reason))
        if body is None:
            error = "insufficient_scope" if failure.denied else "invalid_token"
            body = self._bodies[(status, reason)] = json.dumps({"error": error, "reason": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", _challenge(failure)),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _challenge(failure: AuthFailure) -> bytes:
    if failure.denied:
        return b'Bearer error="insufficient_scope"'
    return b'Bearer error="invalid_token"'
