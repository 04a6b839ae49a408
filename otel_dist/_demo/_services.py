"""Starting and stopping the demo's three services, and where their telemetry goes.

Finds the example services and the local collector stack of the source checkout, builds the
services' environment (OTLP destination, shared service secret, breaker settings), starts
auth, orders and gateway as processes on free ports and waits for ``/health``, stops them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ._model import SERVICES, DemoError, Service, _DemoState
from ._sink import SpanSink

DEMO_METRIC_EXPORT_INTERVAL_MS = 2000


class _Processes(_DemoState):
    """The demo's services: their environment, starting them."""

    def _environment(self, root: Path) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("DATABASE_URL", "OTEL_SERVICE_NAME", "JWT_SECRET_KEY", "SERVICE_JWT_PRIVATE_KEY"):
            env.pop(key, None)
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        stack = _collector_stack()
        if stack is not None:
            self.collector = stack
        if endpoint:
            self.destination = f"OTLP endpoint {endpoint} (OTEL_EXPORTER_OTLP_ENDPOINT)"
        elif stack is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = stack["otlp_http"]
            if not env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip():
                # The default push (60 s) would show a short run only at its final flush: no breaker or
                # pending alert in Prometheus while it happens.
                env["OTEL_METRIC_EXPORT_INTERVAL"] = str(DEMO_METRIC_EXPORT_INTERVAL_MS)
                self.say(
                    f"the services push metrics to the stack every {DEMO_METRIC_EXPORT_INTERVAL_MS / 1000:g} s "
                    "(OTEL_METRIC_EXPORT_INTERVAL, 60 s by default) so the breaker and the pending alert show live"
                )
            if stack.get("topology", "single") == "single":  # the tiered stack has no sink
                self.stack_traces = Path(stack["sink_dir"]) / "traces.jsonl"
            self.destination = f"the local collector stack at {stack['otlp_http']}"
        else:
            self.sink = SpanSink()
            self._sink_cm = self.sink.serve()
            sink_url = self._sink_cm.__enter__()
            env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=sink_url,
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="prometheus",
                OTEL_LOGS_EXPORTER="none",
            )
            self.destination = f"the demo itself (an OTLP span sink at {sink_url}; no endpoint configured)"
        breaker_timeout = max(0.5, min(3.0, self.options.duration / 10))
        env.update(
            ENVIRONMENT="demo",
            PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")])),
            SERVICE_JWT_SECRET=self.secret,
            SERVICE_JWT_ALGORITHM="HS256",
            SERVICE_AUTH_ENABLED="true",
            SERVICE_JWT_ALLOWED_CALLERS="",
            FAULT_INJECTION_ERROR_RATE="0",
            FAULT_INJECTION_LATENCY_MS="0",
            SERVICE_CLIENT_MAX_RETRIES="1",
            SERVICE_CLIENT_MAX_BACKOFF="0.1",
            SERVICE_CLIENT_TIMEOUT="5",
            SERVICE_CLIENT_ATTEMPT_TIMEOUT="2",
            CIRCUIT_BREAKER_FAILURE_THRESHOLD="5",
            CIRCUIT_BREAKER_SUCCESS_THRESHOLD="2",
            CIRCUIT_BREAKER_TIMEOUT=f"{breaker_timeout:g}",
            OTEL_BSP_SCHEDULE_DELAY="300",
            # All the demo's simulated users come from one address and log in often.
            LOGIN_RATE_LIMIT_PER_CLIENT="0",
            LOGIN_RATE_LIMIT_PER_USERNAME="600/60",
        )
        return env

    def _start_services(self, env: dict[str, str], root: Path) -> None:
        from ..testing import free_port

        ports = {name: free_port() for name in SERVICES}
        env["AUTH_SERVICE_URL"] = f"http://127.0.0.1:{ports['auth']}"
        env["ORDERS_SERVICE_URL"] = f"http://127.0.0.1:{ports['orders']}"
        wrapper = Path(sys.executable).parent / "opentelemetry-instrument"
        for name in SERVICES:
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                f"services.{name}.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports[name]),
            ]
            launcher = "uvicorn; the app calls bootstrap()"
            if name == "gateway" and wrapper.exists():
                argv = [str(wrapper), *argv]
                launcher = "opentelemetry-instrument uvicorn"
            own = dict(env, OTEL_SERVICE_NAME=name)
            if name != "gateway":
                own["DATABASE_URL"] = f"sqlite+aiosqlite:///{self.run_dir / f'{name}.db'}"
            if name == "auth":
                own["USER_JWT_SECRET"] = secrets.token_urlsafe(48)
            service = Service(name, ports[name], self.run_dir / f"{name}.log", argv, launcher=launcher)
            with open(service.log_path, "wb") as log:
                # Own session: Ctrl-C reaches the demo only, which then stops the services in order.
                service.proc = subprocess.Popen(
                    argv, env=own, cwd=self.run_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.services[name] = service
        self.say(f"starting auth, orders and gateway (run folder {self.run_dir}) ...")
        deadline = time.monotonic() + 60
        pending = dict(self.services)
        while pending:
            for name, service in list(pending.items()):
                assert service.proc is not None
                if service.proc.poll() is not None:
                    raise DemoError(
                        f"{name} exited with code {service.proc.returncode}; its log ({service.log_path}) ends with:\n"
                        + _tail(service.log_path)
                    )
                try:
                    if httpx.get(service.url + "/health", timeout=1.0).status_code == 200:
                        del pending[name]
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise DemoError(f"{', '.join(pending)} did not answer /health within 60 s")
            time.sleep(0.1)
        for service in self.services.values():
            self.say(f"  {service.name:<8} {service.url:<24} {service.launcher}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_all(services: list[Service], timeout: float = 10.0) -> list[str]:
    stopped = []
    for service in services:
        proc = service.proc
        if proc is None or proc.poll() is not None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        stopped.append(service.name)
    deadline = time.monotonic() + timeout
    for service in services:
        proc = service.proc
        if proc is None:
            continue
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return stopped


def source_root() -> Path:
    """The source checkout otel-dist runs from (editable install / clone)."""
    return Path(__file__).resolve().parents[2]


def _services_root() -> Path:
    root = source_root()
    if (root / "services" / "gateway" / "app.py").exists():
        return root
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("services.gateway.app")
        if spec is not None and spec.origin:
            return Path(spec.origin).resolve().parents[2]
    raise DemoError(
        "the example services (services/auth, services/orders, services/gateway) come with the source "
        "checkout: clone the repository and run `.venv/bin/otel-dist demo` there (see docs/tutorial/getting-started.md)"
    )


def _collector_stack() -> dict[str, str] | None:
    """The running local collector stack's URLs (collector/stack.py state), or None."""
    module = load_stack_module()
    if module is None:
        return None
    try:
        stack = module.stack_status()
    except Exception:  # noqa: BLE001 - a broken state file only means "no stack"
        return None
    if stack is None:
        return None
    return {**stack.urls, "sink_dir": str(stack.sink_dir), "topology": getattr(stack, "topology", "single")}


def load_stack_module() -> Any:
    """collector/stack.py of the source checkout, imported by path (it is not part of the package)."""
    path = source_root() / "collector" / "stack.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("otel_dist_collector_stack", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module
