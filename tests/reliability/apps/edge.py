"""A small instrumented app for the bad-input tests (in-process, under serve_app or called as ASGI)."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import baggage

from otel_dist import get_logger, instrument_app

log = get_logger("reliability.edge")
TEMPLATES = ("/hello/{name}", "/items/{item_id}", "/baggage")


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello/{name}")
    async def hello(name: str) -> dict[str, str]:
        log.info("hello", who=name[:64])
        return {"hello": name}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/baggage")
    async def show_baggage() -> dict[str, str]:
        return {k: str(v) for k, v in baggage.get_all().items()}

    return instrument_app(app)
