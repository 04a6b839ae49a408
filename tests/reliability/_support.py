"""Shared pieces of the reliability suite: the counting sink, service processes, a load generator."""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import signal
import ssl
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from prometheus_client.parser import text_string_to_metric_families

from otel_dist.testing import ServerProcess, free_port, record_captured

ROOT = Path(__file__).resolve().parents[2]
_CLEAN_PREFIXES = ("OTEL_", "SERVICE_", "JWT_", "CIRCUIT_", "FAULT_", "DATABASE_", "ENVIRONMENT", "LOG_LEVEL")


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without any otel-dist setting a developer shell may carry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEAN_PREFIXES)}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def raise_open_files(limit: int = 8192) -> int:
    """Raise this process's soft RLIMIT_NOFILE (for 1,000+ sockets); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# ---------------------------------------------------------------- processes


class Sink:
    """The counting OTLP sink as its own process; can be killed and started again on the same port."""

    def __init__(self, tmp_path: Path, port: int | None = None, *, record: bool = True) -> None:
        self.port = port or free_port()
        self._record_dump = record  # hand what it received to the suite's secrets check
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tmp_path
        self._starts = 0
        self.proc: ServerProcess | None = None

    def start(self) -> Sink:
        self._starts += 1
        argv = [sys.executable, "-m", "tests.reliability.apps.sink", "--port", str(self.port)]
        log_path = str(self._tmp / f"sink-{self.port}-{self._starts}.log")
        self.proc = ServerProcess(argv, port=self.port, env=clean_env(), log_path=log_path, cwd=str(ROOT))
        self.proc.wait_ready("/counts")
        return self

    def kill(self) -> None:
        """SIGKILL: the backend vanishes mid-flight, nothing is answered."""
        if self.proc is not None:
            self._record()
            self.proc.proc.kill()
            self.proc.proc.wait(10)
            self.proc.stop()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self._record()
            self.proc.stop()
            self.proc = None

    def _record(self) -> None:
        """What the backend received goes to the suite's secrets check too."""
        if not self._record_dump:
            return
        try:
            record_captured(f"OTLP sink {self.url}", self.dump())
        except httpx.HTTPError:
            pass

    def counts(self) -> dict[str, Any]:
        return httpx.get(self.url + "/counts", timeout=10).json()  # type: ignore[no-any-return]

    def spans(self, service: str) -> int:
        return int(self.counts()["spans"].get(service, 0))

    def logs(self, service: str) -> int:
        return int(self.counts()["logs"].get(service, 0))

    def wait_for(self, service: str, *, spans: int = 0, logs: int = 0, timeout: float = 15.0) -> dict[str, int]:
        """Poll until at least `spans` and `logs` arrived for `service` (or the timeout); return what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            got = {"spans": counts["spans"].get(service, 0), "logs": counts["logs"].get(service, 0)}
            if (got["spans"] >= spans and got["logs"] >= logs) or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def dump(self) -> str:
        return httpx.get(self.url + "/dump", timeout=30).text


ACCESS_RECORDS = {"OTEL_DIST_ACCESS_LOG_EXPORT": "always"}


def start_service(
    tmp_path: Path, name: str, *, app: str = "tests.reliability.apps.svc:app", **env: str
) -> ServerProcess:
    """The reliability service (or `app`) under plain uvicorn, as its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    # Every request's access line is also an OTel log record here (the default sends it only when
    # its span is not exported): these tests count log records through the whole pipeline.
    # Service auth explicitly off: these tests are about the telemetry pipeline, not tokens.
    full_env = clean_env(
        **{"OTEL_SERVICE_NAME": name, "ENVIRONMENT": "test", "SERVICE_AUTH_ENABLED": "false", **ACCESS_RECORDS, **env}
    )
    proc = ServerProcess(argv, port=port, env=full_env, log_path=str(tmp_path / f"{name}.log"), cwd=str(ROOT))
    try:
        proc.wait_ready("/health")
    except BaseException:
        proc.stop()
        raise
    return proc


def sigterm(proc: ServerProcess) -> None:
    proc.proc.send_signal(signal.SIGTERM)


