"""Local observability stack: otel-dist collector(s) + Prometheus 2.42 + VictoriaMetrics + Zipkin.

    python collector/stack.py up [--topology single|tiered] [--detach] [--free-ports] [--scrape-interval 5s]
    python collector/stack.py status
    python collector/stack.py down

From Python (tests, the ``otel-dist stack up`` CLI)::

    from collector.stack import start_stack, stack_status, stop_stack
    stack = start_stack(free_ports=True, scrape_interval="1s")
    try:
        ...  # send OTLP to stack.urls["otlp_http"], query stack.urls["prometheus"], stack.urls["zipkin"]
    finally:
        stack.stop()

Topologies (``collector/topology.py``): ``single`` is one collector plus an OTLP-JSON sink;
``tiered`` is two agents routing by trace id to two tail-sampling gateways. Both add Prometheus
(remote-writing to VictoriaMetrics, exemplars kept) and Zipkin (the trace UI).

Everything listens on 127.0.0.1. Data (Prometheus TSDB, VictoriaMetrics, sink files, gateway
queues, logs, the rendered Prometheus config) goes into a temp folder (``Stack.data_dir``). While
running, the state (ports, pids, urls, data_dir) is in ``collector/_build/stack.json`` (or
``$OTEL_DIST_STACK_STATE``) so other tools (the demo, ``otel-dist trace``) can find the stack; it is
removed on stop.

Only the standard library is used here: the processes are the collector binary (built by
build.sh), ``prometheus``, ``java -jar zipkin-server…``, ``victoria-metrics`` (both installed by
``backends.py install``) and ``otlp_sink.py`` run with the current Python interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script or loaded by path: make `collector.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector import backends, procs
from collector import topology as topo
from collector.procs import StackError
from collector.topology import Binaries, ProcSpec

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"
DEFAULT_COLLECTOR_BIN = HERE / "_build" / "otelcol-dist" / "otelcol-dist"
COLLECTOR_CONFIG = topo.COLLECTOR_CONFIG
DEFAULT_PORTS = topo.SINGLE_PORTS
collector_env = topo.collector_env

# Env overrides for binaries (e.g. an upstream otelcol-contrib binary) and for the state file.
ENV_COLLECTOR_BIN = "OTEL_DIST_COLLECTOR_BIN"
ENV_PROMETHEUS_BIN = "OTEL_DIST_PROMETHEUS_BIN"
ENV_STATE_FILE = "OTEL_DIST_STACK_STATE"
STATE_FILE = Path(os.environ.get(ENV_STATE_FILE) or HERE / "_build" / "stack.json")

# Stop order: agents first (they flush to the gateways), collectors before their backends.
_STOP_ORDER = (
    "agent1",
    "agent2",
    "collector",
    "gateway1",
    "gateway2",
    "prometheus",
    "sink",
    "zipkin",
    "victoriametrics",
)

__all__ = [
    "DEFAULT_COLLECTOR_BIN",
    "ENV_COLLECTOR_BIN",
    "ENV_PROMETHEUS_BIN",
    "STATE_FILE",
    "Stack",
    "StackError",
    "collector_env",
    "restart",
    "restart_collector",
    "stack_status",
    "start_process",
    "start_stack",
    "stop_process",
    "stop_stack",
]


@dataclass
class Stack:
    """A running stack. ``ports``/``pids``/``urls`` are keyed by the names in topology.py."""

    ports: dict[str, int]
    pids: dict[str, int]
    urls: dict[str, str]
    data_dir: str
    state_file: str
    topology: str = "single"
    started_at: float = field(default_factory=time.time)
    owns_data_dir: bool = True
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False, compare=False)
    # How start_stack launched each process, for restart() (not in the state file).
    _specs: dict[str, ProcSpec] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sink_dir(self) -> Path:
        """Folder with traces.jsonl / logs.jsonl / metrics.jsonl written by otlp_sink.py (single topology)."""
        return Path(self.data_dir) / "sink"

    @property
    def log_dir(self) -> Path:
        return Path(self.data_dir) / "logs"

    def zipkin_trace_url(self, trace_id: str) -> str:
        """The Zipkin UI page of one trace."""
        return f"{self.urls['zipkin']}/zipkin/traces/{trace_id}"

    def alive(self) -> dict[str, bool]:
        return {name: procs.pid_is(name, pid) for name, pid in self.pids.items()}

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def stop(self, timeout: float = 10.0, keep_data: bool = False) -> None:
        """SIGTERM each process (SIGKILL after ``timeout``), remove the state file and,
        unless ``keep_data``, the temp data folder. Safe to call twice."""
        for name in sorted(self.pids, key=lambda n: _STOP_ORDER.index(n) if n in _STOP_ORDER else 99):
            procs.terminate(name, self.pids[name], self._procs.get(name), timeout)
        with contextlib.suppress(FileNotFoundError, ValueError):
            state = Path(self.state_file)
            if json.loads(state.read_text()).get("pids") == self.pids:
                state.unlink()
        if self.owns_data_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def write_state(self) -> None:
        Path(self.state_file).parent.mkdir(parents=True, exist_ok=True)
        Path(self.state_file).write_text(json.dumps(self.to_json(), indent=2) + "\n")


# --------------------------------------------------------------------------- public API


def start_stack(
    *,
    topology: str = "single",
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
    zipkin_timeout: float = 240.0,
) -> Stack:
    """Start every process of ``topology``; return when all are ready.

    ports:           overrides per name (see topology.py); others get the default,
                     or a free port when ``free_ports`` (use that in tests).
    data_dir:        where TSDB/sink/queues/logs go; a new temp folder (deleted on stop) if None.
    scrape_interval: Prometheus scrape *and* rule evaluation interval (tests: "1s").
    build:           run build.sh first (it reuses an up-to-date binary in seconds).
    collector_bin:   default $OTEL_DIST_COLLECTOR_BIN, else collector/_build/otelcol-dist/otelcol-dist.
    prometheus_bin:  default $OTEL_DIST_PROMETHEUS_BIN, else `prometheus` on PATH.
    python:          interpreter for otlp_sink.py (needs starlette+uvicorn); default sys.executable.
    env:             extra environment for every collector (e.g. OTELCOL_DECISION_WAIT).
    zipkin_timeout:  how long Zipkin's JVM may take to answer (it is started first, waited for last).
    Raises StackError (with the failing process's log tail) if anything does not come up;
    already started processes are stopped first.
    """
    running = stack_status(state_file)
    if running is not None:
        raise StackError(
            f"a stack is already running (pids {running.pids}, state {state_file}); "
            "stop it first (`otel-dist stack down`, or `python collector/stack.py down`) or pass another state_file"
        )
    try:
        bins = Binaries(
            collector=_find_collector(collector_bin, build),
            prometheus=_find_prometheus(prometheus_bin),
            python=python or sys.executable,
            zipkin_jar=backends.zipkin_jar(),
            victoriametrics=backends.victoriametrics_bin(),
        )
    except backends.BackendMissing as exc:
        raise StackError(str(exc)) from None
    chosen = procs.choose_ports(topo.default_ports(topology), ports or {}, free_ports)

    owns = data_dir is None
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="otel-dist-stack-"))
    for sub in ("logs", "prometheus-data", "victoriametrics"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    specs = topo.plan(topology, chosen, root, bins, scrape_interval, env or {})
    stack = Stack(
        ports=chosen,
        pids={},
        urls=topo.urls(topology, chosen),
        data_dir=str(root),
        state_file=str(state_file),
        topology=topology,
        owns_data_dir=owns,
    )
    try:
        for spec in specs:
            if spec.slow:
                _start(stack, spec)
        for spec in specs:
            if not spec.slow:
                _start(stack, spec)
                _wait(stack, spec, timeout)
        for spec in specs:
            if spec.slow:
                _wait(stack, spec, zipkin_timeout)
        stack.write_state()
    except BaseException:
        stack.stop(keep_data=True)  # keep logs for the error message / post-mortem
        raise
    return stack


def restart(stack: Stack, name: str, *, down_for: float = 0.0, kill: bool = False, timeout: float = 60.0) -> None:
    """Stop one process, wait ``down_for`` seconds, start it again with the same command, ports
    and env, and return once it is ready (tests: an outage).

    ``kill`` sends SIGKILL (a crash: nothing is flushed) instead of SIGTERM. Only for a
    stack returned by start_stack in this process. The state file gets the new pid."""
    stop_process(stack, name, kill=kill)
    time.sleep(down_for)
    start_process(stack, name, timeout=timeout)


def stop_process(stack: Stack, name: str, *, kill: bool = False) -> None:
    """Stop one process of the stack (SIGTERM, or SIGKILL with ``kill``); start_process brings it back."""
    if name not in stack._specs:
        raise StackError(f"{name!r} needs the Stack returned by start_stack in this process")
    pid, proc = stack.pids[name], stack._procs.get(name)
    if kill:
        procs.kill(pid, proc)
    else:
        procs.terminate(name, pid, proc, 10.0)


def start_process(stack: Stack, name: str, *, timeout: float = 60.0) -> None:
    """Start a stopped process again with its command, ports and env; return once it is ready."""
    spec = stack._specs.get(name)
    if spec is None:
        raise StackError(f"{name!r} needs the Stack returned by start_stack in this process")
    old = stack.pids[name]
    _start(stack, spec)
    _wait(stack, spec, timeout)
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(Path(stack.state_file).read_text()).get("pids", {}).get(name) == old:
            stack.write_state()


def restart_collector(stack: Stack, *, down_for: float = 0.0, kill: bool = False, timeout: float = 60.0) -> None:
    """restart() of the single topology's collector."""
    restart(stack, "collector", down_for=down_for, kill=kill, timeout=timeout)


def stack_status(state_file: str | Path = STATE_FILE) -> Stack | None:
    """The stack described by the state file if at least one of its processes is alive, else None."""
    try:
        data = json.loads(Path(state_file).read_text())
    except (FileNotFoundError, ValueError):
        return None
    stack = Stack(**{k: v for k, v in data.items() if k in Stack.__dataclass_fields__ and not k.startswith("_")})
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


# --------------------------------------------------------------------------- helpers


def _start(stack: Stack, spec: ProcSpec) -> None:
    proc = procs.spawn(stack.log_dir, spec.name, spec.cmd, spec.env)
    stack.pids[spec.name] = proc.pid
    stack._procs[spec.name] = proc
    stack._specs[spec.name] = spec


def _wait(stack: Stack, spec: ProcSpec, timeout: float) -> None:
    procs.wait_http(stack._procs[spec.name], spec.name, spec.ready_url, timeout, stack.log_dir)


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


# --------------------------------------------------------------------------- CLI


def _print_stack(stack: Stack) -> None:
    u = stack.urls
    lines = [
        f"otel-dist stack is up ({stack.topology} topology; data: {stack.data_dir})",
        f"  Zipkin (traces)      {u['zipkin']}/zipkin/   (`otel-dist trace TRACE_ID` prints a trace's link)",
        f"  Prometheus UI        {u['prometheus']}   (try: http_server_request_duration_seconds_count)",
        f"  VictoriaMetrics      {u['victoriametrics']}/vmui/   (long-term metrics, remote_write from Prometheus)",
        f"  OTLP/HTTP endpoint   {u['otlp_http']}    (OTEL_EXPORTER_OTLP_ENDPOINT)",
        f"  OTLP/gRPC endpoint   {u['otlp_grpc']}",
        f"  collector health     {u['health']}",
    ]
    if stack.topology == "single":
        lines += [
            f"  app metrics          {u['prometheus_exporter']}",
            f"  collector metrics    {u['collector_telemetry']}",
            f"  received telemetry   {stack.sink_dir}/{{traces,logs,metrics}}.jsonl",
        ]
    else:
        lines += [
            f"  second agent         {u['agent2_otlp_http']}   (OTLP/HTTP)",
            "  gateways             " + ", ".join(f"127.0.0.1:{stack.ports[f'{g}_otlp_grpc']}" for g in topo.GATEWAYS),
            f"  kept traces          {stack.data_dir}/gateway{{1,2}}/traces.jsonl",
        ]
    lines += [f"  state file           {stack.state_file}", f"  pids                 {stack.pids}"]
    print("\n".join(lines), flush=True)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description="otel-dist local collector + Prometheus + Zipkin stack"
    )
    parser.add_argument("--state-file", default=str(STATE_FILE), help="default: %(default)s")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the stack (foreground until Ctrl-C unless --detach)")
    up.add_argument("--topology", choices=topo.TOPOLOGIES, default="single", help="default: %(default)s")
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

    print(f"starting the {args.topology} stack (Zipkin's JVM takes ~25 s or more to answer)...", flush=True)
    started = time.monotonic()
    try:
        stack = start_stack(
            topology=args.topology,
            free_ports=args.free_ports,
            scrape_interval=args.scrape_interval,
            build=not args.no_build,
            state_file=args.state_file,
        )
    except StackError as exc:
        print(f"stack.py: {exc}", file=sys.stderr)
        return 1
    print(f"ready in {time.monotonic() - started:.0f} s", flush=True)
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
