"""Spec conformance: each case runs in fresh processes against a real OTLP receiver (HTTP and gRPC).

Every case runs ``tests/conformance/emit.py`` (OpenTelemetry API only) under otel-dist's
``opentelemetry-instrument`` and, where the behaviour is meant to match, under upstream's
(opentelemetry-distro in its own venv, see ``upstream.py``), both at once, and asserts what
arrived at the receiver: paths, headers, compression, transport, batch sizes, resource,
spans/records present or absent.  A deliberate difference has its own upstream check and
is listed in the README ("Deliberate differences from upstream").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

from otel_dist.testing import ServerProcess, free_port

from . import certs, upstream

ROOT = Path(__file__).resolve().parents[2]
EMIT = Path(__file__).with_name("emit.py")
OTEL_DIST_BIN = Path(sys.executable).parent
COMMON = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # upstream's distro would default to grpc
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",  # upstream's default is false
    "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # metrics leave once, at exit
    "OTEL_BSP_SCHEDULE_DELAY": "60000",  # batches leave when full, or at exit
    "OTEL_BLRP_SCHEDULE_DELAY": "60000",
}


# ---------------------------------------------------------------- the receiver


class Receiver:
    def __init__(self, tmp: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        https_port, grpcs_port = free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.grpc = f"http://127.0.0.1:{self.grpc_port}"
        self.https, self.grpcs = f"https://127.0.0.1:{https_port}", f"https://127.0.0.1:{grpcs_port}"
        self.certs = certs.make(tmp / "certs")  # mutual TLS: both listeners require a client certificate
        argv = [sys.executable, "-m", "tests.conformance.receiver", "--http-port", str(self.http_port)]
        argv += ["--grpc-port", str(self.grpc_port), "--tls-dir", str(self.certs)]
        argv += ["--https-port", str(https_port), "--grpcs-port", str(grpcs_port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = ServerProcess(argv, port=self.http_port, env=env, log_path=str(tmp / "receiver.log"), cwd=str(ROOT))
        self.proc.wait_ready("/records", timeout=60)

    def records(self, service: str) -> list[dict[str, Any]]:
        """Requests whose resource says service.name == `service`."""
        return [r for r in httpx.get(self.http + "/records", timeout=30).json() if service in services(r)]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    recv = Receiver(tmp_path_factory.mktemp("receiver"))
    try:
        yield recv
    finally:
        recv.proc.stop()


@pytest.fixture(scope="module")
def upstream_bin() -> Path:
    try:
        return upstream.ensure()
    except (subprocess.SubprocessError, OSError) as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"could not create the upstream venv: {error}")
        pytest.skip(f"upstream venv unavailable (no network?): {error}")


# ---------------------------------------------------------------- reading what arrived

_RESOURCE_KEY = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}
_SCOPE_KEY = {
    "traces": ("scopeSpans", "spans"),
    "metrics": ("scopeMetrics", "metrics"),
    "logs": ("scopeLogs", "logRecords"),
}


def _value(v: dict[str, Any]) -> Any:
    return next(iter(v.values())) if v else None


def resources(record: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for rs in record["body"].get(_RESOURCE_KEY[record["signal"]], []):
        out.append({a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])})
    return out


def services(record: dict[str, Any]) -> set[str]:
    return {r.get("service.name", "") for r in resources(record)}


def items(record: dict[str, Any]) -> list[dict[str, Any]]:
    scope_key, item_key = _SCOPE_KEY[record["signal"]]
    return [
        item
        for rs in record["body"].get(_RESOURCE_KEY[record["signal"]], [])
        for scope in rs.get(scope_key, [])
        for item in scope.get(item_key, [])
    ]


def of(records: list[dict[str, Any]], signal: str) -> list[dict[str, Any]]:
    return [r for r in records if r["signal"] == signal]


def work_spans(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for r in of(records, "traces") for s in items(r) if s["name"].startswith("work-")]


def item_logs(records: list[dict[str, Any]]) -> list[str]:
    bodies = [_value(rec.get("body", {})) for r in of(records, "logs") for rec in items(r)]
    return sorted(b for b in bodies if isinstance(b, str) and b.startswith("item "))


def counter_points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for r in of(records, "metrics") for m in items(r) if m["name"] == "conformance.items"]


def counter_total(records: list[dict[str, Any]]) -> float:
    return sum(
        float(p.get("asInt", p.get("asDouble", 0))) for m in counter_points(records) for p in m["sum"]["dataPoints"]
    )


# ---------------------------------------------------------------- cases


@dataclass
class Run:
    impl: str
    service: str
    result: subprocess.CompletedProcess[str]
    records: list[dict[str, Any]]

    @property
    def injected(self) -> dict[str, str]:
        line = next((x for x in self.result.stdout.splitlines() if x.startswith('{"injected"')), "{}")
        return json.loads(line).get("injected", {})  # type: ignore[no-any-return]


Check = Callable[[Run], None]


@dataclass
class Case:
    name: str
    env: dict[str, str]  # "{http}", "{grpc}", "{https}", "{grpcs}": the receiver's base URLs; "{certs}": its PEMs
    check: Check
    upstream: str = "same"  # "same": same check; "differs": upstream_check; "otel-dist only": not run upstream
    upstream_check: Check | None = None
    upstream_env: dict[str, str] = field(default_factory=dict)
    spans: int = 3


def all_signals_arrive(run: Run) -> None:
    assert sorted({r["path"] for r in run.records}) == ["/v1/logs", "/v1/metrics", "/v1/traces"]
    assert sorted(s["name"] for s in work_spans(run.records)) == ["work-0", "work-1", "work-2"]
    assert item_logs(run.records) == ["item 0", "item 1", "item 2"]
    assert counter_total(run.records) == 3


def only_traces_at_custom_path(run: Run) -> None:
    assert {(r["signal"], r["path"]) for r in run.records} == {("traces", "/custom/traces")}
    assert len(work_spans(run.records)) == 3


def signal_endpoint_wins(run: Run) -> None:
    paths = {r["signal"]: r["path"] for r in run.records}
    assert paths == {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/other/logs"}


def merged_headers(run: Run) -> None:
    (traces,) = {json.dumps(r["headers"], sort_keys=True) for r in of(run.records, "traces")}
    headers = json.loads(traces)
    assert headers["x-api-key"] == "traces key" and headers["x-tenant"] == "acme"  # signal wins per key
    for r in of(run.records, "logs"):
        assert r["headers"]["x-api-key"] == "generic" and r["headers"]["x-tenant"] == "acme"


def upstream_replaces_headers(run: Run) -> None:
    for r in of(run.records, "traces"):
        assert r["headers"]["x-api-key"] == "traces key" and "x-tenant" not in r["headers"]


def compression(run: Run) -> None:
    encodings = {(r["signal"], r["content_encoding"]) for r in run.records}
    assert encodings == {("traces", "gzip"), ("logs", "gzip"), ("metrics", "")}


def all_over_grpc(run: Run) -> None:
    assert {(r["signal"], r["transport"]) for r in run.records} == {
        ("traces", "grpc"),
        ("metrics", "grpc"),
        ("logs", "grpc"),
    }
    assert all(r["headers"]["x-tenant"] == "acme" for r in run.records)
    assert len(work_spans(run.records)) == 3 and item_logs(run.records) == ["item 0", "item 1", "item 2"]


def traces_grpc_logs_http(run: Run) -> None:
    assert {(r["signal"], r["transport"]) for r in run.records} == {
        ("traces", "grpc"),
        ("metrics", "http"),
        ("logs", "http"),
    }
    assert len(work_spans(run.records)) == 3


def all_over_mtls_http(run: Run) -> None:
    all_signals_arrive(run)
    assert {r["transport"] for r in run.records} == {"https"}


def all_over_mtls_grpc(run: Run) -> None:
    assert {(r["signal"], r["transport"]) for r in run.records} == {
        ("traces", "grpcs"),
        ("metrics", "grpcs"),
        ("logs", "grpcs"),
    }
    assert len(work_spans(run.records)) == 3 and item_logs(run.records) == ["item 0", "item 1", "item 2"]


def only_traces_over_mtls(run: Run) -> None:
    assert {(r["signal"], r["transport"]) for r in run.records} == {
        ("traces", "https"),
        ("metrics", "http"),
        ("logs", "http"),
    }
    assert len(work_spans(run.records)) == 3


def upstream_bundle_wins_nothing_sent(run: Run) -> None:
    # requests lets REQUESTS_CA_BUNDLE override Session.verify (psf/requests#3829): the OTel
    # certificate is ignored, the collector's certificate fails verification, nothing is said.
    assert run.result.returncode == 0 and run.records == []


def untrusted_server_nothing_sent_app_unharmed(run: Run) -> None:
    assert run.result.returncode == 0, run.result.stderr[-2000:]
    assert run.records == []
    assert run.injected.get("traceparent"), run.result.stdout  # the app ran to its end
    if run.impl == "otel-dist":  # one line per signal names the endpoint and the cause (upstream: a traceback)
        for signal in ("traces", "metrics", "logs"):
            line = next((x for x in run.result.stderr.splitlines() if x.startswith(f"OTLP {signal} export")), "")
            assert line.startswith(f"OTLP {signal} export to https://127.0.0.1:"), run.result.stderr[-2000:]
            assert "failed: TLS failed: " in line and "untrusted certificate" in line, line


def span_batches_of_two(run: Run) -> None:
    sizes = [len(items(r)) for r in of(run.records, "traces")]
    assert max(sizes) <= 2 and sum(sizes) == 6, sizes  # 5 work spans + inject
    assert len(work_spans(run.records)) == 5


def log_batches_of_two(run: Run) -> None:
    sizes = [len(items(r)) for r in of(run.records, "logs")]
    assert max(sizes) <= 2, sizes
    assert item_logs(run.records) == [f"item {i}" for i in range(5)]


def resource_from_attributes(run: Run) -> None:
    (resource,) = {json.dumps(res, sort_keys=True) for r in of(run.records, "traces") for res in resources(r)}
    attributes = json.loads(resource)
    assert attributes["service.name"] == run.service
    assert attributes["deployment.environment.name"] == "stage" and attributes["team"] == "core"


def nothing_arrives(run: Run) -> None:
    assert run.records == [] and run.result.returncode == 0


def no_spans_but_logs(run: Run) -> None:
    assert work_spans(run.records) == [] and item_logs(run.records) == ["item 0", "item 1", "item 2"]


def no_traces_at_all(run: Run) -> None:
    assert of(run.records, "traces") == [] and counter_total(run.records) == 3 and len(item_logs(run.records)) == 3


def limited_attributes(run: Run) -> None:
    spans = work_spans(run.records)
    assert len(spans) == 3
    for span in spans:
        attributes = {a["key"]: _value(a["value"]) for a in span["attributes"]}
        # the SDK keeps the newest attributes when the count limit is reached
        assert attributes == {"item.text": "xxxxx", "ok": True}
        assert span["droppedAttributesCount"] == 1


def b3_injected(run: Run) -> None:
    injected = run.injected
    assert set(injected) == {"b3"}, injected
    (inject_span,) = [s for r in of(run.records, "traces") for s in items(r) if s["name"] == "inject"]
    import base64

    assert injected["b3"].startswith(base64.b64decode(inject_span["traceId"]).hex())


def delta_counter(run: Run) -> None:
    (metric,) = counter_points(run.records)
    assert metric["sum"]["aggregationTemporality"] == "AGGREGATION_TEMPORALITY_DELTA"


def process_detector(run: Run) -> None:
    (resource,) = {json.dumps(res, sort_keys=True) for r in of(run.records, "traces") for res in resources(r)}
    attributes = json.loads(resource)
    assert attributes["process.parent_pid"] == str(os.getpid()) or int(attributes["process.parent_pid"]) > 0


def refused_at_startup(variable: str) -> Check:
    def check(run: Run) -> None:
        assert run.result.returncode != 0 and run.records == []
        assert run.result.stderr.strip().splitlines()[-1].startswith(f"ConfigError: {variable}: "), run.result.stderr

    return check


MTLS = {  # mutual TLS with the receiver's CA and a client certificate it signed
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "{certs}/ca.pem",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY": "{certs}/client.key",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "{certs}/client.pem",
}
CASES = [
    Case("endpoint", {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}"}, all_signals_arrive),
    Case(
        "traces-endpoint-alone",
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{http}/custom/traces"},
        only_traces_at_custom_path,
        upstream_env={"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"},  # upstream: localhost default
    ),
    Case(
        "signal-endpoint-wins",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "{http}/other/logs"},
        signal_endpoint_wins,
    ),
    Case(
        "headers",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme,x-api-key=generic",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "X-Api-Key=traces%20key",
        },
        merged_headers,
        upstream="differs",
        upstream_check=upstream_replaces_headers,
    ),
    Case(
        "compression",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "none",
        },
        compression,
    ),
    Case(
        "grpc",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme",
        },
        all_over_grpc,
    ),
    Case(
        "per-signal-protocol",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{grpc}",
        },
        traces_grpc_logs_http,
    ),
    Case("mtls-http", {"OTEL_EXPORTER_OTLP_ENDPOINT": "{https}", **MTLS}, all_over_mtls_http),
    Case(
        "mtls-http-with-requests-ca-bundle",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{https}", **MTLS, "REQUESTS_CA_BUNDLE": certifi.where()},
        all_over_mtls_http,
        upstream="differs",
        upstream_check=upstream_bundle_wins_nothing_sent,
    ),
    Case(
        "mtls-grpc",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpcs}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **MTLS},
        all_over_mtls_grpc,
    ),
    Case(
        "mtls-traces-only",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{https}/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "{certs}/ca.pem",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "{certs}/client.key",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": "{certs}/client.pem",
        },
        only_traces_over_mtls,
    ),
    Case(
        "tls-untrusted-server",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{https}", **MTLS, "OTEL_EXPORTER_OTLP_CERTIFICATE": "{certs}/stranger-ca.pem"},
        untrusted_server_nothing_sent_app_unharmed,
    ),
    Case(
        "bsp-batch-size",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2"},
        span_batches_of_two,
        spans=5,
    ),
    Case(
        "blrp-batch-size",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "2"},
        log_batches_of_two,
        spans=5,
    ),
    Case(
        "resource-attributes",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name={service},deployment.environment.name=stage,team=core",
        },
        resource_from_attributes,
    ),
    Case("sdk-disabled", {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_SDK_DISABLED": "true"}, nothing_arrives),
    Case(
        "sampler-off", {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_TRACES_SAMPLER": "always_off"}, no_spans_but_logs
    ),
    Case(
        "traces-exporter-none",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_TRACES_EXPORTER": "none"},
        no_traces_at_all,
    ),
    Case(
        "span-limits",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2",
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5",
        },
        limited_attributes,
    ),
    Case("b3-propagator", {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_PROPAGATORS": "b3"}, b3_injected),
    Case(
        "delta-temporality",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"},
        delta_counter,
    ),
    Case(
        "resource-detector",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel,process"},
        process_detector,
    ),
    Case(
        "invalid-protocol",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        refused_at_startup("OTEL_EXPORTER_OTLP_PROTOCOL"),
        upstream="otel-dist only",  # upstream logs the error and runs without that exporter
    ),
    Case(
        "refused-insecure",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
        refused_at_startup("OTEL_EXPORTER_OTLP_INSECURE"),
        upstream="otel-dist only",
    ),
]


def _launch(bin_dir: Path, case: Case, receiver: Receiver, impl: str) -> tuple[str, subprocess.Popen[str]]:
    service = f"conformance-{case.name}-{impl}"
    inherited = ("OTEL_", "SERVICE_", "ENVIRONMENT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # cases set them
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.pop("PYTHONPATH", None)
    env.update(COMMON, OTEL_SERVICE_NAME=service, CONFORMANCE_SPANS=str(case.spans))
    for key, value in {**case.env, **(case.upstream_env if impl == "upstream" else {})}.items():
        env[key] = value.format(
            http=receiver.http,
            grpc=receiver.grpc,
            https=receiver.https,
            grpcs=receiver.grpcs,
            certs=receiver.certs,
            service=service,
        )
    if "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        env.pop("OTEL_SERVICE_NAME")
    argv = [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), str(EMIT)]
    # Not the repository root as cwd: the wrapper puts cwd on sys.path, and otel_dist.egg-info there
    # would register otel-dist's entry points in the upstream venv too.
    cwd = str(EMIT.parent)
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return service, proc


def _finish(impl: str, service: str, proc: subprocess.Popen[str], receiver: Receiver) -> Run:
    stdout, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    # Exports finish before the process exits; a request still being recorded is given a moment.
    deadline, records = time.monotonic() + 3, receiver.records(service)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = receiver.records(service)
        if len(again) == len(records):
            break
        records = again
    return Run(impl, service, result, records)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(case: Case, receiver: Receiver, upstream_bin: Path) -> None:
    launches = [("otel-dist", *_launch(OTEL_DIST_BIN, case, receiver, "otel-dist"))]
    if case.upstream != "otel-dist only":
        launches.append(("upstream", *_launch(upstream_bin, case, receiver, "upstream")))
    runs = {impl: _finish(impl, service, proc, receiver) for impl, service, proc in launches}
    ours = runs["otel-dist"]
    try:
        case.check(ours)
    except AssertionError as error:
        raise AssertionError(f"otel-dist: {error}\nstderr: {ours.result.stderr[-2000:]}") from None
    if "upstream" in runs:
        check = case.upstream_check if case.upstream == "differs" else case.check
        assert check is not None
        try:
            check(runs["upstream"])
        except AssertionError as error:
            up = runs["upstream"]
            raise AssertionError(f"upstream: {error}\nstderr: {up.result.stderr[-2000:]}") from None
