"""The upstream comparison runs in its own venv: ``.venv-upstream`` (git-ignored, see ``side_venv``).

opentelemetry-distro must never be installed next to otel-dist (both register an
``opentelemetry_distro`` entry point and the wrapper would pick one at random).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.side_venv import SideVenv

UPSTREAM = SideVenv(
    ".venv-upstream",
    {
        "fastapi": "fastapi",
        "uvicorn": "uvicorn",
        "opentelemetry-sdk": "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http": "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-distro": "opentelemetry-instrumentation",
        "opentelemetry-instrumentation-fastapi": "opentelemetry-instrumentation-fastapi",
    },
)


def python() -> Path:
    return UPSTREAM.python


def instrument_command() -> Path:
    return UPSTREAM.bin_dir / "opentelemetry-instrument"


def ensure(*, quiet: bool = True) -> Path:
    """Create .venv-upstream when missing (or built for other versions); returns its python."""
    UPSTREAM.ensure(needs="opentelemetry-instrument", quiet=quiet)
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False))
