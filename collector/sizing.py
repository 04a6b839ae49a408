"""Sizing figures for the two tiers, measured on this machine with the built collector.

    .venv/bin/python collector/sizing.py [--seconds 20] [--skip gateway,agent,memory]

Load comes from ``telemetrygen`` (the collector project's load generator:
``go install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v0.161.0``),
traces of 5 spans (a root and 4 children) over OTLP/gRPC. Three measurements:

1. **gateway throughput on one core**: one gateway (``otelcol-gateway.yaml``: tail_sampling with the
   default policies, batch, Zipkin with the file_storage queue, a real Zipkin) pinned to one CPU
   (``taskset`` + ``GOMAXPROCS=1``), offered what telemetrygen can send; spans accepted per second,
   the gateway's CPU use, and spans per CPU-second of the gateway (the figure that does not depend on
   the generator or the other tenants: one saturated core takes about that many spans/s).
2. **agent CPU per 1,000 spans/s**: one agent (``otelcol-agent.yaml``: span metrics + load_balancing
   to the gateway) at a fixed rate; CPU-seconds of the agent per 1,000 spans.
3. **memory per in-flight trace**: a gateway with a 120 s decision wait receives N traces; Go heap in
   use (the collector's ``otelcol_process_runtime_heap_alloc_bytes``) and RSS before and after, per trace.

CPU time is read from ``/proc/<pid>/stat``; the load average is printed with the figures. Standard
library only (plus the collector, Zipkin and telemetrygen binaries).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector import backends, procs
from collector.topology import AGENT_CONFIG, GATEWAY_CONFIG

HERE = Path(__file__).resolve().parent
COLLECTOR = HERE / "_build" / "otelcol-dist" / "otelcol-dist"
SPANS_PER_TRACE = 5
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(url: str, name: str) -> float:
    """Sum of one metric's samples on a /metrics page."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{name}(_total)?(\{{| )", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def telemetrygen() -> str:
    path = shutil.which("telemetrygen") or str(
        Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "telemetrygen"
    )
    if not os.access(path, os.X_OK):
        sys.exit(
            "telemetrygen not found: go install "
            "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v0.161.0"
        )
    return path


def load(
    endpoint: str, seconds: float, rate: float, workers: int, cpu: str | None, batch: int = 100
) -> subprocess.Popen:
    """telemetrygen: `rate` spans/s per worker for `seconds`, `batch` spans per export."""
    cmd = [
        telemetrygen(), "traces", "--otlp-endpoint", endpoint, "--otlp-insecure", "--duration", f"{seconds:g}s",
        "--rate", f"{rate:g}", "--workers", str(workers), "--child-spans", str(SPANS_PER_TRACE - 1),
        "--batch-size", str(batch),
    ]  # fmt: skip
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Collector:
    def __init__(self, name: str, root: Path, configs: list[Path], env: dict[str, str], cpu: str | None) -> None:
        self.health, self.telemetry, self.otlp = procs.free_port(), procs.free_port(), procs.free_port()
        env = {
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.health}",
            "OTELCOL_TELEMETRY_PORT": str(self.telemetry),
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.otlp}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{procs.free_port()}",
            "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{procs.free_port()}",
            "OTELCOL_LOG_LEVEL": "warn",
            **env,
        }
        cmd = [str(COLLECTOR), *(f"--config={c}" for c in configs)]
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
            env["GOMAXPROCS"] = "1"
        self.proc = procs.spawn(root, name, cmd, env)
        procs.wait_http(self.proc, name, f"http://127.0.0.1:{self.health}/", 60, root)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.telemetry}/metrics"

    def accepted(self) -> float:
        return metric(self.metrics_url, "otelcol_receiver_accepted_spans")

    def refused(self) -> float:
        return metric(self.metrics_url, "otelcol_receiver_refused_spans")

    def stop(self) -> None:
        procs.terminate("collector", self.proc.pid, self.proc, 10)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def gateway_throughput(root: Path, zipkin: str, seconds: float) -> None:
    (root / "gw-queue").mkdir()
    gw = Collector(
        "gateway-bench",
        root,
        [GATEWAY_CONFIG],
        {
            "OTELCOL_ZIPKIN_ENDPOINT": zipkin,
            "OTELCOL_STORAGE_DIR": str(root / "gw-queue"),
            "OTELCOL_DECISION_WAIT": "5s",
        },
        cpu="0",
    )
    try:
        # As much as telemetrygen can send from the rest of the machine (unthrottled it drops at its own
        # SDK queue, so: many throttled workers). On this 2-core machine it tops out near 30,000 spans/s,
        # below what the gateway takes: the figure that carries over is spans per gateway CPU-second.
        gen = load(f"127.0.0.1:{gw.otlp}", seconds + 5, 20000, 16, cpu=None, batch=1000)
        time.sleep(5)  # warm-up: decisions start after the first decision_wait
        a0, c0, t0 = gw.accepted(), cpu_seconds(gw.proc.pid), time.monotonic()
        time.sleep(seconds)
        a1, c1, t1 = gw.accepted(), cpu_seconds(gw.proc.pid), time.monotonic()
        gen.wait(60)
        spans, wall, cpu = a1 - a0, t1 - t0, c1 - c0
        print(
            f"gateway (pinned to 1 core, tail_sampling + file_storage queue + Zipkin): {spans / wall:,.0f} spans/s "
            f"({spans / wall / SPANS_PER_TRACE:,.0f} traces/s), {cpu / wall:.2f} cores busy, "
            f"{spans / cpu:,.0f} spans per CPU-second; refused {gw.refused():,.0f}; "
            f"RSS {rss_mib(gw.proc.pid):.0f} MiB; load {loadavg()}",
            flush=True,
        )
    finally:
        gw.stop()


