"""``/metrics`` scrape time with many series.

The service's own ``GET /metrics`` route (as instrument_app adds it) is driven
in-process through the instrumented app, after the HTTP metrics were given
``--series`` distinct attribute sets:

- ``counter``: one counter with N attribute sets -> N Prometheus series;
- ``histogram``: ``http.server.request.duration`` with N attribute sets (route x
  status), i.e. N x (17 buckets + sum + count) Prometheus lines: the realistic
  worst case of a service with many routes.

Reported: median wall-clock ms per scrape (collect + render + response) over
``--scrapes`` scrapes, and the body size.

    python -m benchmarks.scrape [--series 1000] [--scrapes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from benchmarks.app import build_app


def _telemetry() -> Any:
    from otel_dist import _bootstrap
    from otel_dist._settings import load_settings

    settings = load_settings(
        {"ENVIRONMENT": "test"}, service_name="bench", metrics_exporter="prometheus", access_log=False
    )
    devnull = open(os.devnull, "w", encoding="utf-8")  # lives as long as the process
    return _bootstrap._build_telemetry(settings, _bootstrap.Extras(log_stream=devnull))


def _app(tel: Any) -> Any:
    from otel_dist._instrumentation import instrument_fastapi
    from otel_dist._web import instrument_app

    instrument_fastapi(tel)
    return instrument_app(build_app(native_telemetry=False), telemetry=tel, auth=False)


def fill(tel: Any, kind: str, series: int) -> None:
    meter = tel.meter("bench.scrape")
    if kind == "counter":
        counter = meter.create_counter("bench.requests", unit="{request}")
        for i in range(series):
            counter.add(1, {"route": f"/r{i // 4}", "status": 200 + i % 4})
    else:
        histogram = meter.create_histogram("http.server.request.duration", unit="s")
        for i in range(series):
            attrs = {
                "http.request.method": "GET",
                "http.route": f"/r{i // 4}",
                "http.response.status_code": 200 + i % 4,
            }
            histogram.record(0.003 * (1 + i % 7), attrs)


async def _scrape(app: Any) -> tuple[int, int]:
    status = 0
    size = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"text/plain")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return status, size


def measure(kind: str, series: int, scrapes: int) -> dict[str, Any]:
    tel = _telemetry()
    fill(tel, kind, series)
    app = _app(tel)
    loop = asyncio.new_event_loop()
    try:
        status, size = loop.run_until_complete(_scrape(app))  # warm-up
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        times = []
        for _ in range(scrapes):
            start = time.perf_counter()
            loop.run_until_complete(_scrape(app))
            times.append((time.perf_counter() - start) * 1000)
    finally:
        loop.close()
        tel.shutdown()
    return {"kind": kind, "series": series, "median_ms": statistics.median(times), "bytes": size}


def run(series: int = 1000, scrapes: int = 30) -> list[dict[str, Any]]:
    return [measure(kind, series, scrapes) for kind in ("counter", "histogram")]


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| metric with N attribute sets | N | ms per scrape (median) | body |", "|---|---:|---:|---:|"]
    for r in rows:
        what = "counter (N series)" if r["kind"] == "counter" else "duration histogram (N x 19 lines)"
        lines.append(f"| {what} | {r['series']} | {r['median_ms']:.2f} | {r['bytes'] / 1024:.0f} KiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = run(args.series, args.scrapes)
    print(report(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
