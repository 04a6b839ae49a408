"""Local observability stack: otel-dist collector + Prometheus 2.42 + OTLP-JSON sink.

    python collector/stack.py up [--detach] [--free-ports] [--scrape-interval 5s]
    python collector/stack.py status
    python collector/stack.py down

From Python (tests, the ``otel-dist stack up`` CLI)::

    from collector.stack import start_stack, stack_status, stop_stack
    stack = start_stack(free_ports=True, scrape_interval="1s")
    try:
        ...  # send OTLP to stack.urls["otlp_http"], query stack.urls["prometheus"]
    finally:
        stack.stop()

Everything listens on 127.0.0.1. Data (Prometheus TSDB, sink files, logs, the rendered
Prometheus config) goes into a temp folder (``Stack.data_dir``). While running, the
state (ports, pids, urls, data_dir) is in ``collector/_build/stack.json`` so other
tools (the demo) can find the stack; it is removed on stop.

Only the standard library is used here: the processes are the collector binary
(built by build.sh), the ``prometheus`` binary, and ``otlp_sink.py`` (Starlette/uvicorn)
run with the current Python interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"
DEFAULT_COLLECTOR_BIN = HERE / "_build" / "otelcol-dist" / "otelcol-dist"
COLLECTOR_CONFIG = HERE / "otelcol-config.yaml"
PROMETHEUS_CONFIG = HERE / "prometheus.yml"
SINK_SCRIPT = HERE / "otlp_sink.py"
RULES_DIR = HERE / "rules"
STATE_FILE = HERE / "_build" / "stack.json"

# name -> default loopback port. These defaults match otelcol-config.yaml and prometheus.yml.
DEFAULT_PORTS: dict[str, int] = {
    "otlp_grpc": 4317,  # collector OTLP/gRPC receiver
    "otlp_http": 4318,  # collector OTLP/HTTP receiver
    "prometheus_exporter": 8889,  # collector's prometheus exporter (app + span metrics)
    "collector_telemetry": 8888,  # collector's own metrics
    "health": 13133,  # collector health_check extension
    "sink": 4320,  # otlp_sink.py (what the collector exported, as JSON lines)
    "prometheus": 9090,  # Prometheus UI/API
}

# Env overrides for binaries (e.g. an upstream otelcol-contrib 0.165.1 binary).
ENV_COLLECTOR_BIN = "OTEL_DIST_COLLECTOR_BIN"
ENV_PROMETHEUS_BIN = "OTEL_DIST_PROMETHEUS_BIN"

# Stop order: the collector first so it flushes its last batches to the sink.
_STOP_ORDER = ("collector", "prometheus", "sink")
# What each pid's command line must contain before we signal it (guards against pid reuse).
_CMD_MARKERS = {"collector": "otelcol", "prometheus": "prometheus", "sink": "otlp_sink"}


class StackError(RuntimeError):
    """The stack could not be started (the message names the process and its log)."""


@dataclass
class Stack:
    """A running stack. ``ports``/``pids``/``urls`` are keyed by the names in DEFAULT_PORTS / _STOP_ORDER."""

    ports: dict[str, int]
    pids: dict[str, int]
    urls: dict[str, str]
    data_dir: str
    state_file: str
    started_at: float = field(default_factory=time.time)
    owns_data_dir: bool = True
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False, compare=False)
    # How start_stack launched the collector, for restart_collector (not in the state file).
    _collector_launch: tuple[list[str], dict[str, str]] | None = field(default=None, repr=False, compare=False)

    @property
    def sink_dir(self) -> Path:
        """Folder with traces.jsonl / logs.jsonl / metrics.jsonl written by otlp_sink.py."""
        return Path(self.data_dir) / "sink"

    def alive(self) -> dict[str, bool]:
        return {name: _pid_is(name, pid) for name, pid in self.pids.items()}

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def stop(self, timeout: float = 10.0, keep_data: bool = False) -> None:
        """SIGTERM each process (SIGKILL after ``timeout``), remove the state file and,
        unless ``keep_data``, the temp data folder. Safe to call twice."""
        for name in _STOP_ORDER:
            pid = self.pids.get(name)
            if pid is not None:
                _terminate(name, pid, self._procs.get(name), timeout)
        with contextlib.suppress(FileNotFoundError):
            state = Path(self.state_file)
            if json.loads(state.read_text()).get("pids") == self.pids:
                state.unlink()
        if self.owns_data_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- public API


def start_stack(
    *,
    ports: Mapping[str, int] | None = None,
    free_ports: bool = False,
    data_dir: str | Path | None = None,
    scrape_interval: str = "5s",
    build: bool = True,
    collector_bin: str | Path | None = None,
    prometheus_bin: str | Path | None = None,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    state_file: str | Path = STATE_FILE,
    timeout: float = 60.0,
) -> Stack:
    """Start collector, sink and Prometheus; return when all three are ready.

    ports:           overrides per name (see DEFAULT_PORTS); others get the default,
                     or a free port when ``free_ports`` (use that in tests).
    data_dir:        where TSDB/sink/logs go; a new temp folder (deleted on stop) if None.
    scrape_interval: Prometheus scrape *and* rule evaluation interval (tests: "1s").
    build:           run build.sh first (it reuses an up-to-date binary in seconds).
    collector_bin:   default $OTEL_DIST_COLLECTOR_BIN, else collector/_build/otelcol-dist/otelcol-dist.
    prometheus_bin:  default $OTEL_DIST_PROMETHEUS_BIN, else `prometheus` on PATH.
    python:          interpreter for otlp_sink.py (needs starlette+uvicorn); default sys.executable.
    env:             extra environment for the collector (e.g. OTELCOL_SPAN_METRICS_FLUSH_INTERVAL).
    Raises StackError (with the failing process's log tail) if anything does not come up;
    already started processes are stopped first.
    """
    running = stack_status(state_file)
    if running is not None:
        raise StackError(
            f"a stack is already running (pids {running.pids}, state {state_file}); "
            "stop it first (`stack.py down`) or pass another state_file"
        )

    collector = _find_collector(collector_bin, build)
    prometheus = _find_prometheus(prometheus_bin)
    chosen = _choose_ports(ports or {}, free_ports)

    owns = data_dir is None
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="otel-dist-stack-"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "prometheus-data").mkdir(exist_ok=True)
    prom_cfg = root / "prometheus.yml"
    prom_cfg.write_text(render_prometheus_config(chosen, scrape_interval))

    stack = Stack(
        ports=chosen,
        pids={},
        urls=_urls(chosen),
        data_dir=str(root),
        state_file=str(state_file),
        owns_data_dir=owns,
    )
    try:
        # Sink first: the collector exports to it from its first batch on.
        _spawn(
            stack,
            "sink",
            [python or sys.executable, str(SINK_SCRIPT), "--dir", str(stack.sink_dir), "--port", str(chosen["sink"])],
        )
        _wait_http(stack, "sink", stack.urls["sink"] + "/healthz", timeout)

        stack._collector_launch = (
            [str(collector), f"--config={COLLECTOR_CONFIG}"],
            {**collector_env(chosen), **(env or {})},
        )
        _spawn(stack, "collector", *stack._collector_launch)
        _wait_http(stack, "collector", stack.urls["health"], timeout)

        _spawn(
            stack,
            "prometheus",
            [
                str(prometheus),
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={root / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{chosen['prometheus']}",
                "--enable-feature=exemplar-storage",  # keep trace_id exemplars from the exporter
                "--web.enable-lifecycle",  # POST /-/reload after tests rewrite rules
            ],
        )
        _wait_http(stack, "prometheus", stack.urls["prometheus"] + "/-/ready", timeout)
        Path(state_file).parent.mkdir(parents=True, exist_ok=True)
        Path(state_file).write_text(json.dumps(stack.to_json(), indent=2) + "\n")
    except BaseException:
        stack.stop(keep_data=True)  # keep logs for the error message / post-mortem
        raise
    return stack


def restart_collector(stack: Stack, *, down_for: float = 0.0, kill: bool = False, timeout: float = 60.0) -> None:
    """Stop only the collector, wait ``down_for`` seconds, start it again on the same ports
    and env, and return once its health endpoint answers (tests: a collector outage).

    ``kill`` sends SIGKILL (a crash: nothing is flushed) instead of SIGTERM. Only for a
    stack returned by start_stack in this process. The state file gets the new pid."""
    if stack._collector_launch is None:
        raise StackError("restart_collector needs the Stack returned by start_stack in this process")
    pid = stack.pids["collector"]
    proc = stack._procs.get("collector")
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=10)
    else:
        _terminate("collector", pid, proc, 10.0)
    time.sleep(down_for)
    _spawn(stack, "collector", *stack._collector_launch)
    _wait_http(stack, "collector", stack.urls["health"], timeout)
    with contextlib.suppress(FileNotFoundError, ValueError):
        state = Path(stack.state_file)
        if json.loads(state.read_text()).get("pids", {}).get("collector") == pid:
            state.write_text(json.dumps(stack.to_json(), indent=2) + "\n")


def stack_status(state_file: str | Path = STATE_FILE) -> Stack | None:
    """The stack described by the state file if at least one of its processes is alive, else None."""
    try:
        data = json.loads(Path(state_file).read_text())
    except (FileNotFoundError, ValueError):
        return None
    stack = Stack(**{k: v for k, v in data.items() if k in Stack.__dataclass_fields__ and k != "_procs"})
    return stack if any(stack.alive().values()) else None


def stop_stack(state_file: str | Path = STATE_FILE, timeout: float = 10.0) -> bool:
    """Stop the stack recorded in the state file. Returns False if none was running."""
    stack = stack_status(state_file)
    if stack is None:
        with contextlib.suppress(FileNotFoundError):
            Path(state_file).unlink()  # stale
        return False
    stack.stop(timeout=timeout)
    return True


def collector_env(ports: Mapping[str, int]) -> dict[str, str]:
    """The OTELCOL_* variables that point otelcol-config.yaml at ``ports``."""
    return {
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp_grpc']}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['otlp_http']}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports['prometheus_exporter']}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(ports["collector_telemetry"]),
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "OTELCOL_SINK_ENDPOINT": f"http://127.0.0.1:{ports['sink']}",
    }


def render_prometheus_config(ports: Mapping[str, int], scrape_interval: str = "15s") -> str:
    """prometheus.yml with the placeholder tokens (see its header) replaced."""
    # Replace only in the YAML body: the header comment mentions the tokens too.
    header, sep, body = PROMETHEUS_CONFIG.read_text().partition("\nglobal:")
    body = sep + body
    replacements = {
        "127.0.0.1:8889": f"127.0.0.1:{ports['prometheus_exporter']}",
        "127.0.0.1:8888": f"127.0.0.1:{ports['collector_telemetry']}",
        "scrape_interval: 15s": f"scrape_interval: {scrape_interval}",
        "evaluation_interval: 15s": f"evaluation_interval: {scrape_interval}",
        "- rules/*.yml": f"- {RULES_DIR}/*.yml",
    }
    for token, value in replacements.items():
        if token not in body:
            raise StackError(f"prometheus.yml no longer contains the placeholder {token!r}")
        body = body.replace(token, value)
    return header + body


# --------------------------------------------------------------------------- helpers


def _urls(ports: Mapping[str, int]) -> dict[str, str]:
    return {
        "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
        "otlp_http": f"http://127.0.0.1:{ports['otlp_http']}",
        "otlp_grpc": f"http://127.0.0.1:{ports['otlp_grpc']}",
        "health": f"http://127.0.0.1:{ports['health']}/",
        "prometheus_exporter": f"http://127.0.0.1:{ports['prometheus_exporter']}/metrics",
        "collector_telemetry": f"http://127.0.0.1:{ports['collector_telemetry']}/metrics",
        "sink": f"http://127.0.0.1:{ports['sink']}",
    }


def _find_collector(explicit: str | Path | None, build: bool) -> Path:
    chosen = explicit or os.environ.get(ENV_COLLECTOR_BIN)
    if chosen:
        path = Path(chosen)
    else:
        if build:
            # build.sh prints progress and reuses a fresh binary in well under a second.
            subprocess.run(["bash", str(BUILD_SH)], check=True, stdout=sys.stderr)
        path = DEFAULT_COLLECTOR_BIN
    if not os.access(path, os.X_OK):
        raise StackError(f"collector binary not found at {path}; run collector/build.sh")
    return path


def _find_prometheus(explicit: str | Path | None) -> str:
    chosen = str(explicit or os.environ.get(ENV_PROMETHEUS_BIN) or shutil.which("prometheus") or "")
    if not chosen or not os.access(chosen, os.X_OK):
        raise StackError(
            f"prometheus binary not found (Debian: apt-get install prometheus; or set {ENV_PROMETHEUS_BIN})"
        )
    return chosen


def _choose_ports(overrides: Mapping[str, int], free: bool) -> dict[str, int]:
    unknown = set(overrides) - set(DEFAULT_PORTS)
    if unknown:
        raise ValueError(f"unknown port names {sorted(unknown)}; known: {sorted(DEFAULT_PORTS)}")
    ports: dict[str, int] = {}
    for name, default in DEFAULT_PORTS.items():
        port = overrides.get(name) or default
        if free and name not in overrides:
            port = _free_port()
            while port in ports.values():  # the kernel may hand out the same port twice
                port = _free_port()
        ports[name] = port
    for name, port in ports.items():
        if not _port_free(port):
            raise StackError(
                f"port {port} ({name}) is in use on 127.0.0.1; use free_ports=True / --free-ports or pass another port"
            )
    return ports


def _free_port() -> int:
    # Bind to port 0 and let the kernel pick; small race until the process binds it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _spawn(stack: Stack, name: str, cmd: list[str], env: Mapping[str, str] | None = None) -> None:
    log = open(Path(stack.data_dir) / "logs" / f"{name}.log", "ab")
    # New session: Ctrl-C in the terminal reaches only stack.py, which then stops
    # the children in order; a detached stack also survives its parent.
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    log.close()
    stack.pids[name] = proc.pid
    stack._procs[name] = proc


def _wait_http(stack: Stack, name: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    proc = stack._procs[name]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with code {proc.returncode}:\n{_log_tail(stack, name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise StackError(f"{name} not ready at {url} after {timeout:.0f}s:\n{_log_tail(stack, name)}")


def _log_tail(stack: Stack, name: str, lines: int = 30) -> str:
    path = Path(stack.data_dir) / "logs" / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + f"\n(full log: {path})"
    except FileNotFoundError:
        return f"(no log at {path})"


def _pid_is(name: str, pid: int) -> bool:
    """True if ``pid`` is alive and still is our ``name`` process (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and _CMD_MARKERS[name] in cmdline


def _terminate(name: str, pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is not None and proc.poll() is not None:
        return
    if proc is None and not _pid_is(name, pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # the child leads its own session/process group
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if proc is not None else not _pid_is(name, pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- CLI


def _print_stack(stack: Stack) -> None:
    u = stack.urls
    print(
        f"""otel-dist stack is up (data: {stack.data_dir})
  Prometheus UI        {u["prometheus"]}   (try: http_server_request_duration_seconds_count)
  OTLP/HTTP endpoint   {u["otlp_http"]}    (OTEL_EXPORTER_OTLP_ENDPOINT)
  OTLP/gRPC endpoint   {u["otlp_grpc"]}
  collector health     {u["health"]}
  app metrics          {u["prometheus_exporter"]}
  collector metrics    {u["collector_telemetry"]}
  received telemetry   {stack.sink_dir}/{{traces,logs,metrics}}.jsonl
  state file           {stack.state_file}
  pids                 {stack.pids}""",
        flush=True,
    )


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.py", description="otel-dist local collector + Prometheus stack")
    parser.add_argument("--state-file", default=str(STATE_FILE), help="default: %(default)s")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack (foreground until Ctrl-C unless --detach)")
    up.add_argument("--detach", action="store_true", help="leave it running; stop with `down`")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    up.add_argument("--scrape-interval", default="5s")
    up.add_argument("--no-build", action="store_true", help="do not run build.sh (binary must exist)")
    sub.add_parser("down", help="stop the stack recorded in the state file")
    sub.add_parser("status", help="print the running stack as JSON (exit 1 if none)")
    args = parser.parse_args(argv)

    if args.cmd == "status":
        stack = stack_status(args.state_file)
        if stack is None:
            print("no stack running", file=sys.stderr)
            return 1
        print(json.dumps({**stack.to_json(), "alive": stack.alive()}, indent=2))
        return 0
    if args.cmd == "down":
        stopped = stop_stack(args.state_file)
        print("stack stopped" if stopped else "no stack running")
        return 0

    try:
        stack = start_stack(
            free_ports=args.free_ports,
            scrape_interval=args.scrape_interval,
            build=not args.no_build,
            state_file=args.state_file,
        )
    except StackError as exc:
        print(f"stack.py: {exc}", file=sys.stderr)
        return 1
    _print_stack(stack)
    if args.detach:
        prog = os.environ.get("OTEL_DIST_CLI_PROG") or f"python {sys.argv[0]}"  # `otel-dist stack` sets it
        print(f"detached; stop with: {prog} down")
        return 0
    # Foreground: wait for Ctrl-C / SIGTERM or for a process to die, then stop all.
    # Explicit handlers: SIGINT may be inherited as "ignored" (e.g. when launched with `&`).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    print("press Ctrl-C to stop", flush=True)
    try:
        while all(stack.alive().values()):
            time.sleep(1)
        print(f"a process exited: {stack.alive()}; stopping", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    stack.stop()
    print("stack stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
