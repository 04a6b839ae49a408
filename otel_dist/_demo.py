"""``otel-dist demo``: three services, real traffic, a fault, a breaker that opens and heals.

What it does, in order:

1. finds the example services (``services/`` of the source checkout otel-dist runs from);
2. picks where telemetry goes: ``OTEL_EXPORTER_OTLP_ENDPOINT`` if set, else the local
   collector stack if ``otel-dist stack up`` is running, else a span sink inside this
   process (embedded default: nothing else needs to be installed);
3. starts auth, orders and gateway as separate processes on free loopback ports with one
   fresh service secret (auth and orders with plain uvicorn, whose app calls ``bootstrap()``;
   the gateway under ``opentelemetry-instrument``), each with its own SQLite file in a run
   folder, stdout (JSON log lines) in ``<run folder>/<service>.log``;
4. registers a few users, logs them in, and drives traffic through the gateway for
   ``--duration`` seconds, printing one progress line per second;
5. from 30 % to 60 % of the run, makes orders fail every request (``POST /_faults`` with a
   service token), so the gateway's breaker for orders opens, answers 503 at once, then
   probes and closes again once orders recovers;
6. prints a summary: requests and outcomes, one trace across the three services, the breaker
   transitions, where to look; then stops every process it started (also on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import importlib.util
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._auth import service_auth
from ._settings import load_settings

__all__ = ["DemoOptions", "SinkSpan", "SpanSink", "run_demo", "spans_from_otlp_json"]

SERVICES = ("auth", "orders", "gateway")
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}

# ----------------------------------------------------------------------------- span sink


@dataclass(frozen=True)
class SinkSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class SpanSink:
    """An OTLP/HTTP (protobuf) receiver that keeps the spans it is sent, for the demo and tests.

    ``POST /v1/traces`` is decoded (``ExportTraceServiceRequest``); metrics and logs are
    accepted and dropped.  Serve it with :meth:`serve` and point the services'
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the URL it yields.
    """

    def __init__(self, max_spans: int = 200_000) -> None:
        self._spans: list[SinkSpan] = []
        self._lock = threading.Lock()
        self._max = max_spans
        self.dropped = 0

    def spans(self, trace_id: str | None = None) -> list[SinkSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def add(self, body: bytes) -> int:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received: list[SinkSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", "unknown_service"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        SinkSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            kind=_KINDS.get(span.kind, str(span.kind)),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status=span.status.code,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            room = max(0, self._max - len(self._spans))
            self._spans.extend(received[:room])
            self.dropped += len(received) - min(room, len(received))
        return len(received)

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                self.add(body)
            except Exception as exc:  # noqa: BLE001 - a bad payload is the sender's 400, not our crash
                return Response(f"undecodable OTLP payload: {exc}", status_code=400)
            return Response(b"", media_type="application/x-protobuf")  # empty ExportTraceServiceResponse

        async def ignored(request: Request) -> Response:
            await request.body()
            return Response(b"", media_type="application/x-protobuf")

        return Starlette(
            routes=[
                Route("/v1/traces", traces, methods=["POST"]),
                Route("/v1/metrics", ignored, methods=["POST"]),
                Route("/v1/logs", ignored, methods=["POST"]),
            ]
        )

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run the sink on a free loopback port in a thread; yield its base URL."""
        from .testing import serve_app

        with serve_app(self.app()) as url:
            yield url


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [_value(v) for v in value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.values}
    return value


