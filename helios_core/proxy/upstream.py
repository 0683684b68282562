"""The proxy's upstream side: one HTTP/1.1 keep-alive connection pool per backend.

An `UpstreamConnection` is an `asyncio.Protocol` that parses responses with
`httptools.HttpResponseParser` and hands them, piece by piece, to whoever is
using it (a `ResponseSink`: the server's exchange).  It carries one exchange
at a time; a fresh parser per exchange keeps one bad response from poisoning
the next (and lets a HEAD response end at its headers, which llhttp cannot
know by itself).  A connection that carried a HEAD is closed after its answer:
a backend may write the body anyway, and those bytes must not be read as the
next request's answer.

An `UpstreamPool` caps the connections open to one backend
(`pool.max_connections`): past the cap a caller waits for a connection to be
released, within its connect timeout.  Idle connections are reused most recent
first (so the surplus ages out) and closed after `idle_timeout`.  Neither
Tornado's HTTP client (a connection per request) nor aiohttp is used here:
DESIGN.md section 5 measured both several times slower than this kind of
protocol on the same loop.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from helios_core.observability.logging import get_logger

__all__ = ["ResponseSink", "UpstreamConnection", "UpstreamPool", "Upstreams", "UpstreamUnavailable"]


log = get_logger("proxy")


# The common response, whole in one read: an HTTP/1.1 head of plain fields and exactly its
# Content-Length of body.  It is taken apart with two regular expressions (one C call each)
# instead of a dozen parser callbacks; anything else (chunked, split across reads, a HEAD
# answer, 1xx/204/304, Connection other than keep-alive, a byte llhttp would refuse) goes to
# llhttp as before.
_SIMPLE_HEAD = re.compile(
    rb"HTTP/1\.1 ([2-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t ]*[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n")
_FIELD = re.compile(rb"([^:\r\n]+):[\t ]*([^\r\n]*)\r\n")  # trailing blanks kept, as llhttp keeps them
_LENGTH = re.compile(rb"\ncontent-length:[\t ]*([0-9]+)[\t ]*\r")


class UpstreamUnavailable(ConnectionError):
    """No connection to the backend could be had (refused, unreachable, timed out, pool full)."""


class ResponseSink(Protocol):
    """What an `UpstreamConnection` reports to the exchange using it."""

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      framing: str) -> None:
        """Status line and headers; framing is "length", "chunked", "close" or "none"."""

    def response_body(self, data: bytes) -> None: ...

    def response_end(self) -> None: ...

    def upstream_failed(self, exc: BaseException) -> None:
        """The connection broke or sent something unparsable before the response ended."""

    def upstream_upgraded(self, rest: bytes) -> None:
        """A 101 came (after `response_head`); `rest` are the tunnel bytes that followed it."""

    def upstream_pause_writing(self) -> None: ...

    def upstream_resume_writing(self) -> None: ...

    def flush(self) -> None:
        """The end of one read from the backend: send what it produced to the client."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend; `begin(sink, ...)` starts an exchange on it."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.closed = False
        self.idle_since = 0.0
        self.uses = 0
        self.received = 0  # bytes received in the current exchange
        self.request_done = False  # set by the exchange once the whole request is written
        self.reading_paused = False
        self.tunnel: Callable[[bytes], None] | None = None  # after a 101: where bytes go
        self.on_lost: Callable[[], None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._spare: httptools.HttpResponseParser | None = None  # a parser that ended a message cleanly
        self._head = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._status = 0
        self._framing = ""
        self._got_head = False
        self._keep_alive = False
        self._te = self._cl = False
        self._fed = False  # the parser has seen bytes of the current response

    # --- used by the exchange ---

    def begin(self, sink: ResponseSink, *, head: bool = False) -> None:
        self.sink = sink
        self.uses += 1
        self.received = 0
        self.request_done = False
        # llhttp is ready for the next response after a complete one: reuse that parser (creating
        # one costs a lookup of every callback); a new one after a HEAD answer or anything odd.
        self._parser = self._spare or httptools.HttpResponseParser(self)
        self._spare = None
        self._head = head
        self._headers = []
        self._reason = b""
        self._status = 0
        self._framing = ""
        self._got_head = False
        self._te = self._cl = False
        self._fed = False

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection (a broken or abandoned exchange): never reused."""
        self.sink = None
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._lost()

    def close(self) -> None:
        self.sink = None
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._lost()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if self.sink is None or self._parser is None:
            # Bytes on an idle connection (or after a HEAD answer): nothing can be matched
            # to them, so the connection cannot be trusted with another request.
            self.close()
            return
        sink = self.sink
        self.received += len(data)
        if not self._fed and not self._head and self._whole_response(data, sink):
            sink.flush()
            return
        self._fed = True
        try:
            self._parser.feed_data(data)
            sink.flush()
        except httptools.HttpParserUpgrade as up:
            sink = self.sink
            if sink is not None and self._status == 101:
                sink.upstream_upgraded(data[up.args[0]:])
            else:
                self._fail(ValueError("upgrade without 101"))
        except httptools.HttpParserCallbackError as e:
            # An exception in our own callback, not a bad response: log it where it can be seen.
            log.opt(exception=e.__context__ or e).error("response handling failed")
            self._fail(e)
        except httptools.HttpParserError as e:
            self._fail(e)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes a close-delimited body

    def connection_lost(self, exc: Exception | None) -> None:
        sink = self.sink
        self._lost()
        if self.on_lost is not None:
            self.on_lost()
        if sink is None:
            return
        if self._got_head and self._framing == "close":
            self._complete()
        else:
            self.sink = None
            sink.upstream_failed(exc or ConnectionResetError("backend closed the connection"))

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_resume_writing()

    # --- httptools callbacks ---

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        n = len(name)
        if n == 17 or n == 14:  # the framing headers, found without lower-casing every name
            low = name.lower()
            if low == b"transfer-encoding":
                self._te = True
            elif low == b"content-length":
                self._cl = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # noqa: S101 - callbacks run inside feed_data
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the proxy answered the
            # client's Expect itself, so it is dropped; the real response follows.
            self._headers = []
            self._reason = b""
            self._te = self._cl = False
            return
        self._status = status
        self._got_head = True
        if self._head or status in (204, 304) or status == 101:
            framing = "none"
        elif self._te:
            framing = "chunked"
        elif self._cl:
            framing = "length"
        else:
            framing = "close"
        self._framing = framing
        self._keep_alive = parser.should_keep_alive()
        if self.sink is not None:
            self.sink.response_head(status, self._reason, self._headers, framing)
        if self._head and self.sink is not None:
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.response_body(body)

    def on_message_complete(self) -> None:
        if not self._got_head or self._status == 101:
            return  # the end of an interim response, or a 101 (the tunnel takes over)
        if self.sink is not None:
            self._complete(clean=True)

    # --- internals ---

    def _whole_response(self, data: bytes, sink: ResponseSink) -> bool:
        """Relay `data` if it is one whole simple response (see _SIMPLE_HEAD); False to let llhttp parse it."""
        m = _SIMPLE_HEAD.match(data)
        if m is None:
            return False
        status = int(m.group(1))
        if status == 204 or status == 304:
            return False
        fields = m.group(3)
        low = b"\n" + fields.lower()
        if b"\ntransfer-encoding:" in low or (b"\nconnection:" in low
                                              and b"\nconnection: keep-alive\r" not in low):
            return False
        lengths = _LENGTH.findall(low)
        if len(lengths) != 1:
            return False
        size = int(lengths[0])
        if len(data) - m.end() != size:
            return False
        self._status = status
        self._reason = m.group(2) or b""
        self._headers = headers = _FIELD.findall(fields)
        self._got_head = True
        self._framing = "length"
        self._keep_alive = True
        sink.response_head(status, self._reason, headers, "length")
        if size and self.sink is sink:  # not when the exchange gave up on this answer (a retry)
            sink.response_body(data[m.end():])
        if self.sink is sink:
            self._complete(clean=True)
        return True

    def _complete(self, clean: bool = False) -> None:
        sink = self.sink
        self.sink = None
        self._spare = self._parser if clean else None
        self._parser = None
        # Not after a HEAD answer: backends that write a body to HEAD anyway are common
        # (aiohttp's StreamResponse does), and those bytes, arriving late, would be read as
        # the answer to the next request on the connection (a 502 for a good request).
        reusable = (self._framing != "close" and self._keep_alive and self.request_done
                    and not self.closed and not self._head)
        if reusable:
            self.pool.release(self)
        else:
            self.close()
        if sink is not None:
            sink.response_end()

    def _fail(self, exc: BaseException) -> None:
        sink = self.sink
        self.abort()
        if sink is not None:
            sink.upstream_failed(exc)

    def _lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)


class UpstreamPool:
    """The keep-alive connections to one backend, at most `max_connections` open at once."""

    def __init__(self, host: str, port: int, *, max_connections: int = 100, idle_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.netloc = b"%b:%d" % (host.encode("idna"), port)  # the Host header for a client that sent none
        self.tls = tls  # an https:// backend: TLS with certificate and host name verification
        self.max_connections = max(1, max_connections)
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.idle: deque[UpstreamConnection] = deque()
        self.open = 0  # connections open or being opened
        self.connects = 0  # connections ever opened (tests read it to see reuse)
        self.closing = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    def take_idle(self, now: float | None = None) -> UpstreamConnection | None:
        """A ready idle connection, or None (no waiting, no connecting); `now` from `clock` if given."""
        if now is None:
            now = self.clock()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    async def acquire(self, timeout: float) -> UpstreamConnection:
        """An idle connection, or a new one; waits for a free slot past the cap. Within `timeout` s."""
        if self.closing:
            raise UpstreamUnavailable(f"{self.host}:{self.port}: pool closed")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    conn = self.take_idle()
                    if conn is not None:
                        return conn
                    if self.open < self.max_connections:
                        return await self._connect()
                    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._waiters.append(fut)
                    try:
                        await fut
                    except BaseException:
                        if fut.done() and not fut.cancelled():
                            self._wake()  # woken and timed out at once: the free slot goes to the next
                        else:
                            fut.cancel()
                        raise
        except TimeoutError as e:
            raise UpstreamUnavailable(f"{self.host}:{self.port}: connect timed out after {timeout:g}s") from e

    async def connect_new(self, timeout: float) -> UpstreamConnection:
        """A fresh connection, not from the idle list (a WebSocket upgrade takes it for good)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._connect()
        except TimeoutError as e:
            raise UpstreamUnavailable(f"{self.host}:{self.port}: connect timed out after {timeout:g}s") from e

    async def _connect(self) -> UpstreamConnection:
        self.open += 1
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port,
                                                   ssl=self.tls, server_hostname=self.host if self.tls else None)
        except BaseException as e:
            self.open -= 1
            self._wake()
            if isinstance(e, OSError):  # ssl.SSLError (a failed handshake) is one too
                raise UpstreamUnavailable(f"{self.host}:{self.port}: {e.strerror or e}") from e
            raise
        self.connects += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """`conn` finished an exchange cleanly: keep it for the next one."""
        if conn.closed:
            return
        if self.closing:
            conn.close()
            return
        if conn.reading_paused:
            conn.resume_reading()  # an idle connection must notice the backend closing it
        conn.idle_since = self.clock()
        self.idle.append(conn)
        if self._waiters:
            self._wake()
        if self._sweeper is None:
            self._schedule_sweep()

    def discard(self, conn: UpstreamConnection) -> None:
        """`conn` closed: its slot is free."""
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._wake()

    def close(self) -> None:
        """Close idle connections now and busy ones when their exchange ends (a backend left the config)."""
        self.closing = True
        while self.idle:
            self.idle.pop().close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _schedule_sweep(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweeper = loop.call_later(max(0.05, min(self.idle_timeout, 30.0) / 2), self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.clock()
        for conn in [c for c in self.idle if now - c.idle_since > self.idle_timeout]:
            conn.close()
        if self.idle:
            self._schedule_sweep()


class Upstreams:
    """Every backend's pool in this process, keyed by backend id and url (a changed url is a new pool)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.pools: dict[tuple[str, str], UpstreamPool] = {}
        self._tls: ssl.SSLContext | None = None

    def get(self, backend_id: str, url: str, host: str, port: int, *, max_connections: int,
            idle_timeout: float, tls: bool = False) -> UpstreamPool:
        key = (backend_id, url)
        pool = self.pools.get(key)
        if pool is None:
            if tls and self._tls is None:
                self._tls = ssl.create_default_context()  # the system CA bundle, names verified
            pool = self.pools[key] = UpstreamPool(host, port, max_connections=max_connections,
                                                  idle_timeout=idle_timeout, clock=self.clock,
                                                  tls=self._tls if tls else None)
        else:
            pool.max_connections = max(1, max_connections)
            pool.idle_timeout = idle_timeout
        return pool

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Close the pools of backends no longer configured."""
        for key in [k for k in self.pools if k not in keys]:
            self.pools.pop(key).close()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
