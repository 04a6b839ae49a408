"""Prometheus pull exposition of the SDK's metrics.

Each Telemetry handle owns its own prometheus_client registry, so a process
that bootstraps twice (tests) never mixes readers, and ``/metrics`` renders
exactly what this handle's MeterProvider holds.

Rendering: the upstream path (OTel Prometheus exporter -> prometheus_client
metric families -> text) spends ~14 µs per series translating and escaping
the same labels again on every scrape: 17 ms for 1,000 series.  ``render``
writes the same text from the SDK's collection directly: the label text of a
series is built once and reused while the series exists, and the parts that
are per metric (names, HELP/TYPE/UNIT lines) still come from the upstream
code, so the output is byte-for-byte the upstream one
(``tests/unit/test_prometheus_render.py``).  Anything the lean path does not
cover (other collectors in the registry, exponential histograms, label sets
that differ inside one family, unusual escaping) falls back to upstream.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.exporter.prometheus import _CustomCollector as _UpstreamCollector
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute, sanitize_full_name
from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Sum
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

_registries: dict[int, CollectorRegistry] = {}
_readers: dict[int, LeanPrometheusReader] = {}  # id(registry) -> reader


class LeanPrometheusReader(PrometheusMetricReader):
    """PrometheusMetricReader whose collection can also be handed to the lean renderer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry=registry)
        self._lean_lock = threading.Lock()
        self._capture: list[Any] | None = None
        self.renderer = _Renderer()

    def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if self._capture is not None:
            self._capture.append(metrics_data)
            return
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def collect_data(self) -> Any:
        """One collection (as a scrape would trigger), returned instead of queued for prometheus_client."""
        with self._lean_lock:
            self._capture = []
            try:
                self.collect()
                return self._capture[0] if self._capture else None
            finally:
                self._capture = None


def prometheus_reader() -> PrometheusMetricReader:
    registry = CollectorRegistry(auto_describe=False)
    reader = LeanPrometheusReader(registry)
    _registries[id(reader)] = registry
    _readers[id(registry)] = reader
    return reader


