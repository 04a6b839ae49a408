"""The database: opened in the lifespan, injected per request, traced as child spans, measured, closed."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from sqlalchemy import insert, select

from otel_dist import Database, DbSession, instrument_app, load_settings
from otel_dist._db import database_url
from otel_dist.testing import serve_app
from tests.unit._notes_db import fresh_sqlalchemy_instrumentation, metadata, notes  # noqa: F401 (fixture)


def build(url: str, seen: dict) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(url, telemetry=app.state.otel_dist_telemetry)
        await database.create_tables(metadata)
        app.state.database = seen["database"] = database
        yield
        await database.close()
        seen["closed"] = True

    app = FastAPI(lifespan=lifespan)

    @app.post("/notes/{text}")
    async def add(text: str, session: DbSession) -> dict[str, int]:
        result = await session.execute(insert(notes).values(text=text))
        await session.commit()
        return {"id": result.inserted_primary_key[0]}

    @app.get("/notes/{note_id}")
    async def get(note_id: int, session: DbSession) -> dict[str, str]:
        text = (await session.execute(select(notes.c.text).where(notes.c.id == note_id))).scalar_one()
        return {"text": text}

    return instrument_app(app)


def test_sessions_are_injected_and_statements_are_child_spans(telemetry, tmp_path):
    seen: dict = {}
    with serve_app(build(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}", seen)) as url:
        note_id = httpx.post(url + "/notes/hello").json()["id"]
        assert httpx.get(f"{url}/notes/{note_id}").json() == {"text": "hello"}
    assert seen["closed"]

    spans = telemetry.spans()
    server = next(s for s in spans if s.kind is SpanKind.SERVER and s.name == "GET /notes/{note_id}")
    children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
    selects = [s for s in children if s.name.startswith("SELECT")]
    assert len(selects) == 1 and selects[0].kind is SpanKind.CLIENT
    assert selects[0].context.trace_id == server.context.trace_id
    assert selects[0].attributes["db.system.name"] == "sqlite"


def test_operation_duration_and_connection_count_metrics(telemetry, tmp_path):
    seen: dict = {}
    with serve_app(build(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}", seen)) as url:
        for text in ("a", "b", "c"):
            httpx.post(f"{url}/notes/{text}")
        httpx.get(url + "/notes/1")
        inserts = telemetry.metric_value(
            "db.client.operation.duration", db__system__name="sqlite", db__operation__name="INSERT"
        )
        selects = telemetry.metric_value("db.client.operation.duration", db__operation__name="SELECT")
        assert inserts == 3 and selects == 1
        points = telemetry.metric_points("db.client.operation.duration")
        assert all(attrs.keys() <= {"db.system.name", "db.operation.name", "error.type"} for attrs, _ in points)
        used = telemetry.metric_value("db.client.connection.count", db__client__connection__state="used")
        idle = telemetry.metric_value(
            "db.client.connection.count",
            db__client__connection__state="idle",
            db__client__connection__pool__name="notes.db",
        )
        assert used == 0 and idle >= 1  # between requests every pooled connection is back
    # Disposed at shutdown: nothing idle, nothing used.
    assert telemetry.metric_value("db.client.connection.count", db__client__connection__state="idle") == 0
    # The contrib instrumentor's old-named metric is not exported beside ours.
    assert telemetry.metric_points("db.client.connections.usage") == []


async def test_ping_uses_a_fresh_connection_so_a_moved_file_is_noticed(telemetry, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    database = Database(f"sqlite+aiosqlite:///{folder / 'x.db'}", telemetry=telemetry.telemetry)
    try:
        await database.create_tables(metadata)
        await database.ping()
        async with database.sessions() as session:  # keep a pooled connection open
            await session.execute(select(notes))
        folder.rename(tmp_path / "moved")
        with pytest.raises(Exception, match="unable to open database file"):
            await database.ping()
        (tmp_path / "moved").rename(folder)
        await database.ping()
    finally:
        await database.close()
    # Probes are not traced: only the create_tables/select statements made spans.
    assert all("SELECT 1" not in str(s.attributes.get("db.query.text")) for s in telemetry.spans())


def test_default_url_is_a_sqlite_file_named_after_the_service(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        database_url(load_settings({"ENVIRONMENT": "test"}), "orders")
        == f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}"
    )
    url = "postgresql+asyncpg://u:pw@db:5432/orders"
    assert database_url(load_settings({"DATABASE_URL": url, "ENVIRONMENT": "test"}), "orders") == url


async def test_password_is_hidden_in_the_logged_url(telemetry):
    database = Database("sqlite+aiosqlite:///:memory:", telemetry=telemetry.telemetry)
    await database.close()
    assert Database.safe_url.fget is not None
    pg = Database.__new__(Database)
    from sqlalchemy.engine import make_url

    pg.url = make_url("postgresql+asyncpg://u:s3cret@db:5432/orders")
    assert "s3cret" not in pg.safe_url
    assert "s3cret" not in telemetry.raw_log_text()


async def test_disabled_sqlalchemy_instrumentation_makes_no_database_spans_or_metrics(tmp_path):
    from otel_dist.testing import capture_telemetry

    with capture_telemetry(env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy"}) as cap:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'off.db'}", telemetry=cap.telemetry)
        await database.create_tables(metadata)
        async with database.sessions() as session:
            await session.execute(insert(notes).values(text="hi"))
        await database.close()
        assert [s for s in cap.spans() if s.kind == SpanKind.CLIENT] == []
        assert cap.metric_points("db.client.operation.duration") == []
