"""A ConfigError at startup ends the process with one plain last line on stderr, on every launch path.

`ConfigError: VARIABLE: ...` and a non-zero exit: plain uvicorn (bootstrap at import),
`opentelemetry-instrument` (the configurator; upstream would log and serve unobserved),
and a FastAPI lifespan; under ``uvicorn --workers`` each worker prints the line and the supervisor
stops instead of restarting crashing workers forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "s" * 40


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SERVICE_", "ENVIRONMENT"))}
    clean.update(PYTHONPATH=str(ROOT), **env)
    # --port 0: if the process wrongly got as far as serving, it would not exit and the timeout fails the test.
    return subprocess.run(argv, env=clean, cwd=str(ROOT), capture_output=True, text=True, timeout=120)


def uvicorn(app: str, wrapper: bool = False) -> list[str]:
    argv = [str(BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", "0"]
    return [str(BIN / "opentelemetry-instrument"), *argv] if wrapper else argv


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            uvicorn("tests.apps.hello_main:app"),
            {"OTEL_SERVICE_NAME": "hello", "OTEL_BSP_MAX_QUEUE_SIZE": "lots"},
            "ConfigError: OTEL_BSP_MAX_QUEUE_SIZE: invalid value 'lots'; accepted: an integer, 1 to 1000000",
        ),
        (
            uvicorn("tests.apps.bare_main:app", wrapper=True),
            {"OTEL_SERVICE_NAME": "bare", "OTEL_TRACES_SAMPLER": "sometimes"},
            "ConfigError: OTEL_TRACES_SAMPLER: invalid value 'sometimes'; accepted: always_on, always_off",
        ),
        (
            uvicorn("tests.apps.hello_main:app", wrapper=True),
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_SERVICE_NAME": "hello"},
            "ConfigError: OTEL_EXPORTER_OTLP_PROTOCOL: invalid value 'http/json'; accepted: http/protobuf, grpc",
        ),
        (
            uvicorn("tests.reliability.apps.svc:app", wrapper=True),  # an app that checks service tokens
            {"SERVICE_JWT_SECRET": SECRET},
            "ConfigError: OTEL_SERVICE_NAME: required when service auth is on",
        ),
        (
            uvicorn("tests.apps.lifespan_error:app"),
            {"OTEL_SERVICE_NAME": "lifespan"},
            "ConfigError: client_max_retries= argument: invalid value 'many'; accepted: an integer, 0 to 20",
        ),
        (
            uvicorn("tests.apps.lifespan_error:app", wrapper=True),
            {"OTEL_SERVICE_NAME": "lifespan"},
            "ConfigError: client_max_retries= argument: invalid value 'many'; accepted: an integer, 0 to 20",
        ),
    ],
    ids=[
        "bootstrap",
        "wrapper",
        "wrapper-bootstrapping-app",
        "wrapper-auth-no-service-name",
        "lifespan",
        "wrapper-lifespan",
    ],
)
def test_a_config_error_at_startup_is_the_last_stderr_line_and_the_exit_is_non_zero(argv, env, expected):
    result = run(argv, **env)
    assert result.returncode != 0, result.stderr[-2000:]
    assert last_line(result).startswith(expected), result.stderr[-3000:]
    if "lifespan" not in argv[-5]:
        # One plain line, not a stack trace.  (A lifespan failure is logged by uvicorn itself
        # first: under the wrapper its log goes to stderr, before our line.)
        assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "Application startup complete" not in result.stdout + result.stderr  # never served


BSP = "ConfigError: OTEL_BSP_MAX_QUEUE_SIZE: invalid value 'lots'; accepted: an integer, 1 to 1000000"
RETRIES = "ConfigError: client_max_retries= argument: invalid value 'many'; accepted: an integer, 0 to 20"


@pytest.mark.parametrize(
    ("app", "env", "expected"),
    [
        ("tests.apps.hello_main:app", {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, BSP),
        ("tests.apps.lifespan_error:app", {}, RETRIES),
    ],
    ids=["bootstrap", "lifespan"],
)
def test_uvicorn_workers_stop_on_a_config_error_instead_of_restarting_forever(app, env, expected):
    # Without otel-dist's worker exit, the supervisor restarts crashing workers until the timeout.
    result = run([*uvicorn(app), "--workers", "2"], OTEL_SERVICE_NAME="hello", **env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ConfigError: ")]
    assert 1 <= len(errors) <= 2 and set(errors) == {expected}, result.stderr[-3000:]  # once per worker at most
    assert "failed to start, stopping the parent process" in result.stderr
    assert " died" not in result.stderr  # no restarts
    if "lifespan" not in app:  # (a lifespan failure is logged by uvicorn itself, traceback included)
        assert "Traceback" not in result.stderr
    # uvicorn's parent exits 0 after stopping its workers (its own choice); the workers exited with 3.
    assert "Application startup complete" not in result.stdout + result.stderr
