"""Upstream ``opentelemetry-instrument`` in its own venv (``.venv-upstream-conformance``, git-ignored; see
``benchmarks/side_venv.py``), for the cases where otel-dist must behave the same.  Unlike the benchmark's
upstream venv it has the gRPC exporter and the b3 propagator, and no FastAPI."""

from __future__ import annotations

from pathlib import Path

from benchmarks.side_venv import SideVenv

UPSTREAM = SideVenv(
    ".venv-upstream-conformance",
    {
        "opentelemetry-sdk": "opentelemetry-sdk",
        "opentelemetry-distro": "opentelemetry-instrumentation",
        "opentelemetry-exporter-otlp-proto-http": "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-exporter-otlp-proto-grpc": "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-propagator-b3": "opentelemetry-propagator-b3",
    },
)


def ensure() -> Path:
    """The upstream venv's bin directory, created or refreshed when needed."""
    return UPSTREAM.ensure(needs="opentelemetry-instrument")
