"""otel-dist's lean httpx instrumentation against real loopback servers.

One server plays a service of this system (a ``ServiceClient`` targets it), another a third party (a JWKS
host, a payment API): both record the headers they receive.
"""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from otel_dist import ServiceCallError, ServiceClient
from otel_dist.testing import capture_telemetry, free_port, serve_app

pytestmark = pytest.mark.timeout(60)


class Recorder:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        app = FastAPI()
        app.state.otel_dist_public = True

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def anything(request: Request, path: str) -> JSONResponse:
            with self._lock:
                self.headers.append(dict(request.headers))
            status = int(request.query_params.get("status", "200"))
            return JSONResponse({"path": path}, status_code=status)

        self.app = app


@pytest.fixture
def servers(telemetry):
    service, third_party = Recorder(), Recorder()
    with serve_app(service.app) as service_url, serve_app(third_party.app) as third_url:
        service.url, third_party.url = service_url, third_url  # type: ignore[attr-defined]
        yield service, third_party


def client_spans(cap):
    return [s for s in cap.spans() if s.kind == SpanKind.CLIENT]


async def test_trace_context_goes_to_this_systems_services_never_to_a_third_party(telemetry, servers):
    service, third_party = servers
    tracer = telemetry.telemetry.tracer("test")
    async with ServiceClient(f"svc-{uuid.uuid4().hex[:6]}", service.url) as client:
        token = context.attach(baggage.set_baggage("user.id", "u-123"))
        try:
            with tracer.start_as_current_span("handler"):
                assert (await client.get("/orders/1")).status_code == 200
                async with httpx.AsyncClient() as plain:
                    assert (await plain.get(third_party.url + "/.well-known/jwks.json")).status_code == 200
                    assert (await plain.get(service.url + "/direct")).status_code == 200  # same host:port
        finally:
            context.detach(token)
    to_service, direct = service.headers
    (to_third_party,) = third_party.headers
    assert "traceparent" in to_service and to_service["baggage"] == "user.id=u-123"
    assert "traceparent" in direct
    assert "traceparent" not in to_third_party
    assert "baggage" not in to_third_party and "tracestate" not in to_third_party
    # the third-party call is still traced
    spans = client_spans(telemetry)
    third = [s for s in spans if s.attributes["server.port"] == int(third_party.url.rsplit(":", 1)[1])]
    assert len(third) == 1 and third[0].attributes["url.full"] == third_party.url + "/.well-known/jwks.json"


async def test_one_client_span_per_request_with_stable_semconv(telemetry, servers):
    service, _ = servers
    port = int(service.url.rsplit(":", 1)[1])
    async with httpx.AsyncClient() as client:
        ok = await client.get(f"http://user:hunter22@127.0.0.1:{port}/a?token=s3cr3t-value&page=2")
        failed = await client.get(service.url + "/b?status=503")
    assert (ok.status_code, failed.status_code) == (200, 503)
    first, second = sorted(client_spans(telemetry), key=lambda s: s.start_time)
    assert first.name == "GET"
    assert dict(first.attributes) == {
        "http.request.method": "GET",
        "url.full": f"http://REDACTED:REDACTED@127.0.0.1:{port}/a?token=REDACTED&page=2",
        "server.address": "127.0.0.1",
        "server.port": port,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert first.status.status_code == StatusCode.UNSET
    assert second.attributes["error.type"] == "503"
    assert second.status.status_code == StatusCode.ERROR
    points = telemetry.metric_points("http.client.request.duration")
    by_status = {attrs.get("http.response.status_code"): (attrs, point) for attrs, point in points}
    attrs, point = by_status[503]
    assert attrs == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.scheme": "http",
        "http.response.status_code": 503,
        "network.protocol.version": "1.1",
        "error.type": "503",
    }
    assert point.count == 1
    # the exemplar points at the attempt's span
    (exemplar,) = point.exemplars
    assert exemplar.span_id == second.context.span_id


async def test_a_connection_error_is_a_span_with_error_type(telemetry):
    refused = f"http://127.0.0.1:{free_port()}/x"
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(refused)
    (span,) = client_spans(telemetry)
    assert span.attributes["error.type"] == "ConnectError"
    assert "http.response.status_code" not in span.attributes
    assert span.status.status_code == StatusCode.ERROR
    assert telemetry.metric_value("http.client.request.duration", error__type="ConnectError") == 1


def test_sync_clients_and_suppression(telemetry, servers):
    service, _ = servers
    with httpx.Client() as client:
        assert client.get(service.url + "/sync").status_code == 200
        with suppress_http_instrumentation():
            assert client.get(service.url + "/quiet").status_code == 200
    (span,) = client_spans(telemetry)
    assert span.attributes["url.full"] == service.url + "/sync"
    assert "traceparent" not in service.headers[1]


async def test_retries_carry_resend_count(telemetry, servers):
    service, _ = servers
    target = f"svc-{uuid.uuid4().hex[:6]}"
    async with ServiceClient(target, service.url, max_retries=2, max_backoff=0.01) as client:
        with pytest.raises(ServiceCallError):
            await client.get("/x", params={"status": "503"})
    spans = sorted(client_spans(telemetry), key=lambda s: s.start_time)
    assert [s.attributes.get("http.request.resend_count") for s in spans] == [None, 1, 2]
    assert [s.parent.span_id for s in spans] == [spans[0].parent.span_id] * 3


def test_contrib_instrumentation_stays_selectable(servers):
    service, third_party = servers
    with capture_telemetry(service_name="t", client_instrumentation="contrib") as cap:
        with httpx.Client() as client, trace.get_tracer("t").start_as_current_span("parent"):
            assert client.get(third_party.url + "/c").status_code == 200
        (span,) = client_spans(cap)
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.httpx"
        assert "traceparent" in third_party.headers[0]  # contrib propagates to every host
    with capture_telemetry(service_name="t") as cap:  # back to the lean layer, and only one span
        with httpx.Client() as client:
            assert client.get(service.url + "/d").status_code == 200
        (span,) = client_spans(cap)
        assert span.instrumentation_scope.name == "otel_dist.httpx"
