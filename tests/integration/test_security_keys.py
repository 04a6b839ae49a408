"""Keys and production rules on real servers: keygen, https-only JWKS, the refresh floor, docs off in production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from otel_dist import ConfigError, ServiceTokenAuth, create_app, load_settings
from otel_dist._auth import jwks_document, load_private_key
from otel_dist.testing import capture_telemetry, register_secret, serve_app

from .test_auth_support import SECRET, build_app

BIN = Path(sys.executable).parent


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value.strip('"')
    return env


def test_keygen_makes_a_working_per_caller_key_in_one_command(tmp_path):
    out = tmp_path / "billing.env"
    run = subprocess.run(
        [str(BIN / "otel-dist"), "keygen", "--service", "billing", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "PRIVATE KEY" not in run.stdout  # written to the file, not to the terminal
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    env = read_env_file(out)
    register_secret(env["SERVICE_JWT_PRIVATE_KEY"])
    billing = load_settings({**env, "ENVIRONMENT": "test", "OTEL_SERVICE_NAME": "billing"})
    assert billing.jwt_algorithm == "EdDSA" and billing.jwt_private_key
    key = load_private_key(billing.jwt_private_key, "EdDSA")
    jwks = tmp_path / "billing.jwks.json"
    jwks.write_text(json.dumps(jwks_document([key.verification_key()])))
    # orders trusts billing's public key for the name "billing" only.
    with capture_telemetry(service_name="orders", jwt_algorithm="EdDSA", jwt_jwks_urls=(("billing", str(jwks)),)):
        with serve_app(build_app()) as base:
            auth = ServiceTokenAuth("billing", "orders", private_key=billing.jwt_private_key, algorithm="EdDSA")
            ok = httpx.get(base + "/orders/1", auth=auth, timeout=30)
            # The same key cannot speak for another service: its tokens verify only as billing.
            forged = ServiceTokenAuth("gateway", "orders", private_key=billing.jwt_private_key, algorithm="EdDSA")
            refused = httpx.get(base + "/orders/1", auth=forged, timeout=30)
    assert ok.status_code == 200 and ok.json()["caller"] == "billing"
    assert refused.status_code == 401 and refused.json()["reason"] == "wrong_issuer"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SERVICE_JWT_JWKS_URLS": "billing=http://keys.internal/jwks.json?api_key=jwks-api-key-1"}, "plain http"),
        (
            {"SERVICE_JWT_JWKS_URLS": "billing=https://keys.internal/jwks.json", "SERVICE_JWT_JWKS_MIN_REFRESH": "0"},
            "MIN_REFRESH",
        ),
    ],
)
def test_production_refuses_plain_http_jwks_and_a_zero_refresh_floor(env, named, tmp_path):
    full = {
        "ENVIRONMENT": "prod-eu",
        "SERVICE_JWT_SECRET": SECRET,
        "SERVICE_JWT_ALLOWED_ALGORITHMS": "HS256,EdDSA",
        **env,
    }
    with pytest.raises(ConfigError, match=named) as error:
        load_settings(full)
    assert "jwks-api-key-1" not in str(error.value)
    argv = [sys.executable, "-m", "uvicorn", "tests.reliability.apps.svc:app", "--port", "0"]
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "ENVIRONMENT", "OTEL_"))}
    run = subprocess.run(argv, env={**proc_env, **full}, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "ConfigError: SERVICE_JWT_JWKS" in run.stderr + run.stdout
    assert "jwks-api-key-1" not in run.stderr + run.stdout
    assert load_settings({**full, "ENVIRONMENT": "dev"}).jwt_jwks_urls  # development may use http


@pytest.mark.parametrize(
    ("environment", "docs", "expected"),
    [
        ("production", None, (401, 404)),
        ("staging", None, (401, 404)),
        ("production", True, (200, 200)),
        ("dev", None, (200, 200)),
    ],
)
def test_api_docs_are_not_public_in_production_unless_configured(environment, docs, expected):
    """(internal service, public edge): a token is needed inside, and the routes are gone either way."""
    overrides = {"environment": environment, "jwt_secret": SECRET}
    if docs is not None:
        overrides["api_docs_public"] = docs
    with capture_telemetry(service_name="docs", **overrides):
        internal = create_app("docs")
        edge = create_app("docs-edge", public=True)
        with serve_app(internal) as inside, serve_app(edge) as outside:
            statuses = {
                (base, path): httpx.get(base + path, timeout=30).status_code
                for base in (inside, outside)
                for path in ("/docs", "/redoc", "/openapi.json")
            }
    inside_statuses = {status for (base, _), status in statuses.items() if base == inside}
    outside_statuses = {status for (base, _), status in statuses.items() if base == outside}
    assert (inside_statuses, outside_statuses) == ({expected[0]}, {expected[1]}), statuses


def test_the_optional_replay_cache_refuses_a_second_use_of_a_token():
    from otel_dist import TokenMinter
    from otel_dist._auth import hmac_key

    from .test_auth_support import CALLER, SERVICE

    with capture_telemetry(service_name=SERVICE, jwt_secret=SECRET, jwt_replay_cache_size=1000):
        with serve_app(build_app()) as base:
            token = TokenMinter(CALLER, hmac_key(SECRET)).mint(SERVICE)
            first = httpx.get(base + "/orders/1", headers={"authorization": f"Bearer {token}"}, timeout=30)
            replay = httpx.get(base + "/orders/1", headers={"authorization": f"Bearer {token}"}, timeout=30)
            # A caller configured for it (SERVICE_JWT_TOKEN_PER_REQUEST=true) sends a new token every time.
            caller = load_settings(
                {"ENVIRONMENT": "test"}, service_name=CALLER, jwt_secret=SECRET, jwt_token_per_request=True
            )
            from otel_dist import service_auth

            auth = service_auth(SERVICE, settings=caller)
            with httpx.Client(auth=auth, timeout=30) as client:
                fresh = [client.get(base + f"/orders/{i}").status_code for i in range(3)]
    assert first.status_code == 200
    assert replay.status_code == 401 and replay.json()["reason"] == "replayed"
    assert fresh == [200, 200, 200]


def test_replay_cache_is_bounded():
    from otel_dist._auth._verify import ReplayCache

    cache = ReplayCache(100)
    for i in range(1000):
        assert cache.first_use(f"jti-{i}", expires_at=1e12, now=0.0)
    assert len(cache) == 100
    assert not cache.first_use("jti-999", expires_at=1e12, now=0.0)  # recent ones are remembered
