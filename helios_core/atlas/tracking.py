"""Server-assisted client-side caching (CLIENT TRACKING), as Redis 7.0 does it.

Default mode: the keys of every read-only command a tracking client runs
(its script's reads too) go into `table` (key -> the clients that read it).
When a committed record changes such a key, each of those clients gets ONE
invalidation and the key is forgotten: it must read the key again to hear of
the next change (Redis's semantics).  A flush (FLUSHALL/FLUSHDB) sends every
tracking client a null invalidation and empties the table.  OPTIN/OPTOUT with
CLIENT CACHING decide per command whether its reads are remembered; NOLOOP
skips the client's own writes.

BCAST mode remembers nothing per client: every key changed under one of the
registered prefixes is gathered per prefix and sent once per loop pass, as
Redis does in beforeSleep (one message per prefix, keys sorted).

Where messages go: a RESP3 client gets `>2 invalidate [keys]`; with REDIRECT
the target gets that push if it speaks RESP3, or, on RESP2, a pub/sub
`message` on `__redis__:invalidate` if it is subscribed to anything.

Durability: the keys a record changed come from the engine's commit hook
(the same one WATCH uses), and their invalidations wait for that record to be
durable, as its reply and keyspace notifications do: a client must not drop
a cached value for a write the disk may still lose.  Because the writer's own
reply waits for the same record and is queued first, a client that writes a
key it tracks sees its reply, then the invalidation (Redis 7.0 does the same).
A record the disk lost still sends its invalidations: the key was forgotten
here, and a needless invalidation is harmless where a missing one is not.

Cost is bounded: `max_keys` (tracking-table-max-keys) caps the table; over
it, keys picked at random are invalidated and forgotten, as Redis's
trackingLimitUsedSlots does (`order` holds the table's keys for an O(1) pick).
Unlike Redis, which forgets lazily, each client's keys are kept in a reverse
index so that turning tracking off, RESET or disconnecting frees them at once.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from helios_core.atlas.commands.keyfind import command_keys
from helios_core.atlas.effects import KEYLESS_CMDS
from helios_core.atlas.resp import Push

if TYPE_CHECKING:
    from helios_core.atlas.commands.table import Command
    from helios_core.atlas.engine import Engine

__all__ = ["Tracker", "Tracking", "DEFAULT_MAX_KEYS"]

Invalidation = tuple["Tracker", "list[bytes] | None"]

DEFAULT_MAX_KEYS = 1_000_000
CHANNEL = b"__redis__:invalidate"
_PUSH_HEAD = b">2\r\n$10\r\ninvalidate\r\n"
_MESSAGE_HEAD = b"*3\r\n$7\r\nmessage\r\n$20\r\n" + CHANNEL + b"\r\n"
_RO_SCRIPTS = frozenset({"eval_ro", "evalsha_ro", "fcall_ro"})
_EVICT_EFFORT = 1000  # most keys invalidated per read when over the cap (after a CONFIG SET lowered it)


class Tracker:
    """One client's tracking state (Connection.tracking while CLIENT TRACKING is on)."""

    __slots__ = ("conn", "redirect", "bcast", "optin", "optout", "noloop", "caching", "broken", "prefixes", "keys",
                 "own")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.redirect = 0
        self.bcast = self.optin = self.optout = self.noloop = False
        self.caching = False  # CLIENT CACHING YES/NO given for the next command
        self.broken = False   # the redirect target went away
        self.prefixes: list[bytes] = []
        self.keys: set[bytes] = set()  # default mode: the keys in the table for this client
        self.own: list[Invalidation] = []  # of its own write, sent right after that write's reply

    def flags(self) -> list[bytes]:
        """CLIENT TRACKINGINFO's flags, in Redis's order."""
        out = [b"on"]
        if self.bcast:
            out.append(b"bcast")
        if self.optin:
            out.append(b"optin")
            if self.caching:
                out.append(b"caching-yes")
        if self.optout:
            out.append(b"optout")
            if self.caching:
                out.append(b"caching-no")
        if self.noloop:
            out.append(b"noloop")
        if self.broken:
            out.append(b"broken_redirect")
        return out

    def command_done(self, name: bytes, in_multi: bool) -> None:
        """A top-level command finished: CLIENT CACHING held for it only (not across CLIENT
        commands or a MULTI's queue), as Redis's resetClient."""
        if not in_multi and name.lower() != b"client":
            self.caching = False


class _Prefix:
    __slots__ = ("trackers", "changed")

    def __init__(self) -> None:
        self.trackers: dict[Tracker, None] = {}  # (ordered: messages go out in a stable order)
        self.changed: dict[bytes, Any] = {}      # key changed this pass -> the connection that changed it


