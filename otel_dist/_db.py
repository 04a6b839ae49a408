"""The database of one service: SQLAlchemy async, opened in the lifespan, handed out by dependency.

This replaces the seed's module-swapping hack (a fake ``sys.modules`` entry holding
a global ``db``): the template opens a :class:`Database` in the app's lifespan,
keeps it on ``app.state``, gives each request an ``AsyncSession`` through the
:data:`DbSession` dependency and disposes of the engine on shutdown.  Nothing is a
module-level global, so two apps (or two tests) in one process never share a pool.

- URL: ``DATABASE_URL`` (any async URL SQLAlchemy accepts, e.g.
  ``postgresql+asyncpg://...``), default an SQLite file ``<service>.db`` in the
  working directory (aiosqlite).
- Spans: every statement is a CLIENT span, child of the request's span, plus a ``connect`` span per
  checkout: otel-dist's (``_db_spans``), or opentelemetry-instrumentation-sqlalchemy's on
  ``engine.sync_engine`` with ``OTEL_DIST_DB_INSTRUMENTATION=contrib``.
- Metrics (semantic-convention names, like the seed's ``database_query_duration_seconds``
  and ``database_connections``): ``db.client.operation.duration`` (s; ``db.system.name``,
  ``db.operation.name``, ``error.type``) and ``db.client.connection.count``
  (``db.client.connection.state`` idle/used, ``db.client.connection.pool.name``).
- SQLite (``sqlite+aiosqlite``): statements run on the event loop's thread, a locked file waits on
  aiosqlite's worker thread (``_sqlite``; ``DATABASE_SQLITE_INLINE=false``: every call on that thread).
- Readiness: :meth:`Database.ping` runs ``SELECT 1`` on a fresh connection (not a
  pooled one, which can outlive a deleted or moved SQLite file), untraced, one at a
  time: however many probes arrive, they hold at most one connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy.ext.asyncio as sa_asyncio
from fastapi import Depends, Request
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.schema import MetaData

from ._db_spans import trace_engine
from ._logs import get_logger
from ._settings import Settings
from ._sqlite import run_inline

if TYPE_CHECKING:
    from ._bootstrap import Telemetry

__all__ = ["Database", "DbSession", "database_url", "db_session"]

_log = get_logger("otel_dist.db")
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mariadb", "mssql": "mssql"}
_STATE_KEY = "otel_dist_state"


def database_url(settings: Settings, service: str) -> str:
    """``DATABASE_URL`` or the embedded default: ``sqlite+aiosqlite:///<cwd>/<service>.db``."""
    if settings.database_url:
        return settings.database_url
    return f"sqlite+aiosqlite:///{Path.cwd() / f'{service}.db'}"


