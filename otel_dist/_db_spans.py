"""Database CLIENT spans built by otel-dist (``OTEL_DIST_DB_INSTRUMENTATION=contrib``: the contrib's instead).

Why: opentelemetry-instrumentation-sqlalchemy re-derives each span's attributes from the URL and the
cursor on every statement, reads the semantic-convention mode on every connect, keeps its (here no-op)
connection metric in step on every checkout and checkin, and starts each span through the SDK's full
attribute validation: ~600 Python calls per query in a session, more than SQLAlchemy's own work for it
(``benchmarks/chain.py``).  Here what cannot change (namespace, system, server address) is built once per
engine and each span takes ``_lean_span``'s start.

The same spans as the contrib in its stable-convention mode: ``connect`` (CLIENT) around each
``Engine.connect`` (a pool checkout: it shows a wait for a free connection), and per statement a CLIENT
span named ``<first word> <db.namespace>`` with ``db.system.name``, ``db.namespace``, ``db.query.text``
(the statement with its placeholders, never the values), ``server.address``/``server.port`` for a
networked database, status ERROR with the driver's message when it fails.  Two differences:
``db.operation.name`` is the operation alone (``SELECT``), as the semantic conventions define it and as
``db.client.operation.duration`` has it (the contrib repeats the span name there); a failed statement also
carries ``error.type`` (the exception's class name), which the conventions require and the contrib omits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ._lean_span import start_span

__all__ = ["trace_engine"]

_LEADING_COMMENT = re.compile(r"^/\*.*?\*/")
_SPAN_KEY = "_otel_dist_span"


def trace_engine(engine: Engine, tracer: trace.Tracer, system: str) -> None:
    """A ``connect`` span per checkout and a CLIENT span per statement of `engine` (the sync engine)."""
    url = engine.url
    base: dict[str, Any] = {}
    if url.host:
        base["server.address"] = url.host
    if url.port:
        base["server.port"] = int(url.port)
    namespace = url.database or None
    if namespace:
        base["db.namespace"] = namespace
    base["db.system.name"] = system
    names: dict[str, tuple[str, str]] = {}  # statement -> (span name, operation); statements repeat

    def describe(statement: str) -> tuple[str, str]:
        known = names.get(statement)
        if known is None:
            tokens = _LEADING_COMMENT.sub("", statement).split()
            operation = tokens[0] if tokens else ""
            name = " ".join(part for part in (operation, namespace) if part) or system
            known = (name, operation)
            if len(names) < 1024:
                names[statement] = known
        return known

    original_connect: Callable[[], Connection] = engine.connect

    def connect() -> Connection:
        if not is_instrumentation_enabled():
            return original_connect()
        # Not made current (nothing under a checkout is traced): no context attach/detach per request.
        span = start_span(tracer, "connect", context=None, kind=SpanKind.CLIENT, attributes=dict(base))
        try:
            return original_connect()
        except Exception as error:
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            raise
        finally:
            span.end()

    engine.connect = connect  # type: ignore[method-assign]  # this engine only (the contrib patches the class)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if context is None or not is_instrumentation_enabled():
            return
        name, operation = describe(statement)
        attributes = dict(base)
        attributes["db.query.text"] = statement
        if operation:
            attributes["db.operation.name"] = operation
        setattr(context, _SPAN_KEY, start_span(tracer, name, context=None, kind=SpanKind.CLIENT, attributes=attributes))

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        span = getattr(context, _SPAN_KEY, None)
        if span is not None:
            span.end()

    @event.listens_for(engine, "handle_error")
    def _error(exception_context: Any) -> None:
        span = getattr(exception_context.execution_context, _SPAN_KEY, None)
        if span is not None:
            exception = exception_context.original_exception
            span.set_attribute("error.type", type(exception).__qualname__)  # as db.client.operation.duration has it
            span.set_status(Status(StatusCode.ERROR, str(exception)))
            span.end()
