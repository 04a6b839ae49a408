"""Every otel-dist setting, declared once.

Each field of :class:`Settings` is a row of the table: the environment
variables it is read from (in precedence order), its default, how a string is
turned into a value (with an error naming the variable and what it accepts),
and whether it is a secret that the startup dump must redact.  One rule
applies to all rows: keyword override > environment > default.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(ValueError):
    """A setting has a value otel-dist cannot use; the message names it.

    Uncaught at startup, it ends the process with one plain line (see ``_startup``).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        from ._startup import install_excepthook

        install_excepthook()


Parser = Callable[[str], Any]


def _setting(
    *env: str,
    default: Any,
    parse: Parser,
    accepts: str,
    secret: bool = False,
    doc: str = "",
) -> Any:
    return field(
        default=default,
        metadata={"env": env, "parse": parse, "accepts": accepts, "secret": secret, "doc": doc},
    )


# --- casters: each raises ValueError; the loader adds the variable's name ---


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("empty")
    return value


def _optional_text(value: str) -> str | None:
    return value.strip() or None


def _choice(*choices: str, lower: bool = True) -> Parser:
    def parse(value: str) -> str:
        value = value.strip().lower() if lower else value.strip()
        if value not in choices:
            raise ValueError(value)
        return value

    return parse


def _choices_list(*choices: str) -> Parser:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip().lower() for v in value.split(",") if v.strip())
        if not items or any(v not in choices for v in items):
            raise ValueError(value)
        if "none" in items and len(items) > 1:
            raise ValueError(value)
        return () if items == ("none",) else items

    return parse


def _text_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _lower_list(value: str) -> tuple[str, ...]:
    return tuple(v.lower() for v in _text_list(value))


