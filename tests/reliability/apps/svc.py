"""The instrumented service the reliability tests run as a real process.

    uvicorn tests.reliability.apps.svc:app

``GET /work/{n}`` writes one application log line (so every request yields one
server span and two log records: the app's line and the access line);
``GET /slow?ms=`` holds the request open (graceful shutdown); ``/health`` is
untraced.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from otel_dist import get_logger, instrument_app

log = get_logger("reliability.svc")


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/work/{n}")
    async def work(n: int) -> dict[str, int]:
        log.info("did work", n=n)
        return {"n": n}

    @app.get("/slow")
    async def slow(ms: int = 500) -> dict[str, int]:
        await asyncio.sleep(ms / 1000)
        log.info("slow done", ms=ms)
        return {"ms": ms}

    return instrument_app(app)


app = build_app()
