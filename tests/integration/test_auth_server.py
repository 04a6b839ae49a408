"""Service-token verification on a real uvicorn server: acceptance, every rejection, exempt paths, secrecy.

One server serves the whole module (HS256, leeway 30 s); every token and
secret sent is remembered, and the last test scans all captured logs, spans
and metric attributes for them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from otel_dist import ServiceTokenAuth
from otel_dist._auth import REASONS
from otel_dist.testing import TelemetryCapture, capture_telemetry, serve_app

from .test_auth_support import (
    CALLER,
    OTHER_SECRET,
    SECRET,
    SERVICE,
    all_metric_text,
    all_span_text,
    b64,
    build_app,
    claims,
    ed25519_pem,
    hs_token,
    raw_exchange,
    raw_request,
    raw_token,
)

pytestmark = [
    pytest.mark.timeout(5),
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),  # HS512 with a 39-byte secret
]

SENT: list[str] = []  # every credential that went over the wire, for the secrecy scan
SECRETS = [SECRET, OTHER_SECRET]


HITS: dict[str, int] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[TelemetryCapture, str]]:
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET, jwt_leeway=30) as cap:
        app = build_app()
        global HITS
        HITS = app.state.hits
        with serve_app(app) as base:
            yield cap, base


def call(base: str, path: str, authorization: str | None = None, **kw: Any) -> httpx.Response:
    headers = {}
    if authorization is not None:
        headers["authorization"] = authorization
        SENT.append(authorization)
    with suppress_http_instrumentation():
        return httpx.get(base + path, headers=headers, timeout=5, **kw)


def _eventually(probe: Any, timeout: float = 2.0) -> Any:
    # The server span ends (and the access line is written) just after the response is sent.
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.005)


def server_span(cap: TelemetryCapture, path: str) -> Any:
    def probe() -> list[Any]:
        return [s for s in cap.spans() if s.kind == SpanKind.SERVER and s.attributes.get("url.path") == path]

    spans = _eventually(probe)
    assert len(spans) == 1, [s.attributes.get("url.path") for s in cap.spans()]
    return spans[0]


def rejection_lines(cap: TelemetryCapture, path: str) -> list[dict[str, Any]]:
    server_span(cap, path)  # the rejection line is written before the span ends
    return [line for line in cap.log_lines() if line.get("logger") == "otel_dist.auth" and line.get("url.path") == path]


_n = 0


def unique(prefix: str = "/orders/") -> str:
    global _n
    _n += 1
    return f"{prefix}{_n}"


# ---------------------------------------------------------------- acceptance


def test_valid_token_reaches_handler_and_span(server):
    cap, base = server
    path = unique()
    token = hs_token()
    response = call(base, path, f"Bearer {token}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["caller"] == CALLER and body["same"] is True and body["verified"] is True
    assert len(body["token_id"]) == 32  # the jti
    span = server_span(cap, path)
    assert span.attributes["otel_dist.auth.caller"] == CALLER
    assert span.attributes["otel_dist.auth.result"] == "success"
    assert "otel_dist.auth.reason" not in span.attributes
    assert "enduser.id" not in span.attributes
    assert span.status.status_code == StatusCode.UNSET
    assert rejection_lines(cap, path) == []


def test_cached_token_still_checked_and_visible(server):
    cap, base = server
    token = hs_token()
    paths = [unique(), unique()]
    for path in paths:
        assert call(base, path, f"Bearer {token}").status_code == 200
    for path in paths:
        assert server_span(cap, path).attributes["otel_dist.auth.caller"] == CALLER


def test_scheme_is_case_insensitive(server):
    _, base = server
    assert call(base, unique(), f"bearer {hs_token()}").status_code == 200


def test_client_auth_end_to_end_post_body(server):
    _, base = server
    auth = ServiceTokenAuth(CALLER, SERVICE, secret=SECRET)
    with httpx.Client(auth=auth, timeout=5) as client:
        response = client.post(base + "/orders", json={"sku": "x"})
    SENT.append(auth.minter.token(SERVICE))
    assert response.status_code == 200
    assert response.json() == {"created": {"sku": "x"}, "caller": CALLER}


def test_inside_leeway_accepted(server):
    _, base = server
    now = int(time.time())
    assert call(base, unique(), f"Bearer {hs_token(exp=now - 10, iat=now - 600)}").status_code == 200
    assert call(base, unique(), f"Bearer {hs_token(iat=now + 10)}").status_code == 200
    assert call(base, unique(), f"Bearer {hs_token(nbf=now + 10)}").status_code == 200


def test_header_jku_jwk_x5u_ignored_for_a_valid_token(server):
    _, base = server
    headers = {"jku": "http://127.0.0.1:9/jwks", "x5u": "http://127.0.0.1:9/cert", "jwk": {"kty": "oct", "k": "AA"}}
    assert call(base, unique(), f"Bearer {hs_token(headers=headers)}").status_code == 200


# ---------------------------------------------------------------- rejections


def _now() -> int:
    return int(time.time())


def _public_pem() -> str:
    return ed25519_pem()[2]


def _segments(token: str) -> list[str]:
    return token.split(".")


def _tampered() -> str:
    h, _, s = _segments(hs_token())
    return f"{h}.{b64(json.dumps(claims(sub='admin', iss='admin')))}.{s}"


def _alg_confusion() -> str:
    # An attacker signs HS256 with the (public) PEM of some key as the HMAC secret.
    import hashlib
    import hmac

    pem = _public_pem().encode()
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}))
    p = b64(json.dumps(claims()))
    sig = hmac.new(pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


def _eddsa_signed() -> str:
    import jwt

    return jwt.encode(claims(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "x"})


def _alg_none() -> str:
    h = b64(json.dumps({"alg": "none", "typ": "JWT"}))
    return f"{h}.{b64(json.dumps(claims()))}."


def _with_header(header: dict[str, Any]) -> str:
    return raw_token(header, claims())


CASES: list[tuple[str, Any, str]] = [
    ("wrong scheme", lambda: f"Basic {b64('user:pass')}", "wrong_scheme"),
    ("token scheme", lambda: f"Token {hs_token()}", "wrong_scheme"),
    ("no space after Bearer", lambda: f"Bearer{hs_token()}", "wrong_scheme"),
    ("empty token", lambda: "Bearer ", "malformed"),
    ("blank token", lambda: "Bearer    ", "malformed"),
    ("two segments", lambda: "Bearer " + ".".join(_segments(hs_token())[:2]), "malformed"),
    ("four segments", lambda: f"Bearer {hs_token()}.AAAA", "malformed"),
    ("bad base64", lambda: "Bearer !!!!.@@@@.####", "malformed"),
    (
        "padding in header",
        lambda: "Bearer " + _segments(hs_token())[0] + "==." + ".".join(_segments(hs_token())[1:]),
        "malformed",
    ),
    ("non-JSON header", lambda: f"Bearer {b64('not json')}.{b64('{}')}.AAAA", "malformed"),
    ("header is a list", lambda: f"Bearer {_with_header([])}", "malformed"),  # type: ignore[arg-type]
    # Correctly signed: PyJWT checks the signature before it parses the payload.
    ("non-JSON payload", lambda: f"Bearer {raw_token({'alg': 'HS256'}, 'x')}", "malformed"),
    ("alg none", lambda: f"Bearer {_alg_none()}", "alg_not_allowed"),
    ("alg missing", lambda: f"Bearer {_with_header({'typ': 'JWT'})}", "alg_not_allowed"),
    ("alg confusion (public key as HMAC secret)", lambda: f"Bearer {_alg_confusion()}", "bad_signature"),
    ("alg outside allow-list (HS512)", lambda: f"Bearer {hs_token(alg='HS512')}", "alg_not_allowed"),
    ("alg outside allow-list (EdDSA)", lambda: f"Bearer {_eddsa_signed()}", "alg_not_allowed"),
    ("tampered payload", lambda: f"Bearer {_tampered()}", "bad_signature"),
    ("wrong secret", lambda: f"Bearer {hs_token(OTHER_SECRET)}", "bad_signature"),
    # Whole base64 quanta dropped: still canonical base64url, so it is the signature that is wrong.
    ("truncated signature", lambda: f"Bearer {hs_token()[:-3]}", "bad_signature"),
    ("signature not canonical base64url", lambda: f"Bearer {hs_token()[:-5]}B", "malformed"),  # stray low bits
    ("expired", lambda: f"Bearer {hs_token(exp=_now() - 120, iat=_now() - 700)}", "expired"),
    *[
        (f"missing {c}", (lambda c=c: f"Bearer {hs_token(**{c: None})}"), "missing_claim")
        for c in ("iss", "sub", "aud", "iat", "exp", "jti")
    ],
    ("nbf in the future", lambda: f"Bearer {hs_token(nbf=_now() + 300)}", "not_yet_valid"),
    ("iat in the future", lambda: f"Bearer {hs_token(iat=_now() + 300, exp=_now() + 900)}", "not_yet_valid"),
    ("wrong aud", lambda: f"Bearer {hs_token(aud='inventory')}", "wrong_audience"),
    ("list aud", lambda: f"Bearer {hs_token(aud=[SERVICE])}", "wrong_audience"),
    ("wrong iss", lambda: f"Bearer {hs_token(iss='inventory')}", "wrong_issuer"),
    ("exp not a number", lambda: f"Bearer {hs_token(exp='tomorrow')}", "invalid_claim"),
    ("sub not a string", lambda: f"Bearer {raw_token({'alg': 'HS256'}, claims(sub=7, iss=7))}", "invalid_claim"),
    ("lifetime over 24 h", lambda: f"Bearer {hs_token(exp=_now() + 90000)}", "lifetime_too_long"),
    ("unknown kid", lambda: f"Bearer {hs_token(headers={'kid': 'nope'})}", "unknown_kid"),
    ("non-string kid", lambda: f"Bearer {_with_header({'alg': 'HS256', 'kid': 7})}", "malformed"),
    ("huge kid", lambda: f"Bearer {_with_header({'alg': 'HS256', 'kid': 'k' * 4000})}", "malformed"),
    ("crit header", lambda: f"Bearer {_with_header({'alg': 'HS256', 'crit': ['exp'], 'exp': 1})}", "malformed"),
    (
        "jku to elsewhere, wrong key",
        lambda: f"Bearer {hs_token(OTHER_SECRET, headers={'jku': 'http://127.0.0.1:9/'})}",
        "bad_signature",
    ),
    ("token of 9 KB", lambda: "Bearer " + "a" * 9000, "too_large"),
]


@pytest.mark.parametrize(("authorization", "reason"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_rejection(server, authorization, reason):
    cap, base = server
    path = unique()
    value = authorization()
    SENT.append(value)
    # A raw request: httpx refuses some of these header values before sending them.
    status, headers, body = raw_exchange(base, path, {"Authorization": value})
    assert status == 401, body
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "invalid_token", "reason": reason}
    span = server_span(cap, path)
    assert span.attributes["otel_dist.auth.result"] == "failure"
    assert span.attributes["otel_dist.auth.reason"] == reason
    assert "otel_dist.auth.caller" not in span.attributes
    assert span.status.status_code == StatusCode.ERROR
    (line,) = rejection_lines(cap, path)
    assert line["level"] == "WARNING"
    assert line["otel_dist.auth.reason"] == reason
    assert line["trace_id"] == format(span.context.trace_id, "032x")
    assert cap.metric_value("otel_dist.auth.verifications", otel_dist__auth__reason=reason) >= 1


def test_missing_header(server):
    cap, base = server
    path = unique()
    response = call(base, path)
    assert response.status_code == 401
    assert response.json()["reason"] == "missing"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert server_span(cap, path).attributes["otel_dist.auth.reason"] == "missing"
    assert len(rejection_lines(cap, path)) == 1


def test_two_authorization_headers_rejected(server):
    _, base = server
    token = hs_token()
    SENT.append(token)
    status, body = raw_request(base, unique(), {"Authorization": f"Bearer {token}", "authorization": "Bearer x"})
    assert status == 401 and json.loads(body)["reason"] == "malformed"


def test_100_kb_token_is_401_and_cheap(server):
    cap, base = server
    path = unique()
    token = "eyJ" + "a" * 100_000
    started = time.perf_counter()
    response = call(base, path, f"Bearer {token}")
    elapsed = time.perf_counter() - started
    assert response.status_code == 401
    assert response.json()["reason"] == "too_large"
    assert elapsed < 1.0
    assert server_span(cap, path).attributes["otel_dist.auth.reason"] == "too_large"


# ---------------------------------------------------------------- exempt paths


@pytest.mark.parametrize(
    "target",
    [
        "/health/../orders/1",
        "/health/%2E%2E/orders/1",
        "/health%2F..%2Forders/1",
        "/health%2f..%2forders/1",
        "/HEALTH",
        "/Health",
        "/health/",
        "/health//",
        "//health",
        "/./health",
        "/health/.",
        "/health%20",
        "/metrics/x",
        "/metrics/",
        "/ready/../orders/1",
        "/docs/../orders/1",
        "/openapi.json/x",
        "/orders/1/",
    ],
)
def test_exempt_path_tricks_need_a_token(server, target):
    _, base = server
    before = HITS["orders"]
    status, body = raw_request(base, target)
    assert status == 401, (target, status, body)
    assert json.loads(body)["reason"] == "missing"
    assert HITS["orders"] == before  # the protected handler never ran


@pytest.mark.parametrize(
    "target", ["/health", "/health?probe=1", "/ready", "/metrics", "/docs", "/openapi.json", "/redoc"]
)
def test_exempt_paths_need_no_token(server, target):
    _, base = server
    status, _ = raw_request(base, target)
    assert status == 200, target


def test_protected_handler_not_run_on_rejection(server):
    _, base = server
    before = HITS["orders"]
    for case in CASES[:10]:
        raw_request(base, unique(), {"Authorization": case[1]()})
    assert HITS["orders"] == before
    assert call(base, unique(), f"Bearer {hs_token()}").status_code == 200
    assert HITS["orders"] == before + 1


def test_outcome_counter(server):
    cap, base = server
    metric = "otel_dist.auth.verifications"
    success = cap.metric_value(metric, otel_dist__auth__result="success")
    expired = cap.metric_value(metric, otel_dist__auth__reason="expired")
    token = hs_token()
    for _ in range(2):  # cached or not, every verification counts
        assert call(base, unique(), f"Bearer {token}").status_code == 200
    assert call(base, unique(), f"Bearer {hs_token()}").status_code == 200
    assert call(base, unique(), f"Bearer {hs_token(exp=_now() - 120, iat=_now() - 700)}").status_code == 401
    assert cap.metric_value(metric, otel_dist__auth__result="success") == success + 3
    assert cap.metric_value(metric, otel_dist__auth__reason="expired") == expired + 1
    for attrs, _ in cap.metric_points(metric):
        assert set(attrs) <= {"otel_dist.auth.result", "otel_dist.auth.reason"}
        assert ("otel_dist.auth.reason" in attrs) == (attrs["otel_dist.auth.result"] != "success")
        assert attrs.get("otel_dist.auth.reason", "missing") in REASONS


# ---------------------------------------------------------------- secrecy (keep last)


def test_no_token_or_secret_in_logs_spans_or_metrics(server):
    cap, _ = server
    assert len(SENT) > 40
    haystacks = [cap.raw_log_text(), all_span_text(cap), all_metric_text(cap)]
    needles = [*SECRETS]
    for value in SENT:
        token = value.split(" ", 1)[-1].strip()
        if len(token) >= 16:
            needles.append(token)
            needles.extend(part for part in token.split(".") if len(part) >= 24)  # no segment either
    for hay in haystacks:
        for needle in needles:
            assert needle not in hay, needle[:12]
        assert "Bearer " not in hay
