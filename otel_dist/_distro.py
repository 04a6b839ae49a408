"""Entry points for ``opentelemetry-instrument``.

The configurator runs exactly ``bootstrap()``; the distro decides which
instrumentors the wrapper loads: the contrib FastAPI/ASGI ones are skipped
unless OTEL_DIST_SERVER_INSTRUMENTATION=contrib, because otel-dist's own lean
layer owns the server span; the contrib httpx one unless OTEL_DIST_CLIENT_INSTRUMENTATION=contrib
(otel-dist's own httpx layer makes the client spans); everything else (httpx, sqlalchemy, ...) loads as
upstream would, once.
"""

from __future__ import annotations

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


class OtelDistConfigurator(_BaseConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        # Upstream logs and swallows a configurator's exception, and the app would then serve
        # with no telemetry at all: a bad setting stops the process instead, like bootstrap().
        try:
            bootstrap()
        except ConfigError as error:
            exit_now(error)
