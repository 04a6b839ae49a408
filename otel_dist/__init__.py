"""otel-dist: an OpenTelemetry distribution for FastAPI + httpx microservices.

``bootstrap()`` at startup (or run under ``opentelemetry-instrument``), then
``instrument_app(app)``.  Everything not re-exported here is private.
"""

from ._bootstrap import Telemetry, bootstrap, current
from ._logs import StructuredLogger, get_logger
from ._settings import ConfigError, Settings, load_settings
from ._web import instrument_app

__all__ = [
    "ConfigError",
    "Settings",
    "StructuredLogger",
    "Telemetry",
    "bootstrap",
    "current",
    "get_logger",
    "instrument_app",
    "load_settings",
]
