"""Clients parked by a blocking command (BLPOP, BRPOP, BLMOVE, BLMPOP, BRPOPLPUSH, XREAD and
XREADGROUP with BLOCK), per engine.

How blocking works, as in Redis 7.0:

1. A blocking command's handler first tries its non-blocking form.  When that
   finds nothing and the command may block (`may_block`: it is the connection's
   own top-level command, not one inside MULTI/EXEC, a JSON batch or a script),
   it returns a `Block` instead of a reply.
2. The connection parks: it stops reading, keeps the commands it had already
   parsed after the blocking one, and registers a `Waiter` on every key, in
   arrival order (FIFO per key), with a timer when the timeout is not 0.
3. A command that turns a missing key into a list calls `signal(ctx, key)`.
   Right after the command that signalled (in the same loop pass, before the
   next command of any client), `Registry.serve()` re-runs each waiting
   client's command on the ready keys, oldest first, until one finds the key
   empty again.  The pop is a write of its own (its own effects and AOF record);
   the caller makes its own reply wait for the newest of those records too, so
   the push and the pops it caused are durable before either reply is seen.
4. A timeout answers the command's nil (`*-1` in RESP2, `_` in RESP3).

The registry knows nothing of sockets: a waiter's `conn` provides
`serve_blocked(waiter) -> seq | None` (None: still nothing to pop).

Keys are waited on in the waiter's database (its connection's SELECT): the
registry's keys are (database, key) pairs, and a write signals the key in
the database it was made in.  SWAPDB makes the keys now present in the two
databases ready (`signal_databases`), as Redis's scanDatabaseForReadyKeys.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # (commands import this module: no import of the command package at run time)
    from helios_core.atlas.commands.table import Ctx

__all__ = ["Block", "Gone", "Waiter", "Registry", "registry", "signal", "signal_databases", "may_block",
           "blocked_count"]


class Gone:
    """A `Block.kind` meaning the opposite: the key is ready when it no longer holds `type` (a
    blocked XREADGROUP gets Redis's "UNBLOCKED the stream key no longer exists" at once when its
    stream is deleted or replaced, and DEL/SET/RENAME do not signal)."""

    __slots__ = ("type",)

    def __init__(self, t: type) -> None:
        self.type = t

    def __eq__(self, other: object) -> bool:
        return type(other) is Gone and other.type is self.type

    def __hash__(self) -> int:
        return hash((Gone, self.type))


class Block:
    """A handler's answer meaning "park this client on `keys` until `deadline_ms` (0: forever)".

    `kind`, when given, is the value type whose appearance makes a key ready without a signal:
    BZPOPMIN and friends wait for a sorted set, and the commands that create one (ZADD,
    ZUNIONSTORE, RENAME, ...) do not signal, so after each command the keys such waiters want
    are looked at (only while someone waits on them)."""

    __slots__ = ("keys", "deadline_ms", "kind", "argv", "reads", "timeout_reply")

    def __init__(self, keys: list[bytes], deadline_ms: int, kind: type | Gone | None = None,
                 argv: list[bytes] | None = None, reads: bool = False, timeout_reply: Any = None) -> None:
        self.keys = list(dict.fromkeys(keys))
        self.deadline_ms = deadline_ms
        self.kind = kind
        # `argv`: the command to run again when woken, if not the one sent (XREAD's `$` becomes the
        # id it stood for when the client parked).  `reads`: a waiter that takes nothing (XREAD), so
        # one that still finds nothing does not stop the others on the key from being served.
        self.argv = argv
        self.reads = reads
        # What the timeout (and CLIENT UNBLOCK without ERROR) answers, if not the nil: WAIT, which
        # parks on no key at all, answers the replicas that acknowledged (0: atlasd has none).
        self.timeout_reply = timeout_reply


class _Parkable(Protocol):
    def serve_blocked(self, waiter: Waiter) -> int | None: ...


class Waiter:
    """One parked command: who, what to re-run, on which keys; `timer` is the connection's."""

    __slots__ = ("conn", "argv", "keys", "deadline_ms", "kind", "reads", "timer", "active", "db", "timeout_reply")

    def __init__(self, conn: _Parkable, argv: list[bytes], block: Block) -> None:
        self.conn = conn
        self.db: int = getattr(conn, "db", 0)
        self.argv = block.argv if block.argv is not None else argv
        self.keys = block.keys
        self.deadline_ms = block.deadline_ms
        self.kind = block.kind
        self.reads = block.reads
        self.timeout_reply = block.timeout_reply
        self.timer: Any = None
        self.active = True


