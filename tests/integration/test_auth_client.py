"""The client side against real servers: tokens per audience, one re-mint on 401, never a loop; modes."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind

from otel_dist import CallingService, ConfigError, ServiceTokenAuth, instrument_app, service_auth
from otel_dist.testing import capture_telemetry, serve_app

from .test_auth_support import CALLER, OTHER_SECRET, SECRET, SERVICE, build_app

pytestmark = pytest.mark.timeout(60)  # a hang guard, not a speed check: the machine may be loaded


def flaky_app(failures: int, challenge: str = 'Bearer error="invalid_token"') -> tuple[FastAPI, list[dict[str, Any]]]:
    """Answers 401 to the first `failures` verified calls (as after a key change on the server)."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/charge")
    async def charge(request: Request, caller: CallingService) -> dict[str, Any]:
        seen.append({"jti": caller.token_id, "body": await request.body()})
        if len(seen) <= failures:
            raise HTTPException(401, "stale token", headers={"WWW-Authenticate": challenge})
        return {"caller": caller.name}

    return instrument_app(app), seen


def test_401_triggers_one_remint_and_resend_with_the_same_body():
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET):
        app, seen = flaky_app(failures=1)
        with serve_app(app) as base:
            auth = ServiceTokenAuth(CALLER, SERVICE, secret=SECRET)
            with httpx.Client(auth=auth, timeout=5) as client, suppress_http_instrumentation():
                response = client.post(base + "/charge", json={"amount": 3})
    assert response.status_code == 200
    assert len(seen) == 2
    assert seen[0]["jti"] != seen[1]["jti"]  # a fresh token, not the cached one
    assert seen[0]["body"] == seen[1]["body"] == b'{"amount":3}'


@pytest.mark.parametrize("challenge", ["Bearer", 'Basic realm="x"', 'Bearer error="insufficient_scope"'])
def test_a_401_that_does_not_blame_the_token_is_not_resent(challenge):
    """A relayed "wrong password" (or any other 401) is returned at once: no second scrypt at the callee."""
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET):
        app, seen = flaky_app(failures=1, challenge=challenge)
        with serve_app(app) as base:
            auth = ServiceTokenAuth(CALLER, SERVICE, secret=SECRET)
            with httpx.Client(auth=auth, timeout=5) as client, suppress_http_instrumentation():
                response = client.post(base + "/charge", json={"amount": 3})
    assert response.status_code == 401 and len(seen) == 1 and response.history == []


def test_persistent_401_is_resent_once_never_looped():
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET) as cap:
        with serve_app(build_app()) as base:
            auth = ServiceTokenAuth(CALLER, SERVICE, secret=OTHER_SECRET)  # the server does not know this secret
            with httpx.Client(auth=auth, timeout=5) as client, suppress_http_instrumentation():
                response = client.get(base + "/orders/1")
        server_spans = [s for s in cap.spans() if s.kind == SpanKind.SERVER]
    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_kid"  # our tokens name their key; the server lacks it
    assert len(server_spans) == 2
    assert len(response.history) == 1


async def test_async_client_and_token_reuse_per_audience():
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET):
        app, seen = flaky_app(failures=0)
        with serve_app(app) as base:
            auth = ServiceTokenAuth(CALLER, SERVICE, secret=SECRET)
            async with httpx.AsyncClient(auth=auth, timeout=5) as client:
                with suppress_http_instrumentation():
                    first = await client.post(base + "/charge", content=b"{}")
                    second = await client.post(base + "/charge", content=b"{}")
    assert first.status_code == second.status_code == 200
    assert seen[0]["jti"] == seen[1]["jti"]  # cached until shortly before expiry
    other = ServiceTokenAuth(CALLER, "inventory", minter=auth.minter)
    assert other.minter.token("inventory") != auth.minter.token(SERVICE)


def test_service_auth_from_settings_talks_to_a_peer():
    # One process plays both sides: the caller's settings mint for audience "orders-peer",
    # the server (same settings, so service name "billing") checks aud == its own name.
    with capture_telemetry(service_name=CALLER, jwt_secret=SECRET) as cap:
        with serve_app(build_app()) as base:
            auth = service_auth(CALLER)
            assert isinstance(auth, ServiceTokenAuth)
            assert auth.issuer == CALLER and auth.audience == CALLER
            with suppress_http_instrumentation():
                ok = httpx.get(base + "/orders/1", auth=auth, timeout=5)
                wrong = httpx.get(base + "/orders/1", auth=service_auth("somebody-else"), timeout=5)
        assert service_auth(CALLER).minter is auth.minter  # one minter (and token cache) per process
    assert ok.status_code == 200 and ok.json()["caller"] == CALLER
    assert wrong.status_code == 401 and wrong.json()["reason"] == "wrong_audience"
    assert SECRET not in cap.raw_log_text()


