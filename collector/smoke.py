"""End-to-end smoke check of the local stack (run with the project venv).

    .venv/bin/python collector/smoke.py [--keep]

Starts the stack on free ports (own state file, so it does not clash with a running
`stack.py up`), sends a trace, logs and the otel-dist metrics through the Python OTLP/HTTP
exporters, then checks that:
  * the trace and the log reach the sink files, the trace reaches Zipkin (its API),
  * the span metrics reach VictoriaMetrics (Prometheus remote_write),
  * Prometheus (via /api/v1/query) sees the app metrics, the span metrics and the
    collector's own metrics, under the names the rules in rules/ use,
  * stopping leaves no process behind.
Prints the Prometheus metric names that came out. Exit code 0 = all good.
This is also a worked example for the e2e tests built on stack.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from stack import Stack, start_stack

RESOURCE = Resource.create(
    {
        "service.name": "smoke-svc",
        "service.instance.id": "smoke-1",
        "deployment.environment.name": "test",
    }
)

# (PromQL selector that must return data, what it proves)
EXPECTED = [
    ('http_server_request_duration_seconds_bucket{job="smoke-svc",http_route="/orders/{id}"}', "app histogram"),
    ('otel_dist_circuit_breaker_state{otel_dist_target="orders"}', "gauge"),
    ('otel_dist_client_retries_total{otel_dist_target="orders"}', "counter"),
    ("otel_dist_client_give_ups_total", "counter"),
    ("otel_dist_circuit_breaker_transitions_total", "counter"),
    ('traces_span_metrics_calls_total{service_name="smoke-svc"}', "span metrics"),
    ('traces_span_metrics_duration_seconds_bucket{service_name="smoke-svc"}', "span metrics histogram"),
    ('http_server_request_duration_seconds_count{deployment_environment_name="test"}', "resource label"),
    # The collector's own metrics have no _total suffix at v0.165 (its telemetry defaults).
    ('otelcol_receiver_accepted_spans{receiver="otlp"}', "collector own metrics"),
    ('up{job="otelcol"}', "collector scrape target"),
]


def send_telemetry(stack: Stack) -> str:
    base = stack.urls["otlp_http"]
    tp = TracerProvider(resource=RESOURCE)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics"), export_interval_millis=60_000
    )
    mp = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    lp = LoggerProvider(resource=RESOURCE)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{base}/v1/logs")))

    meter = mp.get_meter("otel_dist.smoke")
    duration = meter.create_histogram("http.server.request.duration", unit="s")
    state = meter.create_gauge("otel_dist.circuit_breaker.state")
    retries = meter.create_counter("otel_dist.client.retries")
    give_ups = meter.create_counter("otel_dist.client.give_ups")
    transitions = meter.create_counter("otel_dist.circuit_breaker.transitions")

    tracer = tp.get_tracer("otel_dist.smoke")
    with tracer.start_as_current_span("GET /orders/{id}", kind=trace.SpanKind.SERVER) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("http.response.status_code", 500)
        # Recorded inside the span so the SDK attaches a trace_id exemplar.
        duration.record(
            0.42,
            {
                "http.request.method": "GET",
                "http.route": "/orders/{id}",
                "http.response.status_code": 500,
                "error.type": "500",
            },
        )
        state.set(1, {"otel_dist.target": "orders"})
        retries.add(2, {"otel_dist.target": "orders", "otel_dist.retry.reason": "timeout"})
        give_ups.add(1, {"otel_dist.target": "orders"})
        transitions.add(
            1,
            {
                "otel_dist.target": "orders",
                "otel_dist.circuit_breaker.from": "closed",
                "otel_dist.circuit_breaker.to": "open",
            },
        )
        lp.get_logger("otel_dist.smoke").emit(
            body="smoke log", severity_number=SeverityNumber.INFO, severity_text="INFO"
        )

    # One metric export only (at shutdown): the exporter exposes the *latest* point, and a
    # second export without new measurements would carry no exemplars.
    tp.shutdown()
    mp.shutdown()
    lp.shutdown()
    return trace_id


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def prom_query(stack: Stack, expr: str, where: str = "prometheus") -> list[dict]:
    url = stack.urls[where] + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]["result"]


def prom_exemplars(stack: Stack, metric: str, trace_id: str) -> list[dict]:
    """Exemplars of ``metric`` carrying ``trace_id`` (needs --enable-feature=exemplar-storage)."""
    now = time.time()
    query = urllib.parse.urlencode({"query": metric, "start": now - 300, "end": now + 60})
    with urllib.request.urlopen(f"{stack.urls['prometheus']}/api/v1/query_exemplars?{query}", timeout=5) as resp:
        data = json.load(resp)["data"]
    return [e["labels"] for series in data for e in series["exemplars"] if e["labels"].get("trace_id") == trace_id]


def zipkin_has(stack: Stack, trace_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.urls['zipkin']}/api/v2/trace/{trace_id}", timeout=5) as resp:
            return bool(json.load(resp))
    except urllib.error.HTTPError:
        return False


def sink_has(stack: Stack, signal: str, needle: str) -> bool:
    path = stack.sink_dir / f"{signal}.jsonl"
    return path.exists() and needle in path.read_text()


def main() -> int:
    keep = "--keep" in sys.argv
    state_file = Path(tempfile.mkdtemp(prefix="otel-dist-smoke-")) / "stack.json"
    t0 = time.monotonic()
    stack = start_stack(
        free_ports=True,
        scrape_interval="1s",
        state_file=state_file,
        # Span-metric exemplars are only exposed until the next flush: keep the
        # flush interval above the scrape interval so Prometheus sees them.
        env={"OTELCOL_SPAN_METRICS_FLUSH_INTERVAL": "3s"},
    )
    print(f"stack up in {time.monotonic() - t0:.1f}s: {stack.urls['prometheus']} pids={stack.pids}")
    ok = True
    try:
        trace_id = send_telemetry(stack)
        wait_for("trace in sink", lambda: sink_has(stack, "traces", trace_id))
        print(f"ok   trace {trace_id} in {stack.sink_dir / 'traces.jsonl'}")
        wait_for("log in sink", lambda: sink_has(stack, "logs", "smoke log"))
        print("ok   log in sink")
        wait_for("trace in Zipkin", lambda: zipkin_has(stack, trace_id), timeout=60)
        print(f"ok   trace in Zipkin: {stack.zipkin_trace_url(trace_id)}")
        vm = 'traces_span_metrics_calls_total{service_name="smoke-svc"}'
        result = wait_for(f"{vm} in VictoriaMetrics", lambda: prom_query(stack, vm, "victoriametrics"), timeout=60)
        print(f"ok   span metrics in VictoriaMetrics (remote_write): {result[0]['metric']}")
        for expr, what in EXPECTED:
            try:
                result = wait_for(expr, lambda e=expr: prom_query(stack, e))
                names = sorted({r["metric"].get("__name__", "") for r in result})
                print(f"ok   {what:24} {names} {result[0]['metric']}")
            except AssertionError as exc:
                ok = False
                print(f"FAIL {what:24} {exc}")
        for metric in ("http_server_request_duration_seconds_bucket", "traces_span_metrics_duration_seconds_bucket"):
            try:
                ex = wait_for(f"exemplar on {metric}", lambda m=metric: prom_exemplars(stack, m, trace_id))
                print(f"ok   exemplar trace_id={trace_id} on {metric}: {ex}")
            except AssertionError as exc:
                ok = False
                print(f"FAIL exemplar {exc}")
        names = prom_query(stack, 'count by (__name__) ({__name__=~"otel_dist.*|http_.*|traces_.*"})')
        print("app-side metric names in Prometheus:", sorted(r["metric"]["__name__"] for r in names))
    finally:
        if keep:
            print(f"--keep: left running; stop with: python collector/stack.py --state-file {state_file} down")
        else:
            pids = dict(stack.pids)
            stack.stop()
            leftover = {n: p for n, p in pids.items() if Path(f"/proc/{p}").exists()}
            print("ok   all processes stopped" if not leftover else f"FAIL left running: {leftover}")
            ok = ok and not leftover
            shutil.rmtree(state_file.parent, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
