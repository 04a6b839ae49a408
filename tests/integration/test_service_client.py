"""ServiceClient against real loopback servers that misbehave on purpose (no mocked transports).

One FastAPI upstream is told what to answer, request by request; it records when each request
arrived (same monotonic clock as the test) and its headers.  Connection refused is a port that
was bound and closed.  Every test uses its own target name, so breakers never leak between tests.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind, StatusCode

from otel_dist import CircuitOpenError, ServiceCallError, ServiceClient, breaker_states
from otel_dist.testing import serve_app

pytestmark = pytest.mark.timeout(60)  # a hang guard, not a speed check: the machine may be loaded

FAST = {"max_backoff": 0.01}  # retry waits of at most 10 ms


@dataclass
class Step:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    at: float  # time.monotonic() on arrival
    wall: float
    method: str
    headers: dict[str, str]


class Upstream:
    """A server that answers with the scripted steps in order, then `default` forever."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.default = Step()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.url = ""
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def anything(request: Request, path: str) -> JSONResponse:
            with self._lock:
                self.seen.append(Seen(time.monotonic(), time.time(), request.method, dict(request.headers)))
                step = self.script.pop(0) if self.script else self.default
            if step.delay:
                await asyncio.sleep(step.delay)
            return JSONResponse({"path": path}, status_code=step.status, headers=step.headers)

        self.app = app

    def tell(self, *steps: Step, default: Step | None = None) -> None:
        with self._lock:
            self.script = list(steps)
            if default is not None:
                self.default = default


@pytest.fixture
def upstream(telemetry):
    up = Upstream()
    with serve_app(up.app) as url:
        up.url = url
        yield up


@pytest.fixture
def target() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def refused_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def logical_span(cap, target):
    (span,) = [s for s in cap.spans() if s.attributes.get("otel_dist.target") == target]
    return span


def attempt_spans(cap, parent):
    spans = [
        s for s in cap.spans() if s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id == parent.context.span_id
    ]
    return sorted(spans, key=lambda s: s.start_time)


def value(cap, name, target, **attrs):
    return cap.metric_value(name, otel_dist__target=target, **attrs)


# 1 ------------------------------------------------------------------------------------------


async def test_connection_refused_get_retries_then_gives_up_clearly(telemetry, target):
    async with ServiceClient(target, refused_url(), max_retries=2, failure_threshold=50, **FAST) as client:
        with pytest.raises(ServiceCallError) as caught:
            await client.get("/orders/1")
    err = caught.value
    assert not isinstance(err, CircuitOpenError)
    assert (err.target, err.reason, err.attempts) == (target, "max_tries", 3)
    assert isinstance(err.__cause__, httpx.ConnectError)
    assert target in str(err) and "3 attempts" in str(err) and "max_tries" in str(err)

    call = logical_span(telemetry, target)
    assert call.name == f"GET {target}"
    assert call.attributes["otel_dist.attempts"] == 3
    assert call.attributes["error.type"] == "ConnectError"
    assert call.status.status_code == StatusCode.ERROR
    attempts = attempt_spans(telemetry, call)
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1, 2]
    assert all(s.attributes["error.type"] == "ConnectError" for s in attempts)
    assert value(telemetry, "otel_dist.client.retries", target, otel_dist__retry__reason="connect_error") == 2
    assert value(telemetry, "otel_dist.client.give_ups", target, otel_dist__give_up__reason="max_tries") == 1
    assert value(telemetry, "otel_dist.client.call.duration", target, otel_dist__outcome="failure") == 1


# 2 ------------------------------------------------------------------------------------------


async def test_read_timeout_on_post_without_idempotency_key_is_not_retried(telemetry, upstream, target):
    upstream.tell(Step(delay=0.6), default=Step())
    async with ServiceClient(target, upstream.url, attempt_timeout=0.2, max_retries=3, **FAST) as client:
        with pytest.raises(ServiceCallError) as caught:
            await client.post("/orders", json={"item": 1})
    assert (caught.value.reason, caught.value.attempts) == ("non_retryable", 1)
    assert isinstance(caught.value.__cause__, (httpx.TimeoutException, TimeoutError))
    await asyncio.sleep(0.1)
    assert len(upstream.seen) == 1
    assert value(telemetry, "otel_dist.client.give_ups", target, otel_dist__give_up__reason="non_retryable") == 1
    assert value(telemetry, "otel_dist.client.retries", target) == 0


