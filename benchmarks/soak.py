"""The long soak: the three example services under steady load through the gateway, for as long as you like.

    python -m benchmarks.soak --minutes 30                 # report on stdout, exit 1 on any failure
    python -m benchmarks.soak --minutes 30 --kill-sink-every 5 --out soak.json

Starts an OTLP sink (tests/reliability/apps/sink.py) and auth, orders and gateway
as processes on loopback, signs a user up, then keeps `--connections` clients
reading an order through the gateway (gateway -> auth, orders -> auth: four
server spans per request).  Every `--sample` seconds it prints one row: requests,
statuses, p50/p99, RSS of each service, spans queued/dropped.  With
`--kill-sink-every M` the telemetry backend is SIGKILLed every M minutes and
started again 20 s later.  At the end the services get SIGTERM; the soak then checks:

- no 5xx and no transport error, ever;
- RSS of each service over the second half of the run grows less than `--max-growth-mib`;
- no span or log record dropped, and with a backend that never went away, the sink
  received exactly what the exporters report as sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.reliability._support import (
    SERVICE_NAMES,
    LoadResult,
    Sink,
    load,
    prom_samples,
    prom_sum,
    raise_open_files,
    rss_kib,
    start_services,
)


def telemetry_counts(metrics: str) -> dict[str, float]:
    exported = prom_samples(metrics, "otel_sdk_exporter_span_exported_total")
    exported_logs = prom_samples(metrics, "otel_sdk_exporter_log_exported_total")
    return {
        "spans_queued": prom_sum(metrics, "otel_sdk_processor_span_queue_size"),
        "spans_dropped": prom_sum(metrics, "otel_sdk_processor_span_processed_total", error_type="queue_full"),
        "logs_dropped": prom_sum(metrics, "otel_sdk_processor_log_processed_total", error_type="queue_full"),
        "spans_sent": sum(v for labels, v in exported if not labels.get("error_type")),
        "spans_failed": sum(v for labels, v in exported if labels.get("error_type")),
        "logs_sent": sum(v for labels, v in exported_logs if not labels.get("error_type")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to keep the load on (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds per report row (default 60)")
    parser.add_argument("--kill-sink-every", type=float, default=0.0, help="minutes between backend kills (0: never)")
    parser.add_argument("--max-growth-mib", type=float, default=20.0, help="allowed RSS growth over the 2nd half")
    parser.add_argument("--out", help="also write the samples and the verdict as JSON here")
    args = parser.parse_args(argv)

    raise_open_files(8192)
    tmp = Path(tempfile.mkdtemp(prefix="otel-dist-soak-"))
    sink = Sink(tmp, record=False).start()
    procs = start_services(
        tmp,
        secret=secrets.token_urlsafe(48),
        user_secret=secrets.token_urlsafe(48),
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
        OTEL_METRICS_EXPORTER="prometheus",
    )
    gateway = procs["gateway"].url
    samples: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    sink_killed = False
    try:
        credentials = {"username": "soak", "password": secrets.token_urlsafe(16)}
        assert httpx.post(gateway + "/register", json=credentials, timeout=30).status_code == 201
        token = httpx.post(gateway + "/login", json=credentials, timeout=30).json()["access_token"]
        headers = {"authorization": f"Bearer {token}"}
        order = httpx.post(gateway + "/orders", json={"item": "soak"}, headers=headers, timeout=30).json()["id"]
        url = f"{gateway}/orders/{order}"

        started = time.monotonic()
        end = started + args.minutes * 60
        next_kill = started + args.kill_sink_every * 60 if args.kill_sink_every else float("inf")
        restart_at = float("inf")
        print(f"soak: {args.minutes:g} min, {args.connections} connections, gateway {gateway}, work dir {tmp}")
        print(
            f"{'min':>5} {'requests':>8} {'rate/s':>7} {'5xx':>4} {'errors':>6} {'p50 ms':>7} {'p99 ms':>8}  "
            f"{'RSS MiB auth/orders/gateway':>28}  spans queued/dropped  sink"
        )
        while (now := time.monotonic()) < end:
            if now >= next_kill and sink.proc is not None:
                sink.kill()
                sink_killed = True
                restart_at, next_kill = now + 20, next_kill + args.kill_sink_every * 60
            if now >= restart_at:
                sink.start()
                restart_at = float("inf")
            window = min(args.sample, end - now, max(1.0, restart_at - now))
            stop_at = time.monotonic() + window
            result: LoadResult = asyncio.run(
                load(
                    lambda i: url,
                    total=10**9,
                    concurrency=args.connections,
                    headers=headers,
                    timeout=60,
                    stop=lambda stop_at=stop_at: time.monotonic() >= stop_at,
                )
            )
            metrics = {name: httpx.get(procs[name].url + "/metrics", timeout=10).text for name in SERVICE_NAMES}
            tele = {name: telemetry_counts(text) for name, text in metrics.items()}
            row = {
                "minute": round((time.monotonic() - started) / 60, 2),
                "requests": result.sent,
                "rate": round(result.sent / result.elapsed, 1) if result.elapsed else 0.0,
                "server_errors": result.server_errors,
                "errors": dict(result.errors),
                "statuses": {str(k): v for k, v in result.statuses.items()},
                "p50_ms": round(result.quantile(0.5) * 1000, 1) if result.latencies else None,
                "p99_ms": round(result.quantile(0.99) * 1000, 1) if result.latencies else None,
                "rss_kib": {name: rss_kib(procs[name].proc.pid) for name in SERVICE_NAMES},
                "spans_queued": sum(t["spans_queued"] for t in tele.values()),
                "dropped": sum(t["spans_dropped"] + t["logs_dropped"] for t in tele.values()),
                "sink": "down" if sink.proc is None else "up",
            }
            samples.append(row)
            totals.update(requests=result.sent, server_errors=result.server_errors, errors=sum(result.errors.values()))
            rss = "/".join(f"{row['rss_kib'][n] / 1024:.0f}" for n in SERVICE_NAMES)
            print(
                f"{row['minute']:5.1f} {row['requests']:8d} {row['rate']:7.1f} {row['server_errors']:4d} "
                f"{sum(result.errors.values()):6d} {row['p50_ms'] or 0:7.1f} {row['p99_ms'] or 0:8.1f}  {rss:>28}  "
                f"{row['spans_queued']:6.0f}/{row['dropped']:<6.0f}        {row['sink']}",
                flush=True,
            )
        if sink.proc is None:
            sink.start()
        # Let the batch processors drain (1 s schedule), then compare sent with received.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tele = {n: telemetry_counts(httpx.get(procs[n].url + "/metrics").text) for n in SERVICE_NAMES}
            if all(t["spans_queued"] == 0 for t in tele.values()):
                break
            time.sleep(0.5)
        time.sleep(1.5)
        received = sink.counts()
    finally:
        for proc in procs.values():
            proc.stop()
        sink.stop()

    half = samples[len(samples) // 2 :] or samples
    growth_mib = (
        {name: (half[-1]["rss_kib"][name] - half[0]["rss_kib"][name]) / 1024 for name in SERVICE_NAMES} if half else {}
    )
    dropped = {n: t["spans_dropped"] + t["logs_dropped"] for n, t in tele.items()}
    sent_vs_received = {
        n: {
            "spans_sent": t["spans_sent"],
            "spans_received": received["spans"].get(n, 0),
            "logs_sent": t["logs_sent"],
            "logs_received": received["logs"].get(n, 0),
        }
        for n, t in tele.items()
    }
    failures = []
    if totals["server_errors"] or totals["errors"]:
        failures.append(f"{totals['server_errors']} 5xx and {totals['errors']} transport errors")
    if any(g > args.max_growth_mib for g in growth_mib.values()):
        failures.append(f"RSS grew over the second half: {growth_mib}")
    if any(dropped.values()):
        failures.append(f"telemetry dropped: {dropped}")
    if not sink_killed:  # with a backend that never went away, every export arrived
        lost = {
            n: c
            for n, c in sent_vs_received.items()
            if c["spans_sent"] > c["spans_received"] or c["logs_sent"] > c["logs_received"]
        }
        if lost:
            failures.append(f"sent but not received: {lost}")
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    verdict = {
        "minutes": args.minutes,
        "connections": args.connections,
        "requests": totals["requests"],
        "server_errors": totals["server_errors"],
        "transport_errors": totals["errors"],
        "worst_p99_ms": max(p99s) if p99s else None,
        "rss_growth_second_half_mib": {n: round(g, 1) for n, g in growth_mib.items()},
        "telemetry_dropped": dropped,
        "sent_vs_received": sent_vs_received,
        "failures": failures,
    }
    print(json.dumps(verdict, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"samples": samples, "verdict": verdict}, indent=2))
    print("soak: PASS" if not failures else "soak: FAIL\n  " + "\n  ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