class Tracking:
    """The tracking table of one engine, and the invalidations it sends."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_keys = DEFAULT_MAX_KEYS
        self.table: dict[bytes, set[Tracker]] = {}
        self.order: list[bytes] = []     # the table's keys, for a random pick when over max_keys
        self.slot: dict[bytes, int] = {}  # key -> its index in `order`
        self.items = 0  # (key, client) pairs in the table
        self.prefixes: dict[bytes, _Prefix] = {}
        self.trackers: dict[Tracker, None] = {}
        self.readers = 0  # default-mode trackers: the engine remembers reads only while there are some
        self._bcast_seq = 0
        self._bcast_scheduled = False

    # -- clients turning tracking on and off ------------------------------------------------

    def enable(self, conn: Any, redirect: int, bcast: bool, optin: bool, optout: bool, noloop: bool,
               prefixes: list[bytes]) -> None:
        """CLIENT TRACKING ON, its options already checked (Redis's enableTracking)."""
        t = conn.tracking
        if t is None:
            t = conn.tracking = Tracker(conn)
            self.trackers[t] = None
            self.readers += not bcast  # (a client cannot switch BCAST while tracking: CLIENT TRACKING checks)
        t.redirect = redirect
        t.broken = False
        t.bcast, t.optin, t.optout, t.noloop = bcast, optin, optout, noloop
        if bcast:
            for prefix in prefixes or [b""]:
                p = self.prefixes.get(prefix)
                if p is None:
                    p = self.prefixes[prefix] = _Prefix()
                if t not in p.trackers:
                    p.trackers[t] = None
                    t.prefixes.append(prefix)
        self._changed_clients()

    def disable(self, conn: Any) -> None:
        """CLIENT TRACKING OFF, RESET, or the client went away: forget all it tracked."""
        t = conn.tracking
        if t is None:
            return
        conn.tracking = None
        table = self.table
        for key in t.keys:
            readers = table.get(key)
            if readers is not None:
                readers.discard(t)
                self.items -= 1
                if not readers:
                    del table[key]
                    self._forget(key)
        t.keys = set()
        for prefix in t.prefixes:
            p = self.prefixes.get(prefix)
            if p is not None:
                p.trackers.pop(t, None)
                if not p.trackers:
                    del self.prefixes[prefix]
        del self.trackers[t]
        self.readers -= not t.bcast
        self._changed_clients()

    def _changed_clients(self) -> None:
        """The commit hook is installed while anyone tracks (a flush concerns every tracker)."""
        hooks = self.engine.commit_hooks
        if self.trackers and self.committed not in hooks:
            hooks.append(self.committed)
        elif not self.trackers and self.committed in hooks:
            hooks.remove(self.committed)

    # -- reads ---------------------------------------------------------------------------

    def read(self, conn: Any, cmd: Command, argv: list[bytes]) -> None:
        """A read-only command ran for `conn` (the top-level client, for a script's commands)."""
        t = conn.tracking if conn is not None else None
        if t is None or t.bcast or (t.optin and not t.caching) or (t.optout and t.caching):
            return
        if "pubsub" in cmd.flags or cmd.name in _RO_SCRIPTS:  # (a read-only script: its commands count)
            return
        table = self.table
        for key in command_keys(cmd, argv):
            readers = table.get(key)
            if readers is None:
                readers = table[key] = set()
                self.slot[key] = len(self.order)
                self.order.append(key)
            if t not in readers:
                readers.add(t)
                t.keys.add(key)
                self.items += 1
        if self.max_keys and len(table) > self.max_keys:
            self._shed()

    def _shed(self) -> None:
        """Over tracking-table-max-keys: invalidate random keys until under it (bounded work
        per call; a cap lowered by CONFIG SET is reached over the next reads)."""
        out: list[Invalidation] = []
        table, order = self.table, self.order
        for _ in range(_EVICT_EFFORT):
            if len(table) <= self.max_keys:
                break
            self._invalidate(order[random.randrange(len(order))], None, out)
        # No write to wait for; sent after the replies of the reads running now.
        loop = self.engine._loop
        if loop is not None:
            loop.call_soon(self._send, out)
        else:
            self._send(out)

    # -- writes (the engine's commit hook) ------------------------------------------------

    def committed(self, effects: list[tuple]) -> None:
        """A record was committed: invalidate the keys it changed once it is durable."""
        engine = self.engine
        writer = engine.ctx.conn
        out: list[Invalidation] = []
        self._walk(effects, writer, out)
        if not out:
            return
        if writer is not None and writer.current is not None and writer.tracking is not None:
            # The writer's own invalidations (Redis 7.0's tracking_pending_keys): queued right behind
            # the reply of the command running now (Connection._run), which waits for this record;
            # a waiter would put them behind the replies of the commands pipelined after it.
            own = [item for item in out if item[0].conn is writer and not item[0].redirect]
            if own:
                writer.tracking.own += own
                out = [item for item in out if item[0].conn is not writer or item[0].redirect]
                if not out:
                    return
        engine.add_waiter(engine.seq, lambda error: self._send(out))

    def _walk(self, effects: list[tuple], writer: Any, out: list[Invalidation]) -> None:
        for eff in effects:
            op = eff[0]
            if op == "MULTI":
                self._walk(eff[1], writer, out)
            elif op == "FLUSHALL" or op == "FLUSHDB":
                self._flushed(out)  # (FLUSHDB of any database: every tracking client, as Redis 7.0)
            elif op not in KEYLESS_CMDS:  # (keys by name, whatever their database, as Redis 7.0)
                key = eff[1]
                if self.prefixes:
                    self._changed_under_prefix(key, writer)
                if key in self.table:
                    self._invalidate(key, writer, out)

    def _invalidate(self, key: bytes, writer: Any, out: list[Invalidation]) -> None:
        readers = self.table.pop(key)
        self._forget(key)
        self.items -= len(readers)
        for t in readers:
            t.keys.discard(key)
            if not (t.noloop and t.conn is writer):
                out.append((t, [key]))

    def _flushed(self, out: list[Invalidation]) -> None:
        """Every tracking client hears of a flush (a null), and the table empties."""
        for t in self.trackers:
            out.append((t, None))
            t.keys = set()
        self.table.clear()
        self.order.clear()
        self.slot.clear()
        self.items = 0

    def _forget(self, key: bytes) -> None:
        """`key` left the table: out of `order` too (the last key takes its place)."""
        i = self.slot.pop(key)
        last = self.order.pop()
        if i < len(self.order):  # (it was not the last one)
            self.order[i] = last
            self.slot[last] = i

    def _changed_under_prefix(self, key: bytes, writer: Any) -> None:
        for prefix, p in self.prefixes.items():
            if key.startswith(prefix):
                p.changed[key] = writer
                self._bcast_seq = self.engine.seq
                if not self._bcast_scheduled:
                    loop = self.engine._loop
                    if loop is not None:
                        self._bcast_scheduled = True
                        loop.call_soon(self._broadcast)

    def _broadcast(self) -> None:
        """Once per loop pass: each BCAST client gets the keys changed under each of its prefixes."""
        self._bcast_scheduled = False
        out: list[Invalidation] = []
        for prefix in sorted(self.prefixes):
            p = self.prefixes[prefix]
            if not p.changed:
                continue
            keys = sorted(p.changed)
            for t in p.trackers:
                mine = [k for k in keys if p.changed[k] is not t.conn] if t.noloop else keys
                if mine:
                    out.append((t, mine))
            p.changed = {}
        if out:
            self.engine.add_waiter(self._bcast_seq, lambda error: self._send(out))

    # -- sending -----------------------------------------------------------------------------

    def send_own(self, t: Tracker) -> None:
        """Connection._run placed the reply of `t`'s command: its own invalidations follow it."""
        out, t.own = t.own, []
        self._send(out)

    def _send(self, out: list[Invalidation]) -> None:
        for t, keys in out:
            if t.conn.tracking is t:  # (still tracking: not turned off or gone meanwhile)
                self.send(t, keys)

    @staticmethod
    def send(t: Tracker, keys: list[bytes] | None) -> None:
        """One invalidation message (None: a flush), as Redis's sendTrackingMessage."""
        conn = t.conn
        if keys is None:  # (the null in the tracking client's own protocol, even when redirected)
            body = b"_\r\n" if conn.resp3 else b"$-1\r\n"
        else:
            body = b"*%d\r\n" % len(keys) + b"".join(b"$%d\r\n%s\r\n" % (len(k), k) for k in keys)
        target = conn
        if t.redirect:
            target = conn.server.clients.get(t.redirect)
            if target is None or target.closing:
                t.broken = True
                if conn.resp3:
                    conn.push(b">2\r\n$21\r\ntracking-redir-broken\r\n:%d\r\n" % t.redirect)
                return
        if target.closing:
            return
        if target.is_json:
            if target.subscribed or t.redirect:
                target.push(target.enc(Push([b"message", CHANNEL, keys]), False))
        elif target.resp3:
            target.push(_PUSH_HEAD + body)
        elif t.redirect and target.subscribed:
            target.push(_MESSAGE_HEAD + body)
        # (a RESP2 client without a redirect: nothing can carry the message, as in Redis)

    # -- introspection ---------------------------------------------------------------------

    def info(self) -> dict[str, int]:
        return {"tracking_total_keys": len(self.table), "tracking_total_items": self.items,
                "tracking_total_prefixes": len(self.prefixes)}


def check_prefixes(existing: list[bytes], new: list[bytes]) -> str | None:
    """Redis's checkPrefixCollisionsOrReply: the error when prefixes of one client overlap."""
    def overlap(a: bytes, b: bytes) -> bool:
        n = min(len(a), len(b))
        return a[:n] == b[:n]

    def show(p: bytes) -> str:  # (a C string: up to its first NUL)
        return p.split(b"\0", 1)[0].decode(errors="replace")

    for i, p in enumerate(new):
        for q in existing:
            if overlap(q, p):
                return (f"ERR Prefix '{show(p)}' overlaps with an existing prefix '{show(q)}'. "
                        f"Prefixes for a single client must not overlap.")
        for q in new[i + 1:]:
            if overlap(p, q):
                return (f"ERR Prefix '{show(p)}' overlaps with another provided prefix '{show(q)}'. "
                        f"Prefixes for a single client must not overlap.")
    return None

