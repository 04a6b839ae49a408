"""Liveness and readiness.

``/health`` is liveness: the process is up and its event loop answers.  It never
touches a dependency, so a slow database cannot get a healthy process restarted.
``/ready`` runs the registered checks concurrently, each under its own timeout
(``READINESS_CHECK_TIMEOUT``), and answers 200 or 503 with the seed's body shape::

    {"status": "unhealthy", "service": "orders", "version": "0.1.0",
     "checks": {"database": "unhealthy", "auth": "healthy"},
     "details": {"database": "OperationalError: unable to open database file"}}

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

from ._auth import auth_state
from ._logs import get_logger

__all__ = ["Readiness", "ReadinessCheck"]

ReadinessCheck = Callable[[], Awaitable[Any]]
HEALTHY, UNHEALTHY = "healthy", "unhealthy"
_NO_STORE = {"cache-control": "no-store"}
_log = get_logger("otel_dist.health")


class Readiness:
    """The named checks behind ``/ready``; add more with :meth:`add` (e.g. in a lifespan)."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._checks: dict[str, ReadinessCheck] = {}
        self._last_ready: bool | None = None

    def add(self, name: str, check: ReadinessCheck) -> None:
        """Register `check` under `name` (replacing a check of the same name)."""
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> tuple[bool, dict[str, str], dict[str, str]]:
        """(ready, {name: healthy|unhealthy}, {name: reason} for the failures)."""
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._run_one(self._checks[n]) for n in names))
        checks = {n: (HEALTHY if reason is None else UNHEALTHY) for n, reason in zip(names, outcomes, strict=True)}
        details = {n: reason for n, reason in zip(names, outcomes, strict=True) if reason is not None}
        ready = not details
        if ready != self._last_ready:
            # One line per change, not per probe: probes come every few seconds.
            if self._last_ready is not None or not ready:
                level = _log.info if ready else _log.warning
                level("readiness changed", ready=ready, failing=sorted(details), details=details)
            self._last_ready = ready
        return ready, checks, details

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
        body: dict[str, Any] = {"status": HEALTHY if ok else UNHEALTHY, **identity, "checks": checks}
        auth = auth_state(app)
        if auth is not None:
            body["service_auth"] = auth
        if details:
            body["details"] = details
        return JSONResponse(body, status_code=200 if ok else 503, headers=_NO_STORE)

    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ready", ready, methods=["GET"], include_in_schema=False)
