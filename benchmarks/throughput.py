"""Throughput over the network: uvicorn (1 worker) pinned to core 0, wrk pinned to core 1.

Each round starts every scenario's server afresh (order rotated per round),
warms it up, runs ``wrk -t1 -c32`` against ``GET /hello/world``, samples the
server's RSS, then sends SIGTERM and times the shutdown (which includes the
final flush of all signals).  Medians over rounds; ratios are taken from
those medians, all measured side by side in the same run.

The OTLP sink (``benchmarks.otlp_sink``) shares core 1 with wrk; it is asked
before and after each run what it received, so a scenario that silently
stopped exporting cannot look fast.

    python -m benchmarks.throughput [--rounds 5] [--duration 10] [--scenarios plain,full,...]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import auth_support, logfire_env, upstream_env

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
CONNECTIONS = 32
TARGET = "/hello/world"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def import_dir() -> Path:
    """A directory holding only a link to `benchmarks/`: the servers' PYTHONPATH and working directory.

    Not the repository root: its ``otel_dist.egg-info`` would register otel-dist's
    distro entry point in the upstream venv too.
    """
    # One directory per checkout: several work trees on one machine must not run each other's harness.
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"otel-dist-bench-path-{digest}"
    link = path / "benchmarks"
    path.mkdir(exist_ok=True)
    if not link.is_symlink() or link.resolve() != (ROOT / "benchmarks").resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(ROOT / "benchmarks", target_is_directory=True)
    return path


def base_env() -> dict[str, str]:
    """The caller's environment without anything that configures telemetry or auth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SERVICE_", "JWT_", "FASTAPI_OTEL"))}
    env["PYTHONPATH"] = str(import_dir())
    env.pop("PYTHONUNBUFFERED", None)
    return env


@dataclass
class Scenario:
    key: str
    label: str
    doc: str
    upstream: bool = False
    otel_dist: bool = True
    auth: bool = False
    endpoint: str = "sink"  # "sink", "down" or "none"
    native: str | None = None  # benchmarks.serve scenario for FastAPI's own telemetry
    logfire: bool = False  # Pydantic Logfire, in its own venv
    code: Path | None = None  # otel-dist from this checkout (``--baseline-ref``) instead of the installed one

    def command(self, port: int) -> list[str]:
        if self.logfire:
            return [str(logfire_env.python()), "-m", "benchmarks.serve", "logfire", "--port", str(port)]
        if self.upstream:
            wrapper, python = str(upstream_env.instrument_command()), str(upstream_env.python())
            return [wrapper, python, "-m", "benchmarks.serve", "upstream", "--port", str(port)]
        serve = self.native or ("otel-dist" if self.otel_dist else "plain")
        return [sys.executable, "-m", "benchmarks.serve", serve, "--port", str(port)]

    def env(self, sink_port: int, down_port: int) -> dict[str, str]:
        env = base_env()
        if self.code is not None:  # after the harness: benchmarks/ stays this checkout's
            env["PYTHONPATH"] += os.pathsep + str(self.code)
        if not (self.otel_dist or self.upstream or self.native or self.logfire):
            return env
        env["OTEL_SERVICE_NAME"] = auth_support.SERVICE
        if self.endpoint != "none":
            port = sink_port if self.endpoint == "sink" else down_port
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
        if self.logfire:
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        elif self.upstream or self.native:
            env.update(
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="otlp",
                OTEL_LOGS_EXPORTER="otlp",
                OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
            )
        elif self.auth:
            env.update(auth_support.server_env())
        else:  # otel-dist fails closed: no key means an explicit opt-out (outside production)
            env.update(ENVIRONMENT="test", SERVICE_AUTH_ENABLED="false")
        return env


