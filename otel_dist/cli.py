"""The ``otel-dist`` command.

    otel-dist demo [--duration 20] [--rate 15] [--keep-running]
    otel-dist stack up|down|status [--json] [--topology single|tiered] [options of collector/stack.py]
    otel-dist trace TRACE_ID [--open]
    otel-dist new-service NAME [--calls auth,orders] [--dir .]
    otel-dist doctor URL... [--json] [--as NAME]
    otel-dist keygen --service NAME [--algorithm EdDSA|ES256] [--out FILE]

``demo`` runs the three example services with real traffic (see ``_demo``).
``stack`` delegates to ``collector/stack.py`` of the source checkout: the local
OpenTelemetry Collector + Prometheus + Zipkin; the demo exports to it while it runs.
``trace`` prints (and opens) a trace's page in the running stack's Zipkin.
``new-service`` writes a runnable service and its test (``_scaffold``).
``doctor`` checks running services for production readiness (``_doctor``).
``keygen`` makes one service's signing key pair (per-caller asymmetric keys, ``_auth._keygen``).

Only argparse is imported up front, so ``otel-dist --help`` starts fast; each
command imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "stack":
        return _stack(args.action, extra, as_json=args.json)
    if args.command == "trace" and not extra:
        from ._trace_link import trace_link

        return trace_link(args.trace_id, open_browser=args.open)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "new-service":
        return _new_service(args.name, args.dir, args.calls)
    if args.command == "keygen":
        from ._auth._keygen import keygen as make_key

        print(make_key(args.service, args.algorithm, args.out), end="")
        return 0
    if args.command == "doctor":
        from ._doctor import main as doctor

        return doctor(args.urls, as_json=args.json, caller=args.caller, timeout=args.timeout)
    from ._demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            duration=args.duration,
            rate=args.rate,
            users=max(1, args.users),
            keep_running=args.keep_running,
            run_dir=args.run_dir,
        )
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-dist",
        description="otel-dist: demo, local observability stack, trace links, new services, readiness checks, keys",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run auth, orders and gateway with traffic, a fault phase and a summary",
        description="Start the three example services on loopback, drive traffic through the gateway, "
        "make orders fail for a while so the gateway's breaker opens and heals, then print a summary.",
    )
    demo.add_argument("--duration", type=_positive, default=20.0, help="seconds of traffic (default 20)")
    demo.add_argument("--rate", type=_positive, default=15.0, help="requests per second (default 15)")
    demo.add_argument("--users", type=int, default=3, help="users to register (default 3)")
    demo.add_argument("--run-dir", type=Path, default=None, help="folder for logs and databases (default: a temp one)")
    demo.add_argument("--keep-running", action="store_true", help="leave the services up after the summary")
    stack = commands.add_parser(
        "stack",
        help="start/stop the local collector + Prometheus + Zipkin (collector/stack.py)",
        description="Delegates to collector/stack.py; extra options (--detach, --free-ports, ...) are passed on.",
    )
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--json", action="store_true", help="status: print JSON instead of a table")
    trace = commands.add_parser(
        "trace",
        help="print the Zipkin link of a trace id (the local stack must be up)",
        description="Print the running local stack's Zipkin page for TRACE_ID and whether Zipkin has it.",
    )
    trace.add_argument("trace_id", help="32 hex digits, as in traceparent, logs and exemplars")
    trace.add_argument("--open", action="store_true", help="also open it in a browser")
    new = commands.add_parser(
        "new-service",
        help="write a runnable service (services/NAME/app.py) and its test",
        description="Write services/NAME/app.py (create_app, its own table, service auth) and "
        "tests/test_NAME_service.py (the service as a real process, called with a service token).",
    )
    new.add_argument("name", help="the service's name, e.g. inventory (its URL variable: INVENTORY_SERVICE_URL)")
    new.add_argument("--calls", default="", help="services it calls, comma-separated (e.g. auth,orders)")
    new.add_argument("--dir", type=Path, default=Path("."), help="project folder holding services/ (default: .)")
    doctor = commands.add_parser(
        "doctor",
        help="production-readiness report for running services (non-zero exit on FAIL)",
        description="Check running otel-dist services: auth and key strength, environment policy, exporter, "
        "/metrics format, /ready, sampling, fault injection, versions. One line per check: PASS, WARN or FAIL "
        "with the fix. With SERVICE_JWT_SECRET set, doctor signs a service token to read each service's "
        "configuration from /_doctor (no secret is ever shown).",
    )
    doctor.add_argument("urls", nargs="+", metavar="URL", help="base URL of a service, e.g. http://127.0.0.1:8001")
    doctor.add_argument("--json", action="store_true", help="print JSON for machines")
    doctor.add_argument(
        "--as", dest="caller", default="otel-dist-doctor", help="issuer of its service token (default: %(default)s)"
    )
    doctor.add_argument("--timeout", type=_positive, default=5.0, help="seconds per request (default 5)")
    keygen = commands.add_parser(
        "keygen",
        help="a signing key pair for one service (per-caller asymmetric keys: the production setup)",
        description="Print (or write with --out, mode 0600) SERVICE_JWT_ALGORITHM and SERVICE_JWT_PRIVATE_KEY for "
        "one service, and the SERVICE_JWT_JWKS_URLS entry its callees add to trust it.",
    )
    keygen.add_argument("--service", required=True, help="the service that signs with this key")
    keygen.add_argument("--algorithm", choices=["EdDSA", "ES256"], default="EdDSA", help="default EdDSA (Ed25519)")
    keygen.add_argument("--out", type=Path, default=None, help="env file to write (mode 0600) instead of stdout")
    return parser


def _new_service(name: str, folder: Path, calls: str) -> int:
    from ._scaffold import new_service
    from ._settings import ConfigError, service_url_variable

    try:
        written = new_service(name, folder, [c.strip() for c in calls.split(",") if c.strip()])
    except ConfigError as exc:
        print(f"otel-dist new-service: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"created {path}")
    app = next(p for p in written if p.name == "app.py")
    test = next(p for p in written if p.name.startswith("test_"))
    module = f"services.{app.parent.name}.app:app"
    print(
        f"""next:
  .venv/bin/python -m pytest -q {test}    # its test: the service as a process, with service auth
  .venv/bin/uvicorn {module} --port 8003    # run it (JSON logs, /metrics, /health, /ready)
  callers: create_app(..., downstreams=["{name}"]) with {service_url_variable(name)}=http://127.0.0.1:8003"""
    )
    return 0


