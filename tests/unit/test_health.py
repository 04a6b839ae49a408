"""/health is liveness only; /ready runs the registered checks with a per-check timeout."""

import asyncio
import time

import httpx
from fastapi import FastAPI
from opentelemetry.trace import SpanKind

from otel_dist import instrument_app
from otel_dist._health import Readiness, install_health
from otel_dist.testing import serve_app


def build(readiness: Readiness) -> FastAPI:
    app = FastAPI()
    install_health(app, service="svc", version="1.2.3", readiness=readiness)

    @app.get("/work")
    async def work() -> dict[str, bool]:
        return {"ok": True}

    return instrument_app(app)


async def test_ready_runs_checks_concurrently_each_with_its_timeout():
    calls: list[str] = []

    async def ok() -> None:
        calls.append("ok")

    async def slow() -> None:
        calls.append("slow")
        await asyncio.sleep(5)

    async def broken() -> None:
        raise ConnectionError("refused\nsecond line is dropped")

    async def says_no() -> str:
        return "breaker open"

    readiness = Readiness(timeout=0.2)
    for name, check in {"database": ok, "cache": slow, "queue": broken, "orders": says_no}.items():
        readiness.add(name, check)
    start = time.monotonic()
    ready, checks, details = await readiness.run()
    assert time.monotonic() - start < 1.0  # the slow check is cut at 0.2 s, the others ran beside it
    assert not ready
    assert checks == {"database": "healthy", "cache": "unhealthy", "queue": "unhealthy", "orders": "unhealthy"}
    assert details == {
        "cache": "timed out after 0.2 s",
        "queue": "ConnectionError: refused",
        "orders": "breaker open",
    }
    readiness.remove("cache")
    readiness.remove("queue")
    readiness.remove("orders")
    assert await readiness.run() == (True, {"database": "healthy"}, {})


async def test_false_fails_and_true_passes():
    async def false() -> bool:
        return False

    async def true() -> bool:
        return True

    readiness = Readiness()
    readiness.add("a", false)
    readiness.add("b", true)
    ready, checks, details = await readiness.run()
    assert not ready and checks == {"a": "unhealthy", "b": "healthy"} and details["a"].startswith("check failed")


def test_health_never_runs_checks_and_ready_answers_503_then_200(telemetry):
    state = {"db_up": True, "checked": 0}

    async def database() -> None:
        state["checked"] += 1
        if not state["db_up"]:
            raise OSError("unable to open database file")

    readiness = Readiness(timeout=1.0)
    readiness.add("database", database)
    with serve_app(build(readiness)) as url:
        health = httpx.get(url + "/health")
        assert health.status_code == 200
        assert health.json() == {"status": "healthy", "service": "svc", "version": "1.2.3"}
        assert state["checked"] == 0  # liveness never touches a dependency

        ready = httpx.get(url + "/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "healthy",
            "service": "svc",
            "version": "1.2.3",
            "checks": {"database": "healthy"},
            "service_auth": "disabled: SERVICE_AUTH_ENABLED=false",
        }
        state["db_up"] = False
        down = httpx.get(url + "/ready")
        assert down.status_code == 503
        assert down.json()["status"] == "unhealthy"
        assert down.json()["checks"] == {"database": "unhealthy"}
        assert down.json()["details"] == {"database": "OSError: unable to open database file"}
        assert httpx.get(url + "/health").status_code == 200  # still alive
        state["db_up"] = True
        assert httpx.get(url + "/ready").status_code == 200
        assert httpx.get(url + "/work").status_code == 200

    # Health endpoints are neither traced nor access-logged; /work is both.
    server_spans = [s.name for s in telemetry.spans() if s.kind is SpanKind.SERVER]
    assert server_spans == ["GET /work"]
    access = [line for line in telemetry.log_lines() if line["logger"] == "otel_dist.access"]
    assert [line["url.path"] for line in access] == ["/work"]
    # One log line per readiness change, not one per probe.
    changes = [line for line in telemetry.log_lines() if line["message"] == "readiness changed"]
    assert [(c["ready"], c["failing"]) for c in changes] == [(False, ["database"]), (True, [])]
