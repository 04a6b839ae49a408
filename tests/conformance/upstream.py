"""Upstream ``opentelemetry-instrument`` in its own venv, for the cases where otel-dist must behave the same.

opentelemetry-distro must never share a venv with otel-dist (both register an
``opentelemetry_distro`` entry point).  The venv (``.venv-upstream-conformance``, git-ignored)
is created on first use with the upstream packages pinned to the versions installed here,
and reused while the pins are unchanged (a marker file holds them): ~30 s once, then free.
(benchmarks/upstream_env.py builds the benchmark's own venv, with FastAPI and no gRPC.)
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-upstream-conformance"

# package in the upstream venv -> package installed here whose version it follows
_PINS = {
    "opentelemetry-sdk": "opentelemetry-sdk",
    "opentelemetry-distro": "opentelemetry-instrumentation",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-proto-grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-propagator-b3": "opentelemetry-propagator-b3",
}


def requirements() -> list[str]:
    return [f"{package}=={metadata.version(follows)}" for package, follows in _PINS.items()]


def bin_dir() -> Path:
    return VENV / "bin"


def ensure() -> Path:
    """The upstream venv's bin directory, created or refreshed when needed."""
    marker = VENV / ".otel-dist-conformance-ready"
    wanted = "\n".join(requirements())
    if marker.exists() and marker.read_text() == wanted and (bin_dir() / "opentelemetry-instrument").exists():
        return bin_dir()
    print(f"creating {VENV}: {', '.join(requirements())}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
    pip = [str(bin_dir() / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements()], check=True, timeout=600)
    marker.write_text(wanted)
    return bin_dir()
