"""`otel-dist demo`: the console script, run as a user runs it; it cleans up after itself, also on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)  # the embedded default
    return env


def processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory is `folder` (the demo starts its services there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder.resolve():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_demo_runs_and_prints_the_summary(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [str(BIN / "otel-dist"), "demo", "--duration", "10", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=150,
        env=demo_env(),
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "otel-dist demo summary" in out
    assert len(re.findall(r"^\s+\d+\.\ds\s+sent", out, re.M)) >= 8  # progress, once a second
    sent = int(re.search(r"Requests through the gateway: (\d+)", out).group(1))
    ok = int(re.search(r"^\s+ok\s+(\d+)", out, re.M).group(1))
    assert sent > 50 and ok > 20
    assert int(re.search(r"503 breaker open\s+(\d+)", out).group(1)) > 0
    breaker = re.search(r"^Breaker gateway -> orders: (.*)$", out, re.M).group(1)
    assert breaker.startswith("closed -> open") and breaker.rstrip().split(" at ")[-2].endswith("half_open -> closed")
    example = re.search(r"^Example trace ([0-9a-f]{32})\b(.*)$", out, re.M)
    assert example is not None
    assert all(name in example.group(2) for name in ("gateway", "auth", "orders"))
    assert "Where to look:" in out and "/metrics" in out and f"{run_dir}/gateway.log" in out
    assert "stopped gateway, orders, auth" in out
    assert processes_in(run_dir) == []
    # The services' logs are JSON lines carrying the example trace id.
    trace_id = example.group(1)
    assert trace_id in (run_dir / "auth.log").read_text() and trace_id in (run_dir / "orders.log").read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_ctrl_c_stops_every_process_the_demo_started(tmp_path):
    run_dir = tmp_path / "run"
    demo = subprocess.Popen(
        [str(BIN / "otel-dist"), "demo", "--duration", "60", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env(),
    )
    try:
        assert demo.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        for line in demo.stdout:  # wait for the first progress line: the services are up
            lines.append(line)
            if " sent " in line or time.monotonic() > deadline:
                break
        assert any(" sent " in line for line in lines), "".join(lines)
        assert len(processes_in(run_dir)) == 3
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, rest
    assert "interrupted" in rest and "stopped gateway, orders, auth" in rest
    assert processes_in(run_dir) == []


def test_example_trace_from_what_the_collector_exported(tmp_path):
    """In stack mode the demo reads the collector's OTLP-JSON export (the stack's sink file)."""
    import json

    from otel_dist._demo import span_tree, spans_from_otlp_json

    trace_id = "0af7651916cd43dd8448eb211c80319c"

    def span(span_id: str, parent: str, name: str, kind: int) -> dict:
        return {
            "traceId": trace_id,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": "1000000",
            "endTimeUnixNano": "3000000",
            "attributes": [{"key": "http.route", "value": {"stringValue": "/x"}}],
        }

    def batch(service: str, *spans: dict) -> str:
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
        return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]})

    path = tmp_path / "traces.jsonl"
    other = batch("noise", span("1111111111111111", "", "GET /", 2)).replace(trace_id, "f" * 32)
    path.write_text(
        "\n".join(
            [
                batch("auth", span("00f067aa0ba902b7", "b7ad6b7169203331", "POST /introspect", 2)),
                other,
                batch(
                    "gateway",
                    span("a000000000000001", "", "GET /x", 2),
                    span("b7ad6b7169203331", "a000000000000001", "POST", 3),
                ),
            ]
        )
        + "\n"
    )
    spans = spans_from_otlp_json(path, trace_id)
    tree = [(depth, s.service, s.kind, s.name) for depth, s in span_tree(spans)]
    assert tree == [
        (0, "gateway", "SERVER", "GET /x"),
        (1, "gateway", "CLIENT", "POST"),
        (2, "auth", "SERVER", "POST /introspect"),
    ]
    assert spans[0].attributes == {"http.route": "/x"} and spans[0].duration_ms == 2.0
