"""Prometheus pull exposition of the SDK's metrics.

Each Telemetry handle owns its own prometheus_client registry, so a process
that bootstraps twice (tests) never mixes readers, and ``/metrics`` renders
exactly what this handle's MeterProvider holds.
"""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

_registries: dict[int, CollectorRegistry] = {}


def prometheus_reader() -> PrometheusMetricReader:
    registry = CollectorRegistry(auto_describe=False)
    reader = PrometheusMetricReader(registry=registry)
    _registries[id(reader)] = registry
    return reader


def registry_of(reader: PrometheusMetricReader) -> CollectorRegistry:
    return _registries[id(reader)]


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """Prometheus text, or OpenMetrics (with exemplars) when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
