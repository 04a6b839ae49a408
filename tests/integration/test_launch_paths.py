"""`opentelemetry-instrument uvicorn ...` and plain `uvicorn ...` run the same configuration."""

import json
import os
import secrets
import sys
import time
from pathlib import Path

import httpx
import pytest

from otel_dist.testing import free_port, register_secret, run_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def launch(tmp_path, wrapper: bool):
    port = free_port()
    argv = [str(BIN / "uvicorn"), "tests.apps.hello_main:app", "--host", "127.0.0.1", "--port", str(port)]
    if wrapper:
        argv = [str(BIN / "opentelemetry-instrument"), *argv]
    env = {
        "OTEL_SERVICE_NAME": "hello",
        "ENVIRONMENT": "test",
        "SERVICE_AUTH_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return run_server(
        argv, port=port, env=env, log_path=str(tmp_path / f"{wrapper}.log"), cwd=str(ROOT), ready_path="/metrics"
    )


def drive(proc):
    assert httpx.get(proc.url + "/hello/ada").status_code == 200
    return httpx.get(proc.url + "/metrics").text


@pytest.mark.parametrize("wrapper", [False, True], ids=["uvicorn", "opentelemetry-instrument"])
def test_both_launch_paths_emit_the_same_telemetry(tmp_path, wrapper):
    with launch(tmp_path, wrapper) as proc:
        metrics = drive(proc)
        lines = proc.json_lines()
    hello = [entry for entry in lines if entry.get("message") == "saying hello"]
    assert len(hello) == 1, proc.output()[-2000:]
    assert set(hello[0]) == {
        "timestamp",
        "level",
        "logger",
        "message",
        "trace_id",
        "span_id",
        "trace_flags",
        "service.name",
        "deployment.environment.name",
        "who",
    }
    assert hello[0]["service.name"] == "hello" and hello[0]["deployment.environment.name"] == "test"
    access = [entry for entry in lines if entry.get("logger") == "otel_dist.access"]
    assert [a["trace_id"] for a in access] == [hello[0]["trace_id"]]
    # Exactly one server-side duration series for the route, owned by otel-dist's layer:
    # neither FastAPI's native telemetry nor the contrib instrumentor doubled it.
    counts = [m for m in metrics.splitlines() if m.startswith("http_server_request_duration_seconds_count")]
    assert len(counts) == 1 and 'http_route="/hello/{name}"' in counts[0] and counts[0].endswith(" 1.0")
    assert 'otel_scope_name="otel_dist.server"' in counts[0]
    assert "http_server_duration" not in metrics  # contrib's old-semconv histogram
    configured = [entry for entry in lines if entry.get("message") == "otel-dist configured"]
    assert len(configured) == 1
    # A healthy start logs no error: not even the wrapper's "sqlalchemy ... falls outside of that range"
    # (SQLAlchemy 2.1 is past the contrib's declared range; otel-dist traces each engine itself).
    assert [entry["message"] for entry in lines if entry.get("level") in ("ERROR", "CRITICAL")] == []


@pytest.mark.parametrize("wrapper", [False, True], ids=["uvicorn", "opentelemetry-instrument"])
def test_no_plain_uvicorn_access_or_traceback_lines_on_either_launch_path(tmp_path, wrapper):
    """uvicorn's own access line carries the raw query (?access_token=...); its tracebacks are plain text."""
    token = "tok-" + secrets.token_urlsafe(24)
    register_secret(token)
    with launch(tmp_path, wrapper) as proc:
        assert httpx.get(f"{proc.url}/hello/ada?access_token={token}").status_code == 200
        assert httpx.get(f"{proc.url}/boom").status_code == 500
        deadline = time.monotonic() + 30
        while not any(e.get("logger") == "uvicorn.error" and e.get("level") == "ERROR" for e in proc.json_lines()):
            assert time.monotonic() < deadline, proc.output()[-3000:]
            time.sleep(0.1)
        output = proc.output()
        lines = proc.json_lines()
    assert token not in output
    assert "GET /hello/ada" not in " ".join(line for line in output.splitlines() if not line.startswith("{"))
    assert not [line for line in output.splitlines() if line.startswith(("Traceback", "  File ", "RuntimeError"))]
    (error,) = [e for e in lines if e.get("logger") == "uvicorn.error" and e.get("level") == "ERROR"]
    assert "RuntimeError: boom" in json.dumps(error)


def test_wrapper_instruments_an_app_that_never_imports_otel_dist(tmp_path):
    port = free_port()
    argv = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"),
        "tests.apps.bare_main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {"OTEL_SERVICE_NAME": "bare", "PYTHONPATH": str(ROOT)}
    with run_server(
        argv, port=port, env=env, log_path=str(tmp_path / "bare.log"), cwd=str(ROOT), ready_path="/items/0"
    ) as proc:
        httpx.get(proc.url + "/items/42")
        # The access line is written after the response is sent: wait for it (generous, for a loaded machine).
        deadline = time.monotonic() + 20
        while True:
            lines = proc.json_lines()
            access = [e for e in lines if e.get("logger") == "otel_dist.access" and e.get("url.path") == "/items/42"]
            if access or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(access) == 1 and access[0]["http.route"] == "/items/{item_id}"
    app_lines = [e for e in lines if e.get("message") == "looked up item"]
    assert len(app_lines) == 2  # the readiness probe's request and ours
    assert app_lines[-1]["trace_id"] == access[0]["trace_id"] and app_lines[-1]["service.name"] == "bare"


def test_each_uvicorn_worker_is_its_own_instance(tmp_path):
    port = free_port()
    argv = [
        str(BIN / "uvicorn"),
        "tests.apps.hello_main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    with run_server(
        argv,
        port=port,
        env={"PYTHONPATH": str(ROOT)},
        log_path=str(tmp_path / "w.log"),
        cwd=str(ROOT),
        ready_path="/metrics",
    ) as proc:
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            configured = [e for e in proc.json_lines() if e.get("message") == "otel-dist configured"]
            if len(configured) >= 2:
                break
            time.sleep(0.1)
    assert len(configured) == 2, proc.output()[-2000:]
    assert len({e["service.instance.id"] for e in configured}) == 2
    assert len({e["process.pid"] for e in configured}) == 2
