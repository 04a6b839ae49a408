"""The service under test: a small FastAPI app with a hello-world endpoint.

Ten routes, the measured one (``GET /hello/{name}``) in the middle, so that
anything scanning every route to find the template pays what it would in a
real service.  This module imports no otel-dist code: the plain and upstream
scenarios load it in environments without otel-dist.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

HELLO_PATH = "/hello/{name}"
TARGET = "/hello/world"


def build_app(*, native_telemetry: bool = True, telemetry_config: dict[str, Any] | None = None) -> FastAPI:
    """The benchmark app; ``native_telemetry=False`` switches FastAPI's own telemetry off;
    ``telemetry_config`` is given to ``FastAPI(telemetry=...)`` as is (the native scenarios)."""
    telemetry: Any = None if native_telemetry else {"tracing": False, "metrics": False, "logs": False}
    if telemetry_config is not None:
        telemetry = telemetry_config
    app = FastAPI(title="bench", telemetry=telemetry)

    @app.get("/orders")
    async def list_orders() -> list[int]:
        return [1, 2, 3]

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    @app.post("/orders")
    async def create_order() -> dict[str, int]:
        return {"order_id": 4}

    @app.get("/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        return {"user_id": user_id}

    @app.get("/users/{user_id}/orders")
    async def user_orders(user_id: str) -> list[int]:
        return []

    @app.get(HELLO_PATH)
    async def hello(name: str) -> dict[str, str]:
        return {"message": f"hello {name}"}

    @app.get("/items")
    async def list_items() -> list[str]:
        return []

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
