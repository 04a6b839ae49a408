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
        # What the SDK says it produced (started spans, created log records) ...
        deadline = time.monotonic() + 15
        while True:
            metrics = httpx.get(svc.url + "/metrics").text
            produced = {
                "spans": prom_sum(metrics, "otel_sdk_span_started_total"),
                "logs": prom_sum(metrics, "otel_sdk_log_created_total"),
            }
            # ... reaches the sink without a shutdown flush: the batch processors keep up.
            received = sink.wait_for("lossless-svc", spans=int(produced["spans"]), logs=int(produced["logs"]))
            if received == produced or time.monotonic() > deadline:
                break
        dropped = prom_sum(metrics, "otel_sdk_processor_span_processed_total", error_type="queue_full")
        dropped += prom_sum(metrics, "otel_sdk_processor_log_processed_total", error_type="queue_full")
        lines = svc.json_lines()
    finally:
        svc.stop()
        sink.stop()
    served = [e for e in lines if e.get("logger") == "otel_dist.access"]
    print(f"nothing lost: {result.summary()}; produced {produced}, received {received}, JSON lines {len(lines)}")
    assert produced["spans"] == REQUESTS == len(served)
    assert produced["logs"] == len(lines)  # every JSON line written is also an OTel log record
    assert received == produced
    assert dropped == 0
