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
import typing
import urllib.request
from collections.abc import Iterable

import httpcore
import httpx

__all__ = ["LeanBackend", "LeanPool", "service_transport"]


class _Stream(httpcore.AsyncNetworkStream):
    """One TCP connection as asyncio's reader and writer."""

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
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
        writer = self._writer
        try:
            writer.write(buffer)
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
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        _apply(writer, socket_options)
        return _Stream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        _apply(writer, socket_options)
        return _Stream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _apply(writer: asyncio.StreamWriter, options: Iterable[httpcore.SOCKET_OPTION] | None) -> None:
    sock = writer.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)


class LeanPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with its per-request bookkeeping in one pass (same rules, see the module doc)."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        alive: list[httpcore.AsyncConnectionInterface] = []
        for connection in self._connections:
            if connection.is_closed():
                continue
            if connection.has_expired():  # keep-alive expired, or the server closed it while idle
                closing.append(connection)
            else:
                alive.append(connection)
        surplus = len(alive) - self._max_keepalive_connections
        if surplus > 0:  # httpcore's rule: idle connections go while the pool holds more than the keep-alive limit
            for connection in [c for c in alive if c.is_idle()][:surplus]:
                alive.remove(connection)
                closing.append(connection)
        self._connections = alive
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            for connection in alive:
                if connection.can_handle_request(origin) and connection.is_available():
                    pool_request.assign_to_connection(connection)
                    break
            else:
                if len(alive) >= self._max_connections:
                    idle = next((c for c in alive if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection frees up
                    alive.remove(idle)
                    closing.append(idle)
                connection = self.create_connection(origin)
                alive.append(connection)
                pool_request.assign_to_connection(connection)
        return closing


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
