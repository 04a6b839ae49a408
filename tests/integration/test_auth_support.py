"""Helpers shared by the auth integration tests (no tests here).

Tokens are built by hand (PyJWT for the well-formed ones, raw segments for the
broken ones) so every rejection can be aimed precisely; raw HTTP requests go
through a socket because httpx normalises dot segments away.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI, Request

from otel_dist import CallingService, instrument_app

SECRET = "test-service-secret-0123456789-abcdefgh"  # >= 32 bytes
OTHER_SECRET = "another-secret-nobody-configured-012345"
SERVICE = "orders"
CALLER = "billing"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for CALLER -> SERVICE; a value of None removes the claim."""
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": CALLER,
        "sub": CALLER,
        "aud": SERVICE,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def hs_token(
    secret: str | bytes = SECRET, alg: str = "HS256", headers: dict[str, Any] | None = None, **changes: Any
) -> str:
    return jwt.encode(claims(**changes), secret, algorithm=alg, headers=headers)


def raw_token(header: dict[str, Any] | str, payload: dict[str, Any] | str, key: bytes = SECRET.encode()) -> str:
    """HMAC-SHA256 over arbitrary segments (for tokens PyJWT refuses to build)."""
    h = b64(header if isinstance(header, str) else json.dumps(header))
    p = b64(payload if isinstance(payload, str) else json.dumps(payload))
    sig = hmac.new(key, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


def ed25519_pem() -> tuple[ed25519.Ed25519PrivateKey, str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, private, public


def build_app() -> FastAPI:
    """A protected API; handlers echo the verified caller."""
    app = FastAPI()
    hits = app.state.hits = {"orders": 0}

    @app.get("/orders/{order_id}")
    async def order(order_id: str, caller: CallingService, request: Request) -> dict[str, Any]:
        hits["orders"] += 1
        state_identity = getattr(request.state, "service_identity", None)
        return {
            "order": order_id,
            "caller": caller.name,
            "token_id": caller.token_id,
            "same": state_identity is caller,
            "verified": caller.verified,
        }

    @app.post("/orders")
    async def create(request: Request, caller: CallingService) -> dict[str, Any]:
        body = await request.json()
        return {"created": body, "caller": caller.name}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return instrument_app(app)


def raw_request(base: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `target` exactly as written (no URL normalisation); (status, body)."""
    status, _, body = raw_exchange(base, target, headers)
    return status, body


def raw_exchange(base: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET `target` and headers exactly as written; (status, lower-cased response headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), response_headers, body


def all_span_text(cap: Any) -> str:
    """Every span's name, attributes, status and events as one string (for secrecy scans)."""
    parts = []
    for span in cap.spans():
        parts.append(span.name)
        parts.append(json.dumps(dict(span.attributes or {}), default=str))
        parts.append(str(span.status.description))
        parts.extend(json.dumps(dict(e.attributes or {}), default=str) for e in span.events)
    return "\n".join(parts)


def all_metric_text(cap: Any) -> str:
    data = cap._reader.get_metrics_data()
    parts = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                parts.extend(json.dumps(dict(p.attributes or {})) for p in metric.data.data_points)
    return "\n".join(parts)
