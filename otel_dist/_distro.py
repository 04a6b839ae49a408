"""Entry points for ``opentelemetry-instrument``.

The configurator runs exactly ``bootstrap()``; the distro decides which
instrumentors the wrapper loads: the contrib FastAPI/ASGI ones are skipped
unless OTEL_DIST_SERVER_INSTRUMENTATION=contrib, because otel-dist's own lean
layer owns the server span; the contrib httpx one unless OTEL_DIST_CLIENT_INSTRUMENTATION=contrib
(otel-dist's own httpx layer makes the client spans); everything else (httpx, sqlalchemy, ...) loads as
upstream would, once.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

from ._bootstrap import bootstrap, current
from ._settings import ConfigError
from ._startup import exit_now

_SERVER_INSTRUMENTORS = frozenset(("fastapi", "asgi", "starlette"))


class OtelDistDistro(BaseDistro):
    def _configure(self, **kwargs: Any) -> None:
        """Settings come from the environment in the configurator; nothing to preset."""

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        tel = current()
        owner = tel.settings.server_instrumentation if tel else "otel-dist"
        if entry_point.name in _SERVER_INSTRUMENTORS and owner != "contrib":
            return
        if tel is not None and tel.settings.sdk_disabled:
            return  # OTEL_SDK_DISABLED: nothing to instrument into
        client_owner = tel.settings.client_instrumentation if tel else "otel-dist"
        if entry_point.name == "httpx" and client_owner != "contrib":
            return  # bootstrap() installed otel-dist's lean httpx layer
        instrumentor = entry_point.load()()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(**kwargs)


class _SqlalchemyIsTracedPerEngine(logging.Filter):
    """Drops the wrapper's ERROR that SQLAlchemy 2.1 is outside the contrib's declared range.

    The line would be false: otel-dist traces each engine itself (``_db``; the contrib per engine with
    ``skip_dep_check`` under ``OTEL_DIST_DB_INSTRUMENTATION=contrib``), and an ERROR on every healthy start
    teaches people to ignore errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('sqlalchemy only instruments "')


class OtelDistConfigurator(_BaseConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        # Upstream logs and swallows a configurator's exception, and the app would then serve
        # with no telemetry at all: a bad setting stops the process instead, like bootstrap().
        try:
            bootstrap()
        except ConfigError as error:
            exit_now(error)
        # Runs before the wrapper loads the instrumentors (its _load_instrumentors).
        logging.getLogger("opentelemetry.instrumentation.auto_instrumentation._load").addFilter(
            _SqlalchemyIsTracedPerEngine()
        )
