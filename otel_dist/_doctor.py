"""``otel-dist doctor URL...``: a production-readiness report for running services.

Per service, one line per check, PASS / WARN / FAIL with the fix. Read from the service's own
routes: ``/health``, ``/ready``, ``/metrics`` (Prometheus text, parsed by prometheus_client; the
SDK's exporter and processor counters) and ``/_doctor`` (configuration without secrets, behind
service auth: doctor signs a token with this process's ``SERVICE_JWT_SECRET`` when it has one).
Any FAIL makes the exit status non-zero, so it can gate a deploy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

__all__ = ["Check", "ServiceDiagnosis", "diagnose", "main"]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
MIN_KEY_BITS = 128
SECRET_FIX = (
    "set SERVICE_JWT_SECRET to a random secret of at least 32 bytes, e.g. "
    "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class ServiceDiagnosis:
    url: str
    service: str = "?"
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix if status != PASS else ""))

    def count(self, status: str) -> int:
        return sum(1 for check in self.checks if check.status == status)


TokenFor = Callable[[str], "str | None"]


def diagnose(url: str, *, token_for: TokenFor, timeout: float = 5.0) -> ServiceDiagnosis:
    url = url.rstrip("/")
    result = ServiceDiagnosis(url)
    with httpx.Client(timeout=timeout) as http:
        started = time.perf_counter()
        try:
            health = http.get(url + "/health")
        except httpx.HTTPError as exc:
            result.add("reachable", FAIL, f"GET /health: {type(exc).__name__}", "start the service or fix the URL")
            return result
        if health.status_code != 200:
            result.add("reachable", FAIL, f"GET /health answered {health.status_code}", "is this an otel-dist service?")
            return result
        result.service = str(health.json().get("service", "?"))
        result.add("reachable", PASS, f"/health answered 200 in {(time.perf_counter() - started) * 1000:.0f} ms")
        report = _report(http, url, result, token_for)
        if report is not None:
            _judge_report(report, result)
        _ready(http, url, result)
        _metrics(http, url, result, report)
    return result


def _report(http: httpx.Client, url: str, result: ServiceDiagnosis, token_for: TokenFor) -> dict[str, Any] | None:
    """``/_doctor`` without a token (must be refused), then with one."""
    anonymous = http.get(url + "/_doctor")
    if anonymous.status_code == 404:
        result.add("configuration", WARN, "no /_doctor route", "build the service with otel_dist.create_app")
        return None
    if anonymous.status_code == 200:
        report: dict[str, Any] = anonymous.json()
        return report  # auth is off: the auth check below says so
    if anonymous.status_code not in (401, 403):
        result.add("configuration", WARN, f"GET /_doctor answered {anonymous.status_code}", "see the service's log")
        return None
    token = token_for(result.service)
    if token is None:
        result.add(
            "configuration",
            WARN,
            "service tokens are required (good), but doctor has no key to read the configuration",
            "run doctor with the services' SERVICE_JWT_SECRET in its environment (it is never printed)",
        )
        return None
    signed = http.get(url + "/_doctor", headers={"authorization": f"Bearer {token}"})
    if signed.status_code != 200:
        reason = _reason(signed)
        result.add(
            "configuration",
            WARN,
            f"doctor's service token was refused ({signed.status_code} {reason})",
            "give doctor the services' SERVICE_JWT_SECRET, and --as a caller in SERVICE_JWT_ALLOWED_CALLERS",
        )
        return None
    report = signed.json()
    return report


def _judge_report(report: dict[str, Any], result: ServiceDiagnosis) -> None:
    auth, environment = report["auth"], report["environment"]
    if not auth["enabled"]:
        result.add(
            "auth",
            FAIL,
            f"service auth is OFF ({auth.get('disabled_reason') or 'disabled'}): any caller is accepted",
            SECRET_FIX + " and leave SERVICE_AUTH_ENABLED=true",
        )
    elif auth["public_edge"]:
        result.add("auth", PASS, "public edge: takes no service tokens on its routes; signs its calls to others")
    else:
        algorithms = ", ".join(auth["algorithms"])
        result.add("auth", PASS, f"service tokens required on every route but the exempt ones ({algorithms})")
    key = auth.get("signing_key")
    if key is None:
        status = FAIL if auth["enabled"] and not auth["public_edge"] else WARN
        if auth["enabled"] and auth["algorithms"] and not auth["algorithms"][0].startswith("HS"):
            status = PASS  # a verifier of asymmetric tokens needs no signing key of its own
        result.add("auth key", status, "no signing key: this service cannot call protected services", SECRET_FIX)
    elif key["estimated_bits"] < MIN_KEY_BITS:
        result.add(
            "auth key",
            FAIL,
            f"{key['type']} key of {key.get('bytes', '?')} bytes, only ~{key['estimated_bits']} bits of entropy "
            "(estimated; the key is not shown)",
            SECRET_FIX,
        )
    else:
        size = f"{key['bytes']} bytes, " if "bytes" in key else ""
        result.add("auth key", PASS, f"{key['type']} key, {size}~{key['estimated_bits']} bits (the key is not shown)")
    if report["production"]:
        result.add("environment", PASS, f"ENVIRONMENT={environment}: the production policy is in force")
    else:
        result.add(
            "environment",
            WARN,
            f"ENVIRONMENT={environment}: the production policy is off (insecure settings are accepted)",
            "use an ENVIRONMENT name outside NON_PRODUCTION_ENVIRONMENTS (e.g. production): it refuses auth off, "
            "fault injection and plain-http JWKS URLs, and hides the API docs",
        )
    faults = report["faults"]
    if faults["error_rate"] or faults["latency_ms"]:
        result.add(
            "fault injection",
            FAIL,
            f"ACTIVE: error_rate={faults['error_rate']}, latency_ms={faults['latency_ms']}",
            'POST /_faults {"error_rate": 0, "latency_ms": 0}; unset FAULT_INJECTION_* (production refuses them)',
        )
    elif faults["admin_route"]:
        who = "any holder of a service token" if auth["enabled"] else "anyone: auth is off"
        result.add(
            "fault injection",
            WARN,
            f"off, but POST /_faults can switch it on ({who})",
            "set ENVIRONMENT=production: the route is then not installed",
        )
    else:
        result.add("fault injection", PASS, "off")
    sampling = report["sampling"]
    sampler, ratio = sampling["sampler"], sampling["ratio"]
    if sampler.endswith("always_off") or (sampler.endswith("traceidratio") and ratio == 0):
        result.add("sampling", WARN, f"{sampler} (ratio {ratio}): no trace is recorded", "OTEL_TRACES_SAMPLER")
    else:
        shown = f"{sampler}, ratio {ratio}" if sampler.endswith("traceidratio") else sampler
        result.add("sampling", PASS, shown)
    versions = report["versions"]
    shown = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    result.add("versions", PASS, shown)


def _ready(http: httpx.Client, url: str, result: ServiceDiagnosis) -> None:
    try:
        ready = http.get(url + "/ready")
        body = ready.json()
    except (httpx.HTTPError, ValueError) as exc:
        result.add("ready", FAIL, f"GET /ready: {type(exc).__name__}", "see the service's log")
        return
    checks = body.get("checks", {})
    names = ", ".join(checks) or "no checks"
    if ready.status_code == 200:
        result.add("ready", PASS, f"200, checks: {names}")
    else:
        details = body.get("details", {})
        failing = {name: details.get(name, state) for name, state in checks.items() if state != "healthy"}
        shown = "; ".join(f"{name}: {why}" for name, why in failing.items())
        result.add("ready", FAIL, f"{ready.status_code}: {shown}", "fix the failing dependency named above")


def _metrics(http: httpx.Client, url: str, result: ServiceDiagnosis, report: dict[str, Any] | None) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = http.get(url + "/metrics")
    except httpx.HTTPError as exc:
        result.add("metrics format", FAIL, f"GET /metrics: {type(exc).__name__}", "see the service's log")
        return
    if response.status_code != 200:
        result.add("metrics format", FAIL, f"GET /metrics answered {response.status_code}", "OTEL_METRICS_EXPORTER")
        return
    samples: list[tuple[str, dict[str, str], float]] = []
    try:
        families = list(text_string_to_metric_families(response.text))
        for family in families:
            samples.extend((s.name, s.labels, s.value) for s in family.samples)
    except ValueError as exc:
        result.add("metrics format", FAIL, f"not valid Prometheus text: {exc}", "report it: /metrics must parse")
        return
    result.add("metrics format", PASS, f"valid Prometheus text, {len(families)} metric families")
    _exporters(samples, result, report)


def _exporters(samples: list[tuple[str, dict[str, str], float]], result: ServiceDiagnosis, report: Any) -> None:
    """From the SDK's own counters: items exported, failed (by error type) and dropped at a full queue."""
    exported: dict[str, float] = {}
    failed: dict[str, dict[str, float]] = {}
    dropped: dict[str, float] = {}
    for name, labels, value in samples:
        for signal in ("span", "log"):
            if name == f"otel_sdk_exporter_{signal}_exported_total":
                error = labels.get("error_type")
                if error:
                    failed.setdefault(signal, {})[error] = failed.get(signal, {}).get(error, 0) + value
                else:
                    exported[signal] = exported.get(signal, 0) + value
            if name == f"otel_sdk_processor_{signal}_processed_total" and labels.get("error_type") == "queue_full":
                dropped[signal] = dropped.get(signal, 0) + value
    endpoint = (report or {}).get("exporters", {}).get("otlp_endpoint")
    if not exported and not failed:
        if report is not None and not report["exporters"]["traces"]:
            result.add(
                "exporter",
                WARN,
                "no trace exporter: traces are dropped",
                "set OTEL_EXPORTER_OTLP_ENDPOINT to your collector's OTLP/HTTP address (port 4318)",
            )
        else:
            result.add("exporter", WARN, "nothing exported yet (no traffic?)", "send a request, then run doctor again")
    elif failed:
        errors = "; ".join(
            f"{signal}s: {int(sum(by.values()))} failed ({', '.join(by)})" for signal, by in sorted(failed.items())
        )
        sent = ", ".join(f"{int(n)} {signal}s exported" for signal, n in sorted(exported.items())) or "none exported"
        status = WARN if exported else FAIL
        where = f" to {endpoint}" if endpoint else ""
        result.add(
            "exporter",
            status,
            f"{errors}; {sent}{where}",
            "check OTEL_EXPORTER_OTLP_ENDPOINT is reachable: the collector's OTLP/HTTP port 4318, or gRPC 4317 "
            "with OTEL_EXPORTER_OTLP_PROTOCOL=grpc (pip install 'otel-dist[grpc]')",
        )
    else:
        sent = ", ".join(f"{int(n)} {signal}s" for signal, n in sorted(exported.items()))
        result.add("exporter", PASS, f"exported {sent}, none failed" + (f" ({endpoint})" if endpoint else ""))
    if dropped:
        lost = ", ".join(f"{int(n)} {signal}s" for signal, n in sorted(dropped.items()))
        result.add(
            "telemetry loss",
            WARN,
            f"dropped at a full queue: {lost}",
            "OTEL_BSP_MAX_QUEUE_SIZE, or a faster or reachable collector",
        )


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except ValueError:
        return ""


