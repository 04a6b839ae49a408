"""`otel-dist doctor`: passes against the demo's services, fails naming the fix against insecure ones."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from otel_dist import TokenMinter
from otel_dist.testing import free_port, register_secret
from tests.example_services import clean_env, start_example_services

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def doctor(*urls: str, env: dict[str, str], json_output: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "otel-dist"), "doctor", *urls, *(["--json"] if json_output else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def line_of(out: str, service: str, check: str) -> str:
    """The line of `check` in the block of `service`."""
    block = re.search(rf"^{service}  http\S+\n((?:  .*\n?)+)", out, re.M)
    assert block is not None, out
    found = [line for line in block.group(1).splitlines() if re.match(rf"  (PASS|WARN|FAIL)  {check}\s\s", line)]
    assert len(found) == 1, out
    return found[0]


def test_doctor_passes_against_the_demos_services(tmp_path):
    secret = secrets.token_urlsafe(48)
    register_secret(secret)
    env = clean_env(SERVICE_JWT_SECRET=secret)
    demo = subprocess.Popen(
        [
            str(BIN / "otel-dist"),
            "demo",
            "--duration",
            "4",
            "--rate",
            "8",
            "--keep-running",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        out, deadline = "", time.monotonic() + 150
        while "otel-dist doctor " not in out:
            line = demo.stdout.readline()
            assert line or demo.poll() is None, out[-3000:]
            assert time.monotonic() < deadline, out[-3000:]
            out += line
        urls = dict(re.findall(r"^  (auth|orders|gateway)\s+metrics (http://\S+)/metrics", out, re.M))
        assert set(urls) == {"auth", "orders", "gateway"}, out[-3000:]
        assert "otel-dist doctor " in out  # the demo names the command

        result = doctor(*urls.values(), env=env)
        text = result.stdout
        assert result.returncode == 0, text + result.stderr
        assert re.search(r"^doctor: 3 service\(s\), \d+ PASS, \d+ WARN, 0 FAIL: ready, with warnings$", text, re.M)
        assert "service tokens required" in line_of(text, "orders", "auth")
        assert line_of(text, "orders", "auth").startswith("  PASS")
        assert line_of(text, "gateway", "auth").startswith("  PASS  auth") and "public edge" in text
        key = line_of(text, "auth", "auth key")
        assert key.startswith("  PASS") and "hmac key, 64 bytes" in key and "not shown" in key
        environment = line_of(text, "auth", "environment")
        assert environment.startswith("  WARN  environment")
        assert "fix: use an ENVIRONMENT name outside NON_PRODUCTION_ENVIRONMENTS" in environment
        assert "ENVIRONMENT=demo" in text and "fix: set ENVIRONMENT=production" in text
        assert line_of(text, "orders", "ready").startswith("  PASS  ready") and "database, auth" in text
        assert line_of(text, "gateway", "metrics format").startswith("  PASS")
        assert line_of(text, "gateway", "exporter").startswith("  PASS  exporter")  # spans went to the demo's sink
        assert line_of(text, "orders", "fault injection").startswith("  WARN")  # /_faults is there outside prod
        assert "otel-dist " in line_of(text, "auth", "versions")
        assert secret not in text and secret not in result.stderr

        report = json.loads(doctor(*urls.values(), env=env, json_output=True).stdout)
        assert report["fail"] == 0 and len(report["services"]) == 3
        checks = {c["name"]: c for c in report["services"][1]["checks"]}
        assert report["services"][1]["service"] == "orders" and checks["auth"]["status"] == "PASS"
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)


def test_doctor_fails_naming_the_fix_against_a_service_with_auth_off(tmp_path):
    with ExitStack() as cleanup:
        procs = start_example_services(
            tmp_path, {"ENVIRONMENT": "development", "SERVICE_AUTH_ENABLED": "false"}, cleanup
        )
        url = procs["orders"].url
        result = doctor(url, env=clean_env())
        assert result.returncode == 1, result.stdout + result.stderr
        auth = line_of(result.stdout, "orders", "auth")
        assert auth.startswith("  FAIL  auth") and "service auth is OFF" in auth
        assert "-> fix: set SERVICE_JWT_SECRET to a random secret of at least 32 bytes" in auth
        assert "SERVICE_AUTH_ENABLED=true" in auth
        assert re.search(r"^doctor: 1 service\(s\), \d+ PASS, \d+ WARN, [1-9]\d* FAIL: NOT READY$", result.stdout, re.M)
        report = json.loads(doctor(url, env=clean_env(), json_output=True).stdout)
        assert report["fail"] >= 1


def test_doctor_fails_a_weak_key_and_active_faults_without_showing_the_key(tmp_path):
    weak = "changeme" * 5  # 40 bytes: long enough for the settings, ~80 bits of entropy
    register_secret(weak)
    with ExitStack() as cleanup:
        procs = start_example_services(
            tmp_path, {"SERVICE_JWT_SECRET": weak, "FAULT_INJECTION_ERROR_RATE": "0.5"}, cleanup
        )
        result = doctor(procs["auth"].url, env=clean_env(SERVICE_JWT_SECRET=weak))
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    key = line_of(out, "auth", "auth key")
    assert key.startswith("  FAIL  auth key") and "40 bytes" in key and "fix: set SERVICE_JWT_SECRET" in key
    assert line_of(out, "auth", "fault injection").startswith("  FAIL  fault injection")
    assert "error_rate=0.5" in out
    assert weak not in out and "changeme" not in out


def test_doctor_without_a_key_still_checks_what_is_public(tmp_path):
    secret = secrets.token_urlsafe(48)
    with ExitStack() as cleanup:
        procs = start_example_services(tmp_path, {"SERVICE_JWT_SECRET": secret}, cleanup)
        result = doctor(procs["orders"].url, env=clean_env())
        unreachable = doctor(f"http://127.0.0.1:{free_port()}", env=clean_env())
        # What /_doctor shows: behind a service token (also on the public gateway), and never the secret.
        for name in ("orders", "gateway"):
            url = procs[name].url + "/_doctor"
            assert httpx.get(url).status_code == 401
            token = TokenMinter("otel-dist-doctor", secret).token(name)
            report = httpx.get(url, headers={"authorization": f"Bearer {token}"})
            assert report.status_code == 200
            assert secret not in report.text and token not in report.text
            body = report.json()
            assert body["service"] == name and body["auth"]["signing_key"] == {
                "type": "hmac",
                "bytes": 64,
                "estimated_bits": body["auth"]["signing_key"]["estimated_bits"],
            }
            assert body["auth"]["public_edge"] is (name == "gateway")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    config = line_of(out, "orders", "configuration")
    assert config.startswith("  WARN") and "service tokens are required (good)" in config
    assert line_of(out, "orders", "ready").startswith("  PASS")
    assert unreachable.returncode == 1 and "FAIL  reachable" in unreachable.stdout
