"""Serving other clients while a Lua script is busy, as Redis 7.0 does (processEventsWhileBlocked).

A script runs on the loop thread, inside its EVAL or FCALL, so the event loop
is stopped until it returns.  Past busy-reply-threshold the script's hook
(scripting.py) calls `BusyServer.serve` every few milliseconds, and that call
does, with zero timeouts, what the loop cannot:

- it reads the clients' sockets itself (os.read on the fd: uvloop's sockets
  are pseudo-sockets; libuv later finds nothing there, EAGAIN) and feeds the
  bytes to each connection's own parser;
- it answers each command in Redis's order: the command table's refusals
  (unknown, arity), NOAUTH before AUTH, MULTI's and RESP2 pub/sub's refusals,
  then `-BUSY` for anything not flagged allow_busy.  AUTH, HELLO, QUIT, RESET,
  MULTI, DISCARD, WATCH, UNWATCH run; SCRIPT KILL and FUNCTION KILL end the
  script (if it wrote: UNKILLABLE; the wrong one of the two: BUSY), FUNCTION
  STATS shows it, SHUTDOWN NOSAVE kills it and shuts down (SHUTDOWN without
  NOSAVE: BUSY), as Redis answers them;
- it accepts new connections on the listening sockets, applying the accept
  rules (Connection.connection_made: protected mode, maxclients), serves them
  from their raw socket, and hands each to the loop once the script ended,
  with what it gained (AUTH, HELLO 3, a name) and whatever reply bytes were
  not sent yet.

Not served while busy: TLS connections and the TLS listener (their bytes
need the loop's TLS layer: they wait for the script's end, as every client
did before), the script's own connection, and connections that are paused
(flow control, a failed AUTH's delay) or blocked (BLPOP...).  Replies keep
their order behind replies still waiting for durability (the connection's
queue).  Memory stays bounded as in normal serving: at most READ_SIZE bytes
per connection per round go to its parser (whose caps apply), and a client
that does not read its replies is paused by the transport's flow control.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from typing import TYPE_CHECKING, Any

from helios_core.atlas.client_connection import Connection
from helios_core.atlas.cmdstats import add
from helios_core.atlas.commands import TABLE
from helios_core.atlas.commands.connection import NOAUTH, QUEUED
from helios_core.atlas.commands.functions import stats_reply
from helios_core.atlas.commands.server import shutdown_options
from helios_core.atlas.commands.subcommands import BY_CONTAINER, find_sub, sub_flags
from helios_core.atlas.commands.table import OK, Command, Ctx
from helios_core.atlas.jsonlines import JsonBad
from helios_core.errors import CommandError, HeliosError
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from helios_core.atlas.daemon import AtlasServer
    from helios_core.atlas.scripting import Scripting

__all__ = ["BusyServer", "BUSY_EVAL", "BUSY_FUNCTION", "UNKILLABLE"]

log = get_logger("atlasd")

# Redis 7.0.15's texts, byte for byte.
BUSY_EVAL = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
BUSY_FUNCTION = "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
UNKILLABLE = ("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either "
              "wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.")

READ_SIZE = 65536        # bytes read from one connection per round
ACCEPT_PER_ROUND = 64    # new connections accepted per listener per round
RAW_HIGH_WATER = 262144  # unsent reply bytes at which a raw connection stops being read

_NO_AUTH = TABLE.names_with("no_auth")
_NO_MULTI = TABLE.names_with("no_multi")
_MULTI_NOW = TABLE.names_with("multi_control")
_POLL_IN = select.POLLIN | select.POLLPRI
_POLL_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


class BusyServer:
    """One per AtlasServer: the `BusyHost` of the scripts its connections run (scripting.py)."""

    def __init__(self, server: AtlasServer) -> None:
        self.server = server
        self.poll: Any = None                          # select.poll while a script is busy, else None
        self.conns: dict[int, Connection] = {}         # fd -> connection served while busy
        self.listeners: dict[int, socket.socket] = {}  # fd -> a dup of a listening socket
        self.raw: list[_RawTransport] = []             # connections accepted while busy
        self.verdict: bytes | None = None              # how the script is to end, once decided
        self.script: Scripting | None = None

    # -- the script's hook ------------------------------------------------------------------

    def serve(self, script: Scripting) -> bytes | None:
        if self.poll is None:
            self._begin(script)
        for fd, events in self.poll.poll(0):
            listener = self.listeners.get(fd)
            if listener is not None:
                self._accept(listener)
                continue
            conn = self.conns.get(fd)
            if conn is not None:
                self._read(fd, conn, events)
        for raw in list(self.raw):  # (a flush may close one: it leaves the list)
            raw.flush()
        return self.verdict

    def finish(self, script: Scripting) -> None:
        """The script ended: give the loop back what was served here."""
        verdict, caller = self.verdict, script.caller
        self.poll = None
        self.conns = {}
        self.verdict = None
        self.script = None
        for sock in self.listeners.values():
            sock.close()  # (dups: the listening sockets themselves stay the loop's)
        self.listeners = {}
        raw, self.raw = self.raw, []
        for t in raw:
            t.hand_over()
        if verdict == b"SHUTDOWN" and caller is not None:
            # Redis exits without answering the script's caller: its connection just closes.
            caller.enc = caller.enc_err = _silent
            caller.closing = True
        log.warning("the busy script ended", script=script.name, kind=script.kind,
                    ms=int((time.monotonic() - script.started) * 1000), killed=(verdict or b"").decode() or None)

    def _begin(self, script: Scripting) -> None:
        server = self.server
        self.script = script
        self.verdict = None
        self.poll = select.poll()
        log.warning("Slow script detected: still in execution after busy-reply-threshold; serving other clients "
                    "(BUSY) until it ends", script=script.name, kind=script.kind,
                    kill=("SCRIPT KILL" if script.kind == "eval" else "FUNCTION KILL"),
                    ms=int((time.monotonic() - script.started) * 1000))
        for conn in list(server.clients.values()):
            if conn is not script.caller and (conn.is_unix or server.ssl is None):
                self._watch(conn)
        for srv in server.listeners():
            for sock in getattr(srv, "sockets", None) or ():
                if sock.family != socket.AF_UNIX and server.ssl is not None:
                    continue  # TLS: its clients wait for the loop
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
                dup.setblocking(False)
                self.listeners[dup.fileno()] = dup
                self.poll.register(dup.fileno(), select.POLLIN)

    def _watch(self, conn: Connection) -> None:
        fd = _fd(conn.transport)
        if fd >= 0:
            self.conns[fd] = conn
            self.poll.register(fd, _POLL_IN)

    def _forget(self, fd: int) -> None:
        if self.conns.pop(fd, None) is not None:
            self.poll.unregister(fd)

    # -- reading and answering --------------------------------------------------------------

    def _read(self, fd: int, conn: Connection, events: int) -> None:
        transport = conn.transport
        if conn.closing or transport is None or transport.is_closing():
            self._forget(fd)
            return
        if conn.read_paused or conn.write_paused or conn.auth_paused or conn.blocked is not None or conn.parked_rest:
            if events & _POLL_GONE:
                self._forget(fd)  # (the loop will see it go)
            return
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # End of stream or an error: the loop sees it too once the script ended (for a raw
            # connection, nobody else would: it goes now).
            self._forget(fd)
            if isinstance(transport, _RawTransport):
                transport.close()
            return
        conn.net_in += len(data)
        conn.reads += 1
        if conn.sniff:
            conn._sniffed(data)
        parser = conn.parser
        cmds = parser.feed(data)
        while cmds:
            self._run(conn, cmds)
            # Before AUTH the parser hands out one command at a time (as Connection._run_buffered).
            if conn.closing or conn.auth_paused or parser.error is not None or not parser.buffered():
                break
            cmds = parser.feed(b"")
        if parser.error is not None:
            conn._protocol_error(parser.error)
        if conn.closing or conn.transport.is_closing():
            self._forget(fd)

    def _run(self, conn: Connection, cmds: list[Any]) -> None:
        for argv in cmds:
            try:
                reply = self._answer(conn, argv)
                if conn.deferred is not None:  # SHUTDOWN NOSAVE: no reply, the connection closes
                    fut, render = conn.deferred
                    conn.deferred = None
                    conn.queue.append((0, (fut, render, conn.resp3)))
                    conn.futures += 1
                    fut.add_done_callback(conn._future_done)
                    continue
                payload = conn.enc(reply, conn.resp3)
            except CommandError as e:
                payload = conn.enc_err(e)
            except HeliosError as e:
                payload = conn.enc_err(f"ERR {e}")
            if type(argv) is list:
                conn.last_cmd = argv[0]
            conn.last_active = self.server.now
            if conn.queue:  # behind replies still waiting (durability, a future): in order
                conn.queue.append((0, payload))
                conn._drain()
            elif payload:
                conn._write(payload)
            if conn.closing:
                break
        if conn.closing and not conn.queue and not conn.transport.is_closing():
            conn.transport.close()

    def _answer(self, conn: Connection, argv: Any) -> Any:
        """One command's reply while busy (or raise its error), in Redis 7.0's processCommand order."""
        script = self.script
        assert script is not None
        busy = BUSY_EVAL if script.kind == "eval" else BUSY_FUNCTION
        if type(argv) is not list:  # a JSON line that is no plain command
            conn._flag_multi()
            if type(argv) is JsonBad:
                raise conn._error(argv.error)
            raise conn._error(NOAUTH if not conn.authed else busy)
        refusal = conn._table_refusal(argv)
        name = argv[0].lower()
        if refusal is None and not conn.authed and name not in _NO_AUTH:
            refusal = conn._reject(argv, NOAUTH)
        if refusal is None and conn.multi is not None and name in _NO_MULTI:
            refusal = conn._reject(argv, "ERR Command not allowed inside a transaction")
        if refusal is None:
            text = conn.subscribed_refusal(name, argv)
            if text is not None:
                refusal = conn._reject(argv, text)
        if refusal is None and not _allow_busy(argv):
            refusal = conn._reject(argv, busy)  # (EXEC's: EXECABORT, as Redis's rejectCommand)
        if refusal is not None:
            conn._flag_multi()
            raise refusal
        if conn.multi is not None and name not in _MULTI_NOW:
            conn.multi.append(argv)  # (AUTH, SCRIPT KILL...: queued, as Redis queues them)
            return QUEUED
        return self._call(conn, argv, name, busy)

    def _call(self, conn: Connection, argv: list[bytes], name: bytes, busy: str) -> Any:
        """Run an allow_busy command, counted in INFO commandstats as a call (errorstats: its error)."""
        engine = self.server.engine
        cmd = _command(argv)
        stats_name = cmd.name
        subs = BY_CONTAINER.get(cmd.name)
        if subs is not None:
            found = find_sub(subs, argv[1])
            assert found is not None  # (an unknown subcommand was refused)
            stats_name = found[0]
        failed = True
        t0 = time.perf_counter_ns()
        try:
            if stats_name in ("script|kill", "function|kill"):
                reply = self._kill(stats_name == "script|kill", busy)
            elif stats_name == "function|stats":
                reply = self._function_stats(busy)
            elif name == b"shutdown":
                reply = self._shutdown(conn, argv, busy)
            elif name == b"discard" and conn.multi is not None:
                reply = conn._discard()
            else:  # AUTH, HELLO, QUIT, RESET, MULTI, WATCH, UNWATCH, DISCARD out of MULTI: connection state
                ctx = Ctx(engine.ks, _no_effects, engine)
                ctx.conn = conn
                ctx.now_ms = engine.clock()
                reply = cmd.handler(ctx, argv[1:])
            failed = False
        except CommandError as e:
            engine.stats.commands.errors.add(e)
            raise
        finally:
            add(engine.stats.commands.record_for(stats_name), time.perf_counter_ns() - t0, failed)
        return reply

    def _kill(self, is_eval: bool, busy: str) -> Any:
        """SCRIPT KILL / FUNCTION KILL, as Redis 7.0's scriptKill answers them."""
        script = self.script
        assert script is not None
        if script.wrote:
            raise CommandError(UNKILLABLE)
        if is_eval != (script.kind == "eval"):
            raise CommandError(busy)
        self.verdict = b"USER"
        return OK

    def _function_stats(self, busy: str) -> Any:
        script = self.script
        assert script is not None
        if script.kind == "eval":
            raise CommandError(busy)  # (Redis 7.0: FUNCTION STATS does not describe a running EVAL)
        running = {b"name": script.name.encode(), b"command": list(script.command),
                   b"duration_ms": int((time.monotonic() - script.started) * 1000)}
        return stats_reply(script.registry, running)  # (no sync: no library can change while it runs)

    def _shutdown(self, conn: Connection, argv: list[bytes], busy: str) -> Any:
        save, abort, _ = shutdown_options(argv[1:])
        if abort:
            raise CommandError("ERR No shutdown in progress.")
        if save is not False:
            raise CommandError(busy)  # only SHUTDOWN NOSAVE ends a busy script
        engine = self.server.engine
        ctx = Ctx(engine.ks, _no_effects, engine)
        ctx.conn = conn
        reply = _command(argv).handler(ctx, argv[1:])  # (its other refusals: an owner's socket)
        log.warning("SHUTDOWN NOSAVE while a script is busy: the script is killed, its writes undone")
        self.verdict = b"SHUTDOWN"
        return reply

    # -- new connections --------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        is_unix = listener.family == socket.AF_UNIX
        for _ in range(ACCEPT_PER_ROUND):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # (EMFILE and the like: the loop's accept would log it too)
                log.warning("accept failed while a script is busy", error=str(e))
                return
            sock.setblocking(False)
            if not is_unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = AcceptedWhileBusy(self.server, is_unix)
            transport = _RawTransport(sock, conn, self)
            conn.connection_made(transport)  # type: ignore[arg-type]  # (the accept rules: refusals close)
            if transport.closed:
                continue
            conn.raw = transport
            self.raw.append(transport)
            self.conns[sock.fileno()] = conn
            self.poll.register(sock.fileno(), _POLL_IN)


