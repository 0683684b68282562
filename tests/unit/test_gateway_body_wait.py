"""The body timeout as `limits._Connection` keeps it (one timer per body instead of Tornado's
`gen.with_timeout`): a body not in by `gateway.body_timeout_seconds` after its head closes the
connection, unanswered, then and not later; a body that came in time leaves nothing behind that
could cut the connection afterwards."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.unit.test_gateway_harness import Api, run_gateway
from tests.unit.test_gateway_head_wait import _answer


def _put(token: str, body: bytes, declared: int | None = None) -> bytes:
    n = len(body) if declared is None else declared
    return (f"PUT /api/v1/kv/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {n}\r\n\r\n").encode() + body


def test_a_body_in_time_leaves_the_connection_open(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        # A body sent in two parts 0.5 s apart (within the 1 s), then the connection kept idle past
        # the body's deadline: it stays open (the idle timeout is 5 s) and serves the next request.
        writer.write(_put(token, b"abc", declared=6))
        await asyncio.sleep(0.5)
        writer.write(b"def")
        assert (await _answer(reader)).startswith(b"HTTP/1.1 20")
        await asyncio.sleep(1.5)
        writer.write(_put(token, b"xyz"))
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        r = await api.call("GET", "/api/v1/kv/b", token=token)
        assert r.code == 200 and r.body == b"xyz"
        writer.close()

    run_gateway(tmp_path, body, **{"gateway.body_timeout_seconds": 1, "gateway.idle_timeout_seconds": 5})


def test_a_slow_body_is_cut_at_its_deadline_and_the_handler_never_runs(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(_put(token, b"ab", declared=10))
        await writer.drain()
        t0 = time.monotonic()
        for _ in range(3):  # bytes keep coming, too slowly: the deadline is for the whole body
            await asyncio.sleep(0.4)
            writer.write(b"c")
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == b""
        assert 0.9 <= time.monotonic() - t0 < 2.0
        writer.close()
        await asyncio.sleep(0.05)
        assert api.service.gateway.inflight == 0
        assert (await api.call("GET", "/api/v1/kv/b", token=token)).code == 404

    run_gateway(tmp_path, body, **{"gateway.body_timeout_seconds": 1, "gateway.idle_timeout_seconds": 5})


def test_a_body_refused_early_still_closes_in_time(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        # No token: 401 while the body is still coming; the rest never comes.
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"PUT /api/v1/kv/b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        assert (await _answer(reader)).startswith(b"HTTP/1.1 401")
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - t0 < 2.0
        writer.close()

    run_gateway(tmp_path, body, **{"gateway.body_timeout_seconds": 1, "gateway.idle_timeout_seconds": 5})
