"""What the demo gives its services: through the collector stack, a short metric push interval, said aloud."""

from otel_dist._demo import _services
from otel_dist._demo._model import DemoOptions
from otel_dist._demo._run import _Demo

STACK = {"otlp_http": "http://127.0.0.1:4318", "prometheus": "http://127.0.0.1:9090", "sink_dir": "/tmp/sink"}


def demo_environment(tmp_path, monkeypatch, **env):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_METRIC_EXPORT_INTERVAL", "SERVICE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The only stand-in: "a stack is running" (its state file is per checkout, shared with a developer's stack).
    monkeypatch.setattr(_services, "_collector_stack", lambda: dict(STACK))
    said: list[str] = []
    demo = _Demo(DemoOptions(run_dir=tmp_path), said.append)
    return demo, demo._environment(tmp_path), said


def test_through_the_stack_the_demo_shortens_the_metric_interval_and_says_so(tmp_path, monkeypatch):
    _demo, env, said = demo_environment(tmp_path, monkeypatch)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["OTEL_METRIC_EXPORT_INTERVAL"] == "2000"
    assert any("every 2 s" in line and "OTEL_METRIC_EXPORT_INTERVAL" in line for line in said)


def test_a_chosen_interval_and_secret_are_kept(tmp_path, monkeypatch):
    secret = "s" * 10 + "0123456789abcdefghijklmnopqrstuvwxyz"
    demo, env, said = demo_environment(
        tmp_path, monkeypatch, OTEL_METRIC_EXPORT_INTERVAL="5000", SERVICE_JWT_SECRET=secret
    )
    assert env["OTEL_METRIC_EXPORT_INTERVAL"] == "5000"
    assert not any("OTEL_METRIC_EXPORT_INTERVAL" in line for line in said)
    assert env["SERVICE_JWT_SECRET"] == secret == demo.secret
