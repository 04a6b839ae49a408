"""create_app on a real uvicorn (in a thread): what the template gives a new service."""

import asyncio
import secrets
import time
from typing import Annotated

import httpx
import pytest
from fastapi import Depends
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import SpanKind
from sqlalchemy import Column, Integer, MetaData, Table, event, func, select

from otel_dist import ConfigError, DbSession, ServiceClient, create_app, downstream
from otel_dist.testing import capture_telemetry, free_port, serve_app

metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True))


@pytest.fixture(autouse=True)
def fresh_sqlalchemy_instrumentation():
    yield
    if SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        SQLAlchemyInstrumentor().uninstrument()


def test_a_service_in_a_few_lines(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    target = f"down-{secrets.token_hex(3)}"  # breakers are per process and per target name
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}"}
    overrides = {
        "service_version": "2.0.0",
        "client_max_retries": 0,
        "breaker_failure_threshold": 2,
        "auth_enabled": False,
    }
    with capture_telemetry(env, service_name="svc", **overrides) as cap:
        app = create_app("svc", metadata=metadata, downstreams={target: dead})

        @app.get("/count")
        async def count(session: DbSession) -> dict[str, int]:
            return {"things": (await session.execute(select(func.count()).select_from(things))).scalar_one()}

        @app.get("/call")
        async def call(client: Annotated[ServiceClient, Depends(downstream(target))]) -> dict[str, int]:
            return {"status": (await client.get("/x")).status_code}

        with serve_app(app) as url:
            assert httpx.get(url + "/count").json() == {"things": 0}  # tables created in the lifespan
            assert httpx.get(url + "/health").json() == {"status": "healthy", "service": "svc", "version": "2.0.0"}
            ready = httpx.get(url + "/ready").json()
            assert ready["checks"] == {"database": "healthy", target: "healthy"}
            assert httpx.get(url + "/metrics").status_code == 200

            failed = httpx.get(url + "/call")  # connection refused: the client gives up
            assert failed.status_code == 503
            assert failed.json()["error"] == "dependency_failed" and failed.json()["dependency"] == target
            httpx.get(url + "/call")  # second failure opens the breaker (threshold 2)
            start = time.monotonic()
            rejected = httpx.get(url + "/call")
            assert time.monotonic() - start < 0.5
            assert rejected.status_code == 503 and rejected.json()["error"] == "dependency_unavailable"
            assert rejected.headers["retry-after"] == "60"  # the breaker's open timeout (default)
            # An open breaker degrades a dependency; this instance stays ready (wait out the 1 s cache).
            ready = wait_for_ready_body(url, lambda body: body["checks"][target] != "healthy")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"] == {"database": "healthy", target: "degraded"}
            assert ready.json()["details"] == {target: "circuit breaker open"}
            metrics = httpx.get(url + "/metrics").text
            assert (
                f'otel_dist_readiness_status{{otel_dist_readiness_check="{target}",otel_dist_readiness_critical="false"'
                in metrics
            )
        # The lifespan closed what it opened: the pool is empty, nothing in use.
        assert cap.metric_value("db.client.connection.count", db__client__connection__state="idle") == 0
        assert cap.metric_value("db.client.connection.count", db__client__connection__state="used") == 0
        started = [line for line in cap.log_lines() if line["message"] == "service started"]
        assert started[0]["downstreams"] == {target: dead} and started[0]["database"] == "sqlite"


