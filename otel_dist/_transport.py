"""The connection layer under each ``ServiceClient`` to a plain-HTTP service of this system.

Still httpx's transport and httpcore's pool and HTTP/1.1 connections (h11); two of httpcore's parts are
swapped for leaner ones because, measured on the three-service read, they cost more than the request:

- the **network backend** (httpcore's ``network_backend=`` extension point): asyncio streams instead of
  anyio's.  anyio wraps each read and write in a cancel scope, and answers httpcore's "is this idle
  connection readable?" (asked for every pooled connection on every request) by building a dict of
  socket attributes, with a ``getpeername()`` system call, each time.  Here it is two attribute reads:
  asyncio's reader already holds what the server sent (early data or the EOF of a closed keep-alive).
- the **pool's bookkeeping** (``_assign_requests_to_connections``, run on every request and every
  response close): httpcore's counts the connections once per idle connection (O(n²)) and lists every
  available and idle connection for each queued request; this one does the same cleanup and assignment
  in one pass, first available connection wins, as httpcore's does.

Plain ``http://`` only (the services of one system on a private network); ``https://`` targets and targets
behind an environment proxy keep httpx's default transport (see :func:`service_transport`).
"""

from __future__ import annotations

import asyncio
import time
import typing
import urllib.request
from collections.abc import Awaitable, Iterable

import httpcore
import httpx

__all__ = ["LeanBackend", "LeanPool", "service_transport"]

_COALESCE_LIMIT = 64 * 1024  # bytes of a request held back to go out with the rest of it


class _Stream(httpcore.AsyncNetworkStream):
    """One TCP connection as asyncio's reader and writer."""

    __slots__ = ("_pending", "_pending_size", "_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        # A request's head and body go out in one send() when it is read for: one system call and one wake-up
        # of the server instead of two (httpcore writes them separately).
        self._pending: list[bytes] = []
        self._pending_size = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            try:
                await self._flush(timeout)
            except httpcore.WriteError:
                pass  # as httpcore does: the server may have answered (an early error) before closing; read it
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("timed out reading the response") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._pending.append(buffer)
        self._pending_size += len(buffer)
        if self._pending_size >= _COALESCE_LIMIT:  # a large body streams out as it comes
            await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        writer = self._writer
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size():  # only a full socket buffer makes drain() wait
                async with asyncio.timeout(timeout):
                    await writer.drain()
            elif writer.transport.is_closing():
                await writer.drain()  # raises the connection's error, as anyio's send would
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("timed out sending the request") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self, ssl_context: typing.Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("otel-dist's lean transport is for http:// only; https uses httpx's own")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # An idle HTTP/1.1 connection with bytes or an EOF waiting is one the server closed (or broke).
            reader = self._reader
            buffered = reader._buffer  # type: ignore[attr-defined]  # asyncio has no public "bytes waiting"
            return bool(buffered) or reader.at_eof() or reader.exception() is not None
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        return None


class LeanBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend on asyncio streams (asyncio sets TCP_NODELAY on TCP sockets itself)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        opening = asyncio.open_connection(host, port, local_addr=local)
        return await _open(opening, f"{host}:{port}", timeout, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await _open(asyncio.open_unix_connection(path), path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _open(
    opening: Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    where: str,
    timeout: float | None,
    options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> httpcore.AsyncNetworkStream:
    """Await `opening` within `timeout`, with asyncio's errors as httpcore's."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await opening
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"timed out connecting to {where}") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    _apply(writer, options)
    return _Stream(reader, writer)


def _apply(writer: asyncio.StreamWriter, options: Iterable[httpcore.SOCKET_OPTION] | None) -> None:
    sock = writer.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)


class _Connection(httpcore.AsyncHTTPConnection):
    """httpcore's connection with asyncio locks: anyio's ``Lock.acquire`` yields to the event loop even when
    the lock is free, an extra loop pass per lock and a window in which the pool hands the same idle
    connection to a second request (``ConnectionNotAvailable``, retried: ~1.5 per call at 16 concurrent)."""

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self._request_lock = asyncio.Lock()  # type: ignore[assignment]

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        connection = self._connection  # made by the first request (httpcore's code: connect, then HTTP/1.1)
        if connection is not None and not isinstance(connection._state_lock, asyncio.Lock):  # type: ignore[attr-defined]
            connection._state_lock = asyncio.Lock()  # type: ignore[attr-defined]  # free: the pool just assigned it
        return await super().handle_async_request(request)


class LeanPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with its per-request bookkeeping in one pass (same rules, see the module doc).

    Idle connections are checked for expiry (keep-alive timeout, closed by the server) before reuse, and
    all of them at most every ``SWEEP_INTERVAL`` seconds rather than on every request and response.
    """

    SWEEP_INTERVAL = 1.0

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self._next_sweep = 0.0  # time.monotonic() of the next full cleanup

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        return _Connection(
            origin=origin,
            keepalive_expiry=self._keepalive_expiry,
            http1=True,
            http2=False,
            retries=self._retries,
            local_address=self._local_address,
            uds=self._uds,
            network_backend=self._network_backend,
            socket_options=self._socket_options,
        )

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        now = time.monotonic()
        if now >= self._next_sweep or len(self._connections) > self._max_keepalive_connections:
            self._sweep(closing, now)
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            connection = self._reusable(origin, closing)
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    self._sweep(closing, now)  # closed connections hold their slot until swept
                if len(self._connections) >= self._max_connections:
                    idle = next((c for c in self._connections if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection frees up
                    self._connections.remove(idle)
                    closing.append(idle)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            pool_request.assign_to_connection(connection)
        return closing

    def _reusable(
        self, origin: httpcore.Origin, closing: list[httpcore.AsyncConnectionInterface]
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first available connection to `origin` that has not expired (expired ones met on the way close)."""
        expired = []
        found = None
        for connection in self._connections:
            if connection.can_handle_request(origin) and connection.is_available():
                if not connection.has_expired():
                    found = connection
                    break
                expired.append(connection)
        for connection in expired:
            self._connections.remove(connection)
            closing.append(connection)
        return found

    def _sweep(self, closing: list[httpcore.AsyncConnectionInterface], now: float) -> None:
        """httpcore's cleanup: drop closed connections, close expired ones and idle ones over the keep-alive limit."""
        self._next_sweep = now + self.SWEEP_INTERVAL
        alive: list[httpcore.AsyncConnectionInterface] = []
        for connection in self._connections:
            if connection.is_closed():
                continue
            if connection.has_expired():
                closing.append(connection)
            else:
                alive.append(connection)
        surplus = len(alive) - self._max_keepalive_connections
        if surplus > 0:
            for connection in [c for c in alive if c.is_idle()][:surplus]:
                alive.remove(connection)
                closing.append(connection)
        self._connections = alive

    async def _close_connections(self, closing: list[httpcore.AsyncConnectionInterface]) -> None:
        if closing:  # httpcore enters an anyio cancel-shield scope even for none
            await super()._close_connections(closing)


class _LeanTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (and so its instrumentation) over :class:`LeanPool` and :class:`LeanBackend`."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, verify=False)  # verify: no CA bundle to load, this pool speaks http only
        self._pool = LeanPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=LeanBackend(),
        )


def service_transport(base_url: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """The lean transport for a plain-HTTP service; None (httpx's default) for https or a proxied target."""
    if httpx.URL(base_url).scheme != "http":
        return None
    proxies = urllib.request.getproxies()
    if "http" in proxies or "all" in proxies:  # httpx would route through it; a given transport would not
        return None
    return _LeanTransport(limits)