def registry_of(reader: PrometheusMetricReader) -> CollectorRegistry:
    return _registries[id(reader)]


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """Prometheus text, or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept)
    reader = _readers.get(id(registry))
    fmt = _format_of(content_type)
    if reader is not None and fmt is not None and _only_collector(registry, reader):
        data = reader.collect_data()
        body = reader.renderer.render(data, fmt, encoder, reader._collector)
        if body is not None:
            return body, content_type
        # Not covered by the lean path: the same collection, rendered upstream.
        if data is not None:
            collector: Any = reader._collector
            collector.add_metrics_data(data)
            collector._callback = None  # render what was collected, do not collect again
            try:
                return encoder(registry), content_type
            finally:
                collector._callback = reader.collect
    return encoder(registry), content_type


def _format_of(content_type: str) -> str | None:
    """'text' or 'openmetrics' for the content types the lean path reproduces exactly."""
    if content_type.startswith("text/plain; version=0.0.4"):
        return "text"
    if content_type.startswith("text/plain") and "escaping=underscores" in content_type:
        return "text"
    if content_type.startswith("application/openmetrics-text; version=1.0.0") and (
        "escaping=underscores" in content_type or "escaping" not in content_type
    ):
        return "openmetrics"
    return None


def _only_collector(registry: CollectorRegistry, reader: PrometheusMetricReader) -> bool:
    collectors = getattr(registry, "_collector_to_names", None)
    return collectors is not None and list(collectors) == [reader._collector]


# --- the lean renderer ---


def _check_value(value: Any) -> str:
    """A label value as upstream writes it (non-strings as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


_go_ints: dict[int, str] = {}


def _go(value: Any) -> str:
    """floatToGoString, memoised for the small integers that bucket counts and counters are."""
    if type(value) is int and 0 <= value < 1 << 20:
        text = _go_ints.get(value)
        if text is None:
            text = _go_ints[value] = floatToGoString(value)
        return text
    return floatToGoString(value)


class _Fallback(Exception):
    """The collection has something the lean path does not reproduce exactly."""


class _Renderer:
    def __init__(self) -> None:
        # id(point.attributes) -> (attributes, scope, sanitised labels): one per live series
        self._labels: dict[int, tuple[Any, Any, dict[str, str]]] = {}
        # (id(attributes), label keys) -> (attributes, label text, text before `le`, text after `le`)
        self._texts: dict[tuple[int, tuple[str, ...]], tuple[Any, str, str, str]] = {}
        self._headers: dict[tuple[str, str], tuple[str, Any]] = {}
        self._target: dict[str, str] = {}

    def render(self, data: Any, fmt: str, encoder: Callable[[Any], bytes], collector: Any) -> bytes | None:
        if not _default_collector(collector):
            return None
        if len(self._labels) > 100_000 or len(self._texts) > 100_000:
            self._labels.clear()  # series come and go; never grow without bound
            self._texts.clear()
        try:
            return self._render(data, fmt, encoder)
        except _Fallback:
            return None

    def _render(self, data: Any, fmt: str, encoder: Callable[[Any], bytes]) -> bytes:
        out: list[str] = []
        families: dict[str, tuple[tuple[str, ...], list[str], str]] = {}
        if data is not None:
            out.append(self._target_info(data, fmt, encoder))
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                scope_attrs = _scope_attrs(sm.scope)
                for metric in sm.metrics:
                    self._metric(metric, sm.scope, scope_attrs, fmt, encoder, families)
        for _keys, lines, _sample in families.values():
            out.extend(lines)
        if fmt == "openmetrics":
            out.append("# EOF\n")
        return "".join(out).encode("utf-8")

    def _target_info(self, data: Any, fmt: str, encoder: Callable[[Any], bytes]) -> str:
        text = self._target.get(fmt)
        if text is None:
            attributes: dict[str, Any] = {}
            for rm in data.resource_metrics:
                attributes = {**attributes, **rm.resource.attributes}
            labels = {sanitize_attribute(k): _check_value(v) for k, v in attributes.items()}
            family = InfoMetricFamily("target", "Target metadata", labels=list(labels))
            family.add_metric(labels=list(labels), value=labels)
            text = self._target[fmt] = _strip_eof(encoder(_One(family)).decode("utf-8"), fmt)
        return text

    def _metric(
        self,
        metric: Any,
        scope: Any,
        scope_attrs: dict[str, str],
        fmt: str,
        encoder: Callable[[Any], bytes],
        families: dict[str, tuple[tuple[str, ...], list[str], str]],
    ) -> None:
        metric_data = metric.data
        if isinstance(metric_data, Sum):
            gauge = not metric_data.is_monotonic and (
                metric_data.aggregation_temporality == AggregationTemporality.CUMULATIVE
            )
            factory: Any = GaugeMetricFamily if gauge else CounterMetricFamily
        elif isinstance(metric_data, Gauge):
            factory = GaugeMetricFamily
        elif isinstance(metric_data, Histogram):
            factory = HistogramMetricFamily
        else:
            raise _Fallback  # exponential histograms: upstream warns and skips
        name = _PROMETHEUS_NAMES.get(metric.name) or sanitize_full_name(metric.name)
        description = metric.description or ""
        unit = map_unit(metric.unit or "")
        points = metric_data.data_points
        rows = [self._point_labels(point, scope, scope_attrs) for point in points]
        keys = tuple(sorted({k for labels in rows for k in labels}))
        if "le" in keys:
            raise _Fallback
        family_id = f"{name}|{description}|{unit}|{factory.__name__}"
        family = families.get(family_id)
        if family is None:
            header, sample_name = self._header(factory, name, description, unit, keys, fmt, encoder)
            family = families[family_id] = (keys, [header], sample_name)
        elif family[0] != keys:
            raise _Fallback  # upstream would label these samples with the first metric's keys
        keys, lines, sample_name = family
        for point, labels in zip(points, rows, strict=True):
            text, before, after = self._label_text(point.attributes, labels, keys)
            if factory is HistogramMetricFamily:
                base = sample_name
                total = 0
                for bound, count in zip((*point.explicit_bounds, "+Inf"), point.bucket_counts, strict=False):
                    total += count
                    lines.append(f'{base}_bucket{{{before}le="{bound}"{after}}} {_go(total)}\n')
                if point.sum is not None:
                    lines.append(f"{base}_count{text} {_go(total)}\n")
                    lines.append(f"{base}_sum{text} {_go(point.sum)}\n")
            else:
                lines.append(f"{sample_name}{text} {_go(point.value)}\n")

    def _header(
        self,
        factory: Any,
        name: str,
        description: str,
        unit: str,
        keys: tuple[str, ...],
        fmt: str,
        encoder: Callable[[Any], bytes],
    ) -> tuple[str, str]:
        cache_key = (f"{name}|{description}|{unit}|{factory.__name__}|{','.join(keys)}", fmt)
        cached = self._headers.get(cache_key)
        if cached is None:
            family = factory(name=name, documentation=description, labels=list(keys), unit=unit)
            sample = family.name + "_total" if factory is CounterMetricFamily else family.name
            cached = self._headers[cache_key] = (_strip_eof(encoder(_One(family)).decode("utf-8"), fmt), sample)
        return cached

    def _point_labels(self, point: Any, scope: Any, scope_attrs: dict[str, str]) -> dict[str, str]:
        attributes = point.attributes
        cached = self._labels.get(id(attributes))
        if cached is not None and cached[0] is attributes and cached[1] is scope:
            return cached[2]
        labels = dict(scope_attrs)
        for key, value in (attributes or {}).items():
            labels[sanitize_attribute(key)] = _check_value(value)
        self._labels[id(attributes)] = (attributes, scope, labels)
        return labels

    def _label_text(self, attributes: Any, labels: dict[str, str], keys: tuple[str, ...]) -> tuple[str, str, str]:
        cache_key = (id(attributes), keys)
        cached = self._texts.get(cache_key)
        if cached is not None and cached[0] is attributes:
            return cached[1], cached[2], cached[3]
        pairs = [f'{k}="{_escape(labels.get(k, ""))}"' for k in keys]
        split = bisect_left(keys, "le")
        text = "{" + ",".join(pairs) + "}" if pairs else ""
        before = "".join(p + "," for p in pairs[:split])
        after = "".join("," + p for p in pairs[split:])
        self._texts[cache_key] = (attributes, text, before, after)
        return text, before, after


# The exposition format reserves `_count` for histograms and summaries (promtool's lint refuses a
# gauge named so); the semantic-convention name stays as it is in OTLP.  The seed called it
# `database_connections`.
_PROMETHEUS_NAMES = {"db.client.connection.count": "db_client_connections"}


def _default_collector(collector: Any) -> bool:
    """The collector has upstream's defaults (what the lean path reproduces)."""
    return (
        isinstance(collector, _UpstreamCollector)
        and not getattr(collector, "_disable_target_info", True)
        and getattr(collector, "_prefix", None) == ""
        and getattr(collector, "_scope_info_enabled", False) is True
        and getattr(collector, "_resource_attribute_filter", 0) is None
    )


def _scope_attrs(scope: Any) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for key, value in (scope.attributes or {}).items():
        attrs[sanitize_attribute("otel_scope_" + key)] = _check_value(value)
    attrs["otel_scope_name"] = scope.name or ""
    attrs["otel_scope_version"] = scope.version or ""
    attrs["otel_scope_schema_url"] = scope.schema_url or ""
    return attrs


def _strip_eof(text: str, fmt: str) -> str:
    return text[: -len("# EOF\n")] if fmt == "openmetrics" and text.endswith("# EOF\n") else text


class _One:
    """A collector of one family (to render a header with the upstream encoder)."""

    def __init__(self, family: Any) -> None:
        self._family = family

    def collect(self) -> list[Any]:
        return [self._family]