def test_fault_injection_from_settings_and_at_run_time(tmp_path):
    with capture_telemetry(service_name="faulty", fault_error_rate=1.0, auth_enabled=False) as cap:
        app = create_app("faulty")

        @app.get("/work")
        async def work() -> dict[str, bool]:
            return {"ok": True}

        with serve_app(app) as url:
            failed = httpx.get(url + "/work")
            assert failed.status_code == 503 and failed.json()["error"] == "fault_injected"
            assert httpx.get(url + "/health").status_code == 200  # never faulted
            assert httpx.get(url + "/ready").status_code == 200
            assert httpx.get(url + "/metrics").status_code == 200
            # Auth is explicitly off here (SERVICE_AUTH_ENABLED=false), so the admin route answers directly.
            assert httpx.post(url + "/_faults", json={"error_rate": 0, "latency_ms": 150}).json() == {
                "error_rate": 0.0,
                "latency_ms": 150,
            }
            start = time.monotonic()
            assert httpx.get(url + "/work").status_code == 200
            assert time.monotonic() - start >= 0.15
        spans = [s for s in cap.spans() if s.kind is SpanKind.SERVER]
        assert spans[0].attributes["otel_dist.fault_injected"] is True
        assert spans[0].attributes["http.response.status_code"] == 503
        assert "otel_dist.fault_injected" not in spans[-1].attributes
        changes = [line for line in cap.log_lines() if line["message"] == "fault injection changed"]
        assert changes[0]["latency_ms"] == 150


def wait_for_ready_body(url: str, condition, timeout: float = 30.0) -> httpx.Response:
    """Poll /ready until `condition(body)` holds (results are cached for READINESS_CACHE_TTL)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/ready", timeout=10)
        if condition(response.json()) or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


async def test_a_hundred_concurrent_probes_share_one_check_and_hold_at_most_one_connection(tmp_path):
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"}
    with capture_telemetry(env, service_name="probed", auth_enabled=False):
        app = create_app("probed", metadata=metadata)
        opened, open_now, peak = [0], [0], [0]

        with serve_app(app) as url:
            async with httpx.AsyncClient(timeout=60) as client:
                await client.get(url + "/health")
                probe_engine = app.state.database._probe.sync_engine

                @event.listens_for(probe_engine, "connect")
                def connected(*args):
                    opened[0] += 1
                    open_now[0] += 1
                    peak[0] = max(peak[0], open_now[0])

                @event.listens_for(probe_engine, "close")
                def closed(*args):
                    open_now[0] -= 1

                runs_before = app.state.readiness.runs
                responses = await asyncio.gather(*(client.get(url + "/ready") for _ in range(100)))
        runs = app.state.readiness.runs - runs_before
    assert [r.status_code for r in responses] == [200] * 100
    assert peak[0] == 1  # never two probe connections at once
    # Shared and cached for 1 s: a handful of runs at most even if the 100 requests trickle in
    # over several seconds on a loaded machine (measured: 1 run, 1 connection on a quiet one).
    assert 1 <= runs <= 10 and opened[0] == runs, (runs, opened[0])


def test_production_has_no_fault_injection_at_all():
    secret = secrets.token_urlsafe(48)
    with capture_telemetry(service_name="prod", environment="production", jwt_secret=secret):
        app = create_app("prod")
        assert not any(getattr(r, "path", None) == "/_faults" for r in app.routes)
        assert not hasattr(app.state, "faults")
    with pytest.raises(ConfigError, match="refused when ENVIRONMENT=production"):
        with capture_telemetry(environment="production", jwt_secret=secret, fault_error_rate=0.5):
            pass


def test_a_missing_downstream_url_names_its_variable():
    with capture_telemetry(service_name="gw", jwt_secret=secrets.token_urlsafe(48)):
        with pytest.raises(
            ConfigError, match=r"ORDERS_SERVICE_URL: required by create_app\(downstreams=\['orders'\]\)"
        ):
            create_app("gw", downstreams=["orders"])
        app = create_app("gw2", downstreams={"orders": "http://127.0.0.1:1/"})
        assert app.title == "gw"  # the running telemetry's service.name wins over the template's default


def test_service_name_defaults_to_the_template_name(monkeypatch):
    from otel_dist.testing import reset_telemetry

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("SERVICE_VERSION", "9.9.9")
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("SERVICE_AUTH_ENABLED", "false")
    reset_telemetry()
    try:
        app = create_app("named", version="1.0.0")
        assert app.state.settings.service_name == "named"
        assert app.version == "9.9.9"  # the environment wins over the template's default
    finally:
        reset_telemetry()


def test_a_template_service_holds_its_contract_under_schemathesis(tmp_path):
    """A service written the template's way: validated parameters, documented errors, honest schemas."""
    from fastapi import HTTPException, Path
    from pydantic import BaseModel, Field
    from sqlalchemy import String, insert

    from otel_dist import EncodableStr, service_auth

    from .test_services import run_schemathesis

    notes = MetaData()
    table = Table("notes", notes, Column("id", Integer, primary_key=True), Column("text", String(200)))
    secret = secrets.token_urlsafe(48)
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}"}
    with capture_telemetry(env, service_name="notes", jwt_secret=secret):
        app = create_app("notes", metadata=notes)

        class NewNote(BaseModel):
            text: EncodableStr = Field(min_length=1, max_length=200)

        class Note(BaseModel):
            id: int
            text: str

        @app.post("/notes", status_code=201)
        async def add(body: NewNote, session: DbSession) -> Note:
            note_id = (await session.execute(insert(table).values(text=body.text).returning(table.c.id))).scalar_one()
            await session.commit()
            return Note(id=note_id, text=body.text)

        @app.get("/notes/{note_id}", responses={404: {"description": "No such note"}})
        async def read(note_id: Annotated[int, Path(gt=0, le=2**31 - 1)], session: DbSession) -> Note:
            row = (await session.execute(select(table).where(table.c.id == note_id))).first()
            if row is None:
                raise HTTPException(404, "no such note")
            return Note(id=row.id, text=row.text)

        settings = app.state.settings
        caller = load_caller_settings(secret)
        token = service_auth("notes", settings=caller).minter.token("notes")
        assert settings.service_name == "notes"
        with serve_app(app) as url:
            run_schemathesis(url, token)


