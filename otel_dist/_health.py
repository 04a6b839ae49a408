"""Liveness and readiness.

``/health`` is liveness: the process is up and its event loop answers.  It never
touches a dependency, so a slow database cannot get a healthy process restarted.
``/ready`` runs the registered checks concurrently, each under its own timeout
(``READINESS_CHECK_TIMEOUT``), and answers 200 or 503 with the seed's body shape::

    {"status": "unhealthy", "service": "orders", "version": "0.1.0",
     "checks": {"database": "unhealthy", "auth": "healthy"},
     "details": {"database": "OperationalError: unable to open database file"},
     "service_auth": "enforced"}

Readiness is about *this instance*.  A check added with ``critical=False`` (the
template's downstream breakers) reports ``degraded`` and never makes the instance
unready: an open breaker to orders must not get a readiness probe to pull the
gateway, login included, out of the load balancer.  Probes cannot be turned
against the fleet: concurrent probes share one run of the checks, and a result is
reused for ``READINESS_CACHE_TTL`` seconds, so 100 probes at once open at most one
database connection.  ``otel_dist.readiness.status`` reports each check's last
result (1 healthy, 0 not; ``otel_dist.readiness.critical`` says whether it counts).

A check is an async callable: it passes by returning ``None`` or ``True`` and fails
by returning ``False``, returning a short reason string, raising, or timing out.
Both paths are in ``OTEL_DIST_UNTRACED_PATHS`` by default: no span, no access log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ._auth import auth_state
from ._logs import get_logger

__all__ = ["Readiness", "ReadinessCheck"]

ReadinessCheck = Callable[[], Awaitable[Any]]
Result = tuple[bool, dict[str, str], dict[str, str]]
HEALTHY, UNHEALTHY, DEGRADED = "healthy", "unhealthy", "degraded"
_NO_STORE = {"cache-control": "no-store"}
_log = get_logger("otel_dist.health")


class Readiness:
    """The named checks behind ``/ready``; add more with :meth:`add` (e.g. in a lifespan)."""

    def __init__(self, timeout: float = 2.0, *, cache_ttl: float = 0.0) -> None:
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._checks: dict[str, tuple[ReadinessCheck, bool]] = {}
        self._last_ready: bool | None = None
        self._last: tuple[float, Result] | None = None
        self._inflight: asyncio.Future[Result] | None = None
        self.runs = 0

    def add(self, name: str, check: ReadinessCheck, *, critical: bool = True) -> None:
        """Register `check` under `name` (replacing one of the same name).

        A non-critical check that fails reports ``degraded`` and leaves the instance ready.
        """
        self._checks[name] = (check, critical)
        self._last = None

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)
        self._last = None

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> Result:
        """(ready, {name: healthy|unhealthy|degraded}, {name: reason} for the failures).

        Shared by concurrent callers and cached for ``cache_ttl`` seconds.
        """
        last = self._last
        if last is not None and time.monotonic() - last[0] < self.cache_ttl:
            return last[1]
        inflight = self._inflight
        if inflight is None or inflight.done():
            inflight = self._inflight = asyncio.ensure_future(self._run_all())
        # shield: a probe that disconnects must not cancel the run the others wait for
        return await asyncio.shield(inflight)

    async def _run_all(self) -> Result:
        self.runs += 1
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._run_one(self._checks[n][0]) for n in names))
        checks: dict[str, str] = {}
        for name, reason in zip(names, outcomes, strict=True):
            critical = self._checks[name][1] if name in self._checks else True
            checks[name] = HEALTHY if reason is None else (UNHEALTHY if critical else DEGRADED)
        details = {n: reason for n, reason in zip(names, outcomes, strict=True) if reason is not None}
        ready = UNHEALTHY not in checks.values()
        if ready != self._last_ready:
            # One line per change, not per probe: probes come every few seconds.
            if self._last_ready is not None or not ready:
                level = _log.info if ready else _log.warning
                level("readiness changed", ready=ready, failing=sorted(details), details=details)
            self._last_ready = ready
        result = (ready, checks, details)
        self._last = (time.monotonic(), result)
        return result

    def observe(self, meter: Meter) -> None:
        """Report the last result of each check as ``otel_dist.readiness.status`` (collected lazily)."""

        def callback(options: CallbackOptions) -> list[Observation]:
            last = self._last
            if last is None:
                return []
            return [
                Observation(
                    1 if state == HEALTHY else 0,
                    {
                        "otel_dist.readiness.check": name,
                        "otel_dist.readiness.critical": self._checks[name][1] if name in self._checks else True,
                    },
                )
                for name, state in last[1][1].items()
            ]

        meter.create_observable_gauge(
            "otel_dist.readiness.status",
            callbacks=[callback],
            unit="1",
            description="Last result of each readiness check: 1 healthy, 0 failing (a non-critical one is degraded).",
        )

    async def _run_one(self, check: ReadinessCheck) -> str | None:
        start = time.monotonic()
        try:
            result = await asyncio.wait_for(check(), self.timeout)
        except TimeoutError:
            return f"timed out after {self.timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure of a check is a "not ready"
            return _describe(exc)
        if result is None or result is True:
            return None
        if result is False:
            return f"check failed after {time.monotonic() - start:.3f} s"
        return str(result)[:300]


def _describe(exc: BaseException) -> str:
    # The first line only, bounded: driver messages can be long (SQL, parameters).
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def install_health(app: FastAPI, *, service: str, version: str, readiness: Readiness) -> None:
    """Add ``GET /health`` and ``GET /ready`` to `app` (left out of the OpenAPI schema)."""
    identity = {"service": service, "version": version}

    async def health() -> JSONResponse:
        return JSONResponse({"status": HEALTHY, **identity}, headers=_NO_STORE)

    async def ready() -> JSONResponse:
        ok, checks, details = await readiness.run()
        status = (DEGRADED if DEGRADED in checks.values() else HEALTHY) if ok else UNHEALTHY
        body: dict[str, Any] = {"status": status, **identity, "checks": checks}
        auth = auth_state(app)
        if auth is not None:
            body["service_auth"] = auth
        if details:
            body["details"] = details
        return JSONResponse(body, status_code=200 if ok else 503, headers=_NO_STORE)

    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ready", ready, methods=["GET"], include_in_schema=False)