class AcceptedWhileBusy(Connection):
    """A connection accepted while a script was busy: served from its raw socket until the script
    ended, then handed to the loop, which calls connection_made again with its own transport."""

    __slots__ = ("raw",)

    def __init__(self, server: AtlasServer, is_unix: bool) -> None:
        super().__init__(server, is_unix)
        self.raw: _RawTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = self.raw
        if raw is None:
            super().connection_made(transport)
            return
        self.raw = None
        self.transport = transport
        if raw.buffer:
            transport.write(bytes(raw.buffer))  # type: ignore[attr-defined]
        if raw.closed or raw.closing:
            transport.close()
            return
        if self.read_paused or self.write_paused or self.auth_paused or self.blocked is not None:
            transport.pause_reading()  # type: ignore[attr-defined]


class _RawTransport:
    """The transport of a connection accepted while busy: writes go straight to its socket (what
    does not fit waits in `buffer`), until `hand_over` gives the socket to the loop."""

    def __init__(self, sock: socket.socket, conn: Connection, busy: BusyServer) -> None:
        self.sock = sock
        self.conn = conn
        self.busy = busy
        self.buffer = bytearray()
        self.closing = False   # close() asked: closes once the buffer is sent
        self.closed = False
        self.handed = False
        self.paused = False
        self.extra = {"socket": sock, "peername": _peer(sock), "sockname": sock.getsockname()}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.buffer += data
        if not self.handed:
            self.flush()
        if len(self.buffer) > RAW_HIGH_WATER and not self.conn.write_paused:
            self.conn.pause_writing()

    def flush(self) -> None:
        if self.buffer and not self.closed and not self.handed:
            try:
                n = self.sock.send(self.buffer)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._gone()
                return
            del self.buffer[:n]
            if self.conn.write_paused and len(self.buffer) < RAW_HIGH_WATER // 4:
                self.conn.write_paused = False
        if self.closing and not self.buffer and not self.closed:
            self._gone()

    def is_closing(self) -> bool:
        return self.closing or self.closed

    def close(self) -> None:
        self.closing = True
        if not self.handed:
            self.flush()
            if not self.closed and self.buffer:
                self._gone()  # (a client that does not read its last reply: no waiting while busy)

    def abort(self) -> None:
        self.buffer.clear()
        self.closing = True
        if not self.handed:
            self._gone()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def _gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        busy = self.busy
        fd = self.sock.fileno()
        if busy.conns.get(fd) is self.conn:
            busy._forget(fd)
        if self in busy.raw:
            busy.raw.remove(self)
        self.sock.close()
        self.conn.connection_lost(None)

    def hand_over(self) -> None:
        """The script ended: the loop takes the socket (and this transport's unsent bytes)."""
        self.flush()
        if self.closed:
            return
        self.handed = True
        loop = asyncio.get_running_loop()
        conn = self.conn

        async def adopt() -> None:
            try:
                await loop.connect_accepted_socket(lambda: conn, self.sock)
            except Exception as e:  # (the socket went meanwhile)
                log.warning("a connection accepted while a script was busy could not join the loop", error=str(e))
                self.sock.close()
                conn.connection_lost(None)

        loop.create_task(adopt())


def _command(argv: list[bytes]) -> Command:
    cmd = TABLE.get(argv[0])
    if cmd is None:  # (refused before: the table's refusals come first)
        raise CommandError("ERR unknown command")
    return cmd


def _allow_busy(argv: list[bytes]) -> bool:
    cmd = _command(argv)
    subs = BY_CONTAINER.get(cmd.name)
    if subs is not None and len(argv) > 1:
        found = find_sub(subs, argv[1])
        return found is not None and "allow_busy" in sub_flags(found[0])
    return "allow_busy" in cmd.flags


def _no_effects(eff: tuple) -> None:
    raise CommandError("ERR no writes while a script is busy")


def _silent(*_: Any) -> bytes:
    return b""


def _fd(transport: Any) -> int:
    sock = transport.get_extra_info("socket") if transport is not None else None
    try:
        return sock.fileno() if sock is not None else -1
    except (OSError, ValueError):
        return -1


def _peer(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None
