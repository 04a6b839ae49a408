"""The Pydantic Logfire comparison runs in its own venv: ``.venv-logfire`` (git-ignored).

Logfire brings its own OpenTelemetry distro and the contrib instrumentations; it is
installed apart from otel-dist (two distros in one environment would fight over the
global providers), pinned to the FastAPI, uvicorn and SDK versions of this venv so
both sides run the same framework and SDK.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-logfire"
LOGFIRE = "logfire[fastapi]==5.4.0"

# package in the Logfire venv -> package in this venv whose version it follows
_PINS = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "opentelemetry-sdk": "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi": "opentelemetry-instrumentation-fastapi",
}


def requirements() -> list[str]:
    reqs = [LOGFIRE]
    for package, follows in _PINS.items():
        try:
            reqs.append(f"{package}=={metadata.version(follows)}")
        except metadata.PackageNotFoundError:
            reqs.append(package)
    return reqs


def python() -> Path:
    return VENV / "bin" / "python"


def ensure(*, quiet: bool = True) -> Path:
    """Create .venv-logfire when missing (or built for other versions); returns its python."""
    marker = VENV / ".otel-dist-bench-ready"
    wanted = "\n".join(requirements())
    if marker.exists() and marker.read_text() == wanted and python().exists():
        return python()
    print(f"creating {VENV} with {', '.join(requirements())} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(python()), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else [])]
    subprocess.run([*pip, *requirements()], check=True)
    marker.write_text(wanted)
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False))
