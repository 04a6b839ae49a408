"""Asymmetric service tokens on real uvicorn servers: JWKS publication, trust by issuer, rotation, kid floods."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otel_dist import TokenMinter, service_auth
from otel_dist._auth import jwks_document, load_private_key
from otel_dist.testing import capture_telemetry, serve_app

from .test_auth_support import CALLER, SECRET, SERVICE, all_span_text, b64, build_app, claims, ed25519_pem, raw_request

pytestmark = pytest.mark.timeout(60)  # a hang guard, not a speed check: the machine may be loaded


class JwksServer:
    """A stand-in for the caller's JWKS endpoint: a mutable document and a hit counter."""

    def __init__(self, *keys: Any) -> None:
        self.document = jwks_document(k.verification_key() for k in keys)
        self.hits = 0
        self.headers: list[dict[str, str]] = []

        async def jwks(request: Request) -> JSONResponse:
            self.hits += 1
            self.headers.append(dict(request.headers))
            return JSONResponse(self.document)

        self.app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])

    def publish(self, *keys: Any) -> None:
        self.document = jwks_document(k.verification_key() for k in keys)


def signing_key(alg: str = "EdDSA") -> Any:
    if alg == "EdDSA":
        return load_private_key(ed25519_pem()[1], "EdDSA")
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return load_private_key(pem, "ES256")