def span_tree(spans: list[SinkSpan]) -> list[tuple[int, SinkSpan]]:
    """(depth, span) in tree order, children by start time; orphans are shown as roots."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SinkSpan]] = {}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)
    out: list[tuple[int, SinkSpan]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x.start_ns):
            out.append((depth, s))
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return out


# ----------------------------------------------------------------------------- the demo


@dataclass
class DemoOptions:
    duration: float = 20.0
    rate: float = 15.0
    users: int = 3
    fault_window: tuple[float, float] = (0.3, 0.6)
    keep_running: bool = False
    run_dir: Path | None = None


@dataclass
class Outcome:
    at: float
    op: str
    status: int
    seconds: float
    error: str | None = None
    trace_id: str | None = None


@dataclass
class Service:
    name: str
    port: int
    log_path: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    launcher: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Traffic:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    fault_on_at: float | None = None
    fault_off_at: float | None = None


@dataclass
class DemoUser:
    credentials: dict[str, str]
    headers: dict[str, str]
    orders: list[int]


class DemoError(RuntimeError):
    pass


def run_demo(options: DemoOptions, write: Callable[[str], None] | None = None) -> int:
    """Run the demo; the exit code (0 ok, 1 failed, 130 interrupted)."""
    say = write or (lambda line: print(line, flush=True))
    demo = _Demo(options, say)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything the demo started")
        return 130
    except DemoError as exc:
        say(f"otel-dist demo: {exc}")
        return 1
    finally:
        demo.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


class _Demo:
    def __init__(self, options: DemoOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.services: dict[str, Service] = {}
        self.sink: SpanSink | None = None
        self._sink_cm: contextlib.AbstractContextManager[str] | None = None
        self.secret = secrets.token_urlsafe(48)
        self.run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="otel-dist-demo-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.destination = ""
        self.collector: dict[str, str] | None = None
        self.stack_traces: Path | None = None
        self._closed = False

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        opts = self.options
        root = _services_root()
        env = self._environment(root)
        self._start_services(env, root)
        self.say(
            f"otel-dist demo: {opts.duration:g} s of traffic through the gateway, "
            f"orders failing from {opts.fault_window[0] * opts.duration:.0f} s "
            f"to {opts.fault_window[1] * opts.duration:.0f} s"
        )
        traffic = asyncio.run(self._drive())
        example = self._example_trace(traffic)
        metrics = self._scrape_metrics()
        transitions = _breaker_transitions(self.services["gateway"].log_path, traffic.started)
        for line in self._summary(traffic, example, transitions, metrics):
            self.say(line)
        if opts.keep_running:
            self.say("\nservices keep running (--keep-running); press Ctrl-C to stop them")
            while all(s.proc is not None and s.proc.poll() is None for s in self.services.values()):
                time.sleep(0.5)
        ok = sum(1 for o in traffic.outcomes if o.status in (200, 201))
        return 0 if ok else 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stopped = _stop_all([s for s in reversed(self.services.values()) if s.proc is not None])
        if self._sink_cm is not None:
            self._sink_cm.__exit__(None, None, None)
        if stopped:
            self.say(f"stopped {', '.join(stopped)}; logs and databases stay in {self.run_dir}")

    # ------------------------------------------------------------------ processes

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
        )
        return env

    def _start_services(self, env: dict[str, str], root: Path) -> None:
        from .testing import free_port

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

    # ------------------------------------------------------------------ traffic

    async def _drive(self) -> Traffic:
        opts = self.options
        gateway = self.services["gateway"].url
        orders_url = self.services["orders"].url
        # The demo calls orders' admin route as a service of its own, with the shared secret.
        admin = service_auth("orders", settings=load_settings({}, service_name="demo", jwt_secret=self.secret))
        traffic = Traffic()
        rng = random.Random()
        async with httpx.AsyncClient(base_url=gateway, timeout=10.0) as client:
            users = await self._setup_users(client, opts.users)
            traffic.started = time.monotonic()
            end = traffic.started + opts.duration
            stop = asyncio.Event()

            async def worker(pace: float) -> None:
                next_at = time.monotonic() + rng.random() * pace
                while not stop.is_set():
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if time.monotonic() >= end:
                        return
                    next_at += pace
                    traffic.outcomes.append(await self._one_request(client, users, rng, traffic.started))

            async def faults() -> None:
                on_at = traffic.started + opts.fault_window[0] * opts.duration
                off_at = traffic.started + opts.fault_window[1] * opts.duration
                async with httpx.AsyncClient(base_url=orders_url, auth=admin, timeout=5.0) as orders:
                    await asyncio.sleep(max(0.0, on_at - time.monotonic()))
                    (await orders.post("/_faults", json={"error_rate": 1.0})).raise_for_status()
                    traffic.fault_on_at = time.monotonic() - traffic.started
                    await asyncio.sleep(max(0.0, off_at - time.monotonic()))
                    (await orders.post("/_faults", json={"error_rate": 0.0})).raise_for_status()
                    traffic.fault_off_at = time.monotonic() - traffic.started

            async def progress() -> None:
                seen = 0
                log_offset = 0
                state = "closed"
                while time.monotonic() < end:
                    await asyncio.sleep(1.0)
                    elapsed = time.monotonic() - traffic.started
                    batch = traffic.outcomes[seen:]
                    seen += len(batch)
                    found, log_offset = _read_transitions(self.services["gateway"].log_path, log_offset)
                    if found:
                        state = found[-1][2]
                    counts = _classify(traffic.outcomes)
                    fault = "FAILING" if traffic.fault_on_at is not None and traffic.fault_off_at is None else "ok"
                    self.say(
                        f"  {min(elapsed, opts.duration):5.1f}s  sent {len(traffic.outcomes):4d} "
                        f"(+{len(batch):3d})  ok {counts['ok']:4d}  4xx {counts['expected 4xx']:3d}  "
                        f"breaker-503 {counts['503 breaker open']:3d}  other-5xx {counts['other 5xx']:3d}  "
                        f"| orders {fault:<7} | gateway->orders breaker {state}"
                    )

            workers = max(1, min(8, round(opts.rate / 4)))
            pace = workers / max(opts.rate, 0.1)
            tasks = [asyncio.create_task(worker(pace)) for _ in range(workers)]
            tasks.append(asyncio.create_task(faults()))
            tasks.append(asyncio.create_task(progress()))
            try:
                await asyncio.gather(*tasks)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return traffic

    async def _setup_users(self, client: httpx.AsyncClient, count: int) -> list[DemoUser]:
        users: list[DemoUser] = []
        tag = secrets.token_hex(3)
        for i in range(count):
            credentials = {"username": f"demo-{tag}-{i}", "password": secrets.token_urlsafe(12)}
            response = await client.post("/register", json=credentials)
            if response.status_code != 201:
                raise DemoError(f"registering a user failed: {response.status_code} {response.text[:200]}")
            login = await client.post("/login", json=credentials)
            if login.status_code != 200:
                raise DemoError(f"logging in failed: {login.status_code} {login.text[:200]}")
            token = login.json()["access_token"]
            user = DemoUser(credentials, {"authorization": f"Bearer {token}"}, [])
            created = await client.post("/orders", json={"item": "welcome kit", "quantity": 1}, headers=user.headers)
            if created.status_code != 201:
                raise DemoError(f"creating an order failed: {created.status_code} {created.text[:200]}")
            user.orders.append(created.json()["id"])
            users.append(user)
        return users

    async def _one_request(
        self, client: httpx.AsyncClient, users: list[DemoUser], rng: random.Random, started: float
    ) -> Outcome:
        user = rng.choice(users)
        roll = rng.random()
        if roll < 0.65:
            op, method, path = "read order", "GET", f"/orders/{rng.choice(user.orders)}"
            kwargs: dict[str, Any] = {"headers": user.headers}
        elif roll < 0.85:
            op, method, path = "create order", "POST", "/orders"
            item = rng.choice(["book", "lamp", "mug", "chair", "pen", "plant"])
            kwargs = {"headers": user.headers, "json": {"item": item, "quantity": rng.randint(1, 5)}}
        elif roll < 0.90:
            other = [u for u in users if u is not user] or [user]
            op, method, path = "read other's order", "GET", f"/orders/{rng.choice(rng.choice(other).orders)}"
            kwargs = {"headers": user.headers}
        elif roll < 0.95:
            op, method, path = "bad token", "GET", f"/orders/{rng.choice(user.orders)}"
            kwargs = {"headers": {"authorization": "Bearer not-a-token"}}
        else:
            op, method, path = "login", "POST", "/login"
            kwargs = {"json": user.credentials}
        t0 = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Outcome(t0 - started, op, 0, time.monotonic() - t0, error=type(exc).__name__)
        seconds = time.monotonic() - t0
        trace_id = _trace_id(response.headers.get("traceresponse"))
        error = None
        if response.status_code == 503:
            with contextlib.suppress(ValueError):
                error = response.json().get("error")
        if op == "create order" and response.status_code == 201:
            user.orders.append(response.json()["id"])
        return Outcome(t0 - started, op, response.status_code, seconds, error, trace_id)

    # ------------------------------------------------------------------ results

    def _example_trace(self, traffic: Traffic) -> dict[str, Any] | None:
        reads = [o for o in traffic.outcomes if o.op == "read order" and o.status == 200 and o.trace_id]
        if not reads:
            return None
        # The last successful read: after the breaker healed, all three services answered it.
        trace_id = reads[-1].trace_id
        assert trace_id is not None
        sink, stack_traces = self.sink, self.stack_traces
        fetch: Callable[[], list[SinkSpan]] | None = None
        if sink is not None:
            fetch = functools.partial(sink.spans, trace_id)
        elif stack_traces is not None:  # what the collector exported, as OTLP-JSON lines
            fetch = functools.partial(spans_from_otlp_json, stack_traces, trace_id)
        if fetch is not None:
            spans: list[SinkSpan] = []
            deadline = time.monotonic() + (5 if sink is not None else 10)
            while time.monotonic() < deadline:
                spans = fetch()
                if {s.service for s in spans if s.kind == "SERVER"} >= set(SERVICES) and any(
                    s.parent_span_id is None for s in spans
                ):
                    time.sleep(0.5)  # the last batch of the slowest service
                    spans = fetch()
                    break
                time.sleep(0.2)
            if spans:
                return {"trace_id": trace_id, "spans": spans}
        # Exported elsewhere: the services crossed are in each service's JSON log lines.
        time.sleep(0.3)
        crossed = [
            name
            for name in ("gateway", "auth", "orders")
            if trace_id in self.services[name].log_path.read_text(errors="replace")
        ]
        return {"trace_id": trace_id, "services": crossed}

    def _scrape_metrics(self) -> dict[str, float]:
        wanted = {
            "gateway": ("http_server_request_duration_seconds_count", "otel_dist_circuit_breaker_transitions_total"),
            "orders": ("db_client_operation_duration_seconds_count", "http_server_request_duration_seconds_count"),
            "auth": ("db_client_operation_duration_seconds_count", "http_server_request_duration_seconds_count"),
        }
        values: dict[str, float] = {}
        for name, metric_names in wanted.items():
            try:
                text = httpx.get(self.services[name].url + "/metrics", timeout=3.0).text
            except httpx.HTTPError:
                continue
            for metric in metric_names:
                total = 0.0
                for line in text.splitlines():
                    if line.startswith(metric + "{") or line.startswith(metric + " "):
                        with contextlib.suppress(ValueError):
                            total += float(line.rsplit(" ", 1)[1])
                values[f"{name}:{metric}"] = total
        return values

    def _summary(
        self,
        traffic: Traffic,
        example: dict[str, Any] | None,
        transitions: list[tuple[float, str, str]],
        metrics: dict[str, float],
    ) -> list[str]:
        opts = self.options
        out = traffic.outcomes
        counts = _classify(out)
        lines = ["", "=" * 78, "otel-dist demo summary", "=" * 78]
        lines.append(
            f"Requests through the gateway: {len(out)} in {opts.duration:g} s ({len(out) / opts.duration:.1f}/s)"
        )
        by_op = Counter(o.op for o in out)
        lines.append("  by kind:    " + ", ".join(f"{op} {n}" for op, n in by_op.most_common()))
        by_status = Counter(o.status for o in out)
        lines.append(
            "  by status:  " + ", ".join(f"{status or 'no answer'} x{n}" for status, n in sorted(by_status.items()))
        )
        breaker_fast = [o.seconds for o in out if o.error == "dependency_unavailable"]
        explanations = {
            "ok": "200/201",
            "expected 4xx": "401 bad token, 404 someone else's order",
            "503 breaker open": (
                f"median {statistics.median(breaker_fast) * 1000:.0f} ms, orders not called: its breaker was open"
                if breaker_fast
                else "orders' breaker was open"
            ),
            "other 5xx": "orders' injected 503s, before the breaker opened",
            "transport error": "no answer from the gateway",
        }
        for key, text in explanations.items():
            lines.append(f"  {key:<18} {counts[key]:5d}   {text}")
        if traffic.fault_on_at is not None:
            off = f"{traffic.fault_off_at:.1f} s" if traffic.fault_off_at is not None else "the end"
            lines.append(
                f"Fault phase: orders answered 503 to every request from {traffic.fault_on_at:.1f} s to {off} "
                "(POST /_faults error_rate=1.0)"
            )
        if transitions:
            seen = ", ".join(f"{a} -> {b} at {t:.1f} s" for t, a, b in transitions)
            lines.append(f"Breaker gateway -> orders: {seen}")
        else:
            lines.append("Breaker gateway -> orders: no transition seen")
        lines.append("")
        lines.extend(self._trace_lines(example))
        lines.append("")
        lines.append("Where to look:")
        for name, service in self.services.items():
            lines.append(f"  {name:<8} metrics {service.url}/metrics   JSON logs {service.log_path}")
        if example is not None:
            lines.append(
                f"  one request's log lines in every service:  grep {example['trace_id']} {self.run_dir}/*.log"
            )
        if metrics:
            lines.append(
                "  at the end: gateway served {:.0f} requests and saw {:.0f} breaker transitions; "
                "orders ran {:.0f} and auth {:.0f} database operations".format(
                    metrics.get("gateway:http_server_request_duration_seconds_count", 0),
                    metrics.get("gateway:otel_dist_circuit_breaker_transitions_total", 0),
                    metrics.get("orders:db_client_operation_duration_seconds_count", 0),
                    metrics.get("auth:db_client_operation_duration_seconds_count", 0),
                )
            )
        lines.append(f"  traces went to {self.destination}")
        if self.collector is not None:
            lines.append(
                f"  collector stack: Prometheus {self.collector.get('prometheus', '?')}, "
                f"OTLP {self.collector.get('otlp_http', '?')}"
            )
        else:
            lines.append("  collector stack: not running (`otel-dist stack up` starts the collector and Prometheus)")
        if not opts.keep_running:
            lines.append("  (the services stop now; --keep-running leaves them up to browse /metrics)")
        return lines

    def _trace_lines(self, example: dict[str, Any] | None) -> list[str]:
        if example is None:
            return ["Example trace: none (no order read succeeded)"]
        trace_id = example["trace_id"]
        if "services" in example:
            crossed = ", ".join(example["services"]) or "?"
            return [
                f"Example trace {trace_id} (GET /orders/{{order_id}} at the gateway): services {crossed} "
                "(their JSON log lines carry this trace_id)"
            ]
        spans: list[SinkSpan] = example["spans"]
        crossed_order: list[str] = []
        for _, span in span_tree(spans):
            if span.kind == "SERVER" and span.service not in crossed_order:
                crossed_order.append(span.service)
        lines = [
            f"Example trace {trace_id}: GET /orders/{{order_id}} at the gateway, "
            f"{len(spans)} spans from {len(crossed_order)} services ({', '.join(crossed_order)}):"
        ]
        for depth, span in span_tree(spans):
            label = f"{'  ' * depth}{span.service:<8} {span.kind:<8} {_short_name(span)}"
            lines.append(f"  {label[:64]:<64} {span.duration_ms:7.1f} ms")
        return lines


# ----------------------------------------------------------------------------- helpers


def _short_name(span: SinkSpan) -> str:
    """SQLite statement spans are named "SELECT /full/path/orders.db": show the file name only."""
    verb, _, target = span.name.partition(" ")
    return f"{verb} {Path(target).name}" if "db.system.name" in span.attributes and "/" in target else span.name


def _classify(outcomes: list[Outcome]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for o in outcomes:
        if o.status in (200, 201):
            counts["ok"] += 1
        elif o.status == 0:
            counts["transport error"] += 1
        elif o.error == "dependency_unavailable":
            counts["503 breaker open"] += 1
        elif o.status >= 500:
            counts["other 5xx"] += 1
        else:
            counts["expected 4xx"] += 1
    return counts


def _trace_id(traceresponse: str | None) -> str | None:
    parts = (traceresponse or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _read_transitions(path: Path, offset: int) -> tuple[list[tuple[float, str, str]], int]:
    """Breaker transitions logged (JSON lines) after byte `offset`: (epoch, from, to), new offset."""
    found: list[tuple[float, str, str]] = []
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return found, offset
    complete = data[: data.rfind(b"\n") + 1]
    for raw in complete.splitlines():
        if b"circuit_breaker.to" not in raw:
            continue
        with contextlib.suppress(ValueError, KeyError):
            line = json.loads(raw)
            if line.get("otel_dist.target") == "orders":
                ts = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
                found.append((ts, line["otel_dist.circuit_breaker.from"], line["otel_dist.circuit_breaker.to"]))
    return found, offset + len(complete)


def _breaker_transitions(path: Path, started_monotonic: float) -> list[tuple[float, str, str]]:
    found, _ = _read_transitions(path, 0)
    # Log timestamps are wall-clock; the run's time axis starts at the first request.
    wall_start = time.time() - (time.monotonic() - started_monotonic)
    return [(ts - wall_start, a, b) for ts, a, b in found]


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
    return Path(__file__).resolve().parents[1]


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
        "checkout: clone the repository and run `.venv/bin/otel-dist demo` there (see README, Quickstart)"
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
    return {**stack.urls, "sink_dir": str(stack.sink_dir)} if stack is not None else None


def spans_from_otlp_json(path: Path, trace_id: str) -> list[SinkSpan]:
    """The spans of `trace_id` in an OTLP-JSON lines file (what the stack's collector exported)."""
    found: list[SinkSpan] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh if trace_id in line]
    except OSError:
        return found
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = _json_attributes(resource_spans.get("resource", {}).get("attributes", []))
                service = str(resource.get("service.name", "unknown_service"))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        if span.get("traceId", "").lower() != trace_id:
                            continue
                        found.append(
                            SinkSpan(
                                service=service,
                                trace_id=trace_id,
                                span_id=span["spanId"].lower(),
                                parent_span_id=span.get("parentSpanId", "").lower() or None,
                                name=span.get("name", ""),
                                kind=_KINDS.get(int(span.get("kind", 0)), str(span.get("kind"))),
                                start_ns=int(span.get("startTimeUnixNano", 0)),
                                end_ns=int(span.get("endTimeUnixNano", 0)),
                                status=int(span.get("status", {}).get("code", 0)),
                                attributes=_json_attributes(span.get("attributes", [])),
                            )
                        )
    return found


def _json_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        value = item.get("value", {})
        out[item["key"]] = next(iter(value.values()), None) if isinstance(value, dict) else value
    return out


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