# ---------------------------------------------------------------- the command


def render(results: list[ServiceDiagnosis]) -> str:
    lines = []
    width = max((len(c.name) for r in results for c in r.checks), default=10)
    for result in results:
        lines.append(f"{result.service}  {result.url}")
        for check in result.checks:
            line = f"  {check.status}  {check.name:<{width}}  {check.detail}"
            if check.fix:
                line += f"  -> fix: {check.fix}"
            lines.append(line)
    passed, warned, failed = (sum(r.count(s) for r in results) for s in (PASS, WARN, FAIL))
    verdict = "NOT READY" if failed else ("ready, with warnings" if warned else "ready")
    lines.append(f"doctor: {len(results)} service(s), {passed} PASS, {warned} WARN, {failed} FAIL: {verdict}")
    return "\n".join(lines)


def main(urls: list[str], *, as_json: bool, caller: str, timeout: float) -> int:
    from ._auth import TokenMinter
    from ._auth._config import auth_config
    from ._settings import load_settings

    key = auth_config(load_settings()).signing_key
    minter = TokenMinter(caller, key) if key is not None else None

    def token_for(audience: str) -> str | None:
        return minter.token(audience) if minter is not None else None

    results = [diagnose(url, token_for=token_for, timeout=timeout) for url in urls]
    failed = sum(r.count(FAIL) for r in results)
    if as_json:
        print(json.dumps({"services": [asdict(r) for r in results], "fail": failed}, indent=2))
    else:
        print(render(results))
    return 1 if failed else 0
