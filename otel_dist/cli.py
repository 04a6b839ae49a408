"""The ``otel-dist`` command.

    otel-dist demo [--duration 20] [--rate 15] [--keep-running]
    otel-dist stack up|down|status [--topology single|tiered] [options of collector/stack.py]
    otel-dist trace TRACE_ID [--open]
    otel-dist keygen --service NAME [--algorithm EdDSA|ES256] [--out FILE]

``demo`` runs the three example services with real traffic (see ``_demo``).
``stack`` delegates to ``collector/stack.py`` of the source checkout: the local
OpenTelemetry Collector + Prometheus + Zipkin; the demo exports to it while it runs.
``trace`` prints (and opens) a trace's page in the running stack's Zipkin.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-dist", description="otel-dist: demo and local observability stack")
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
    keygen = commands.add_parser(
        "keygen",
        help="a signing key pair for one service (per-caller asymmetric keys: the production setup)",
        description="Print (or write with --out, mode 0600) SERVICE_JWT_ALGORITHM and SERVICE_JWT_PRIVATE_KEY for "
        "one service, and the SERVICE_JWT_JWKS_URLS entry its callees add to trust it.",
    )
    keygen.add_argument("--service", required=True, help="the service that signs with this key")
    keygen.add_argument("--algorithm", choices=["EdDSA", "ES256"], default="EdDSA", help="default EdDSA (Ed25519)")
    keygen.add_argument("--out", type=Path, default=None, help="env file to write (mode 0600) instead of stdout")
    trace = commands.add_parser(
        "trace",
        help="print the Zipkin link of a trace id (the local stack must be up)",
        description="Print the running local stack's Zipkin page for TRACE_ID and whether Zipkin has it.",
    )
    trace.add_argument("trace_id", help="32 hex digits, as in traceparent, logs and exemplars")
    trace.add_argument("--open", action="store_true", help="also open it in a browser")
    args, extra = parser.parse_known_args(argv)

    if args.command == "stack":
        return _stack(args.action, extra)
    if args.command == "trace" and not extra:
        from ._trace_link import trace_link

        return trace_link(args.trace_id, open_browser=args.open)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "keygen":
        from ._auth._keygen import keygen as make_key

        print(make_key(args.service, args.algorithm, args.out), end="")
        return 0
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


def _stack(action: str, extra: list[str]) -> int:
    from ._demo import source_root

    script = source_root() / "collector" / "stack.py"
    if not script.exists():
        print(
            "otel-dist stack: collector/stack.py is part of the source checkout, not of the installed package; "
            "run this from a clone of the repository",
            file=sys.stderr,
        )
        return 2
    try:
        return subprocess.call([sys.executable, str(script), action, *extra])
    except KeyboardInterrupt:  # the foreground stack got Ctrl-C too and stops itself
        return 130


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


if __name__ == "__main__":
    sys.exit(main())
