"""Connection limits (slowloris, slow bodies, huge heads), trusted proxies and graceful shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from helios_core.errors import ConfigError
from helios_core.gateway.limits import TrustedProxies
from tests.unit.test_gateway_harness import Api, run_gateway


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Read until the server closes; fail if it takes longer than `seconds`."""
    return await asyncio.wait_for(reader.read(), seconds)


def test_slowloris_head_is_cut_off(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        t0 = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # trickle headers, never finishing the head
            await asyncio.sleep(0.3)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
        data = await closed_within(reader, 5)
        assert data == b""  # closed without an answer
        assert time.monotonic() - t0 < 3
        writer.close()

    run_gateway(tmp_path, body, **{"gateway.idle_timeout_seconds": 1})


def test_slow_body_is_cut_off(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(f"PUT /api/v1/kv/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Length: 100\r\n\r\nabc".encode())
        await writer.drain()
        t0 = time.monotonic()
        await closed_within(reader, 5)
        assert time.monotonic() - t0 < 3
        writer.close()
        await asyncio.sleep(0.05)
        assert api.service.gateway.inflight == 0  # a cut-off request does not hold up shutdown

    run_gateway(tmp_path, body, **{"gateway.body_timeout_seconds": 1})


def test_oversized_head_is_refused(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        await writer.drain()
        data = await closed_within(reader, 5)
        assert not data.startswith(b"HTTP/1.1 200")
        writer.close()

    run_gateway(tmp_path, body, **{"gateway.max_header_bytes": 2048})


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(f"PUT /api/v1/kv/inflight HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Length: 6\r\n\r\nabc".encode())
        await writer.drain()
        while api.service.gateway.inflight == 0:  # the request is past prepare(), body half sent
            await asyncio.sleep(0.01)
        shutdown = asyncio.create_task(api.service.shutdown(10))
        await asyncio.sleep(0.2)
        assert not shutdown.done()  # waiting for our request
        with pytest.raises(OSError):  # no longer accepting
            await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"def")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 201")
        await asyncio.wait_for(shutdown, 5)
        assert await api.store.get("kv:inflight") == b"abcdef"
        writer.close()

    run_gateway(tmp_path, body)


def request_from(peer: str, xff: str | None) -> HTTPServerRequest:
    headers = HTTPHeaders({"Host": "gateway"})
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    req = HTTPServerRequest(start_line=RequestStartLine("GET", "/", "HTTP/1.1"), headers=headers)
    req.remote_ip = peer
    return req


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    none = TrustedProxies([])
    assert none.client(request_from("1.2.3.4", "6.6.6.6")) == "1.2.3.4"
    tp = TrustedProxies(["10.0.0.0/8", "::1"])
    assert tp.client(request_from("1.2.3.4", "6.6.6.6")) == "1.2.3.4"  # not a proxy of ours: ignored
    assert tp.client(request_from("10.1.1.1", "6.6.6.6")) == "6.6.6.6"
    # The client may prepend lies; we take the nearest address a trusted proxy did not add.
    assert tp.client(request_from("10.1.1.1", "1.1.1.1, 7.7.7.7, 10.2.2.2")) == "7.7.7.7"
    assert tp.client(request_from("10.1.1.1", "10.3.3.3, 10.2.2.2")) == "10.3.3.3"
    assert tp.client(request_from("10.1.1.1", None)) == "10.1.1.1"
    assert tp.client(request_from("10.1.1.1", "not-an-ip")) == "10.1.1.1"
    with pytest.raises(ConfigError, match="trusted_proxies"):
        TrustedProxies(["nope"])


def test_nagle_stays_off_on_a_keep_alive_connection(tmp_path: Path) -> None:
    """Tornado turns TCP_NODELAY on at each response's end and off after it (two setsockopt calls a
    request); the gateway sets it once per connection, and every answer still arrives whole."""
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(HTTPHeaders.parse(head.split(b"\r\n", 1)[1].decode())["Content-Length"])
            await reader.readexactly(length)
            server = api.service.server
            assert server is not None
            (conn,) = server._connections  # type: ignore[attr-defined]
            sock = conn.stream.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()

    run_gateway(tmp_path, body)
