"""WebSocket upgrades through the gateway's embedded proxy (proxy.enabled): a real gateway in process,
a real WebSocket echo backend (`tests.proxy_backend` subprocess) and a real client (aiohttp's ws_connect).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.test_gateway_proxy import _setup
from tests.proxy_backend import BackendProcess
from tests.security.conftest import Api, run_gateway, user_with

pytestmark = pytest.mark.usefixtures("restore_logging")

ROUTES: list[dict[str, Any]] = [
    {"id": "ws", "prefix": "/ws", "pool": "web"},
    {"id": "private", "prefix": "/private/", "pool": "web", "strip_prefix": True, "require_auth": True},
    {"id": "idle", "prefix": "/idle/", "pool": "web", "strip_prefix": True, "timeouts": {"read": 0.5}},
    {"id": "status", "prefix": "/status/", "pool": "web"},
]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _until(what: str, check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.02)


def _raw_upgrade(port: int, path: str) -> bytes:
    """An upgrade request the backend answers without a 101: the reply as bytes (the head, then its body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        data = b""
        while b'"name"' not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_websocket_upgrades_pass_through_the_gateway(tmp_path: Path) -> None:
    backend = BackendProcess("web1")

    async def body(api: Api) -> None:
        await _setup(api, backend.url, ROUTES)
        proxy = api.service.proxy
        assert proxy is not None
        ws_url = api.base.replace("http://", "ws://")
        async with aiohttp.ClientSession() as session:
            # The routes come through the store's change notification: wait for the first to serve.
            deadline = time.monotonic() + 5
            while True:
                try:
                    async with session.ws_connect(f"{ws_url}/ws") as ws:
                        await ws.send_str("ping")
                        assert (await ws.receive(timeout=10)).data == "web1:ping"
                        break
                except aiohttp.WSServerHandshakeError as e:
                    assert e.status == 404 and time.monotonic() < deadline, e
                    await asyncio.sleep(0.05)
            await _until("the first tunnel's end", lambda: not proxy.tunnels)

            # Echo both ways, text and a binary message larger than one read; closed by the client.
            baseline = _fds()
            async with session.ws_connect(f"{ws_url}/ws", headers={"X-Trace-Me": "1"}) as ws:
                assert len(proxy.tunnels) == 1
                tunnel = next(iter(proxy.tunnels))
                for word in ("hello", "world"):
                    await ws.send_str(word)
                    assert (await ws.receive(timeout=10)).data == f"web1:{word}"
                await ws.send_bytes(b"\x00\x01" * 100_000)
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) == 200_000
            # Closed from the client's side: both of the gateway's sockets go, and nothing else stays open.
            await _until("the tunnel's end", lambda: tunnel.closed and not proxy.tunnels)
            assert tunnel.conn.closed and tunnel.stream is not None and tunnel.stream.closed()
            await _until("the fds' release", lambda: _fds() <= baseline)

            # Closed from the backend's side: the client is told, and the tunnel ends.
            async with session.ws_connect(f"{ws_url}/ws") as ws:
                tunnel = next(iter(proxy.tunnels))
                await ws.send_str("bye")
                msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            await _until("the tunnel's end", lambda: tunnel.closed and not proxy.tunnels)
            assert tunnel.conn.closed
            await _until("the fds' release", lambda: _fds() <= baseline)

            # require_auth: refused before any upgrade without a token; spliced with one.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with session.ws_connect(f"{ws_url}/private/ws"):
                    pass
            assert refused.value.status == 401
            assert not proxy.tunnels
            token = await user_with(api, "alice", ["kv:read"])
            async with session.ws_connect(f"{ws_url}/private/ws",
                                          headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.send_str("secret")
                assert (await ws.receive(timeout=10)).data == "web1:secret"

            # A tunnel quiet for longer than the route's read timeout is closed.
            async with session.ws_connect(f"{ws_url}/idle/ws") as ws:
                tunnel = next(iter(proxy.tunnels))
                msg = await ws.receive(timeout=15)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            await _until("the idle tunnel's end", lambda: tunnel.closed)

        # An upgrade the backend does not accept: its answer is relayed as a normal response.
        raw = await asyncio.to_thread(_raw_upgrade, api.port, "/status/418")
        assert raw.startswith(b"HTTP/1.1 418"), raw[:200]
        assert b"web1" in raw
        assert not proxy.tunnels

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()