async def test_read_timeout_on_post_with_idempotency_key_is_retried_with_the_same_key(telemetry, upstream, target):
    upstream.tell(Step(delay=2.0), default=Step(status=201))  # margins for a loaded machine
    async with ServiceClient(target, upstream.url, attempt_timeout=1.0, max_retries=3, **FAST) as client:
        response = await client.post("/orders", json={"item": 1}, headers={"Idempotency-Key": "order-42"})
    assert response.status_code == 201
    assert [s.headers.get("idempotency-key") for s in upstream.seen] == ["order-42", "order-42"]
    assert value(telemetry, "otel_dist.client.retries", target, otel_dist__retry__reason="timeout") == 1
    attempts = attempt_spans(telemetry, logical_span(telemetry, target))
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1]


async def test_a_cookie_an_upstream_sets_never_rides_on_a_later_call(telemetry, upstream, target):
    """One ServiceClient serves every end user: a Set-Cookie in user A's answer must not reach user B's call."""
    upstream.tell(Step(headers={"set-cookie": "session=user-a-secret; Path=/"}), default=Step())
    async with ServiceClient(target, upstream.url) as client:
        first = await client.get("/profile")
        second = await client.get("/profile")
    assert first.cookies.get("session") == "user-a-secret"  # the caller still sees what it was sent
    assert second.status_code == 200
    assert [s.headers.get("cookie") for s in upstream.seen] == [None, None]


# 3 ------------------------------------------------------------------------------------------


async def test_503_then_200_succeeds_with_one_retry_recorded(telemetry, upstream, target):
    upstream.tell(Step(status=503), default=Step(status=200))
    async with ServiceClient(target, upstream.url, **FAST) as client:
        response = await client.get("/stock")
    assert response.status_code == 200
    assert len(upstream.seen) == 2
    assert value(telemetry, "otel_dist.client.retries", target, otel_dist__retry__reason="status_503") == 1
    assert value(telemetry, "otel_dist.client.give_ups", target) == 0
    assert value(telemetry, "otel_dist.client.call.duration", target, otel_dist__outcome="success") == 1
    call = logical_span(telemetry, target)
    assert call.attributes["otel_dist.attempts"] == 2
    assert call.attributes["http.response.status_code"] == 200
    assert "error.type" not in call.attributes
    attempts = attempt_spans(telemetry, call)
    assert [s.attributes["http.response.status_code"] for s in attempts] == [503, 200]
    # each attempt carries its own traceparent, child of the logical call
    parents = [s.headers["traceparent"].split("-")[2] for s in upstream.seen]
    assert parents == [format(s.context.span_id, "016x") for s in attempts]


# 4 ------------------------------------------------------------------------------------------


async def test_429_retry_after_seconds_is_waited_without_jitter(telemetry, upstream, target):
    upstream.tell(Step(status=429, headers={"Retry-After": "1"}), default=Step())
    async with ServiceClient(target, upstream.url, timeout=5, **FAST) as client:
        response = await client.get("/quota")
    assert response.status_code == 200
    first, second = upstream.seen
    assert second.at - first.at >= 1.0
    assert value(telemetry, "otel_dist.client.retries", target, otel_dist__retry__reason="status_429") == 1


async def test_429_retry_after_http_date_is_waited(telemetry, upstream, target):
    not_before = math.ceil(time.time()) + 1  # 1 to 2 s away, at the date's one-second resolution
    date = email.utils.formatdate(not_before, usegmt=True)
    upstream.tell(Step(status=429, headers={"Retry-After": date}), default=Step())
    async with ServiceClient(target, upstream.url, timeout=5, **FAST) as client:
        response = await client.get("/quota")
    assert response.status_code == 200
    assert upstream.seen[1].wall >= not_before


async def test_retry_after_beyond_the_deadline_gives_up_at_once(telemetry, upstream, target):
    upstream.tell(default=Step(status=503, headers={"Retry-After": "120"}))
    async with ServiceClient(target, upstream.url, timeout=2, **FAST) as client:
        started = time.monotonic()
        with pytest.raises(ServiceCallError) as caught:
            await client.get("/quota")
        elapsed = time.monotonic() - started
    assert (caught.value.reason, caught.value.attempts) == ("deadline", 1)
    assert caught.value.response is not None and caught.value.response.status_code == 503
    assert elapsed < 0.5
    assert len(upstream.seen) == 1
    assert value(telemetry, "otel_dist.client.give_ups", target, otel_dist__give_up__reason="deadline") == 1


