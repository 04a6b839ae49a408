"""What collector/stack.py starts, per topology: ports, commands, environments, readiness URLs.

``single`` (the default): one collector (``otelcol-config.yaml``) + OTLP-JSON sink + Prometheus
(remote-writing to VictoriaMetrics) + Zipkin.

``tiered``: two agents (``otelcol-agent.yaml``: span metrics before sampling, ``load_balancing`` by
trace id) and two gateways (``otelcol-gateway.yaml``: ``tail_sampling``, persistent queue, Zipkin;
plus ``otelcol-gateway-files.yaml``, a local copy of kept traces and logs under the data folder),
Prometheus scraping both agents and remote-writing to VictoriaMetrics, and Zipkin.

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collector import backends

HERE = Path(__file__).resolve().parent
COLLECTOR_CONFIG = HERE / "otelcol-config.yaml"
AGENT_CONFIG = HERE / "otelcol-agent.yaml"
GATEWAY_CONFIG = HERE / "otelcol-gateway.yaml"
GATEWAY_FILES_CONFIG = HERE / "otelcol-gateway-files.yaml"
PROMETHEUS_CONFIG = HERE / "prometheus.yml"
SINK_SCRIPT = HERE / "otlp_sink.py"
RULES_DIR = HERE / "rules"
TOPOLOGIES = ("single", "tiered")
AGENTS, GATEWAYS = ("agent1", "agent2"), ("gateway1", "gateway2")

_BACKEND_PORTS = {"zipkin": 9411, "victoriametrics": 8428, "prometheus": 9090}

# name -> default loopback port. These defaults match otelcol-config.yaml and prometheus.yml.
SINGLE_PORTS: dict[str, int] = {
    "otlp_grpc": 4317,  # collector OTLP/gRPC receiver
    "otlp_http": 4318,  # collector OTLP/HTTP receiver
    "prometheus_exporter": 8889,  # collector's prometheus exporter (app + span metrics)
    "collector_telemetry": 8888,  # collector's own metrics
    "health": 13133,  # collector health_check extension
    "sink": 4320,  # otlp_sink.py (what the collector exported, as JSON lines)
    **_BACKEND_PORTS,
}

# agent1 keeps the single collector's ports, so services and the demo need no other setting.
TIERED_PORTS: dict[str, int] = {
    "agent1_otlp_grpc": 4317,
    "agent1_otlp_http": 4318,
    "agent1_exporter": 8889,
    "agent1_telemetry": 8888,
    "agent1_health": 13133,
    "agent2_otlp_grpc": 4327,
    "agent2_otlp_http": 4328,
    "agent2_exporter": 8899,
    "agent2_telemetry": 8898,
    "agent2_health": 13134,
    "gateway1_otlp_grpc": 4417,
    "gateway1_telemetry": 8908,
    "gateway1_health": 13135,
    "gateway2_otlp_grpc": 4427,
    "gateway2_telemetry": 8918,
    "gateway2_health": 13136,
    **_BACKEND_PORTS,
}


def default_ports(topology: str) -> dict[str, int]:
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; one of {', '.join(TOPOLOGIES)}")
    return dict(SINGLE_PORTS if topology == "single" else TIERED_PORTS)


@dataclass
class ProcSpec:
    """One process of the stack: how to start it and when it is ready."""

    name: str
    cmd: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    # Started first and waited for last (Zipkin's JVM takes ~25 s, more on a busy machine).
    slow: bool = False


@dataclass
class Binaries:
    collector: Path
    prometheus: str
    python: str
    zipkin_jar: Path
    victoriametrics: Path


def urls(topology: str, ports: Mapping[str, int]) -> dict[str, str]:
    def http(name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{ports[name]}{path}"

    common = {name: http(name) for name in _BACKEND_PORTS}
    if topology == "single":
        return {
            **common,
            "otlp_http": http("otlp_http"),
            "otlp_grpc": http("otlp_grpc"),
            "health": http("health", "/"),
            "prometheus_exporter": http("prometheus_exporter", "/metrics"),
            "collector_telemetry": http("collector_telemetry", "/metrics"),
            "sink": http("sink"),
        }
    out = {**common, "otlp_http": http("agent1_otlp_http"), "otlp_grpc": http("agent1_otlp_grpc")}
    for agent in AGENTS:
        out[f"{agent}_otlp_http"] = http(f"{agent}_otlp_http")
        out[f"{agent}_exporter"] = http(f"{agent}_exporter", "/metrics")
    for name in (*AGENTS, *GATEWAYS):
        out[f"{name}_health"] = http(f"{name}_health", "/")
        out[f"{name}_telemetry"] = http(f"{name}_telemetry", "/metrics")
    out["health"] = out["agent1_health"]
    return out


def plan(
    topology: str, ports: Mapping[str, int], root: Path, bins: Binaries, scrape_interval: str, env: Mapping[str, str]
) -> list[ProcSpec]:
    """The processes to start, in start order (``slow`` ones are only waited for last)."""
    u = urls(topology, ports)
    zipkin_spans = f"{u['zipkin']}/api/v2/spans"
    specs = [
        ProcSpec(
            "zipkin", backends.zipkin_command(bins.zipkin_jar, ports["zipkin"]), u["zipkin"] + "/health", slow=True
        ),
        ProcSpec(
            "victoriametrics",
            backends.victoriametrics_command(bins.victoriametrics, ports["victoriametrics"], root / "victoriametrics"),
            u["victoriametrics"] + "/health",
        ),
    ]
    if topology == "single":
        specs.append(
            ProcSpec(
                "sink",
                [bins.python, str(SINK_SCRIPT), "--dir", str(root / "sink"), "--port", str(ports["sink"])],
                u["sink"] + "/healthz",
            )
        )
        specs.append(
            ProcSpec(
                "collector",
                [str(bins.collector), f"--config={COLLECTOR_CONFIG}"],
                u["health"],
                {**collector_env(ports, zipkin_spans), **env},
            )
        )
        app_targets = [ports["prometheus_exporter"]]
        telemetry_targets = [ports["collector_telemetry"]]
    else:
        gateways = [f"127.0.0.1:{ports[f'{g}_otlp_grpc']}" for g in GATEWAYS]
        for gateway in GATEWAYS:
            (root / gateway / "queue").mkdir(parents=True, exist_ok=True)
            specs.append(
                ProcSpec(
                    gateway,
                    [str(bins.collector), f"--config={GATEWAY_CONFIG}", f"--config={GATEWAY_FILES_CONFIG}"],
                    u[f"{gateway}_health"],
                    {
                        **_own_env(gateway, ports),
                        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports[f'{gateway}_otlp_grpc']}",
                        "OTELCOL_ZIPKIN_ENDPOINT": zipkin_spans,
                        "OTELCOL_STORAGE_DIR": str(root / gateway / "queue"),
                        "OTELCOL_FILES_DIR": str(root / gateway),
                        **env,
                    },
                )
            )
        for agent in AGENTS:
            specs.append(
                ProcSpec(
                    agent,
                    [str(bins.collector), f"--config={AGENT_CONFIG}"],
                    u[f"{agent}_health"],
                    {
                        **_own_env(agent, ports),
                        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports[f'{agent}_otlp_grpc']}",
                        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports[f'{agent}_otlp_http']}",
                        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports[f'{agent}_exporter']}",
                        # A YAML list: the collector parses a whole-value ${env:...} as YAML.
                        "OTELCOL_GATEWAYS": "[" + ", ".join(gateways) + "]",
                        **env,
                    },
                )
            )
        app_targets = [ports[f"{a}_exporter"] for a in AGENTS]
        telemetry_targets = [ports[f"{n}_telemetry"] for n in (*AGENTS, *GATEWAYS)]
    prom_cfg = root / "prometheus.yml"
    prom_cfg.write_text(
        render_prometheus_config(app_targets, telemetry_targets, ports["victoriametrics"], scrape_interval)
    )
    specs.append(
        ProcSpec(
            "prometheus",
            [
                bins.prometheus,
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={root / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--enable-feature=exemplar-storage",  # keep trace_id exemplars from the exporter
                "--web.enable-lifecycle",  # POST /-/reload after tests rewrite rules
            ],
            u["prometheus"] + "/-/ready",
        )
    )
    return specs


def collector_env(ports: Mapping[str, int], zipkin_spans: str | None = None) -> dict[str, str]:
    """The OTELCOL_* variables that point otelcol-config.yaml at ``ports`` (single topology)."""
    return {
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp_grpc']}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['otlp_http']}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports['prometheus_exporter']}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(ports["collector_telemetry"]),
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "OTELCOL_SINK_ENDPOINT": f"http://127.0.0.1:{ports['sink']}",
        "OTELCOL_ZIPKIN_ENDPOINT": zipkin_spans or f"http://127.0.0.1:{ports['zipkin']}/api/v2/spans",
    }


def _own_env(name: str, ports: Mapping[str, int]) -> dict[str, str]:
    return {
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(ports[f"{name}_telemetry"]),
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{ports[f'{name}_health']}",
    }


def render_prometheus_config(
    app_targets: list[int], telemetry_targets: list[int], victoriametrics_port: int, scrape_interval: str = "15s"
) -> str:
    """prometheus.yml with the placeholder tokens (see its header) replaced."""
    from collector.procs import StackError

    # Replace only in the YAML body: the header comment mentions the tokens too.
    header, sep, body = PROMETHEUS_CONFIG.read_text().partition("\nglobal:")
    body = sep + body

    def targets(ports: list[int]) -> str:
        return ", ".join(f'"127.0.0.1:{p}"' for p in ports)

    replacements = {
        '"127.0.0.1:8889"': targets(app_targets),
        '"127.0.0.1:8888"': targets(telemetry_targets),
        "http://127.0.0.1:8428/": f"http://127.0.0.1:{victoriametrics_port}/",
        "scrape_interval: 15s": f"scrape_interval: {scrape_interval}",
        "evaluation_interval: 15s": f"evaluation_interval: {scrape_interval}",
        "- rules/*.yml": f"- {RULES_DIR}/*.yml",
    }
    for token, value in replacements.items():
        if token not in body:
            raise StackError(f"prometheus.yml no longer contains the placeholder {token!r}")
        body = body.replace(token, value)
    return header + body
