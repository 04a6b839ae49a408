"""Cost of one successful call through ``ServiceClient`` compared with a bare ``httpx.AsyncClient``.

The upstream is a minimal ASGI app under uvicorn in a separate process (so its CPU does not share the
client's GIL).  The client process is bootstrapped like a service (httpx instrumented, spans batched
to an exporter that drops them, Prometheus reader on).  Once set up (telemetry, clients, warm-up calls)
it collects and freezes its heap (``gc.collect(); gc.freeze()``, as the server layer does when the app's
start-up completes, ``OTEL_DIST_GC_FREEZE``), the same for every variant; ``--no-gc-freeze`` measures
without it.  Each round makes ``--calls`` sequential GETs per variant, interleaved call by call (the
variants take turns, the first one rotating, each call timed alone), so a change in the machine's load
hits every variant alike; reported are medians over rounds of wall-clock µs per call and of
client-process CPU µs per call, and the paired per-round difference to bare httpx.

    python -m benchmarks.client_overhead [--rounds 15] [--calls 400]
    python -m benchmarks.client_overhead --count      # function calls per call (deterministic, any load)
    python -m benchmarks.client_overhead --profile    # cProfile of the ServiceClient calls, by own time
    python -m benchmarks.client_overhead --no-gc-freeze  # heap not frozen after set-up

Variants: ``httpx (uninstrumented)`` (httpx's default transport, instrumentation suppressed: what a plain
app pays; the base of the differences), ``httpx`` (the same client with the CLIENT span of the selected
instrumentation: otel-dist's lean one by default, ``OTEL_DIST_CLIENT_INSTRUMENTATION=contrib`` for the
contrib one), ``ServiceClient`` (as a user gets it: logical span, deadline, retry budget, backoff, breaker,
metrics, the service token header as the example services send it (``ServiceTokenAuth``, cached HS256
token), then the same CLIENT span, over its default connection layer for a plain-HTTP service,
``otel_dist/_transport.py``), and ``ServiceClient, httpx pool`` (the same over httpx's default transport:
like for like with the base, so what telemetry and resilience cost stays visible).
Target (issue 13): ``ServiceClient`` at most +80 µs wall over the uninstrumented call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from benchmarks.calls import counting_calls

NAMES = ("httpx (uninstrumented)", "httpx", "ServiceClient", "ServiceClient, httpx pool")


async def upstream_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The smallest useful upstream: 200, two bytes."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(upstream_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    from otel_dist.testing import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.client_overhead", "--serve", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url + "/")
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("upstream did not start") from None
            time.sleep(0.05)


def telemetry() -> Any:
    """Bootstrap as a service would, with spans batched to an exporter that drops them."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from otel_dist import _bootstrap

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    extras = _bootstrap.Extras(span_processors=[BatchSpanProcessor(Drop())])
    env = {k: v for k, v in os.environ.items() if k == "OTEL_DIST_CLIENT_INSTRUMENTATION"}
    return _bootstrap._bootstrap({"service_name": "bench-caller", "log_level": "WARNING"}, extras, env=env)


