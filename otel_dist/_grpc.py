"""OTLP/gRPC exporters (the official ones), for ``OTEL_EXPORTER_OTLP[_SIGNAL]_PROTOCOL=grpc``.

Only imported when gRPC is chosen: the package comes with the extra ``otel-dist[grpc]``.
Every parameter is passed explicitly, so the upstream exporter reads nothing from the
environment behind the settings table's back.
"""

from __future__ import annotations

from typing import Any

from ._settings import ConfigError, OtlpTarget


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()


_EXPORTER_MODULES = ("trace_exporter", "metric_exporter", "_log_exporter")


def require(signal: str) -> None:
    """Checked with the settings, before anything is built: a ConfigError naming the extra if it is missing."""
    import importlib

    try:
        for module in ("grpc", *(f"opentelemetry.exporter.otlp.proto.grpc.{m}" for m in _EXPORTER_MODULES)):
            importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL: grpc needs the extra "
            "otel-dist[grpc] (pip install 'otel-dist[grpc]'); accepted: http/protobuf, or grpc with the extra installed"
        ) from None


def grpc_exporter(target: OtlpTarget, metric_preferences: dict[str, Any], meter_provider: Any) -> Any:
    require(target.signal)
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    insecure = target.endpoint.startswith("http://")
    credentials = None
    if not insecure:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(target.certificate),
            private_key=_read(target.client_key),
            certificate_chain=_read(target.client_certificate),
        )
    kwargs: dict[str, Any] = {
        "endpoint": target.endpoint,
        "insecure": insecure,
        "credentials": credentials,
        # gRPC metadata keys must be lower case.
        "headers": tuple((k.lower(), v) for k, v in target.headers.items()),
        "timeout": target.timeout_s,
        "compression": grpc.Compression.Gzip if target.compression == "gzip" else grpc.Compression.NoCompression,
    }
    if target.signal == "metrics":
        return OTLPMetricExporter(**kwargs, **metric_preferences)
    exporter_class = OTLPSpanExporter if target.signal == "traces" else OTLPLogExporter
    return exporter_class(**kwargs, meter_provider=meter_provider)
