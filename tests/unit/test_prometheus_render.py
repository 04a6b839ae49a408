"""/metrics: the lean renderer writes byte-for-byte what the upstream exporter + prometheus_client write."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client.exposition import choose_encoder

from otel_dist import _metrics

ACCEPTS = [
    "",
    "text/plain",
    "text/plain;version=0.0.4",
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; escaping=underscores",
]


def _provider() -> tuple[MeterProvider, Any]:
    reader = _metrics.prometheus_reader()
    views = [View(instrument_name="custom.*", aggregation=ExplicitBucketHistogramAggregation((1, 5, 10.5)))]
    provider = MeterProvider(
        resource=Resource.create({"service.name": "svc", "weird key": 'quo"te', "n": 3}),
        metric_readers=[reader],
        views=views,
    )
    return provider, reader


def _record(provider: MeterProvider) -> None:
    meter = provider.get_meter("scope.a", "1.2", schema_url="https://example.com/s", attributes={"tier": "x"})
    other = provider.get_meter("scope.b")
    counter = meter.create_counter("requests", unit="{request}", description="Requests.")
    counter.add(3, {"http.route": "/a/{id}", "status": 200, "ok": True, "ratio": 0.5})
    counter.add(1, {"http.route": 'we"ird\\path\nx', "status": 500})
    counter.add(2, {"1st-key": "v", "héllo": "wörld", "list": ["a", "b"]})
    meter.create_counter("bytes_total", unit="By").add(10)
    meter.create_counter("ratio.things", unit="1").add(5, {"a": "b"})
    updown = meter.create_up_down_counter("active", unit="{request}")
    updown.add(2, {"m": "GET"})
    updown.add(-1, {"m": "POST"})
    meter.create_histogram("http.server.request.duration", unit="s", description="Dur.").record(
        0.003, {"http.route": "/a"}
    )
    meter.create_histogram("custom.size", unit="ms").record(7, {"k": "v"})
    meter.create_histogram("custom.size", unit="ms").record(70)
    # The same metric from two scopes: one family.
    third = provider.get_meter("scope.c", "2")
    for i, scope_meter in enumerate((other, third)):
        scope_meter.create_counter("shared", description="Shared.").add(i + 1, {"http.route": "/b", "ok": False})

    def observe(options: CallbackOptions) -> list[Observation]:
        return [Observation(21.5, {"x": "y"}), Observation(1e21, {"x": "big"})]

    meter.create_observable_gauge("temp", callbacks=[observe], unit="Cel", description="multi\nline \\ doc")
    other.create_counter("empty.counter")  # no points


def _upstream(reader: Any, data: Any, encoder: Any) -> bytes:
    collector = reader._collector
    collector.add_metrics_data(data)
    collector._callback = None
    try:
        return bytes(encoder(_metrics.registry_of(reader)))
    finally:
        collector._callback = reader.collect


@pytest.mark.parametrize("accept", ACCEPTS)
def test_lean_render_matches_upstream(accept: str) -> None:
    provider, reader = _provider()
    _record(provider)
    encoder, content_type = choose_encoder(accept)
    fmt = _metrics._format_of(content_type)
    assert fmt is not None, content_type
    for _ in range(3):  # second and third scrapes go through the caches
        data = reader.collect_data()
        ours = reader.renderer.render(data, fmt, encoder, reader._collector)
        assert ours is not None
        assert ours.decode() == _upstream(reader, data, encoder).decode()
        provider.get_meter("scope.a", "1.2").create_counter("late").add(1, {"r": "1"})


def test_render_serves_the_lean_path_and_falls_back() -> None:
    provider, reader = _provider()
    _record(provider)
    registry = _metrics.registry_of(reader)
    body, content_type = _metrics.render(registry, "")
    assert content_type.startswith("text/plain")
    assert b"requests_total{" in body
    assert b'http_route="/a/{id}"' in body
    # Escaping the lean path does not reproduce: upstream renders it, from the same data.
    body, content_type = _metrics.render(registry, "application/openmetrics-text; version=1.0.0; escaping=dots")
    assert "escaping=dots" in content_type
    assert b"# EOF" in body


def test_one_family_with_different_label_keys_falls_back_to_upstream() -> None:
    provider, reader = _provider()
    provider.get_meter("a").create_counter("c").add(1, {"x": "1"})
    provider.get_meter("b").create_counter("c").add(1, {"y": "1"})
    encoder, _ = choose_encoder("")
    assert reader.renderer.render(reader.collect_data(), "text", encoder, reader._collector) is None


def test_a_label_named_le_falls_back_to_upstream() -> None:
    provider, reader = _provider()
    provider.get_meter("m").create_histogram("h").record(1.0, {"le": "x"})
    encoder, _ = choose_encoder("")
    assert reader.renderer.render(reader.collect_data(), "text", encoder, reader._collector) is None
