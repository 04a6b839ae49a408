"""The demo's plain data: options, the services it runs, the traffic it records, its error.

Also :class:`_DemoState`, the attributes of the running demo that its parts (processes,
traffic, results) share; :class:`otel_dist._demo._run._Demo` sets them.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._sink import SpanSink

SERVICES = ("auth", "orders", "gateway")


@dataclass
class DemoOptions:
    duration: float = 20.0
    rate: float = 15.0
    users: int = 3
    fault_window: tuple[float, float] = (0.3, 0.6)
    keep_running: bool = False
    run_dir: Path | None = None


@dataclass
class Outcome:
    at: float
    op: str
    status: int
    seconds: float
    error: str | None = None
    trace_id: str | None = None


@dataclass
class Service:
    name: str
    port: int
    log_path: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    launcher: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Traffic:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    fault_on_at: float | None = None
    fault_off_at: float | None = None


@dataclass
class DemoUser:
    credentials: dict[str, str]
    headers: dict[str, str]
    orders: list[int]


class DemoError(RuntimeError):
    pass


class _DemoState:
    """What the demo's parts share; declared here, set by ``_Demo.__init__``."""

    options: DemoOptions
    say: Callable[[str], None]
    services: dict[str, Service]
    sink: SpanSink | None
    _sink_cm: contextlib.AbstractContextManager[str] | None
    secret: str
    run_dir: Path
    destination: str
    collector: dict[str, str] | None
    stack_traces: Path | None
    _closed: bool
