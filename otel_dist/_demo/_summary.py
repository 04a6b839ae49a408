"""The demo's results: one example trace, the services' metrics, the summary it prints."""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ._model import SERVICES, Traffic, _DemoState
from ._sink import SinkSpan, span_tree, spans_from_otlp_json
from ._traffic import _classify


class _Results(_DemoState):
    """Collecting and printing what the run showed."""

    def _example_trace(self, traffic: Traffic) -> dict[str, Any] | None:
        reads = [o for o in traffic.outcomes if o.op == "read order" and o.status == 200 and o.trace_id]
        if not reads:
            return None
        # The last successful read: after the breaker healed, all three services answered it.
        trace_id = reads[-1].trace_id
        assert trace_id is not None
        sink, stack_traces = self.sink, self.stack_traces
        fetch: Callable[[], list[SinkSpan]] | None = None
        if sink is not None:
            fetch = functools.partial(sink.spans, trace_id)
        elif stack_traces is not None:  # what the collector exported, as OTLP-JSON lines
            fetch = functools.partial(spans_from_otlp_json, stack_traces, trace_id)
        if fetch is not None:
            spans: list[SinkSpan] = []
            deadline = time.monotonic() + (5 if sink is not None else 10)
            while time.monotonic() < deadline:
                spans = fetch()
                if {s.service for s in spans if s.kind == "SERVER"} >= set(SERVICES) and any(
                    s.parent_span_id is None for s in spans
                ):
                    time.sleep(0.5)  # the last batch of the slowest service
                    spans = fetch()
                    break
                time.sleep(0.2)
            if spans:
                return {"trace_id": trace_id, "spans": spans}
        # Exported elsewhere: the services crossed are in each service's JSON log lines.
        time.sleep(0.3)
        crossed = [
            name
            for name in ("gateway", "auth", "orders")
            if trace_id in self.services[name].log_path.read_text(errors="replace")
        ]
        return {"trace_id": trace_id, "services": crossed}

    def _scrape_metrics(self) -> dict[str, float]:
        wanted = {
            "gateway": ("http_server_request_duration_seconds_count", "otel_dist_circuit_breaker_transitions_total"),
            "orders": ("db_client_operation_duration_seconds_count", "http_server_request_duration_seconds_count"),
            "auth": ("db_client_operation_duration_seconds_count", "http_server_request_duration_seconds_count"),
        }
        values: dict[str, float] = {}
        for name, metric_names in wanted.items():
            try:
                text = httpx.get(self.services[name].url + "/metrics", timeout=3.0).text
            except httpx.HTTPError:
                continue
            for metric in metric_names:
                total = 0.0
                for line in text.splitlines():
                    if line.startswith(metric + "{") or line.startswith(metric + " "):
                        with contextlib.suppress(ValueError):
                            total += float(line.rsplit(" ", 1)[1])
                values[f"{name}:{metric}"] = total
        return values

    def _summary(
        self,
        traffic: Traffic,
        example: dict[str, Any] | None,
        transitions: list[tuple[float, str, str]],
        metrics: dict[str, float],
    ) -> list[str]:
        opts = self.options
        out = traffic.outcomes
        counts = _classify(out)
        lines = ["", "=" * 78, "otel-dist demo summary", "=" * 78]
        lines.append(
            f"Requests through the gateway: {len(out)} in {opts.duration:g} s ({len(out) / opts.duration:.1f}/s)"
        )
        by_op = Counter(o.op for o in out)
        lines.append("  by kind:    " + ", ".join(f"{op} {n}" for op, n in by_op.most_common()))
        by_status = Counter(o.status for o in out)
        lines.append(
            "  by status:  " + ", ".join(f"{status or 'no answer'} x{n}" for status, n in sorted(by_status.items()))
        )
        breaker_fast = [o.seconds for o in out if o.error == "dependency_unavailable"]
        explanations = {
            "ok": "200/201",
            "expected 4xx": "401 bad token, 404 someone else's order",
            "503 breaker open": (
                f"median {statistics.median(breaker_fast) * 1000:.0f} ms, orders not called: its breaker was open"
                if breaker_fast
                else "orders' breaker was open"
            ),
            "other 5xx": "orders' injected 503s, before the breaker opened",
            "transport error": "no answer from the gateway",
        }
        for key, text in explanations.items():
            lines.append(f"  {key:<18} {counts[key]:5d}   {text}")
        if traffic.fault_on_at is not None:
            off = f"{traffic.fault_off_at:.1f} s" if traffic.fault_off_at is not None else "the end"
            lines.append(
                f"Fault phase: orders answered 503 to every request from {traffic.fault_on_at:.1f} s to {off} "
                "(POST /_faults error_rate=1.0)"
            )
        if transitions:
            seen = ", ".join(f"{a} -> {b} at {t:.1f} s" for t, a, b in transitions)
            lines.append(f"Breaker gateway -> orders: {seen}")
        else:
            lines.append("Breaker gateway -> orders: no transition seen")
        lines.append("")
        lines.extend(self._trace_lines(example))
        lines.append("")
        lines.append("Where to look:")
        for name, service in self.services.items():
            lines.append(f"  {name:<8} metrics {service.url}/metrics   JSON logs {service.log_path}")
        if example is not None:
            lines.append(
                f"  one request's log lines in every service:  grep {example['trace_id']} {self.run_dir}/*.log"
            )
        if metrics:
            lines.append(
                "  at the end: gateway served {:.0f} requests and saw {:.0f} breaker transitions; "
                "orders ran {:.0f} and auth {:.0f} database operations".format(
                    metrics.get("gateway:http_server_request_duration_seconds_count", 0),
                    metrics.get("gateway:otel_dist_circuit_breaker_transitions_total", 0),
                    metrics.get("orders:db_client_operation_duration_seconds_count", 0),
                    metrics.get("auth:db_client_operation_duration_seconds_count", 0),
                )
            )
        lines.append(f"  traces went to {self.destination}")
        if self.collector is not None:
            lines.append(
                f"  collector stack: Prometheus {self.collector.get('prometheus', '?')}, "
                f"OTLP {self.collector.get('otlp_http', '?')}, Zipkin {self.collector.get('zipkin', '?')}/zipkin/"
            )
        else:
            lines.append(
                "  collector stack: not running (`otel-dist stack up` starts the collector, Prometheus and Zipkin)"
            )
        if not opts.keep_running:
            lines.append("  (the services stop now; --keep-running leaves them up to browse /metrics)")
        return lines

    def _trace_lines(self, example: dict[str, Any] | None) -> list[str]:
        if example is None:
            return ["Example trace: none (no order read succeeded)"]
        return self._tree_lines(example) + self._zipkin_lines(example["trace_id"])

    def _zipkin_lines(self, trace_id: str) -> list[str]:
        zipkin = (self.collector or {}).get("zipkin")
        if not zipkin:
            return []
        lines = [f"  see it in Zipkin: {zipkin}/zipkin/traces/{trace_id}"]
        if (self.collector or {}).get("topology") == "tiered":
            lines.append("  (tiered stack: kept only if tail sampling keeps it; errors and slow traces always are)")
        return lines

    def _tree_lines(self, example: dict[str, Any]) -> list[str]:
        trace_id = example["trace_id"]
        if "services" in example:
            crossed = ", ".join(example["services"]) or "?"
            return [
                f"Example trace {trace_id} (GET /orders/{{order_id}} at the gateway): services {crossed} "
                "(their JSON log lines carry this trace_id)"
            ]
        spans: list[SinkSpan] = example["spans"]
        crossed_order: list[str] = []
        for _, span in span_tree(spans):
            if span.kind == "SERVER" and span.service not in crossed_order:
                crossed_order.append(span.service)
        lines = [
            f"Example trace {trace_id}: GET /orders/{{order_id}} at the gateway, "
            f"{len(spans)} spans from {len(crossed_order)} services ({', '.join(crossed_order)}):"
        ]
        for depth, span in span_tree(spans):
            label = f"{'  ' * depth}{span.service:<8} {span.kind:<8} {_short_name(span)}"
            lines.append(f"  {label[:64]:<64} {span.duration_ms:7.1f} ms")
        return lines


def _short_name(span: SinkSpan) -> str:
    """SQLite statement spans are named "SELECT /full/path/orders.db": show the file name only."""
    verb, _, target = span.name.partition(" ")
    return f"{verb} {Path(target).name}" if "db.system.name" in span.attributes and "/" in target else span.name
