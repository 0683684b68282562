"""The client an `Exchange` is given inside the gateway: a Tornado request handler behind a duck-typed adapter.

In ``helios proxy`` an exchange talks to a `server.ClientConnection` (an
``asyncio.Protocol``).  In the gateway (helios_core/gateway/proxied.py) the
client is a Tornado `ProxiedHandler`; `TornadoClient` stands in that role: it
parses the response head the exchange writes into Tornado's status and
headers (Tornado frames the body for the client), holds Tornado's reading of
the request body while the backend cannot take more, pauses the backend while
the client reads slowly, and after a backend's 101 makes the `StreamTunnel`
that the handler attaches to the detached stream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tornado.httputil import HTTPHeaders

from helios_core.proxy.tunnel import StreamTunnel

if TYPE_CHECKING:
    from helios_core.gateway.proxied import ProxiedHandler
    from helios_core.proxy.exchange import Exchange
    from helios_core.proxy.server import Request
    from helios_core.proxy.service import ProxyService

__all__ = ["StreamTransport", "TornadoClient"]


class StreamTransport:
    """What an exchange calls on ``client.transport``: here, the Tornado connection's stream."""

    def __init__(self, handler: ProxiedHandler) -> None:
        self.handler = handler

    def _stream(self) -> Any:
        return getattr(self.handler.request.connection, "stream", None)

    def is_closing(self) -> bool:
        stream = self._stream()
        return stream is None or stream.closed()

    def close(self) -> None:
        stream = self._stream()
        if stream is not None:
            stream.close()
        self.handler.exchange_over()  # a response cut mid-way: the handler has nothing more to wait for

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.handler.hold_body("transport")

    def resume_reading(self) -> None:
        self.handler.release_body("transport")

    def write(self, data: bytes) -> None:  # an exchange's own writes (an interim 100) are Tornado's
        pass


class TornadoClient:
    """The duck-typed client an `Exchange` is given (``server.ClientConnection``'s role) over a handler.

    The exchange sends the response as HTTP/1.1 bytes: the first write after
    the head is made is the head, parsed here into Tornado's status and
    headers; the exchange's own body framing is switched off (its `framing`
    set to "raw") so that body bytes pass as they are and Tornado frames them.
    """

    def __init__(self, handler: ProxiedHandler, service: ProxyService) -> None:
        self.handler = handler
        self.service = service
        self.peer = handler.request.remote_ip or ""
        self.transport = StreamTransport(handler)
        self.closing = False
        self.write_paused = False
        self.exchange: Exchange | None = None
        self.out: list[bytes] = []
        self._head_done = False
        self.upgrade_head = b""  # a backend's 101 head, written on the detached stream

    # -- the response, from the exchange --

    def send_later(self, data: bytes) -> None:
        if not self._head_done:
            self._head(data)
            return
        if data:
            self.out.append(data)

    def write(self, data: bytes) -> None:  # the exchange's older, unbuffered spelling
        self.send_later(data)
        self.flush()

    def flush(self) -> None:
        if not self.out or self.handler._finished:
            self.out.clear()
            return
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        self.handler.write(data)
        self._flush()

    def _flush(self) -> None:
        fut = self.handler.flush()
        if not fut.done():
            # Tornado's write buffer did not drain at once: the client reads slowly, so stop
            # reading the backend until it does (the body never piles up in the gateway).
            self.write_paused = True
            if self.exchange is not None:
                self.exchange.client_paused()
            fut.add_done_callback(self._drained)

    def _drained(self, fut: asyncio.Future[None]) -> None:
        self.write_paused = False
        if self.exchange is not None and not self.closing:
            self.exchange.client_resumed()

    def _head(self, data: bytes) -> None:
        self._head_done = True
        exchange = self.exchange
        if data.startswith(b"HTTP/1.1 101 ") and exchange is not None and exchange.req.upgrade is not None:
            self.upgrade_head = data  # Tornado cannot send a 101: the handler writes it after the detach
            return
        if exchange is not None:
            exchange.framing = "raw"  # the body passes unframed; Tornado frames it for the client
        lines = data.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 and parts[2] else None
        h = self.handler
        keep = dict(h._sticky)  # request id, trace, rate-limit state: unless the backend sent its own
        h._headers = HTTPHeaders()
        h.set_status(status, reason)
        given: set[str] = set()
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(b":")
            low = name.strip().lower().decode("latin-1")
            if low in ("connection", "transfer-encoding", "keep-alive"):
                continue  # Tornado frames the response to the client itself
            given.add(low)
            h._headers.add(name.strip().decode("latin-1"), value.strip().decode("latin-1"))
        for key, text in keep.items():
            if key.lower() not in given:
                h._headers[key] = text
        h.answered = True  # sent with the first body bytes (the same write), or by finish()

    def finished(self, keep_alive: bool) -> None:
        self.flush()
        self.handler.exchange_over()

    def answer_error(self, req: Request, status: int, message: str, retry_after: int | None = None,
                     close: bool = False, log: bool = True) -> None:
        self.handler.answer_error(status, message, retry_after)

    # -- flow control of the request body, from the exchange --

    def pause_reading_for(self, why: str) -> None:
        self.handler.hold_body(why)

    def resume_reading_for(self, why: str) -> None:
        self.handler.release_body(why)

    def start_tunnel(self, conn: Any, rest: bytes, idle_timeout: float = 0.0) -> None:
        """The backend answered 101: the tunnel holds its connection until the handler detaches the stream.

        `idle_timeout` is the route's timeouts.read, which the `StreamTunnel` reads from the route itself."""
        exchange = self.exchange
        if not self.upgrade_head or exchange is None or self.handler._finished:
            conn.close()
            self.transport.close()
            return
        tunnels = self.handler.proxy.tunnels
        tunnel = StreamTunnel(conn, self.upgrade_head, rest, idle_timeout=exchange.route.timeouts.read,
                              on_close=tunnels.discard)
        tunnels.add(tunnel)
        self.handler.tunnel = tunnel
        self.handler.exchange_over()
