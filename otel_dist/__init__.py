"""otel-dist: an OpenTelemetry distribution for FastAPI + httpx microservices.

``bootstrap()`` at startup (or run under ``opentelemetry-instrument``), then
``instrument_app(app)``.  Everything not re-exported here is private.
"""

from ._bootstrap import Telemetry, bootstrap, current
from ._db import Database, DbSession, db_session
from ._health import Readiness, ReadinessCheck
from ._logs import StructuredLogger, get_logger
from ._resilience import CircuitOpenError, ServiceCallError, ServiceClient, breaker_states
from ._settings import ConfigError, Settings, load_settings
from ._web import instrument_app

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "Database",
    "DbSession",
    "Readiness",
    "ReadinessCheck",
    "ServiceCallError",
    "ServiceClient",
    "Settings",
    "StructuredLogger",
    "Telemetry",
    "bootstrap",
    "breaker_states",
    "current",
    "db_session",
    "get_logger",
    "instrument_app",
    "load_settings",
]
