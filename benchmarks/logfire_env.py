"""The Pydantic Logfire comparison runs in its own venv: ``.venv-logfire`` (git-ignored, see ``side_venv``).

Logfire sets the global OpenTelemetry providers itself and brings the contrib instrumentations;
two distros in one environment would fight over them.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.side_venv import SideVenv

LOGFIRE = SideVenv(
    ".venv-logfire",
    {
        "fastapi": "fastapi",
        "uvicorn": "uvicorn",
        "opentelemetry-sdk": "opentelemetry-sdk",
        "opentelemetry-instrumentation-fastapi": "opentelemetry-instrumentation-fastapi",
    },
    extra=("logfire[fastapi]==5.4.0",),
)


def python() -> Path:
    return LOGFIRE.python


def ensure(*, quiet: bool = True) -> Path:
    """Create .venv-logfire when missing (or built for other versions); returns its python."""
    LOGFIRE.ensure(quiet=quiet)
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False))
