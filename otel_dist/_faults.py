"""Fault injection for demos and tests: a share of requests fail with 503, or all get slower.

Off by default.  The start values come from ``FAULT_INJECTION_ERROR_RATE`` and
``FAULT_INJECTION_LATENCY_MS``; outside production, ``POST /_faults`` changes them
at run time (``{"error_rate": 1.0, "latency_ms": 0}``) so a demo or a test can open a
caller's circuit breaker and let it recover without restarting anything.  With
``ENVIRONMENT=production`` the settings refuse non-zero values and the template
installs neither the layer nor the admin route, so no request can switch faults on.

The layer sits inside the server span: an injected failure is a real 503 with a
span (``otel_dist.fault_injected=true``), an access-log line and HTTP metrics,
exactly what a caller's client and breaker see.  The health paths, the metrics
path and ``/_faults`` itself are never faulted.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute, Match

from ._logs import get_logger
from ._server import ASGIApp, Receive, Scope, Send

__all__ = ["FaultInjection", "FaultState"]

ADMIN_PATH = "/_faults"
_log = get_logger("otel_dist.faults")
_BODY = json.dumps(
    {"error": "fault_injected", "detail": "failed on purpose by fault injection (FAULT_INJECTION_ERROR_RATE)"}
).encode()


class FaultState:
    """The current fault configuration of one app; changed by ``POST /_faults``."""

    def __init__(self, error_rate: float = 0.0, latency_ms: int = 0) -> None:
        self.error_rate = error_rate
        self.latency_ms = latency_ms

    @property
    def active(self) -> bool:
        return bool(self.error_rate or self.latency_ms)

    def as_dict(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "latency_ms": self.latency_ms}


class FaultInjection:
    """Pure ASGI layer: adds latency and/or answers 503 for a share of requests."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: FaultState,
        exempt: Iterable[str] = (),
        rng: Callable[[], float] = random.random,
        routes: Callable[[], Iterable[BaseRoute]] | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.exempt = frozenset((*exempt, ADMIN_PATH))
        self.rng = rng
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        if scope["type"] != "http" or not state.active or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if state.latency_ms:
            await asyncio.sleep(state.latency_ms / 1000)
        if state.error_rate and self.rng() < state.error_rate:
            self._match_route(scope)
            trace.get_current_span().set_attribute("otel_dist.fault_injected", True)
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": _BODY})
            return
        await self.app(scope, receive, send)

    def _match_route(self, scope: Scope) -> None:
        """Set ``scope["route"]`` as the router would: the server layer labels spans and metrics with it.

        The router has not run yet when a fault answers; this scan runs only for faulted requests.
        """
        if self.routes is None or "route" in scope:
            return
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                return


class _FaultUpdate(BaseModel):
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    latency_ms: int | None = Field(default=None, ge=0, le=60000)


def install_fault_admin(app: FastAPI, state: FaultState) -> None:
    """``GET``/``POST /_faults``; call only outside production (the template checks)."""

    async def get_faults() -> dict[str, Any]:
        return state.as_dict()

    async def set_faults(update: _FaultUpdate) -> dict[str, Any]:
        if update.error_rate is not None:
            state.error_rate = update.error_rate
        if update.latency_ms is not None:
            state.latency_ms = update.latency_ms
        _log.warning("fault injection changed", **state.as_dict())
        return state.as_dict()

    app.add_api_route(ADMIN_PATH, get_faults, methods=["GET"], include_in_schema=False)
    app.add_api_route(ADMIN_PATH, set_faults, methods=["POST"], include_in_schema=False)
