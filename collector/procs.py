"""Process and port plumbing for collector/stack.py: start, wait for, identify and stop children.

Standard library only. Every child gets its own session (process group), its output goes to
``<data_dir>/logs/<name>.log``, and a pid is only signalled while its command line still names
the program we started (pid reuse).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

# What each process's command line must contain, by name prefix (agent1, gateway2, ...).
_CMD_MARKERS = {
    "collector": "otelcol",
    "agent": "otelcol",
    "gateway": "otelcol",
    "prometheus": "prometheus",
    "sink": "otlp_sink",
    "zipkin": "zipkin-server",
    "victoriametrics": "victoria-metrics",
}


class StackError(RuntimeError):
    """The stack could not be started (the message names the process and its log)."""


def marker(name: str) -> str:
    for prefix, text in _CMD_MARKERS.items():
        if name.startswith(prefix):
            return text
    raise KeyError(name)


def spawn(log_dir: Path, name: str, cmd: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "ab")
    # New session: Ctrl-C in the terminal reaches only stack.py, which then stops
    # the children in order; a detached stack also survives its parent.
    try:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    finally:
        log.close()


def wait_http(proc: subprocess.Popen, name: str, url: str, timeout: float, log_dir: Path) -> None:
    """Until ``url`` answers 200; StackError with the log tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with code {proc.returncode}:\n{log_tail(log_dir, name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise StackError(f"{name} not ready at {url} after {timeout:.0f}s:\n{log_tail(log_dir, name)}")


def log_tail(log_dir: Path, name: str, lines: int = 30) -> str:
    path = log_dir / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + f"\n(full log: {path})"
    except FileNotFoundError:
        return f"(no log at {path})"


def pid_is(name: str, pid: int) -> bool:
    """True if ``pid`` is alive and still is our ``name`` process (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker(name) in cmdline


def terminate(name: str, pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the process group, SIGKILL after ``timeout``."""
    if proc is not None and proc.poll() is not None:
        return
    if proc is None and not pid_is(name, pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGCONT)  # a stopped (SIGSTOP) process would not act on SIGTERM
        os.killpg(pid, signal.SIGTERM)  # the child leads its own session/process group
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if proc is not None else not pid_is(name, pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def kill(pid: int, proc: subprocess.Popen | None) -> None:
    """SIGKILL (a crash: nothing flushed) and reap."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=10)


def choose_ports(defaults: Mapping[str, int], overrides: Mapping[str, int], free: bool) -> dict[str, int]:
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown port names {sorted(unknown)}; known: {sorted(defaults)}")
    ports: dict[str, int] = {}
    for name, default in defaults.items():
        port = overrides.get(name) or default
        if free and name not in overrides:
            port = free_port()
            while port in ports.values():  # the kernel may hand out the same port twice
                port = free_port()
        ports[name] = port
    for name, port in ports.items():
        if not port_free(port):
            raise StackError(
                f"port {port} ({name}) is in use on 127.0.0.1; use free_ports=True / --free-ports or pass another port"
            )
    return ports


def free_port() -> int:
    # Bind to port 0 and let the kernel pick; small race until the process binds it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
