"""A FastAPI app that knows nothing about otel-dist (for zero-code instrumentation)."""

import logging

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    logging.getLogger("bare").warning("looked up item")
    return {"item_id": item_id}
