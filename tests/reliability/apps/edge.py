"""A small instrumented app for the bad-input tests (in-process, under serve_app or called as ASGI)."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
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

    @app.post("/login")
    async def login(request: Request) -> dict[str, str]:
        body = await request.json()
        # Credential-named fields are redacted by the log pipeline, whatever the caller passes.
        log.info(
            "login attempt",
            user=body.get("username"),
            password=body.get("password"),
            authorization=request.headers.get("authorization"),
            api_key=request.headers.get("x-api-key"),
            session_cookie=request.headers.get("cookie"),
        )
        raise HTTPException(401, "invalid credentials")

    return instrument_app(app, auth=False)  # a public edge with its own login
