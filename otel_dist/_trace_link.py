"""``otel-dist trace TRACE_ID [--open]``: the Zipkin page of one trace in the running local stack."""

from __future__ import annotations

import re
import webbrowser
from collections.abc import Callable

import httpx

_TRACE_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{16}")


def trace_link(trace_id: str, open_browser: bool = False, say: Callable[[str], None] = print) -> int:
    """Print the Zipkin link of ``trace_id`` (and open it); the exit code."""
    from ._demo import load_stack_module

    trace_id = trace_id.strip().lower()
    if not _TRACE_ID.fullmatch(trace_id):
        say(f"otel-dist trace: {trace_id!r} is not a trace id: expected 32 hex digits (W3C trace-id) or 16")
        return 2
    module = load_stack_module()
    stack = module.stack_status() if module is not None else None
    zipkin = stack.urls.get("zipkin") if stack is not None else None
    if not zipkin:
        say("otel-dist trace: no local stack with Zipkin is running; start one with `otel-dist stack up`")
        return 1
    link = f"{zipkin}/zipkin/traces/{trace_id}"
    say(link)
    try:
        found = httpx.get(f"{zipkin}/api/v2/trace/{trace_id}", timeout=5.0)
        if found.status_code == 404:
            say("  Zipkin has no such trace (yet): not exported yet, sampled out, or from before the stack started")
        elif found.status_code == 200:
            spans = found.json()
            services = sorted({s.get("localEndpoint", {}).get("serviceName", "?") for s in spans})
            say(f"  {len(spans)} spans from {', '.join(services)}")
    except httpx.HTTPError as exc:
        say(f"  Zipkin did not answer ({type(exc).__name__}); the link may work once it does")
    if open_browser and not webbrowser.open(link):
        say("  no browser could be opened here: open the link above")
    return 0
