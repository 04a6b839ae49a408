"""End to end: the built collector, a real Prometheus and the three example services as processes.

One stack (``collector/stack.py``: collector + Prometheus 2.42 + OTLP-JSON sink + Zipkin +
VictoriaMetrics on free loopback ports, 1 s scrape and rule evaluation) and one set of services
(auth, orders, gateway, exporting traces, logs and metrics over OTLP/HTTP to the collector) serve
every test of this module. The tests run in file order and each drives its own requests through
the gateway; the collector outage is last. What the collector exported is read from the sink's
``*.jsonl`` files, what Prometheus, Zipkin and VictoriaMetrics hold through their HTTP APIs.

Missing parts (``prometheus``; Java, the Zipkin jar, victoria-metrics; Go when the collector binary
is not built) skip the module, or fail it under ``CI=true`` (``tests.conftest.require``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.stack import (
    DEFAULT_COLLECTOR_BIN,
    ENV_COLLECTOR_BIN,
    ENV_PROMETHEUS_BIN,
    Stack,
    restart_collector,
    start_stack,
)
from otel_dist.testing import ServerProcess
from tests.conftest import require
from tests.e2e._support import (
    eventually,
    promql,
    promql_value,
    require_backends,
    zipkin_services,
    zipkin_trace,
    zipkin_whole,
)
from tests.example_services import ROOT as REPO_ROOT
from tests.example_services import caller_auth, clean_env, start_example_services

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "collector" / "builder-config.yaml"
# Open long enough for export (1 s) + scrape (1 s) + rule evaluation (1 s) to see it, short
# enough that recovery is quick. Under steady traffic a failed half-open probe re-opens it at once.
BREAKER_TIMEOUT = 3.0
READ_ROUTE = "/orders/{order_id}"
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
# Settings a developer shell may carry that would change what the services do.


# ----------------------------------------------------------------------------- what the sink holds


@dataclass(frozen=True)
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str


@dataclass(frozen=True)
class LogRecord:
    service: str
    trace_id: str
    span_id: str
    body: str
    severity: str


def _value(any_value: dict[str, Any]) -> Any:
    return next(iter(any_value.values()), None) if any_value else None


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value", {})) for kv in items}


def _batches(path: Path, needle: str | None = None) -> Iterator[dict[str, Any]]:
    """OTLP-JSON batches of a sink file (one per line), optionally only lines containing `needle`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if needle is not None and needle not in line:
            continue
        try:
            yield json.loads(line)
        except ValueError:  # the line being written right now
            continue


def sink_spans(stack: Stack, trace_id: str | None = None) -> list[Span]:
    out = []
    for batch in _batches(stack.sink_dir / "traces.jsonl", trace_id):
        for rs in batch.get("resourceSpans", []):
            service = str(_attributes(rs.get("resource", {}).get("attributes", [])).get("service.name"))
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    if trace_id is None or s["traceId"] == trace_id:
                        kind = KINDS.get(int(s.get("kind", 0)), str(s.get("kind")))
                        parent = s.get("parentSpanId") or None
                        out.append(Span(service, s["traceId"], s["spanId"], parent, s["name"], kind))
    return out


def sink_logs(stack: Stack, trace_id: str) -> list[LogRecord]:
    out = []
    for batch in _batches(stack.sink_dir / "logs.jsonl", trace_id):
        for rl in batch.get("resourceLogs", []):
            service = str(_attributes(rl.get("resource", {}).get("attributes", [])).get("service.name"))
            for sl in rl.get("scopeLogs", []):
                for r in sl.get("logRecords", []):
                    if r.get("traceId") == trace_id:
                        body = str(_value(r.get("body", {})))
                        out.append(LogRecord(service, trace_id, r.get("spanId", ""), body, r.get("severityText", "")))
    return out


def complete_trace(spans: list[Span], servers: int = 4) -> list[Span] | None:
    """`spans` once `servers` SERVER spans have arrived and every parent is in the trace."""
    ids = {s.span_id for s in spans}
    if sum(s.kind == "SERVER" for s in spans) >= servers and all(s.parent_id in ids for s in spans if s.parent_id):
        return spans
    return None