def _stack(action: str, extra: list[str], *, as_json: bool) -> int:
    import os
    import subprocess

    from ._demo import source_root

    script = source_root() / "collector" / "stack.py"
    if not script.exists():
        print(
            "otel-dist stack: collector/stack.py is part of the source checkout, not of the installed package; "
            "run this from a clone of the repository",
            file=sys.stderr,
        )
        return 2
    argv = [sys.executable, str(script), *_global_first(extra, action)]
    env = dict(os.environ, OTEL_DIST_CLI_PROG="otel-dist stack")  # stack.py's hints name this command
    if action == "status" and not as_json:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            if "no stack running" in done.stderr:
                print("start it with: otel-dist stack up (or: otel-dist stack up --detach)", file=sys.stderr)
            return done.returncode
        print(status_table(done.stdout))
        return 0
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:  # the foreground stack got Ctrl-C too and stops itself
        return 130


def _global_first(extra: list[str], action: str) -> list[str]:
    """stack.py's own options (``--state-file PATH``) go before its subcommand, the others after it."""
    before, after, rest = [], [], iter(extra)
    for arg in rest:
        if arg == "--state-file":
            before += [arg, next(rest, "")]
        elif arg.startswith("--state-file="):
            before.append(arg)
        else:
            after.append(arg)
    return [*before, action, *after]


def status_table(status_json: str) -> str:
    """``stack.py status`` JSON as a table: processes, then addresses."""
    import json
    import time

    state = json.loads(status_json)
    alive = state.get("alive", {})
    started = state.get("started_at")
    since = f", up {_duration(time.time() - started)}" if isinstance(started, int | float) else ""
    lines = [f"otel-dist stack: running{since}; data in {state.get('data_dir', '?')}", ""]
    lines.append(f"  {'process':<22} {'pid':>8}  state")
    for name, pid in state.get("pids", {}).items():
        lines.append(f"  {name:<22} {pid:>8}  {'up' if alive.get(name) else 'DOWN'}")
    urls = state.get("urls", {})
    if urls:
        lines.append("")
        lines.append(f"  {'address':<22} url")
        lines.extend(f"  {name:<22} {url}" for name, url in urls.items())
    lines.append("")
    lines.append("  JSON: otel-dist stack status --json; stop: otel-dist stack down")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


if __name__ == "__main__":
    sys.exit(main())