async def measure(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per call over `n` sequential calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await call()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def interleaved(
    variants: Sequence[Callable[[], Awaitable[Any]]], n: int, first: int
) -> list[tuple[float, float]]:
    """(wall µs, CPU µs) per call of each variant over `n` turns, the variants taking turns call by call."""
    count = len(variants)
    wall, cpu = [0.0] * count, [0.0] * count
    clock, cpu_clock = time.perf_counter, time.process_time
    for turn in range(n):
        for k in range(count):
            i = (first + turn + k) % count
            w, c = clock(), cpu_clock()
            await variants[i]()
            c2, w2 = cpu_clock(), clock()
            wall[i] += w2 - w
            cpu[i] += c2 - c
    return [(wall[i] / n * 1e6, cpu[i] / n * 1e6) for i in range(count)]


async def count_calls(call: Callable[[], Awaitable[Any]], n: int) -> float:
    """Python and C function calls per call (``sys.setprofile``; a coroutine resumed counts again)."""
    with counting_calls() as counted:
        for _ in range(n):
            await call()
    return counted[0] / n


async def profile_calls(call: Callable[[], Awaitable[Any]], n: int) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        await call()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(45)
    stats.sort_stats("cumtime").print_stats(45)
    return out.getvalue()


async def run(
    url: str, rounds: int, calls: int, mode: str = "time", gc_freeze: bool = True
) -> dict[str, dict[str, list[float]]]:
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    from otel_dist import ServiceClient, ServiceTokenAuth

    tel = telemetry()
    auth = ServiceTokenAuth("bench-caller", "bench-upstream", secret="benchmark-only-secret-0123456789abcdef")
    results: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "calls": []} for name in NAMES}
    httpx_pool = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
    async with (
        httpx.AsyncClient(base_url=url) as bare,
        ServiceClient("bench-upstream", url, auth=auth, telemetry=tel) as client,
        ServiceClient("bench-upstream", url, auth=auth, telemetry=tel, transport=httpx_pool) as on_httpx_pool,
    ):

        async def uninstrumented() -> None:
            with suppress_http_instrumentation():
                (await bare.get("/")).raise_for_status()

        async def plain() -> None:
            (await bare.get("/")).raise_for_status()

        async def resilient() -> None:
            (await client.get("/")).raise_for_status()

        async def resilient_httpx_pool() -> None:
            (await on_httpx_pool.get("/")).raise_for_status()

        variants = dict(zip(NAMES, (uninstrumented, plain, resilient, resilient_httpx_pool), strict=True))
        for variant in variants.values():  # warm-up: connections, caches, instruments
            await measure(variant, calls // 4 or 1)
        if gc_freeze:  # set-up done: what a service does once its start-up completes (see the docstring)
            gc.collect()
            gc.freeze()
        if mode == "count":
            for name in NAMES:
                results[name]["calls"].append(await count_calls(variants[name], calls))
            rounds = 0
        elif mode == "profile":
            print(await profile_calls(resilient, calls))
            rounds = 0
        for r in range(rounds):
            for name, (wall, cpu) in zip(NAMES, await interleaved(list(variants.values()), calls, r), strict=True):
                results[name]["wall"].append(wall)
                results[name]["cpu"].append(cpu)
    tel.shutdown()
    if gc_freeze:
        gc.unfreeze()
    return results


def report(results: dict[str, dict[str, list[float]]]) -> str:
    """Medians, and paired per-round differences to the uninstrumented call (the issue-13 target's base)."""
    base = results[NAMES[0]]
    lines = [
        f"{'variant':<27}{'wall µs/call':>14}{'CPU µs/call':>14}{'Δ wall vs uninstr.':>20}{'Δ CPU vs uninstr.':>19}",
    ]
    for name in NAMES:
        wall, cpu = results[name]["wall"], results[name]["cpu"]
        d_wall = statistics.median(a - b for a, b in zip(wall, base["wall"], strict=True))
        d_cpu = statistics.median(a - b for a, b in zip(cpu, base["cpu"], strict=True))
        lines.append(
            f"{name:<27}{statistics.median(wall):>14.1f}{statistics.median(cpu):>14.1f}{d_wall:>+20.1f}{d_cpu:>+19.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--count", action="store_true", help="function calls per call instead of time")
    parser.add_argument("--profile", action="store_true", help="cProfile of --calls ServiceClient calls")
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="do not freeze the heap after set-up (services do by default)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    mode = "count" if args.count else "profile" if args.profile else "time"
    proc, url = start_upstream()
    try:
        results = asyncio.run(run(url, args.rounds, args.calls, mode, gc_freeze=not args.no_gc_freeze))
    finally:
        proc.terminate()
        proc.wait(10)
    if mode == "profile":
        return
    if mode == "count":
        base = results[NAMES[0]]["calls"][0]
        print(f"function calls per call ({args.calls} calls per variant; a resumed coroutine counts again)")
        for name in NAMES:
            n = results[name]["calls"][0]
            print(f"{name:<27}{n:>10.0f}{n - base:>+10.0f}")
        return
    heap = "heap not frozen" if args.no_gc_freeze else "heap frozen after set-up, as in a service"
    print(
        f"{args.rounds} rounds x {args.calls} sequential GETs per variant, interleaved call by call, medians; {heap}; "
        f"upstream {url} (own process)"
    )
    print(report(results))


if __name__ == "__main__":
    main()
