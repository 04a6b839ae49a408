"""The demo's orchestration: :func:`run_demo` runs :class:`_Demo` and stops everything after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ._model import DemoError, DemoOptions, Service
from ._services import _Processes, _services_root, _stop_all
from ._sink import SpanSink
from ._summary import _Results
from ._traffic import _breaker_transitions, _Traffic


def run_demo(options: DemoOptions, write: Callable[[str], None] | None = None) -> int:
    """Run the demo; the exit code (0 ok, 1 failed, 130 interrupted)."""
    say = write or (lambda line: print(line, flush=True))
    demo = _Demo(options, say)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything the demo started")
        return 130
    except DemoError as exc:
        say(f"otel-dist demo: {exc}")
        return 1
    finally:
        demo.close()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


class _Demo(_Processes, _Traffic, _Results):
    def __init__(self, options: DemoOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.services: dict[str, Service] = {}
        self.sink: SpanSink | None = None
        self._sink_cm: contextlib.AbstractContextManager[str] | None = None
        # A secret from the environment lets `otel-dist doctor` (same variable) read the services' configuration.
        self.secret = os.environ.get("SERVICE_JWT_SECRET", "").strip() or secrets.token_urlsafe(48)
        self.run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="otel-dist-demo-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.destination = ""
        self.collector: dict[str, str] | None = None
        self.stack_traces: Path | None = None
        self._closed = False

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        opts = self.options
        root = _services_root()
        env = self._environment(root)
        self._start_services(env, root)
        self.say(
            f"otel-dist demo: {opts.duration:g} s of traffic through the gateway, "
            f"orders failing from {opts.fault_window[0] * opts.duration:.0f} s "
            f"to {opts.fault_window[1] * opts.duration:.0f} s"
        )
        traffic = asyncio.run(self._drive())
        example = self._example_trace(traffic)
        metrics = self._scrape_metrics()
        transitions = _breaker_transitions(self.services["gateway"].log_path, traffic.started)
        for line in self._summary(traffic, example, transitions, metrics):
            self.say(line)
        if opts.keep_running:
            urls = " ".join(s.url for s in self.services.values())
            self.say("\nservices keep running (--keep-running); press Ctrl-C to stop them")
            self.say(f"check them for production readiness: otel-dist doctor {urls}")
            if "SERVICE_JWT_SECRET" not in os.environ:
                self.say("  (give the demo and doctor one SERVICE_JWT_SECRET to let doctor read their settings)")
            while all(s.proc is not None and s.proc.poll() is None for s in self.services.values()):
                time.sleep(0.5)
        ok = sum(1 for o in traffic.outcomes if o.status in (200, 201))
        return 0 if ok else 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stopped = _stop_all([s for s in reversed(self.services.values()) if s.proc is not None])
        if self._sink_cm is not None:
            self._sink_cm.__exit__(None, None, None)
        if stopped:
            self.say(f"stopped {', '.join(stopped)}; logs and databases stay in {self.run_dir}")
