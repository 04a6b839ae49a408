"""A minimal instrumented app, launched both by plain uvicorn and by opentelemetry-instrument."""

from fastapi import FastAPI, HTTPException

from otel_dist import get_logger, instrument_app

log = get_logger("tests.hello")


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello/{name}")
    async def hello(name: str) -> dict[str, str]:
        log.info("saying hello", who=name)
        return {"hello": name}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "nope")

    return instrument_app(app, auth=False)  # not a protected service: these tests are about telemetry
