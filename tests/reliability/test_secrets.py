"""Secrets: no secret, token or Authorization value in any log line, span attribute, metric label,
error body or the startup config dump.

Besides these tests, tests/conftest.py scans everything the whole suite captured
at the end of the session (see otel_dist.testing.leaked_secrets).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from otel_dist._redact import redact_url
from otel_dist._settings import Settings
from otel_dist.testing import capture_telemetry, leaked_secrets, register_secret, serve_app

from ._support import start_service
from .apps.edge import build_app


def secret_settings_env() -> tuple[dict[str, str], dict[str, str]]:
    """A value for every setting marked secret (whatever the table holds); returns (env, field -> secret)."""
    env, values = {}, {}
    for f in dataclasses.fields(Settings):
        if not f.metadata["secret"]:
            continue
        secret = f"{f.name}-{secrets.token_urlsafe(24)}"
        accepts = str(f.metadata["accepts"])
        if str(f.type).startswith("tuple[tuple"):
            raw = f"api-key={secret}"
        elif "URL" in accepts:
            raw = f"postgresql+asyncpg://svc:{secret}@db.internal:5432/orders"
        elif "PEM" in accepts:
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            raw = pem.decode()
            secret = raw.splitlines()[1]  # the key material
        else:
            raw = secret
        env[f.metadata["env"][0]] = raw
        values[f.name] = secret
        register_secret(secret)
    return env, values


def test_the_check_finds_a_leak_masks_it_and_finds_unregistered_tokens():
    secret = "sekrit-" + secrets.token_hex(8)
    captured = [("a log line", f'{{"message": "login", "token": "{secret}"}}'), ("a span", '{"name": "GET /"}')]
    (leak,) = leaked_secrets([secret], captured)
    assert leak.startswith("a log line: a secret") and secret not in leak and "<SECRET>" in leak
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEiLCJleHAiOjF9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc"
    assert len(leaked_secrets([], [("metric label", f'user="{jwt}"')])) == 1  # a signed token, never registered


def test_startup_config_dump_redacts_every_secret_setting(tmp_path):
    env, values = secret_settings_env()
    assert values, "no setting is marked secret"
    with capture_telemetry(env={**env, "OTEL_SERVICE_NAME": "dump"}) as cap:
        (dump,) = [e for e in cap.log_lines() if e["message"] == "otel-dist configured"]
        in_process = cap.raw_log_text()
    assert {name: dump["config"][name] for name in values} == dict.fromkeys(values, "<redacted>")
    svc = start_service(tmp_path, "dump-svc", **env)
    try:
        (line,) = [e for e in svc.json_lines() if e.get("message") == "otel-dist configured"]
        metrics = httpx.get(svc.url + "/metrics").text
    finally:
        svc.stop()
    assert {name: line["config"][name] for name in values} == dict.fromkeys(values, "<redacted>")
    captured = [("in-process logs", in_process), ("process output", svc.output()), ("/metrics", metrics)]
    assert leaked_secrets(values.values(), captured) == []


def test_credentials_sent_to_an_app_never_reach_its_telemetry_or_error_bodies():
    token, cookie, api_key, password = (secrets.token_urlsafe(24) for _ in range(4))
    register_secret(token, cookie, api_key, password)
    headers = {"authorization": f"Bearer {token}", "cookie": f"session={cookie}", "x-api-key": api_key}
    with capture_telemetry(service_name="edge") as cap:
        with serve_app(build_app()) as base:
            responses = [
                httpx.post(f"{base}/login", json={"username": "ada", "password": password}, headers=headers),
                httpx.get(f"{base}/hello/ada?access_token={token}&api_key={api_key}", headers=headers),
                httpx.get(f"{base}/nowhere?password={password}", headers=headers),
            ]
        spans = [s.to_json() for s in cap.spans()]
        points = [str(attrs) for attrs, _ in cap.metric_points("http.server.request.duration")]
        points += [str(attrs) for attrs, _ in cap.metric_points("http.client.request.duration")]
        otel_logs = [r.to_json() for r in cap.otel_logs()]
        lines = cap.log_lines()
        text = cap.raw_log_text()
    assert [r.status_code for r in responses] == [401, 200, 404]
    (attempt,) = [e for e in lines if e["message"] == "login attempt"]
    assert attempt["user"] == "ada"
    assert all(attempt[k] == "<redacted>" for k in ("password", "authorization", "api_key", "session_cookie"))
    queries = [url for url in client_urls(spans) if "?" in url]  # the test client's own CLIENT spans
    assert len(queries) == 2 and all(url.count("REDACTED") == url.count("=") for url in queries), queries
    captured = [
        ("spans", "\n".join(spans)),
        ("metric points", "\n".join(points)),
        ("OTel log records", "\n".join(otel_logs)),
        ("JSON lines", text),
        *((f"body {r.request.url.path}", r.text) for r in responses),
    ]
    assert leaked_secrets([token, cookie, api_key, password], captured) == []


def client_urls(spans: list[str]) -> list[str]:
    return [json.loads(s)["attributes"]["url.full"] for s in spans if '"url.full"' in s]


def test_outbound_urls_have_credential_query_values_redacted():
    cases: dict[str, Any] = {
        "https://api.example/cb?code=abc123&state=ok": "https://api.example/cb?code=REDACTED&state=ok",
        "https://x.example/a?access_token=t0k3n&page=2": "https://x.example/a?access_token=REDACTED&page=2",
        "https://x.example/a?page=2&API_KEY=k3y;sig=s1g": "https://x.example/a?page=2&API_KEY=REDACTED;sig=REDACTED",
        "https://u:p4ss@x.example/a?X-Amz-Signature=zz&X-Amz-Credential=cc": (
            "https://REDACTED:REDACTED@x.example/a?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"
        ),
        "https://x.example/search?q=token+bucket&keyboard=1": "https://x.example/search?q=token+bucket&keyboard=1",
    }
    assert {url: redact_url(url) for url in cases} == cases
