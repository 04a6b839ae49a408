"""``GET /_doctor``: what ``otel-dist doctor`` needs to judge a running service, never a secret.

The route sits behind service auth like every other route; a public edge (which takes no service
tokens on its routes) checks the token here itself.  Only with auth off is it open, and then the
report says so.  Keys are described by type and strength, never shown; the OTLP endpoint loses any
credentials in its URL and the exporter headers are not reported at all.
"""

from __future__ import annotations

import math
import platform
from collections import Counter
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ._auth._config import AuthConfig, auth_config
from ._auth._fastapi import build_verifier
from ._auth._verify import AuthFailure, KeysNeeded
from ._bootstrap import Telemetry
from ._faults import FaultState
from ._settings import Settings

__all__ = ["DOCTOR_PATH", "install_doctor_route"]

DOCTOR_PATH = "/_doctor"
_PACKAGES = ("otel-dist", "opentelemetry-sdk", "opentelemetry-api", "fastapi", "uvicorn", "httpx", "sqlalchemy")


def install_doctor_route(app: FastAPI, tel: Telemetry, *, public: bool, faults: FaultState | None) -> None:
    settings = tel.settings
    config = auth_config(settings)
    # A public edge has no auth layer in front of its routes: this one checks the token itself.
    verifier = build_verifier(config, settings) if public and config.enabled else None

    async def doctor(request: Request) -> Response:
        if verifier is not None:
            header = request.headers.get("authorization")
            try:
                try:
                    verifier.verify(header.encode("latin-1") if header is not None else None)
                except KeysNeeded as needed:
                    await verifier.verify_after_refresh(header.encode("latin-1") if header else None, needed)
            except AuthFailure as failure:
                error = "insufficient_scope" if failure.denied else "invalid_token"
                return JSONResponse(
                    {"error": error, "reason": failure.reason},
                    status_code=failure.status,
                    headers={"www-authenticate": f'Bearer error="{error}"', "cache-control": "no-store"},
                )
        body = service_report(settings, config, public=public, faults=faults, checks=app.state.readiness.names)
        return JSONResponse(body, headers={"cache-control": "no-store"})

    app.add_route(DOCTOR_PATH, doctor, methods=["GET"], include_in_schema=False)


def service_report(
    settings: Settings, config: AuthConfig, *, public: bool, faults: FaultState | None, checks: list[str]
) -> dict[str, Any]:
    return {
        "service": settings.service_name,
        "version": settings.service_version,
        "environment": settings.environment,
        "production": settings.production,
        "auth": {
            "enabled": config.enabled,
            "public_edge": public,
            "disabled_reason": config.disabled_reason,
            "algorithms": sorted(config.algorithms),
            "signing_key": key_strength(settings),
            "previous_secret": settings.jwt_previous_secret is not None,
            "allowed_callers": list(settings.jwt_allowed_callers),
        },
        "sampling": {"sampler": settings.traces_sampler, "ratio": settings.traces_sampler_arg},
        "exporters": {
            "traces": list(settings.trace_exporters),
            "metrics": list(settings.metric_exporters),
            "logs": list(settings.log_exporters),
            "otlp_endpoint": _without_credentials(settings.otlp_endpoint),
            "metric_export_interval_ms": settings.metric_export_interval_ms,
        },
        "faults": {
            "installed": faults is not None,
            "admin_route": faults is not None and not public,
            **(faults.as_dict() if faults is not None else {"error_rate": 0.0, "latency_ms": 0}),
        },
        "readiness_checks": checks,
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in _PACKAGES}},
    }


def key_strength(settings: Settings) -> dict[str, Any] | None:
    """The signing key's type and an estimate of its strength; nothing from which it could be rebuilt."""
    if not settings.jwt_algorithm.startswith("HS"):
        if settings.jwt_private_key is None:
            return None
        return {"type": settings.jwt_algorithm, "estimated_bits": 128}  # Ed25519 / P-256: 128-bit security
    if settings.jwt_secret is None:
        return None
    raw = settings.jwt_secret.encode()
    return {"type": "hmac", "bytes": len(raw), "estimated_bits": estimated_bits(raw)}


def estimated_bits(raw: bytes) -> int:
    """Length times the Shannon entropy of its symbols, at most 8 bits a byte: a repeated or
    dictionary-like secret scores low, a random token (``secrets.token_urlsafe(48)``) scores ~350."""
    if not raw:
        return 0
    counts = Counter(raw)
    per_symbol = -sum(n / len(raw) * math.log2(n / len(raw)) for n in counts.values())
    return int(min(8.0, per_symbol) * len(raw))


def _without_credentials(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
