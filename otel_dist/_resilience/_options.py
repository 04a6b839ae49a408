"""The client's settings: rows of the one settings table, overridable per client by keyword.

Keyword overrides go through the same caster as the environment, so ``ServiceClient(max_retries=-1)``
fails with the same message as ``SERVICE_CLIENT_MAX_RETRIES=-1``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._settings import ConfigError, Settings

__all__ = ["ClientOptions", "resolve_options"]

# ServiceClient keyword -> Settings field
KEYWORDS = {
    "max_retries": "client_max_retries",
    "retry_backoff": "client_retry_backoff",
    "max_backoff": "client_max_backoff",
    "timeout": "client_timeout",
    "attempt_timeout": "client_attempt_timeout",
    "failure_threshold": "breaker_failure_threshold",
    "success_threshold": "breaker_success_threshold",
    "breaker_timeout": "breaker_timeout",
    "retry_budget": "client_retry_budget",
    "retry_budget_min_per_second": "client_retry_budget_min",
    "retry_budget_window": "client_retry_budget_window",
}


@dataclass(frozen=True, slots=True)
class ClientOptions:
    max_retries: int
    retry_backoff: float
    max_backoff: float
    timeout: float
    attempt_timeout: float
    failure_threshold: int
    success_threshold: int
    breaker_timeout: float
    retry_budget: float
    retry_budget_min_per_second: float
    retry_budget_window: float


def resolve_options(settings: Settings, overrides: dict[str, Any]) -> ClientOptions:
    """Keyword override (validated like the environment) > `settings` (environment > default)."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for keyword, name in KEYWORDS.items():
        value = overrides.get(keyword)
        if value is None:
            values[keyword] = getattr(settings, name)
            continue
        meta = fields[name].metadata
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise TypeError(value)
            values[keyword] = meta["parse"](str(value))
        except (TypeError, ValueError):
            raise ConfigError(
                f"ServiceClient({keyword}=...) ({meta['env'][0]}): invalid value {value!r}; accepted: {meta['accepts']}"
            ) from None
    return ClientOptions(**values)
