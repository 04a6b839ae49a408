"""The three-service read: wrk on the gateway's ``GET /orders/{id}`` (gateway -> auth introspect, orders ->
auth user lookup), each stack as three uvicorn processes on loopback.

Stacks, all started at once and measured alternately (round r runs every stack once, order rotated):

- ``full``: otel-dist defaults with a collector (the local OTLP sink): 100% sampling, spans, metrics
  (Prometheus + OTLP), access lines, service tokens;
- ``off``: the same code with telemetry switched off: sampler ``always_off``, no exporter, no access line
  (service tokens, retries, breakers and deadlines stay: they are the product, not telemetry);
- ``full_cached`` / ``off_cached``: the same with the services' opt-in reuse of answers that cannot change
  (``GATEWAY_INTROSPECTION_CACHE_TTL``, ``ORDERS_USER_CACHE_TTL``: two of the three hops skipped when warm);
- ``baseline``: the ``full`` setup on another checkout of otel-dist (``--baseline-ref``, default the commit
  this issue started from), to compare with today's main.

CPU per request per process (``/proc/PID/stat`` utime+stime over the wrk run / requests) shows where a
request's CPU goes across the three services; ``--profile`` adds a cProfile of each service of ``full``,
grouped by package.

    python -m benchmarks.chain [--rounds 3] [--duration 10] [--connections 16] [--profile] [--stacks full,baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import throughput

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "orders", "gateway")
BASELINE_REF = "5f851dd"  # main when issue 13 started
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEYS = ("full", "off", "full_cached", "off_cached", "baseline")
# One service (the same program for every checkout, so the baseline needs nothing new); under
# BENCH_PROFILE its event loop is profiled until SIGTERM (uvicorn returns, the stats are written).
SERVE = """
import cProfile, os, signal, sys, uvicorn
app, port, out = sys.argv[1], int(sys.argv[2]), os.environ.get("BENCH_PROFILE")
profiler = cProfile.Profile() if out else None
def done(signum, frame):  # the last SIGTERM handler in the chain (uvicorn's, then otel-dist's flush)
    if profiler:
        profiler.disable()
        profiler.dump_stats(out)
    os._exit(0)
signal.signal(signal.SIGTERM, done)
signal.signal(signal.SIGUSR1, lambda *_: profiler and profiler.enable())  # after the warm-up
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
done(0, None)
"""
# The services' opt-in reuse of answers that cannot change (gateway: token introspection; orders: user names).
CACHES = {"GATEWAY_INTROSPECTION_CACHE_TTL": "60", "ORDERS_USER_CACHE_TTL": "60"}
OFF_ENV = {
    "OTEL_TRACES_SAMPLER": "always_off",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_DIST_ACCESS_LOG": "false",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Stack:
    key: str
    label: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    headers: list[str] = field(default_factory=list)
    path: str = ""


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def checkout(ref: str, into: Path) -> Path:
    """`ref` of this repository as plain files (no .git, no egg-info), for the baseline stack."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_stack(
    key: str, label: str, code: Path, env_extra: dict[str, str], tmp: Path, stack: ExitStack, profile_dir: Path | None
) -> Stack:
    result = Stack(key, label)
    result.ports = {name: throughput.free_port() for name in SERVICES}
    secret, user_secret = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    base = throughput.base_env()
    base.update(
        PYTHONPATH=str(code),
        ENVIRONMENT="test",
        SERVICE_JWT_SECRET=secret,
        AUTH_SERVICE_URL=f"http://127.0.0.1:{result.ports['auth']}",
        ORDERS_SERVICE_URL=f"http://127.0.0.1:{result.ports['orders']}",
        **env_extra,
    )
    for name in SERVICES:
        env = dict(base, OTEL_SERVICE_NAME=name)
        if name != "gateway":
            db_dir = tmp / key / name
            db_dir.mkdir(parents=True)
            env["DATABASE_URL"] = f"sqlite+aiosqlite:///{db_dir / f'{name}.db'}"
        if name == "auth":
            env["USER_JWT_SECRET"] = user_secret
        if profile_dir is not None:
            env["BENCH_PROFILE"] = str(profile_dir / f"{key}-{name}.prof")
        port = str(result.ports[name])
        cmd = [sys.executable, "-c", SERVE, f"services.{name}.app:app", port]
        log = open(tmp / f"{key}-{name}.log", "wb")
        stack.callback(log.close)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(code))
        stack.callback(_stop, proc)
        result.procs[name] = proc
    for name in SERVICES:
        throughput.wait_ready(result.ports[name], result.procs[name], timeout=120)
    gateway = f"http://127.0.0.1:{result.ports['gateway']}"
    credentials = {"username": f"bench-{secrets.token_hex(3)}", "password": "correct horse battery"}
    with httpx.Client(base_url=gateway, timeout=60) as client:
        client.post("/register", json=credentials).raise_for_status()
        token = client.post("/login", json=credentials).raise_for_status().json()["access_token"]
        order = client.post("/orders", json={"item": "lamp"}, headers={"authorization": f"Bearer {token}"})
        order.raise_for_status()
        result.path = f"/orders/{order.json()['id']}"
        assert client.get(result.path, headers={"authorization": f"Bearer {token}"}).status_code == 200
    result.headers = [f"Authorization: Bearer {token}"]
    return result


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(stack: Stack, duration: float, connections: int) -> dict[str, Any]:
    port = stack.ports["gateway"]
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    for header in stack.headers:
        cmd += ["-H", header]
    cmd.append(f"http://127.0.0.1:{port}{stack.path}")
    before = {name: cpu_ticks(p.pid) for name, p in stack.procs.items()}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after = {name: cpu_ticks(p.pid) for name, p in stack.procs.items()}
    parsed = throughput.parse_wrk(out)
    cpu_us = {name: (after[name] - before[name]) / CLK_TCK * 1e6 / max(parsed.requests, 1) for name in stack.procs}
    return {"rps": parsed.rps, "requests": parsed.requests, "non_2xx": parsed.non_2xx, "errors": parsed.errors,
            "p50_ms": parsed.p50_ms, "p99_ms": parsed.p99_ms, "cpu_us": cpu_us}  # fmt: skip


