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

__all__ = ["HEADER", "RequestContext", "current_request", "parse_deadline", "remaining_time"]

HEADER = "x-otel-dist-deadline-ms"
HEADER_BYTES = HEADER.encode()
_MAX_DIGITS = 9  # ~11.5 days in ms: anything longer is capped by the server's own timeout anyway

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

_current: ContextVar[RequestContext | None] = ContextVar("otel_dist_request", default=None)


def parse_deadline(raw: bytes) -> float | None:
    """Seconds from a header value: ASCII digits only (milliseconds), else None (ignored)."""
    if not raw or len(raw) > _MAX_DIGITS or not raw.isdigit():  # bytes.isdigit: ASCII only
        return None
    return int(raw) / 1000.0


def current_request() -> RequestContext | None:
    return _current.get()


def remaining_time() -> float | None:
    """Seconds left before the deadline of the request being handled (may be <= 0); None outside a request."""
    ctx = _current.get()
    return None if ctx is None else ctx.deadline - time.monotonic()


class RequestContext:
    """One request's deadline (``time.monotonic()``), and the lazy watch for its caller disconnecting.

    Watching needs the ASGI ``receive`` channel, which the app may also read: once the watch runs,
    the app's receive (:meth:`app_receive`) is served from what the watcher read.
    """

    __slots__ = ("_buffer", "_disconnected", "_ready", "_receive", "_task", "_watcher", "cancelled", "deadline")

    def __init__(self, deadline: float, receive: Receive) -> None:
        self.deadline = deadline
        self.cancelled: str | None = None  # "client_disconnect" once the watcher cancelled the request
        self._receive = receive
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._buffer: collections.deque[Message] = collections.deque()
        self._ready: asyncio.Event | None = None
        self._disconnected = False

    def enter(self) -> Any:
        return _current.set(self)

    @staticmethod
    def leave(token: Any) -> None:
        _current.reset(token)

    async def app_receive(self) -> Message:
        if self._watcher is None:
            return await self._receive()
        assert self._ready is not None
        while not self._buffer and not self._disconnected:
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft() if self._buffer else {"type": "http.disconnect"}

    def watch(self) -> None:
        """Cancel the request's task if its caller disconnects (started by the first downstream call)."""
        if self._watcher is not None or self.cancelled is not None:
            return
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        if task is None:
            return
        self._task = task
        self._ready = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        assert self._ready is not None
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                self._ready.set()
                if self._task is not None and not self._task.done():
                    self.cancelled = "client_disconnect"
                    self._task.cancel("client disconnected")
                return
            self._buffer.append(message)
            self._ready.set()

    def responded(self) -> None:
        """The last body part is being sent: a disconnect seen from now on is the normal end of the exchange."""
        self._task = None

    def close(self) -> None:
        """The request is over: stop watching."""
        self._task = None
        watcher = self._watcher
        if watcher is not None and not watcher.done():
            watcher.cancel()