# 5 ------------------------------------------------------------------------------------------


async def test_persistent_500_opens_the_breaker_then_calls_fail_fast(telemetry, upstream, target):
    upstream.tell(default=Step(status=500))
    async with ServiceClient(target, upstream.url, failure_threshold=3, breaker_timeout=30, **FAST) as client:
        for _ in range(3):  # 500 is not retried, but each one counts toward the breaker
            assert (await client.get("/boom")).status_code == 500
        assert breaker_states()[target] == "open"
        for _ in range(5):
            started = time.perf_counter()
            with pytest.raises(CircuitOpenError) as caught:
                await client.get("/boom")
            assert time.perf_counter() - started < 0.05
    assert len(upstream.seen) == 3  # nothing reached the server once open
    err = caught.value
    assert (err.target, err.reason, err.attempts) == (target, "circuit_open", 0)
    assert 29 < err.retry_in <= 30
    assert target in str(err) and "open" in str(err)
    assert value(telemetry, "otel_dist.circuit_breaker.rejections", target) == 5
    assert value(telemetry, "otel_dist.client.give_ups", target, otel_dist__give_up__reason="circuit_open") == 5
    assert value(telemetry, "otel_dist.client.call.duration", target, otel_dist__outcome="rejected") == 5
    assert value(telemetry, "otel_dist.client.retries", target) == 0
    transitions = "otel_dist.circuit_breaker.transitions"
    assert value(telemetry, transitions, target, otel_dist__circuit_breaker__from="closed") == 1
    assert value(telemetry, "otel_dist.circuit_breaker.state", target) == 1


# 6 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("probe_status", "final_state"), [(200, "closed"), (500, "open")])
async def test_half_open_admits_exactly_one_of_20_concurrent_callers(
    telemetry, upstream, target, probe_status, final_state
):
    upstream.tell(Step(status=500), default=Step(status=probe_status, delay=0.2))
    async with ServiceClient(
        target, upstream.url, failure_threshold=1, success_threshold=1, breaker_timeout=0.2, **FAST
    ) as client:
        assert (await client.get("/x")).status_code == 500
        assert breaker_states()[target] == "open"
        await asyncio.sleep(0.25)
        results = await asyncio.gather(*(client.get("/x") for _ in range(20)), return_exceptions=True)
    assert len(upstream.seen) == 2  # the tripping call, then exactly one probe
    responses = [r for r in results if isinstance(r, httpx.Response)]
    rejected = [r for r in results if isinstance(r, CircuitOpenError)]
    assert [r.status_code for r in responses] == [probe_status]
    assert len(rejected) == 19
    assert breaker_states()[target] == final_state
    transitions = telemetry.metric_points("otel_dist.circuit_breaker.transitions")
    counted = {
        (a["otel_dist.circuit_breaker.from"], a["otel_dist.circuit_breaker.to"]): p.value
        for a, p in transitions
        if a["otel_dist.target"] == target
    }
    expected = {("closed", "open"): 1, ("open", "half_open"): 1}
    expected[("half_open", final_state)] = 1
    assert counted == expected
    logged = [
        (line["otel_dist.circuit_breaker.from"], line["otel_dist.circuit_breaker.to"])
        for line in telemetry.log_lines()
        if line.get("otel_dist.target") == target and "otel_dist.circuit_breaker.to" in line
    ]
    assert sorted(logged) == sorted(expected)  # one log line per transition, no duplicates


# 7 ------------------------------------------------------------------------------------------


async def test_slow_upstream_never_gets_an_attempt_after_the_deadline(telemetry, upstream, target):
    upstream.tell(default=Step(delay=1.0))
    deadline = 0.6
    async with ServiceClient(
        target, upstream.url, timeout=deadline, attempt_timeout=0.25, max_retries=10, **FAST
    ) as client:
        started, started_ns = time.monotonic(), time.time_ns()
        with pytest.raises(ServiceCallError) as caught:
            await client.get("/slow")
        elapsed = time.monotonic() - started
    assert caught.value.reason == "deadline"
    assert elapsed < deadline + 0.3  # cut at the deadline, plus clean-up on a busy machine
    attempts = attempt_spans(telemetry, logical_span(telemetry, target))
    assert 2 <= len(attempts) == caught.value.attempts <= 3  # at 0, ~0.25 and ~0.5 s
    assert all(span.start_time < started_ns + deadline * 1e9 for span in attempts)  # none started after it
    assert len(upstream.seen) <= len(attempts)


