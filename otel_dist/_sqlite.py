"""SQLite statements on the event loop's thread, through aiosqlite's own API.

Why: aiosqlite runs every call on one worker thread per connection, and SQLAlchemy's adapter makes six
calls for one ``SELECT`` in a session (cursor, execute, fetchall, close, two rollbacks): six hops to that
thread and back, each a futex wake, a self-pipe write, an event-loop turn and a GIL hand-over.  A local
SQLite statement takes microseconds; the hops cost far more than the statement (``benchmarks/chain.py``).
A COMMIT (journal write, fsync) and the ROLLBACK of writes still go to the worker thread: the disk must
never stall the loop; a read-only transaction has nothing to commit or roll back.

:class:`InlineConnection` is an ``aiosqlite.Connection`` whose calls run where they are awaited.  The one
case where SQLite can wait is a lock held by another connection: the connection's busy timeout is 0 on
the loop, so such a statement fails at once with ``SQLITE_BUSY`` and is run again on the connection's
worker thread with the configured busy timeout (a failed statement changed nothing, so running it again
is what SQLite's busy handler would have done).  ``DATABASE_SQLITE_INLINE=false`` keeps aiosqlite's
thread for every call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["InlineConnection", "run_inline"]

_DEFAULT_TIMEOUT = 5.0  # sqlite3.connect's own default, seconds


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection, its calls run on the calling thread; a locked database waits on its thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], busy_timeout_ms: int) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._busy_timeout_ms = busy_timeout_ms

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        waiting = partial(_with_busy_timeout, self._connection, self._busy_timeout_ms, partial(fn, *args, **kwargs))
        return await super()._execute(waiting)

    async def commit(self) -> None:
        # A COMMIT writes the journal and fsyncs (milliseconds on a slow disk): on the worker thread.
        if self._connection is not None and self._connection.in_transaction:
            await super()._execute(
                partial(_with_busy_timeout, self._connection, self._busy_timeout_ms, self._conn.commit)
            )

    async def rollback(self) -> None:
        # Nothing to undo after reads (the usual case): inline; undoing writes touches the files: thread.
        if self._connection is not None and self._connection.in_transaction:
            await super()._execute(self._conn.rollback)


def _with_busy_timeout(connection: sqlite3.Connection, timeout_ms: int, call: Callable[[], Any]) -> Any:
    connection.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
    try:
        return call()
    finally:
        connection.execute("PRAGMA busy_timeout = 0")


def connect(database: str | bytes, **kwargs: Any) -> InlineConnection:
    """``aiosqlite.connect`` for :class:`InlineConnection` (same arguments as ``sqlite3.connect``)."""
    timeout = float(kwargs.pop("timeout", _DEFAULT_TIMEOUT))
    kwargs["check_same_thread"] = False  # the loop's thread and, when the file is locked, the worker's
    location = database.decode() if isinstance(database, bytes) else str(database)

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(location, timeout=0, **kwargs)  # busy timeout 0: a locked file fails at once

    return InlineConnection(connector, busy_timeout_ms=int(timeout * 1000))


def run_inline(engine: Engine) -> None:
    """Make `engine` (``sqlite+aiosqlite``) open :class:`InlineConnection` s, with the URL's arguments."""

    @event.listens_for(engine, "do_connect")
    def _inline(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        cparams["async_creator_fn"] = connect  # the aiosqlite adapter calls it with the same arguments
