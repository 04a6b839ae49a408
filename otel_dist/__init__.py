"""otel-dist: an OpenTelemetry distribution for FastAPI + httpx microservices.

``bootstrap()`` at startup (or run under ``opentelemetry-instrument``), then
``instrument_app(app)``.  Everything not re-exported here is private.

The names are imported on first use (PEP 562), so ``otel-dist --help`` and other
light users of the package do not pay for FastAPI, SQLAlchemy and the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._auth import CallingService, ServiceIdentity, ServiceTokenAuth, TokenMinter, calling_service, service_auth
    from ._bootstrap import Telemetry, bootstrap, current
    from ._db import Database, DbSession, db_session
    from ._deadline import DEADLINE_HEADER, remaining_time
    from ._errors import EncodableStr, ErrorBody
    from ._health import Readiness, ReadinessCheck
    from ._logs import StructuredLogger, get_logger
    from ._resilience import CircuitOpenError, ServiceCallError, ServiceClient, breaker_states
    from ._settings import ConfigError, Settings, load_settings
    from ._template import create_app, downstream
    from ._throttle import Throttle, throttle
    from ._web import instrument_app

_MODULE_OF = {
    "CallingService": "._auth",
    "ServiceIdentity": "._auth",
    "ServiceTokenAuth": "._auth",
    "TokenMinter": "._auth",
    "calling_service": "._auth",
    "service_auth": "._auth",
    "Telemetry": "._bootstrap",
    "bootstrap": "._bootstrap",
    "current": "._bootstrap",
    "Database": "._db",
    "DbSession": "._db",
    "db_session": "._db",
    "DEADLINE_HEADER": "._deadline",
    "remaining_time": "._deadline",
    "EncodableStr": "._errors",
    "ErrorBody": "._errors",
    "Readiness": "._health",
    "ReadinessCheck": "._health",
    "StructuredLogger": "._logs",
    "get_logger": "._logs",
    "CircuitOpenError": "._resilience",
    "ServiceCallError": "._resilience",
    "ServiceClient": "._resilience",
    "breaker_states": "._resilience",
    "ConfigError": "._settings",
    "Settings": "._settings",
    "load_settings": "._settings",
    "create_app": "._template",
    "downstream": "._template",
    "Throttle": "._throttle",
    "throttle": "._throttle",
    "instrument_app": "._web",
}

__all__ = [
    "DEADLINE_HEADER",
    "CallingService",
    "CircuitOpenError",
    "ConfigError",
    "Database",
    "DbSession",
    "EncodableStr",
    "ErrorBody",
    "Readiness",
    "ReadinessCheck",
    "ServiceCallError",
    "ServiceClient",
    "ServiceIdentity",
    "ServiceTokenAuth",
    "Settings",
    "StructuredLogger",
    "Telemetry",
    "Throttle",
    "TokenMinter",
    "bootstrap",
    "breaker_states",
    "calling_service",
    "create_app",
    "current",
    "db_session",
    "downstream",
    "get_logger",
    "instrument_app",
    "load_settings",
    "remaining_time",
    "service_auth",
    "throttle",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_dist' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
