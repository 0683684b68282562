"""The idle timeout on a keep-alive connection's wait for its next request head (`limits._HeadWait`:
one timer per connection, not one per request): each wait gets the whole timeout, counted from
when it began, and a connection idle that long is closed unanswered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.unit.test_gateway_harness import Api, run_gateway

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


def test_each_wait_gets_the_whole_timeout(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        t0 = time.monotonic()
        # Requests 0.6 s apart for 2.4 s: the timer set by the first wait comes due while a later
        # wait, not yet 1 s old, is pending; the connection must stay open.
        for _ in range(5):
            writer.write(REQUEST)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.6)
        last = time.monotonic()
        assert last - t0 > 2.4
        data = await asyncio.wait_for(reader.read(), 5)  # now idle: closed 1 s after the last answer
        idle = time.monotonic() - last
        assert data == b""
        assert 0.3 <= idle < 2.0, idle  # (1 s after the last answer, less the 0.6 s slept since)
        writer.close()

    run_gateway(tmp_path, body, **{"gateway.idle_timeout_seconds": 1})


def test_a_head_begun_late_is_still_cut_off(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(REQUEST)
        assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the second head, never finished
        for _ in range(4):
            await asyncio.sleep(0.3)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == b""
        assert time.monotonic() - t0 < 2.5
        writer.close()

    run_gateway(tmp_path, body, **{"gateway.idle_timeout_seconds": 1})
