"""A public edge that holds: attacks sent over HTTP to real servers on loopback.

- a public app does not let the caller pick its trace or sampling, and keeps the caller's
  baggage out of internal calls (OTEL_DIST_PUBLIC_INBOUND_CONTEXT);
- login/register throttling per username and per client: 429 + Retry-After, metrics,
  the same answer for existing and unknown users;
- rejected-token log lines are rate-limited with a count of what was suppressed;
- client.address is bounded.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from otel_dist import ServiceClient, create_app, downstream, instrument_app, throttle
from otel_dist.testing import capture_telemetry, serve_app

SECRET = "edge-test-secret-0123456789-abcdefghij"
INBOUND_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ATTACKER_BAGGAGE = "tenant=admin,role=root," + ",".join(f"k{i}={'v' * 60}" for i in range(60))


Internal = Annotated[ServiceClient, Depends(downstream("internal"))]


def internal_app(seen: list[dict[str, str]]) -> FastAPI:
    app = FastAPI()

    @app.get("/echo")
    async def echo(request: Request) -> dict[str, str]:
        seen.append({k: v for k, v in request.headers.items() if k in ("traceparent", "baggage")})
        return {"ok": "yes"}

    return instrument_app(app, auth=False)


def edge_app(internal_url: str) -> FastAPI:
    app = create_app("edge", downstreams={"internal": internal_url}, public=True)

    @app.get("/hop")
    async def hop(client: Internal) -> dict[str, Any]:
        return {"status": (await client.get("/echo")).status_code}

    return app


@pytest.mark.parametrize("mode", ["link", "drop", "trust"])
def test_a_public_edge_starts_its_own_trace_and_drops_inbound_baggage(mode):
    seen: list[dict[str, str]] = []
    inbound = {
        "traceparent": f"00-{INBOUND_TRACE}-00f067aa0ba902b7-00",  # "-00": the caller asks us not to trace
        "baggage": ATTACKER_BAGGAGE[:8000],
    }
    overrides = {"jwt_secret": SECRET, "public_inbound_context": mode} if mode != "link" else {"jwt_secret": SECRET}
    with capture_telemetry(service_name="edge", **overrides) as cap:
        with serve_app(internal_app(seen)) as internal, serve_app(edge_app(internal)) as edge:
            with suppress_http_instrumentation():  # the test's own client must not replace our traceparent
                response = httpx.get(edge + "/hop", headers=inbound, timeout=30)
        servers = [s for s in cap.spans() if s.kind == SpanKind.SERVER and s.name == "GET /hop"]
    assert response.status_code == 200
    (server,) = servers if mode != "trust" else (None,)
    (forwarded,) = seen
    if mode == "trust":
        # As an internal service would: the caller's trace, unsampled, and its baggage forwarded.
        assert INBOUND_TRACE in forwarded["traceparent"] and forwarded["traceparent"].endswith("-00")
        assert "tenant=admin" in forwarded.get("baggage", "")
        return
    assert format(server.context.trace_id, "032x") != INBOUND_TRACE
    assert server.parent is None and server.context.trace_flags.sampled  # our sampler decided
    assert INBOUND_TRACE not in forwarded["traceparent"] and int(forwarded["traceparent"][-2:], 16) & 1  # sampled
    assert "baggage" not in forwarded  # nothing of the caller's baggage reaches internal services
    if mode == "link":
        (link,) = server.links
        assert format(link.context.trace_id, "032x") == INBOUND_TRACE
        assert link.attributes["otel_dist.link.type"] == "inbound_untrusted"
    else:
        assert not server.links


class Credentials(BaseModel):
    username: str
    password: str


def throttled_app(known: set[str]) -> FastAPI:
    app = create_app("login-edge", public=True)
    limit = throttle(app, "login")

    @app.post("/login")
    async def login(body: Credentials, request: Request) -> dict[str, str]:
        limit.check(request, body.username)
        if body.username in known and body.password == "right":
            return {"access_token": "t"}
        from fastapi import HTTPException

        raise HTTPException(401, "invalid username or password")

    return app


def test_login_is_throttled_per_username_and_per_client_without_revealing_users():
    settings = {"login_rate_per_username": "3/60", "login_rate_per_client": "8/60", "auth_enabled": False}
    with capture_telemetry(service_name="login-edge", **settings) as cap:
        with serve_app(throttled_app({"ada-lovelace-x"})) as base:
            with httpx.Client(base_url=base, timeout=30) as client:
                # 3 per username, 8 per client: ada's fourth guess is refused, and so is nobody's.
                guesses = [
                    client.post("/login", json={"username": "ada-lovelace-x", "password": f"g{i}"}) for i in range(4)
                ]
                unknown = [client.post("/login", json={"username": "nobody", "password": f"g{i}"}) for i in range(4)]
                # Spread over new names, the same client has run out of its own budget (8 attempts, 8 used).
                spread = [client.post("/login", json={"username": f"u{i}", "password": "x"}) for i in range(4)]
            metrics = httpx.get(base + "/metrics").text
        lines = [line for line in cap.log_lines() if line["message"] == "request throttled"]
    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    assert [r.status_code for r in unknown] == [401, 401, 401, 429]
    # The same answer for a real and an unknown user: status, body and header shape.
    assert guesses[-1].json() == unknown[-1].json()
    assert guesses[-1].json()["detail"]["error"] == "too_many_requests"
    for response in (guesses[-1], unknown[-1]):
        assert 1 <= int(response.headers["retry-after"]) <= 20  # 3 per 60 s: one attempt every 20 s
    assert [r.status_code for r in spread] == [429, 429, 429, 429]
    assert 'otel_dist_throttle_rejections_total{otel_dist_throttle_key="username",otel_dist_throttle_name="login"' in (
        metrics
    )
    assert 'otel_dist_throttle_key="client"' in metrics
    assert lines and all("ada-lovelace-x" not in str(line) for line in lines)  # the username is never logged


def test_rejected_token_lines_are_rate_limited_with_a_suppressed_count():
    from .test_auth_support import build_app

    sent = 200
    with capture_telemetry(service_name="orders", jwt_secret=SECRET, auth_rejection_log_rate="10/10") as cap:
        with serve_app(build_app()) as base:
            started = time.monotonic()
            with httpx.Client(base_url=base, timeout=30) as client:
                bad = {"authorization": "Bearer nope"}
                statuses = {client.get("/orders/1", headers=bad).status_code for _ in range(sent)}
                elapsed = time.monotonic() - started
                flood = [line for line in cap.log_lines() if line["message"] == "service token rejected"]
                time.sleep(1.5)  # the budget refills one line per second: the next line reports the suppressed
                assert client.get("/orders/1", headers=bad).status_code == 401
        lines = [line for line in cap.log_lines() if line["message"] == "service token rejected"]
    assert statuses == {401}
    # 10 at once, then 1 a second: however long the 200 requests took on this machine.
    assert 10 <= len(flood) <= 10 + elapsed + 1, (len(flood), elapsed)
    suppressed = sum(line.get("otel_dist.log.suppressed", 0) for line in lines)
    assert lines[-1].get("otel_dist.log.suppressed", 0) > 0
    assert len(lines) + suppressed == sent + 1  # every rejection is a line or counted in one
    metric = cap.metric_value("otel_dist.auth.verifications", otel_dist__auth__reason="malformed")
    assert metric == sent + 1  # and every one is counted in the metric


def test_client_address_from_a_trusted_proxy_is_bounded():
    import uvicorn  # noqa: F401  (ProxyHeadersMiddleware comes with uvicorn)
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    with capture_telemetry(service_name="edge", auth_enabled=False) as cap:
        app = FastAPI()

        @app.get("/x")
        async def x() -> dict[str, str]:
            return {}

        instrument_app(app, auth=False)
        proxied = ProxyHeadersMiddleware(app, trusted_hosts="*")
        with serve_app(proxied) as base:
            response = httpx.get(base + "/x", headers={"x-forwarded-for": "a" * 10_000}, timeout=30)
        (span,) = [s for s in cap.spans() if s.kind == SpanKind.SERVER]
    assert response.status_code == 200
    assert len(span.attributes["client.address"]) <= 64


def test_throttle_keys_are_bounded():
    from otel_dist._throttle import TokenBuckets

    buckets = TokenBuckets((1, 60.0), max_keys=100)
    for i in range(1000):
        assert buckets.take(secrets.token_hex(8) + str(i)) == 0.0
    assert len(buckets) == 100
