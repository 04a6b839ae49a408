"""Reading Zipkin and VictoriaMetrics through their HTTP APIs (shared by the e2e modules)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from collector import backends
from tests.conftest import require

T = TypeVar("T")


def require_backends() -> None:
    """Zipkin's jar, Java and victoria-metrics: skip locally when missing, fail under CI=true."""
    for what, check in (
        ("java (Zipkin runs on Java 17+; Debian: default-jre-headless)", lambda: shutil.which("java")),
        ("the Zipkin jar (python collector/backends.py install zipkin)", backends.zipkin_jar),
        ("victoria-metrics (python collector/backends.py install victoriametrics)", backends.victoriametrics_bin),
    ):
        try:
            found = bool(check())
        except backends.BackendMissing:
            found = False
        require(found, what)


def eventually(what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def zipkin_trace(zipkin: str, trace_id: str) -> list[dict[str, Any]]:
    """The spans Zipkin holds for `trace_id` (its v2 JSON), [] if none."""
    response = httpx.get(f"{zipkin}/api/v2/trace/{trace_id}", timeout=10.0)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return list(response.json())


def zipkin_services(spans: list[dict[str, Any]]) -> set[str]:
    return {s.get("localEndpoint", {}).get("serviceName", "") for s in spans}


def zipkin_whole(spans: list[dict[str, Any]], servers: int = 4) -> list[dict[str, Any]] | None:
    """`spans` once `servers` SERVER spans are in and every parent is in the trace."""
    ids = {s["id"] for s in spans}
    if sum(s.get("kind") == "SERVER" for s in spans) >= servers and all(
        s["parentId"] in ids for s in spans if s.get("parentId")
    ):
        return spans
    return None


def promql(base: str, expr: str) -> list[dict[str, Any]]:
    """/api/v1/query on Prometheus or VictoriaMetrics (the same API)."""
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10.0)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def promql_value(base: str, expr: str) -> float | None:
    result = promql(base, expr)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


def file_spans(path: Path, max_bytes: int | None = None) -> dict[str, dict[str, tuple[str, str, str | None]]]:
    """trace id -> span id -> (service, kind, parent id) from an OTLP-JSON lines file (the
    collector's file exporter), reading only its first `max_bytes` if given. A line being
    written right now is skipped."""
    kinds = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes) if max_bytes is not None else fh.read()
    except FileNotFoundError:
        return {}
    out: dict[str, dict[str, tuple[str, str, str | None]]] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            batch = json.loads(line)
        except ValueError:
            continue
        for rs in batch.get("resourceSpans", []):
            attrs = rs.get("resource", {}).get("attributes", [])
            service = next((a["value"].get("stringValue", "") for a in attrs if a["key"] == "service.name"), "")
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    kind = kinds.get(int(s.get("kind", 0)), "UNSPECIFIED")
                    out.setdefault(s["traceId"], {})[s["spanId"]] = (service, kind, s.get("parentSpanId") or None)
    return out