def _module_of(filename: str, func: str) -> str:
    """A row name for what the known packages do not cover: the C function, or the top-level module."""
    if filename == "~":
        return f"C: {func.split(' of ')[0].strip('<>{}').removeprefix('built-in method ').removeprefix('method ')}"
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    return Path(filename).stem


def profile_table(profile_dir: Path, key: str, requests: int) -> str:
    """Each service's cProfile (own time) grouped by package, µs per request under profiling."""
    import pstats

    groups = ("otel_dist", "opentelemetry", "fastapi", "starlette", "pydantic", "uvicorn", "h11", "httpx",
              "httpcore", "anyio", "sqlalchemy", "aiosqlite", "jwt", "asyncio", "json", "logging")  # fmt: skip
    lines = ["| package | " + " | ".join(SERVICES) + " |", "|---|" + "---:|" * len(SERVICES)]
    per: dict[str, dict[str, float]] = {}
    for name in SERVICES:
        path = profile_dir / f"{key}-{name}.prof"
        if not path.exists():
            continue
        stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
        totals: dict[str, float] = {}
        for (filename, _, func), (_, _, tottime, _, _) in stats.items():
            if "epoll" in func or "select" in func:
                continue  # the event loop waiting: idle, not work
            group = next((g for g in groups if f"/{g}/" in filename or filename.endswith(f"/{g}.py")), None)
            if group is None:
                group = _module_of(filename, func)
            totals[group] = totals.get(group, 0.0) + tottime
        per[name] = {g: t / max(requests, 1) * 1e6 for g, t in totals.items()}
    order = sorted({g for d in per.values() for g in d}, key=lambda g: -sum(d.get(g, 0) for d in per.values()))
    lines.insert(2, "| **all (event-loop thread, busy)** | " + " | ".join(
        f"**{sum(per.get(n, {}).values()):.0f}**" for n in SERVICES) + " |")  # fmt: skip
    for group in order[:25]:
        lines.append(f"| {group} | " + " | ".join(f"{per.get(n, {}).get(group, 0):.0f}" for n in SERVICES) + " |")
    return "\n".join(lines)