def agent_cpu(root: Path, zipkin: str, seconds: float) -> None:
    (root / "ag-queue").mkdir()
    gw = Collector(
        "gateway-for-agent",
        root,
        [GATEWAY_CONFIG],
        {"OTELCOL_ZIPKIN_ENDPOINT": zipkin, "OTELCOL_STORAGE_DIR": str(root / "ag-queue")},
        cpu=None,
    )
    agent = Collector("agent-bench", root, [AGENT_CONFIG], {"OTELCOL_GATEWAYS": f"[127.0.0.1:{gw.otlp}]"}, cpu=None)
    try:
        rate = 1000  # spans/s per worker (telemetrygen's --rate counts spans): 2 workers = 2,000 spans/s
        gen = load(f"127.0.0.1:{agent.otlp}", seconds + 3, rate, 2, cpu=None)
        time.sleep(3)
        a0, c0, t0 = agent.accepted(), cpu_seconds(agent.proc.pid), time.monotonic()
        time.sleep(seconds)
        a1, c1, t1 = agent.accepted(), cpu_seconds(agent.proc.pid), time.monotonic()
        gen.wait(60)
        spans, wall, cpu = a1 - a0, t1 - t0, c1 - c0
        print(
            f"agent (span metrics + load_balancing): {spans / wall:,.0f} spans/s, {cpu / wall:.3f} cores busy = "
            f"{1000 * cpu / spans:.3f} CPU-seconds per 1,000 spans, i.e. {100 * 1000 * cpu / spans:.1f} % of a core "
            f"per 1,000 spans/s; RSS {rss_mib(agent.proc.pid):.0f} MiB; load {loadavg()}",
            flush=True,
        )
    finally:
        agent.stop()
        gw.stop()


def memory_per_trace(root: Path, zipkin: str, traces: int) -> None:
    (root / "mem-queue").mkdir()
    gw = Collector(
        "gateway-memory",
        root,
        [GATEWAY_CONFIG],
        {
            "OTELCOL_ZIPKIN_ENDPOINT": zipkin,
            "OTELCOL_STORAGE_DIR": str(root / "mem-queue"),
            "OTELCOL_DECISION_WAIT": "120s",
            "OTELCOL_NUM_TRACES": str(4 * traces),
            "OTELCOL_MEMORY_LIMIT_MIB": "4000",
            "OTELCOL_MEMORY_SPIKE_LIMIT_MIB": "800",
        },
        cpu=None,
    )
    try:
        time.sleep(3)
        heap0, rss0 = metric(gw.metrics_url, "otelcol_process_runtime_heap_alloc_bytes"), rss_mib(gw.proc.pid)
        # Throttled: unthrottled, telemetrygen drops spans at its SDK's batch queue (2,048 spans).
        workers, seconds = 4, 10.0
        rate = traces * SPANS_PER_TRACE / workers / seconds  # telemetrygen's --rate counts spans
        load(f"127.0.0.1:{gw.otlp}", seconds, rate, workers, cpu=None).wait(seconds + 60)
        deadline = time.monotonic() + 60
        while gw.accepted() < traces * SPANS_PER_TRACE * 0.98 and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # the collector's own metrics refresh every few seconds
        held = gw.accepted() / SPANS_PER_TRACE
        heap1, rss1 = metric(gw.metrics_url, "otelcol_process_runtime_heap_alloc_bytes"), rss_mib(gw.proc.pid)
        print(
            f"gateway memory with {held:,.0f} traces of {SPANS_PER_TRACE} spans held for their decision: "
            f"heap +{(heap1 - heap0) / 2**20:.0f} MiB = {(heap1 - heap0) / held / 1024:.1f} KiB per trace, "
            f"RSS +{rss1 - rss0:.0f} MiB = {(rss1 - rss0) * 1024 / held:.1f} KiB per trace; load {loadavg()}",
            flush=True,
        )
    finally:
        gw.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window per test (default 20)")
    parser.add_argument("--traces", type=int, default=20000, help="in-flight traces for the memory test")
    parser.add_argument("--skip", default="", help="comma-separated: gateway,agent,memory")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    root = Path(tempfile.mkdtemp(prefix="otel-dist-sizing-"))
    zport = procs.free_port()
    zipkin = procs.spawn(root, "zipkin", ["taskset", "-c", "1", *backends.zipkin_command(backends.zipkin_jar(), zport)])
    try:
        procs.wait_http(zipkin, "zipkin", f"http://127.0.0.1:{zport}/health", 240, root)
        spans_url = f"http://127.0.0.1:{zport}/api/v2/spans"
        print(f"machine: {os.cpu_count()} CPUs, load {loadavg()}; collector {COLLECTOR}", flush=True)
        if "gateway" not in skip:
            gateway_throughput(root, spans_url, args.seconds)
        if "agent" not in skip:
            agent_cpu(root, spans_url, args.seconds)
        if "memory" not in skip:
            memory_per_trace(root, spans_url, args.traces)
    finally:
        procs.terminate("zipkin", zipkin.pid, zipkin, 10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
