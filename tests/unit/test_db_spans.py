"""Database spans: otel-dist's own (default) and the contrib's (OTEL_DIST_DB_INSTRUMENTATION=contrib), the same."""

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import insert, select, text
from sqlalchemy.exc import OperationalError

from otel_dist import Database
from otel_dist.testing import capture_telemetry
from tests.unit._notes_db import fresh_sqlalchemy_instrumentation, metadata, notes  # noqa: F401 (fixture)


async def spans_of_one_read(tmp_path, env):
    """A read of one note by id inside a request span; returns (that span, the spans under it)."""
    with capture_telemetry(env=env) as cap:
        path = tmp_path / "notes.db"
        database = Database(f"sqlite+aiosqlite:///{path}", telemetry=cap.telemetry)
        try:
            await database.create_tables(metadata)
            async with database.sessions() as session:
                await session.execute(insert(notes).values(text="secret words"))
                await session.commit()
            with cap.telemetry.tracer("test").start_as_current_span("request") as request:
                async with database.sessions() as session:
                    found = (await session.execute(select(notes.c.text).where(notes.c.id == 1))).scalar_one()
        finally:
            await database.close()
        assert found == "secret words"
        spans = cap.spans()
    under = [s for s in spans if s.parent is not None and s.parent.span_id == request.get_span_context().span_id]
    return str(path), under


async def test_a_read_is_a_connect_span_and_a_statement_span_with_the_stable_attributes(tmp_path):
    path, under = await spans_of_one_read(tmp_path, {})
    assert [(s.name, s.kind) for s in under] == [("connect", SpanKind.CLIENT), (f"SELECT {path}", SpanKind.CLIENT)]
    connect, select_span = under
    assert dict(connect.attributes) == {"db.namespace": path, "db.system.name": "sqlite"}
    assert dict(select_span.attributes) == {
        "db.namespace": path,
        "db.system.name": "sqlite",
        "db.query.text": "SELECT notes.text \nFROM notes \nWHERE notes.id = ?",  # placeholders, never values
        "db.operation.name": "SELECT",
    }
    assert select_span.instrumentation_scope.name == "otel_dist.db"
    assert select_span.status.status_code is StatusCode.UNSET


async def test_the_contrib_instrumentation_makes_the_same_spans(tmp_path):
    path, under = await spans_of_one_read(tmp_path, {"OTEL_DIST_DB_INSTRUMENTATION": "contrib"})
    assert [(s.name, s.kind) for s in under] == [("connect", SpanKind.CLIENT), (f"SELECT {path}", SpanKind.CLIENT)]
    select_span = under[1]
    assert select_span.instrumentation_scope.name == "opentelemetry.instrumentation.sqlalchemy"
    assert select_span.attributes["db.query.text"] == "SELECT notes.text \nFROM notes \nWHERE notes.id = ?"
    assert select_span.attributes["db.operation.name"] == f"SELECT {path}"  # the contrib repeats the span name


async def test_a_failed_statement_ends_its_span_with_the_drivers_message(tmp_path):
    with capture_telemetry() as cap:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}", telemetry=cap.telemetry)
        try:
            async with database.sessions() as session:
                with pytest.raises(OperationalError):
                    await session.execute(text("SELECT missing_column FROM no_such_table"))
        finally:
            await database.close()
        failed = [s for s in cap.spans() if s.name.startswith("SELECT")]
        assert len(failed) == 1 and failed[0].end_time is not None
        assert failed[0].status.status_code is StatusCode.ERROR
        assert failed[0].status.description == "no such table: no_such_table"
        assert failed[0].attributes["error.type"] == "OperationalError"
        errors = cap.metric_value("db.client.operation.duration", error__type="OperationalError")
        assert errors == 1


async def test_suppressed_instrumentation_makes_no_database_spans(tmp_path):
    with capture_telemetry() as cap:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", telemetry=cap.telemetry)
        try:
            await database.create_tables(metadata)
            before = len(cap.spans())
            with suppress_instrumentation():
                async with database.sessions() as session:
                    await session.execute(select(notes.c.id))
            assert len(cap.spans()) == before
        finally:
            await database.close()


async def test_a_failed_checkout_ends_its_connect_span_with_the_error(tmp_path):
    with capture_telemetry() as cap:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}", telemetry=cap.telemetry)
        try:
            with pytest.raises(OperationalError):
                async with database.sessions() as session:
                    await session.execute(select(notes.c.id))
        finally:
            await database.close()
        (connect,) = [s for s in cap.spans() if s.name == "connect"]
    assert connect.end_time is not None and connect.status.status_code is StatusCode.ERROR
    assert connect.status.description.startswith("OperationalError: (sqlite3.OperationalError) unable to open database")
    assert connect.attributes["error.type"] == "OperationalError"
    assert [e.name for e in connect.events] == ["exception"]