# ---------------------------------------------------------------- modes


def test_development_without_secret_refuses_to_start_unless_auth_is_explicitly_off():
    with capture_telemetry(service_name=SERVICE, environment="development"):
        with pytest.raises(ConfigError, match="SERVICE_JWT_SECRET: service auth is on and there is no key"):
            build_app()


@pytest.mark.parametrize(
    ("opt_out", "reason"),
    [
        ({"auth_enabled": False}, "SERVICE_AUTH_ENABLED=false"),
        ({"deployment_mode": "monolith"}, "DEPLOYMENT_MODE=monolith"),
    ],
)
def test_an_explicit_opt_out_disables_auth_loudly_and_says_so_everywhere(opt_out, reason):
    with capture_telemetry(service_name=SERVICE, environment="development", **opt_out) as cap:
        assert service_auth("anyone") is None
        app = build_app()
        with serve_app(app) as base:
            with suppress_http_instrumentation():
                response = httpx.get(base + "/orders/1", timeout=5)
                metrics = httpx.get(base + "/metrics", timeout=5).text
        warnings = [line for line in cap.log_lines() if "SERVICE AUTH IS DISABLED" in line["message"]]
        (dump,) = [line for line in cap.log_lines() if line["message"] == "otel-dist configured"]
    assert response.status_code == 200
    assert response.json()["caller"] == "anonymous" and response.json()["verified"] is False
    assert len(warnings) == 1 and warnings[0]["level"] == "WARNING" and reason in warnings[0]["message"]
    assert dump["config"]["auth_enabled"] is False
    assert re.search(r'^otel_dist_auth_enabled\{otel_dist_auth_mode="disabled"[^}]*\} 0\.0$', metrics, re.M), metrics


@pytest.mark.parametrize("environment", ["production", "prod-eu", "live", ""])
def test_without_a_key_a_protected_app_refuses_to_start_in_any_environment(environment):
    with capture_telemetry({"OTEL_SERVICE_NAME": SERVICE, "ENVIRONMENT": environment}):
        with pytest.raises(ConfigError, match="SERVICE_JWT_SECRET: service auth is on and there is no key"):
            build_app()


def test_short_secret_refused():
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        with capture_telemetry(service_name=SERVICE, jwt_secret="too-short-secret"):
            pass


def test_bad_private_key_refused_at_instrument_app_without_echoing_it():
    bogus = "-----BEGIN PRIVATE KEY-----\nnot-a-key-at-all\n-----END PRIVATE KEY-----"
    with capture_telemetry(service_name=SERVICE, jwt_algorithm="EdDSA", jwt_private_key=bogus):
        with pytest.raises(ConfigError) as err:
            build_app()
    assert "SERVICE_JWT_PRIVATE_KEY" in str(err.value)
    assert "not-a-key-at-all" not in str(err.value)


def test_caller_outside_allow_list_is_403():
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET, jwt_allowed_callers=("inventory",)) as cap:
        with serve_app(build_app()) as base:
            auth = ServiceTokenAuth(CALLER, SERVICE, secret=SECRET)
            with suppress_http_instrumentation():
                response = httpx.get(base + "/orders/1", auth=auth, timeout=5)
        (span,) = [s for s in cap.spans() if s.kind == SpanKind.SERVER]
        lines = [line for line in cap.log_lines() if line["logger"] == "otel_dist.auth"]
    assert response.status_code == 403  # not retried: only a 401 re-mints
    assert response.json() == {"error": "insufficient_scope", "reason": "caller_not_allowed"}
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    assert span.attributes["otel_dist.auth.result"] == "denied"
    assert span.attributes["otel_dist.auth.caller"] == CALLER
    assert span.attributes["otel_dist.auth.reason"] == "caller_not_allowed"
    assert len(lines) == 1 and lines[0]["message"] == "service request denied"
    assert cap.metric_value("otel_dist.auth.verifications", otel_dist__auth__result="denied") == 1


def test_instrument_app_auth_false_opts_out():
    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET):
        app = FastAPI()

        @app.get("/open")
        async def open_() -> dict[str, str]:
            return {"ok": "yes"}

        instrument_app(app, auth=False)
        with serve_app(app) as base:
            with suppress_http_instrumentation():
                assert httpx.get(base + "/open", timeout=5).status_code == 200
