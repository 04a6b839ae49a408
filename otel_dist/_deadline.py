"""Request deadlines: the header that carries a caller's remaining time, and the request being handled.

``x-otel-dist-deadline-ms: 2500`` says "I stop waiting for this answer in 2,500 ms".  A relative
time (as Envoy's ``x-envoy-expected-rq-timeout-ms``) needs no synchronised clocks.  Not ``grpc-timeout``:
its unit-suffixed format and semantics belong to gRPC, and gRPC-aware proxies act on it.  Not baggage:
baggage travels end to end to every host (third parties included), users' own entries share its size
limit, and it would need an absolute time.  The server side (``_server``) bounds the value with its
own ``SERVICE_REQUEST_TIMEOUT`` (a caller can only shorten it), keeps it here for the handler and
for every ``ServiceClient`` call made while handling the request, and cancels the work when the
deadline passes or (once a downstream call is made) when the caller disconnects.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

__all__ = [
    "DEADLINE_HEADER",
    "HEADER",
    "REQUEST",
    "RequestContext",
    "current_request",
    "parse_deadline",
    "remaining_time",
]


HEADER = "x-otel-dist-deadline-ms"
DEADLINE_HEADER = HEADER  # the public name (otel_dist.DEADLINE_HEADER)
HEADER_BYTES = HEADER.encode()
_MAX_DIGITS = 9  # ~11.5 days in ms: anything longer is capped by the server's own timeout anyway

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
# The request being handled: the server layer sets and resets it.

REQUEST: ContextVar[RequestContext | None] = ContextVar("otel_dist_request", default=None)


def parse_deadline(raw: bytes) -> float | None:
    """Seconds from a header value: ASCII digits only (milliseconds), else None (ignored)."""
    if not raw or len(raw) > _MAX_DIGITS or not raw.isdigit():  # bytes.isdigit: ASCII only
        return None
    return int(raw) / 1000.0


def current_request() -> RequestContext | None:
    return REQUEST.get()


def remaining_time() -> float | None:
    """Seconds left before the deadline of the request being handled (may be <= 0); None outside a request."""
    ctx = REQUEST.get()
    return None if ctx is None else ctx.deadline - time.monotonic()


class RequestContext:
    """One request's deadline (``time.monotonic()``), the task handling it, and the lazy disconnect watch.

    The server layer arms one event-loop timer per request (:meth:`expire` at the deadline).  Watching
    for a disconnect needs the ASGI ``receive`` channel, which the app may also read: once the watch
    runs, the app's receive (:meth:`app_receive`) is served from what the watcher read.  Kept to a
    handful of calls per request: the CI guard counts them.
    """

    __slots__ = ("_buffer", "_disconnected", "_ready", "_receive", "_watcher", "cancelled", "deadline", "done", "task")

    def __init__(self, deadline: float, receive: Receive, task: asyncio.Task[Any] | None) -> None:
        self.deadline = deadline
        self.task = task
        self.cancelled: str | None = None  # "deadline" or "client_disconnect" once this cancelled the task
        self.done = False  # the last body part was sent: nothing left to cancel for the caller
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None

    def expire(self) -> None:
        """The deadline passed (event-loop timer)."""
        self._cancel("deadline")

    def _cancel(self, reason: str) -> None:
        task = self.task
        if not self.done and self.cancelled is None and task is not None and not task.done():
            self.cancelled = reason
            task.cancel(reason)

    async def app_receive(self) -> Message:
        if self._watcher is None:
            return await self._receive()
        while not self._buffer and not self._disconnected:
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft() if self._buffer else {"type": "http.disconnect"}

    def watch(self) -> None:
        """Cancel the request's task if its caller disconnects (started by the first downstream call)."""
        if self._watcher is not None or self.cancelled is not None or self.task is None:
            return
        self._buffer: collections.deque[Message] = collections.deque()
        self._ready = asyncio.Event()
        self._disconnected = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                self._ready.set()
                self._cancel("client_disconnect")
                return
            self._buffer.append(message)
            self._ready.set()

    def close(self) -> None:
        """The request is over: stop watching."""
        self.done = True
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