def load_caller_settings(secret: str):
    from otel_dist import load_settings

    return load_settings({"ENVIRONMENT": "test"}, service_name="tests", jwt_secret=secret)


def test_database_errors_are_clear_5xx_bodies_without_traces(tmp_path):
    from sqlalchemy import insert, text

    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'broken.db'}"}
    with capture_telemetry(env, service_name="broken", auth_enabled=False) as cap:
        app = create_app("broken", metadata=metadata)

        @app.get("/missing-table")
        async def missing(session: DbSession) -> dict[str, int]:
            await session.execute(text("SELECT secret_column FROM no_such_table"))
            return {}

        @app.post("/duplicate")
        async def duplicate(session: DbSession) -> dict[str, int]:
            await session.execute(insert(things).values(id=1))
            await session.execute(insert(things).values(id=1))
            return {}

        with serve_app(app) as url:
            missing_response = httpx.get(url + "/missing-table", timeout=30)
            duplicate_response = httpx.post(url + "/duplicate", timeout=30)
        lines = [line for line in cap.log_lines() if line["message"] == "database error"]
    assert missing_response.status_code == 503 and missing_response.json()["error"] == "database_unavailable"
    assert duplicate_response.status_code == 500 and duplicate_response.json()["error"] == "database_error"
    for response in (missing_response, duplicate_response):
        assert (
            "Traceback" not in response.text and "SELECT" not in response.text and "no_such_table" not in response.text
        )
    assert [line["error.type"] for line in lines] == ["OperationalError", "IntegrityError"]
    assert all("no_such_table" not in str(line) for line in lines)


def test_a_faulted_request_keeps_its_route_label():
    with capture_telemetry(service_name="faulty", fault_error_rate=1.0, auth_enabled=False) as cap:
        app = create_app("faulty")

        @app.get("/orders/{order_id}")
        async def read(order_id: int) -> dict[str, int]:
            return {"id": order_id}

        with serve_app(app) as url:
            assert httpx.get(url + "/orders/7").status_code == 503
            assert httpx.get(url + "/nowhere").status_code == 503  # no route: no label, as for a 404
        server = [s for s in cap.spans() if s.kind is SpanKind.SERVER]
        assert server[0].name == "GET /orders/{order_id}"
        assert server[0].attributes["http.route"] == "/orders/{order_id}"
        assert server[0].attributes["otel_dist.fault_injected"] is True
        assert "http.route" not in server[1].attributes
        points = cap.metric_points("http.server.request.duration")
        routes = {attrs.get("http.route") for attrs, _ in points if attrs["http.response.status_code"] == 503}
        assert routes == {"/orders/{order_id}", None}
