"""otel-dist: an OpenTelemetry distribution for FastAPI + httpx microservices.

``bootstrap()`` at startup (or run under ``opentelemetry-instrument``), then
``instrument_app(app)``.  Everything not re-exported here is private.
"""

from ._auth import CallingService, ServiceIdentity, ServiceTokenAuth, TokenMinter, calling_service, service_auth
from ._bootstrap import Telemetry, bootstrap, current
from ._db import Database, DbSession, db_session
from ._errors import EncodableStr, ErrorBody
from ._health import Readiness, ReadinessCheck
from ._logs import StructuredLogger, get_logger
from ._resilience import CircuitOpenError, ServiceCallError, ServiceClient, breaker_states
from ._settings import ConfigError, Settings, load_settings
from ._template import create_app, downstream
from ._throttle import Throttle, throttle
from ._web import instrument_app

__all__ = [
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
    "service_auth",
    "throttle",
]
