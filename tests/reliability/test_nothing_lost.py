"""Moderate load, healthy backend: every span and log record produced reaches the sink."""

from __future__ import annotations

import time

import httpx

from ._support import Sink, prom_sum, run_load, start_service

REQUESTS = 1000


def test_every_span_and_log_record_produced_is_received(tmp_path):
    sink = Sink(tmp_path).start()
    svc = start_service(tmp_path, "lossless-svc", OTEL_EXPORTER_OTLP_ENDPOINT=sink.url)
    try:
        result = run_load(lambda i: f"{svc.url}/work/{i}", total=REQUESTS, concurrency=20)
        assert result.statuses == {200: REQUESTS}, result.summary()
        # Produced: one server span per request (its access line shows it) and one OTel
        # log record per JSON line written; all of it reaches the sink without a shutdown flush.
        deadline = time.monotonic() + 15
        while True:
            lines = svc.json_lines()
            produced = {"spans": sum(e.get("logger") == "otel_dist.access" for e in lines), "logs": len(lines)}
            received = sink.wait_for("lossless-svc", spans=produced["spans"], logs=produced["logs"])
            if received == produced or time.monotonic() > deadline:
                break
        metrics = httpx.get(svc.url + "/metrics").text
        dropped = prom_sum(metrics, "otel_sdk_processor_span_processed_total", error_type="queue_full")
        dropped += prom_sum(metrics, "otel_sdk_processor_log_processed_total", error_type="queue_full")
    finally:
        svc.stop()
        sink.stop()
    print(f"nothing lost: {result.summary()}; produced {produced}, received {received}, JSON lines {len(lines)}")
    assert produced["spans"] == REQUESTS
    assert produced["logs"] >= 2 * REQUESTS  # the app's line and the access line, plus start-up lines
    assert received == produced
    assert dropped == 0
