"""Deadline propagation through the three example services as real processes (gateway -> auth, orders -> auth).

Every service runs with ``SERVICE_REQUEST_TIMEOUT=3``.  The gateway is public: it starts each request's
deadline itself; orders and auth take the caller's remaining time from ``x-otel-dist-deadline-ms``.
Latency injected into orders (``POST /_faults``) makes the chain outlive its deadline.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from otel_dist import DEADLINE_HEADER
from otel_dist._demo import SinkSpan, SpanSink
from otel_dist.testing import ServerProcess
from tests.example_services import caller_auth, start_example_services

pytestmark = pytest.mark.timeout(240)
TIMEOUT_S = 3


@dataclass
class Chain:
    auth: ServerProcess
    orders: ServerProcess
    gateway: ServerProcess
    sink: SpanSink
    secret: str

    def admin(self, target: str) -> httpx.Auth:
        return caller_auth(target, self.secret)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("deadline-chain")
    secret = secrets.token_urlsafe(48)
    sink = SpanSink()
    with ExitStack() as stack:
        sink_url = stack.enter_context(sink.serve())
        env = {
            "SERVICE_JWT_SECRET": secret,
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SERVICE_REQUEST_TIMEOUT": str(TIMEOUT_S),
            "SERVICE_CLIENT_MAX_BACKOFF": "0.05",
        }
        procs = start_example_services(tmp, env, stack)
        yield Chain(**procs, sink=sink, secret=secret)


def user(chain: Chain) -> tuple[dict[str, str], int]:
    credentials = {"username": f"dl-{secrets.token_hex(4)}", "password": "correct horse battery"}
    assert httpx.post(chain.gateway.url + "/register", json=credentials, timeout=30).status_code == 201
    token = httpx.post(chain.gateway.url + "/login", json=credentials, timeout=30).json()["access_token"]
    headers = {"authorization": f"Bearer {token}"}
    created = httpx.post(chain.gateway.url + "/orders", json={"item": "pen"}, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    return headers, int(created.json()["id"])


def cancellations(proc: ServerProcess, reason: str) -> float:
    text = httpx.get(proc.url + "/metrics", timeout=30).text
    pattern = re.compile(
        rf'^otel_dist_server_cancellations_total\{{[^}}]*otel_dist_cancel_reason="{reason}"[^}}]*\}} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def servers_of(chain: Chain, trace_id: str, count: int) -> list[SinkSpan]:
    def found() -> list[SinkSpan] | None:
        spans = [s for s in chain.sink.spans(trace_id) if s.kind == "SERVER"]
        return spans if len(spans) >= count else None

    return wait_for(found, f"{count} server spans of trace {trace_id}")


def errors(proc: ServerProcess) -> list[dict]:
    return [line for line in proc.json_lines() if line.get("level") in ("ERROR", "CRITICAL")]


def set_latency(chain: Chain, ms: int) -> None:
    response = httpx.post(
        chain.orders.url + "/_faults", json={"latency_ms": ms}, auth=chain.admin("orders"), timeout=30
    )
    assert response.status_code == 200, response.text


def test_each_hop_gets_less_time_and_the_public_gateway_ignores_an_inbound_deadline(chain):
    headers, order_id = user(chain)
    # an inbound 0 ms deadline at the public edge changes nothing
    response = httpx.get(
        f"{chain.gateway.url}/orders/{order_id}", headers={**headers, DEADLINE_HEADER: "0"}, timeout=30
    )
    assert response.status_code == 200
    trace_id = response.headers["traceresponse"].split("-")[1]
    servers = servers_of(chain, trace_id, 4)  # gateway, auth (introspect), orders, auth (user lookup)
    by_service: dict[str, list[SinkSpan]] = {}
    for span in servers:
        by_service.setdefault(span.service, []).append(span)
    (gateway,) = by_service["gateway"]
    (orders,) = by_service["orders"]
    assert "otel_dist.deadline_ms" not in gateway.attributes
    orders_budget = orders.attributes["otel_dist.deadline_ms"]
    assert 0 < orders_budget <= TIMEOUT_S * 1000
    lookup = [s for s in by_service["auth"] if s.parent_span_id is not None and s.start_ns >= orders.start_ns]
    assert lookup and 0 < lookup[-1].attributes["otel_dist.deadline_ms"] <= orders_budget


def test_an_expired_deadline_at_an_internal_service_is_answered_504_at_once(chain):
    _, order_id = user(chain)
    before = cancellations(chain.orders, "expired_on_arrival")
    response = httpx.get(
        f"{chain.orders.url}/orders/{order_id}", headers={DEADLINE_HEADER: "0"}, auth=chain.admin("orders"), timeout=30
    )
    assert response.status_code == 504
    assert response.json()["error"] == "deadline_exceeded"
    assert cancellations(chain.orders, "expired_on_arrival") == before + 1


def test_a_slow_hop_is_cancelled_at_the_callers_deadline_and_counted(chain):
    headers, order_id = user(chain)
    before = cancellations(chain.orders, "deadline")
    errors_before = {name: len(errors(getattr(chain, name))) for name in ("orders", "gateway")}
    set_latency(chain, 20_000)
    try:
        response = httpx.get(f"{chain.gateway.url}/orders/{order_id}", headers=headers, timeout=60)
    finally:
        set_latency(chain, 0)
    assert response.status_code == 504
    wait_for(lambda: cancellations(chain.orders, "deadline") >= before + 1, "orders to count the cancellation")
    assert cancellations(chain.orders, "deadline") == before + 1
    # counted, not logged as an error
    assert {name: len(errors(getattr(chain, name))) for name in ("orders", "gateway")} == errors_before


def test_a_caller_disconnecting_at_the_gateway_cancels_its_work_and_is_counted(chain):
    headers, order_id = user(chain)
    before = cancellations(chain.gateway, "client_disconnect")
    set_latency(chain, 20_000)
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{chain.gateway.url}/orders/{order_id}", headers=headers, timeout=1.0)
        wait_for(lambda: cancellations(chain.gateway, "client_disconnect") >= before + 1, "the gateway's count")
    finally:
        set_latency(chain, 0)
    assert cancellations(chain.gateway, "client_disconnect") == before + 1
    closed = [line for line in chain.gateway.json_lines() if line.get("http.response.status_code") == 499]
    assert closed and all(line["level"] == "INFO" for line in closed)
