"""The gateway's TCP connection stream: Tornado's IOStream, minus two per-request costs.

1. Nagle's algorithm is off for good (set once, by `limits.GatewayHTTPServer.handle_stream`).
   HTTP1Connection turns it off when a response is finished (so the last bytes leave at once)
   and back on after it: two setsockopt calls per request, and two socket.family lookups
   through an enum, for a setting that only matters between the writes of one response.  A
   gateway answer is one write at finish; a streamed one (the proxy) is better sent as it
   comes than held back for an ACK.

2. The fd's read interest is not dropped and taken again around every request with a body.
   Tornado (6.6 `BaseIOStream._handle_events`) stops listening for reads whenever data waits in
   its buffer and no read is pending: that is the state after a request head is read when the
   body came in the same segment (every small PUT).  The body is read from the buffer a moment
   later, the stream's close callback is set, and Tornado listens again: a `remove_reader` and
   an `add_reader` on the event loop per request (`update_handler` twice, with the epoll calls
   behind them), for an interest that is back before anything could have arrived.

   Here that drop is put off: the READ registration stays (``_kept_read``), and the stream
   behaves as Tornado's whose state is ``_state`` without READ.  Should a read event come while
   READ is only kept (the client pipelines the next request, or closes), the stream reads
   nothing, as Tornado's would not have been told, and drops READ then: the state Tornado
   would have had from the start.  Where Tornado would have asked for READ again (a read that
   the buffer cannot satisfy, `_maybe_add_error_listener` on an emptied buffer), the kept
   registration simply becomes a wanted one.  So the bytes read from the socket, when they
   are read and when a close is noticed are Tornado's; only the epoll traffic differs.
   tests/unit/test_gateway_stream.py runs this stream and Tornado's side by side through the
   same steps and compares what each read, its state and its close.

Only plain TCP connections get this class (`handle_stream`); TLS ones keep `SSLIOStream`.
"""

from __future__ import annotations

from typing import Any

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, UnsatisfiableReadError
from tornado.log import gen_log

__all__ = ["ServerStream"]

_READ, _WRITE, _ERROR = IOLoop.READ, IOLoop.WRITE, IOLoop.ERROR


class ServerStream(IOStream):
    """A server-side TCP connection (see the module's docstring)."""

    # READ is registered only because its drop was put off: Tornado's state is ``_state & ~READ``
    _kept_read = False

    def set_nodelay(self, value: bool) -> None:
        pass

    def _handle_events(self, fd: Any, events: int) -> None:
        if self._kept_read and events & _READ and not self.closed():
            # Tornado's stream would not be listening: it would read nothing and learn nothing
            # now.  Stop listening, as it would have stopped before (the data stays in the socket).
            self._kept_read = False
            self._state = (self._state or 0) & ~_READ  # (never None while READ is kept)
            self.io_loop.update_handler(self.fileno(), self._state)
            events &= ~_READ
            if not events:
                return
        # BaseIOStream._handle_events (Tornado 6.6), but for the state set at its end.
        if self.closed():
            gen_log.warning("Got events for closed stream %s", fd)
            return
        try:
            if self._connecting:
                self._handle_connect()
            if self.closed():
                return
            if events & _READ:
                self._handle_read()
            if self.closed():
                return
            if events & _WRITE:
                self._handle_write()
            if self.closed():
                return
            if events & _ERROR:
                self.error = self.get_fd_error()
                self.io_loop.add_callback(self.close)
                return
            state = _ERROR
            if self.reading():
                state |= _READ
            if self.writing():
                state |= _WRITE
            if state == _ERROR and self._read_buffer_size == 0:
                state |= _READ
            # Tornado's state is now `state`.  When it drops READ only because data waits in the
            # buffer, keep the registration: the next read (the body's) comes from that buffer.
            self._kept_read = bool(not state & _READ and (self._state or 0) & _READ and self._read_buffer_size)
            if self._kept_read:
                state |= _READ
            if state != self._state:
                assert self._state is not None, "shouldn't happen: _handle_events without self._state"
                self._state = state
                self.io_loop.update_handler(self.fileno(), self._state)
        except UnsatisfiableReadError as e:
            gen_log.info(f"Unsatisfiable read, closing connection: {e}")
            self.close(exc_info=e)
        except Exception as e:
            gen_log.error("Uncaught exception, closing connection.", exc_info=True)
            self.close(exc_info=e)
            raise

    def _add_io_state(self, state: int) -> None:
        if state & _READ:
            self._kept_read = False  # Tornado asks for READ: the kept registration is a wanted one now
        super()._add_io_state(state)

    def _maybe_add_error_listener(self) -> None:
        if not self._kept_read:
            super()._maybe_add_error_listener()
            return
        # Tornado's check, on its state (ours without the kept READ): it would ask for READ here,
        # which is registered already.
        if ((self._state or 0) & ~_READ == _ERROR and not self.closed() and self._read_buffer_size == 0
                and self._close_callback is not None):
            self._kept_read = False
