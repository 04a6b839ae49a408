"""The server layer against a real uvicorn server on loopback."""

import time
import warnings

import httpx
import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from otel_dist import bootstrap
from otel_dist.testing import serve_app
from tests.apps.hello import build_app

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


def server_spans(cap):
    return [s for s in cap.spans() if s.kind == SpanKind.SERVER]


def get(url, **headers):
    # The test client's own CLIENT span would replace our traceparent: keep it out.
    with suppress_http_instrumentation():
        return httpx.get(url, headers=headers)


def test_one_server_span_named_by_route_template(telemetry):
    with serve_app(build_app()) as base:
        port = int(base.rsplit(":", 1)[1])
        response = get(f"{base}/hello/ada", **{"user-agent": "pytest"})
    assert response.status_code == 200
    (span,) = server_spans(telemetry)
    assert span.name == "GET /hello/{name}"
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "http.route": "/hello/{name}",
        "http.response.status_code": 200,
        "url.path": "/hello/ada",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": port,
        "client.address": "127.0.0.1",
        "user_agent.original": "pytest",
    }
    assert span.status.status_code == StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "test-svc"
    assert span.resource.attributes["deployment.environment.name"] == "test"
    assert span.resource.attributes["telemetry.distro.name"] == "otel-dist"


def test_log_line_inside_request_carries_the_span_ids(telemetry):
    with serve_app(build_app()) as base:
        get(f"{base}/hello/ada")
    (span,) = server_spans(telemetry)
    (line,) = [entry for entry in telemetry.log_lines() if entry["message"] == "saying hello"]
    assert line["trace_id"] == format(span.context.trace_id, "032x")
    assert line["span_id"] == format(span.context.span_id, "016x")
    assert line["trace_flags"] in ("01", "03")
    assert line["who"] == "ada"
    assert line["level"] == "INFO"
    assert line["logger"] == "tests.hello"
    assert line["service.name"] == "test-svc"
    assert line["deployment.environment.name"] == "test"
    assert line["timestamp"].endswith("Z")
    (access,) = [entry for entry in telemetry.log_lines() if entry["logger"] == "otel_dist.access"]
    assert access["http.route"] == "/hello/{name}"
    assert access["http.response.status_code"] == 200
    assert access["span_id"] == line["span_id"]


def test_incoming_traceparent_is_continued(telemetry):
    with serve_app(build_app()) as base:
        response = get(f"{base}/hello/ada", traceparent=f"00-{PARENT_TRACE}-{PARENT_SPAN}-01")
    (span,) = server_spans(telemetry)
    assert format(span.context.trace_id, "032x") == PARENT_TRACE
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    assert span.parent.is_remote
    assert response.headers["traceresponse"].startswith(f"00-{PARENT_TRACE}-{span.context.span_id:016x}-")


def test_malformed_traceparent_starts_a_fresh_trace(telemetry):
    with serve_app(build_app()) as base:
        response = get(f"{base}/hello/ada", traceparent="00-zz-not-a-trace-01")
    assert response.status_code == 200
    (span,) = server_spans(telemetry)
    assert span.parent is None


def test_legacy_correlation_id_is_bridged(telemetry):
    with serve_app(build_app()) as base:
        response = get(f"{base}/hello/ada", **{"X-Correlation-ID": "req-42"})
        no_header = get(f"{base}/hello/bob")
    first, second = server_spans(telemetry)
    assert first.attributes["otel_dist.correlation_id"] == "req-42"
    assert response.headers["x-correlation-id"] == "req-42"
    (line,) = [e for e in telemetry.log_lines() if e.get("who") == "ada"]
    assert line["correlation_id"] == "req-42"
    # Without a legacy id the response still tells the caller which trace to look for.
    assert no_header.headers["x-correlation-id"] == format(second.context.trace_id, "032x")
    assert "otel_dist.correlation_id" not in second.attributes


def test_hostile_correlation_id_is_dropped(telemetry):
    with serve_app(build_app()) as base:
        get(f"{base}/hello/ada", **{"X-Correlation-ID": "x" * 500})
        get(f"{base}/hello/ada", **{"X-Correlation-ID": "a b<script>"})
    for span in server_spans(telemetry):
        assert "otel_dist.correlation_id" not in span.attributes


def test_metrics_endpoint_serves_the_http_duration_histogram(telemetry):
    with serve_app(build_app()) as base:
        for name in ("a", "b", "c"):
            get(f"{base}/hello/{name}")
        get(f"{base}/no/such/route/123")
        text = get(f"{base}/metrics").text
    assert "# TYPE http_server_request_duration_seconds histogram" in text
    count_lines = [line for line in text.splitlines() if line.startswith("http_server_request_duration_seconds_count")]
    hello = [line for line in count_lines if 'http_route="/hello/{name}"' in line]
    assert len(hello) == 1 and hello[0].endswith(" 3.0")
    # Raw paths never become labels: the 404 has no route label at all.
    assert "/no/such/route" not in text and "/hello/a" not in text
    not_found = [line for line in count_lines if 'http_response_status_code="404"' in line]
    assert len(not_found) == 1 and 'http_route=""' in not_found[0]
    # /metrics itself is not traced or counted.
    assert all(s.attributes.get("url.path") != "/metrics" for s in server_spans(telemetry))


