"""A lean Redis-protocol (RESP2) client connection and pool, for RemoteStore's round trips.

Why not redis-py's asyncio connections on the hot path: each round trip there
takes the pool's lock and condition, checks the connection (`connect()` through
a retry wrapper, `can_read()`), records pool metrics, and parses every reply
element with an `await` of its own (the pure-Python parser).  Measured on a
gateway GET over redis-server that was most of the gateway's extra CPU per
request over the embedded store.  Here a round trip is one `transport.write`
of every command and one future, resolved when the protocol has parsed as many
replies as commands were sent; the parser runs on whole buffers, synchronously.

What stays redis-py's: TLS and Sentinel connections (RemoteStore uses redis-py's
pool for those kinds), the exception classes (an error reply becomes the same
ResponseError subclass redis-py would make: NoScriptError, ReadOnlyError ...),
and the change feed's pub/sub connection.  Replies are those of redis-py with
`decode_responses=False`, RESP2: bytes, int, None, lists, errors in place.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis._parsers.base import BaseParser
from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RespConnection", "RespPool", "RespMux", "pack"]

_CRLF = b"\r\n"


def pack(commands: list[list[bytes]]) -> bytes:
    """Commands as RESP arrays of bulk strings, in one buffer."""
    out: list[bytes] = []
    for argv in commands:
        out.append(b"*%d\r\n" % len(argv))
        for a in argv:
            out.append(b"$%d\r\n" % len(a))
            out.append(a)
            out.append(_CRLF)
    return b"".join(out)


class _Incomplete(Exception):
    """The buffer ends inside a reply; `need`: bytes the buffer must hold before trying again."""

    def __init__(self, need: int) -> None:
        self.need = need


def _error(text: bytes) -> ResponseError:
    return BaseParser.parse_error(text.decode("utf-8", errors="replace"))  # type: ignore[no-any-return]


def _parse(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at `pos`: (reply, position after it); _Incomplete if it is not all there."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete(len(buf) + 1)
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if stop + 2 > len(buf):
            raise _Incomplete(stop + 2)
        return bytes(buf[end + 2:stop]), stop + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1:end]), end + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1:end])
        if n < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # + simple string
        return bytes(buf[pos + 1:end]), end + 2
    if kind == 45:  # - error
        return _error(bytes(buf[pos + 1:end])), end + 2
    raise RedisConnectionError(f"protocol error: unexpected reply type byte {bytes([kind])!r}")


class RespConnection(asyncio.Protocol):
    """One connection; `roundtrip(commands)` writes them at once and returns their replies.

    Round trips may overlap (the multiplexer's do): each is answered in the order it was sent.
    With `coalesce`, a round trip's commands wait for the end of the loop pass and go out in one
    write with every other round trip queued in that pass.  Error replies are ResponseError
    instances in their places; one that means the connection is unusable (redis-py maps e.g.
    LOADING and "max number of clients" to ConnectionError) is raised.  A lost connection fails
    every round trip in flight with a redis-py ConnectionError.
    """

    def __init__(self) -> None:
        self.timeout: float | None = None  # a reply's bound, unless roundtrip() is given one
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._buf = bytearray()
        self._pos = 0
        self._need = 0
        self._replies: list[Any] = []  # the replies of the oldest round trip in flight, so far
        self._pending: deque[tuple[int, asyncio.Future[list[Any]]]] = deque()  # (replies owed, waiter)
        self._out: list[bytes] = []  # coalesced writes not flushed yet
        self._flush_scheduled = False

    @property
    def usable(self) -> bool:
        """Connected, and no reply owed (to a round trip that was given up on, say)."""
        return self.lost is None and self.transport is not None and not self._pending

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = RedisConnectionError(f"connection lost: {exc}" if exc else "connection closed by the server")
        self._fail(self.lost)

    def data_received(self, data: bytes) -> None:
        pending = self._pending
        if not pending:  # nothing asked for: this connection is out of step
            self.close()
            return
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return
        pos, replies = self._pos, self._replies
        try:
            while pending:
                count, waiter = pending[0]
                while len(replies) < count:
                    reply, pos = _parse(buf, pos)
                    replies.append(reply)
                pending.popleft()
                self._replies = []
                if not waiter.done():  # (a caller that gave up: its replies are read and dropped)
                    waiter.set_result(replies)
                replies = self._replies
        except _Incomplete as e:
            self._need = e.need
            self._pos = pos
            return
        except (ValueError, IndexError, RedisConnectionError) as e:
            self._fail(RedisConnectionError(f"protocol error: {e}"))
            self.close()
            return
        # Every round trip in flight is answered: the buffer holds nothing more.
        del buf[:pos]
        self._pos = self._need = 0

    def _fail(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, deque()
        self._replies = []
        for _, waiter in pending:
            if not waiter.done():
                waiter.set_exception(exc)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.lost is not None or self.transport is None:
            return
        data = b"".join(self._out)
        self._out.clear()
        try:
            self.transport.write(data)
        except RuntimeError as e:  # uvloop: a transport the peer reset ("closed=True")
            self.lost = RedisConnectionError(f"connection lost: {e}")
            self.close()

    # -- use ---------------------------------------------------------------------------

    async def roundtrip(self, commands: list[list[bytes]], timeout: float | None = None, *,
                        coalesce: bool = False) -> list[Any]:
        timeout = timeout or self.timeout
        transport = self.transport
        if self.lost is not None or transport is None or transport.is_closing():
            raise RedisConnectionError(str(self.lost or "not connected"))
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((len(commands), waiter))
        if coalesce:
            self._out.append(pack(commands))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            try:
                transport.write(pack(commands))
            except RuntimeError as e:  # uvloop: a transport the peer reset ("closed=True")
                self.close()
                raise RedisConnectionError(f"connection lost: {e}") from e
        replies: list[Any]
        try:
            if timeout is None:
                replies = await waiter
            else:
                async with asyncio.timeout(timeout):
                    replies = await waiter
        except TimeoutError:
            self.close()  # the server is not answering: every round trip on it is given up
            raise RedisTimeoutError(f"no reply within {timeout} s") from None
        for reply in replies:
            if isinstance(reply, RedisConnectionError):
                self.close()
                raise reply
        return replies

    def close(self) -> None:
        if self.lost is None:
            self.lost = RedisConnectionError("connection closed")
        self._out.clear()
        self._fail(self.lost)
        if self.transport is not None:
            self.transport.close()

    @classmethod
    async def open(cls, *, host: str = "", port: int = 0, path: str = "", username: str | None = None,
                   password: str | None = None, db: int = 0, connect_timeout: float | None = None,
                   timeout: float | None = None) -> RespConnection:
        """Connect (TCP to host:port, or the unix socket at path), AUTH and SELECT as redis-py does."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                if path:
                    _, conn = await loop.create_unix_connection(cls, path)
                else:
                    _, conn = await loop.create_connection(cls, host, port)
        except TimeoutError:
            raise RedisTimeoutError(f"timed out connecting to {path or f'{host}:{port}'}") from None
        except OSError as e:
            raise RedisConnectionError(f"Error {e.errno} connecting to {path or f'{host}:{port}'}. "
                                       f"{e.strerror or e}.") from e
        try:
            setup: list[list[bytes]] = []
            if password is not None or username is not None:
                auth = [b"AUTH", *([username.encode()] if username else []), (password or "").encode()]
                setup.append(auth)
            if db:
                setup.append([b"SELECT", b"%d" % db])
            if setup:
                replies = await conn.roundtrip(setup, connect_timeout or timeout)
                if setup[0][0] == b"AUTH" and isinstance(replies[0], AuthenticationWrongNumberOfArgsError):
                    # A server before 6.0 takes AUTH with the password alone (as redis-py retries).
                    replies = await conn.roundtrip([[b"AUTH", (password or "").encode()], *setup[1:]],
                                                   connect_timeout or timeout)
                for reply in replies:
                    if isinstance(reply, ResponseError):
                        if isinstance(reply, AuthenticationError) or str(reply).startswith(("NOAUTH", "WRONGPASS")):
                            raise AuthenticationError(str(reply))
                        raise reply
        except BaseException:
            conn.close()
            raise
        conn.timeout = timeout
        return conn


class RespPool:
    """Up to `max_connections` connections, opened on demand, reused last-in first-out.

    A caller beyond the limit waits (up to `timeout` seconds) for a connection to come back,
    as redis-py's BlockingConnectionPool does; a connection released unclean (a reply owed,
    WATCH or MULTI open) or lost is closed and its slot given to the next caller.
    """

    def __init__(self, opener: Callable[[], Awaitable[RespConnection]], max_connections: int,
                 timeout: float) -> None:
        self._open = opener
        self.max_connections = max_connections
        self.timeout = timeout
        self._idle: list[RespConnection] = []
        self._all: set[RespConnection] = set()
        self._slots = 0  # connections in _all plus slots handed to waiters or being opened
        self._waiters: deque[asyncio.Future[RespConnection | None]] = deque()

    async def get(self) -> RespConnection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            self._drop(conn)
        if self._slots >= self.max_connections:
            fut: asyncio.Future[RespConnection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout(self.timeout):
                    got = await fut
            except BaseException as e:
                if fut.done() and not fut.cancelled():
                    got = fut.result()  # given to us as we gave up: pass it on
                    if got is None:
                        self._slots -= 1
                    self._hand_on(got)
                if isinstance(e, TimeoutError):
                    raise RedisConnectionError("No connection available.") from None
                raise
            if got is not None:
                return got
            # A slot was handed to us (counted already): open a connection in it.
        else:
            self._slots += 1
        try:
            conn = await self._open()
        except BaseException:
            self._slots -= 1
            self._hand_on(None)
            raise
        self._all.add(conn)
        return conn

    def release(self, conn: RespConnection, *, clean: bool) -> None:
        if clean and conn.usable and conn in self._all:
            self._hand_on(conn)
            return
        conn.close()
        if conn in self._all:
            self._drop(conn)
            self._hand_on(None)

    def _drop(self, conn: RespConnection) -> None:
        self._all.discard(conn)
        self._slots -= 1

    def _hand_on(self, conn: RespConnection | None) -> None:
        """Give `conn` (or, None, a free slot) to the first caller still waiting, else keep it."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                if conn is None:
                    self._slots += 1  # the waiter opens a connection in it
                fut.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    def disconnect(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        self._slots = 0


class RespMux:
    """One connection shared by every caller's independent round trips (reads, scripts), pipelined.

    The round trips queued during one pass of the event loop go out in one write, and their
    replies come back in one read: on a busy gateway that is one send and one receive for many
    requests instead of one of each per request, and system calls, not Python, were the larger
    part of a store round trip's cost (loopback, a small VM).  Only commands that never block
    the connection belong here: no WATCH/MULTI (they hold state for one caller), no WAIT or
    blocking pops (they would hold up everyone behind them).  A connection that is lost or
    times out fails every round trip in flight; the next one opens a new connection.
    """

    def __init__(self, opener: Callable[[], Awaitable[RespConnection]]) -> None:
        self._open = opener
        self._conn: RespConnection | None = None
        self._opening: asyncio.Task[RespConnection] | None = None

    async def roundtrip(self, commands: list[list[bytes]]) -> list[Any]:
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        return await conn.roundtrip(commands, coalesce=True)

    async def _connect(self) -> RespConnection:
        """A connection, opened once for every caller waiting for it."""
        task = self._opening
        if task is None:
            task = self._opening = asyncio.ensure_future(self._open())
            task.add_done_callback(self._opened)
        return await asyncio.shield(task)

    def _opened(self, task: asyncio.Task[RespConnection]) -> None:
        self._opening = None
        if not task.cancelled() and task.exception() is None:
            old, self._conn = self._conn, task.result()
            if old is not None:
                old.close()

    def disconnect(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
