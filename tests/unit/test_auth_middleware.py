"""The ASGI layer called directly: pass-through, WebSocket refusal, fail-closed on a bug."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_dist._auth import ServiceAuthMiddleware, TokenMinter, TokenVerifier, hmac_key
from otel_dist._logs import LogSink

pytestmark = pytest.mark.timeout(5)

SECRET = "unit-test-secret-0123456789abcdefghijkl"


def layer(verifier: TokenVerifier | None = None) -> tuple[ServiceAuthMiddleware, list[dict[str, Any]], io.StringIO]:
    reached: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    stream = io.StringIO()
    verifier = verifier or TokenVerifier("orders", secrets=[hmac_key(SECRET).verification_key()])
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("t")
    sink = LogSink(service_name="orders", environment="test", stream=stream)
    return (
        ServiceAuthMiddleware(app, verifier=verifier, exempt_paths=["/health"], meter=meter, sink=sink),
        reached,
        stream,
    )


def bearer() -> bytes:
    return b"Bearer " + TokenMinter("billing", hmac_key(SECRET)).mint("orders").encode()


async def drive(
    mw: ServiceAuthMiddleware, scope: dict[str, Any], inbound: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbound.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    return sent


async def test_lifespan_passes_through():
    mw, reached, _ = layer()
    await drive(mw, {"type": "lifespan"}, [])
    assert reached == [{"type": "lifespan"}]


async def test_websocket_without_token_is_closed_before_the_app():
    mw, reached, stream = layer()
    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "headers": []}
    sent = await drive(mw, scope, [{"type": "websocket.connect"}])
    assert reached == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "missing"}]
    assert json.loads(stream.getvalue())["otel_dist.auth.reason"] == "missing"


async def test_websocket_with_token_reaches_the_app_with_the_caller():
    mw, reached, _ = layer()
    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "headers": [(b"authorization", bearer())]}
    await drive(mw, scope, [])
    assert reached[0]["otel_dist.caller"].name == "billing"
    assert reached[0]["state"]["service_identity"] is reached[0]["otel_dist.caller"]


async def test_exempt_without_raw_path_uses_the_decoded_path_exactly():
    mw, reached, _ = layer()
    await drive(mw, {"type": "http", "path": "/health", "headers": []}, [])
    sent = await drive(mw, {"type": "http", "path": "/health/", "method": "GET", "headers": []}, [])
    assert len(reached) == 1 and sent[0]["status"] == 401


async def test_a_bug_in_verification_fails_closed_as_401():
    class Broken(TokenVerifier):
        def verify(self, header_value: bytes | None, *, fetch: bool = True) -> Any:
            raise RuntimeError("bug")

    mw, reached, stream = layer(Broken("orders"))
    scope = {
        "type": "http",
        "path": "/x",
        "raw_path": b"/x",
        "method": "GET",
        "headers": [(b"authorization", bearer())],
    }
    sent = await drive(mw, scope, [])
    assert reached == []
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"]) == {"error": "invalid_token", "reason": "internal_error"}
    line = json.loads(stream.getvalue())
    assert line["error.type"] == "RuntimeError" and "Bearer" not in stream.getvalue()
