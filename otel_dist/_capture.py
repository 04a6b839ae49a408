"""The contrib instrumentations' HTTP switches, with upstream's own helpers and semantics.

- excluded URLs (``OTEL_PYTHON_EXCLUDED_URLS``, ``..._FASTAPI_...``, ``..._HTTPX_...``): a comma list of
  regular expressions, searched in the full URL (``scheme://host/path``), as upstream;
- header capture (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``): names or regular expressions
  matched in full, case-insensitively; attributes ``http.request.header.<name>`` /
  ``http.response.header.<name>`` (lower case, ``-`` as ``_``, as upstream) holding a list of values;
  values of ``..._SANITIZE_FIELDS`` matches become ``[REDACTED]``.  Credentials are always redacted.

Everything is built once from the settings; unset switches cost nothing per request.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.util.http import (
    SanitizeValue,
    normalise_request_header_name,
    normalise_response_header_name,
    parse_excluded_urls,
)

from ._settings import Settings

# Redacted whatever the sanitize setting says (upstream redacts nothing by default).
ALWAYS_SANITIZED = ("authorization", "cookie", "x-api-key", "x-auth-token")


def sanitize_fields(settings: Settings) -> tuple[str, ...]:
    return (*ALWAYS_SANITIZED, *settings.capture_sanitize_fields)


def server_exclusion(settings: Settings) -> Any:
    """A predicate on the ASGI scope, or None when nothing is excluded."""
    patterns = settings.server_excluded_urls
    if not patterns:
        return None
    from opentelemetry.instrumentation.asgi import get_host_port_url_tuple

    excluded = parse_excluded_urls(",".join(patterns))

    def is_excluded(scope: Mapping[str, Any]) -> bool:
        return excluded.url_disabled(get_host_port_url_tuple(scope)[2])

    return is_excluded


def client_exclusion(settings: Settings) -> Any:
    """A predicate on the request URL for the httpx layer, or None when nothing is excluded."""
    patterns = settings.client_excluded_urls
    if not patterns:
        return None
    return parse_excluded_urls(",".join(patterns)).url_disabled


class HeaderCapture:
    """Captured request or response headers as span attributes (None from :func:`build` when off)."""

    def __init__(self, patterns: tuple[str, ...], sanitize: tuple[str, ...], response: bool) -> None:
        self._patterns = list(patterns)
        self._sanitize = SanitizeValue(sanitize)
        self._normalise = normalise_response_header_name if response else normalise_request_header_name

    def attributes(self, headers: Iterable[tuple[Any, Any]]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for name, value in headers:
            key = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            grouped.setdefault(key.lower(), []).append(text)
        return self._sanitize.sanitize_header_values(grouped, self._patterns, self._normalise)


@functools.lru_cache(maxsize=32)
def build(settings: Settings, side: str, direction: str) -> HeaderCapture | None:
    """side: server|client, direction: request|response."""
    patterns: tuple[str, ...] = getattr(settings, f"capture_{side}_{direction}_headers")
    if not patterns:
        return None
    return HeaderCapture(patterns, sanitize_fields(settings), response=direction == "response")