# 8 ------------------------------------------------------------------------------------------


async def test_caller_cancellation_mid_attempt_stops_and_does_not_trip_the_breaker(telemetry, upstream, target):
    upstream.tell(default=Step(status=503, delay=0.5))
    async with ServiceClient(target, upstream.url, failure_threshold=1, max_retries=5, **FAST) as client:
        task = asyncio.create_task(client.get("/slow"))
        while not upstream.seen:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.7)  # long enough for a (wrong) retry to reach the server
    assert len(upstream.seen) == 1
    assert breaker_states()[target] == "closed"
    assert client.breaker.failures == 0
    assert value(telemetry, "otel_dist.client.retries", target) == 0
    assert value(telemetry, "otel_dist.client.give_ups", target) == 0
    assert logical_span(telemetry, target).attributes["error.type"] == "CancelledError"


# 9 ------------------------------------------------------------------------------------------


async def test_4xx_is_returned_not_retried_and_leaves_the_breaker_alone(telemetry, upstream, target):
    upstream.tell(Step(status=500), Step(status=400), Step(status=404), Step(status=422), Step(status=500))
    async with ServiceClient(target, upstream.url, failure_threshold=2, breaker_timeout=30, **FAST) as client:
        assert (await client.get("/a")).status_code == 500
        assert client.breaker.failures == 1
        for status in (400, 404, 422):
            assert (await client.get("/a")).status_code == status
            assert client.breaker.failures == 1  # pybreaker's `exclude` would have reset it
        assert breaker_states()[target] == "closed"
        assert (await client.get("/a")).status_code == 500  # the count was not healed by the 4xx
    assert breaker_states()[target] == "open"
    assert len(upstream.seen) == 5
    assert value(telemetry, "otel_dist.client.retries", target) == 0
    assert value(telemetry, "otel_dist.client.call.duration", target, error__type="404") == 1


# 10 -----------------------------------------------------------------------------------------


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus samples as {(name, labels): value}; otel_scope_* and empty labels (= absent) dropped."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if v and not k.startswith("otel_scope"))
            out[(sample.name, labels)] = sample.value
    return out


