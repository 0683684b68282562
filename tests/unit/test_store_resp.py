"""The lean RESP2 connection and pool under RemoteStore (store/resp.py), without a server.

Replies are fed to the protocol byte by byte and in one piece; they must parse the same as
redis-py reads them (decode_responses=False).  The pool keeps to its limit, hands connections
to waiters in order, frees the slot of a connection released unclean, and times out a waiter
with redis-py's "No connection available.".  (Against real servers: tests/contract, which runs
every RemoteStore through it.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from helios_core.store.resp import RespConnection, RespPool, pack


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = b""
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.sent += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def connected() -> tuple[RespConnection, FakeTransport]:
    conn, transport = RespConnection(), FakeTransport()
    conn.connection_made(transport)
    return conn, transport


REPLIES = (b"+OK\r\n:42\r\n$-1\r\n$5\r\nhe\r\nl\r\n*3\r\n$1\r\na\r\n*-1\r\n*2\r\n:1\r\n$0\r\n\r\n"
           b"-NOSCRIPT No matching script\r\n-READONLY You can't write\r\n-ERR wrong\r\n*0\r\n")
WANT: list[Any] = [b"OK", 42, None, b"he\r\nl", [b"a", None, [1, b""]]]


@pytest.mark.parametrize("chunk", [1, 3, len(REPLIES)])
def test_replies_parse_whole_or_in_pieces(chunk: int) -> None:
    async def main() -> None:
        conn, transport = connected()
        pending = asyncio.ensure_future(conn.roundtrip([[b"X"]] * 9))
        await asyncio.sleep(0)
        assert transport.sent == pack([[b"X"]] * 9) == b"*1\r\n$1\r\nX\r\n" * 9
        for i in range(0, len(REPLIES), chunk):
            conn.data_received(REPLIES[i:i + chunk])
        got = await pending
        assert got[:5] == WANT and got[8] == []
        assert isinstance(got[5], NoScriptError) and isinstance(got[6], ReadOnlyError)
        assert type(got[7]) is ResponseError and str(got[7]) == "wrong"
        assert conn.usable  # the stream is in step: the next round trip goes on
        nxt = asyncio.ensure_future(conn.roundtrip([[b"PING"]]))
        await asyncio.sleep(0)
        conn.data_received(b"+PONG\r\n")
        assert await nxt == [b"PONG"]

    asyncio.run(main())


def test_a_lost_connection_fails_the_round_trip_in_flight_and_is_not_reused() -> None:
    async def main() -> None:
        conn, _ = connected()
        pending = asyncio.ensure_future(conn.roundtrip([[b"GET", b"k"]]))
        await asyncio.sleep(0)
        conn.data_received(b"$3\r\nab")
        conn.connection_lost(ConnectionResetError("reset"))
        with pytest.raises(RedisConnectionError):
            await pending
        assert not conn.usable
        with pytest.raises(RedisConnectionError):
            await conn.roundtrip([[b"PING"]])

    asyncio.run(main())


def test_a_reply_nobody_asked_for_closes_the_connection() -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.data_received(b"-ERR closing\r\n")
        assert transport.closed and not conn.usable

    asyncio.run(main())


def test_a_timed_out_round_trip_closes_its_connection() -> None:
    async def main() -> None:
        conn, transport = connected()
        with pytest.raises(Exception, match="no reply within"):
            await conn.roundtrip([[b"PING"]], timeout=0.01)
        assert transport.closed and not conn.usable

    asyncio.run(main())


def test_the_pool_keeps_its_limit_and_hands_connections_on_in_order() -> None:
    async def main() -> None:
        opened: list[RespConnection] = []

        async def opener() -> RespConnection:
            conn, _ = connected()
            opened.append(conn)
            return conn

        pool = RespPool(opener, 2, timeout=5)
        a, b = await pool.get(), await pool.get()
        waiting = [asyncio.ensure_future(pool.get()) for _ in range(3)]
        await asyncio.sleep(0)
        assert len(opened) == 2 and not any(w.done() for w in waiting)
        pool.release(a, clean=True)  # to the first waiter, as it is
        assert await waiting[0] is a
        pool.release(b, clean=False)  # closed: its slot goes to the next waiter, which opens one
        c = await waiting[1]
        assert c is opened[2] and not b.usable and len(opened) == 3
        pool.release(c, clean=True)
        assert await waiting[2] is c
        pool.release(a, clean=True)
        pool.release(c, clean=True)
        assert await pool.get() is c and await pool.get() is a  # last in, first out
        assert len(opened) == 3

    asyncio.run(main())


def test_a_waiter_times_out_as_redis_py_says_and_a_failed_open_frees_its_slot() -> None:
    async def main() -> None:
        fail = False

        async def opener() -> RespConnection:
            if fail:
                raise RedisConnectionError("refused")
            return connected()[0]

        pool = RespPool(opener, 1, timeout=0.05)
        held = await pool.get()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await pool.get()
        held.close()
        fail = True
        pool.release(held, clean=True)  # lost meanwhile: dropped, not pooled
        with pytest.raises(RedisConnectionError, match="refused"):
            await pool.get()
        fail = False
        assert (await pool.get()).usable  # the failed open gave its slot back

    asyncio.run(main())
