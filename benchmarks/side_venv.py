"""A venv beside the project's, for a comparison that must not share otel-dist's environment.

Another OpenTelemetry distro (upstream's opentelemetry-distro, Logfire) registers the same entry
points or sets the same global providers as otel-dist, so it is installed apart, in a git-ignored
venv under the repository, with its packages pinned to the versions installed here (same FastAPI,
uvicorn and SDK on both sides).  It is created on first use (~30 s) and reused while the pins are
unchanged (a marker file holds them).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SideVenv:
    name: str  # the directory under the repository root, e.g. ".venv-upstream"
    pins: Mapping[str, str]  # package to install -> package installed here whose version it follows
    extra: Sequence[str] = field(default_factory=tuple)  # requirements taken as they are

    @property
    def path(self) -> Path:
        return ROOT / self.name

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    def requirements(self) -> list[str]:
        reqs = list(self.extra)
        for package, follows in self.pins.items():
            try:
                reqs.append(f"{package}=={metadata.version(follows)}")
            except metadata.PackageNotFoundError:
                reqs.append(package)
        return reqs

    def ensure(self, *, needs: str = "python", quiet: bool = True) -> Path:
        """Create or refresh the venv when needed; returns its bin directory. `needs`: a file there."""
        marker = self.path / ".otel-dist-side-venv"
        wanted = "\n".join(self.requirements())
        if marker.exists() and marker.read_text() == wanted and (self.bin_dir / needs).exists():
            return self.bin_dir
        print(f"creating {self.path} with {', '.join(self.requirements())} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.path)], check=True, timeout=300)
        pip = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else [])]
        subprocess.run([*pip, *self.requirements()], check=True, timeout=900)
        marker.write_text(wanted)
        return self.bin_dir
