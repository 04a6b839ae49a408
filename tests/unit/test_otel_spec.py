"""The OpenTelemetry environment-variable and OTLP-exporter specifications, setting by setting.

What arrives at a real receiver is checked in tests/integration/test_conformance.py; here
the effective configuration each variable produces.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from otel_dist import ConfigError, instrument_app, load_settings
from otel_dist._providers import metric_preferences
from otel_dist._settings import REFUSED
from otel_dist.testing import capture_telemetry, serve_app

BASE = "http://collector:4318"


def test_a_signal_endpoint_is_used_as_given_and_turns_on_only_that_signal():
    s = load_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom/path"})
    assert s.trace_exporters == ("otlp",) and s.log_exporters == () and s.metric_exporters == ("prometheus",)
    assert s.otlp("traces").endpoint == "http://traces:9999/custom/path"


def test_the_signal_endpoint_wins_over_the_base_endpoint_which_gets_the_signal_path():
    s = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE + "/", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://l:1"})
    assert s.otlp("traces").endpoint == BASE + "/v1/traces"
    assert s.otlp("metrics").endpoint == BASE + "/v1/metrics"
    assert s.otlp("logs").endpoint == "http://l:1/"  # no path: the root path, as the spec says


def test_an_explicit_otlp_exporter_without_endpoint_uses_the_spec_default():
    s = load_settings({"OTEL_TRACES_EXPORTER": "otlp"})
    assert s.otlp("traces").endpoint == "http://localhost:4318/v1/traces"
    grpc = load_settings({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc.otlp("traces").endpoint == "http://localhost:4317"


def test_signal_headers_win_key_by_key_and_the_rest_of_the_generic_ones_stay():
    s = load_settings(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=generic,X-Tenant=acme",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "API-Key=traces%20key",
        }
    )
    assert s.otlp("traces").headers == {"API-Key": "traces key", "X-Tenant": "acme"}
    assert s.otlp("logs").headers == {"api-key": "generic", "X-Tenant": "acme"}


@pytest.mark.parametrize(
    ("key", "generic", "signal", "attribute", "generic_value", "signal_value"),
    [
        ("TIMEOUT", "500", "7000", "timeout_s", 0.5, 7.0),
        ("PROTOCOL", "http/protobuf", "grpc", "protocol", "http/protobuf", "grpc"),
        ("COMPRESSION", "gzip", "none", "compression", "gzip", "none"),
    ],
)
def test_signal_values_win_over_generic_ones(key, generic, signal, attribute, generic_value, signal_value):
    s = load_settings({f"OTEL_EXPORTER_OTLP_{key}": generic, f"OTEL_EXPORTER_OTLP_METRICS_{key}": signal})
    assert getattr(s.otlp("metrics"), attribute) == signal_value
    assert getattr(s.otlp("traces"), attribute) == generic_value


def test_certificate_files_must_exist_and_mutual_tls_needs_key_and_certificate(tmp_path):
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: invalid value .*readable PEM"):
        load_settings({"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(tmp_path / "missing.pem")})
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load_settings({"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pem)})
    assert s.otlp("logs").certificate == str(pem)
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY / _CLIENT_CERTIFICATE"):
        load_settings({"OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY": str(pem)})


@pytest.mark.parametrize(
    ("env", "overrides", "expected"),
    [
        ({}, {}, ("unknown_service", "0.1.0", "test")),  # the test kit's environment (unset would be production)
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=ra,service.version=9,deployment.environment.name=stage"},
            {},
            ("ra", "9", "stage"),
        ),
        (
            {
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=ra,service.version=9,deployment.environment.name=stage",
                "OTEL_SERVICE_NAME": "specific",
                "SERVICE_VERSION": "2.0",
                "ENVIRONMENT": "test",
            },
            {},
            ("specific", "2.0", "test"),
        ),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=ra", "OTEL_SERVICE_NAME": "specific"},
            {"service_name": "kwarg"},
            ("kwarg", "0.1.0", "test"),
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=legacy"}, {}, ("unknown_service", "0.1.0", "legacy")),
    ],
    ids=["default", "resource-attributes", "specific-variables", "keyword", "legacy-environment-key"],
)
def test_resource_precedence(env, overrides, expected):
    with capture_telemetry(env=env, **overrides) as cap:
        attributes = cap.telemetry.resource.attributes
        assert (attributes["service.name"], attributes["service.version"]) == expected[:2]
        assert attributes["deployment.environment.name"] == expected[2]
        assert cap.telemetry.settings.service_name == expected[0]  # logs and auth use the same name


def test_resource_attributes_win_over_detected_ones_and_detectors_add_attributes():
    env = {"OTEL_RESOURCE_ATTRIBUTES": "host.name=from-env", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process,os"}
    with capture_telemetry(env=env) as cap:
        attributes = cap.telemetry.resource.attributes
    assert attributes["host.name"] == "from-env"
    assert attributes["process.executable.name"] and attributes["os.type"]  # from the detectors


def test_an_unknown_resource_detector_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"^OTEL_EXPERIMENTAL_RESOURCE_DETECTORS: nosuch not installed"):
        with capture_telemetry(env={"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process,nosuch"}):
            pass


@pytest.mark.parametrize("variable", sorted(REFUSED))
def test_unsupported_standard_variables_are_refused_by_name(variable):
    with pytest.raises(ConfigError, match=rf"^{variable}: not supported by otel-dist \(.+\); accepted: unset"):
        load_settings({variable: "1"})


def test_span_and_log_record_limits_apply():
    env = {
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "3",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "1",
        "OTEL_LOGS_EXPORTER": "console",
    }
    with capture_telemetry(env=env) as cap:
        with cap.telemetry.tracer("t").start_as_current_span("s", attributes={f"k{i}": "abcdefgh" for i in range(5)}):
            trace.get_current_span().add_event("one")
            trace.get_current_span().add_event("two")
        import logging

        logging.getLogger("limits").warning("hi", extra={f"f{i}": "abcdefgh" for i in range(5)})
        span = cap.span("s")
        assert len(span.attributes) == 2 and set(span.attributes.values()) == {"abcd"}
        assert [e.name for e in span.events] == ["two"]
        record = next(r for r in cap.otel_logs() if r.log_record.body == "hi")
        assert len(record.log_record.attributes) == 3  # the general limit: no log-record-specific one set


def test_exemplar_filter_always_off_records_no_exemplars():
    for value, expected in (("always_on", True), ("always_off", False)):
        with capture_telemetry(env={"OTEL_METRICS_EXEMPLAR_FILTER": value}) as cap:
            histogram = cap.telemetry.meter("m").create_histogram("h", unit="s")
            histogram.record(0.5)  # no span: only always_on keeps an exemplar
            (_, point), *_ = cap.metric_points("h")
            assert bool(point.exemplars) is expected, value


@pytest.mark.parametrize(
    ("preference", "counter", "up_down"),
    [
        ("cumulative", "CUMULATIVE", "CUMULATIVE"),
        ("delta", "DELTA", "CUMULATIVE"),
        ("lowmemory", "DELTA", "CUMULATIVE"),
    ],
)
def test_temporality_preference(preference, counter, up_down):
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, UpDownCounter

    prefs = metric_preferences(load_settings({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": preference}))
    temporality = prefs["preferred_temporality"]
    assert temporality[Counter].name == counter and temporality[Histogram].name == counter
    assert temporality[UpDownCounter].name == up_down
    assert temporality[ObservableCounter].name == ("DELTA" if preference == "delta" else "CUMULATIVE")


def test_batch_size_larger_than_the_queue_is_refused():
    with pytest.raises(ConfigError, match=r"^OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 100 is larger than"):
        load_settings({"OTEL_BSP_MAX_QUEUE_SIZE": "50", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"})
    with pytest.raises(ConfigError, match=r"^OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"):
        load_settings({"OTEL_BLRP_MAX_QUEUE_SIZE": "50", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "100"})
    assert load_settings({"OTEL_BSP_MAX_QUEUE_SIZE": "50"}).bsp_max_export_batch_size == 512  # capped when built


def test_semconv_opt_in_keeps_stable_http_and_database_and_refuses_unknown_values():
    assert load_settings({}).semconv_opt_in == ("http", "database")
    assert load_settings({"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup"}).semconv_opt_in == ("http/dup", "database")
    with pytest.raises(ConfigError, match=r"^OTEL_SEMCONV_STABILITY_OPT_IN"):
        load_settings({"OTEL_SEMCONV_STABILITY_OPT_IN": "htp"})


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def test_sdk_disabled_records_nothing_but_the_app_and_its_json_logs_run():
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": BASE}
    with capture_telemetry(env=env) as cap:
        s = cap.telemetry.settings
        assert s.trace_exporters == s.log_exporters == s.metric_exporters == ()
        app = instrument_app(hello_app(), auth=False)
        with serve_app(app) as url:
            assert httpx.get(url + "/hello").json() == {"hello": "world"}
            assert httpx.get(url + "/metrics").text == ""
        import logging

        logging.getLogger("app").warning("still logged")
        assert cap.spans() == []
        assert not isinstance(trace.get_tracer_provider(), type(cap.telemetry.tracer_provider))
        assert [line["message"] for line in cap.log_lines() if line["logger"] == "app"] == ["still logged"]


@pytest.mark.parametrize("disabled", ["fastapi", "httpx", "logging"])
def test_disabled_instrumentations(disabled):
    env = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled, "OTEL_LOGS_EXPORTER": "console"}
    with capture_telemetry(env=env) as cap:
        with serve_app(instrument_app(hello_app(), auth=False)) as url:
            with httpx.Client() as client:
                assert client.get(url + "/hello").status_code == 200
        import logging

        logging.getLogger("app").warning("record")
        kinds = {span.kind.name for span in cap.spans()}
        assert ("SERVER" in kinds) is (disabled != "fastapi")
        assert ("CLIENT" in kinds) is (disabled != "httpx")
        assert any(r.log_record.body == "record" for r in cap.otel_logs()) is (disabled != "logging")
        assert any(line["message"] == "record" for line in cap.log_lines())  # JSON stdout stays


def test_an_unknown_instrumentation_name_is_refused():
    with pytest.raises(ConfigError, match=r"^OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: invalid value 'fastpi'"):
        load_settings({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastpi"})


def test_auth_on_without_a_service_name_fails_at_startup_naming_otel_service_name():
    with capture_telemetry(env={"SERVICE_JWT_SECRET": "s" * 40}):
        with pytest.raises(ConfigError, match=r"^OTEL_SERVICE_NAME: required when service auth is on"):
            instrument_app(hello_app())


# ---------------------------------------------------------------- propagators, excluded URLs, header capture

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("propagators", "headers"),
    [
        ("b3", {"b3": f"{TRACE_ID}-{SPAN_ID}-1"}),
        ("b3multi", {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": SPAN_ID, "X-B3-Sampled": "1"}),
        ("jaeger", {"uber-trace-id": f"{TRACE_ID}:{SPAN_ID}:0:1"}),
        ("tracecontext,b3", {"b3": f"{TRACE_ID}-{SPAN_ID}-1"}),
    ],
)
def test_installed_propagators_extract_their_headers_and_inject_on_the_way_out(propagators, headers):
    with capture_telemetry(env={"OTEL_PROPAGATORS": propagators}) as cap:
        app = hello_app()

        @app.get("/outbound")
        async def outbound() -> dict[str, str]:
            from opentelemetry import propagate

            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            return carrier

        with serve_app(instrument_app(app, auth=False)) as url, suppress_http_instrumentation():
            # (suppressed: the instrumented test client would inject its own trace over ours)
            injected = httpx.get(url + "/outbound", headers=headers).json()
        server = next(s for s in cap.spans() if s.kind.name == "SERVER")
        assert format(server.context.trace_id, "032x") == TRACE_ID
        assert format(server.parent.span_id, "016x") == SPAN_ID
        first = propagators.split(",")[-1]
        expected_header = {"b3": "b3", "b3multi": "x-b3-traceid", "jaeger": "uber-trace-id"}[first]
        assert TRACE_ID in injected[expected_header]


def test_an_unknown_propagator_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"^OTEL_PROPAGATORS: invalid value 'b4'; accepted: .*installed"):
        load_settings({"OTEL_PROPAGATORS": "b4"})


@pytest.mark.parametrize(
    ("env", "traced"),
    [
        ({"OTEL_PYTHON_EXCLUDED_URLS": "hel+o$,/other"}, {"/hello": False, "/items/1": True}),
        (
            {"OTEL_PYTHON_EXCLUDED_URLS": "items", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "hello"},
            {"/hello": False, "/items/1": True},
        ),
        ({"OTEL_PYTHON_EXCLUDED_URLS": r"127\.0\.0\.1:\d+/items"}, {"/hello": True, "/items/1": False}),
    ],
    ids=["generic-regex", "fastapi-wins", "full-url"],
)
def test_excluded_urls_get_no_span_metrics_or_access_line(env, traced):
    with capture_telemetry(env=env) as cap:
        app = hello_app()

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"item_id": item_id}

        with serve_app(instrument_app(app, auth=False)) as url:
            for path in traced:
                assert httpx.get(url + path).status_code == 200
        routes = {s.attributes["url.path"] for s in cap.spans() if s.kind.name == "SERVER"}
        access = {line["url.path"] for line in cap.log_lines() if line["logger"] == "otel_dist.access"}
        assert routes == access == {path for path, on in traced.items() if on}
        assert cap.metric_value("http.server.request.duration") == sum(traced.values())


def test_server_and_client_header_capture_with_sanitizing():
    env = {
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-tenant,X-Session.*,authorization",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": "x-tenant",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": "content-length",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "session",
    }
    with capture_telemetry(env=env) as cap:
        with serve_app(instrument_app(hello_app(), auth=False)) as url:
            with httpx.Client() as client:
                headers = {"X-Tenant": "acme", "X-Session-Id": "s3cr3t-session", "Authorization": "Bearer abc.def"}
                client.get(url + "/hello", headers=headers)
        server = next(s for s in cap.spans() if s.kind.name == "SERVER")
        assert server.attributes["http.request.header.x_tenant"] == ("acme",)
        assert server.attributes["http.request.header.x_session_id"] == ("[REDACTED]",)
        assert server.attributes["http.request.header.authorization"] == ("[REDACTED]",)  # always
        assert server.attributes["http.response.header.content_type"] == ("application/json",)
        assert "http.request.header.user_agent" not in server.attributes
        client_span = next(s for s in cap.spans() if s.kind.name == "CLIENT")
        assert client_span.attributes["http.request.header.x_tenant"] == ("acme",)
        assert client_span.attributes["http.response.header.content_length"] == ("17",)


def test_grpc_without_the_extra_is_refused_naming_the_extra(monkeypatch):
    import sys

    # The package is installed here (the test extra); a None entry makes Python's import fail
    # exactly as it does where otel-dist[grpc] was not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_TRACES_PROTOCOL .*needs the extra otel-dist\[grpc\]"):
        with capture_telemetry(env=env):
            pass


def test_logging_auto_instrumentation_false_keeps_logs_on_stdout_only():
    env = {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false", "OTEL_LOGS_EXPORTER": "console"}
    with capture_telemetry(env=env) as cap:
        import logging

        logging.getLogger("app").warning("stdout only")
        assert cap.telemetry.settings.log_exporters == ()
        assert not any(r.log_record.body == "stdout only" for r in cap.otel_logs())
        assert any(line["message"] == "stdout only" for line in cap.log_lines())


@pytest.mark.parametrize(("value", "level"), [("debug", "DEBUG"), ("error", "ERROR")])
def test_otel_log_level_sets_the_sdk_loggers_level(value, level):
    import logging

    with capture_telemetry(env={"OTEL_LOG_LEVEL": value}):
        assert logging.getLogger("opentelemetry").level == getattr(logging, level)
