"""An instrumented app whose lifespan reads a setting that turns out to be invalid."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from otel_dist import instrument_app, load_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    load_settings(client_max_retries="many")  # raises ConfigError
    yield


app = instrument_app(FastAPI(lifespan=lifespan), auth=False)