def scenarios(auth: bool) -> dict[str, Scenario]:
    full_doc = (
        "otel-dist defaults with a collector: 100% sampling, server span, HTTP metrics (Prometheus + OTLP), "
        "JSON access line per request on stdout (also an OTLP log record only when its span is not exported: "
        "OTEL_DIST_ACCESS_LOG_EXPORT=unsampled, the default)"
    )
    items = [
        Scenario("plain", "plain FastAPI", "no telemetry, uvicorn access log off", otel_dist=False),
        Scenario(
            "full",
            "otel-dist full",
            full_doc + (", service-token verification" if auth else " (service auth not available yet)"),
            auth=auth,
        ),
        Scenario("noauth", "otel-dist without auth", "as full, no SERVICE_JWT_SECRET"),
        Scenario(
            "upstream",
            "upstream wrapper",
            "opentelemetry-instrument + opentelemetry-distro, OTLP/HTTP for traces, metrics and logs "
            "(logging handler on), uvicorn's access line on stdout",
            upstream=True,
            otel_dist=False,
        ),
        Scenario(
            "native",
            "FastAPI native telemetry",
            "FastAPI's own telemetry with its defaults (server span + 3 operation spans, HTTP metrics, logs), "
            "the SDK exporting traces, metrics and logs by OTLP/HTTP to the same sink; no access line",
            otel_dist=False,
            native="native",
        ),
        Scenario(
            "native_noops",
            "FastAPI native, operation spans off",
            "as FastAPI native telemetry, with operation_spans=False",
            otel_dist=False,
            native="native-noops",
        ),
        Scenario(
            "logfire",
            "Pydantic Logfire",
            "logfire 5.4.0: configure(send_to_logfire=False) + instrument_fastapi, traces/metrics/logs by "
            "OTLP/HTTP to the same sink; its defaults otherwise (each span printed on stdout, scrubbing)",
            otel_dist=False,
            logfire=True,
        ),
        Scenario(
            "down",
            "otel-dist full, OTLP endpoint down",
            "as full, OTEL_EXPORTER_OTLP_ENDPOINT points at a closed port",
            auth=auth,
            endpoint="down",
        ),
    ]
    if not auth:
        items = [s for s in items if s.key != "noauth"]
    return {s.key: s for s in items}


# --- processes ---


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            _get(port, "/health", timeout=0.5)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