def run(
    rounds: int,
    duration: float,
    connections: int,
    baseline_ref: str | None,
    profile: bool,
    only: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="otel-dist-chain-"))
    profile_dir = tmp / "profiles" if profile else None
    if profile_dir is not None:
        profile_dir.mkdir()
    results: dict[str, list[dict[str, Any]]] = {}
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        with ExitStack() as stack, throughput.sink_server() as sink_port:
            sink = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            }
            cached = {**sink, **CACHES}
            specs: list[tuple[str, str, Path, dict[str, str]]] = [
                ("full", "full telemetry", ROOT, sink),
                ("off", "telemetry off", ROOT, {**sink, **OFF_ENV}),
                ("full_cached", "full telemetry, answers reused", ROOT, cached),
                ("off_cached", "telemetry off, answers reused", ROOT, {**cached, **OFF_ENV}),
            ]
            if baseline_ref:
                base = checkout(baseline_ref, tmp / "base")
                specs.append(("baseline", f"full telemetry, main at {baseline_ref}", base, sink))
            if only:
                specs = [spec for spec in specs if spec[0] in only]
            stacks = []
            for key, label, code, env in specs:
                print(f"starting {label}", file=sys.stderr, flush=True)
                stacks.append(start_stack(key, label, code, env, tmp, stack, None))
            for s in stacks:  # warm-up
                run_wrk(s, min(3.0, duration), connections)
            for r in range(rounds):
                for s in stacks[r % len(stacks) :] + stacks[: r % len(stacks)]:
                    res = run_wrk(s, duration, connections)
                    results.setdefault(s.key, []).append(res)
                    print(f"round {r + 1}/{rounds} {s.label}: {res['rps']:.1f} req/s", file=sys.stderr, flush=True)
            exported = throughput.sink_stats(sink_port)
            labels = {s.key: s.label for s in stacks}
            stack.close()
            table = ""
            if profile_dir is not None:  # a separate stack: profiling must not slow the measured ones
                print("profiling the full stack", file=sys.stderr, flush=True)
                with ExitStack() as prof_stack:
                    profiled = start_stack("profiled", "full (profiled)", ROOT, sink, tmp, prof_stack, profile_dir)
                    run_wrk(profiled, min(3.0, duration), connections)  # warm-up, not profiled
                    for proc in profiled.procs.values():
                        proc.send_signal(signal.SIGUSR1)
                    requests = run_wrk(profiled, duration, connections)["requests"]
                table = profile_table(profile_dir, "profiled", requests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return summarize(results, labels, exported, table, load_before, load_after, rounds, duration, connections)


def summarize(
    results: dict[str, list[dict[str, Any]]],
    labels: dict[str, str],
    exported: dict[str, Any],
    profile: str,
    load_before: str,
    load_after: str,
    rounds: int,
    duration: float,
    connections: int,
) -> dict[str, Any]:
    rows = {}
    for key, runs in results.items():
        rows[key] = {
            "label": labels[key],
            "rps": statistics.median(r["rps"] for r in runs),
            "runs": [round(r["rps"], 1) for r in runs],
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "cpu_us": {n: statistics.median(r["cpu_us"][n] for r in runs) for n in SERVICES},
        }
    full, off, base, fc, oc = (
        rows.get(k, {}).get("rps") for k in ("full", "off", "baseline", "full_cached", "off_cached")
    )
    return {
        "rows": rows,
        "full_vs_off": full / off if full and off else None,
        "full_vs_baseline": full / base if full and base else None,
        "cached_full_vs_off": fc / oc if fc and oc else None,
        "cached_full_vs_baseline": fc / base if fc and base else None,
        "exported": exported,
        "profile": profile,
        "load": [load_before, load_after],
        "rounds": rounds,
        "duration": duration,
        "connections": connections,
    }


def report(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    lines = [
        f"wrk -t1 -c{summary['connections']} on the gateway's GET /orders/{{id}}, {summary['rounds']} rounds of "
        f"{summary['duration']:g} s per stack, alternating; load average before / after: "
        f"{summary['load'][0]} / {summary['load'][1]}",
        "",
        "| stack | req/s (median) | p50 ms | p99 ms | non-2xx | CPU µs/request: gateway | orders | auth | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows.values():
        cpu = row["cpu_us"]
        lines.append(
            f"| {row['label']} | {row['rps']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['non_2xx']} "
            f"| {cpu['gateway']:.0f} | {cpu['orders']:.0f} | {cpu['auth']:.0f} | {', '.join(map(str, row['runs']))} |"
        )
    lines.append("")
    if summary["full_vs_off"] is not None:
        lines.append(f"full telemetry / telemetry off: **{summary['full_vs_off']:.2f}x** (target >= 0.8x)")
    if summary["full_vs_baseline"] is not None:
        lines.append(f"full telemetry / baseline: **{summary['full_vs_baseline']:.2f}x** (target >= 3x)")
    if summary.get("cached_full_vs_off") is not None:
        lines.append(f"with answers reused, full / off: **{summary['cached_full_vs_off']:.2f}x** (target >= 0.8x)")
    if summary.get("cached_full_vs_baseline") is not None:
        lines.append(
            f"with answers reused, full / baseline: **{summary['cached_full_vs_baseline']:.2f}x** (target >= 3x)"
        )
    lines.append(f"exported to the sink (requests, bytes): {json.dumps(summary['exported'])}")
    if summary["profile"]:
        lines += ["", "cProfile of the full stack, own time by package, µs per request under profiling:", "",
                  summary["profile"]]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="'' to skip the baseline stack")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--stacks", default="", help="comma-separated keys to run (default all): " + ", ".join(KEYS))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    only = frozenset(filter(None, args.stacks.split(",")))
    if only - set(KEYS):
        parser.error(f"--stacks: unknown {', '.join(sorted(only - set(KEYS)))}; accepted: {', '.join(KEYS)}")
    summary = run(args.rounds, args.duration, args.connections, args.baseline_ref or None, args.profile, only)
    if args.json:
        Path(args.json).write_text(json.dumps(summary))
    print(report(summary))


if __name__ == "__main__":
    main()