def _number(kind: type, low: float | None = None, high: float | None = None) -> Parser:
    def parse(value: str) -> Any:
        number = kind(value.strip())
        if number != number or (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(value)
        return number

    return parse


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _url(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(value)
    return value.rstrip("/")


def _rate(value: str) -> str:
    """``attempts/seconds`` (``10/60``) or ``0``; kept as text, checked here."""
    value = value.strip()
    if value in ("0", "off"):
        return "0"
    count, sep, window = value.partition("/")
    attempts, seconds = int(count), float(window) if sep else 60.0
    if not (1 <= attempts <= 1_000_000) or not (0 < seconds <= 86400):
        raise ValueError(value)
    return f"{attempts}/{seconds:g}"


def _url_as_given(value: str) -> str | None:
    """A per-signal OTLP endpoint: the spec says it is used as given (no /v1/<signal> appended)."""
    value = value.strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(value)
    return value


def _file(value: str) -> str | None:
    """A path to a readable file (certificates, keys): checked at startup, not at the first export."""
    value = value.strip()
    if not value:
        return None
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ValueError(value)
    return value


def _regex_list(value: str) -> tuple[str, ...]:
    """Comma-separated regular expressions (upstream's excluded-URL and header-capture syntax)."""
    import re

    items = tuple(v.strip() for v in value.split(",") if v.strip())
    for item in items:
        try:
            re.compile(item)
        except re.error:
            raise ValueError(item) from None
    return items


def _propagator_names(value: str) -> tuple[str, ...]:
    """W3C names, or any installed `opentelemetry_propagator` entry point (b3, b3multi, jaeger, xray...)."""
    items = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    if not items or ("none" in items and len(items) > 1):
        raise ValueError(value)
    if items == ("none",):
        return ()
    unknown = set(items) - {"tracecontext", "baggage"}
    if unknown:
        from importlib.metadata import entry_points

        installed = {ep.name for ep in entry_points(group="opentelemetry_propagator")}
        if unknown - installed:
            raise ValueError(value)
    return items


def _instrumentation_names(value: str) -> tuple[str, ...]:
    items = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    unknown = set(items) - set(_INSTRUMENTATIONS)
    if unknown:
        from importlib.metadata import entry_points

        if unknown - {ep.name for ep in entry_points(group="opentelemetry_instrumentor")}:
            raise ValueError(value)
    return items


_SEMCONV = ("http", "http/dup", "database", "database/dup", "gen_ai_latest_experimental")


def _semconv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    if any(v not in _SEMCONV for v in items):
        raise ValueError(value)
    # otel-dist's own layers emit the stable HTTP and database names: those are always opted in.
    if "http/dup" not in items and "http" not in items:
        items = ("http", *items)
    if "database/dup" not in items and "database" not in items:
        items = (*items, "database")
    return items


def _key_values(value: str) -> tuple[tuple[str, str], ...]:
    """W3C-baggage-like `k=v,k2=v2` as used by OTEL_RESOURCE_ATTRIBUTES and OTLP headers."""
    from urllib.parse import unquote

    pairs = []
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(item)
        pairs.append((key.strip(), unquote(val.strip())))
    return tuple(pairs)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


_PROTOCOLS = ("http/protobuf", "grpc")
_INSTRUMENTATIONS = ("fastapi", "httpx", "sqlalchemy", "logging")
_COMPRESSIONS = ("gzip", "none")
_FILE = "a path to a readable PEM file"
_OTLP_PER_SIGNAL: dict[str, dict[str, Any]] = {
    "ENDPOINT": {"default": None, "parse": _url_as_given, "accepts": "an http:// or https:// URL, used as given"},
    "HEADERS": {"default": (), "parse": _key_values, "accepts": "key=value pairs separated by commas", "secret": True},
    "TIMEOUT": {"default": None, "parse": _number(int, 1, 60000), "accepts": "milliseconds, 1 to 60000"},
    "PROTOCOL": {"default": None, "parse": _choice(*_PROTOCOLS), "accepts": ", ".join(_PROTOCOLS)},
    "COMPRESSION": {"default": None, "parse": _choice(*_COMPRESSIONS), "accepts": ", ".join(_COMPRESSIONS)},
    "CERTIFICATE": {"default": None, "parse": _file, "accepts": _FILE},
    "CLIENT_KEY": {"default": None, "parse": _file, "accepts": _FILE},
    "CLIENT_CERTIFICATE": {"default": None, "parse": _file, "accepts": _FILE},
}


def _per_signal(signal: str, key: str) -> Any:
    """A per-signal OTLP row: wins over the generic variable (HEADERS: per key)."""
    row = _OTLP_PER_SIGNAL[key]
    doc = f"{signal.lower()} only; wins over OTEL_EXPORTER_OTLP_{key}"
    if key == "HEADERS":
        doc += " key by key"
    elif key == "ENDPOINT":
        doc += " (which gets /v1/" + signal.lower() + " appended) and turns on OTLP export of " + signal.lower()
    return _setting(
        f"OTEL_EXPORTER_OTLP_{signal}_{key}",
        default=row["default"],
        parse=row["parse"],
        accepts=row["accepts"],
        secret=row.get("secret", False),
        doc=doc,
    )


def _limit(variable: str, default: int | None, fallback: str) -> Any:
    """An SDK attribute/event/link limit; unset falls back as the spec says."""
    if fallback == "unlimited":
        doc = "default: unlimited"
    elif fallback:
        doc = f"default: {fallback}"
    else:
        doc = f"default: {default}"
    return _setting(
        variable, default=default, parse=_number(int, 0, 1_000_000), accepts="an integer, 0 to 1000000", doc=doc
    )


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Build it with :func:`load_settings`."""

    # --- identity ---
    service_name: str = _setting(
        "OTEL_SERVICE_NAME",
        default="unknown_service",
        parse=_text,
        accepts="a non-empty name",
        doc="service.name of every signal",
    )
    service_version: str = _setting(
        "SERVICE_VERSION",
        default="0.1.0",
        parse=_text,
        accepts="a non-empty version string",
        doc="service.version",
    )
    environment: str | None = _setting(
        "ENVIRONMENT",
        default=None,
        parse=_text,
        accepts="a non-empty name, e.g. development, production",
        doc="deployment.environment.name; every name outside NON_PRODUCTION_ENVIRONMENTS (and unset) gets the "
        "production rules",
    )
    non_production_environments: tuple[str, ...] = _setting(
        "NON_PRODUCTION_ENVIRONMENTS",
        default=("development", "dev", "local", "test", "demo"),
        parse=_lower_list,
        accepts="a comma list of environment names",
        doc="the only ENVIRONMENT values (case-insensitive) that relax the production rules; fail closed",
    )
    deployment_mode: str = _setting(
        "DEPLOYMENT_MODE",
        default="microservices",
        parse=_choice("microservices", "monolith"),
        accepts="microservices, monolith",
        doc="the seed's switch: `monolith` = no service-to-service calls, so no service-token check (any environment)",
    )
    resource_attributes: tuple[tuple[str, str], ...] = _setting(
        "OTEL_RESOURCE_ATTRIBUTES",
        default=(),
        parse=_key_values,
        accepts="key=value pairs separated by commas",
        doc="extra resource attributes",
    )
    # --- logs ---
    log_level: str = _setting(
        "LOG_LEVEL",
        default="INFO",
        parse=_choice(*_LEVELS, lower=False),
        accepts=", ".join(_LEVELS),
        doc="level of the application's logs",
    )
    otel_log_level: str = _setting(
        "OTEL_LOG_LEVEL",
        default="warning",
        parse=_choice("debug", "info", "warning", "error"),
        accepts="debug, info, warning, error",
        doc="level of the OpenTelemetry SDK's own diagnostics",
    )
    json_logs: bool = _setting(
        "OTEL_DIST_JSON_LOGS",
        default=True,
        parse=_bool,
        accepts="true or false",
        doc="one JSON object per line on stdout",
    )
    access_log: bool = _setting(
        "OTEL_DIST_ACCESS_LOG",
        default=True,
        parse=_bool,
        accepts="true or false",
        doc="one log line per HTTP request",
    )
    access_log_export: str = _setting(
        "OTEL_DIST_ACCESS_LOG_EXPORT",
        default="unsampled",
        parse=_choice("unsampled", "always", "never"),
        accepts="unsampled, always, never",
        doc="send the access line as an OTel log record too: only when its span is not exported (default), "
        "always, or never",
    )
    gc_freeze: bool = _setting(
        "OTEL_DIST_GC_FREEZE",
        default=True,
        parse=_bool,
        accepts="true or false",
        doc="once the app has started, move what start-up allocated out of the cyclic garbage collector's "
        "reach (gc.freeze): telemetry waiting for export makes collections frequent, and each full one "
        "would walk every module, route and model again",
    )
    # --- export ---
    otlp_endpoint: str | None = _setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        default=None,
        parse=_url,
        accepts="an http:// or https:// URL",
        doc="collector base URL; unset = embedded default (stdout logs, /metrics, no trace export)",
    )
    otlp_protocol: str = _setting(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        default="http/protobuf",
        parse=_choice(*_PROTOCOLS),
        accepts=", ".join(_PROTOCOLS),
        doc="OTLP transport; grpc needs the extra otel-dist[grpc]",
    )
    otlp_headers: tuple[tuple[str, str], ...] = _setting(
        "OTEL_EXPORTER_OTLP_HEADERS",
        default=(),
        parse=_key_values,
        accepts="key=value pairs separated by commas",
        secret=True,
        doc="headers sent with every export (API keys)",
    )
    otlp_timeout_ms: int = _setting(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        default=2000,
        parse=_number(int, 1, 60000),
        accepts="milliseconds, 1 to 60000",
        doc="per-export timeout (spec default 10000: otel-dist keeps exports short)",
    )
    otlp_compression: str = _setting(
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        default="none",
        parse=_choice(*_COMPRESSIONS),
        accepts=", ".join(_COMPRESSIONS),
        doc="OTLP payload compression",
    )
    otlp_certificate: str | None = _setting(
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        default=None,
        parse=_file,
        accepts=_FILE,
        doc="CA bundle (PEM) that verifies the collector's TLS certificate",
    )
    otlp_client_key: str | None = _setting(
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        default=None,
        parse=_file,
        accepts=_FILE,
        doc="client private key (PEM) for mutual TLS",
    )
    otlp_client_certificate: str | None = _setting(
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        default=None,
        parse=_file,
        accepts=_FILE,
        doc="client certificate (PEM) for mutual TLS",
    )
    otlp_traces_endpoint: str | None = _per_signal("TRACES", "ENDPOINT")
    otlp_traces_headers: tuple[tuple[str, str], ...] = _per_signal("TRACES", "HEADERS")
    otlp_traces_timeout_ms: int | None = _per_signal("TRACES", "TIMEOUT")
    otlp_traces_protocol: str | None = _per_signal("TRACES", "PROTOCOL")
    otlp_traces_compression: str | None = _per_signal("TRACES", "COMPRESSION")
    otlp_traces_certificate: str | None = _per_signal("TRACES", "CERTIFICATE")
    otlp_traces_client_key: str | None = _per_signal("TRACES", "CLIENT_KEY")
    otlp_traces_client_certificate: str | None = _per_signal("TRACES", "CLIENT_CERTIFICATE")
    otlp_metrics_endpoint: str | None = _per_signal("METRICS", "ENDPOINT")
    otlp_metrics_headers: tuple[tuple[str, str], ...] = _per_signal("METRICS", "HEADERS")
    otlp_metrics_timeout_ms: int | None = _per_signal("METRICS", "TIMEOUT")
    otlp_metrics_protocol: str | None = _per_signal("METRICS", "PROTOCOL")
    otlp_metrics_compression: str | None = _per_signal("METRICS", "COMPRESSION")
    otlp_metrics_certificate: str | None = _per_signal("METRICS", "CERTIFICATE")
    otlp_metrics_client_key: str | None = _per_signal("METRICS", "CLIENT_KEY")
    otlp_metrics_client_certificate: str | None = _per_signal("METRICS", "CLIENT_CERTIFICATE")
    otlp_logs_endpoint: str | None = _per_signal("LOGS", "ENDPOINT")
    otlp_logs_headers: tuple[tuple[str, str], ...] = _per_signal("LOGS", "HEADERS")
    otlp_logs_timeout_ms: int | None = _per_signal("LOGS", "TIMEOUT")
    otlp_logs_protocol: str | None = _per_signal("LOGS", "PROTOCOL")
    otlp_logs_compression: str | None = _per_signal("LOGS", "COMPRESSION")
    otlp_logs_certificate: str | None = _per_signal("LOGS", "CERTIFICATE")
    otlp_logs_client_key: str | None = _per_signal("LOGS", "CLIENT_KEY")
    otlp_logs_client_certificate: str | None = _per_signal("LOGS", "CLIENT_CERTIFICATE")
    metrics_temporality: str = _setting(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        default="cumulative",
        parse=_choice("cumulative", "delta", "lowmemory"),
        accepts="cumulative, delta, lowmemory",
        doc="temporality of OTLP-pushed metrics (Prometheus is always cumulative)",
    )
    metrics_histogram_aggregation: str = _setting(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        default="explicit_bucket_histogram",
        parse=_choice("explicit_bucket_histogram"),
        accepts="explicit_bucket_histogram (exponential histograms are refused: the duration "
        "buckets are a view, and the Prometheus reader cannot render them)",
        doc="histogram aggregation of OTLP-pushed metrics",
    )
    traces_exporter: tuple[str, ...] | None = _setting(
        "OTEL_TRACES_EXPORTER",
        default=None,
        parse=_choices_list("otlp", "console", "none"),
        accepts="otlp, console or none",
        doc="default: otlp when an endpoint is set, else none",
    )
    metrics_exporter: tuple[str, ...] | None = _setting(
        "OTEL_METRICS_EXPORTER",
        default=None,
        parse=_choices_list("prometheus", "otlp", "console", "none"),
        accepts="a comma list of prometheus, otlp, console, or none",
        doc="default: prometheus, plus otlp when an endpoint is set",
    )
    logs_exporter: tuple[str, ...] | None = _setting(
        "OTEL_LOGS_EXPORTER",
        default=None,
        parse=_choices_list("otlp", "console", "none"),
        accepts="otlp, console or none",
        doc="default: otlp when an endpoint is set, else none (JSON stdout stays)",
    )
    traces_sampler: str = _setting(
        "OTEL_TRACES_SAMPLER",
        default="parentbased_always_on",
        parse=_choice(*_SAMPLERS),
        accepts=", ".join(_SAMPLERS),
        doc="head sampler",
    )
    traces_sampler_arg: float = _setting(
        "OTEL_TRACES_SAMPLER_ARG",
        default=1.0,
        parse=_number(float, 0.0, 1.0),
        accepts="a ratio from 0 to 1",
        doc="ratio for the traceidratio samplers",
    )
    metric_export_interval_ms: int = _setting(
        "OTEL_METRIC_EXPORT_INTERVAL",
        default=60000,
        parse=_number(int, 100, 3600000),
        accepts="milliseconds, 100 to 3600000",
        doc="OTLP metric push interval",
    )
    metric_export_timeout_ms: int = _setting(
        "OTEL_METRIC_EXPORT_TIMEOUT",
        default=30000,
        parse=_number(int, 1, 600000),
        accepts="milliseconds, 1 to 600000",
        doc="bound on one metric collection and export",
    )
    metrics_exemplar_filter: str = _setting(
        "OTEL_METRICS_EXEMPLAR_FILTER",
        default="trace_based",
        parse=_choice("trace_based", "always_on", "always_off"),
        accepts="trace_based, always_on, always_off",
        doc="which measurements may become exemplars",
    )
    bsp_max_queue_size: int = _setting(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        default=2048,
        parse=_number(int, 1, 1_000_000),
        accepts="an integer, 1 to 1000000",
        doc="spans buffered before new ones are dropped",
    )
    bsp_schedule_delay_ms: int = _setting(
        "OTEL_BSP_SCHEDULE_DELAY",
        default=1000,
        parse=_number(int, 1, 60000),
        accepts="milliseconds, 1 to 60000",
        doc="span batch export delay (spec default 5000)",
    )
    bsp_max_export_batch_size: int = _setting(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        default=512,
        parse=_number(int, 1, 1_000_000),
        accepts="an integer, 1 to 1000000, at most OTEL_BSP_MAX_QUEUE_SIZE",
        doc="spans per export request (default capped at the queue size)",
    )
    bsp_export_timeout_ms: int = _setting(
        "OTEL_BSP_EXPORT_TIMEOUT",
        default=30000,
        parse=_number(int, 1, 600000),
        accepts="milliseconds, 1 to 600000",
        doc="bound on one span export (the OTLP timeout applies if shorter)",
    )
    blrp_max_queue_size: int = _setting(
        "OTEL_BLRP_MAX_QUEUE_SIZE",
        default=2048,
        parse=_number(int, 1, 1_000_000),
        accepts="an integer, 1 to 1000000",
        doc="log records buffered before new ones are dropped",
    )
    blrp_schedule_delay_ms: int = _setting(
        "OTEL_BLRP_SCHEDULE_DELAY",
        default=1000,
        parse=_number(int, 1, 60000),
        accepts="milliseconds, 1 to 60000",
        doc="log record batch export delay",
    )
    blrp_max_export_batch_size: int = _setting(
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        default=512,
        parse=_number(int, 1, 1_000_000),
        accepts="an integer, 1 to 1000000, at most OTEL_BLRP_MAX_QUEUE_SIZE",
        doc="log records per export request (default capped at the queue size)",
    )
    blrp_export_timeout_ms: int = _setting(
        "OTEL_BLRP_EXPORT_TIMEOUT",
        default=30000,
        parse=_number(int, 1, 600000),
        accepts="milliseconds, 1 to 600000",
        doc="bound on one log record export (the OTLP timeout applies if shorter)",
    )
    attribute_value_length_limit: int | None = _limit("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, "unlimited")
    attribute_count_limit: int | None = _limit("OTEL_ATTRIBUTE_COUNT_LIMIT", 128, "")
    span_attribute_value_length_limit: int | None = _limit(
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
    )
    span_attribute_count_limit: int | None = _limit(
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", None, "OTEL_ATTRIBUTE_COUNT_LIMIT"
    )
    span_event_count_limit: int | None = _limit("OTEL_SPAN_EVENT_COUNT_LIMIT", 128, "")
    span_link_count_limit: int | None = _limit("OTEL_SPAN_LINK_COUNT_LIMIT", 128, "")
    event_attribute_count_limit: int | None = _limit(
        "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", None, "OTEL_ATTRIBUTE_COUNT_LIMIT"
    )
    link_attribute_count_limit: int | None = _limit(
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", None, "OTEL_ATTRIBUTE_COUNT_LIMIT"
    )
    logrecord_attribute_value_length_limit: int | None = _limit(
        "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
    )
    logrecord_attribute_count_limit: int | None = _limit(
        "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", None, "OTEL_ATTRIBUTE_COUNT_LIMIT"
    )
    propagators: tuple[str, ...] = _setting(
        "OTEL_PROPAGATORS",
        default=("tracecontext", "baggage"),
        parse=_propagator_names,
        accepts="a comma list of tracecontext, baggage, or installed propagators (b3, b3multi, jaeger, xray, "
        "ottrace), or none",
        doc="inbound/outbound context formats; others come from `opentelemetry_propagator` entry points",
    )
    sdk_disabled: bool = _setting(
        "OTEL_SDK_DISABLED",
        default=False,
        parse=_bool,
        accepts="true or false",
        doc="no traces, metrics or OTel logs (no-op providers, nothing exported, /metrics empty); the JSON "
        "stdout logs, the access line, auth and the app itself still run",
    )
    resource_detectors: tuple[str, ...] = _setting(
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
        default=(),
        parse=_text_list,
        accepts="a comma list of installed `opentelemetry_resource_detector` entry points (e.g. process, os, "
        "host, container)",
        doc="extra resource detectors; below OTEL_RESOURCE_ATTRIBUTES in precedence",
    )
    semconv_opt_in: tuple[str, ...] = _setting(
        "OTEL_SEMCONV_STABILITY_OPT_IN",
        default=("http", "database"),
        parse=_semconv,
        accepts=", ".join(_SEMCONV),
        doc="stable HTTP and database names are always on (otel-dist's own layers emit only those); "
        "`/dup` also keeps the old names in the contrib instrumentations",
    )
    shutdown_timeout: float = _setting(
        "OTEL_DIST_SHUTDOWN_TIMEOUT",
        default=4.0,
        parse=_number(float, 0.1, 30.0),
        accepts="seconds, 0.1 to 30",
        doc="bound on flushing all signals at exit",
    )
    # --- HTTP server ---
    correlation_header: str = _setting(
        "OTEL_DIST_CORRELATION_HEADER",
        default="x-correlation-id",
        parse=lambda v: _text(v).lower(),
        accepts="a header name",
        doc="legacy correlation header bridged to the trace",
    )
    untraced_paths: tuple[str, ...] = _setting(
        "OTEL_DIST_UNTRACED_PATHS",
        default=("/health", "/ready", "/metrics"),
        parse=_text_list,
        accepts="a comma list of exact paths",
        doc="paths with no span, no access log and no HTTP metrics",
    )
    server_instrumentation: str = _setting(
        "OTEL_DIST_SERVER_INSTRUMENTATION",
        default="otel-dist",
        parse=_choice("otel-dist", "contrib", "native"),
        accepts="otel-dist, contrib, native",
        doc="who owns the server span: otel-dist's lean layer, the contrib FastAPI instrumentor, or FastAPI itself",
    )
    public_inbound_context: str = _setting(
        "OTEL_DIST_PUBLIC_INBOUND_CONTEXT",
        default="link",
        parse=_choice("link", "drop", "trust"),
        accepts="link, drop, trust",
        doc="apps created with public=True: `link` starts a new trace (sampled by our sampler) with the caller's "
        "context as a span link and drops inbound baggage; `drop` ignores both; `trust` continues the caller's "
        "trace and baggage like an internal service",
    )
    client_instrumentation: str = _setting(
        "OTEL_DIST_CLIENT_INSTRUMENTATION",
        default="otel-dist",
        parse=_choice("otel-dist", "contrib"),
        accepts="otel-dist, contrib",
        doc="who makes httpx CLIENT spans: otel-dist's lean layer (trace context only to this system's "
        "services and the collector), or the contrib HTTPXClientInstrumentor (trace context to every host)",
    )
    metrics_path: str = _setting(
        "OTEL_DIST_METRICS_PATH",
        default="/metrics",
        parse=_text,
        accepts="a path",
        doc="Prometheus scrape route",
    )
    excluded_urls: tuple[str, ...] = _setting(
        "OTEL_PYTHON_EXCLUDED_URLS",
        default=(),
        parse=_regex_list,
        accepts="a comma list of regular expressions",
        doc="requests whose URL matches (re.search, as upstream) get no span, metrics or access line; "
        "server and httpx client",
    )
    fastapi_excluded_urls: tuple[str, ...] | None = _setting(
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS",
        default=None,
        parse=_regex_list,
        accepts="a comma list of regular expressions",
        doc="as OTEL_PYTHON_EXCLUDED_URLS for the server only; replaces it when set",
    )
    httpx_excluded_urls: tuple[str, ...] | None = _setting(
        "OTEL_PYTHON_HTTPX_EXCLUDED_URLS",
        default=None,
        parse=_regex_list,
        accepts="a comma list of regular expressions",
        doc="as OTEL_PYTHON_EXCLUDED_URLS for the httpx client only; replaces it when set",
    )
    capture_server_request_headers: tuple[str, ...] = _setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        default=(),
        parse=_regex_list,
        accepts="a comma list of header names or regular expressions (full match, case-insensitive)",
        doc="request headers recorded on the server span as http.request.header.<name>",
    )
    capture_server_response_headers: tuple[str, ...] = _setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
        default=(),
        parse=_regex_list,
        accepts="a comma list of header names or regular expressions (full match, case-insensitive)",
        doc="response headers recorded on the server span as http.response.header.<name>",
    )
    capture_client_request_headers: tuple[str, ...] = _setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
        default=(),
        parse=_regex_list,
        accepts="a comma list of header names or regular expressions (full match, case-insensitive)",
        doc="request headers recorded on httpx client spans",
    )
    capture_client_response_headers: tuple[str, ...] = _setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE",
        default=(),
        parse=_regex_list,
        accepts="a comma list of header names or regular expressions (full match, case-insensitive)",
        doc="response headers recorded on httpx client spans",
    )
    capture_sanitize_fields: tuple[str, ...] = _setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
        default=(),
        parse=_regex_list,
        accepts="a comma list of header names or regular expressions (search, case-insensitive)",
        doc="captured headers whose value is replaced by [REDACTED]; authorization, cookie, set-cookie "
        "and proxy-authorization are always redacted",
    )
    logging_auto_instrumentation: bool = _setting(
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED",
        default=True,
        parse=_bool,
        accepts="true or false",
        doc="stdlib logging records also become OTel log records when a logs exporter is set "
        "(upstream default false); false: JSON stdout only",
    )
    disabled_instrumentations: tuple[str, ...] = _setting(
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        default=(),
        parse=_instrumentation_names,
        accepts="a comma list of " + ", ".join(_INSTRUMENTATIONS) + " or other installed instrumentors",
        doc="fastapi: no server span/metrics/access line (auth stays); httpx: no client spans; "
        "sqlalchemy: no database spans/metrics; logging: no OTel log records (JSON stdout stays)",
    )
    # --- service client (seed names) ---
    client_max_retries: int = _setting(
        "SERVICE_CLIENT_MAX_RETRIES",
        default=3,
        parse=_number(int, 0, 20),
        accepts="an integer, 0 to 20",
        doc="retries after the first attempt",
    )
    client_retry_backoff: float = _setting(
        "SERVICE_CLIENT_RETRY_BACKOFF",
        default=2.0,
        parse=_number(float, 1.0, 10.0),
        accepts="a number, 1 to 10",
        doc="exponential base of the retry delay (full jitter)",
    )
    client_max_backoff: float = _setting(
        "SERVICE_CLIENT_MAX_BACKOFF",
        default=10.0,
        parse=_number(float, 0.0, 300.0),
        accepts="seconds, 0 to 300",
        doc="cap of one retry delay",
    )
    client_timeout: float = _setting(
        "SERVICE_CLIENT_TIMEOUT",
        default=30.0,
        parse=_number(float, 0.001, 3600.0),
        accepts="seconds, > 0",
        doc="total deadline of one logical call, retries included",
    )
    client_attempt_timeout: float = _setting(
        "SERVICE_CLIENT_ATTEMPT_TIMEOUT",
        default=10.0,
        parse=_number(float, 0.001, 3600.0),
        accepts="seconds, > 0",
        doc="timeout of one attempt",
    )
    breaker_failure_threshold: int = _setting(
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
        default=5,
        parse=_number(int, 1, 1000),
        accepts="an integer, 1 to 1000",
        doc="consecutive failures that open a breaker",
    )
    breaker_success_threshold: int = _setting(
        "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
        default=2,
        parse=_number(int, 1, 1000),
        accepts="an integer, 1 to 1000",
        doc="successful half-open probes that close it",
    )
    breaker_timeout: float = _setting(
        "CIRCUIT_BREAKER_TIMEOUT",
        default=60.0,
        parse=_number(float, 0.01, 3600.0),
        accepts="seconds, > 0",
        doc="how long a breaker stays open before a probe",
    )
    client_retry_budget: float = _setting(
        "SERVICE_CLIENT_RETRY_BUDGET",
        default=0.2,
        parse=_number(float, 0.0, 10.0),
        accepts="a ratio from 0 to 10",
        doc="retries allowed per target, as a fraction of its calls over the budget window (0.2 = +20% load)",
    )
    client_retry_budget_min: float = _setting(
        "SERVICE_CLIENT_RETRY_BUDGET_MIN_PER_SECOND",
        default=3.0,
        parse=_number(float, 0.0, 1000.0),
        accepts="retries per second, 0 to 1000",
        doc="retries per second per target always allowed on top of the ratio (a quiet service still retries)",
    )
    client_retry_budget_window: float = _setting(
        "SERVICE_CLIENT_RETRY_BUDGET_WINDOW",
        default=10.0,
        parse=_number(float, 1.0, 600.0),
        accepts="seconds, 1 to 600",
        doc="sliding window over which calls and retries are counted",
    )
    request_timeout: float = _setting(
        "SERVICE_REQUEST_TIMEOUT",
        default=30.0,
        parse=_number(float, 0.001, 3600.0),
        accepts="seconds, 0.001 to 3600",
        doc="deadline of each request this service handles: public apps start it here, others take the "
        "caller's x-otel-dist-deadline-ms when shorter; handler and downstream calls are cancelled at it",
    )
    # --- service auth (seed names) ---
    jwt_secret: str | None = _setting(
        "SERVICE_JWT_SECRET",
        "JWT_SECRET_KEY",
        default=None,
        parse=_optional_text,
        accepts="a secret of >= 32 bytes",
        secret=True,
        doc="HMAC secret for service tokens",
    )
    jwt_algorithm: str = _setting(
        "SERVICE_JWT_ALGORITHM",
        default="HS256",
        parse=_choice("HS256", "HS384", "HS512", "ES256", "EdDSA", lower=False),
        accepts="HS256, HS384, HS512, ES256, EdDSA",
        doc="algorithm of minted tokens",
    )
    jwt_lifetime: int = _setting(
        "SERVICE_JWT_LIFETIME",
        default=3600,
        parse=_number(int, 30, 86400),
        accepts="seconds, 30 to 86400",
        doc="lifetime of minted tokens",
    )
    jwt_leeway: int = _setting(
        "SERVICE_JWT_LEEWAY",
        default=30,
        parse=_number(int, 0, 120),
        accepts="seconds, 0 to 120",
        doc="clock skew tolerated when verifying",
    )
    jwt_allowed_callers: tuple[str, ...] = _setting(
        "SERVICE_JWT_ALLOWED_CALLERS",
        default=(),
        parse=_text_list,
        accepts="a comma list of service names",
        doc="callers accepted; empty = any service with a valid token",
    )
    auth_enabled: bool = _setting(
        "SERVICE_AUTH_ENABLED",
        default=True,
        parse=_bool,
        accepts="true or false",
        doc="verify service tokens on protected routes; `false` is refused in production",
    )
    api_docs_public: bool | None = _setting(
        "API_DOCS_PUBLIC",
        default=None,
        parse=_bool,
        accepts="true or false",
        doc="/docs, /redoc, /openapi.json without a token; unset = yes outside production, off in production",
    )
    auth_exempt_paths: tuple[str, ...] = _setting(
        "SERVICE_AUTH_EXEMPT_PATHS",
        default=("/health", "/ready", "/metrics", "/docs", "/openapi.json", "/redoc"),
        parse=_text_list,
        accepts="a comma list of exact paths",
        doc="paths that need no service token",
    )
    jwt_allowed_algorithms: tuple[str, ...] = _setting(
        "SERVICE_JWT_ALLOWED_ALGORITHMS",
        default=(),
        parse=lambda v: tuple(
            _choice("HS256", "HS384", "HS512", "ES256", "EdDSA", lower=False)(a) for a in _text_list(v)
        ),
        accepts="a comma list of HS256, HS384, HS512, ES256, EdDSA",
        doc="algorithms accepted when verifying; empty = SERVICE_JWT_ALGORITHM only",
    )
    jwt_previous_secret: str | None = _setting(
        "SERVICE_JWT_PREVIOUS_SECRET",
        default=None,
        parse=_optional_text,
        accepts="a secret of >= 32 bytes",
        secret=True,
        doc="previous HMAC secret, still accepted when verifying (rotation overlap)",
    )
    jwt_private_key: str | None = _setting(
        "SERVICE_JWT_PRIVATE_KEY",
        default=None,
        parse=lambda v: v.replace("\\n", "\n").strip() or None,
        accepts="a PEM private key: Ed25519 for EdDSA, P-256 for ES256",
        secret=True,
        doc="signing key for ES256/EdDSA; its public key is served at /.well-known/jwks.json",
    )
    jwt_published_keys: str | None = _setting(
        "SERVICE_JWT_PUBLISHED_KEYS",
        default=None,
        parse=lambda v: v.replace("\\n", "\n").strip() or None,
        accepts="PEM public keys, concatenated",
        doc="extra public keys in this service's JWKS: the next key before a rotation, the old one after",
    )
    jwt_jwks_urls: tuple[tuple[str, str], ...] = _setting(
        "SERVICE_JWT_JWKS_URLS",
        default=(),
        parse=_key_values,
        accepts="issuer=URL-or-path pairs separated by commas",
        doc="trusted issuers for ES256/EdDSA and where their JWKS is; keys verify only their issuer's tokens",
    )
    jwt_jwks_refresh: float = _setting(
        "SERVICE_JWT_JWKS_REFRESH",
        default=300.0,
        parse=_number(float, 0.1, 86400.0),
        accepts="seconds, 0.1 to 86400",
        doc="age after which a JWKS is refreshed in the background",
    )
    jwt_jwks_min_refresh: float = _setting(
        "SERVICE_JWT_JWKS_MIN_REFRESH",
        default=30.0,
        parse=_number(float, 0.0, 3600.0),
        accepts="seconds, 0 to 3600",
        doc="minimum time between JWKS fetches of one issuer (an unknown kid triggers at most one)",
    )
    jwt_cache_size: int = _setting(
        "SERVICE_JWT_CACHE_SIZE",
        default=10000,
        parse=_number(int, 0, 1_000_000),
        accepts="an integer, 0 to 1000000",
        doc="verified tokens kept until their expiry (LRU); 0 = verify every request",
    )
    auth_rejection_log_rate: str = _setting(
        "SERVICE_AUTH_REJECTION_LOG_RATE",
        default="300/60",
        parse=_rate,
        accepts="lines/seconds, e.g. 300/60, or 0 for no limit",
        doc="log lines for rejected service tokens: at most this many at once and this rate on average; the next "
        "line counts the suppressed ones (otel_dist.log.suppressed)",
    )
    jwt_replay_cache_size: int = _setting(
        "SERVICE_JWT_REPLAY_CACHE_SIZE",
        default=0,
        parse=_number(int, 0, 1_000_000),
        accepts="an integer, 0 to 1000000",
        doc="jti of accepted tokens remembered until their exp, refusing a second use (401 replayed); 0 = off. "
        "Callers must then send SERVICE_JWT_TOKEN_PER_REQUEST=true",
    )
    jwt_token_per_request: bool = _setting(
        "SERVICE_JWT_TOKEN_PER_REQUEST",
        default=False,
        parse=_bool,
        accepts="true or false",
        doc="mint a new service token for every request (for callees with a replay cache) instead of reusing one",
    )
    # --- services, health, faults ---
    database_url: str | None = _setting(
        "DATABASE_URL",
        default=None,
        parse=_optional_text,
        accepts="a SQLAlchemy async URL",
        secret=True,
        doc="default: SQLite file in the working directory",
    )
    db_instrumentation: str = _setting(
        "OTEL_DIST_DB_INSTRUMENTATION",
        default="otel-dist",
        parse=_choice("otel-dist", "contrib"),
        accepts="otel-dist, contrib",
        doc="who makes the database CLIENT spans: otel-dist's lean layer (the same spans; db.operation.name is the "
        "operation alone, as the conventions say), or opentelemetry-instrumentation-sqlalchemy",
    )
    sqlite_inline: bool = _setting(
        "DATABASE_SQLITE_INLINE",
        default=True,
        parse=_bool,
        accepts="true or false",
        doc="SQLite statements run on the event loop (a local statement takes microseconds, a hop to aiosqlite's "
        "thread far more), COMMIT and a locked file's wait on that thread; the trade: a slow statement (long scan, "
        "huge result) holds the loop; false: every call on the thread",
    )
    readiness_timeout: float = _setting(
        "READINESS_CHECK_TIMEOUT",
        default=2.0,
        parse=_number(float, 0.01, 60.0),
        accepts="seconds, 0.01 to 60",
        doc="timeout of each readiness check",
    )
    readiness_cache_ttl: float = _setting(
        "READINESS_CACHE_TTL",
        default=1.0,
        parse=_number(float, 0.0, 60.0),
        accepts="seconds, 0 to 60",
        doc="a /ready result is reused this long (concurrent probes always share one run of the checks)",
    )
    fault_error_rate: float = _setting(
        "FAULT_INJECTION_ERROR_RATE",
        default=0.0,
        parse=_number(float, 0.0, 1.0),
        accepts="a ratio from 0 to 1",
        doc="share of requests answered 503 (demo and tests; refused in production)",
    )
    fault_latency_ms: int = _setting(
        "FAULT_INJECTION_LATENCY_MS",
        default=0,
        parse=_number(int, 0, 60000),
        accepts="milliseconds, 0 to 60000",
        doc="latency added to each request (demo and tests; refused in production)",
    )
    # --- example services (services/) ---
    auth_service_url: str | None = _setting(
        "AUTH_SERVICE_URL",
        default=None,
        parse=_url,
        accepts="an http:// or https:// URL",
        doc="base URL of the auth service (create_app(downstreams=['auth']))",
    )
    orders_service_url: str | None = _setting(
        "ORDERS_SERVICE_URL",
        default=None,
        parse=_url,
        accepts="an http:// or https:// URL",
        doc="base URL of the orders service (create_app(downstreams=['orders']))",
    )
    introspection_cache_ttl: float = _setting(
        "GATEWAY_INTROSPECTION_CACHE_TTL",
        default=0.0,
        parse=_number(float, 0.0, 300.0),
        accepts="seconds, 0 to 300",
        doc="gateway: reuse an active token introspection this long (never past the token's exp); 0 = ask auth "
        "every time",
    )
    user_cache_ttl: float = _setting(
        "ORDERS_USER_CACHE_TTL",
        default=0.0,
        parse=_number(float, 0.0, 3600.0),
        accepts="seconds, 0 to 3600",
        doc="orders: reuse a user looked up at auth this long; 0 = ask auth on every read",
    )
    user_jwt_secret: str | None = _setting(
        "USER_JWT_SECRET",
        default=None,
        parse=_optional_text,
        accepts="a secret of >= 32 bytes, different from SERVICE_JWT_SECRET",
        secret=True,
        doc="HMAC key of user access tokens (auth service); unset outside production = random per process",
    )
    login_rate_per_username: str = _setting(
        "LOGIN_RATE_LIMIT_PER_USERNAME",
        default="10/60",
        parse=_rate,
        accepts="attempts/seconds, e.g. 10/60, or 0 for no limit",
        doc="throttle of login and register per submitted username (Throttle; 429 + Retry-After)",
    )
    login_rate_per_client: str = _setting(
        "LOGIN_RATE_LIMIT_PER_CLIENT",
        default="100/60",
        parse=_rate,
        accepts="attempts/seconds, e.g. 100/60, or 0 for no limit",
        doc="throttle of login and register per client address",
    )
    user_jwt_lifetime: int = _setting(
        "USER_JWT_LIFETIME",
        default=900,
        parse=_number(int, 30, 86400),
        accepts="seconds, 30 to 86400",
        doc="lifetime of user access tokens",
    )

    # Exporters. otel-dist's embedded default (no endpoint set: nothing pushed) differs from the
    # spec's (otlp to localhost); an explicit OTEL_*_EXPORTER=otlp gets the spec's localhost default.
    @property
    def trace_exporters(self) -> tuple[str, ...]:
        if self.sdk_disabled:
            return ()
        if self.traces_exporter is not None:
            return self.traces_exporter
        return ("otlp",) if self.otlp_endpoint or self.otlp_traces_endpoint else ()

    @property
    def metric_exporters(self) -> tuple[str, ...]:
        if self.sdk_disabled:
            return ()
        if self.metrics_exporter is not None:
            return self.metrics_exporter
        return ("prometheus", "otlp") if self.otlp_endpoint or self.otlp_metrics_endpoint else ("prometheus",)

    @property
    def log_exporters(self) -> tuple[str, ...]:
        if not self.log_records_bridged:
            return ()
        if self.logs_exporter is not None:
            return self.logs_exporter
        return ("otlp",) if self.otlp_endpoint or self.otlp_logs_endpoint else ()

    @property
    def server_excluded_urls(self) -> tuple[str, ...]:
        return self.excluded_urls if self.fastapi_excluded_urls is None else self.fastapi_excluded_urls

    @property
    def client_excluded_urls(self) -> tuple[str, ...]:
        return self.excluded_urls if self.httpx_excluded_urls is None else self.httpx_excluded_urls

    @property
    def log_records_bridged(self) -> bool:
        """Whether stdlib logging records also become OTel log records."""
        return not (
            self.sdk_disabled or "logging" in self.disabled_instrumentations or not self.logging_auto_instrumentation
        )

    def otlp(self, signal: str) -> OtlpTarget:
        """Where and how one signal ("traces", "metrics", "logs") is exported, per the OTLP exporter spec."""

        def pick(key: str) -> Any:
            value = getattr(self, f"otlp_{signal}_{key}")
            return getattr(self, f"otlp_{key}") if value is None else value

        protocol = pick("protocol")
        endpoint = getattr(self, f"otlp_{signal}_endpoint")
        if endpoint is None:
            base = self.otlp_endpoint or ("http://localhost:4317" if protocol == "grpc" else "http://localhost:4318")
            endpoint = base if protocol == "grpc" else f"{base.rstrip('/')}/v1/{signal}"
        elif protocol != "grpc" and urlsplit(endpoint).path == "":
            endpoint += "/"  # spec: a signal endpoint without a path uses the root path
        headers = {k.lower(): (k, v) for k, v in self.otlp_headers}
        headers.update({k.lower(): (k, v) for k, v in getattr(self, f"otlp_{signal}_headers")})
        return OtlpTarget(
            signal=signal,
            endpoint=endpoint,
            protocol=protocol,
            headers=dict(headers.values()),
            timeout_s=pick("timeout_ms") / 1000,
            compression=pick("compression"),
            certificate=pick("certificate"),
            client_key=pick("client_key"),
            client_certificate=pick("client_certificate"),
        )

    @property
    def production(self) -> bool:
        """Fail closed: only an explicitly listed non-production name relaxes the rules (unset is production)."""
        return self.environment is None or self.environment.lower() not in self.non_production_environments

    @property
    def environment_clause(self) -> str:
        """How error messages name the environment: ``when ENVIRONMENT=prod-eu`` (or ``... is unset``)."""
        return f"when ENVIRONMENT={self.environment}" if self.environment else "when ENVIRONMENT is unset"

    @property
    def docs_public(self) -> bool:
        return self.api_docs_public if self.api_docs_public is not None else not self.production

    @property
    def service_auth_off(self) -> str | None:
        """Why service auth is off (an explicit opt-out), or None: it is on."""
        if self.deployment_mode == "monolith":
            return "DEPLOYMENT_MODE=monolith"
        if not self.auth_enabled:
            return "SERVICE_AUTH_ENABLED=false"
        return None

    def redacted(self) -> dict[str, Any]:
        """The configuration as a dict, secrets and URL credentials replaced by a marker (for the startup dump)."""
        from ._redact import redact_text

        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                value = "<redacted>"
            elif isinstance(value, str) and "://" in value:
                value = redact_text(value)
            elif isinstance(value, tuple) and any(isinstance(v, tuple) for v in value):
                value = tuple((k, redact_text(v)) if isinstance(v, str) else (k, v) for k, v in value)
            out[f.name] = value
        out["auth_enabled"] = self.service_auth_off is None  # the effective state, not the raw switch
        out["production"] = self.production
        return out


@dataclass(frozen=True)
class OtlpTarget:
    """The effective OTLP exporter configuration of one signal."""

    signal: str
    endpoint: str
    protocol: str
    headers: dict[str, str]
    timeout_s: float
    compression: str
    certificate: str | None
    client_key: str | None
    client_certificate: str | None


# Standard variables otel-dist does not implement: refused by name when set, so nothing is
# ignored silently.  (Variable -> why.)
REFUSED: dict[str, str] = {
    **{
        f"OTEL_EXPORTER_OTLP{s}_INSECURE": "otel-dist needs an http:// or https:// endpoint and the scheme decides TLS"
        for s in ("", "_TRACES", "_METRICS", "_LOGS")
    },
    "OTEL_ENTITIES": "resource entities are not supported; use OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER_CONFIG": "file-based sampler configuration is not supported; use OTEL_TRACES_SAMPLER",
    "OTEL_EXPERIMENTAL_CONFIG_FILE": "declarative configuration files are not supported; use the variables",
    "OTEL_CONFIG_FILE": "declarative configuration files are not supported; use the variables",
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "no Zipkin exporter in the app; the collector exports to Zipkin",
    "OTEL_EXPORTER_ZIPKIN_TIMEOUT": "no Zipkin exporter in the app; the collector exports to Zipkin",
    "OTEL_EXPORTER_PROMETHEUS_HOST": "metrics are served on the app's own port at OTEL_DIST_METRICS_PATH",
    "OTEL_EXPORTER_PROMETHEUS_PORT": "metrics are served on the app's own port at OTEL_DIST_METRICS_PATH",
    "OTEL_EXPORTER_JAEGER_ENDPOINT": "the Jaeger exporter is deprecated upstream; use OTLP",
    "OTEL_PYTHON_ID_GENERATOR": "only the SDK's random id generator is used",
    "OTEL_PYTHON_TRACER_PROVIDER": "otel-dist builds the SDK providers itself",
    "OTEL_PYTHON_METER_PROVIDER": "otel-dist builds the SDK providers itself",
    "OTEL_PYTHON_LOGGER_PROVIDER": "otel-dist builds the SDK providers itself",
    "OTEL_PYTHON_FASTAPI_EXCLUDE_SPANS": "otel-dist's server layer makes no receive/send spans",
    **{
        f"OTEL_PYTHON_{kind}_CONFIGURATOR": "per-scope enable/disable of the SDK is not supported"
        for kind in ("TRACER", "METER", "LOGGER")
    },
}


def settings_table() -> list[dict[str, Any]]:
    """Rows for documentation: name, variables, default, accepted values, secret."""
    return [
        {
            "name": f.name,
            "env": f.metadata["env"],
            "default": f.default,
            "accepts": f.metadata["accepts"],
            "secret": f.metadata["secret"],
            "doc": f.metadata["doc"],
        }
        for f in dataclasses.fields(Settings)
    ]


# --- one family of settings, by a naming rule: the URL of any downstream service ---

SERVICE_URL_RULE = "<NAME>_SERVICE_URL"
SERVICE_URL_DOC = (
    "base URL of the service NAME called through create_app(downstreams=['NAME']): the name upper-cased, "
    "every character other than a letter or digit turned into '_' (inventory -> INVENTORY_SERVICE_URL, "
    "user-profile -> USER_PROFILE_SERVICE_URL)"
)
_SERVICE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")


def service_url_variable(service: str) -> str:
    """The variable holding `service`'s URL: ``inventory`` -> ``INVENTORY_SERVICE_URL``."""
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise ConfigError(
            f"create_app(downstreams=[{service!r}]): not a service name; "
            "accepted: a letter, then up to 62 letters, digits, '-', '_' or '.'"
        )
    return re.sub(r"[^A-Za-z0-9]", "_", service).upper() + "_SERVICE_URL"


def service_url(service: str, settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """`service`'s base URL: its row of the table when it has one (auth, orders), else the environment by the rule."""
    variable = service_url_variable(service)
    for f in dataclasses.fields(Settings):
        if variable in f.metadata["env"]:
            return getattr(settings, f.name)
    raw = (os.environ if env is None else env).get(variable, "")
    try:
        return _url(raw)
    except ValueError:
        raise ConfigError(f"{variable}: invalid value {raw!r}; accepted: an http:// or https:// URL") from None


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings: keyword override > first set environment variable > default.

    `env` defaults to ``os.environ``; tests pass a plain dict.  Overrides are
    given by field name and are already typed (strings are parsed like env).
    """
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(fields)}")
    for variable, why in REFUSED.items():
        if env.get(variable, "").strip():
            raise ConfigError(f"{variable}: not supported by otel-dist ({why}); accepted: unset")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        meta = f.metadata
        if name in overrides:
            raw, source = overrides[name], f"{name}= argument"
            if not isinstance(raw, str):
                try:
                    values[name] = _typed(f, raw)
                except (ValueError, TypeError):
                    shown = "<redacted>" if meta["secret"] else repr(raw)
                    raise ConfigError(f"{source}: invalid value {shown}; accepted: {meta['accepts']}") from None
                continue
        else:
            source_env = next((e for e in meta["env"] if env.get(e, "").strip()), None)
            if source_env is None:
                continue
            raw, source = env[source_env], source_env
        try:
            values[name] = meta["parse"](raw)
        except (ValueError, TypeError):
            from ._redact import redact_text

            shown = "<redacted>" if meta["secret"] else repr(redact_text(raw))  # URL credentials stay out
            raise ConfigError(f"{source}: invalid value {shown}; accepted: {meta['accepts']}") from None
    _resource_fallbacks(values)
    settings = Settings(**values)
    _check(settings)
    return settings


# Resource precedence: keyword argument > the specific variable > OTEL_RESOURCE_ATTRIBUTES > default.
_FROM_RESOURCE = {
    "service_name": ("service.name",),
    "service_version": ("service.version",),
    "environment": ("deployment.environment.name", "deployment.environment"),
}


def _resource_fallbacks(values: dict[str, Any]) -> None:
    attributes = dict(values.get("resource_attributes", ()))
    for name, keys in _FROM_RESOURCE.items():
        if name not in values:
            found = next((attributes[k] for k in keys if attributes.get(k, "").strip()), None)
            if found is not None:
                values[name] = found.strip()


def _typed(f: dataclasses.Field[Any], value: Any) -> Any:
    """A typed keyword override: the field's type, then the same parser as the environment (ranges, choices)."""
    kind = str(f.type)
    parse = f.metadata["parse"]
    if value is None:
        if kind.endswith("| None"):
            return None
        raise TypeError(value)
    if kind in ("bool", "bool | None"):
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind == "int | None":
        kind = "int"
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
            raise TypeError(value)
        return parse(repr(value))
    if kind.startswith("tuple["):
        if not isinstance(value, (tuple, list)):
            raise TypeError(value)
        items = tuple(tuple(v) if isinstance(v, (tuple, list)) else v for v in value)
        if kind.startswith("tuple[tuple[str, str]"):
            if not all(len(v) == 2 and all(isinstance(x, str) for x in v) for v in items):
                raise TypeError(value)
            return items
        if not all(isinstance(v, str) for v in items):
            raise TypeError(value)
        return parse(",".join(map(str, items))) if items else ()
    if kind.startswith("str"):
        raise TypeError(value)  # a string would have been parsed like the environment
    return value


def _check(s: Settings) -> None:
    """Rules across settings; production refuses what is only safe on a laptop."""
    if s.jwt_secret is not None and len(s.jwt_secret.encode()) < 32:
        raise ConfigError("SERVICE_JWT_SECRET: too short; accepted: a secret of at least 32 bytes (256 bits)")
    if s.jwt_previous_secret is not None and len(s.jwt_previous_secret.encode()) < 32:
        raise ConfigError("SERVICE_JWT_PREVIOUS_SECRET: too short; accepted: a secret of at least 32 bytes (256 bits)")
    if s.user_jwt_secret is not None:
        if len(s.user_jwt_secret.encode()) < 32:
            raise ConfigError("USER_JWT_SECRET: too short; accepted: a secret of at least 32 bytes (256 bits)")
        if s.user_jwt_secret == s.jwt_secret:
            raise ConfigError("USER_JWT_SECRET: must differ from SERVICE_JWT_SECRET; accepted: a separate secret")
    for prefix, batch, queue in (
        ("BSP", s.bsp_max_export_batch_size, s.bsp_max_queue_size),
        ("BLRP", s.blrp_max_export_batch_size, s.blrp_max_queue_size),
    ):
        if batch > queue and batch != 512:  # the default 512 is capped at a smaller queue instead
            raise ConfigError(
                f"OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE: {batch} is larger than OTEL_{prefix}_MAX_QUEUE_SIZE={queue}; "
                "accepted: at most the queue size"
            )
    exporting = {"traces": s.trace_exporters, "metrics": s.metric_exporters, "logs": s.log_exporters}
    for signal in ("traces", "metrics", "logs"):
        target = s.otlp(signal)
        if target.protocol == "grpc" and "otlp" in exporting[signal]:
            from ._grpc import require

            require(signal)
        if (target.client_key is None) != (target.client_certificate is None):
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_{signal.upper()}_CLIENT_KEY / _CLIENT_CERTIFICATE (or the generic ones)"
                ": mutual TLS needs both; accepted: both set or both unset"
            )
    if s.production:
        _check_production(s)


def _check_production(s: Settings) -> None:
    """Every environment not named in NON_PRODUCTION_ENVIRONMENTS, including an unset one."""
    when = f"{s.environment_clause} (production rules: the name is not in NON_PRODUCTION_ENVIRONMENTS)"
    if s.fault_error_rate or s.fault_latency_ms:
        raise ConfigError(
            f"FAULT_INJECTION_ERROR_RATE / FAULT_INJECTION_LATENCY_MS: fault injection is refused {when}; accepted: 0"
        )
    if not s.auth_enabled:
        raise ConfigError(
            f"SERVICE_AUTH_ENABLED: auth cannot be disabled {when}; accepted: true "
            "(a monolith without service calls sets DEPLOYMENT_MODE=monolith instead)"
        )
    for issuer, source in s.jwt_jwks_urls:
        if source.lower().startswith("http://"):
            from ._redact import redact_url

            raise ConfigError(
                f"SERVICE_JWT_JWKS_URLS: {issuer}={redact_url(source)} is plain http {when}: anyone on the path "
                "could swap the keys; accepted: https:// URLs or file paths"
            )
    if s.jwt_jwks_urls and s.jwt_jwks_min_refresh < 1.0:
        raise ConfigError(
            f"SERVICE_JWT_JWKS_MIN_REFRESH: {s.jwt_jwks_min_refresh:g} s lets unknown kids force a JWKS fetch per "
            f"request {when}; accepted: at least 1 second"
        )
    # A missing key is refused where a key is needed (verifying in instrument_app, minting in
    # create_app), in every environment: a process that only exports telemetry needs none.
