"""The lean connection layer under ServiceClient (``_transport``), against real loopback servers.

A small HTTP/1.1 server on asyncio streams (in the test's own event loop) answers each request
with its connection number, so the tests see which connection served what; it can close idle
connections or send bytes nobody asked for, as a real server's keep-alive timeout does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.trace import SpanKind

from otel_dist import ServiceClient, create_app
from otel_dist._transport import service_transport
from otel_dist.testing import serve_app

pytestmark = pytest.mark.timeout(60)  # a hang guard, not a speed check: the machine may be loaded

LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)


class Server:
    """Answers ``GET /<anything>`` with ``conn=<n>``; ``/slow`` waits 5 s first."""

    def __init__(self) -> None:
        self.connections = 0
        self.open: dict[int, asyncio.StreamWriter] = {}
        self.close_after_answer = False
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open[number] = writer
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /slow"):
                    await asyncio.sleep(5)
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                received = await reader.readexactly(length) if length else b""
                body = f"conn={number}".encode() + (
                    b" sha256=" + hashlib.sha256(received).hexdigest().encode() if length else b""
                )
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open.pop(number, None)
            writer.close()


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[Server]:
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    async with listener:
        yield server
        for writer in list(server.open.values()):
            writer.close()


def client_for(url: str, limits: httpx.Limits = LIMITS, **kwargs: object) -> httpx.AsyncClient:
    transport = service_transport(url, limits)
    assert transport is not None
    return httpx.AsyncClient(base_url=url, transport=transport, **kwargs)  # type: ignore[arg-type]


async def until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_sequential_requests_reuse_one_keep_alive_connection():
    async with http_server() as server, client_for(server.url) as client:
        answers = [(await client.get(f"/item/{i}")).text for i in range(5)]
    assert answers == ["conn=1"] * 5
    assert server.connections == 1


async def test_concurrent_requests_wait_for_the_pool_limit_and_all_succeed():
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    async with http_server() as server, client_for(server.url, limits) as client:
        responses = await asyncio.gather(*(client.get(f"/item/{i}") for i in range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    assert {r.text for r in responses} <= {"conn=1", "conn=2", "conn=3"}
    assert server.connections == 3


async def test_idle_connections_beyond_the_keep_alive_limit_are_closed():
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=1)
    async with http_server() as server, client_for(server.url, limits) as client:
        await asyncio.gather(*(client.get(f"/item/{i}") for i in range(4)))
        await until(lambda: len(server.open) == 1, "the server to see all but one connection closed")
        assert server.connections == 4
        assert (await client.get("/again")).status_code == 200
        assert server.connections == 4  # the kept one was reused


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_reused():
    async with http_server() as server, client_for(server.url) as client:
        assert (await client.get("/first")).text == "conn=1"
        server.open[1].close()  # what a server's keep-alive timeout does
        await until(lambda: not server.open, "the server to close the connection")
        await asyncio.sleep(0.05)  # the client's loop reads the EOF
        assert (await client.get("/second")).text == "conn=2"


async def test_bytes_sent_on_an_idle_connection_never_become_the_next_answer():
    async with http_server() as server, client_for(server.url) as client:
        assert (await client.get("/first")).text == "conn=1"
        # A server that gives up on an idle connection may say so (408) before closing it.
        server.open[1].write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        await asyncio.sleep(0.05)
        response = await client.get("/second")
    assert (response.status_code, response.text) == (200, "conn=2")


async def test_read_timeout_and_connection_refused_are_httpx_errors():
    async with http_server() as server, client_for(server.url, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
    async with client_for(refused) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


async def test_request_bodies_small_and_larger_than_the_coalescing_buffer_arrive_whole():
    small, large = b'{"token": "abc"}', bytes(range(256)) * 1024  # 256 KiB: flushed as it is written
    async with http_server() as server, client_for(server.url) as client:
        for body in (small, large, small):
            answer = (await client.post("/echo", content=body)).text
            assert answer == f"conn=1 sha256={hashlib.sha256(body).hexdigest()}"


def test_https_and_proxied_targets_keep_httpx_default_transport(monkeypatch):
    assert service_transport("https://orders.internal:8443", LIMITS) is None
    assert service_transport("http://orders:8000", LIMITS) is not None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert service_transport("http://orders:8000", LIMITS) is None  # httpx would use the proxy: so do we


async def test_service_client_on_the_lean_transport_records_its_client_span(telemetry):
    async with http_server() as server:
        client = ServiceClient(
            "lean-target", server.url, telemetry=telemetry.telemetry, transport=service_transport(server.url, LIMITS)
        )
        async with client:
            assert (await client.get("/item/7")).text == "conn=1"
    spans = telemetry.spans()
    (attempt,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert attempt.name == "GET"
    assert attempt.attributes["url.full"] == f"{server.url}/item/7"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["network.protocol.version"] == "1.1"


def test_create_app_builds_its_service_clients_on_the_lean_transport(telemetry):
    from fastapi.testclient import TestClient

    app = create_app("lean-app", downstreams={"orders": "http://127.0.0.1:9", "pay": "https://pay.example"})
    with TestClient(app):
        clients = app.state.clients
        assert type(clients["orders"]._client._transport).__name__ == "_LeanTransport"
        assert type(clients["pay"]._client._transport) is httpx.AsyncHTTPTransport


async def test_a_real_uvicorn_upstream_over_the_lean_transport():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/echo/{word}")
    async def echo(word: str) -> dict[str, str]:
        return {"word": word}

    with serve_app(app) as url:
        async with client_for(url) as client:
            answers = await asyncio.gather(*(client.get(f"/echo/w{i}") for i in range(20)))
    assert [a.json()["word"] for a in answers] == [f"w{i}" for i in range(20)]
