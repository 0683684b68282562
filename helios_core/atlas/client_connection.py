"""One RESP client connection: parse, execute, and release replies in order after durability.

The hot path is `data_received`: parse every complete command in the read,
run each through `Engine.execute` (no coroutine, no per-command future), and
write all replies that may be shown at once in a single `transport.write`.

A reply that may reveal a write not yet durable (`engine.pending_seq()` > 0)
goes into `queue` with that seq; so does every reply after it, since replies
on a connection keep their order.  One engine waiter per read (for the
highest seq in it) releases the queue up to what is durable.  If the AOF
write fails the engine undoes those writes and calls the waiter with the
error: every queued reply above the durable point becomes that error.

Connection state that changes how commands are dispatched (not
authenticated, inside MULTI, RESP2 subscribed mode, JSON lines) sets
`special`, which sends commands through `_dispatch_special` instead of
straight to the engine.  What it refuses there (an unknown command or an arity
error, before NOAUTH and before MULTI queues, as Redis's processCommand; NOAUTH; a
no_multi command inside MULTI; a command in subscribed mode) counts as
rejected in INFO commandstats and its error in INFO errorstats (`Engine.reject`);
EXEC and DISCARD, which it runs itself inside MULTI, are counted and shown to
MONITOR by `_timed`.  The engine counts the errors of what it runs; the other
error replies made here (EXECABORT, UNBLOCKED, a failed SAVE's, a protocol
error) are counted where they are made (`_error`).

A blocking command with nothing to pop parks its connection (blocking.py):
the commands parsed after it wait in `parked_rest` (reading goes on, so a
hang-up is seen, up to a bound), and its reply comes from `serve_blocked` (a
write made the key ready, in the same loop pass) or from the timeout.  `current` names the top-level command running, so
a blocking command inside EXEC or a script acts as its non-blocking form.

A connection whose first byte is `{` speaks JSON lines instead of RESP
(helios_core/atlas/jsonlines.py): it swaps in that parser and reply encoder
and otherwise runs exactly the same path, durability queue included.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from helios_core.atlas import blocking
from helios_core.atlas.blocking import Block, Waiter
from helios_core.atlas.commands import TABLE
from helios_core.atlas.commands.connection import NOAUTH, QUEUED, check_password
from helios_core.atlas.commands.subcommands import BY_CONTAINER, find_sub
from helios_core.atlas.commands.table import OK, exec_abort, unknown_command
from helios_core.atlas.jsonlines import JsonBad, JsonBatch, JsonLinesParser, encode_json, encode_json_error
from helios_core.atlas.lean import MISS
from helios_core.atlas.resp import NULL_ARRAY, QUERY_BUFFER_EXCEEDED, RespParser, encode, encode_error
from helios_core.errors import CommandError, HeliosError
from helios_core.observability import tracing
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from helios_core.atlas.daemon import AtlasServer
    from helios_core.atlas.tracking import Tracker

__all__ = ["Connection"]

log = get_logger("atlasd")

# What the command table says about dispatch (see Command.conn), as name sets for the hot path:
_NO_AUTH = TABLE.names_with("no_auth")             # run before AUTH
_SUBSCRIBED_OK = TABLE.names_with("subscribed_ok")  # the only ones a RESP2 subscriber may send
_MULTI_NOW = TABLE.names_with("multi_control")      # inside MULTI they run at once instead of being queued
_NO_MULTI = TABLE.names_with("no_multi")            # refused inside MULTI

# Failed AUTH: the connection's next read waits this long, doubled per failure up to
# the cap, and the last failure allowed closes it (issue 10: no 146,000 guesses a second).
AUTH_DELAY_SECONDS = 0.1
AUTH_DELAY_MAX_SECONDS = 2.0
AUTH_MAX_FAILURES = 10

# A client pipelining faster than replies become durable is paused at this many
# queued replies and resumed when the queue is short again.
_QUEUE_PAUSE = 20_000
_QUEUE_RESUME = 2_000
_PARKED_PAUSE = 1_000  # commands held behind a blocked one before reading pauses
# Commands that may run a Lua script (EXEC: one queued), and so put the server in the busy state.
_MAY_SCRIPT = frozenset({b"eval", b"evalsha", b"eval_ro", b"evalsha_ro", b"fcall", b"fcall_ro", b"exec"})

_DENIED = (
    "DENIED ATLAS is running in protected mode because no password is set (atlasd --requirepass). "
    "In this mode connections are only accepted from the loopback interface and the unix socket. "
    "To connect from other hosts, set a password (--requirepass or `CONFIG SET requirepass` from a "
    "local client) or, if you know what you are doing, disable protected mode "
    "(`CONFIG SET protected-mode no`, or atlasd.protected_mode: false)."
)
_DENIED_GENERATED = (
    "DENIED ATLAS is running in protected mode because its password was generated (DATA/atlasd.password), "
    "not set. In this mode connections are only accepted from the loopback interface and the unix socket. "
    "To connect from other hosts, set a password (HELIOS_ATLASD__REQUIREPASS, atlasd.requirepass, or "
    "`CONFIG SET requirepass` from a local client) or, if you know what you are doing, disable protected "
    "mode (`CONFIG SET protected-mode no`, or atlasd.protected_mode: false)."
)


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "engine", "id", "transport", "parser", "resp3", "name", "lib_name", "lib_ver",
        "authed", "multi", "multi_error", "watching", "watch_dirty", "channels", "patterns",
        "shard_channels", "special", "closing", "queue", "out", "waiting_seq", "deferred", "read_paused",
        "write_paused", "addr", "laddr", "is_unix", "created", "last_active", "last_cmd", "_durable_cb",
        "net_in", "net_out", "reads", "writes", "sniff", "is_json", "enc", "enc_err", "futures", "auth_failures",
        "auth_retry_at", "auth_paused", "current", "blocked", "parked_rest", "blocks", "tracking", "db",
    )

    def __init__(self, server: AtlasServer, is_unix: bool) -> None:
        self.server = server
        server.accepting += 1  # (until connection_made)
        self.engine = server.engine
        self.id = 0
        self.transport: Any = None
        self.parser: RespParser | JsonLinesParser = RespParser(max_bulk=server.max_bulk)
        self.sniff = True      # the first read decides the protocol: "{" starts JSON lines
        self.is_json = False
        self.enc: Callable[[Any, bool], bytes] = encode  # reply encoder, and the error one
        self.enc_err: Callable[[BaseException | str], bytes] = encode_error
        self.resp3 = False
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.authed = is_unix or not server.requirepass  # the socket's file mode is its password
        self.auth_failures = 0
        self.auth_retry_at = 0.0
        self.auth_paused = False
        if not self.authed:
            self.parser.set_unauthenticated(True, server.max_bulk)
        self.multi: list[list[bytes]] | None = None
        self.multi_error = False
        self.watching: dict[tuple[int, bytes], int | None] = {}   # (db, key) -> its expiry when watched
        self.watch_dirty = False
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()
        self.shard_channels: set[bytes] = set()  # SSUBSCRIBE's, a namespace of their own
        self.special = not self.authed
        self.closing = False
        self.queue: deque[tuple[int, Any]] = deque()  # (seq, bytes | (future, render, resp3))
        self.futures = 0  # entries in `queue` waiting on a future rather than on durability
        self.out: list[bytes] = []
        self.waiting_seq = 0
        self.deferred: tuple[asyncio.Future, Callable[[Any], Any]] | None = None
        self.read_paused = False
        self.write_paused = False
        self.addr = ""
        self.laddr = ""
        self.is_unix = is_unix
        self.created = self.last_active = time.monotonic()
        self.last_cmd = b"NULL"
        self._durable_cb = self._durable
        self.net_in = self.net_out = 0  # added to the server's totals when the connection ends
        self.reads = self.writes = 0    # socket reads and writes: likewise (INFO total_reads_processed)
        self.current: list[bytes] | None = None  # the top-level command running (see blocking.may_block)
        self.blocked: Waiter | None = None       # set while parked by a blocking command
        self.parked_rest: list[list[bytes]] = []  # commands parsed after the blocking one
        self.blocks = blocking.registry(self.engine)
        self.tracking: Tracker | None = None  # set while CLIENT TRACKING is on (tracking.py)
        self.db = 0  # SELECT's database: the engine works in it for this connection's commands

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        server = self.server
        if server.accepting > 0:
            server.accepting -= 1
        self.addr, self.laddr, loopback = _addresses(transport, self.is_unix)
        server.counters.connections += 1
        if server.closing:
            transport.close()
            return
        if server.protected_mode and not loopback and (not server.requirepass or server.password_generated):
            self._refuse(_DENIED_GENERATED if server.requirepass else _DENIED,
                         "protected mode: not a loopback or unix-socket client")
            return
        if len(server.clients) >= server.maxclients:
            self._refuse("ERR max number of clients reached", "maxclients reached")
            return
        server.add_client(self)

    def _refuse(self, text: str, why: str) -> None:
        self.server.counters.rejected += 1
        log.warning("connection refused", addr=self.addr, reason=why)
        self.transport.write(encode_error(text))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.blocked is not None:
            self._unpark()
        self.queue.clear()
        self.futures = 0
        self.deferred = None
        self.server.remove_client(self)

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its requests until it does.
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.read_paused and not self.auth_paused and not self.closing and self.blocked is None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.sniff:
            self._sniffed(data)
        parser = self.parser
        cmds = parser.feed(data)
        self.net_in += len(data)
        self.reads += 1
        if cmds and (self.blocked is not None or self.parked_rest):  # (after those held back)
            self._park_more(cmds)
        elif cmds and self.server.accepting and self.authed and _may_script(cmds):
            self._after_accepts(cmds)
        elif cmds:
            unauthed = not self.authed
            if tracing.state.on:  # one span per batch; off, this one attribute is all tracing costs
                with tracing.use(tracing.command_batch_span(cmds), end_on_exit=True):
                    self._run(cmds)
            else:
                self._run(cmds)
            if unauthed:
                self._run_buffered()  # before AUTH the RESP parser hands out one command at a time
        if parser.error is not None:
            self._protocol_error(parser.error)

    def _run_buffered(self) -> None:
        """Run commands the parser holds back until the one before them ran (AUTH, pipelined)."""
        parser = self.parser
        while not self.closing and not self.auth_paused and parser.error is None and parser.buffered():
            cmds = parser.feed(b"")
            if not cmds:
                return
            self._run(cmds)

    def eof_received(self) -> bool:
        # The client closed its side: still send the replies it is owed, then close.
        if self.queue:
            self.closing = True
            return True
        return False

    def _sniffed(self, data: bytes) -> None:
        """The connection's first bytes decide its protocol: "{" starts JSON lines, anything else RESP."""
        self.sniff = False
        if data[:1] == b"{":
            self._speak_json()

    def _speak_json(self) -> None:
        parser = JsonLinesParser(self.server.max_bulk)
        parser.set_unauthenticated(not self.authed, self.server.max_bulk)
        self.parser = parser
        self.is_json = True
        self.enc = encode_json
        self.enc_err = encode_json_error
        self._update_special()

    # -- the hot path ------------------------------------------------------------------

    def _run(self, cmds: list[list[bytes]]) -> None:
        engine = self.engine
        execute = engine.execute
        lean = engine.lean.get
        pending_seq = engine.pending_seq
        queue = self.queue
        out = self.out
        ctx = engine.ctx
        ctx.conn = self  # also marks "inside this connection's batch" for push()
        top = 0
        # What is durable can only grow while the batch runs (records are written and synced
        # between loop passes): a reply judged against this value at worst waits for a waiter
        # that add_waiter() below then calls at once.
        rel = engine.released_seq
        blocks = self.blocks
        try:
            for i, argv in enumerate(cmds):
                try:
                    self.current = argv
                    if self.special:
                        reply = self._dispatch_special(argv)
                    else:
                        fn = lean(argv[0])
                        reply = MISS if fn is None else fn(argv)
                        if reply is MISS:
                            reply = execute(argv)
                    if type(reply) is Block:
                        self._park(argv, reply, cmds[i + 1:])
                        break
                    if self.deferred is None:
                        # (self.enc, not a local: CLIENT REPLY OFF/SKIP changes it for the commands
                        # pipelined behind it in this very batch)
                        payload: Any = self.enc(reply, self.resp3)
                    else:  # the reply comes later (SAVE, SHUTDOWN): hold its place in the queue
                        fut, render = self.deferred
                        self.deferred = None
                        queue.append((engine.pending_seq(), (fut, render, self.resp3)))
                        self.futures += 1
                        fut.add_done_callback(self._future_done)
                        continue
                except CommandError as e:
                    payload = self.enc_err(e)
                except HeliosError as e:
                    payload = self.enc_err(f"ERR {e}")
                except Exception as e:  # a bug in a handler must not take the connection down
                    log.opt(exception=e).error("command failed", cmd=argv[0][:64].decode(errors="replace"))
                    payload = self.enc_err(f"ERR internal error running '{argv[0][:64].decode(errors='replace')}': "
                                           f"{type(e).__name__}: {e}")
                tracker = self.tracking
                if tracker is not None and tracker.caching and type(argv) is list:
                    tracker.command_done(argv[0], self.multi is not None)
                # The reveal rule (aof_writer.py), the same one the embedded Store keeps: the reply
                # waits for the newest not-yet-durable record it observed (a write its own record).
                seq = pending_seq()
                if blocks.ready or blocks.polled:
                    # Clients blocked on keys this command filled are served now, before anything
                    # else runs; this reply waits for their pops too (both durable, or neither seen).
                    served = blocks.serve()
                    if served > seq:
                        seq = served
                if seq > rel:
                    queue.append((seq, payload))
                    if seq > top:
                        top = seq
                elif queue:
                    queue.append((0, payload))
                else:
                    out.append(payload)
                if tracker is not None and tracker.own:  # (its own write's invalidations: after the reply)
                    engine.tracking.send_own(tracker)
                if self.closing:
                    break
        finally:
            ctx.conn = None
            self.current = None
        self.last_cmd = cmds[-1][0]
        self.last_active = self.server.now  # a clock the server ticks: idle time in whole seconds
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.net_out += len(data)
            self.writes += 1
            self.transport.write(data)
        if top > self.waiting_seq:
            self.waiting_seq = top
            engine.add_waiter(top, self._durable_cb)
        if queue:
            if len(queue) > _QUEUE_PAUSE and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            if queue[0][0] == 0 and type(queue[0][1]) is bytes:  # (a write's reply: seq > 0, it waits)
                self._drain()
        elif self.closing:
            self.transport.close()

    def _write(self, data: bytes) -> None:
        self.net_out += len(data)
        self.writes += 1
        self.transport.write(data)

    def _durable(self, error: BaseException | None) -> None:
        """Engine waiter: replies up to some seq are durable (or, with `error`, undone)."""
        if error is not None:
            # The engine undid every record above the durable point and reuses their seqs.
            rel = self.engine.released_seq
            text = self.enc_err(error)
            items = [(0, text) if seq > rel else (seq, p) for seq, p in self.queue]
            errors = self.engine.stats.commands.errors
            for seq, _ in self.queue:  # (each reply the failed write took becomes this error)
                if seq > rel:
                    errors.add(str(error))
            self.queue.clear()
            self.queue.extend(items)
            self.waiting_seq = 0
            self.futures = sum(type(p) is not bytes for _, p in items)
        self._drain()

    def _future_done(self, fut: asyncio.Future) -> None:
        self._drain()

    def _drain(self) -> None:
        """Write the queue's head up to the first reply still waiting (durability or a future)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        queue = self.queue
        rel = self.engine.released_seq
        if queue and not self.read_paused and not self.closing:
            # The common cases without the loop below: one reply owed (no pipelining), or
            # only replies to writes that are all durable now (no future among them; every
            # seq queued is at most waiting_seq).
            if len(queue) == 1:
                seq, payload = queue[0]
                if type(payload) is bytes:
                    if seq <= rel:
                        queue.clear()
                        self.net_out += len(payload)
                        self.writes += 1
                        transport.write(payload)
                    return
            elif not self.futures and self.waiting_seq <= rel:
                data = b"".join([p for _, p in queue])
                queue.clear()
                self.net_out += len(data)
                self.writes += 1
                transport.write(data)
                return
        parts = []
        while queue:
            seq, payload = queue[0]
            if seq > rel:
                break
            if type(payload) is not bytes:
                fut, render, resp3 = payload
                if not fut.done():
                    break
                error = _future_error(fut)
                if error is not None:  # (SAVE's, SHUTDOWN's failure)
                    self.engine.stats.commands.errors.add(error)
                payload = _render_future(fut, render, resp3, self.enc, self.enc_err)
                self.futures -= 1
                if payload is None:  # e.g. SHUTDOWN went ahead: nothing to say
                    queue.popleft()
                    continue
            queue.popleft()
            parts.append(payload)
        if parts:
            self._write(parts[0] if len(parts) == 1 else b"".join(parts))
        if self.read_paused and len(queue) < _QUEUE_RESUME:
            self.read_paused = False
            if not self.write_paused and not self.auth_paused and self.blocked is None:
                self.transport.resume_reading()
        if not queue and self.closing:
            self.transport.close()

    def idle(self) -> bool:
        """No reply owed except ones waiting on a future (used by shutdown)."""
        q = self.queue
        return not q or (type(q[0][1]) is not bytes and not q[0][1][0].done())

    # -- blocking commands (blocking.py) -----------------------------------------------

    def _park(self, argv: list[bytes], block: Block, rest: list[list[bytes]]) -> None:
        """Stop reading and wait on `block.keys`; `rest` runs once the blocked command has its reply."""
        w = self.blocks.park(self, argv, block)
        self.blocked = w
        self.parked_rest = rest
        if block.deadline_ms:
            delay = max(block.deadline_ms - self.engine.clock(), 0) / 1000
            w.timer = asyncio.get_running_loop().call_later(delay, self._block_timeout)

    def _park_more(self, cmds: list[list[bytes]]) -> None:
        """Commands that arrive while parked wait too.  Reading goes on (as in Redis), so a client
        that hangs up stops waiting at once; one that floods is paused until its reply."""
        self.parked_rest.extend(cmds)
        if len(self.parked_rest) > _PARKED_PAUSE:
            self.transport.pause_reading()

    def _unpark(self) -> None:
        w = self.blocked
        if w is None:
            return
        self.blocked = None
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        self.blocks.remove(w)

    def serve_blocked(self, w: Waiter) -> int | None:
        """A key `w` waits on became ready: run its command again, without blocking.

        Returns the seq its reply waits for, or None when there was still nothing to pop.
        Runs inside another connection's batch (the writer's): the engine context is lent.
        """
        if self.closing or self.transport is None or self.transport.is_closing():
            self._unpark()  # going away: it must not take an item nobody would receive
            return 0
        engine = self.engine
        ctx = engine.ctx
        lender = ctx.conn
        ctx.conn = self
        engine.retrying = True  # (MONITOR showed the command when it blocked)
        try:
            reply = engine.execute(w.argv)
            if reply is None or reply is NULL_ARRAY:
                return None
            payload = self.enc(reply, self.resp3)
        except CommandError as e:
            payload = self.enc_err(e)
        except HeliosError as e:
            payload = self.enc_err(f"ERR {e}")
        finally:
            engine.retrying = False
            ctx.conn = lender
        seq = engine.pending_seq()
        self._unpark()
        self._deliver(payload, seq)
        asyncio.get_running_loop().call_soon(self._resume_after_block)
        return seq

    def _block_timeout(self) -> None:
        w = self.blocked
        if w is None:
            return
        w.timer = None
        # The nil says the keys were empty: it waits for what it reveals, as a read would.
        pending = self.engine.ctx.pending
        seq = max([pending.get(k, 0) for k in w.keys], default=0)
        self.engine.ran(w.argv, 0, False)  # (counted once, as Redis: when it timed out)
        self._unpark()
        self._deliver(self.enc(NULL_ARRAY if w.timeout_reply is None else w.timeout_reply, self.resp3), seq)
        self._resume_after_block()

    def unblock(self, error: bool) -> bool:
        """CLIENT UNBLOCK: end the wait now, with the timeout's nil or (error) Redis's UNBLOCKED error."""
        w = self.blocked
        if w is None:
            return False
        self.engine.ran(w.argv, 0, error)
        self._unpark()
        payload = (self.enc_err(self._error("UNBLOCKED client unblocked via CLIENT UNBLOCK")) if error
                   else self.enc(NULL_ARRAY if w.timeout_reply is None else w.timeout_reply, self.resp3))
        self._deliver(payload, 0)
        asyncio.get_running_loop().call_soon(self._resume_after_block)
        return True

    def _deliver(self, payload: bytes, seq: int) -> None:
        """A reply produced outside this connection's own batch, kept in order and behind durability."""
        if self.closing or self.transport is None:
            return
        queue = self.queue
        if seq > self.engine.released_seq:
            queue.append((seq, payload))
            if seq > self.waiting_seq:
                self.waiting_seq = seq
                self.engine.add_waiter(seq, self._durable_cb)
        elif queue:
            queue.append((0, payload))
            self._drain()
        else:
            self._write(payload)

    def _after_accepts(self, cmds: list[list[bytes]]) -> None:
        """Run `cmds`, which may start a script, one loop step later.  uvloop calls connection_made
        one step after it accepts a connection; a script that went busy in between would leave that
        client unserved until the script ended (the busy server serves clients and the listening
        sockets' backlog, not a connection the loop holds and has not handed over).  Run after those
        calls, the script finds them clients, as Redis, which makes a client as it accepts."""
        self.parked_rest = list(cmds)  # (what arrives meanwhile queues behind them: _park_more)
        asyncio.get_running_loop().call_soon(self._resume_after_block)

    def _resume_after_block(self) -> None:
        """Run the commands that arrived behind the blocking one, then read again."""
        if self.closing or self.blocked is not None or self.transport is None or self.transport.is_closing():
            return
        rest, self.parked_rest = self.parked_rest, []
        if rest:
            self._run(rest)
            if self.blocked is not None:
                return
        if not (self.read_paused or self.write_paused or self.auth_paused or self.closing):
            self.transport.resume_reading()

    # -- special dispatch: not authenticated, MULTI, RESP2 subscribed ------------------

    def _dispatch_special(self, argv: list[bytes]) -> Any:
        if type(argv) is not list:  # a JSON line that is no plain command
            return self._json_special(argv)
        name = argv[0].lower()
        if not self.authed and name not in _NO_AUTH:
            # Redis 7.0's processCommand refuses an unknown command or subcommand and a wrong arity
            # before it asks for authentication (it shows no more than the command table, as Redis
            # does); nothing runs either way.
            raise self._table_refusal(argv) or self._reject(argv, NOAUTH)
        if self.multi is not None and name not in _MULTI_NOW:
            return self._queue_multi(name, argv)
        if self.multi is not None:
            refusal = self._table_refusal(argv)  # (EXEC x, DISCARD x, MULTI x: refused, EXEC aborts)
            if refusal is not None:
                self._flag_multi()
                raise refusal
            if name == b"exec":
                return self._timed(argv, self._exec)
            if name == b"discard":
                return self._timed(argv, self._discard)
        not_subscribed = self.subscribed_refusal(name, argv)
        if not_subscribed is not None:
            raise self.engine.reject(argv, not_subscribed)
        return self.engine.execute(argv)

    def subscribed_refusal(self, name: bytes, argv: list[bytes] | None = None) -> str | None:
        """Redis's refusal of a command a RESP2 subscriber may not send (None: it may), naming a
        container's subcommand as Redis does ('client|list')."""
        if self.subscribed and not self.resp3 and not self.is_json and name not in _SUBSCRIBED_OK:
            shown = name.decode(errors="replace")
            subs = BY_CONTAINER.get(shown) if argv is not None and len(argv) > 1 else None
            found = find_sub(subs, argv[1]) if subs is not None and argv is not None else None
            if found is not None:
                shown = found[0]
            return (f"ERR Can't execute '{shown}': only (P|S)SUBSCRIBE / "
                    f"(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
        return None

    def _timed(self, argv: list[bytes], run: Callable[[], Any]) -> Any:
        """EXEC or DISCARD, which this connection runs itself inside MULTI: counted in INFO
        commandstats (EXEC's time holds its commands') and shown to MONITOR after the commands
        EXEC ran, as Redis does."""
        failed = True
        t0 = time.perf_counter_ns()
        try:
            reply = run()
            failed = False
        finally:
            self.engine.ran(argv, time.perf_counter_ns() - t0, failed, self)
        return reply

    def _discard(self) -> Any:
        self.end_multi()
        self.server.unwatch(self)
        return OK

    def _json_special(self, item: list[bytes]) -> Any:
        if type(item) is JsonBad:
            self._flag_multi()
            raise self._error(item.error)
        if not self.authed:
            raise self._error(NOAUTH)
        if self.multi is not None:
            self.multi_error = True
            raise self._error("ERR MULTI with ops inside MULTI is not allowed")
        assert type(item) is JsonBatch
        return self._run_batch(item.ops)

    def _run_batch(self, queued: list[list[bytes]]) -> list[Any]:
        """Run `queued` as one atomic AOF record; each command's reply or error, as EXEC gives them."""
        engine = self.engine
        results: list[Any] = []
        with engine.batch():
            for argv in queued:
                if argv[0].lower() in _NO_MULTI or argv[0].lower() in _MULTI_NOW:
                    results.append(engine.reject(argv, "ERR Command not allowed inside a transaction"))
                    continue
                try:
                    reply = engine.execute(argv)
                    if isinstance(reply, CommandError):  # a script's error, returned (not raised) inside MULTI
                        engine.returned_error(argv, reply)
                    results.append(reply)
                except CommandError as e:
                    results.append(e)
                except HeliosError as e:
                    results.append(CommandError(f"ERR {e}"))
        return results

    def _queue_multi(self, name: bytes, argv: list[bytes]) -> Any:
        """Queue a command, or refuse it as Redis does before queueing (then EXEC aborts): an unknown
        command or subcommand, a wrong arity (a container's or its subcommand's), a no_multi one."""
        refusal = self._table_refusal(argv)
        if refusal is None and name in _NO_MULTI:
            refusal = self.engine.reject(argv, "ERR Command not allowed inside a transaction")
        if refusal is not None:
            self.multi_error = True
            raise refusal
        assert self.multi is not None
        self.multi.append(argv)
        return QUEUED

    def _table_refusal(self, argv: list[bytes]) -> CommandError | None:
        """Redis 7.0's first refusals, from the command table alone (processCommand's lookup and arity
        check, before authentication and MULTI's queueing): an unknown command or subcommand, a wrong
        arity (a container's or its subcommand's).  Counted, and returned; None if there is none."""
        cmd = TABLE.get(argv[0])
        if cmd is None:
            return self._reject(argv, unknown_command(argv))
        n = cmd.arity
        if (n > 0 and len(argv) != n) or (n < 0 and len(argv) < -n):
            # (the container's arity: counted under its own name)
            return self._reject(argv[:1], f"ERR wrong number of arguments for '{cmd.name}' command")
        refusal = self.engine.queue_refusal(cmd, argv)
        return None if refusal is None else self._reject(argv, refusal)

    def _reject(self, argv: list[bytes], error: CommandError | str) -> CommandError:
        """`Engine.reject`, except that a refused EXEC aborts the transaction, as Redis's rejectCommand
        does (execCommandAbort): MULTI ends, the keys are unwatched, and the reply is EXECABORT with
        the refusal's text, its ERR dropped (counted in INFO errorstats as EXECABORT)."""
        if argv[0].lower() != b"exec":
            return self.engine.reject(argv, error)
        self.end_multi()
        self.server.unwatch(self)
        return self.engine.reject(argv, exec_abort(error))

    def _error(self, text: str) -> CommandError:
        """An error reply made here, not by a command the engine ran: counted in INFO errorstats."""
        self.engine.stats.commands.errors.add(text)
        return CommandError(text)

    def _flag_multi(self) -> None:
        if self.multi is not None:
            self.multi_error = True

    def _exec(self) -> Any:
        queued, failed = self.multi or [], self.multi_error
        self.end_multi()
        dirty = self.watch_dirty or self.server.watch_expired(self)
        self.server.unwatch(self)
        if failed:
            raise self._error("EXECABORT Transaction discarded because of previous errors.")
        if dirty:
            return NULL_ARRAY
        # One batch: every effect of the transaction becomes one atomic AOF record.
        return self._run_batch(queued)

    # -- state changes used by the command handlers ------------------------------------

    def _update_special(self) -> None:
        self.special = (not self.authed or self.multi is not None or self.is_json
                        or (not self.resp3 and self.subscribed))

    @property
    def subscribed(self) -> bool:
        """Redis's CLIENT_PUBSUB: subscribed to a channel, a pattern or a shard channel."""
        return bool(self.channels or self.patterns or self.shard_channels)

    def set_authed(self, authed: bool) -> None:
        self.authed = authed
        self.parser.set_unauthenticated(not authed, self.server.max_bulk)
        self._update_special()

    def set_resp3(self, on: bool) -> None:
        self.resp3 = on
        self._update_special()

    def begin_multi(self) -> None:
        self.multi = []
        self.multi_error = False
        self._update_special()

    def end_multi(self) -> None:
        self.multi = None
        self.multi_error = False
        self._update_special()

    def subscriptions_changed(self) -> None:
        self._update_special()

    def defer(self, fut: asyncio.Future, render: Callable[[Any], Any]) -> None:
        """The running command's reply is `render(fut.result())`, sent in order once `fut` is done."""
        self.deferred = (fut, render)

    def reset(self) -> None:
        server = self.server
        self.end_multi()
        server.unwatch(self)
        server.unsubscribe(self, [], pattern=False)
        server.unsubscribe(self, [], pattern=True)
        server.unsubscribe(self, [], shard=True)
        self.engine.tracking.disable(self)
        self.name = b""
        self.resp3 = False
        self.db = 0
        self.engine.conn_db_changed(self)
        self.set_authed(self.is_unix or not server.requirepass)

    def try_auth(self, user: bytes, password: bytes) -> bool:
        """AUTH's check, slowed after failures: see AUTH_DELAY_SECONDS."""
        now = time.monotonic()
        if not self.server.auth_allowed():
            self._auth_refused(now)
            raise CommandError("ERR too many failed AUTH attempts on this server in the last second; "
                               "try again shortly (local tools can use the unix socket, which needs no AUTH)")
        if self.auth_failures and now < self.auth_retry_at:
            ok = False  # pipelined into the wait: refused without looking
        else:
            ok = check_password(self.server.requirepass, user, password)
        if ok:
            self.auth_failures = 0
            return True
        self._auth_refused(now)
        self.server.auth_failed(self)
        return False

    def _auth_refused(self, now: float) -> None:
        """A failed AUTH on this connection: slow its next read, or close it after the last one."""
        self.auth_failures += 1
        if self.auth_failures >= AUTH_MAX_FAILURES:
            self.closing = True  # the error reply goes out, then the connection closes
            return
        delay = min(AUTH_DELAY_SECONDS * 2 ** (self.auth_failures - 1), AUTH_DELAY_MAX_SECONDS)
        self.auth_retry_at = now + delay
        if not self.auth_paused and self.transport is not None:
            self.auth_paused = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(delay, self._auth_wait_over)

    def _auth_wait_over(self) -> None:
        self.auth_paused = False
        self.auth_retry_at = 0.0  # the loop's timer may fire a hair before monotonic() reaches it
        if self.closing or self.transport.is_closing() or self.blocked is not None:
            return
        self._run_buffered()
        if self.parser.error is not None:
            self._protocol_error(self.parser.error)
        elif not (self.read_paused or self.write_paused or self.auth_paused):
            self.transport.resume_reading()

    def push(self, payload: bytes) -> None:
        """Send an out-of-band message (pub/sub) after any replies already owed."""
        if self.closing:
            return
        if self.queue:
            self.queue.append((0, payload))
        elif self.engine.ctx.conn is self:  # inside our own batch: after the replies gathered so far
            self.out.append(payload)
        else:
            self._write(payload)
        limit = self.server.pubsub_limit
        if limit and self.transport.get_write_buffer_size() > limit:
            log.warning("closing a subscriber that does not read its messages", id=self.id, addr=self.addr,
                        buffered=self.transport.get_write_buffer_size())
            self.kill()

    def kill(self) -> None:
        self.closing = True
        self.queue.clear()
        self.futures = 0
        self.transport.abort()

    def close_after_replies(self) -> None:
        """Stop reading; close once every reply owed is written (graceful shutdown)."""
        self.closing = True
        self.transport.pause_reading()
        if not self.queue:
            self.transport.close()

    def _protocol_error(self, text: str) -> None:
        if text == QUERY_BUFFER_EXCEEDED:
            log.warning("closing a client whose query buffer outgrew the limit", id=self.id, addr=self.addr)
            self.kill()
            return
        log.debug("protocol error", id=self.id, addr=self.addr, error=text)
        payload = self.enc_err(self._error(text))
        self.closing = True
        self.transport.pause_reading()
        if self.queue:
            self.queue.append((0, payload))
            self._drain()
        else:
            self._write(payload)
            self.transport.close()


def _future_error(fut: asyncio.Future) -> str | None:
    """The error a deferred reply's future ended with, as the client is told it (None: no error)."""
    if fut.cancelled():
        return "ERR cancelled"
    exc = fut.exception()
    if exc is None:
        return None
    text = str(exc)
    head = text.split(" ", 1)[0]
    return text if head.isupper() and head.isalpha() else f"ERR {text}"


def _render_future(fut: asyncio.Future, render: Callable[[Any], Any], resp3: bool,
                   enc: Callable[[Any, bool], bytes], enc_err: Callable[[BaseException | str], bytes]) -> bytes | None:
    error = _future_error(fut)
    if error is not None:
        return enc_err(error)
    reply = render(fut.result())
    return None if reply is None else enc(reply, resp3)


def _fd(transport: Any) -> int:
    sock = transport.get_extra_info("socket") if transport is not None else None
    try:
        return sock.fileno() if sock is not None else -1
    except (OSError, ValueError):
        return -1


def _addresses(transport: asyncio.BaseTransport, is_unix: bool) -> tuple[str, str, bool]:
    """(addr, laddr, is_local) as CLIENT LIST shows them; unix-socket clients count as local."""
    if is_unix:
        path = transport.get_extra_info("sockname") or ""
        return f"{path}:0", f"{path}:0", True
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    addr = _fmt(peer)
    laddr = _fmt(local)
    loopback = False
    if peer:
        host = peer[0]
        if host.startswith("::ffff:"):
            host = host[7:]
        loopback = host == "::1" or host.startswith("127.")
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        loopback = True
    return addr, laddr, loopback


def _fmt(sockaddr: Any) -> str:
    if not sockaddr:
        return ""
    if isinstance(sockaddr, tuple):
        host, port = sockaddr[0], sockaddr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(sockaddr)


def _may_script(cmds: list[Any]) -> bool:
    return any(type(argv) is list and argv[0].lower() in _MAY_SCRIPT for argv in cmds)
