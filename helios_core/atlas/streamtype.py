"""The stream value type (Redis 7.0 streams): entries, consumer groups, pending entries lists.

A `Stream` holds its entries in a SortedDict keyed by `(ms, seq)` ids (each entry a
flat [field, value, ...] list, in the order XADD gave them), the counters Redis
keeps (last id, entries added, max deleted id), its consumer groups (each with a
PEL and consumers) and a model of Redis's listpack nodes: a node takes up to
`NODE_MAX_ENTRIES` appended entries (deleted ones still count) and goes when its
last live entry does.  Approximate trimming (`MAXLEN ~`, `MINID ~`) removes whole
nodes only, so keeping the same node boundaries as Redis gives the same results:
a node also ends where its listpack would reach `NODE_MAX_BYTES`, its size counted
with listpack.c's encodings (integers, strings, back-lengths, the master entry's
shared field names).

Only the stream effects (effects.py) mutate a stream, through the `apply_*`
functions below; each returns an undo callable so a batch whose AOF write fails
is rolled back.  A stream, unlike a list, stays when it empties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sortedcontainers import SortedDict

__all__ = [
    "Stream", "Group", "Consumer", "NACK", "StreamID", "U64", "MAX_ID", "NODE_MAX_ENTRIES", "fmt_id",
    "apply_stream", "STREAM_OPS", "INVALID_READ", "to_plain", "from_plain", "stream_effects",
]

StreamID = tuple[int, int]
U64 = (1 << 64) - 1
MAX_ID: StreamID = (U64, U64)
ZERO: StreamID = (0, 0)
NODE_MAX_ENTRIES = 100  # stream-node-max-entries' default
INVALID_READ = -1       # SCG_INVALID_ENTRIES_READ: a group's entries-read counter is unknown

Undo = Callable[[], None]


def fmt_id(sid: StreamID) -> bytes:
    return b"%d-%d" % sid


class NACK:
    """A pending entry: who has it, when it was last delivered (ms), how many times."""

    __slots__ = ("consumer", "time", "count")

    def __init__(self, consumer: bytes, time: int, count: int) -> None:
        self.consumer = consumer
        self.time = time
        self.count = count


class Consumer:
    __slots__ = ("name", "seen", "pel")

    def __init__(self, name: bytes, seen: int) -> None:
        self.name = name
        self.seen = seen
        self.pel: SortedDict = SortedDict()  # id -> NACK (the same objects as the group's)


class Group:
    __slots__ = ("last_id", "entries_read", "pel", "consumers")

    def __init__(self, last_id: StreamID, entries_read: int) -> None:
        self.last_id = last_id
        self.entries_read = entries_read
        self.pel: SortedDict = SortedDict()   # id -> NACK
        self.consumers: dict[bytes, Consumer] = {}


class Node:
    """One of Redis's listpack nodes, as far as trimming and node splitting can tell: live and total
    entries, last id, the master entry's fields and the listpack's size in bytes (deletions only flag
    entries, so a node's size grows with its appends alone)."""

    __slots__ = ("live", "total", "last", "fields", "nbytes")

    def __init__(self, live: int, total: int, last: StreamID, fields: tuple[bytes, ...] = (),
                 nbytes: int = 0) -> None:
        self.live = live
        self.total = total
        self.last = last
        self.fields = fields
        self.nbytes = nbytes


# -- listpack sizes (Redis's listpack.c encodings), for the 4096-byte node limit ----------------------

def _backlen_size(n: int) -> int:
    return 1 if n <= 127 else 2 if n < 16383 else 3 if n < 2097151 else 4 if n < 268435455 else 5


def _lp_int_size(v: int) -> int:
    if 0 <= v <= 127:
        enc = 1
    elif -4096 <= v <= 4095:
        enc = 2
    elif -(1 << 15) <= v < 1 << 15:
        enc = 3
    elif -(1 << 23) <= v < 1 << 23:
        enc = 4
    elif -(1 << 31) <= v < 1 << 31:
        enc = 5
    else:
        enc = 9
    return enc + 1


def _lp_str_size(s: bytes) -> int:
    """An element as lpAppend stores it: canonical integers as integers, else a string."""
    if 0 < len(s) <= 20 and (s[:1].isdigit() or (s[:1] == b"-" and s[1:2].isdigit())):
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is not None and b"%d" % v == s and -(1 << 63) <= v < 1 << 63:
            return _lp_int_size(v)
    n = len(s)
    enc = 1 + n if n < 64 else 2 + n if n < 4096 else 5 + n
    return enc + _backlen_size(enc)


def _i64(v: int) -> int:
    """A difference of two uint64s as the int64 C stores it."""
    v &= U64
    return v - (1 << 64) if v >= 1 << 63 else v


def _entry_size(sid: StreamID, master: StreamID, fields: list[bytes], same: bool) -> int:
    """flags, ms-diff, seq-diff, [num-fields, field, value ...] or the values alone, lp-count."""
    n = len(fields) // 2
    size = 2 + _lp_int_size(_i64(sid[0] - master[0])) + _lp_int_size(_i64(sid[1] - master[1]))  # flags: 2
    if same:
        size += sum(_lp_str_size(v) for v in fields[1::2])
        lp_count = n + 3
    else:
        size += _lp_int_size(n) + sum(_lp_str_size(x) for x in fields)
        lp_count = 2 * n + 4
    return size + _lp_int_size(lp_count)


def _new_node(sid: StreamID, fields: list[bytes]) -> Node:
    names = tuple(fields[0::2])
    # header (6) and end byte, then the master entry: count, deleted, num-fields, the fields, 0
    master = 7 + 2 + 2 + _lp_int_size(len(names)) + sum(_lp_str_size(f) for f in names) + 2
    return Node(1, 1, sid, names, master + _entry_size(sid, sid, fields, True))


NODE_MAX_BYTES = 4096  # stream-node-max-bytes' default


class Stream:
    __slots__ = ("entries", "last_id", "entries_added", "max_deleted", "groups", "nodes", "nbytes")

    def __init__(self) -> None:
        self.entries: SortedDict = SortedDict()  # id -> [field, value, ...]
        self.nbytes = 0  # the fields' and values' bytes, kept so a memory estimate costs O(1)
        self.last_id: StreamID = ZERO
        self.entries_added = 0
        self.max_deleted: StreamID = ZERO
        self.groups: dict[bytes, Group] = {}
        self.nodes: SortedDict = SortedDict()    # master (first) id -> Node

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def first_id(self) -> StreamID:
        """Redis's recorded first entry id: the first live entry, 0-0 when empty."""
        return self.entries.peekitem(0)[0] if self.entries else ZERO

    def last_entry_id(self) -> StreamID:
        return self.entries.peekitem(-1)[0] if self.entries else ZERO

    def range(self, start: StreamID, end: StreamID, rev: bool = False) -> Any:
        """Entry ids in [start, end], ascending (or descending)."""
        return self.entries.irange(start, end, reverse=rev)

    def node_of(self, sid: StreamID) -> tuple[StreamID, Node] | None:
        i = self.nodes.bisect_right(sid) - 1
        if i < 0:
            return None
        master, node = self.nodes.peekitem(i)
        return master, node

    # -- the counters lag and entries-read are computed from (Redis's t_stream.c) ---------

    def has_tombstones(self, start: StreamID | None) -> bool:
        """streamRangeHasTombstones(start, +inf)."""
        if not self.entries or self.max_deleted == ZERO:
            return False
        if self.first_id > self.max_deleted:
            return False
        return (start or ZERO) <= self.max_deleted

    def estimate_read(self, sid: StreamID) -> int:
        """streamEstimateDistanceFromFirstEverEntry."""
        if not self.entries_added:
            return 0
        if not self.entries and sid <= self.last_id:
            return self.entries_added
        if sid == self.last_id:
            return self.entries_added
        if sid > self.last_id:
            return INVALID_READ
        first = self.first_id
        if self.max_deleted == ZERO or self.max_deleted < first:
            if sid < first:
                return self.entries_added - len(self.entries)
            if sid == first:
                return self.entries_added - len(self.entries) + 1
        return INVALID_READ

    def lag(self, g: Group) -> int | None:
        """streamReplyWithCGLag: None when unknown."""
        if not self.entries_added:
            return 0
        if g.entries_read != INVALID_READ and not self.has_tombstones(g.last_id):
            return self.entries_added - g.entries_read
        read = self.estimate_read(g.last_id)
        return None if read == INVALID_READ else self.entries_added - read


# -- applying the stream effects ---------------------------------------------------------------
# Each takes the stream (None when the key holds no stream) and the effect, and returns
# (the stream to keep at the key or None for no change, an undo callable or None).

def _xadd(s: Stream, eff: tuple) -> Undo:
    _, _, sid, fields = eff
    old = (s.last_id, s.entries_added)
    s.entries[sid] = fields
    s.last_id = sid
    s.entries_added += 1
    size = sum(map(len, fields))
    s.nbytes += size
    node_state: tuple | None = None
    if s.nodes:
        master, node = s.nodes.peekitem(-1)
        # streamAppendItem: a new node once the tail's listpack would reach the byte limit or
        # holds the maximum number of entries (deleted ones count)
        if node.nbytes + size < NODE_MAX_BYTES and node.total < NODE_MAX_ENTRIES:
            node_state = (node, node.live, node.total, node.last, node.nbytes)
            same = tuple(fields[0::2]) == node.fields
            node.live += 1
            node.total += 1
            node.last = sid
            node.nbytes += _entry_size(sid, master, fields, same)
    if node_state is None:
        s.nodes[sid] = _new_node(sid, fields)

    def undo() -> None:
        del s.entries[sid]
        s.nbytes -= size
        s.last_id, s.entries_added = old
        if node_state is None:
            del s.nodes[sid]
        else:
            node_state[0].live, node_state[0].total, node_state[0].last, node_state[0].nbytes = node_state[1:]
    return undo


def _delete_entry(s: Stream, sid: StreamID, gone_nodes: list, touched: list) -> None:
    s.nbytes -= sum(map(len, s.entries.pop(sid)))
    found = s.node_of(sid)
    if found is None:  # pragma: no cover - every entry belongs to a node
        return
    master, node = found
    touched.append((node, node.live))
    node.live -= 1
    if node.live == 0:
        del s.nodes[master]
        gone_nodes.append((master, node))


def _restore_nodes(s: Stream, gone_nodes: list, touched: list) -> None:
    for master, node in gone_nodes:
        s.nodes[master] = node
    for node, live in reversed(touched):
        node.live = live


def _xdel(s: Stream, eff: tuple) -> Undo:
    removed: list[tuple[StreamID, list[bytes]]] = []
    gone: list = []
    touched: list = []
    old_max = s.max_deleted
    for sid in eff[2]:
        fields = s.entries.get(sid)
        if fields is None:
            continue
        removed.append((sid, fields))
        _delete_entry(s, sid, gone, touched)
        if sid > s.max_deleted:
            s.max_deleted = sid

    def undo() -> None:
        _restore_nodes(s, gone, touched)
        for sid, fields in removed:
            s.entries[sid] = fields
            s.nbytes += sum(map(len, fields))
        s.max_deleted = old_max
    return undo


def _xtrim(s: Stream, eff: tuple) -> Undo:
    """Drop the first n live entries: whole nodes, then entries inside the next one (as streamTrim)."""
    n = min(eff[2], len(s.entries))
    removed = [s.entries.popitem(0) for _ in range(n)]
    size = sum(len(x) for _, fields in removed for x in fields)
    s.nbytes -= size
    gone: list = []
    touched: list = []
    left = n
    while left and s.nodes:
        master, node = s.nodes.peekitem(0)
        if node.live <= left:
            left -= node.live
            del s.nodes[master]
            gone.append((master, node))
        else:
            touched.append((node, node.live))
            node.live -= left
            left = 0

    def undo() -> None:
        _restore_nodes(s, gone, touched)
        for sid, fields in removed:
            s.entries[sid] = fields
        s.nbytes += size
    return undo


def _xsetid(s: Stream, eff: tuple) -> Undo:
    _, _, last, added, maxdel = eff
    old = (s.last_id, s.entries_added, s.max_deleted)
    s.last_id, s.entries_added, s.max_deleted = last, added, maxdel

    def undo() -> None:
        s.last_id, s.entries_added, s.max_deleted = old
    return undo


def _xgroup(s: Stream, eff: tuple) -> Undo:
    _, _, name, last, read = eff
    g = s.groups.get(name)
    if g is None:
        s.groups[name] = Group(last, read)

        def drop() -> None:
            s.groups.pop(name, None)
        return drop
    old = (g.last_id, g.entries_read)
    g.last_id, g.entries_read = last, read

    def undo() -> None:
        g.last_id, g.entries_read = old
    return undo


def _xgdel(s: Stream, eff: tuple) -> Undo | None:
    name = eff[2]
    g = s.groups.pop(name, None)
    if g is None:
        return None

    def undo() -> None:
        s.groups[name] = g
    return undo


def _xconsumer(s: Stream, eff: tuple) -> Undo | None:
    _, _, gname, cname, seen = eff
    g = s.groups.get(gname)
    if g is None:
        return None
    c = g.consumers.get(cname)
    if c is None:
        g.consumers[cname] = Consumer(cname, seen)

        def forget() -> None:
            g.consumers.pop(cname, None)
        return forget
    old = c.seen
    c.seen = seen

    def undo() -> None:
        c.seen = old
    return undo


def _xcdel(s: Stream, eff: tuple) -> Undo | None:
    _, _, gname, cname = eff
    g = s.groups.get(gname)
    c = g.consumers.pop(cname, None) if g is not None else None
    if g is None or c is None:
        return None
    for sid in c.pel:
        del g.pel[sid]

    def undo() -> None:
        g.consumers[cname] = c
        g.pel.update(c.pel)
    return undo


def _xnack(s: Stream, eff: tuple) -> Undo | None:
    """Set pending entries to (consumer, delivery time, count), moving them between consumers."""
    _, _, gname, cname, items = eff
    g = s.groups.get(gname)
    if g is None:
        return None
    c = g.consumers.get(cname)
    created = c is None
    if c is None:
        c = g.consumers[cname] = Consumer(cname, items[0][1] if items else 0)
    olds: list[tuple[StreamID, tuple | None]] = []
    for sid, time, count in items:
        nack = g.pel.get(sid)
        if nack is None:
            olds.append((sid, None))
            nack = g.pel[sid] = NACK(cname, time, count)
        else:
            olds.append((sid, (nack.consumer, nack.time, nack.count)))
            if nack.consumer != cname:
                prev = g.consumers.get(nack.consumer)
                if prev is not None:
                    prev.pel.pop(sid, None)
            nack.consumer, nack.time, nack.count = cname, time, count
        c.pel[sid] = nack

    def undo() -> None:
        for sid, old in reversed(olds):
            nack = g.pel[sid]
            c.pel.pop(sid, None)
            if old is None:
                del g.pel[sid]
                continue
            nack.consumer, nack.time, nack.count = old
            prev = g.consumers.get(nack.consumer)
            if prev is not None:
                prev.pel[sid] = nack
        if created:
            g.consumers.pop(cname, None)
    return undo


def _xack(s: Stream, eff: tuple) -> Undo | None:
    _, _, gname, ids = eff
    g = s.groups.get(gname)
    if g is None:
        return None
    removed: list[tuple[StreamID, NACK]] = []
    for sid in ids:
        nack = g.pel.pop(sid, None)
        if nack is None:
            continue
        removed.append((sid, nack))
        c = g.consumers.get(nack.consumer)
        if c is not None:
            c.pel.pop(sid, None)

    def undo() -> None:
        for sid, nack in removed:
            g.pel[sid] = nack
            c = g.consumers.get(nack.consumer)
            if c is not None:
                c.pel[sid] = nack
    return undo


def _xnodes(s: Stream, eff: tuple) -> Undo:
    """Set the node layout (a copied or restored stream keeps its source's boundaries)."""
    old = s.nodes
    s.nodes = SortedDict((master, Node(live, total, last, tuple(names), nbytes))
                         for master, live, total, last, nbytes, names in eff[2])

    def undo() -> None:
        s.nodes = old
    return undo


_APPLY: dict[str, Callable[[Stream, tuple], Undo | None]] = {
    "XADD": _xadd, "XDEL": _xdel, "XTRIM": _xtrim, "XSETID": _xsetid, "XGROUP": _xgroup, "XGDEL": _xgdel,
    "XCONSUMER": _xconsumer, "XCDEL": _xcdel, "XNACK": _xnack, "XACK": _xack, "XNODES": _xnodes,
}
STREAM_OPS = frozenset(_APPLY)


def apply_stream(value: Any, eff: tuple) -> tuple[Stream | None, Undo | None]:
    """Apply one stream effect to `value` (the key's current value).

    Returns (a new Stream the caller must store at the key, or None when the value was
    changed in place or the effect did not apply; the undo callable or None).  XADD and
    XSETID create a stream where the key holds none; the others need one.
    """
    op = eff[0]
    created = None
    if type(value) is not Stream:
        if op != "XADD" and op != "XSETID":
            return None, None
        value = created = Stream()
    undo = _APPLY[op](value, eff)
    return created, (None if created is not None else undo)


# -- whole streams: snapshots and copies ------------------------------------------------------------

def to_plain(s: Stream) -> list:
    """A stream as msgpack-able lists (the snapshot's "X" chunk), node layout included."""
    ids = list(s.entries)
    groups = []
    for name, g in s.groups.items():
        consumers = [[c.name, c.seen, [[sid[0], sid[1], n.time, n.count] for sid, n in c.pel.items()]]
                     for c in g.consumers.values()]
        groups.append([name, g.last_id[0], g.last_id[1], g.entries_read, consumers])
    return [
        [i[0] for i in ids], [i[1] for i in ids], [s.entries[i] for i in ids],
        [s.last_id[0], s.last_id[1], s.entries_added, s.max_deleted[0], s.max_deleted[1]],
        [[m[0], m[1], n.live, n.total, n.last[0], n.last[1], n.nbytes, list(n.fields)] for m, n in s.nodes.items()],
        groups,
    ]


def from_plain(plain: list) -> Stream:
    """The inverse of `to_plain` (ValueError/TypeError/IndexError on a malformed one)."""
    ms, seqs, fields, counters, nodes, groups = plain
    s = Stream()
    s.entries.update(zip(zip(ms, seqs, strict=True), (list(f) for f in fields), strict=True))
    s.nbytes = sum(len(x) for f in fields for x in f)
    s.last_id = (counters[0], counters[1])
    s.entries_added = counters[2]
    s.max_deleted = (counters[3], counters[4])
    for m0, m1, live, total, l0, l1, nbytes, names in nodes:
        s.nodes[(m0, m1)] = Node(live, total, (l0, l1), tuple(names), nbytes)
    for name, l0, l1, read, consumers in groups:
        g = s.groups[name] = Group((l0, l1), read)
        for cname, seen, pel in consumers:
            c = g.consumers[cname] = Consumer(cname, seen)
            for i0, i1, time, count in pel:
                nack = NACK(cname, time, count)
                c.pel[(i0, i1)] = nack
                g.pel[(i0, i1)] = nack
    return s


def stream_effects(key: bytes, s: Stream) -> list[tuple]:
    """Effects that rebuild `s` under `key` (RENAME, COPY): its entries, counters, groups and PELs."""
    out: list[tuple] = [("XADD", key, sid, list(f)) for sid, f in s.entries.items()]
    out.append(("XSETID", key, s.last_id, s.entries_added, s.max_deleted))
    out.append(("XNODES", key, [(m, n.live, n.total, n.last, n.nbytes, list(n.fields)) for m, n in s.nodes.items()]))
    for name, g in s.groups.items():
        out.append(("XGROUP", key, name, g.last_id, g.entries_read))
        for c in g.consumers.values():
            out.append(("XCONSUMER", key, name, c.name, c.seen))
            if c.pel:
                out.append(("XNACK", key, name, c.name, [(sid, n.time, n.count) for sid, n in c.pel.items()]))
    return out