class Registry:
    """Waiters by key (FIFO) and the keys made ready since the last `serve()`."""

    __slots__ = ("by_key", "ready", "count", "kicked", "polled", "dbs", "__weakref__")

    def __init__(self, dbs: Any = None) -> None:
        # Keys are (database, key).
        self.by_key: dict[tuple[int, bytes], deque[Waiter]] = {}
        self.ready: dict[tuple[int, bytes], None] = {}  # an ordered set: served in the order they became ready
        self.count = 0
        self.kicked = False
        # ((database, key), kind) -> waiters looking for it (Block.kind)
        self.polled: dict[tuple[tuple[int, bytes], type | Gone], int] = {}
        self.dbs = dbs  # the databases polled keys are looked up in

    def park(self, conn: _Parkable, argv: list[bytes], block: Block) -> Waiter:
        w = Waiter(conn, argv, block)
        db = w.db
        for name in w.keys:
            key = (db, name)
            self.by_key.setdefault(key, deque()).append(w)
            if w.kind is not None:
                self.polled[(key, w.kind)] = self.polled.get((key, w.kind), 0) + 1
        self.count += 1
        return w

    def remove(self, w: Waiter) -> None:
        """Forget a waiter (served, timed out, or its client went away)."""
        if not w.active:
            return
        w.active = False
        self.count -= 1
        db = w.db
        for name in w.keys:
            key = (db, name)
            if w.kind is not None:
                n = self.polled.get((key, w.kind), 0) - 1
                if n > 0:
                    self.polled[(key, w.kind)] = n
                else:
                    self.polled.pop((key, w.kind), None)
            q = self.by_key.get(key)
            if q is None:
                continue
            try:
                q.remove(w)
            except ValueError:
                pass
            if not q:
                del self.by_key[key]
                self.ready.pop(key, None)

    def signal(self, key: tuple[int, bytes]) -> None:
        if key in self.by_key:
            self.ready[key] = None
            if not self.kicked:
                # A connection serves right after its command; a write from elsewhere (the
                # embedded Store sharing the engine) is served on the next loop turn.
                try:
                    asyncio.get_running_loop().call_soon(self._kick)
                    self.kicked = True
                except RuntimeError:  # no loop: nobody can be parked either
                    pass

    def _kick(self) -> None:
        self.kicked = False
        if self.ready:
            self.serve()

    def serve(self) -> int:
        """Serve waiters on every ready key, oldest first; the newest record seq their replies wait for."""
        top = 0
        ready = self.ready
        if self.polled:
            self._poll()
        while ready:
            key = next(iter(ready))
            del ready[key]
            q = self.by_key.get(key)
            skipped = 0  # readers (XREAD) still waiting, at the head of the queue
            while q and skipped < len(q):
                w = q[skipped]
                seq = w.conn.serve_blocked(w)
                if seq is None:
                    if w.reads:
                        skipped += 1  # (its id is past what arrived: the others may still read)
                        continue
                    break  # the key is empty again: the rest keep waiting
                if w.active:  # (serve_blocked removes it; never loop on the same waiter)
                    self.remove(w)
                if seq > top:
                    top = seq
                q = self.by_key.get(key)
        return top

    def _poll(self) -> None:
        """Polled keys now holding their kind are ready (once per serve(): woken clients never
        create a sorted set, so no second look is needed)."""
        dbs = self.dbs
        for key, kind in list(self.polled):
            db, name = key
            value = dbs[db].data.get(name) if dbs is not None else None
            if (type(value) is not kind.type) if type(kind) is Gone else (type(value) is kind):
                self.ready[key] = None


def registry(engine: Any) -> Registry:
    """The engine's registry (one per engine, created on first use and kept as `engine.blocks`:
    every push that creates a list looks for it, so it is an attribute, not a weak-keyed lookup)."""
    reg: Registry | None = getattr(engine, "blocks", None)
    if reg is None:
        reg = engine.blocks = Registry(getattr(engine, "dbs", None))
    return reg


def signal(ctx: Ctx, key: bytes) -> None:
    """`key` now holds a list (a push created it) or a stream grew (XADD): wake its waiters after
    this command."""
    engine = ctx.engine
    if engine is not None:
        reg = getattr(engine, "blocks", None)
        if reg is not None and reg.by_key:
            reg.signal((engine.db, key))


def signal_databases(ctx: Ctx, indexes: tuple[int, ...]) -> None:
    """Every key waited on in these databases that now holds a value is ready (SWAPDB); a waiter
    that still finds nothing it can take keeps waiting."""
    engine = ctx.engine
    reg = getattr(engine, "blocks", None)
    if reg is None or not reg.by_key:
        return
    dbs = engine.dbs
    for key in list(reg.by_key):
        db, name = key
        if db in indexes and name in dbs[db].data:
            reg.signal(key)


def may_block(ctx: Ctx, name: bytes, nargs: int) -> bool:
    """Whether the running handler is its connection's own top-level command `name` (with `nargs`
    arguments after the name).  Inside MULTI/EXEC, a JSON batch, a script or the embedded Store a
    blocking command acts as its non-blocking form, as in Redis."""
    conn = ctx.conn
    if conn is None:
        return False
    current = getattr(conn, "current", None)
    return current is not None and len(current) == nargs + 1 and current[0].lower() == name


def blocked_count(engine: Any) -> int:
    """Clients parked right now (INFO's blocked_clients)."""
    reg = getattr(engine, "blocks", None)
    return 0 if reg is None else reg.count
