"""The upstream comparison runs in its own venv: ``.venv-upstream`` (git-ignored).

opentelemetry-distro must never be installed next to otel-dist (both register
an ``opentelemetry_distro`` entry point and the wrapper would pick one at
random), so the harness builds a separate venv with the upstream packages,
pinned to the versions installed in the main venv so both sides run the same
FastAPI, uvicorn and SDK.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-upstream"

# package in the upstream venv -> package in this venv whose version it follows
_PINS = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "opentelemetry-sdk": "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-distro": "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-fastapi": "opentelemetry-instrumentation-fastapi",
}


def requirements() -> list[str]:
    reqs = []
    for package, follows in _PINS.items():
        try:
            reqs.append(f"{package}=={metadata.version(follows)}")
        except metadata.PackageNotFoundError:
            reqs.append(package)
    return reqs


def python() -> Path:
    return VENV / "bin" / "python"


def instrument_command() -> Path:
    return VENV / "bin" / "opentelemetry-instrument"


def ensure(*, quiet: bool = True) -> Path:
    """Create .venv-upstream when missing (or incomplete); returns its python."""
    marker = VENV / ".otel-dist-bench-ready"
    wanted = "\n".join(requirements())
    if marker.exists() and marker.read_text() == wanted and instrument_command().exists():
        return python()
    print(f"creating {VENV} with {', '.join(requirements())} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else [])]
    subprocess.run([*pip, *requirements()], check=True)
    marker.write_text(wanted)
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False))