@contextmanager
def sink_server() -> Iterator[int]:
    port = free_port()
    cmd = ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(import_dir())
    )
    try:
        wait_ready_path(port, proc, "/stats")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def wait_ready_path(port: int, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sink exited with {proc.returncode}")
        try:
            _get(port, path, timeout=0.5)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sink did not start")


def sink_stats(port: int) -> dict[str, list[int]]:
    status, body = _get(port, "/stats")
    return dict(json.loads(body)) if status == 200 else {}


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(rss_kib(self.pid)[0])
            self._stop_event.wait(self.interval)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join()
        return self.samples


# --- wrk ---


@dataclass
class WrkResult:
    rps: float
    requests: int
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(port: int, duration: float, headers: list[str]) -> WrkResult:
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(f"http://127.0.0.1:{port}{TARGET}")
    return parse_wrk(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def parse_wrk(out: str) -> WrkResult:
    """wrk's ``--latency`` report as figures."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    return WrkResult(
        rps,
        requests,
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
    )


# --- one run of one scenario ---


@dataclass
class Run:
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    rss_start_mib: float
    rss_end_mib: float
    rss_max_mib: float
    shutdown_s: float
    exported: dict[str, list[int]] = field(default_factory=dict)
    rss_timeline_mib: list[float] = field(default_factory=list)


def run_once(
    scenario: Scenario, *, duration: float, warmup: float, sink_port: int, down_port: int, headers: list[str]
) -> Run:
    port = free_port()
    cmd = ["taskset", "-c", SERVER_CPU, *scenario.command(port)]
    log = tempfile.NamedTemporaryFile("w+b", prefix=f"bench-{scenario.key}-", suffix=".log", delete=False)
    before = sink_stats(sink_port)
    proc = subprocess.Popen(
        cmd, env=scenario.env(sink_port, down_port), stdout=subprocess.DEVNULL, stderr=log, cwd=str(import_dir())
    )
    try:
        wait_ready(port, proc)
        status, _ = _get(port, TARGET) if not headers else (200, b"")
        if status != 200:
            raise RuntimeError(f"{scenario.key}: GET {TARGET} answered {status}")
        if warmup > 0:
            wrk(port, warmup, headers)
        rss_start = rss_kib(proc.pid)[0]
        sampler = RssSampler(proc.pid)
        sampler.start()
        result = wrk(port, duration, headers)
        samples = sampler.stop()
        rss_end, rss_peak = rss_kib(proc.pid)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutdown = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    if result.non_2xx or result.errors:
        text = Path(log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{scenario.key}: {result.non_2xx} non-2xx, {result.errors} socket errors\n{text}")
    os.unlink(log.name)
    after = sink_stats(sink_port)
    exported = {k: [after[k][0] - before.get(k, [0, 0])[0], after[k][1] - before.get(k, [0, 0])[1]] for k in after}
    mib = 1 / 1024
    return Run(
        scenario.key,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.non_2xx,
        result.errors,
        rss_start * mib,
        rss_end * mib,
        max([rss_peak, *samples]) * mib,
        shutdown,
        exported,
        [round(x * mib, 1) for x in samples[:: max(1, len(samples) // 12)]],
    )


def run(
    rounds: int,
    duration: float,
    warmup: float,
    keys: list[str] | None = None,
    log: Any = sys.stderr,
    baseline_ref: str | None = None,
) -> dict[str, Any]:
    """`baseline_ref`: also the full scenario with otel-dist as of that git ref, alternated with the rest."""
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install {'wrk' if tool == 'wrk' else 'util-linux'})")
    has_auth = auth_support.available()
    table = scenarios(has_auth)
    chosen = [table[k] for k in (keys or list(table)) if k in table]
    if baseline_ref:
        from benchmarks.chain import checkout  # here: chain imports this module

        code = checkout(baseline_ref, Path(tempfile.mkdtemp(prefix="otel-dist-baseline-")))
        full = table["full"]
        label = f"otel-dist full at {baseline_ref}"
        chosen.append(Scenario("baseline", label, f"as full, otel-dist at {baseline_ref}", auth=full.auth, code=code))
    if any(s.upstream for s in chosen):
        upstream_env.ensure()
    if any(s.logfire for s in chosen):
        logfire_env.ensure()
    headers = [f"Authorization: Bearer {auth_support.token(lifetime=86400)}"] if has_auth else []
    runs: dict[str, list[Run]] = {s.key: [] for s in chosen}
    down_port = free_port()  # nothing listens there
    with sink_server() as sink_port:
        for r in range(rounds):
            order = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
            for scenario in order:
                one = run_once(
                    scenario,
                    duration=duration,
                    warmup=warmup,
                    sink_port=sink_port,
                    down_port=down_port,
                    headers=headers if scenario.auth else [],
                )
                runs[scenario.key].append(one)
                print(
                    f"round {r + 1}/{rounds} {scenario.key:9s} {one.rps:8.0f} req/s  p99 {one.p99_ms:6.2f} ms  "
                    f"rss {one.rss_start_mib:.0f}->{one.rss_end_mib:.0f} MiB  shutdown {one.shutdown_s:.2f} s  "
                    f"exported {one.exported}",
                    file=log,
                    flush=True,
                )
    return summarize(chosen, runs, has_auth)


def soak(key: str, duration: float, log: Any = sys.stderr) -> Run:
    """One long run of one scenario (memory over time, shutdown at the end)."""
    has_auth = auth_support.available()
    scenario = scenarios(has_auth)[key]
    headers = [f"Authorization: Bearer {auth_support.token()}"] if scenario.auth else []
    with sink_server() as sink_port:
        one = run_once(
            scenario, duration=duration, warmup=2.0, sink_port=sink_port, down_port=free_port(), headers=headers
        )
    print(f"soak {key}: {one.rps:.0f} req/s, RSS {one.rss_timeline_mib} MiB, shutdown {one.shutdown_s:.2f} s", file=log)
    return one


def summarize(chosen: list[Scenario], runs: dict[str, list[Run]], has_auth: bool) -> dict[str, Any]:
    med = {k: statistics.median(r.rps for r in rs) for k, rs in runs.items()}
    plain = med.get("plain")
    out: dict[str, Any] = {"auth": has_auth, "scenarios": {}}
    for s in chosen:
        rs = runs[s.key]
        out["scenarios"][s.key] = {
            "label": s.label,
            "doc": s.doc,
            "rps": [r.rps for r in rs],
            "rps_median": med[s.key],
            "ratio_plain": med[s.key] / plain if plain else None,
            "p50_ms": statistics.median(r.p50_ms for r in rs),
            "p99_ms": statistics.median(r.p99_ms for r in rs),
            "rss_start_mib": statistics.median(r.rss_start_mib for r in rs),
            "rss_end_mib": statistics.median(r.rss_end_mib for r in rs),
            "rss_max_mib": max(r.rss_max_mib for r in rs),
            "shutdown_s_max": max(r.shutdown_s for r in rs),
            "exported": rs[-1].exported,
        }
    if "upstream" in med and "full" in med:
        out["full_vs_upstream"] = med["full"] / med["upstream"]
    if "down" in med and "full" in med:
        out["down_vs_up"] = med["down"] / med["full"]
    if "native_noops" in med and "full" in med:
        out["full_vs_native_noops"] = med["full"] / med["native_noops"]
    if "logfire" in med and "full" in med:
        out["full_vs_logfire"] = med["full"] / med["logfire"]
    if "baseline" in med and "full" in med:
        out["full_vs_baseline"] = med["full"] / med["baseline"]
    return out


def report(summary: dict[str, Any]) -> str:
    lines = [
        "| scenario | req/s (median) | x plain | p50 ms | p99 ms | RSS after warm-up -> end (MiB) "
        "| shutdown (max) | runs (req/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary["scenarios"].values():
        ratio = f"{s['ratio_plain']:.2f}" if s["ratio_plain"] is not None else "-"
        runs = ", ".join(f"{v:.0f}" for v in s["rps"])
        lines.append(
            f"| {s['label']} | {s['rps_median']:.0f} | {ratio} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
            f"{s['rss_start_mib']:.0f} -> {s['rss_end_mib']:.0f} | {s['shutdown_s_max']:.2f} s | {runs} |"
        )
    if "full_vs_upstream" in summary:
        lines.append(f"\notel-dist full / upstream wrapper: **{summary['full_vs_upstream']:.2f}x**")
    if "down_vs_up" in summary:
        lines.append(f"\nendpoint down / endpoint up: **{summary['down_vs_up']:.2f}x**")
    if "full_vs_native_noops" in summary:
        lines.append(
            f"\notel-dist full / FastAPI native, operation spans off: **{summary['full_vs_native_noops']:.2f}x**"
        )
    if "full_vs_logfire" in summary:
        lines.append(f"\notel-dist full / Pydantic Logfire: **{summary['full_vs_logfire']:.2f}x**")
    if "full_vs_baseline" in summary:
        baseline = summary["scenarios"]["baseline"]["label"]
        lines.append(f"\notel-dist full / {baseline}: **{summary['full_vs_baseline']:.3f}x**")
    return "\n".join(lines)


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers and the sink started here are stopped."""
    import signal as _signal

    _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--scenarios", help="comma list of: plain, full, noauth, upstream, native, native_noops, logfire, down"
    )
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument(
        "--baseline-ref", help="also run the full scenario with otel-dist at this git ref (A/B, alternated)"
    )
    args = parser.parse_args(argv)
    keys = args.scenarios.split(",") if args.scenarios else None
    summary = run(args.rounds, args.duration, args.warmup, keys, baseline_ref=args.baseline_ref)
    print(report(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