# ----------------------------------------------------------------------------- the module's stack


@dataclass
class E2E:
    stack: Stack
    procs: dict[str, ServerProcess]
    secret: str
    tmp: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @property
    def gateway(self) -> str:
        return self.procs["gateway"].url

    def where(self) -> str:
        """Where to look when something times out."""
        logs = ", ".join(p.log_path for p in self.procs.values())
        return f"(stack logs: {self.stack.data_dir}/logs, sink: {self.stack.sink_dir}; service logs: {logs})"

    def admin(self, target: str) -> httpx.Auth:
        return caller_auth(target, self.secret, caller="e2e-tests")

    def set_faults(self, error_rate: float) -> None:
        url = self.procs["orders"].url + "/_faults"
        response = self.http.post(url, json={"error_rate": error_rate}, auth=self.admin("orders"))
        assert response.status_code == 200, response.text

    # --- Prometheus HTTP API
    def _api(self, path: str, **params: Any) -> Any:
        response = self.http.get(self.stack.urls["prometheus"] + path, params=params)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._api("/api/v1/query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The single value of `expr` (None if it returns nothing)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str, **labels: str) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts named `name` whose labels include `labels`."""
        return [
            a
            for a in self._api("/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def exemplars(self, selector: str, since: float) -> list[dict[str, Any]]:
        """Exemplars (labels + series labels) of `selector` stored since `since` (unix time)."""
        data = self._api("/api/v1/query_exemplars", query=selector, start=since, end=time.time() + 60)
        return [{**e, "series": s["seriesLabels"]} for s in data for e in s["exemplars"]]

    # --- requests through the gateway
    def sign_up(self, name: str) -> dict[str, str]:
        credentials = {"username": f"{name}-{secrets.token_hex(3)}", "password": "correct horse battery"}
        assert self.http.post(self.gateway + "/register", json=credentials).status_code == 201
        token = self.http.post(self.gateway + "/login", json=credentials).json()["access_token"]
        return {"authorization": f"Bearer {token}"}

    def new_order(self, headers: dict[str, str], item: str = "book") -> int:
        response = self.http.post(self.gateway + "/orders", json={"item": item, "quantity": 2}, headers=headers)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


def _require_parts() -> None:
    prometheus = os.environ.get(ENV_PROMETHEUS_BIN) or shutil.which("prometheus") or ""
    require(
        os.access(prometheus, os.X_OK), f"prometheus (Debian: apt-get install prometheus; or set {ENV_PROMETHEUS_BIN})"
    )
    built = bool(os.environ.get(ENV_COLLECTOR_BIN)) or (
        DEFAULT_COLLECTOR_BIN.exists() and DEFAULT_COLLECTOR_BIN.stat().st_mtime > MANIFEST.stat().st_mtime
    )
    require(built or shutil.which("go") is not None, "go (to build the collector: collector/build.sh)")
    require_backends()


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    _require_parts()
    tmp = tmp_path_factory.mktemp("e2e")
    with ExitStack() as cleanup:
        stack = start_stack(
            free_ports=True,
            scrape_interval="1s",
            data_dir=tmp / "stack",  # kept after the run (pytest's tmp) for a post-mortem
            state_file=tmp / "stack.json",
            # Span-metric exemplars are exposed only until the next flush: keep it above the scrape interval.
            env={"OTELCOL_SPAN_METRICS_FLUSH_INTERVAL": "2s"},
        )
        cleanup.callback(stack.stop)
        secret = secrets.token_urlsafe(48)
        common = {
            "SERVICE_JWT_SECRET": secret,
            "OTEL_EXPORTER_OTLP_ENDPOINT": stack.urls["otlp_http"],
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "prometheus,otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            # Each request's access line as a log record too (by default only when its span is
            # not exported): checks 2 and 6 follow every request's records through the collector.
            "OTEL_DIST_ACCESS_LOG_EXPORT": "always",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "SERVICE_CLIENT_MAX_RETRIES": "1",
            "SERVICE_CLIENT_MAX_BACKOFF": "0.05",
            "CIRCUIT_BREAKER_TIMEOUT": str(BREAKER_TIMEOUT),
        }
        procs = start_example_services(tmp, common, cleanup)
        e2e = E2E(stack=stack, procs=procs, secret=secret, tmp=tmp)
        cleanup.callback(e2e.http.close)
        yield e2e
        pids = [*stack.pids.values(), *(p.proc.pid for p in procs.values())]
    # Everything started here is gone (stack.stop / proc.stop ran above, also after a failure).
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"processes left running: {left}"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@dataclass(frozen=True)
class Read:
    headers: dict[str, str]
    order_id: int
    trace_id: str
    root_span_id: str
    sent_at: float


@pytest.fixture(scope="module")
def read(e2e: E2E) -> Read:
    """One order read through the gateway: gateway -> auth, gateway -> orders -> auth."""
    headers = e2e.sign_up("e2e")
    order_id = e2e.new_order(headers, "lamp")
    sent_at = time.time()
    response = e2e.http.get(f"{e2e.gateway}/orders/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["username"].startswith("e2e-")
    _, trace_id, span_id, _ = response.headers["traceresponse"].split("-")
    return Read(headers, order_id, trace_id, span_id, sent_at)


# ----------------------------------------------------------------------------- 1. one trace, three services


def test_one_gateway_request_is_one_linked_trace_in_the_sink(e2e: E2E, read: Read) -> None:
    spans = eventually(
        f"trace {read.trace_id} with 4 SERVER spans in the sink {e2e.where()}",
        lambda: complete_trace(sink_spans(e2e.stack, read.trace_id)),
    )
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "a span was exported twice"
    assert {s.service for s in spans} == {"gateway", "orders", "auth"}

    def ancestors(span: Span) -> list[Span]:
        out = []
        while span.parent_id is not None:
            span = by_id[span.parent_id]
            out.append(span)
        return out

    roots = [s for s in spans if s.parent_id is None]
    assert [(r.service, r.kind, r.name) for r in roots] == [("gateway", "SERVER", f"GET {READ_ROUTE}")]
    assert roots[0].span_id == read.root_span_id  # the span the gateway named in its traceresponse header
    servers = {(s.service, s.name): s for s in spans if s.kind == "SERVER"}
    assert set(servers) == {
        ("gateway", f"GET {READ_ROUTE}"),
        ("auth", "POST /introspect"),
        ("orders", f"GET {READ_ROUTE}"),
        ("auth", "GET /users/{user_id}"),
    }
    # Each hop: the callee's SERVER span is the child of one of the caller's CLIENT spans (one per
    # attempt), which sits under the caller's own SERVER span; everything hangs from the root.
    for callee, caller in [
        (("auth", "POST /introspect"), "gateway"),
        (("orders", f"GET {READ_ROUTE}"), "gateway"),
        (("auth", "GET /users/{user_id}"), "orders"),
    ]:
        server = servers[callee]
        assert server.parent_id is not None
        client = by_id[server.parent_id]
        assert (client.service, client.kind) == (caller, "CLIENT"), (callee, client)
        assert next(a for a in ancestors(client) if a.kind == "SERVER").service == caller
        assert ancestors(server)[-1] == roots[0]


# ----------------------------------------------------------------------------- 2. logs with the trace


def test_the_services_logs_reach_the_sink_with_the_trace_and_span_ids(e2e: E2E, read: Read) -> None:
    access = {
        ("gateway", f"GET {READ_ROUTE} 200"),
        ("orders", f"GET {READ_ROUTE} 200"),
        ("auth", "POST /introspect 200"),
        ("auth", "GET /users/{user_id} 200"),
    }

    def linked_records() -> tuple[list[LogRecord], dict[str, Span]] | None:
        """The trace's log records once the 4 access records are in and each names a span of the trace."""
        records = sink_logs(e2e.stack, read.trace_id)
        by_id = {s.span_id: s for s in sink_spans(e2e.stack, read.trace_id)}
        if access <= {(r.service, r.body) for r in records} and all(r.span_id in by_id for r in records):
            return records, by_id
        return None

    logs, by_id = eventually(
        f"the 4 access-log records of trace {read.trace_id}, linked to its spans, in the sink {e2e.where()}",
        linked_records,
    )
    for record in logs:  # each record names a span of its own service
        assert by_id[record.span_id].service == record.service, record
    # An access record carries the span id of the SERVER span of the request it describes.
    for record in logs:
        if (record.service, record.body) in access:
            span = by_id[record.span_id]
            assert span.kind == "SERVER" and record.body == f"{span.name} 200", (record, span)


# ----------------------------------------------------------------------------- 3. PromQL: HTTP histogram, span metrics


def test_promql_finds_the_http_server_histogram_per_service_and_route_and_the_span_metrics(
    e2e: E2E, read: Read
) -> None:
    want = {("gateway", READ_ROUTE), ("orders", READ_ROUTE), ("auth", "/introspect"), ("auth", "/users/{user_id}")}
    selector = '{job=~"gateway|orders|auth", http_route!=""}'

    def routes(expr: str) -> dict[tuple[str, str], float]:
        return {(r["metric"]["job"], r["metric"]["http_route"]): float(r["value"][1]) for r in e2e.query(expr)}

    def all_routes() -> dict[tuple[str, str], float] | None:
        got = routes(f"sum by (job, http_route) (http_server_request_duration_seconds_count{selector})")
        return got if all(got.get(key, 0) >= 1 for key in want) else None

    eventually(f"http_server_request_duration_seconds_count >= 1 for {sorted(want)} {e2e.where()}", all_routes)
    # A real histogram: buckets with le labels up to +Inf, the +Inf bucket equal to the count, and a sum.
    buckets = routes(f"count by (job, http_route) (http_server_request_duration_seconds_bucket{selector})")
    assert all(buckets[key] >= 10 for key in want), buckets
    inf = routes(f'sum by (job, http_route) (http_server_request_duration_seconds_bucket{{le="+Inf", {selector[1:]})')
    sums = routes(f"sum by (job, http_route) (http_server_request_duration_seconds_sum{selector})")
    for key in want:
        assert inf[key] >= 1 and sums[key] > 0, (key, inf, sums)
    p99 = e2e.query(
        "histogram_quantile(0.99, sum by (job, http_route, le) "
        f"(http_server_request_duration_seconds_bucket{selector}))"
    )
    assert {(r["metric"]["job"], r["metric"]["http_route"]) for r in p99} >= want

    # Span metrics from the collector's span_metrics connector, one series per service / span / kind.
    expected_calls = {
        ("gateway", f"GET {READ_ROUTE}"),
        ("orders", f"GET {READ_ROUTE}"),
        ("auth", "POST /introspect"),
        ("auth", "GET /users/{user_id}"),
    }

    def calls() -> dict[tuple[str, str], float] | None:
        result = e2e.query(
            'sum by (service_name, span_name) (traces_span_metrics_calls_total{span_kind="SPAN_KIND_SERVER"})'
        )
        got = {(r["metric"]["service_name"], r["metric"]["span_name"]): float(r["value"][1]) for r in result}
        # >= 1: a new series is first exposed with 0 by the collector's exporter, then with its count.
        return got if all(got.get(key, 0) >= 1 for key in expected_calls) else None

    eventually(f"traces_span_metrics_calls_total >= 1 for {sorted(expected_calls)} {e2e.where()}", calls)


# ----------------------------------------------------------------------------- 4. fault phase: breaker, retries, alert


def test_orders_fault_opens_the_gateway_breaker_counts_retries_and_raises_the_alert_then_clears(
    e2e: E2E, read: Read
) -> None:
    url = f"{e2e.gateway}/orders/{read.order_id}"
    breaker = 'otel_dist_circuit_breaker_state{job="gateway", otel_dist_target="orders"}'
    retries = 'sum(otel_dist_client_retries_total{job="gateway", otel_dist_target="orders"})'
    labels = {"job": "gateway", "otel_dist_target": "orders"}
    eventually(f"{breaker} == 0 before the fault {e2e.where()}", lambda: e2e.value(breaker) == 0)
    retries_before = e2e.value(retries) or 0.0
    # The rule is the shipped one (for: 1m): a fault phase of a few seconds makes it pending, not firing.
    rules = e2e._api("/api/v1/rules", type="alert")["groups"]
    rule = next(r for g in rules for r in g["rules"] if r["name"] == "CircuitBreakerOpen")
    assert rule["duration"] == 60, rule

    e2e.set_faults(1.0)
    seen: dict[str, Any] = {}
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 3:
            statuses.append(e2e.http.get(url, headers=read.headers).status_code)  # keep traffic going
            if "open" not in seen and e2e.value(breaker) == 1:
                seen["open"] = True
            if "retries" not in seen and (e2e.value(retries) or 0.0) > retries_before:
                seen["retries"] = e2e.query('otel_dist_client_retries_total{job="gateway", otel_dist_target="orders"}')
            if "alert" not in seen and (active := e2e.alerts("CircuitBreakerOpen", **labels)):
                seen["alert"] = active[0]
            time.sleep(0.1)
    finally:
        e2e.set_faults(0.0)
    assert set(seen) == {"open", "retries", "alert"}, (seen, statuses, e2e.where())
    assert set(statuses) == {503}, statuses  # the fault, then the open breaker: 503 either way
    assert {r["metric"]["otel_dist_retry_reason"] for r in seen["retries"]} == {"status_503"}
    assert seen["alert"]["state"] in ("pending", "firing"), seen["alert"]
    assert seen["alert"]["labels"]["severity"] == "warning"

    # Recovery: after the breaker timeout a probe succeeds, the breaker closes, the gauge reads 0
    # and the alert leaves /api/v1/alerts.
    def recovered() -> bool:
        statuses.append(e2e.http.get(url, headers=read.headers).status_code)
        return statuses[-2:] == [200, 200] and e2e.value(breaker) == 0 and not e2e.alerts("CircuitBreakerOpen")

    eventually(f"recovery (statuses {statuses[-5:]}) {e2e.where()}", recovered, timeout=BREAKER_TIMEOUT + 25)


# ----------------------------------------------------------------------------- 5. exemplars


def test_query_exemplars_returns_a_latency_exemplar_whose_trace_is_in_the_sink(e2e: E2E, read: Read) -> None:
    """Two latency histograms carry trace_id exemplars: the gateway's own client-call histogram
    (the SDK's exemplar, recorded inside the logical-call span) and the collector's span-metrics
    histogram. (The server layer's http_server_request_duration_seconds has none: it is recorded
    after the request's span context is detached.)"""
    since = read.sent_at - 5
    for _ in range(3):  # fresh measurements: the exporter exposes exemplars of the latest point only
        assert e2e.http.get(f"{e2e.gateway}/orders/{read.order_id}", headers=read.headers).status_code == 200

    def exemplar_in_sink(selector: str) -> Callable[[], tuple[dict[str, Any], Span] | None]:
        def check() -> tuple[dict[str, Any], Span] | None:
            for exemplar in e2e.exemplars(selector, since):
                trace_id, span_id = exemplar["labels"].get("trace_id"), exemplar["labels"].get("span_id")
                spans = [s for s in sink_spans(e2e.stack, trace_id) if s.span_id == span_id] if trace_id else []
                if spans:
                    return exemplar, spans[0]
            return None

        return check

    # The gateway's call to orders: the exemplar names the logical-call span that was measured.
    client = 'otel_dist_client_call_duration_seconds_bucket{job="gateway", otel_dist_target="orders"}'
    exemplar, span = eventually(f"an exemplar on {client} from the sink {e2e.where()}", exemplar_in_sink(client))
    series = exemplar["series"]
    assert series["__name__"] == "otel_dist_client_call_duration_seconds_bucket"
    assert (span.service, span.kind, span.name) == ("gateway", "INTERNAL", f"{series['http_request_method']} orders")

    # Span metrics: the exemplar names a span of the service / name / kind of its series.
    spanmetrics = 'traces_span_metrics_duration_seconds_bucket{service_name="gateway", span_kind="SPAN_KIND_SERVER"}'
    exemplar, span = eventually(f"an exemplar on {spanmetrics} {e2e.where()}", exemplar_in_sink(spanmetrics))
    series = exemplar["series"]
    assert (span.service, span.name) == (series["service_name"], series["span_name"]), (span, series)
    assert span.kind == "SERVER"


# ----------------------------------------------------------------------------- 6. Zipkin and VictoriaMetrics


def test_the_trace_is_whole_in_zipkin_with_the_spans_the_sink_got(e2e: E2E, read: Read) -> None:
    zipkin = e2e.stack.urls["zipkin"]
    spans = eventually(
        f"trace {read.trace_id} whole in Zipkin {e2e.where()}",
        lambda: zipkin_whole(zipkin_trace(zipkin, read.trace_id)),
        timeout=60,
    )
    assert zipkin_services(spans) == {"gateway", "orders", "auth"}
    sink = eventually("the sink's copy", lambda: complete_trace(sink_spans(e2e.stack, read.trace_id)))
    assert {s["id"] for s in spans} == {s.span_id for s in sink}
    root = next(s for s in spans if not s.get("parentId"))
    assert (root["id"], root["localEndpoint"]["serviceName"], root["kind"]) == (read.root_span_id, "gateway", "SERVER")


def test_the_same_promql_answers_in_victoriametrics_with_the_external_labels(e2e: E2E, read: Read) -> None:
    vm, prom = e2e.stack.urls["victoriametrics"], e2e.stack.urls["prometheus"]
    expr = f'sum(http_server_request_duration_seconds_count{{job="gateway", http_route="{READ_ROUTE}"}})'

    def same_answer() -> tuple[float, float] | None:
        here, there = promql_value(prom, expr), promql_value(vm, expr)
        return (here, there) if here is not None and here == there else None

    # Both answer the same query with the same count once the latest scrape is written through.
    here, _ = eventually(f"{expr} equal in Prometheus and VictoriaMetrics {e2e.where()}", same_answer, timeout=60)
    assert here >= 1
    # Every series in VictoriaMetrics carries the writer's external_labels (prometheus.yml).
    series = promql(vm, f'http_server_request_duration_seconds_count{{job="gateway", http_route="{READ_ROUTE}"}}')
    assert series and all(
        (s["metric"].get("cluster"), s["metric"].get("prometheus")) == ("local", "otel-dist-stack") for s in series
    ), series


def test_otel_dist_trace_prints_the_zipkin_link_of_a_trace(e2e: E2E, read: Read) -> None:
    eventually("trace in Zipkin", lambda: zipkin_whole(zipkin_trace(e2e.stack.urls["zipkin"], read.trace_id)), 60)
    env = clean_env(OTEL_DIST_STACK_STATE=e2e.stack.state_file)
    cli = [str(Path(sys.executable).parent / "otel-dist"), "trace"]
    done = subprocess.run([*cli, read.trace_id], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    link, detail = done.stdout.splitlines()[:2]
    assert link == f"{e2e.stack.urls['zipkin']}/zipkin/traces/{read.trace_id}"
    assert httpx.get(link, timeout=10).status_code == 200  # the UI page itself
    assert detail.endswith("spans from auth, gateway, orders"), detail
    bad = subprocess.run([*cli, "not-a-trace"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "32 hex digits" in bad.stdout


def test_the_demo_prints_a_zipkin_link_to_its_example_trace_when_the_stack_is_up(e2e: E2E) -> None:
    env = clean_env(OTEL_DIST_STACK_STATE=e2e.stack.state_file, OTEL_BSP_SCHEDULE_DELAY="200")
    demo = [str(Path(sys.executable).parent / "otel-dist"), "demo", "--duration", "4", "--rate", "5"]
    done = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=240, cwd=str(REPO_ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    prefix = f"  see it in Zipkin: {e2e.stack.urls['zipkin']}/zipkin/traces/"
    links = [line for line in done.stdout.splitlines() if line.startswith(prefix)]
    assert len(links) == 1, done.stdout[-3000:]
    trace_id = links[0].removeprefix(prefix)
    assert f"Example trace {trace_id}:" in done.stdout  # the tree it printed is the one it links to
    spans = eventually(
        f"the demo's trace {trace_id} in Zipkin", lambda: zipkin_whole(zipkin_trace(e2e.stack.urls["zipkin"], trace_id))
    )
    assert zipkin_services(spans) == {"gateway", "orders", "auth"}


# ----------------------------------------------------------------------------- 7. collector outage


class Traffic(threading.Thread):
    """Steady requests through the gateway (reads and creations) until stopped; records every outcome."""

    def __init__(self, gateway: str, read: Read) -> None:
        super().__init__(name="e2e-traffic", daemon=True)
        self.gateway, self.read = gateway, read
        self.halt = threading.Event()
        # (start, end, kind, status or exception name, trace id)
        self.results: list[tuple[float, float, str, str, str | None]] = []

    def run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            i = 0
            while not self.halt.is_set():
                kind = "create" if i % 3 == 2 else "read"
                start = time.time()
                try:
                    if kind == "read":
                        r = client.get(f"{self.gateway}/orders/{self.read.order_id}", headers=self.read.headers)
                    else:
                        r = client.post(f"{self.gateway}/orders", json={"item": "pen"}, headers=self.read.headers)
                    outcome, trace = str(r.status_code), r.headers.get("traceresponse", "---").split("-")[1]
                except httpx.HTTPError as exc:
                    outcome, trace = type(exc).__name__, None
                self.results.append((start, time.time(), kind, outcome, trace))
                i += 1
                self.halt.wait(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(15)


def test_collector_killed_mid_traffic_no_request_fails_and_telemetry_resumes(e2e: E2E, read: Read) -> None:
    reads = f'http_server_request_duration_seconds_count{{job="gateway", http_route="{READ_ROUTE}"}}'
    count = f"sum({reads})"
    traffic = Traffic(e2e.gateway, read)
    traffic.start()
    try:
        eventually("traffic", lambda: len(traffic.results) >= 10)
        reads_before = eventually(f"{count} {e2e.where()}", lambda: e2e.value(count))
        old_pid = e2e.stack.pids["collector"]
        killed_at = time.time()
        # SIGKILL (a crash, nothing flushed), 3 s down, then the same binary, config and ports again.
        restart_collector(e2e.stack, kill=True, down_for=3.0)
        up_at = time.time()
        assert e2e.stack.pids["collector"] != old_pid and not _alive(old_pid)
        during = [r for r in traffic.results if killed_at < r[0] < up_at]
        reads_during = sum(r[2] == "read" and r[3] == "200" for r in during)

        # Prometheus saw the collector go away (its own metrics endpoint was down)...
        eventually(
            "up{job='otelcol'} == 0 during the outage",
            lambda: e2e.value('min_over_time(up{job="otelcol"}[1m])') == 0,
        )

        # ...and telemetry resumes: a trace of a request sent after the restart, with its logs,
        def fresh_trace() -> tuple[str, list[Span]] | None:
            for start, _, kind, outcome, trace in reversed(traffic.results):
                if start > up_at and kind == "read" and outcome == "200" and trace:
                    spans = complete_trace(sink_spans(e2e.stack, trace))
                    if spans:
                        return trace, spans
            return None

        trace_id, spans = eventually(f"a trace sent after the restart in the sink {e2e.where()}", fresh_trace)
        assert {s.service for s in spans} == {"gateway", "orders", "auth"}
        eventually(
            f"log records of trace {trace_id} in the sink",
            lambda: {r.service for r in sink_logs(e2e.stack, trace_id)} >= {"gateway", "orders", "auth"},
        )
        # metrics scraped again after the restart, counting the reads served while it was down
        # (the SDK's counters are cumulative), and span metrics flowing again.
        eventually(
            f"{count} scraped after the restart and >= {reads_before} + {reads_during} {e2e.where()}",
            lambda: (
                (e2e.value(f"max(timestamp({reads}))") or 0) > up_at
                and (e2e.value(count) or 0) >= reads_before + reads_during
            ),
        )
        eventually(
            "span metrics after the restart",
            lambda: (e2e.value('max(timestamp(traces_span_metrics_calls_total{service_name="gateway"}))') or 0) > up_at,
        )
    finally:
        traffic.stop()
    assert not traffic.is_alive()
    outcomes = [r[3] for r in traffic.results]
    failed = [r for r in traffic.results if r[3] not in ("200", "201")]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    assert len(during) >= 5, during  # traffic really ran while the collector was down
