"""A service pointed at the collector's gRPC port with the OTLP/HTTP exporter: one clear line per signal.

Against the real collector built from collector/ (its OTLP gRPC receiver), for six seconds of traffic with
100 ms batches and a 500 ms metric push: dozens of failed exports, three lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from collector.stack import DEFAULT_COLLECTOR_BIN, ENV_PROMETHEUS_BIN, start_stack
from tests.conftest import require
from tests.example_services import clean_env

pytestmark = pytest.mark.e2e

APP = """
import time, otel_dist
from opentelemetry import trace
otel_dist.bootstrap(service_name="misdirected")
log, tracer = otel_dist.get_logger("app"), trace.get_tracer("app")
end = time.monotonic() + 6
while time.monotonic() < end:
    with tracer.start_as_current_span("work"):
        log.info("working")
    time.sleep(0.05)
"""


def test_a_grpc_port_is_reported_once_per_signal_with_the_fix(tmp_path):
    prometheus = os.environ.get(ENV_PROMETHEUS_BIN) or shutil.which("prometheus") or ""
    require(os.access(prometheus, os.X_OK), "prometheus (Debian: apt-get install prometheus)")
    require(DEFAULT_COLLECTOR_BIN.exists() or shutil.which("go") is not None, "go (collector/build.sh)")
    stack = start_stack(free_ports=True, data_dir=tmp_path / "stack", state_file=tmp_path / "stack.json")
    try:
        grpc = stack.urls["otlp_grpc"]
        env = clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=grpc,
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_METRIC_EXPORT_INTERVAL="500",
        )
        run = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=180)
    finally:
        stack.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.strip() == ""  # nothing in plain text, at shutdown or before
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    exporters = [line for line in lines if line["logger"].startswith("opentelemetry.exporter")]
    by_signal = {line["message"].split()[1]: line["message"] for line in exporters}
    assert len(exporters) == 3 and set(by_signal) == {"traces", "metrics", "logs"}, [e["message"] for e in exporters]
    for signal, message in by_signal.items():
        assert message.startswith(f"OTLP {signal} export to {grpc} failed: this looks like a gRPC port"), message
        assert "usually port 4318" in message and "at most every 60 s" in message
    assert all(line["level"] == "WARNING" for line in exporters)
