"""The example services' opt-in reuse of answers that cannot change, as real processes.

With ``GATEWAY_INTROSPECTION_CACHE_TTL`` and ``ORDERS_USER_CACHE_TTL`` set, a warm read is gateway -> orders
only: auth sees neither the introspection nor the user lookup again, and the answer is the same.
"""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack

import httpx
import pytest

from otel_dist._demo import SpanSink
from tests.example_services import start_example_services

pytestmark = pytest.mark.timeout(240)


def test_warm_reads_skip_auth_and_answer_the_same(tmp_path):
    sink = SpanSink()
    with ExitStack() as stack:
        env = {
            "SERVICE_JWT_SECRET": secrets.token_urlsafe(48),
            "OTEL_EXPORTER_OTLP_ENDPOINT": stack.enter_context(sink.serve()),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "GATEWAY_INTROSPECTION_CACHE_TTL": "60",
            "ORDERS_USER_CACHE_TTL": "60",
        }
        procs = start_example_services(tmp_path, env, stack)
        gateway = procs["gateway"].url
        credentials = {"username": f"cache-{secrets.token_hex(3)}", "password": "correct horse battery"}
        assert httpx.post(gateway + "/register", json=credentials, timeout=30).status_code == 201
        token = httpx.post(gateway + "/login", json=credentials, timeout=30).json()["access_token"]
        headers = {"authorization": f"Bearer {token}"}
        created = httpx.post(gateway + "/orders", json={"item": "pen"}, headers=headers, timeout=30)
        assert created.status_code == 201
        url = f"{gateway}/orders/{created.json()['id']}"
        first = httpx.get(url, headers=headers, timeout=30)  # introspection cached by the POST; user looked up
        second = httpx.get(url, headers=headers, timeout=30)
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        assert first.json()["user"]["username"] == credentials["username"]
        assert httpx.get(url, headers={"authorization": "Bearer nope"}, timeout=30).status_code == 401

        def services_of(response: httpx.Response, count: int) -> list[str]:
            trace_id = response.headers["traceresponse"].split("-")[1]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                servers = [s.service for s in sink.spans(trace_id) if s.kind == "SERVER"]
                if len(servers) >= count:
                    time.sleep(0.3)  # anything more that was going to arrive
                    return sorted(s.service for s in sink.spans(trace_id) if s.kind == "SERVER")
                time.sleep(0.1)
            raise AssertionError(f"trace {trace_id} incomplete")

        assert services_of(first, 3) == ["auth", "gateway", "orders"]  # the user lookup, once
        assert services_of(second, 2) == ["gateway", "orders"]
