"""The keyspace: keys (bytes) to values, with absolute expiry times.

A value is bytes (a string), a ZSet, a dict[bytes, bytes] (a hash) or a
set[bytes] (a set); commands tell them apart by exact type (`type(v) is dict`),
and a hash or set is never left empty (the effects delete the key instead).

It knows nothing of commands, files or clocks: callers pass `now_ms`.  Expiry
is tracked twice on purpose: `expires` (key -> ms) is the truth, and a heap of
(ms, key) lets the active cycle find due keys without scanning.  Heap entries
go stale when a key's expiry changes; they are skipped when popped, and the
heap is rebuilt when stale entries outnumber live ones, so its size stays
within a constant factor of `expires`.

It also holds the one piece of server state that is not keys but persists with
them: the function libraries (FUNCTION LOAD), library name -> code.  FLUSHALL
leaves them, as in Redis; `functions_version` changes whenever they do, so the
Lua runtime (functions.py) knows when to register them again.  They are server
state, not a database's: every database's keyspace (databases.py) reads and
writes the libraries of database 0's, its `root`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedList

from helios_core.atlas.zset import ZSet

__all__ = ["Keyspace", "Value"]

Value = bytes | ZSet | dict[bytes, bytes] | set[bytes]


class Keyspace:
    __slots__ = ("data", "expires", "access", "_heap", "_index", "_functions", "_functions_version", "root", "dbs")

    def __init__(self, root: Keyspace | None = None, dbs: Any = None) -> None:
        self.data: dict[bytes, Value] = {}
        self.expires: dict[bytes, int] = {}
        # key -> (last access ms, LFU counter), recorded under an LRU/LFU maxmemory policy only
        # (evict.py); an entry goes with its key, as Redis keeps it on the key's object.
        self.access: dict[bytes, tuple[int, int]] = {}
        self._heap: list[tuple[int, bytes]] = []
        # Sorted key index for SCAN/KEYS/prefix scans: built on first use, then maintained.
        self._index: SortedList | None = None
        self._functions: dict[bytes, bytes] = {}
        self._functions_version = 0
        self.root: Keyspace = root if root is not None else self  # the keyspace holding the libraries
        self.dbs: Any = dbs  # the Databases this keyspace is one of (None: a lone keyspace)

    @property
    def functions(self) -> dict[bytes, bytes]:
        return self.root._functions

    @property
    def functions_version(self) -> int:
        return self.root._functions_version

    def __len__(self) -> int:
        return len(self.data)

    # -- raw access (no expiry check) ------------------------------------------------

    def raw_get(self, key: bytes) -> Value | None:
        return self.data.get(key)

    def is_expired(self, key: bytes, now_ms: int) -> bool:
        exp = self.expires.get(key)
        return exp is not None and exp <= now_ms

    # -- mutation ----------------------------------------------------------------

    def put(self, key: bytes, value: Value, exp: int | None) -> None:
        data = self.data
        if self._index is not None and key not in data:
            self._index.add(key)
        data[key] = value
        if exp is None:
            if self.expires.pop(key, None) is not None:  # clear_expiry, inlined: every SET passes here
                self._bound_heap()
        else:
            self.set_expiry(key, exp)

    def put_keep_expiry(self, key: bytes, value: Value) -> None:
        if self._index is not None and key not in self.data:
            self._index.add(key)
        self.data[key] = value

    def set_expiry(self, key: bytes, exp: int) -> None:
        if self.expires.get(key) != exp:
            self.expires[key] = exp
            heap = self._heap
            heapq.heappush(heap, (exp, key))
            self._bound_heap()

    def clear_expiry(self, key: bytes) -> None:
        if self.expires.pop(key, None) is not None:
            self._bound_heap()  # its heap entry just went stale

    def remove(self, key: bytes) -> Value | None:
        value = self.data.pop(key, None)
        if value is not None:
            self.clear_expiry(key)
            if self._index is not None:
                self._index.discard(key)
            if self.access:
                self.access.pop(key, None)
        return value

    def clear(self) -> None:
        self.data = {}
        self.expires = {}
        self.access = {}
        self._heap = []
        self._index = None

    def swap_in(self, data: dict[bytes, Value], expires: dict[bytes, int]) -> None:
        """Replace the whole content (used to undo a FLUSHALL and to load snapshots)."""
        self.data = data
        self.expires = expires
        self.access = {}  # (untouched keys count as idle since the policy was set)
        self._index = None
        self._rebuild_heap()

    def swap_with(self, other: Keyspace) -> None:
        """Exchange contents with another database (SWAPDB): each keyspace object stays the one
        database index, so whatever refers to a database by its object still means that index."""
        self.data, other.data = other.data, self.data
        self.expires, other.expires = other.expires, self.expires
        self.access, other.access = other.access, self.access
        self._heap, other._heap = other._heap, self._heap
        self._index, other._index = other._index, self._index

    # -- function libraries ----------------------------------------------------------

    def put_library(self, name: bytes, code: bytes | None) -> None:
        """Store a library's code (None: delete it)."""
        root = self.root
        if code is None:
            root._functions.pop(name, None)
        else:
            root._functions[name] = code
        root._functions_version += 1

    def swap_libraries(self, libraries: dict[bytes, bytes]) -> None:
        """Replace every library (FUNCTION FLUSH, its undo, and loading a snapshot)."""
        root = self.root
        root._functions = libraries
        root._functions_version += 1

    def _bound_heap(self) -> None:
        # Amortised O(1): a rebuild costs len(expires), and the next one needs about
        # half as many pushes or expiry removals first.
        if len(self._heap) > 2 * len(self.expires) + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [(exp, key) for key, exp in self.expires.items()]
        heapq.heapify(self._heap)

    # -- expiry ------------------------------------------------------------------

    def avg_ttl(self, now_ms: int, samples: int = 32) -> int:
        """INFO keyspace's avg_ttl: the mean time to live, in ms, of keys with an expiry, estimated
        from a few random ones (Redis estimates it by sampling too); 0 when none has one."""
        heap, expires = self._heap, self.expires
        if not expires or not heap:
            return 0
        total = n = 0
        for _ in range(samples):
            exp, key = heap[random.randrange(len(heap))]
            if expires.get(key) == exp and exp > now_ms:  # (stale heap entries are skipped)
                total += exp - now_ms
                n += 1
        return total // n if n else 0

    def due_keys(self, now_ms: int, limit: int) -> list[bytes]:
        """Up to `limit` keys whose expiry is <= now_ms, cheapest first; does not remove them."""
        heap, expires = self._heap, self.expires
        out: list[bytes] = []
        while heap and len(out) < limit:
            exp, key = heap[0]
            if exp > now_ms:
                break
            heapq.heappop(heap)
            # An expiry removed and set again to the same time leaves two equal
            # entries; they pop one after the other, so offer the key once.
            if expires.get(key) == exp and (not out or out[-1] != key):
                out.append(key)
        return out

    # -- ordered access ------------------------------------------------------------

    def sorted_keys(self) -> SortedList:
        if self._index is None:
            self._index = SortedList(self.data)
        return self._index

    def keys_from(self, start: bytes, inclusive: bool) -> Iterator[bytes]:
        index = self.sorted_keys()
        keys: Iterator[bytes] = index.irange(minimum=start, inclusive=(inclusive, True))
        return keys
