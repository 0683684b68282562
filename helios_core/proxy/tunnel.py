"""A WebSocket (or other upgraded) tunnel of the gateway's embedded proxy: a detached Tornado stream
spliced to a backend connection.

`helios proxy` splices inside its own `server.ClientConnection`.  The gateway
(helios_core/gateway/proxied.py) forwards an upgrade request as any other
exchange, after the route's authentication, permission and rate-limit checks;
when the backend answers 101 the exchange hands over its `UpstreamConnection`
and a `StreamTunnel` is made at once (backend bytes that follow the 101 are
held in it, a bounded amount), then attached to the client's stream once the
handler has detached it from Tornado's HTTP processing.  From then on bytes go
both ways untouched until either side closes or nothing passed either way for
`idle_timeout` seconds (the route's ``timeouts.read``, as nginx applies its
``proxy_read_timeout`` to WebSockets).

Flow control: a client slow to read pauses the backend connection's reading
until Tornado's write buffer drained; a backend slow to read (its socket buffer
full) holds the client's reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from tornado.iostream import StreamClosedError

if TYPE_CHECKING:
    from tornado.iostream import IOStream

    from helios_core.proxy.upstream import UpstreamConnection

__all__ = ["StreamTunnel"]

_READ_CHUNK = 65536
_EARLY_LIMIT = 256 * 1024  # backend bytes held before the client's stream is attached


class StreamTunnel:
    """Bytes both ways between a client's detached `IOStream` and a backend connection after its 101."""

    def __init__(self, conn: UpstreamConnection, head: bytes, rest: bytes, *, idle_timeout: float,
                 on_close: Callable[[StreamTunnel], None] | None = None) -> None:
        self.conn = conn
        self.idle_timeout = idle_timeout
        self.on_close = on_close
        self.stream: IOStream | None = None
        self.closed = False
        self.bytes_up = 0  # client -> backend
        self.bytes_down = 0  # backend -> client (the 101 head included)
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()
        self._early: list[bytes] = [head, rest] if rest else [head]
        self._early_bytes = len(head) + len(rest)
        self._last_write: asyncio.Future[None] | None = None
        self._up_room: asyncio.Future[None] | None = None  # set while the backend's socket buffer is full
        self._reader: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        conn.sink = self  # the tunnel's half of ResponseSink (structurally one)
        conn.tunnel = self._from_backend

    # -- lifetime --

    def attach(self, stream: IOStream) -> None:
        """The client's stream, detached from HTTP processing: send what waited, then splice."""
        if self.closed:
            stream.close()
            return
        self.stream = stream
        early, self._early = self._early, []
        self._early_bytes = 0
        self._send(b"".join(early))
        self.conn.resume_reading()
        self._reader = self.loop.create_task(self._from_client(), name="helios-gateway-tunnel")
        self._timer = self.loop.call_later(self.idle_timeout, self._check_idle)

    def close(self) -> None:
        """End both sides now (a shutdown, an idle tunnel, or a client gone before the attach)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if self._up_room is not None and not self._up_room.done():
            self._up_room.cancel()
        self.conn.close()
        if self.stream is not None:
            self.stream.close()
        if self.on_close is not None:
            self.on_close(self)

    def _end_after_writes(self) -> None:
        """The backend closed: let what it sent reach the client, then close both."""
        pending = self._last_write
        if pending is not None and not pending.done() and not self.closed:
            pending.add_done_callback(lambda _f: self.close())
        else:
            self.close()

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        quiet = self.loop.time() - self.last_activity
        if quiet >= self.idle_timeout:
            self.close()
        else:
            self._timer = self.loop.call_later(self.idle_timeout - quiet, self._check_idle)

    # -- backend -> client --

    def _from_backend(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.stream is None:
            self._early.append(data)
            self._early_bytes += len(data)
            if self._early_bytes > _EARLY_LIMIT:
                self.conn.pause_reading()  # resumed by attach()
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        stream = self.stream
        if stream is None or not data or self.closed:
            return
        self.bytes_down += len(data)
        try:
            fut = stream.write(data)
        except StreamClosedError:
            self.close()
            return
        self._last_write = fut
        if not fut.done():
            # The client reads slowly: stop reading the backend until Tornado's buffer drained.
            self.conn.pause_reading()
            fut.add_done_callback(self._client_drained)
        elif not fut.cancelled():
            fut.exception()  # a failed write is the reader's to notice; this marks it retrieved

    def _client_drained(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.close()
        elif not self.closed:
            self.conn.resume_reading()

    # -- client -> backend --

    async def _from_client(self) -> None:
        stream = self.stream
        if stream is None:
            return
        try:
            while not self.closed:
                data = await stream.read_bytes(_READ_CHUNK, partial=True)
                self.last_activity = self.loop.time()
                self.bytes_up += len(data)
                self.conn.write(data)
                if self._up_room is not None:
                    await self._up_room
        except (StreamClosedError, asyncio.CancelledError):
            pass
        finally:
            self.close()

    # -- what the UpstreamConnection reports (ResponseSink, tunnel half) --

    def upstream_failed(self, exc: BaseException) -> None:
        """The backend closed (or reset) the connection: the tunnel ends."""
        self._end_after_writes()

    def upstream_pause_writing(self) -> None:
        if self._up_room is None:
            self._up_room = self.loop.create_future()

    def upstream_resume_writing(self) -> None:
        room, self._up_room = self._up_room, None
        if room is not None and not room.done():
            room.set_result(None)

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str) -> None:
        pass  # a tunnel has no more responses

    def response_body(self, data: bytes) -> None:
        pass

    def response_end(self) -> None:
        pass

    def upstream_upgraded(self, rest: bytes) -> None:
        pass

    def flush(self) -> None:
        pass