def test_unhandled_exception_marks_span_and_metric(telemetry):
    with serve_app(build_app()) as base:
        response = get(f"{base}/boom")
    assert response.status_code == 500
    (span,) = server_spans(telemetry)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["http.response.status_code"] == 500
    assert telemetry.metric_value("http.server.request.duration", error__type="RuntimeError") == 1


def test_404_from_handler_is_not_an_error(telemetry):
    with serve_app(build_app()) as base:
        get(f"{base}/missing")
    (span,) = server_spans(telemetry)
    assert span.status.status_code == StatusCode.UNSET
    assert "error.type" not in span.attributes


def test_second_bootstrap_returns_same_handle_and_no_duplicate_spans(telemetry):
    assert bootstrap() is telemetry.telemetry
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert bootstrap(service_name="other") is telemetry.telemetry
    assert any("already ran" in str(w.message) for w in caught)
    app = build_app()
    from otel_dist import instrument_app

    instrument_app(app)  # a second call is a no-op
    with serve_app(app) as base:
        get(f"{base}/hello/ada")
    assert len(server_spans(telemetry)) == 1
    # FastAPI's own telemetry stays off: no `fastapi` scope metrics, no operation spans.
    assert not [s for s in telemetry.spans() if s.name.startswith("fastapi.")]
    assert not [a for a, _ in telemetry.metric_points("http.server.request.duration") if "fastapi" in str(a)]
    assert telemetry.metric_value("http.server.request.duration") == 1


def test_untraced_health_paths(telemetry):
    from fastapi import FastAPI

    from otel_dist import instrument_app

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    instrument_app(app)
    with serve_app(app) as base:
        assert get(f"{base}/health").status_code == 200
    assert server_spans(telemetry) == []
    assert not [e for e in telemetry.log_lines() if e["logger"] == "otel_dist.access"]


@pytest.mark.parametrize("sampler", ["always_off", "parentbased_always_off"])
def test_unsampled_requests_still_count_in_metrics(sampler):
    from otel_dist.testing import capture_telemetry

    with capture_telemetry(traces_sampler=sampler) as cap, serve_app(build_app()) as base:
        get(f"{base}/hello/ada")
        time.sleep(0.01)
        assert server_spans(cap) == []
        assert cap.metric_value("http.server.request.duration", http__route="/hello/{name}") == 1


def test_duration_histogram_carries_the_request_span_as_exemplar(telemetry):
    with serve_app(build_app()) as base:
        get(f"{base}/hello/ada")
    (span,) = server_spans(telemetry)
    ((_, point),) = telemetry.metric_points("http.server.request.duration")
    assert [(e.trace_id, e.span_id) for e in point.exemplars] == [(span.context.trace_id, span.context.span_id)]


@pytest.mark.parametrize(
    ("mode", "sampler", "traces", "exported"),
    [
        ("unsampled", "parentbased_always_on", ("console",), False),  # the span carries it
        ("unsampled", "always_off", ("console",), True),  # no span: the record is the only trace of it
        ("unsampled", "parentbased_always_on", (), True),  # spans are not exported at all
        ("always", "parentbased_always_on", ("console",), True),
        ("never", "always_off", ("console",), False),
    ],
)
def test_access_line_becomes_an_otel_log_record_only_when_needed(mode, sampler, traces, exported):
    from otel_dist.testing import capture_telemetry

    with capture_telemetry(access_log_export=mode, traces_sampler=sampler, traces_exporter=traces) as cap:
        with serve_app(build_app()) as base:
            get(f"{base}/hello/ada")
        # (asserted after the server stopped: the access line is written after the response is sent)
        records = [r for r in cap.otel_logs() if r.log_record.attributes.get("logger.name") == "otel_dist.access"]
        assert len(records) == (1 if exported else 0)
        # The JSON line on stdout is written in every mode.
        assert len([e for e in cap.log_lines() if e["logger"] == "otel_dist.access"]) == 1
        # The application's own log lines are always exported.
        assert [r.log_record.body for r in cap.otel_logs()].count("saying hello") == 1


@pytest.mark.parametrize("freeze", [True, False])
def test_garbage_collector_frozen_once_the_app_started(freeze):
    """OTEL_DIST_GC_FREEZE (default true): what start-up allocated leaves the cyclic collector's reach."""
    import gc

    from otel_dist.testing import capture_telemetry

    gc.unfreeze()
    env = {} if freeze else {"OTEL_DIST_GC_FREEZE": "false"}
    try:
        with capture_telemetry(env, service_name="test-svc", auth_enabled=False) as cap:
            assert cap.telemetry.settings.gc_freeze is freeze
            with serve_app(build_app()) as base:
                assert get(f"{base}/hello/ada").status_code == 200
                frozen = gc.get_freeze_count()
        if freeze:
            assert frozen > 10_000  # the modules, routes and models loaded so far
        else:
            assert frozen == 0
    finally:
        gc.unfreeze()
