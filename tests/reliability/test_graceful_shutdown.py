"""SIGTERM during load: in-flight requests finish, new connections are refused, nothing queued is lost."""

from __future__ import annotations

import asyncio
import time

import httpx

from ._support import Sink, load, prom_sum, run_load, sigterm, start_service

FAST, SLOW, LATE = 300, 40, 20


def wait_active(url: str, n: int, timeout: float = 10.0) -> float:
    """Poll the (untraced) /metrics until `n` requests are in flight on the server."""
    deadline = time.monotonic() + timeout
    active = 0.0
    while time.monotonic() < deadline:
        active = prom_sum(httpx.get(url + "/metrics").text, "http_server_active_requests")
        if active >= n:
            break
        time.sleep(0.05)
    return active


def test_sigterm_under_load_drains_refuses_and_exports_every_queued_span_and_log(tmp_path):
    sink = Sink(tmp_path).start()
    # A 30 s batch delay keeps the spans queued until exit: only the shutdown flush can deliver them.
    svc = start_service(
        tmp_path,
        "shutdown-svc",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
        OTEL_BSP_SCHEDULE_DELAY="30000",
        OTEL_BSP_MAX_QUEUE_SIZE="100000",
        OTEL_BLRP_SCHEDULE_DELAY="30000",
        OTEL_BLRP_MAX_QUEUE_SIZE="100000",
        OTEL_METRICS_EXPORTER="prometheus",
    )
    try:
        fast = run_load(lambda i: f"{svc.url}/work/{i}", total=FAST, concurrency=20)
        assert fast.statuses == {200: FAST}, fast.summary()

        async def scenario() -> tuple:
            slow = asyncio.ensure_future(load(lambda i: f"{svc.url}/slow?ms=2000", total=SLOW, concurrency=SLOW))
            active = await asyncio.to_thread(wait_active, svc.url, SLOW)
            sigterm(svc)
            signalled = time.monotonic()
            await asyncio.sleep(0.5)  # uvicorn notices the signal within 0.1 s and closes its listener
            late = await load(lambda i: f"{svc.url}/work/{i}", total=LATE, concurrency=5, timeout=5)
            return active, await slow, late, signalled

        active, slow, late, signalled = asyncio.run(scenario())
        exit_code = svc.proc.wait(20)
        exited_after = time.monotonic() - signalled
    finally:
        svc.stop()
    assert active == SLOW
    assert slow.statuses == {200: SLOW}, slow.summary()  # in flight at SIGTERM: all completed
    assert late.statuses == {} and set(late.errors) == {"ConnectError"}, late.summary()  # refused, no 5xx, no hang
    assert exited_after < 10, exited_after

    lines = svc.json_lines()
    served = [e for e in lines if e.get("logger") == "otel_dist.access"]
    assert len(served) == FAST + SLOW
    assert not [e for e in lines if "Queue full" in e.get("message", "")]  # so nothing may be missing
    try:
        got = sink.wait_for("shutdown-svc", spans=FAST + SLOW, logs=len(lines), timeout=5)
    finally:
        sink.stop()
    print(
        f"graceful shutdown: exit {exit_code} after {exited_after:.2f}s; sent {FAST + SLOW} spans and "
        f"{len(lines)} log records, sink received {got}"
    )
    assert got == {"spans": FAST + SLOW, "logs": len(lines)}
