"""The resilient service client: deadline, backoff retries, pybreaker breakers, all visible in telemetry."""

from ._breaker import breaker_states
from ._client import ServiceClient
from ._errors import CircuitOpenError, ServiceCallError

__all__ = ["CircuitOpenError", "ServiceCallError", "ServiceClient", "breaker_states"]
