"""SQLite on the event loop's thread: no hop per call; a locked file waits on the worker thread, not the loop."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from otel_dist import Database
from otel_dist._sqlite import InlineConnection
from otel_dist.testing import capture_telemetry
from tests.unit._notes_db import fresh_sqlalchemy_instrumentation, metadata, notes  # noqa: F401 (fixture)


@asynccontextmanager
async def database_with_a_locked_file(
    tmp_path: Path, url_query: str = ""
) -> AsyncIterator[tuple[Database, sqlite3.Connection]]:
    """A Database on a file that another connection holds with BEGIN EXCLUSIVE (another process's writer, say)."""
    path = tmp_path / "locked.db"
    with capture_telemetry() as cap:
        database = Database(f"sqlite+aiosqlite:///{path}{url_query}", telemetry=cap.telemetry)
        try:
            await database.create_tables(metadata)
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            yield database, holder
        finally:
            await database.close()


def record_calls(inline: list[str], hops: list[str]) -> None:
    """Record the thread of every call SQLAlchemy makes through the connection, and each hop to aiosqlite's."""
    original, hop = InlineConnection._execute, aiosqlite.Connection._execute

    async def spy(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        inline.append(threading.current_thread().name)
        return await original(self, fn, *args, **kwargs)

    async def hop_spy(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(getattr(fn, "args", (None, None, fn))[2], "__name__", repr(fn)))
        return await hop(self, fn, *args, **kwargs)

    InlineConnection._execute = spy  # type: ignore[method-assign]
    aiosqlite.Connection._execute = hop_spy  # type: ignore[method-assign]


@pytest.fixture
def restore_inline():
    original, hop = InlineConnection._execute, aiosqlite.Connection._execute
    yield
    InlineConnection._execute = original  # type: ignore[method-assign]
    aiosqlite.Connection._execute = hop  # type: ignore[method-assign]


async def test_statements_run_on_the_loop_thread_and_commits_on_aiosqlites(tmp_path, restore_inline):
    calls: list[str] = []
    hops: list[str] = []
    with capture_telemetry() as cap:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", telemetry=cap.telemetry)
        try:
            await database.create_tables(metadata)
            record_calls(calls, hops)
            async with database.sessions() as session:
                await session.execute(insert(notes).values(text="hello"))
                await session.commit()
            async with database.sessions() as session:
                rows = (await session.execute(select(notes.c.id, notes.c.text))).all()
        finally:
            await database.close()
    assert [tuple(r) for r in rows] == [(1, "hello")]
    assert calls and set(calls) == {threading.current_thread().name}  # every statement on the loop's thread
    assert hops == ["commit"]  # the COMMIT (journal, fsync) went to the worker thread; the read made no hop
    assert sqlite3.connect(tmp_path / "n.db").execute("SELECT text FROM notes").fetchall() == [("hello",)]


async def test_a_locked_file_waits_off_the_loop_then_succeeds(tmp_path):
    async with database_with_a_locked_file(tmp_path) as (database, holder):

        async def write() -> None:
            async with database.sessions() as session:
                await session.execute(insert(notes).values(text="after the lock"))
                await session.commit()

        writer = asyncio.create_task(write())
        ticks, started = 0, time.monotonic()
        while time.monotonic() - started < 0.5:  # the loop keeps running while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not writer.done()
        holder.execute("COMMIT")
        await asyncio.wait_for(writer, 30)
        async with database.sessions() as session:
            texts = (await session.execute(select(notes.c.text))).scalars().all()
    assert ticks >= 10  # ~50 on a quiet machine; 10 leaves room for a loaded one
    assert texts == ["after the lock"]


async def test_the_urls_busy_timeout_still_bounds_the_wait(tmp_path):
    async with database_with_a_locked_file(tmp_path, "?timeout=0.2") as (database, holder):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            async with database.sessions() as session:
                await session.execute(insert(notes).values(text="never"))
        waited = time.monotonic() - started
        holder.execute("ROLLBACK")
    assert 0.15 <= waited < 10  # the URL's 0.2 s, not sqlite3's default 5 s


async def test_switched_off_every_call_goes_to_aiosqlites_thread(tmp_path):
    with capture_telemetry(env={"DATABASE_SQLITE_INLINE": "false"}) as cap:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", telemetry=cap.telemetry)
        try:
            await database.create_tables(metadata)
            async with database.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert type(driver) is not InlineConnection
                assert (await conn.execute(select(notes.c.id))).all() == []
        finally:
            await database.close()
