"""maxmemory: an estimate of the keyspace's size, and eviction by sampling as Redis does.

Memory accounting.  Python gives no cheap "bytes used by this dict", and
RSS moves with the allocator, not with keys, so atlasd keeps an *estimate*:
per key a fixed overhead plus the bytes of its name and value(s), with a
per-element overhead for hashes, sets, sorted sets and lists (the constants
below are measured CPython 3.11 costs, rounded).  `Memory` keeps the total up
to date from the effects (`effect`, called by the engine just before each
one is applied, so it sees the old state): O(1) for strings, O(elements
touched) for containers, O(size) only when a whole container is deleted.
Undone or replayed records are recounted (`recount`, O(keys)).  The estimate
is what `maxmemory` limits and what INFO reports as used_memory_dataset and
MEMORY USAGE answers; used_memory itself stays the process's RSS.

Accounting runs only while maxmemory is set (no cost by default); setting
it counts the keyspace once.

Eviction.  Before a `denyoom` command runs with the estimate above
maxmemory, keys are evicted until it is below (or the policy finds nothing:
the command gets Redis's OOM error).  As in Redis, candidates are sampled
(`maxmemory-samples` at a time) and the best of them, kept in a 16-entry pool
across rounds, goes: idle longest (LRU), least frequently used (LFU, Redis's
logarithmic counter with decay), nearest expiry (volatile-ttl) or any
(random).  `allkeys-*` sample the whole keyspace, `volatile-*` only keys with
a TTL.  Access times are recorded per command key (the command table's key
positions) only under an LRU/LFU policy, in the key's database
(`Keyspace.access`, dropped with the key, swapped by SWAPDB); a key not
touched since the policy was set counts as idle since then.  Evictions are logged DEL effects.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from helios_core.atlas.effects_codec import LIBRARY_CMDS
from helios_core.atlas.hashtype import Hash
from helios_core.atlas.listvalue import List
from helios_core.atlas.streamtype import Stream
from helios_core.atlas.zset import ZSet
from helios_core.digits import plain_int

__all__ = ["Memory", "Evictor", "POLICIES", "estimate", "OOM", "parse_bytes"]

OOM = "OOM command not allowed when used memory > 'maxmemory'."
POLICIES = ("noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu", "allkeys-random",
            "volatile-random", "volatile-ttl")

KEY = 90        # dict slot + bytes object header for the key
STR = 33        # bytes object header
EXPIRY = 70     # entry in `expires` + heap tuple
CONTAINER = 230
HASH_FIELD = 2 * STR + 80
SET_MEMBER = STR + 60
ZSET_MEMBER = STR + 130   # dict entry, float, (score, member) tuple in the SortedList
LIST_ITEM = STR + 8
STREAM_ENTRY = 120        # SortedDict slot, (ms, seq) tuple, the fields list
STREAM_NACK = 150         # a pending entry: NACK object, in the group's and the consumer's PEL
POOL_SIZE = 16    # EVPOOL_SIZE
# Effects whose change `Memory._container` computes from the effect itself (no recount of the key).
_INCREMENTAL = frozenset({"HSET", "HDEL", "SADD", "SREM", "ZADD", "ZREM", "LPUSH", "RPUSH", "LINSERT", "LPOP",
                          "RPOP"})
LFU_LOG_FACTOR = 10
LFU_DECAY_MS = 60_000
LFU_INIT = 5


def parse_bytes(text: str) -> int:
    """Redis's memory notation: 100, 1k (1000), 1kb (1024), 5mb, 2gb; ValueError otherwise."""
    t = text.strip().lower()
    units = {"b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    for suffix in ("kb", "mb", "gb", "k", "m", "g", "b"):
        n = plain_int(t[:-len(suffix)]) if t.endswith(suffix) else None
        if n is not None:
            return n * units[suffix]
    n = plain_int(t)
    if n is not None:
        return n
    raise ValueError("argument must be a memory value")


def value_size(value: Any) -> int:
    t = type(value)
    if t is bytes:
        return STR + len(value)
    if t is Hash or t is dict:
        return CONTAINER + sum(len(f) + len(v) + HASH_FIELD for f, v in value.items())
    if t is set:
        return CONTAINER + sum(len(m) + SET_MEMBER for m in value)
    if t is ZSet:
        return CONTAINER + sum(len(m) + ZSET_MEMBER for m in value.scores)
    if t is List or t is deque:
        return CONTAINER + sum(len(i) + LIST_ITEM for i in value)
    if t is Stream:  # O(groups): the stream keeps its entries' byte count
        size: int = (CONTAINER + value.nbytes + len(value.entries) * STREAM_ENTRY
                     + sum(CONTAINER + len(g.pel) * STREAM_NACK for g in value.groups.values()))
        return size
    return CONTAINER


def estimate(key: bytes, value: Any, has_expiry: bool) -> int:
    """The estimated bytes a key costs (MEMORY USAGE)."""
    return KEY + len(key) + value_size(value) + (EXPIRY if has_expiry else 0)


# Effects after which the estimate is counted again rather than followed key by key.
_WHOLESALE = frozenset({"FLUSHALL", "MULTI", "FLUSHDB", "SWAPDB", "SELECT"})


@dataclass
class Memory:
    """The running estimate of the keyspace's size (see the module doc)."""

    used: int = 0
    # Keys an effect of another kind changed: their old estimate was taken off before it applied,
    # the new one is added by `settle` right after (the engine calls it).
    after: list[bytes] = field(default_factory=list)
    recount_after: bool = False
    dbs: Any = None  # the engine's Databases: a recount counts every database


    def settle(self, data: dict, expires: dict) -> None:
        if self.recount_after:
            self.recount_after = False
            self.after.clear()
            self.recount(data, expires)
            return
        for key in self.after:
            value = data.get(key)
            if value is not None:
                self.used += estimate(key, value, key in expires)
        self.after.clear()

    def recount(self, data: dict, expires: dict) -> None:
        if self.dbs is not None:
            self.used = sum(estimate(k, v, k in ks.expires) for _, ks in self.dbs.made() for k, v in ks.data.items())
        else:
            self.used = sum(estimate(k, v, k in expires) for k, v in data.items())

    def rollback(self, ks: Any, effects: list[tuple], undo: Callable[[], None]) -> None:
        """Run `undo` (which puts back the state before `effects`) and follow it in the estimate."""
        if any(e[0] in _WHOLESALE for e in effects):
            undo()
            self.recount(ks.data, ks.expires)
            return
        keys = {e[1] for e in effects if e[0] not in LIBRARY_CMDS}
        data, expires = ks.data, ks.expires
        self.used -= sum(estimate(k, data[k], k in expires) for k in keys if k in data)
        undo()
        self.used += sum(estimate(k, data[k], k in expires) for k in keys if k in data)

    def effect(self, eff: tuple, data: dict, expires: dict) -> None:
        op = eff[0]
        if op == "MULTI":
            # Nested effects apply one after the other (a later one sees the earlier ones applied):
            # take the keys' estimates off now and add them back once the whole MULTI applied.
            inner = eff[1]
            if any(e[0] in _WHOLESALE for e in inner):
                self.recount_after = True
                return
            keys = {e[1] for e in inner if e[0] not in LIBRARY_CMDS}
            self.used -= sum(estimate(k, data[k], k in expires) for k in keys if k in data)
            self.after.extend(keys)
            return
        if op == "FLUSHALL":
            self.used = 0
            return
        if op == "FLUSHDB" or op == "SWAPDB":
            self.recount_after = True
            return
        if op in LIBRARY_CMDS or op == "SELECT":  # (function libraries are not keys: maxmemory does not count them)
            return
        key = eff[1]
        old = data.get(key)
        d = 0
        if op == "SET":
            value, exp = eff[2], eff[3]
            if old is not None:
                d -= estimate(key, old, key in expires)
            d += estimate(key, value, exp is not None)
        elif op == "DEL":
            if old is not None:
                d -= estimate(key, old, key in expires)
        elif op == "EXPIRE":
            if old is not None and key not in expires:
                d += EXPIRY
        elif op == "PERSIST":
            if old is not None and key in expires:
                d -= EXPIRY
        elif op in _INCREMENTAL:
            d = self._container(op, eff, key, old, expires)
        else:
            # Any other effect (SETRANGE, LSET, LTRIM, ... and effects added later): the key's
            # estimate before, then after (`settle`); O(1) for strings, O(size) for a container.
            if old is not None:
                d -= estimate(key, old, key in expires)
            self.after.append(key)
        self.used += d

    @staticmethod
    def _container(op: str, eff: tuple, key: bytes, old: Any, expires: dict) -> int:
        d = 0
        base = KEY + len(key) + CONTAINER
        if op == "HSET":
            h: Any = old if type(old) is Hash else {}
            d += base if old is None else 0
            for f, v in eff[2]:
                prev = h.get(f)
                d += len(v) - len(prev) if prev is not None else len(f) + len(v) + HASH_FIELD
        elif op == "HDEL" and type(old) is Hash:
            gone = [f for f in set(eff[2]) if f in old]
            d -= sum(len(f) + len(old[f]) + HASH_FIELD for f in gone)
            if len(gone) == len(old):
                d -= base + (EXPIRY if key in expires else 0)
        elif op == "SADD":
            s = old if type(old) is set else set()
            d += base if old is None else 0
            d += sum(len(m) + SET_MEMBER for m in set(eff[2]) if m not in s)
        elif op == "SREM" and type(old) is set:
            gone = [m for m in set(eff[2]) if m in old]
            d -= sum(len(m) + SET_MEMBER for m in gone)
            if len(gone) == len(old):
                d -= base + (EXPIRY if key in expires else 0)
        elif op == "ZADD":
            scores = old.scores if type(old) is ZSet else {}
            d += base if old is None else 0
            d += sum(len(m) + ZSET_MEMBER for m in {m for _, m in eff[2]} if m not in scores)
        elif op == "ZREM" and type(old) is ZSet:
            gone = [m for m in set(eff[2]) if m in old.scores]
            d -= sum(len(m) + ZSET_MEMBER for m in gone)
            if len(gone) == len(old.scores):
                d -= base + (EXPIRY if key in expires else 0)
        elif op in ("LPUSH", "RPUSH", "LINSERT"):
            items = eff[2] if op != "LINSERT" else [eff[3]]
            d += base if old is None else 0
            d += sum(len(i) + LIST_ITEM for i in items)
        elif (op == "LPOP" or op == "RPOP") and type(old) is List:
            n = min(eff[2], len(old))
            gone = list(old)[:n] if op == "LPOP" else list(old)[len(old) - n:]
            d -= sum(len(i) + LIST_ITEM for i in gone)
            if n == len(old):  # emptied: the key goes
                d -= base + (EXPIRY if key in expires else 0)
        return d


@dataclass
class Evictor:
    """The eviction policy's state: settings, access times/frequencies, the candidate pool."""

    maxmemory: int = 0
    policy: str = "noeviction"
    samples: int = 5
    rng: random.Random = field(default_factory=random.Random)
    pool: list[tuple[float, bytes]] = field(default_factory=list)
    since_ms: int = 0  # when the policy was set: untouched keys count as idle since then
    tracks_access: bool = False  # an LRU/LFU policy: the engine records each command's keys (a flag: hot path)
    next_db: int = 0  # the random policies take their key from the databases in turn

    def set_policy(self, policy: str, now_ms: int, keyspaces: Iterable[Any] = ()) -> None:
        """Switch policy; the access data of `keyspaces` (every database's) starts over."""
        if policy != self.policy:
            self.policy = policy
            for ks in keyspaces:
                ks.access = {}
            self.pool.clear()
            self.since_ms = now_ms
            self.tracks_access = policy.endswith(("-lru", "-lfu"))

    def touch(self, access: dict[bytes, tuple[int, int]], key: bytes, now_ms: int) -> None:
        """Record an access to `key` in its database's `access` (Keyspace.access)."""
        prev = access.get(key)
        if prev is None:
            access[key] = (now_ms, LFU_INIT)
            return
        last, counter = prev
        counter = _lfu_decay(counter, last, now_ms)
        if counter < 255:
            p = 1.0 / ((max(counter - LFU_INIT, 0)) * LFU_LOG_FACTOR + 1)
            if self.rng.random() < p:
                counter += 1
        access[key] = (now_ms, counter)

    def last_access(self, ks: Any, key: bytes) -> tuple[int, int]:
        """(last access ms, LFU counter) of `key` in `ks`; a key not touched since the policy was
        set counts as idle since then."""
        found: tuple[int, int] = ks.access.get(key, (self.since_ms, LFU_INIT))
        return found

    def _score(self, key: bytes, ks: Any, now_ms: int) -> float:
        """Higher is a better victim."""
        policy = self.policy
        if policy.endswith("-ttl"):
            return -float(ks.expires.get(key, math.inf))
        if policy.endswith("-random"):
            return 0.0
        last, counter = self.last_access(ks, key)
        if policy.endswith("-lru"):
            return float(now_ms - last)
        return 255.0 - _lfu_decay(counter, last, now_ms)

    def choose_across(self, dbs: list[tuple[int, Any]], now_ms: int) -> tuple[int, bytes] | None:
        """(database, key) to evict next from several databases, as Redis chooses: the random
        policies take a key of the next database (in turn) that has a candidate; the others
        sample each database and take the best sampled key of all.  One database: `choose`."""
        volatile = self.policy.startswith("volatile-")
        live = [(i, ks) for i, ks in dbs if (ks.expires if volatile else ks.data)]
        if len(live) <= 1 or self.policy == "noeviction":
            if not live:
                return None
            key = self.choose(live[0][1], now_ms)
            return None if key is None else (live[0][0], key)
        if self.policy.endswith("-random"):
            self.next_db += 1
            index, ks = live[self.next_db % len(live)]
            return index, self._sample(ks, volatile, 1)[0]
        best: tuple[float, int, bytes] | None = None
        for index, ks in live:
            for key in self._sample(ks, volatile, self.samples):
                score = self._score(key, ks, now_ms)
                if best is None or score > best[0]:
                    best = (score, index, key)
        return None if best is None else (best[1], best[2])

    def choose(self, ks: Any, now_ms: int) -> bytes | None:
        """The key to evict next, or None when the policy has no candidate (noeviction, no TTLs)."""
        policy = self.policy
        if policy == "noeviction":
            return None
        volatile = policy.startswith("volatile-")
        data, expires = ks.data, ks.expires
        if volatile and not expires or not data:
            return None
        if policy.endswith("-random"):
            return self._sample(ks, volatile, 1)[0] if data else None
        pool = [(s, k) for s, k in self.pool if k in data and (not volatile or k in expires)]
        have = {k for _, k in pool}
        for key in self._sample(ks, volatile, self.samples):
            if key not in have:
                have.add(key)
                pool.append((self._score(key, ks, now_ms), key))
        pool.sort(key=lambda sk: sk[0])
        del pool[:-POOL_SIZE]
        if not pool:
            return None
        _, victim = pool.pop()
        self.pool = pool
        return victim

    def _sample(self, ks: Any, volatile: bool, n: int) -> list[bytes]:
        rng = self.rng
        out: list[bytes] = []
        if volatile:
            # The expiry heap is a list: a random live entry is O(1) (stale entries are skipped).
            heap = ks._heap
            expires = ks.expires
            tries = 0
            while heap and len(out) < n and tries < 4 * n + 8:
                tries += 1
                exp, key = heap[rng.randrange(len(heap))]
                if expires.get(key) == exp:
                    out.append(key)
            if not out and expires:
                out.append(next(iter(expires)))
            return out
        index = ks.sorted_keys()
        size = len(index)
        for _ in range(min(n, size)):
            out.append(index[rng.randrange(size)])
        return out

    def touch_command(self, ks: Any, first: int, last: int, step: int, args: list[bytes], now_ms: int) -> None:
        """Record an access to the keys of a command (its table key positions; args without the name)
        in `ks`, the database it ran in.  Only keys that exist are recorded: a record goes with its
        key (Keyspace.remove), so a name looked up but never stored leaves nothing behind."""
        if first <= 0:
            return
        end = last if last >= 0 else len(args) + last + 1
        data, access = ks.data, ks.access
        for key in args[first - 1:end:step]:
            if key in data:
                self.touch(access, key, now_ms)


def _lfu_decay(counter: int, last_ms: int, now_ms: int) -> int:
    periods = (now_ms - last_ms) // LFU_DECAY_MS
    return max(counter - periods, 0) if periods > 0 else counter
