"""The lean path: a connection's bare SET, GET, HSET, SADD, LPUSH and RPUSH while nothing observes.

Most traffic a cache, a session store or a queue sends is these commands in their plainest form
(`SET k v`, `GET k`, one field, one member, one item).  `Engine.execute` serves every command
through the same steps (the dispatch entry, the arity, the database, MISCONF and the value size,
maxmemory, MONITOR, the handler through `Ctx`, each effect observed, the commit with its hooks,
tracking, keyspace notifications, the reveal rule); on an engine where none of the optional
observers is on, most of those steps do nothing, and their checks cost more than the work itself.

This is a shortcut past the dispatcher, not a second implementation of the commands (DESIGN.md:
one command table): what a write does to the keyspace is the effect it emits, applied by the same
`apply_effect` with the same undo entry and logged by the same `AofWriter.append`, so replay,
snapshots and a failed write's undo cannot tell which path ran.  What is decided here is only
when the shortcut applies and the reply (OK, the value, a count, a length).  INFO
commandstats/latencystats, the slow log and the reveal rule's seq are kept as `execute` keeps them.

`LeanPath.table` maps the usual spellings of the names to functions that return `MISS`, before
touching anything, whenever anything else could matter, and the connection then runs
`Engine.execute`:

- an option or another arity (`SET k v EX 10`, `GET` with no key: the general path's errors);
- anything observing: MONITOR, client tracking, keyspace notifications, memory accounting or an
  LRU/LFU policy (maxmemory), WATCH and the Store's subscriptions (commit hooks and listeners);
- a database other than 0, an open batch (MULTI's), a write refused (MISCONF) or too big;
- a key whose TTL is due (the general path logs its lazy DEL first), a value of another type
  (WRONGTYPE; SET replaces any type), clients parked on the key a push would create.

tests/unit/test_lean_path.py runs the same commands on twin engines, one through the lean path and
one through `Engine.execute` only, and compares every outcome listed above after each command.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from helios_core.atlas.commands.table import OK
from helios_core.atlas.effects import apply_effect
from helios_core.atlas.hashtype import Hash
from helios_core.atlas.listvalue import List

if TYPE_CHECKING:
    from helios_core.atlas.engine import Engine

__all__ = ["MISS", "LeanPath"]

MISS: Any = object()  # "not for the lean path": run Engine.execute
_clock_ns = time.perf_counter_ns


class LeanPath:
    __slots__ = ("engine", "table", "_recs")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        records = engine.stats.commands
        # (INFO commandstats records: CONFIG RESETSTAT zeroes them in place)
        self._recs = {name: records.record_for(name) for name in ("set", "get", "hset", "sadd", "lpush", "rpush")}
        self.table: dict[bytes, Callable[[list[bytes]], Any]] = {}
        for name, fn in (("set", self.set), ("get", self.get), ("hset", self.hset), ("sadd", self.sadd),
                         ("lpush", self.lpush), ("rpush", self.rpush)):
            self.table[name.encode()] = self.table[name.upper().encode()] = fn

    # -- the commands ----------------------------------------------------------------

    def set(self, argv: list[bytes]) -> Any:
        if len(argv) != 3 or not self._writable(argv):
            return MISS
        key = argv[1]
        if self._live(key) is MISS:
            return MISS
        t0 = _clock_ns()
        eff = ("SET", key, argv[2], None)
        undo: list = []
        apply_effect(self.engine.ks, eff, undo)  # (the old value, any type, and its TTL go)
        self._ran("set", argv, _clock_ns() - t0)
        self._commit(key, eff, undo)
        return OK

    def get(self, argv: list[bytes]) -> Any:
        if len(argv) != 2 or not self._readable():
            return MISS
        key = argv[1]
        t0 = _clock_ns()
        value = self._live(key)
        if value is MISS or (value is not None and type(value) is not bytes):
            return MISS
        self.engine.stats.keyspace[value is None] += 1  # (INFO keyspace_hits, or _misses)
        self._ran("get", argv, _clock_ns() - t0)
        self._seen(key)
        return value

    def hset(self, argv: list[bytes]) -> Any:
        if len(argv) != 4 or not self._writable(argv):
            return MISS
        key = argv[1]
        h = self._live(key)
        if h is MISS or (h is not None and type(h) is not Hash):
            return MISS
        t0 = _clock_ns()
        field = argv[2]
        new = 1 if h is None or field not in h else 0
        eff = ("HSET", key, [(field, argv[3])])
        undo: list = []
        apply_effect(self.engine.ks, eff, undo)
        self._ran("hset", argv, _clock_ns() - t0)
        self._commit(key, eff, undo)
        return new

    def sadd(self, argv: list[bytes]) -> Any:
        if len(argv) != 3 or not self._writable(argv):
            return MISS
        key = argv[1]
        s = self._live(key)
        if s is MISS or (s is not None and type(s) is not set):
            return MISS
        t0 = _clock_ns()
        member = argv[2]
        if s is not None and member in s:  # nothing to add: a read of the key, as the general path's
            self._ran("sadd", argv, _clock_ns() - t0)
            self._seen(key)
            return 0
        eff = ("SADD", key, [member])
        undo: list = []
        apply_effect(self.engine.ks, eff, undo)
        self._ran("sadd", argv, _clock_ns() - t0)
        self._commit(key, eff, undo)
        return 1

    def lpush(self, argv: list[bytes]) -> Any:
        return self._push(argv, "LPUSH", "lpush")

    def rpush(self, argv: list[bytes]) -> Any:
        return self._push(argv, "RPUSH", "rpush")

    def _push(self, argv: list[bytes], op: str, name: str) -> Any:
        e = self.engine
        if len(argv) != 3 or not self._writable(argv):
            return MISS
        blocks = e.blocks
        if blocks is not None and blocks.by_key:  # (a new list wakes the clients parked on its key)
            return MISS
        key = argv[1]
        lst = self._live(key)
        if lst is MISS or (lst is not None and type(lst) is not List):
            return MISS
        t0 = _clock_ns()
        eff = (op, key, argv[2:])
        undo: list = []
        apply_effect(e.ks, eff, undo)
        self._ran(name, argv, _clock_ns() - t0)
        self._commit(key, eff, undo)
        return len(e.ks.data[key])

    # -- what they share -------------------------------------------------------------

    def _writable(self, argv: list[bytes]) -> bool:
        """Whether a write may take the lean path (and this connection's commands are database 0's)."""
        e = self.engine
        ev = e.evictor
        if (e.writer.error is not None or e.monitor is not None or e._on_effect is not None or e.commit_hooks
                or e._listeners or e._batch_depth or ev.maxmemory or ev.tracks_access or e.db):
            return False
        limit = e.config.max_value_bytes
        if max(map(len, argv)) > limit:  # (the name too, as the general path measures it)
            return False
        return self._database_0()

    def _readable(self) -> bool:
        e = self.engine
        ev = e.evictor
        if e.monitor is not None or e.tracking.readers or ev.maxmemory or ev.tracks_access or e.db:
            return False
        return self._database_0()

    def _database_0(self) -> bool:
        e = self.engine
        conn = e.ctx.conn
        if conn is not e._db_conn:
            if conn is not None and conn.db:
                return False
            e._db_conn = conn
        return True

    def _live(self, key: bytes) -> Any:
        """The value at `key` (None: absent), or MISS if it expired (the general path logs its DEL)."""
        e = self.engine
        ks = e.ks
        if ks.expires:
            exp = ks.expires.get(key)
            if exp is not None and exp <= e.clock():
                return MISS
        return ks.data.get(key)

    def _ran(self, name: str, argv: list[bytes], took: int) -> None:
        """INFO commandstats and latencystats, and the slow log, as Engine.execute counts a call."""
        rec = self._recs[name]
        rec[0] += 1
        rec[1] += took
        rec[4 + (took * took).bit_length()] += 1
        e = self.engine
        slower_us = e.slowlog.slower_than_us
        if took >= slower_us * 1000 and slower_us >= 0:
            conn = e.ctx.conn
            e.slowlog.maybe_record(argv, took // 1000, e.clock(), conn.addr if conn is not None else "",
                                   conn.name if conn is not None else b"")

    def _commit(self, key: bytes, eff: tuple, undo: list) -> None:
        """Engine._commit of one keyed effect: its record, and the reply waits for it."""
        e = self.engine
        seq = e.writer.append([eff], undo)
        e.snapshots.dirty += 1
        e._reveal_top = seq
        e._pending_keys[key] = seq
        e._reply_seq = seq

    def _seen(self, key: bytes) -> None:
        """A read's reply waits for the newest pending record of its key (or of a FLUSHALL)."""
        e = self.engine
        seen = e._pending_keys.get(key, 0)
        every = e._all_seq
        e._reply_seq = seen if seen > every else every
