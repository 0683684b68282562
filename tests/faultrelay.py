"""A fault-injecting TCP relay for tests: put it between a client and a server and break the wire.

`FaultRelay` listens on 127.0.0.1 (an unused port by default) and relays every
connection to one upstream ``host:port``.  It runs an asyncio loop of its own
in a background thread, so sync tests, async tests (whatever their loop) and
other processes (a `helios proxy` subprocess pointed at ``relay.url``) all
reach it the same way.  The fault is a *mode*, switched at run time from the
test's thread; a switch takes effect before the call returns:

=====================  ==================================================================
``passthrough()``      forward both ways (the start mode)
``delay(seconds)``     wait `seconds` before forwarding each chunk read, either way
``drop()``             new connections are accepted and held, never connected upstream;
                       what they send is read and discarded; existing connections stop
                       forwarding (as in blackhole)
``blackhole()``        existing and new connections stay open but nothing is forwarded
                       either way; the data waits (at most one chunk a direction in the
                       relay, the rest in the kernel's buffers) and flows again when the
                       mode goes back to passthrough or delay, as after a healed partition
``reset()``            every open connection is reset now (RST: ``SO_LINGER`` 0, close)
                       on both sides, and every new one right after accept
``reset_after(n)``     each connection forwards `n` more response bytes (upstream to
                       client, counted from the switch or from accept), then is reset
                       on both sides: a reset in the middle of a response
``half_open(side)``    close one direction: ``side="client"`` sends the client a FIN
                       (it reads EOF, its writes still reach upstream, the answers are
                       discarded); ``side="upstream"`` sends upstream the FIN (answers
                       still reach the client, what the client sends is discarded).
                       Applies to open connections now and to new ones on accept
``refuse()``           stop listening: new connections are refused (ECONNREFUSED), and
                       so are those still in the kernel's backlog, not yet accepted;
                       open ones keep forwarding.  Leaving this mode listens again on
                       the same port.  A client with a keep-alive pool keeps using its open
                       connections: for "the backend is down", ``reset()`` them first,
                       then ``refuse()``
=====================  ==================================================================

Apart from these, connections behave as the ends make them: a FIN from one
side is passed on as a FIN, a reset from one side becomes a reset of the
other, and an upstream that refuses the relay's connection shows up as a
reset of the client's.  A reset right after accept may reach a client while
its connect() is still returning: expect ECONNRESET from either call.

The relay counts connections so that tests can check for leaks:
`open_connections` is the number of client connections it holds right now,
`accepted` how many it has accepted in all; `wait_open(n)` waits for the
count to settle.  A connection is open until both directions have ended; a
chunk held by ``delay`` or ``blackhole`` postpones that until it is let go, so
check for leaks after ``passthrough()``.  `close()` (or leaving the ``with`` block) closes every
connection and stops the thread.

Example::

    from tests.faultrelay import FaultRelay

    with FaultRelay(("127.0.0.1", backend_port)) as relay:
        proxy_config["backends"] = [{"id": "b1", "url": relay.url}]
        ...                           # requests through the proxy pass
        relay.reset_after(100)        # the next responses are cut after 100 bytes
        ...                           # the proxy must answer 502, not hang
        relay.passthrough()
        assert relay.wait_open(0, timeout=5), relay.stats()   # the proxy closed them all

It also runs alone, for a test in another process or by hand:
``python -m tests.faultrelay UPSTREAM_HOST:PORT [--port P]`` prints
``listening HOST:PORT`` and then reads one command a line from stdin
(``delay 0.5``, ``reset_after 100``, ``half_open upstream``, ``stats``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["FaultRelay", "Mode", "MODES"]

MODES = ("pass", "delay", "drop", "blackhole", "reset", "reset_after", "half_open", "refuse")
CHUNK = 65536
_T = TypeVar("_T")


@dataclass(frozen=True)
class Mode:
    """The relay's current fault: `name` is one of `MODES`; the other fields are its argument."""

    name: str = "pass"
    seconds: float = 0.0  # delay
    nbytes: int = 0  # reset_after
    side: str = "client"  # half_open

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"unknown relay mode {self.name!r} (modes: {', '.join(MODES)})")
        if self.seconds < 0 or self.nbytes < 0:
            raise ValueError("delay seconds and reset_after bytes must not be negative")
        if self.side not in ("client", "upstream"):
            raise ValueError(f"half_open side must be 'client' or 'upstream', not {self.side!r}")


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP reset: SO_LINGER on with a zero timeout makes close() send RST, not FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _unsent_bytes(writer: asyncio.StreamWriter) -> int:
    """Bytes still in the kernel's send queue (SIOCOUTQ); 0 when unknown."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return 0


class _Conn:
    """One relayed connection: the client's side, the upstream side (None for a dropped one)."""

    def __init__(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.client_r = client_r
        self.client_w = client_w
        self.up_r: asyncio.StreamReader | None = None
        self.up_w: asyncio.StreamWriter | None = None
        self.down_bytes = 0  # upstream -> client bytes forwarded, for reset_after
        self.down_mark = 0  # down_bytes when the reset_after budget started
        self.shut_client = False  # half_open: FIN sent to the client, answers discarded
        self.shut_upstream = False  # half_open: FIN sent upstream, requests discarded
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False


class FaultRelay:
    """A TCP relay to `upstream` (``(host, port)`` or ``"host:port"``) with switchable faults.

    `start()` (or ``with``) binds `host`:`port` (port 0: an unused one; see
    `port` and `url`) and returns once it listens.  The mode methods below are
    thread-safe and return once the mode is in force.
    """

    def __init__(self, upstream: tuple[str, int] | str, *, host: str = "127.0.0.1", port: int = 0,
                 connect_timeout: float = 5.0) -> None:
        if isinstance(upstream, str):
            up_host, _, up_port = upstream.rpartition(":")
            upstream = (up_host or "127.0.0.1", int(up_port))
        self.upstream: tuple[str, int] = upstream
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.accepted = 0
        self.bytes_up = 0  # client -> upstream, forwarded
        self.bytes_down = 0  # upstream -> client, forwarded
        self.resets = 0  # connections the relay reset (on purpose or passing a reset on)
        self._mode = Mode()
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._changed: asyncio.Event | None = None  # set (and replaced) on every mode switch
        self._stopping: asyncio.Event | None = None

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> FaultRelay:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            # A plain selector loop whatever policy the test installed: the relay needs the raw
            # socket of each transport (SO_LINGER, SIOCOUTQ).
            loop = asyncio.SelectorEventLoop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as e:  # reported to start()'s caller
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._serve())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="faultrelay", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def close(self) -> None:
        """Close every connection (both sides), stop listening, stop the thread. Idempotent."""
        if self._thread is None or self._loop is None:
            return
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                self._loop.call_soon_threadsafe(self._stopping.set)  # type: ignore[union-attr]
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        """``http://host:port`` of the relay, for a backend URL."""
        return f"http://{self.host}:{self.port}"

    # -- modes (called from any thread) ----------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, name: str, arg: float | int | str | None = None) -> None:
        """Switch to mode `name` (one of `MODES`) with its argument, if it takes one."""
        if name == "delay":
            mode = Mode(name, seconds=float(arg if arg is not None else 0.0))
        elif name == "reset_after":
            mode = Mode(name, nbytes=int(arg if arg is not None else 0))
        elif name == "half_open":
            mode = Mode(name, side=str(arg if arg is not None else "client"))
        else:
            mode = Mode(name)
        self._call(self._switch(mode))

    def passthrough(self) -> None:
        self.set_mode("pass")

    def delay(self, seconds: float) -> None:
        self.set_mode("delay", seconds)

    def drop(self) -> None:
        self.set_mode("drop")

    def blackhole(self) -> None:
        self.set_mode("blackhole")

    def reset(self) -> None:
        self.set_mode("reset")

    def reset_after(self, nbytes: int) -> None:
        self.set_mode("reset_after", nbytes)

    def half_open(self, side: str = "client") -> None:
        self.set_mode("half_open", side)

    def refuse(self) -> None:
        self.set_mode("refuse")

    # -- counts ------------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Client connections the relay holds open right now."""
        return len(self._conns)

    def wait_open(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until exactly `count` client connections are open; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while len(self._conns) != count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def stats(self) -> dict[str, Any]:
        return {"mode": self._mode.name, "open": len(self._conns), "accepted": self.accepted,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "resets": self.resets}

    # -- the loop's side ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the relay is not running: start() it first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _listen(self) -> None:
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True,
                                                  limit=CHUNK)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._finish(conn, reset=False)
        # Connection handlers still connecting upstream, or waiting for their cancelled pumps.
        pending = [t for t in self._handlers if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        await asyncio.sleep(0)  # closed transports run their last callbacks

    async def _switch(self, mode: Mode) -> None:
        old, self._mode = self._mode, mode
        if mode.name == "refuse" and self._server is not None:
            self._server.close()
            self._server = None
        elif mode.name != "refuse" and self._server is None:
            # Back on the same port: clients and configs hold its number.
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True,
                                                      limit=CHUNK)
        for conn in list(self._conns):
            if mode.name == "reset":
                self._finish(conn, reset=True)
            elif mode.name == "reset_after":
                conn.down_mark = conn.down_bytes
            elif mode.name == "half_open":
                self._shut(conn, mode.side)
        if old != mode:
            assert self._changed is not None
            self._changed.set()  # held chunks look at the new mode
            self._changed = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels a handler, after closing its connection. Swallowed here because
            # asyncio 3.11's start_server callback calls exception() on the task and would log the
            # cancellation as an error.
            pass

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        mode = self._mode
        if mode.name == "reset":
            self._finish(conn, reset=True)
            return
        if mode.name == "drop":
            # Held, never connected upstream: what it sends goes nowhere until it gives up.
            conn.tasks.append(handler)
            try:
                while await reader.read(CHUNK):
                    pass
            except OSError:
                pass
            finally:
                self._finish(conn, reset=False)
            return
        try:
            conn.up_r, conn.up_w = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream, limit=CHUNK), self.connect_timeout)
        except (OSError, TimeoutError):
            self._finish(conn, reset=True)  # the client sees the upstream's refusal as a reset
            return
        if conn.closed:  # reset or closed while connecting
            _rst(conn.up_w)
            return
        if self._mode.name == "half_open":
            self._shut(conn, self._mode.side)
        conn.tasks = [asyncio.create_task(self._pump(conn, up=True)), asyncio.create_task(self._pump(conn, up=False))]
        await asyncio.wait(conn.tasks)
        self._finish(conn, reset=False)

    def _shut(self, conn: _Conn, side: str) -> None:
        """half_open: send a FIN to one side and discard what would have gone to it from now on."""
        writer = conn.client_w if side == "client" else conn.up_w
        if writer is None or writer.transport.is_closing():
            return
        if side == "client":
            conn.shut_client = True
        else:
            conn.shut_upstream = True
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()

    async def _pump(self, conn: _Conn, *, up: bool) -> None:
        """Copy one direction (up: client -> upstream) chunk by chunk, applying the mode to each."""
        reader = conn.client_r if up else conn.up_r
        writer = conn.up_w if up else conn.client_w
        assert reader is not None and writer is not None
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    shut = conn.shut_upstream if up else conn.shut_client
                    if not shut and not writer.transport.is_closing() and writer.can_write_eof():
                        writer.write_eof()  # pass the FIN on; the other direction goes on
                    return
                data = await self._hold(conn, data, up)
                if not data or (conn.shut_upstream if up else conn.shut_client):
                    continue  # discarded (half-open direction)
                writer.write(data)
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                    conn.down_bytes += len(data)
                await writer.drain()
                if not up and self._mode.name == "reset_after" \
                        and conn.down_bytes - conn.down_mark >= self._mode.nbytes:
                    await self._reset_mid_response(conn)
                    return
        except (ConnectionError, OSError):
            # One side reset (or vanished): reset the other, as a router passing the RST on would.
            self._finish(conn, reset=True)

    async def _hold(self, conn: _Conn, data: bytes, up: bool) -> bytes:
        """Apply the mode to one chunk: wait (delay, blackhole, drop), cut it (reset_after)."""
        while True:
            mode = self._mode
            if mode.name in ("blackhole", "drop"):
                assert self._changed is not None
                await self._changed.wait()
                continue
            if mode.name == "delay" and mode.seconds > 0:
                changed = self._changed
                await asyncio.sleep(mode.seconds)
                if changed is not self._changed and self._mode.name in ("blackhole", "drop"):
                    continue  # switched to a holding mode while this chunk waited
            if not up and mode.name == "reset_after":
                room = mode.nbytes - (conn.down_bytes - conn.down_mark)
                if room <= 0:
                    await self._reset_mid_response(conn)
                    return b""
                return data[:room]
            return data

    async def _reset_mid_response(self, conn: _Conn) -> None:
        # The bytes already written must reach the client before the RST, or SO_LINGER 0 would
        # throw them away with the send queue and the "partial response" would be empty.
        deadline = time.monotonic() + 1.0
        while _unsent_bytes(conn.client_w) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        self._finish(conn, reset=True)

    def _finish(self, conn: _Conn, *, reset: bool) -> None:
        """Close both sides of `conn` (with RST if `reset`), cancel its pumps, count it closed."""
        if conn.closed:
            return
        conn.closed = True
        if reset:
            self.resets += 1
            _rst(conn.client_w)
            _rst(conn.up_w)
        else:
            for w in (conn.client_w, conn.up_w):
                if w is not None and not w.transport.is_closing():
                    w.close()
        current = asyncio.current_task()
        for t in conn.tasks:
            if t is not current:
                t.cancel()
        self._conns.discard(conn)


# -- standalone -------------------------------------------------------------------------------

def _commands(relay: FaultRelay, readline: Callable[[], str]) -> None:
    for line in iter(readline, ""):
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "stats":
                print(json.dumps(relay.stats()), flush=True)
                continue
            relay.set_mode("pass" if words[0] == "passthrough" else words[0], *words[1:2])
            print("ok", relay.mode.name, flush=True)
        except (ValueError, TypeError) as e:
            print(f"error {e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.faultrelay", description=__doc__.split("\n\n")[0])
    p.add_argument("upstream", help="HOST:PORT to relay to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: an unused one)")
    args = p.parse_args(argv)
    with FaultRelay(args.upstream, host=args.host, port=args.port) as relay:
        print(f"listening {relay.host}:{relay.port}", flush=True)
        _commands(relay, sys.stdin.readline)


if __name__ == "__main__":
    main()