# ---------------------------------------------------------------- load


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    indexed: list[tuple[int, float]] = field(default_factory=list)  # (request index, latency)
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def quantile(self, q: float) -> float:
        """Latency quantile in seconds (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    def summary(self) -> str:
        rate = self.sent / self.elapsed if self.elapsed else 0.0
        return (
            f"{self.sent} requests in {self.elapsed:.1f}s ({rate:.0f}/s), statuses {dict(self.statuses)}, "
            f"errors {dict(self.errors)}, p50 {self.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {self.quantile(0.99) * 1000:.1f} ms"
        )


async def load(
    url: Callable[[int], str],
    *,
    total: int,
    concurrency: int,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> LoadResult:
    """`total` GETs of `url(i)` from `concurrency` workers, each a client with its own keep-alive connection.

    Every worker sends its first request at the same moment, so `concurrency`
    connections open at once.  One client per worker rather than one shared
    pool: httpcore rescans a pool's whole queue on every state change, which
    at 1,000 connections costs the load generator ~5 ms of CPU per request.
    `stop()` ends the run early.
    """
    result = LoadResult()
    counter = itertools.count()
    start_gate = asyncio.Event()
    tls = ssl.create_default_context()  # created once; plain-HTTP clients still build one each
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def worker() -> None:
        async with httpx.AsyncClient(limits=one, timeout=timeout, headers=headers, verify=tls) as client:
            await start_gate.wait()
            while (i := next(counter)) < total and not (stop and stop()):
                began = time.perf_counter()
                try:
                    response = await client.get(url(i))
                except httpx.HTTPError as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - began
                result.latencies.append(elapsed)
                result.indexed.append((i, elapsed))
                result.statuses[response.status_code] += 1

    with suppress_http_instrumentation():
        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        await asyncio.sleep(0)  # let every worker reach the gate
        began = time.perf_counter()
        start_gate.set()
        await asyncio.gather(*tasks)
        result.elapsed = time.perf_counter() - began
    return result


def run_load(url: Callable[[int], str], **kwargs: Any) -> LoadResult:
    return asyncio.run(load(url, **kwargs))


# ---------------------------------------------------------------- Prometheus


def prom_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus exposition."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def prom_sum(text: str, name: str, **labels: str) -> float:
    return sum(v for lab, v in prom_samples(text, name) if all(lab.get(k) == w for k, w in labels.items()))


# ---------------------------------------------------------------- the example services


SERVICE_NAMES = ("auth", "orders", "gateway")


def start_services(tmp_path: Path, *, secret: str, user_secret: str, **env: str) -> dict[str, ServerProcess]:
    """auth, orders and gateway as processes on loopback (started together, waited for together)."""
    ports = {name: free_port() for name in SERVICE_NAMES}
    common = {
        "ENVIRONMENT": "test",
        **ACCESS_RECORDS,
        "SERVICE_JWT_SECRET": secret,
        "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}",
        "ORDERS_SERVICE_URL": f"http://127.0.0.1:{ports['orders']}",
        **env,
    }
    procs: dict[str, ServerProcess] = {}
    try:
        for name in SERVICE_NAMES:
            argv = [sys.executable, "-m", "uvicorn", f"services.{name}.app:app", "--host", "127.0.0.1"]
            argv += ["--port", str(ports[name]), "--backlog", "4096"]
            extra = {"OTEL_SERVICE_NAME": name}
            if name != "gateway":
                (tmp_path / f"{name}-db").mkdir(exist_ok=True)
                extra["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / f'{name}-db' / f'{name}.db'}"
            if name == "auth":
                extra["USER_JWT_SECRET"] = user_secret
            log_path = str(tmp_path / f"{name}.log")
            procs[name] = ServerProcess(
                argv, port=ports[name], env=clean_env(**common, **extra), log_path=log_path, cwd=str(tmp_path)
            )
        for proc in procs.values():
            proc.wait_ready("/health", timeout=60)
    except BaseException:
        for proc in procs.values():
            proc.stop()
        raise
    return procs


def established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is `port` (the server side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count