def get(base: str, path: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with suppress_http_instrumentation():
        return httpx.get(base + path, headers=headers, timeout=5)


@pytest.fixture
def file_jwks(tmp_path) -> Iterator[tuple[Any, Any, Any]]:
    """billing's key set in a file: (path, key, writer)."""
    key = signing_key()
    path = tmp_path / "billing.jwks.json"

    def write(*keys: Any) -> None:
        path.write_text(json.dumps(jwks_document(k.verification_key() for k in keys)))

    write(key)
    yield path, key, write


# ---------------------------------------------------------------- publication


def test_issuer_publishes_jwks_and_verifies_its_own_tokens():
    _, private_pem, _ = ed25519_pem()
    _, _, next_public = ed25519_pem()
    with capture_telemetry(
        service_name=CALLER, jwt_algorithm="EdDSA", jwt_private_key=private_pem, jwt_published_keys=next_public
    ) as cap:
        with serve_app(build_app()) as base:
            with suppress_http_instrumentation():
                response = httpx.get(base + "/.well-known/jwks.json", timeout=5)
            trick = raw_request(base, "/.well-known/jwks.json/../orders/1")
            auth = service_auth(CALLER)
            assert auth is not None
            with suppress_http_instrumentation():
                own = httpx.get(base + "/orders/1", auth=auth, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/jwk-set+json"
        keys = response.json()["keys"]
        assert len(keys) == 2
        assert all(k["kty"] == "OKP" and k["alg"] == "EdDSA" and k["use"] == "sig" and "d" not in k for k in keys)
        assert keys[0]["kid"] == load_private_key(private_pem, "EdDSA").kid
        assert trick[0] == 401
        assert own.status_code == 200 and own.json()["caller"] == CALLER
        header = jwt.get_unverified_header(auth.minter.token(CALLER))
        assert header["alg"] == "EdDSA" and header["kid"] == keys[0]["kid"]
        assert private_pem not in cap.raw_log_text()
        assert "PRIVATE" not in cap.raw_log_text()


def test_es256_tokens_verified_via_file_jwks(tmp_path):
    key = signing_key("ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document([key.verification_key()])))
    with capture_telemetry(service_name=SERVICE, jwt_algorithm="ES256", jwt_jwks_urls=((CALLER, str(path)),)):
        with serve_app(build_app()) as base:
            response = get(base, "/orders/1", TokenMinter(CALLER, key).token(SERVICE))
    assert response.status_code == 200 and response.json()["caller"] == CALLER


# ---------------------------------------------------------------- rejections specific to public keys


def test_asymmetric_rejections(file_jwks, tmp_path):
    path, key, _ = file_jwks
    billing = TokenMinter(CALLER, key)
    attacker_key = ed25519.Ed25519PrivateKey.generate()
    attacker_public_jwk = jwks_document([load_private_key(ed25519_pem()[1], "EdDSA").verification_key()])["keys"][0]
    p256 = ec.generate_private_key(ec.SECP256R1())
    attacker_hits = {"n": 0}

    async def attacker_jwks(request: Request) -> JSONResponse:
        attacker_hits["n"] += 1
        return JSONResponse({"keys": [attacker_public_jwk]})

    public_pem = key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def hs_with_public_pem(**header: Any) -> str:
        import hashlib
        import hmac

        h = b64(json.dumps({"alg": "HS256", **header}))
        p = b64(json.dumps(claims()))
        return f"{h}.{p}.{b64(hmac.new(public_pem, f'{h}.{p}'.encode(), hashlib.sha256).digest())}"

    with serve_app(Starlette(routes=[Route("/jwks", attacker_jwks)])) as evil:
        cases = {
            "untrusted issuer": (
                TokenMinter("inventory", signing_key()).token(SERVICE),
                "wrong_issuer",
            ),
            "attacker key, real kid": (
                jwt.encode(claims(), attacker_key, algorithm="EdDSA", headers={"kid": key.kid}),
                "bad_signature",
            ),
            "embedded jwk + jku + x5u": (
                jwt.encode(
                    claims(),
                    attacker_key,
                    algorithm="EdDSA",
                    headers={
                        "kid": attacker_public_jwk["kid"],
                        "jwk": attacker_public_jwk,
                        "jku": f"{evil}/jwks",
                        "x5u": f"{evil}/cert",
                    },
                ),
                "unknown_kid",
            ),
            "ES256 header on an EdDSA kid": (
                jwt.encode(claims(), p256, algorithm="ES256", headers={"kid": key.kid}),
                "alg_not_allowed",
            ),
            "HS256 with the public key as secret": (hs_with_public_pem(), "bad_signature"),
            "HS256 with the public key as secret, EdDSA kid": (hs_with_public_pem(kid=key.kid), "unknown_kid"),
            "iss differs from sub": (
                jwt.encode(claims(sub="admin"), key.key, algorithm="EdDSA", headers={"kid": key.kid}),
                "wrong_issuer",
            ),
            "missing iss": (
                jwt.encode(claims(iss=None), key.key, algorithm="EdDSA", headers={"kid": key.kid}),
                "missing_claim",
            ),
            "unknown kid": (
                jwt.encode(claims(), key.key, algorithm="EdDSA", headers={"kid": "rotated-away"}),
                "unknown_kid",
            ),
            "expired": (
                billing.mint(SERVICE, time.time() - 7200),
                "expired",
            ),
        }
        with capture_telemetry(
            service_name=SERVICE,
            jwt_algorithm="EdDSA",
            jwt_allowed_algorithms=("EdDSA", "ES256", "HS256"),
            jwt_secret=SECRET,
            jwt_jwks_urls=((CALLER, str(path)),),
            jwt_jwks_min_refresh=60,
        ) as cap:
            with serve_app(build_app()) as base:
                assert get(base, "/orders/ok", billing.token(SERVICE)).status_code == 200
                no_kid = jwt.encode(claims(), key.key, algorithm="EdDSA")
                assert get(base, "/orders/no-kid", no_kid).status_code == 200
                for name, (token, reason) in cases.items():
                    response = get(base, f"/orders/{name}", token)
                    assert response.status_code == 401, name
                    assert response.json()["reason"] == reason, name
            for token, _ in cases.values():
                assert token not in cap.raw_log_text()
                assert token not in all_span_text(cap)
    assert attacker_hits["n"] == 0  # jku/x5u never fetched


def test_hs256_refused_when_only_public_key_algorithms_are_allowed(file_jwks):
    path, key, _ = file_jwks
    public_pem = key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    h = b64(json.dumps({"alg": "HS256"}))
    p = b64(json.dumps(claims()))
    token = f"{h}.{p}.{b64(hmac.new(public_pem, f'{h}.{p}'.encode(), hashlib.sha256).digest())}"
    with capture_telemetry(service_name=SERVICE, jwt_algorithm="EdDSA", jwt_jwks_urls=((CALLER, str(path)),)):
        with serve_app(build_app()) as base:
            response = get(base, "/orders/1", token)
    assert response.status_code == 401 and response.json()["reason"] == "alg_not_allowed"


def test_unreachable_jwks_is_401_keys_unavailable():
    with capture_telemetry(
        service_name=SERVICE, jwt_algorithm="EdDSA", jwt_jwks_urls=((CALLER, "http://127.0.0.1:9/jwks.json"),)
    ) as cap:
        with serve_app(build_app()) as base:
            token = TokenMinter(CALLER, signing_key()).token(SERVICE)
            first = get(base, "/orders/1", token)
            second = get(base, "/orders/2", token)  # inside the rate limit: no second fetch, same answer
    assert first.status_code == second.status_code == 401
    assert first.json()["reason"] == second.json()["reason"] == "keys_unavailable"
    fetch_failures = [line for line in cap.log_lines() if line["message"].startswith("JWKS fetch failed")]
    assert len(fetch_failures) == 1


# ---------------------------------------------------------------- rotation


def _hammer(base: str, minter_of: dict[str, TokenMinter], stop: threading.Event, out: list[int]) -> None:
    with httpx.Client(timeout=30) as client, suppress_http_instrumentation():
        while not stop.is_set():
            token = minter_of["current"].mint(SERVICE)  # a new token each time: every request is verified cold
            out.append(client.get(f"{base}/orders/r", headers={"authorization": f"Bearer {token}"}).status_code)


def _rotating(jwks: JwksServer, **settings: Any) -> Any:
    return capture_telemetry(service_name=SERVICE, jwt_algorithm="EdDSA", **settings)


def test_rotation_with_overlap_never_fails_a_request():
    old, new = signing_key(), signing_key()
    jwks = JwksServer(old)
    with serve_app(jwks.app) as issuer:
        url = f"{issuer}/.well-known/jwks.json"
        with _rotating(jwks, jwt_jwks_urls=((CALLER, url),), jwt_jwks_refresh=0.2, jwt_jwks_min_refresh=0.1) as cap:
            with serve_app(build_app()) as base:
                minter_of = {"current": TokenMinter(CALLER, old)}
                statuses: list[int] = []
                stop = threading.Event()
                worker = threading.Thread(target=_hammer, args=(base, minter_of, stop, statuses))
                worker.start()

                # Waits on conditions, not on fixed sleeps: the machine may be loaded.
                def after(count: Any, more: int) -> None:
                    target, deadline = count() + more, time.monotonic() + 30
                    while count() < target and time.monotonic() < deadline:
                        time.sleep(0.02)

                def hits() -> int:
                    return jwks.hits

                def served() -> int:
                    return len(statuses)

                try:
                    after(served, 5)
                    jwks.publish(old, new)  # 1. publish the next key beside the current one
                    after(hits, 2)  # ... until verifiers have refreshed (a fetch started after one ended)
                    minter_of["current"] = TokenMinter(CALLER, new)  # 2. sign with the new key
                    after(served, 3)  # ... until no request with an old token is in flight
                    jwks.publish(new)  # 3. retire the old key
                    after(hits, 2)
                    after(served, 5)
                finally:
                    stop.set()
                    worker.join(30)
                late_old = get(base, "/orders/late", TokenMinter(CALLER, old).mint(SERVICE))
        assert len(statuses) > 20
        assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
        assert jwks.hits >= 3  # initial load + background refreshes
        assert late_old.status_code == 401  # the retired key no longer verifies anything
        assert late_old.json()["reason"] in ("unknown_kid", "bad_signature")
        rotated = {s.attributes.get("otel_dist.auth.result") for s in cap.spans() if s.kind == SpanKind.SERVER}
        assert "success" in rotated


def test_abrupt_rotation_is_caught_by_one_unknown_kid_fetch():
    old, new = signing_key(), signing_key()
    jwks = JwksServer(old)
    with serve_app(jwks.app) as issuer:
        url = f"{issuer}/.well-known/jwks.json"
        with _rotating(jwks, jwt_jwks_urls=((CALLER, url),), jwt_jwks_refresh=3600, jwt_jwks_min_refresh=0.1):
            with serve_app(build_app()) as base:
                assert get(base, "/orders/a", TokenMinter(CALLER, old).token(SERVICE)).status_code == 200
                assert jwks.hits == 1
                time.sleep(0.15)
                jwks.publish(new)  # no overlap at all: the new key appears as the caller starts using it
                response = get(base, "/orders/b", TokenMinter(CALLER, new).token(SERVICE))
    assert response.status_code == 200, response.text
    assert jwks.hits == 2


def test_unknown_kid_flood_cannot_force_reloads():
    key = signing_key()
    jwks = JwksServer(key)
    attacker = ed25519.Ed25519PrivateKey.generate()
    with serve_app(jwks.app) as issuer:
        url = f"{issuer}/.well-known/jwks.json"
        with _rotating(jwks, jwt_jwks_urls=((CALLER, url),), jwt_jwks_refresh=3600, jwt_jwks_min_refresh=600):
            with serve_app(build_app()) as base:
                assert get(base, "/orders/a", TokenMinter(CALLER, key).token(SERVICE)).status_code == 200
                reasons = []
                for i in range(30):
                    token = jwt.encode(claims(), attacker, algorithm="EdDSA", headers={"kid": uuid.uuid4().hex})
                    response = get(base, f"/orders/{i}", token)
                    reasons.append((response.status_code, response.json()["reason"]))
                assert get(base, "/orders/b", TokenMinter(CALLER, key).token(SERVICE)).status_code == 200
    assert set(reasons) == {(401, "unknown_kid")}
    assert jwks.hits == 1  # the initial load only: inside the rate limit an unknown kid fails at once


@pytest.mark.timeout(60)
def test_a_key_removed_from_the_jwks_revokes_cached_tokens_within_the_refresh_interval():
    """Issue 15: a cached verification used to outlive its key until the token's exp."""
    compromised, fresh = signing_key(), signing_key()
    jwks = JwksServer(compromised, fresh)
    refresh = 0.5
    with serve_app(jwks.app) as issuer:
        url = f"{issuer}/.well-known/jwks.json"
        with _rotating(jwks, jwt_jwks_urls=((CALLER, url),), jwt_jwks_refresh=refresh, jwt_jwks_min_refresh=0.1):
            with serve_app(build_app()) as base:
                token = TokenMinter(CALLER, compromised).token(SERVICE)
                assert get(base, "/orders/a", token).status_code == 200  # verified and cached (1 h lifetime)
                assert get(base, "/orders/b", token).status_code == 200
                jwks.publish(fresh)  # the compromised key is withdrawn
                removed_at = time.monotonic()
                statuses = []
                while time.monotonic() - removed_at < 30:  # generous: a loaded machine; expected ~refresh
                    response = get(base, "/orders/c", token)
                    statuses.append(response.status_code)
                    if response.status_code == 401:
                        break
                    time.sleep(0.05)
                revoked_after = time.monotonic() - removed_at
                still_good = get(base, "/orders/d", TokenMinter(CALLER, fresh).token(SERVICE))
    assert statuses[-1] == 401 and response.json()["reason"] == "unknown_kid"
    assert set(statuses[:-1]) <= {200}
    print(f"revoked {revoked_after:.2f} s after the key left the JWKS (refresh interval {refresh} s)")
    assert still_good.status_code == 200


@pytest.mark.timeout(60)
def test_the_jwks_host_gets_no_trace_context_or_baggage():
    """A JWKS URL is a third-party host: the caller's traceparent and baggage must not travel there."""
    key = signing_key()
    jwks = JwksServer(key)
    with serve_app(jwks.app) as issuer:
        url = f"{issuer}/.well-known/jwks.json"
        with _rotating(jwks, jwt_jwks_urls=((CALLER, url),), jwt_jwks_refresh=3600, jwt_jwks_min_refresh=0.1):
            with serve_app(build_app()) as base:
                headers = {
                    "authorization": f"Bearer {TokenMinter(CALLER, key).token(SERVICE)}",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "baggage": "user=alice,tenant=secret-tenant",
                }
                with suppress_http_instrumentation():
                    response = httpx.get(base + "/orders/1", headers=headers, timeout=30)
    assert response.status_code == 200
    (fetch,) = jwks.headers
    assert "traceparent" not in fetch and "baggage" not in fetch and "tracestate" not in fetch, fetch
