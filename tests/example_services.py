"""Start the three example services (auth, orders, gateway) as real processes on loopback.

Shared by the integration and end-to-end suites: fresh ports, a SQLite database each in `tmp`,
orders under ``opentelemetry-instrument`` (the zero-code launch path, on the service with a
database and a client) and the others under plain uvicorn, started together and waited for together.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import httpx

from otel_dist import load_settings, service_auth
from otel_dist.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICES = ("auth", "orders", "gateway")
# Settings a developer's shell may carry; the services get only what the test gives them.
_CLEAN_PREFIXES = ("OTEL_", "SERVICE_", "JWT_", "CIRCUIT_", "FAULT_", "DATABASE_", "ENVIRONMENT", "LOG_LEVEL", "USER_")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN_PREFIXES)}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def caller_auth(target: str, secret: str, caller: str = "tests") -> httpx.Auth:
    """A service token for `target`, as a test 'service' named `caller` sharing the services' secret."""
    auth = service_auth(target, settings=load_settings({"ENVIRONMENT": "test"}, service_name=caller, jwt_secret=secret))
    assert auth is not None
    return auth


def start_example_services(
    tmp: Path, env: Mapping[str, str], cleanup: ExitStack, per_service: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, ServerProcess]:
    """auth, orders and gateway with `env` (plus their URLs, databases and a user-token secret);
    `per_service` adds settings for one service (e.g. its own OTLP endpoint)."""
    ports = {name: free_port() for name in SERVICES}
    common = {
        "ENVIRONMENT": "test",
        "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}",
        "ORDERS_SERVICE_URL": f"http://127.0.0.1:{ports['orders']}",
        **env,
    }
    procs: dict[str, ServerProcess] = {}
    for name in SERVICES:
        argv = [str(BIN / "uvicorn"), f"services.{name}.app:app", "--host", "127.0.0.1", "--port", str(ports[name])]
        if name == "orders":
            argv = [str(BIN / "opentelemetry-instrument"), *argv]
        process_env = clean_env(**{**common, **(per_service or {}).get(name, {})}, OTEL_SERVICE_NAME=name)
        if name != "gateway":
            (tmp / f"{name}-db").mkdir()
            process_env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp / f'{name}-db' / f'{name}.db'}"
        if name == "auth":
            process_env["USER_JWT_SECRET"] = secrets.token_urlsafe(48)
        proc = ServerProcess(argv, port=ports[name], env=process_env, log_path=str(tmp / f"{name}.log"), cwd=str(tmp))
        cleanup.callback(proc.stop)
        procs[name] = proc
    for proc in procs.values():
        proc.wait_ready("/health", timeout=60)
    return procs