def series(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


async def test_metrics_endpoint_and_logs_of_the_calling_app(telemetry, upstream, target):
    from contextlib import asynccontextmanager

    from fastapi.responses import JSONResponse as Json

    from otel_dist import instrument_app

    flaky, down, broken = f"{target}-flaky", f"{target}-down", f"{target}-broken"
    refused = refused_url()
    clients: dict[str, ServiceClient] = {}

    @asynccontextmanager
    async def lifespan(app):  # clients live on the serving event loop
        clients[flaky] = ServiceClient(flaky, upstream.url, **FAST)
        clients[down] = ServiceClient(down, refused, max_retries=1, failure_threshold=50, **FAST)
        clients[broken] = ServiceClient(broken, upstream.url, failure_threshold=1, breaker_timeout=30, **FAST)
        yield
        for client in clients.values():
            await client.aclose()

    caller = FastAPI(lifespan=lifespan)

    @caller.get("/call/{name}")
    async def call(name: str) -> Json:
        try:
            response = await clients[name].get("/x")
        except ServiceCallError as exc:
            return Json({"gave_up": exc.reason}, status_code=502)
        return Json({"status": response.status_code})

    instrument_app(caller, telemetry=telemetry.telemetry)
    traces = {}
    with serve_app(caller) as caller_url:
        async with httpx.AsyncClient(base_url=caller_url) as http:
            for name, steps in ((flaky, [Step(503), Step(200)]), (down, []), (broken, [Step(500)]), (broken, [])):
                upstream.tell(*steps)
                response = await http.get(f"/call/{name}")
                traces.setdefault(name, []).append(response.headers["traceresponse"].split("-")[1])
            text = (await http.get("/metrics")).text
    samples = scrape(text)
    T = "otel_dist_target"
    assert samples[series("otel_dist_client_retries_total", **{T: flaky}, otel_dist_retry_reason="status_503")] == 1
    assert samples[series("otel_dist_client_retries_total", **{T: down}, otel_dist_retry_reason="connect_error")] == 1
    assert samples[series("otel_dist_client_give_ups_total", **{T: down}, otel_dist_give_up_reason="max_tries")] == 1
    assert (
        samples[series("otel_dist_client_give_ups_total", **{T: broken}, otel_dist_give_up_reason="circuit_open")] == 1
    )
    assert samples[series("otel_dist_circuit_breaker_rejections_total", **{T: broken})] == 1
    assert samples[series("otel_dist_circuit_breaker_state", **{T: broken})] == 1
    assert samples[series("otel_dist_circuit_breaker_state", **{T: flaky})] == 0
    transition = series(
        "otel_dist_circuit_breaker_transitions_total",
        **{T: broken},
        otel_dist_circuit_breaker_from="closed",
        otel_dist_circuit_breaker_to="open",
    )
    assert samples[transition] == 1
    duration = series(
        "otel_dist_client_call_duration_seconds_count",
        **{T: flaky},
        http_request_method="GET",
        otel_dist_outcome="success",
    )
    assert samples[duration] == 1
    rejected = series(
        "otel_dist_client_call_duration_seconds_count",
        **{T: broken},
        http_request_method="GET",
        otel_dist_outcome="rejected",
        error_type="circuit_open",
    )
    assert samples[rejected] == 1

    client_lines = [line for line in telemetry.log_lines() if line["logger"] == "otel_dist.client"]
    (give_up,) = [line for line in client_lines if line.get("otel_dist.give_up.reason") == "max_tries"]
    assert give_up["trace_id"] == traces[down][0]
    assert (give_up["otel_dist.target"], give_up["otel_dist.attempts"], give_up["level"]) == (down, 2, "WARNING")
    (opened,) = [line for line in client_lines if line.get("otel_dist.circuit_breaker.to") == "open"]
    assert opened["trace_id"] == traces[broken][0]
    (rejected_line,) = [line for line in client_lines if line.get("otel_dist.give_up.reason") == "circuit_open"]
    assert rejected_line["trace_id"] == traces[broken][1]


# auth hook --------------------------------------------------------------------------------


class MintingAuth(httpx.Auth):
    """Like the service-auth hook: a fresh bearer token per attempt, one re-mint and resend on a 401."""

    def __init__(self) -> None:
        self.minted = 0

    def _token(self) -> str:
        self.minted += 1
        return f"Bearer t{self.minted}"

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._token()
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = self._token()
            yield request


async def test_auth_runs_on_every_attempt_and_its_401_resend_stays_inside_the_attempt(telemetry, upstream, target):
    upstream.tell(Step(status=503), Step(status=401), default=Step(status=200))
    async with ServiceClient(target, upstream.url, auth=MintingAuth(), **FAST) as client:
        response = await client.get("/me")
    assert response.status_code == 200
    assert [s.headers["authorization"] for s in upstream.seen] == ["Bearer t1", "Bearer t2", "Bearer t3"]
    assert value(telemetry, "otel_dist.client.retries", target) == 1  # the 503 only; the 401 was the auth's
    call = logical_span(telemetry, target)
    assert call.attributes["otel_dist.attempts"] == 2
    assert len(attempt_spans(telemetry, call)) == 3


async def test_a_final_401_is_returned_not_retried_and_never_trips_the_breaker(telemetry, upstream, target):
    upstream.tell(default=Step(status=401))
    async with ServiceClient(target, upstream.url, auth=MintingAuth(), failure_threshold=1, **FAST) as client:
        for _ in range(3):
            assert (await client.get("/me")).status_code == 401
    assert len(upstream.seen) == 6  # per call: the attempt and the auth's single resend
    assert breaker_states()[target] == "closed" and client.breaker.failures == 0
    assert value(telemetry, "otel_dist.client.retries", target) == 0


async def test_waiting_for_a_connection_slot_is_not_an_attempt_timeout(telemetry, upstream, target):
    # 40 concurrent calls over 10 connections: 4 waves of 0.5 s. Queued callers wait for a slot
    # within the total deadline; only the I/O counts against the 1.2 s attempt timeout (queued
    # in httpx's own pool instead, the last wave would time out after waiting 1.5 s).
    upstream.tell(default=Step(delay=0.5))
    async with ServiceClient(
        target, upstream.url, attempt_timeout=1.2, timeout=15, max_retries=0, max_connections=10
    ) as client:
        responses = await asyncio.gather(*(client.get(f"/slot/{i}") for i in range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    assert len(upstream.seen) == 40
    assert breaker_states()[target] == "closed"
    assert value(telemetry, "otel_dist.client.give_ups", target) == 0


# retry budget ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_retry_budget_keeps_a_failing_services_load_within_one_plus_budget(telemetry, upstream, target):
    """20 concurrent callers x 15 calls against a service that always answers 503: 4x load without a budget."""
    upstream.tell(default=Step(status=503))
    callers, calls_each = 20, 15
    calls = callers * calls_each
    budget = dict(retry_budget=0.2, retry_budget_min_per_second=0.1, retry_budget_window=600)  # floor: 60 retries
    async with ServiceClient(target, upstream.url, max_retries=3, failure_threshold=1000, **FAST, **budget) as client:

        async def caller() -> list[str]:
            reasons = []
            for _ in range(calls_each):
                with pytest.raises(ServiceCallError) as caught:
                    await client.get("/stock")
                reasons.append(caught.value.reason)
            return reasons

        reasons = [r for rs in await asyncio.gather(*(caller() for _ in range(callers))) for r in rs]
    allowed_retries = 0.2 * calls + 0.1 * 600  # 120
    received = len(upstream.seen)
    assert calls + 0.9 * allowed_retries <= received <= calls + allowed_retries  # <= 1.4x, not 4x
    retries = value(telemetry, "otel_dist.client.retries", target)
    assert retries == received - calls
    # a call that got all 3 retries ended with max_tries; every other one ran out of budget
    assert reasons.count("max_tries") <= allowed_retries // 3
    assert reasons.count("budget_exhausted") == calls - reasons.count("max_tries")
    give_ups = "otel_dist.client.give_ups"
    assert value(telemetry, give_ups, target, otel_dist__give_up__reason="budget_exhausted") == reasons.count(
        "budget_exhausted"
    )
    assert value(telemetry, "otel_dist.client.retry_budget.remaining", target) == 0
    spans = [s for s in telemetry.spans() if s.attributes.get("otel_dist.target") == target]
    exhausted = [s for s in spans if s.attributes.get("otel_dist.give_up.reason") == "budget_exhausted"]
    assert len(exhausted) == reasons.count("budget_exhausted")
    assert all(s.attributes["error.type"] == "503" for s in exhausted)


async def test_retry_budget_still_retries_a_single_transient_failure(telemetry, upstream, target):
    """Default budget settings (20% + 3/s floor over 10 s): the first call of a quiet client is retried."""
    upstream.tell(Step(status=503), default=Step(status=200))
    async with ServiceClient(target, upstream.url, **FAST) as client:
        assert (await client.get("/stock")).status_code == 200
    assert len(upstream.seen) == 2
    assert value(telemetry, "otel_dist.client.retries", target, otel_dist__retry__reason="status_503") == 1
    # 3/s x 10 s + 0.2 x 1 call, minus the one retry taken
    assert value(telemetry, "otel_dist.client.retry_budget.remaining", target) == 29


async def test_default_connection_layer_lean_for_plain_http_services_httpx_otherwise(upstream, monkeypatch):
    """A plain-HTTP service gets otel_dist._transport (httpx's transport on a leaner pool and network backend);
    https, a proxied target or a transport the caller passes keep what httpx would use."""
    target = f"layer-{uuid.uuid4().hex[:6]}"
    async with ServiceClient(target, upstream.url, **FAST) as client:
        assert type(client._client._transport).__name__ == "_LeanTransport"
        assert isinstance(client._client._transport, httpx.AsyncHTTPTransport)  # so its CLIENT span is recorded
        assert [(await client.get(f"/n{i}")).status_code for i in range(3)] == [200, 200, 200]
    async with ServiceClient(target, "https://orders.internal:8443") as tls:
        assert type(tls._client._transport) is httpx.AsyncHTTPTransport
    given = httpx.AsyncHTTPTransport()
    async with ServiceClient(target, upstream.url, transport=given) as mine:
        assert mine._client._transport is given
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    async with ServiceClient(target, upstream.url) as proxied:
        assert type(proxied._client._transport) is httpx.AsyncHTTPTransport