class Database:
    """An async engine and session factory, instrumented; create in a lifespan, :meth:`close` at shutdown."""

    def __init__(self, url: str | URL, *, telemetry: Telemetry, **engine_kwargs: Any) -> None:
        self.url = make_url(url)
        # Through the module attribute: under opentelemetry-instrument the contrib
        # instrumentor has wrapped it and traces the engine at creation.
        self.engine: AsyncEngine = sa_asyncio.create_async_engine(self.url, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.system = _SYSTEMS.get(self.url.get_backend_name(), self.url.get_backend_name())
        self.pool_name = _pool_name(self.url)
        settings = telemetry.settings
        if (
            settings.sqlite_inline
            and self.url.get_backend_name() == "sqlite"
            and self.url.get_driver_name() == "aiosqlite"
        ):
            run_inline(self.engine.sync_engine)
        if not settings.sdk_disabled and "sqlalchemy" not in settings.disabled_instrumentations:
            _trace_engine(self.engine, telemetry, self.system)
            _measure_engine(self.engine.sync_engine, telemetry.meter("otel_dist.db"), self.system, self.pool_name)
        with suppress_instrumentation():  # readiness probes are not traced
            self._probe = sa_asyncio.create_async_engine(self.url, poolclass=NullPool)
        self._ping_slot = asyncio.Lock()  # probes must not be able to exhaust the database's connections
        _log.info("database opened", **{"db.system.name": self.system, "url": self.safe_url})

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden (for logs)."""
        return self.url.render_as_string(hide_password=True)

    async def create_tables(self, metadata: MetaData) -> None:
        """CREATE TABLE IF NOT EXISTS for every table of `metadata` (migrations are the app's business)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def ping(self) -> None:
        """``SELECT 1`` on a new connection; raises if the database cannot be reached."""
        async with self._ping_slot:
            with suppress_instrumentation():
                async with self._probe.connect() as conn:
                    await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
        await self._probe.dispose()
        _log.info("database closed", **{"db.system.name": self.system})


def _pool_name(url: URL) -> str:
    if url.host:
        return f"{url.host}:{url.port or ''}/{url.database or ''}"
    return Path(url.database).name if url.database and url.database != ":memory:" else "memory"


def _trace_engine(engine: AsyncEngine, telemetry: Telemetry, system: str) -> None:
    """Statement and connect spans: otel-dist's (``_db_spans``) or opentelemetry-instrumentation-sqlalchemy's."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return  # create_async_engine is wrapped (opentelemetry-instrument, or the app): already traced
    if telemetry.settings.db_instrumentation == "otel-dist":
        trace_engine(engine.sync_engine, telemetry.tracer("otel_dist.db"), system)
        return
    instrumentor.instrument(
        # Its declared range stops before SQLAlchemy 2.1, whose event API it uses unchanged
        # (tests/unit/test_db.py); opentelemetry-instrument skips it there, so we attach it here.
        skip_dep_check=True,
        engine=engine.sync_engine,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=NoOpMeterProvider(),  # db.client.connections.usage: superseded by ours below
    )


def _operation(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    return word if word.isalpha() and len(word) <= 16 else "OTHER"


def _measure_engine(engine: Engine, meter: Meter, system: str, pool_name: str) -> None:
    duration = meter.create_histogram(
        "db.client.operation.duration", unit="s", description="Duration of database client operations."
    )
    idle = {"db.client.connection.state": "idle", "db.client.connection.pool.name": pool_name}
    used = {"db.client.connection.state": "used", "db.client.connection.pool.name": pool_name}
    counts = {"idle": 0, "used": 0}

    # Observed at collection time: the pool events below only move plain ints; four SDK adds per
    # checkout/checkin cost more than the statement itself (benchmarks/chain.py).
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(counts["idle"], idle), Observation(counts["used"], used))

    meter.create_observable_up_down_counter(
        "db.client.connection.count",
        callbacks=[observe],
        unit="{connection}",
        description="The number of connections that are currently in the state described by the state attribute.",
    )
    op_attrs: dict[tuple[str, str | None], dict[str, str]] = {}

    def attrs(operation: str, error: str | None) -> dict[str, str]:
        cached = op_attrs.get((operation, error))
        if cached is None:
            cached = {"db.system.name": system, "db.operation.name": operation}
            if error is not None:
                cached["error.type"] = error
            if len(op_attrs) < 256:
                op_attrs[(operation, error)] = cached
        return cached

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if context is not None:
            context._otel_dist_start = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        start = getattr(context, "_otel_dist_start", None)
        if start is not None:
            duration.record(time.perf_counter() - start, attrs(_operation(statement), None))

    @event.listens_for(engine, "handle_error")
    def _error(exception_context: Any) -> None:
        start = getattr(exception_context.execution_context, "_otel_dist_start", None)
        if start is not None:
            error = type(exception_context.original_exception).__qualname__
            duration.record(time.perf_counter() - start, attrs(_operation(exception_context.statement or ""), error))

    # Connection states are tracked per pool record, so an invalidated or detached
    # connection is counted down exactly once whatever order the events come in.
    def move(record: Any, new: str | None) -> None:
        old = record.info.get(_STATE_KEY)
        if old == new:
            return
        if old in counts:
            counts[old] -= 1
        if new in counts:
            counts[new] += 1
        record.info[_STATE_KEY] = new

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        move(record, "idle")

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        move(record, "used")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            move(record, "idle" if dbapi_connection is not None and record.info.get(_STATE_KEY) else None)

    @event.listens_for(engine, "close")
    def _close(dbapi_connection: Any, record: Any) -> None:
        move(record, None)

    @event.listens_for(engine, "detach")
    def _detach(dbapi_connection: Any, record: Any) -> None:
        move(record, None)


def database_of(app: Any) -> Database:
    database: Database | None = getattr(app.state, "database", None)
    if database is None:
        raise RuntimeError("this app has no database: pass metadata= (or database=True) to create_app")
    return database


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request from the app's :class:`Database`, closed afterwards."""
    async with database_of(request.app).sessions() as session:
        yield session


# scope="function": the session is closed (its connection back in the pool) before
# the response is sent, so a slow client never holds a database connection.
DbSession = Annotated[AsyncSession, Depends(db_session, scope="function")]
"""``async def handler(session: DbSession)``: the request's database session."""
