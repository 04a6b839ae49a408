"""Deadline propagation in the server layer and the client, with real uvicorn servers on loopback.

The app under test runs in this process (so its spans and metrics are captured in memory); its
handlers report what they saw.  A second app plays the downstream service and records the
deadline header each attempt carried.  The three example services are covered in
``test_deadline_services.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from opentelemetry.trace import SpanKind

from otel_dist import DEADLINE_HEADER, ServiceClient, instrument_app, remaining_time
from otel_dist.testing import serve_app

pytestmark = pytest.mark.timeout(60)
OWN = 5.0  # SERVICE_REQUEST_TIMEOUT of the app under test
FULLWIDTH_12 = "\uff11\uff12".encode()  # digits to str.isdigit, not to the header parser


@pytest.fixture
def telemetry():
    from otel_dist.testing import capture_telemetry

    with capture_telemetry(service_name="test-svc", environment="test", request_timeout=OWN) as cap:
        yield cap


class Probe:
    def __init__(self) -> None:
        self.remaining: list[float | None] = []
        self.ran = 0
        self.cancelled = 0
        self.downstream_headers: list[str | None] = []
        self.entered = threading.Event()  # set in the server's thread
        self.release = threading.Event()


def make_app(telemetry, probe: Probe, *, public: bool = False, downstream_url: str | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/remaining")
    async def remaining() -> dict[str, float | None]:
        probe.ran += 1
        probe.remaining.append(remaining_time())
        return {"remaining": probe.remaining[-1]}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        probe.ran += 1
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.cancelled += 1
            raise
        return {"done": "yes"}

    @app.get("/call")
    async def call(request: Request) -> dict[str, int]:
        probe.ran += 1
        client: ServiceClient = request.app.state.client
        try:
            response = await client.get(request.query_params.get("path", "/echo"))
        except asyncio.CancelledError:
            probe.cancelled += 1
            raise
        return {"status": response.status_code}

    if downstream_url is not None:
        app.state.client = ServiceClient(
            "deadline-down", downstream_url, telemetry=telemetry.telemetry, max_retries=0, timeout=20
        )
    return instrument_app(app, telemetry=telemetry.telemetry, auth=False, public=public)


def make_downstream(probe: Probe) -> FastAPI:
    app = FastAPI()
    # Served through the same server layer (bootstrap wraps every FastAPI app); public, so that
    # it keeps its own timeout and only the app under test acts on the deadline.
    app.state.otel_dist_public = True

    @app.get("/echo")
    async def echo(request: Request) -> dict[str, str]:
        probe.downstream_headers.append(request.headers.get(DEADLINE_HEADER))
        return {"ok": "yes"}

    @app.get("/hang")
    async def hang(request: Request) -> dict[str, str]:
        probe.downstream_headers.append(request.headers.get(DEADLINE_HEADER))
        probe.entered.set()
        for _ in range(600):  # until the test releases it (a 30 s sleep would hold the server's shutdown)
            if probe.release.is_set():
                break
            await asyncio.sleep(0.05)
        return {"ok": "late"}

    return app


def server_span(telemetry, path_template: str):
    (span,) = [s for s in telemetry.spans() if s.kind == SpanKind.SERVER and s.name == f"GET {path_template}"]
    return span


def cancellations(telemetry, reason: str) -> float:
    return telemetry.metric_value("otel_dist.server.cancellations", otel_dist__cancel__reason=reason)


def test_inbound_deadline_reaches_the_handler_and_the_span(telemetry):
    probe = Probe()
    with serve_app(make_app(telemetry, probe)) as url:
        response = httpx.get(url + "/remaining", headers={DEADLINE_HEADER: "1500"})
    assert response.status_code == 200
    (seen,) = probe.remaining
    assert seen is not None and 0 < seen <= 1.5
    assert server_span(telemetry, "/remaining").attributes["otel_dist.deadline_ms"] == 1500


@pytest.mark.parametrize("hostile", ["999999999", "9" * 40, "-1", "1e3", "1.5", "0x10", FULLWIDTH_12, "abc", ""])
def test_a_hostile_or_invalid_deadline_never_extends_the_own_timeout(telemetry, hostile):
    probe = Probe()
    with serve_app(make_app(telemetry, probe)) as url:
        response = httpx.get(url + "/remaining", headers={DEADLINE_HEADER: hostile})
    assert response.status_code == 200
    (seen,) = probe.remaining
    assert seen is not None and OWN - 2.0 < seen <= OWN  # the service's own SERVICE_REQUEST_TIMEOUT


def test_no_header_gets_the_own_timeout(telemetry):
    probe = Probe()
    with serve_app(make_app(telemetry, probe)) as url:
        assert httpx.get(url + "/remaining").status_code == 200
    (seen,) = probe.remaining
    assert seen is not None and OWN - 2.0 < seen <= OWN
    assert "otel_dist.deadline_ms" not in server_span(telemetry, "/remaining").attributes


def test_an_expired_deadline_is_answered_504_without_running_the_handler(telemetry):
    probe = Probe()
    with serve_app(make_app(telemetry, probe)) as url:
        response = httpx.get(url + "/remaining", headers={DEADLINE_HEADER: "0"})
    assert response.status_code == 504
    assert response.json()["error"] == "deadline_exceeded"
    assert probe.ran == 0
    assert cancellations(telemetry, "expired_on_arrival") == 1
    span = next(s for s in telemetry.spans() if s.kind == SpanKind.SERVER)
    assert span.attributes["otel_dist.cancel.reason"] == "expired_on_arrival"
    assert span.attributes["http.response.status_code"] == 504


def test_a_public_app_ignores_the_inbound_deadline(telemetry):
    probe = Probe()
    with serve_app(make_app(telemetry, probe, public=True)) as url:
        response = httpx.get(url + "/remaining", headers={DEADLINE_HEADER: "0"})
    assert response.status_code == 200
    (seen,) = probe.remaining
    assert seen is not None and OWN - 2.0 < seen <= OWN
    assert cancellations(telemetry, "expired_on_arrival") == 0


def test_the_deadline_passing_cancels_the_handler_and_answers_504(telemetry):
    probe = Probe()
    with serve_app(make_app(telemetry, probe)) as url:
        started = time.monotonic()
        response = httpx.get(url + "/slow", headers={DEADLINE_HEADER: "300"}, timeout=60)
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert elapsed < 25  # the handler sleeps 30 s: it was cut, not awaited
    assert (probe.ran, probe.cancelled) == (1, 1)
    assert cancellations(telemetry, "deadline") == 1
    assert server_span(telemetry, "/slow").attributes["otel_dist.cancel.reason"] == "deadline"
    # expected when a caller gives up: counted, never an error line
    access = [line for line in telemetry.log_lines() if line.get("http.route") == "/slow"]
    assert [line["level"] for line in access] == ["INFO"]
    assert not [line for line in telemetry.log_lines() if line.get("level") in ("ERROR", "CRITICAL")]


def test_downstream_calls_get_the_smaller_of_own_timeout_and_remaining(telemetry):
    probe = Probe()
    with (
        serve_app(make_downstream(probe)) as down_url,
        serve_app(make_app(telemetry, probe, downstream_url=down_url)) as url,
    ):
        assert httpx.get(url + "/call", headers={DEADLINE_HEADER: "2000"}).json() == {"status": 200}
        assert httpx.get(url + "/call").json() == {"status": 200}  # no header: own 5 s
        assert httpx.get(url + "/call", headers={DEADLINE_HEADER: "600000"}).json() == {"status": 200}
    first, second, third = (int(h) for h in probe.downstream_headers)  # type: ignore[arg-type]
    assert 0 < first <= 2000
    assert 2000 < second <= OWN * 1000  # the client's own attempt timeout (10 s) is longer
    assert 2000 < third <= OWN * 1000  # a longer inbound deadline changed nothing


async def test_the_deadline_cancels_the_downstream_call_in_flight(telemetry):
    probe = Probe()
    with (
        serve_app(make_downstream(probe)) as down_url,
        serve_app(make_app(telemetry, probe, downstream_url=down_url)) as url,
    ):
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.get(url + "/call", params={"path": "/hang"}, headers={DEADLINE_HEADER: "400"})
        probe.release.set()
    assert response.status_code == 504
    assert len(probe.downstream_headers) == 1 and 0 < int(probe.downstream_headers[0] or 0) <= 400
    assert probe.cancelled == 1
    assert cancellations(telemetry, "deadline") == 1


async def test_the_caller_disconnecting_cancels_the_work_in_flight(telemetry):
    probe = Probe()
    with (
        serve_app(make_downstream(probe)) as down_url,
        serve_app(make_app(telemetry, probe, downstream_url=down_url)) as url,
    ):
        host, port = url.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /call?path=/hang HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        await writer.drain()
        assert await asyncio.to_thread(probe.entered.wait, 30)  # the handler's downstream call is in flight
        writer.close()
        await writer.wait_closed()
        deadline = time.monotonic() + 30
        while cancellations(telemetry, "client_disconnect") < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        probe.release.set()
    assert cancellations(telemetry, "client_disconnect") == 1
    assert probe.cancelled == 1
    span = server_span(telemetry, "/call")
    assert span.attributes["otel_dist.cancel.reason"] == "client_disconnect"
    assert span.attributes["http.response.status_code"] == 499
    assert not [line for line in telemetry.log_lines() if line.get("level") in ("ERROR", "CRITICAL")]


async def test_the_own_timeout_cuts_each_slow_request_in_arrival_order_and_spares_the_others():
    """Requests on the service's own timeout share one loop timer (``_server._Expiry``): each slow
    one is still cut at its own deadline, a request that finished is never cancelled late, and a
    shorter inbound deadline keeps its own timer."""
    from otel_dist.testing import capture_telemetry

    own = 1.5
    with capture_telemetry(service_name="test-svc", environment="test", request_timeout=own) as telemetry:
        probe = Probe()
        with serve_app(make_app(telemetry, probe)) as url:
            async with httpx.AsyncClient(timeout=60) as client:

                async def slow(delay: float, headers: dict[str, str]) -> tuple[int, float]:
                    await asyncio.sleep(delay)
                    started = time.monotonic()
                    response = await client.get(url + "/slow", headers=headers)
                    return response.status_code, time.monotonic() - started

                first = asyncio.create_task(slow(0.0, {}))
                second = asyncio.create_task(slow(0.5, {}))
                inbound = asyncio.create_task(slow(0.2, {DEADLINE_HEADER: "300"}))
                fast = [(await client.get(url + "/remaining")).status_code for _ in range(20)]
                results = [await first, await second, await inbound]
                after = (await client.get(url + "/remaining")).status_code  # the timer re-arms after firing
                late = asyncio.create_task(slow(0.0, {}))
                results.append(await late)
    assert fast == [200] * 20 and after == 200
    assert [status for status, _ in results] == [504] * 4
    for _status, elapsed in results[:2] + results[3:]:
        assert own - 0.2 <= elapsed < own + 10  # cut at its own deadline, not before
    assert results[2][1] < own  # the inbound 300 ms deadline, not the own timeout
    assert (probe.ran, probe.cancelled) == (25, 4)
    assert cancellations(telemetry, "deadline") == 4
