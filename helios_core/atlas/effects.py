"""Effects: the small, idempotent vocabulary every write compiles to.

Commands never touch the keyspace directly; they emit effects, and the same
`apply_effect` runs live and during AOF replay, so replay is deterministic.
Expiry is always absolute (ms since epoch): a relative TTL replayed after
downtime would restart its countdown.

    ("SET", key, value, exp|None)     replace value and expiry
    ("DEL", key)
    ("EXPIRE", key, exp)              absolute ms
    ("PERSIST", key)
    ("ZADD", key, [(score, member)])  create the zset if missing
    ("ZREM", key, [member])           delete the key when it empties
    ("HSET", key, [(field, value)])   create the hash if missing
    ("HDEL", key, [field])            delete the key when it empties
    ("SADD", key, [member])           create the set if missing
    ("SREM", key, [member])           delete the key when it empties
    ("LPUSH", key, [item])            push each item at the head (create the list if missing)
    ("RPUSH", key, [item])            append each item (create the list if missing)
    ("LPOP", key, n) / ("RPOP", key, n)  drop n items from that end; the key goes when it empties
    ("LSET", key, index, value)       index >= 0, inside the list
    ("LINSERT", key, index, value)    insert before position index (0..len)
    ("LREM", key, count, value)       LREM's own rule (deterministic on the same list)
    ("LTRIM", key, left, right)       drop `left` items from the head, `right` from the tail
    ("SETRANGE", key, offset, bytes)  overwrite a string from offset (zero-padded; created without
                                      expiry if missing; the expiry kept): SETRANGE, SETBIT, BITFIELD
    ("ENCODING", key, name)           the hash, set or zset at key is held as `name` (hashtable,
                                      listpack, intset, skiplist) from now on: a rebuilt copy keeps
                                      its source's (RENAME, COPY, MOVE) and a set built as Redis
                                      builds it its own (SPOP, SDIFFSTORE); nothing when the key
                                      holds none of them
    ("ENCODING", key, name, restart)  (live only) a set held as `name` that a restart holds as
                                      `restart`: SPOP's new set, which Redis logs as SREMs of the
                                      old one; its AOF line is ("ENCODING", key, restart)
    ("FLUSHALL",)                     every database (function libraries stay, as in Redis)

Database effects (databases.py).  A record starts in database 0 on replay; SELECT moves the
rest of it (the engine writes one before the effects of a command in another database, so
the records of a connection that never selected hold none, and old records mean db 0):

    ("SELECT", n)                     the effects after it (in this record) are in database n
    ("FLUSHDB",)                      empty the current database
    ("SWAPDB", a, b)                  exchange two databases' contents

Function library effects (server state, no key; functions.py registers what they store):

    ("FLOAD", name, code)             store a library's code (FUNCTION LOAD, RESTORE)
    ("FDEL", name)                    delete a library
    ("FFLUSH",)                       delete every library

Stream effects (streamtype.py applies them; ids are (ms, seq) tuples, written "ms-seq"):

    ("XADD", key, id, [field, value, ...])   append with this id (create the stream if missing)
    ("XDEL", key, [id])                      delete these entries (max-deleted-id follows, as XDEL)
    ("XTRIM", key, n)                        drop the first n entries (MAXLEN/MINID as what went)
    ("XSETID", key, last_id, entries_added, max_deleted_id)  the counters (create the stream if missing)
    ("XGROUP", key, group, last_id, entries_read)             create or set a group
    ("XGDEL", key, group)                    destroy a group
    ("XCONSUMER", key, group, consumer, seen_ms)             create a consumer or set its seen time
    ("XCDEL", key, group, consumer)          delete a consumer and its pending entries
    ("XNACK", key, group, consumer, [(id, delivery_ms, count)])  set pending entries' owner/time/count
    ("XACK", key, group, [id])               drop pending entries
    ("XNODES", key, [(master, live, total, last, bytes, [names])])  the node layout (RENAME, COPY,
                                             RESTORE keep their source's)

List effects are positional, not idempotent: each record is replayed exactly
once after the snapshot it follows, on the same list it was computed against.

`apply_effect` can record an undo log, so a batch whose AOF write fails is
rolled back and memory never gets ahead of disk.  The AOF line codec is in
`effects_codec` (its names are importable from here too, where the AOF reader
and writer have always found them).
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.effects_codec import (
    DB_CMDS,
    KEYLESS_CMDS,
    KNOWN_CMDS,
    LIBRARY_CMDS,
    LIST_CMDS,
    Effect,
    RecordError,
    decode_line,
    encode_record,
)
from helios_core.atlas.hashtype import HASHTABLE, LISTPACK, Hash
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.listvalue import List
from helios_core.atlas.packed import (
    INTSET,
    is_int64,
    keep_restart_encoding,
    keep_set_encoding,
    restart_note,
    set_added,
    set_encoding,
    set_removed,
)
from helios_core.atlas.streamtype import STREAM_OPS, apply_stream
from helios_core.atlas.zset import SKIPLIST, ZSet

__all__ = [
    "Effect", "apply_effect", "undo_effects", "encode_record", "decode_line", "RecordError",
    "effect_keys", "undo_start", "NoSuchDatabase", "KNOWN_CMDS", "LIBRARY_CMDS", "DB_CMDS", "KEYLESS_CMDS",
]



# -- applying -----------------------------------------------------------------------

def apply_effect(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    op = eff[0]
    if op == "SET":
        _, key, value, exp = eff
        if undo is not None:
            undo.append(("put", key, ks.data.get(key), ks.expires.get(key)))
        ks.put(key, value, exp)
    elif op == "DEL":
        key = eff[1]
        if undo is not None:
            undo.append(("put", key, ks.data.get(key), ks.expires.get(key)))
        ks.remove(key)
    elif op == "HSET" or op == "SADD":  # (the common writes first: HSET, SADD, the pushes)
        _apply_add(ks, eff, undo)
    elif op in LIST_CMDS:
        _apply_list(ks, eff, undo)
    elif op == "HDEL" or op == "SREM":
        _apply_remove(ks, eff, undo)
    elif op == "EXPIRE":
        key = eff[1]
        if key in ks.data:
            if undo is not None:
                undo.append(("exp", key, ks.expires.get(key)))
            ks.set_expiry(key, eff[2])
    elif op == "PERSIST":
        key = eff[1]
        if key in ks.data:
            if undo is not None:
                undo.append(("exp", key, ks.expires.get(key)))
            ks.clear_expiry(key)
    elif op == "ZADD":
        _, key, pairs = eff
        z = ks.data.get(key)
        if not isinstance(z, ZSet):
            if undo is not None:
                undo.append(("put", key, z, ks.expires.get(key)))
                undo = None  # the new zset is dropped whole on undo
            z = ZSet()
            ks.put(key, z, None)
        was_skiplist = z.skiplist
        olds = [(member, z.add(member, score)) for score, member in pairs]  # (a listpack may convert)
        if undo is not None:
            undo.append(("zrestore", key, olds))
            if z.skiplist is not was_skiplist:
                undo.append(("xcall", lambda z=z: setattr(z, "skiplist", False)))
    elif op == "ZREM":
        _, key, members = eff
        z = ks.data.get(key)
        if isinstance(z, ZSet):
            olds = [(m, z.remove(m)) for m in members]
            if undo is not None:
                undo.append(("zrestore", key, olds))
            if not z:
                if undo is not None:
                    undo.append(("put", key, z, ks.expires.get(key)))
                ks.remove(key)
    elif op == "SETRANGE":
        _apply_setrange(ks, eff, undo)
    elif op == "ENCODING":
        _apply_encoding(ks, eff, undo)
    elif op in STREAM_OPS:
        _apply_stream(ks, eff, undo)
    elif op == "FLUSHDB" or (op == "FLUSHALL" and ks.dbs is None):
        if undo is not None:
            undo.append(("swap", ks.data, ks.expires))
        ks.clear()
    elif op == "FLUSHALL":
        for _, db in ks.dbs.made():
            if undo is not None:
                undo.append(("swapin", db, db.data, db.expires))
            db.clear()
    elif op == "SWAPDB":
        if undo is not None:
            undo.append(("swapdb", ks.dbs, eff[1], eff[2]))
        _selected(ks, eff[1])
        _selected(ks, eff[2])
        ks.dbs.swap(eff[1], eff[2])
    elif op in LIBRARY_CMDS:
        if op == "FFLUSH":
            if undo is not None:
                undo.append(("libs", ks.functions))
            ks.swap_libraries({})
        else:
            name = eff[1]
            if undo is not None:
                undo.append(("lib", name, ks.functions.get(name)))
            ks.put_library(name, eff[2] if op == "FLOAD" else None)
    elif op == "MULTI":
        cur = ks  # (SELECT moves the rest of the MULTI: of the whole record, at the top level)
        for sub in eff[1]:
            if sub[0] == "SELECT":
                cur = _selected(ks, sub[1])
                if undo is not None:
                    undo.append(("ks", cur))
            else:
                apply_effect(cur, sub, undo)
    elif op == "SELECT":
        _selected(ks, eff[1])  # a record of one SELECT changes nothing (but must name a database)
    else:  # pragma: no cover - commands only emit known effects
        raise ValueError(f"unknown effect {op!r}")


class NoSuchDatabase(IndexError):
    """A record names a database beyond the server's `databases` (replay after lowering it)."""

    def __init__(self, index: int, count: int) -> None:
        super().__init__(f"database {index}, but this server has {count} (atlasd.databases)")
        self.index, self.count = index, count


def _selected(ks: Keyspace, index: int) -> Keyspace:
    """Database `index` of the databases `ks` is one of."""
    dbs = ks.dbs
    count = dbs.count if dbs is not None else 1
    if type(index) is not int or not 0 <= index < count:
        raise NoSuchDatabase(index, count)
    if dbs is None:
        return ks
    selected: Keyspace = dbs[index]
    return selected


def _apply_add(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    """HSET / SADD: create the hash or set if the key holds nothing of that type."""
    op, key, items = eff
    kind = Hash if op == "HSET" else set
    value: Any = ks.data.get(key)  # (keyspace.Value does not name Hash)
    if type(value) is not kind:
        if undo is not None:
            undo.append(("put", key, value, ks.expires.get(key)))
            undo = None  # the new value is dropped whole on undo
        value = kind()
        ks.put(key, value, None)
    if type(value) is Hash:
        if len(items) == 1:  # one field, the usual HSET: one search of the listpack
            f, v = items[0]
            old = value.put(f, v)
            if undo is not None:
                undo.append(("hrestore", key, [(f, old)]))
            return
        if undo is not None:
            undo.append(("hrestore", key, [(f, value.get(f)) for f, _ in items]))
        value.update(items)
    elif type(value) is set:
        if len(items) == 1:  # one member, the usual SADD
            m = items[0]
            if m in value:
                added = []
            else:
                value.add(m)
                added = [m]
        else:
            added = [m for m in items if m not in value]
            value.update(added)
        if undo is not None:
            undo.append(("srestore", key, added, ()))
        if added and set_added(value) is not None and undo is not None:
            undo.append(("xcall", lambda s=value: keep_set_encoding(s, INTSET)))


def _apply_remove(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    """HDEL / SREM: the key goes when its hash or set empties (Redis never keeps an empty one)."""
    op, key, items = eff
    value = ks.data.get(key)
    if op == "HDEL" and type(value) is Hash:
        olds = [(f, value.pop(f, None)) for f in items]
        if undo is not None:
            undo.append(("hrestore", key, olds))
    elif op == "SREM" and type(value) is set:
        removed = [m for m in dict.fromkeys(items) if m in value]
        size = len(value)
        value.difference_update(removed)
        if undo is not None:
            undo.append(("srestore", key, (), removed))
        if value and removed:
            set_removed(value, removed, size)  # (a hashtable it was stays one)
    else:
        return
    if not value:
        if undo is not None:
            undo.append(("put", key, value, ks.expires.get(key)))
        ks.remove(key)


def _apply_encoding(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    """How the hash, set or zset at the key is held; a name that cannot be its (an intset of
    strings, a listpack set: not what atlasd writes) changes nothing.  A 4th element, a set's
    only, is the encoding a restart holds it in (packed.keep_restart_encoding; the AOF line
    holds that one)."""
    key, name = eff[1], eff[2]
    value: Any = ks.data.get(key)
    if type(value) is Hash and (name == LISTPACK or name == HASHTABLE):
        was = value.with_encoding(name)
        if undo is not None:
            undo.append(("xcall", lambda: value.with_encoding(was)))
    elif type(value) is ZSet and (name == SKIPLIST or name == LISTPACK):
        was_skiplist = value.skiplist
        value.skiplist = name == SKIPLIST
        if undo is not None:
            undo.append(("xcall", lambda: setattr(value, "skiplist", was_skiplist)))
    elif type(value) is set and (name == HASHTABLE or (name == INTSET and all(map(is_int64, value)))):
        was, was_restart = set_encoding(value), restart_note(value)
        keep_set_encoding(value, name)
        if len(eff) > 3:
            keep_restart_encoding(value, eff[3])
        if undo is not None:
            undo.append(("xcall", lambda: keep_set_encoding(value, was)))
            if len(eff) > 3:  # (undone first: the undo log runs backwards)
                undo.append(("xcall", lambda: keep_restart_encoding(value, was_restart)))


def _apply_list(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    """The list effects (a list is a listvalue.List)."""
    op, key = eff[0], eff[1]
    value: Any = ks.data.get(key)  # (keyspace.Value does not name deque yet)
    if op == "LPUSH" or op == "RPUSH":
        if type(value) is not List:
            if undo is not None:
                undo.append(("put", key, value, ks.expires.get(key)))
                undo = None  # the new list is dropped whole on undo
            value = List()
            ks.put(key, value, None)
        if op == "LPUSH":
            value.extendleft(eff[2])
        else:
            value.extend(eff[2])
        if undo is not None:
            undo.append(("lunpush", key, op == "LPUSH", len(eff[2])))
        return
    if type(value) is not List:
        return
    if op == "LPOP" or op == "RPOP":
        n = min(eff[2], len(value))
        pop = value.popleft if op == "LPOP" else value.pop
        items = [pop() for _ in range(n)]
        if undo is not None:
            undo.append(("lunpop", key, op == "LPOP", items))
    elif op == "LSET":
        _, _, index, item = eff
        if undo is not None:
            undo.append(("lset", key, index, value[index]))
        value[index] = item
        return
    elif op == "LINSERT":
        _, _, index, item = eff
        value.insert(index, item)
        if undo is not None:
            undo.append(("ldel", key, index))
        return
    else:  # LREM, LTRIM: O(n) anyway, so the undo keeps a copy
        if undo is not None:
            undo.append(("lrestore", key, list(value)))
        if op == "LREM":
            _lrem(value, eff[2], eff[3])
        else:
            for _ in range(min(eff[2], len(value))):
                value.popleft()
            for _ in range(min(eff[3], len(value))):
                value.pop()
    if not value:
        if undo is not None:
            undo.append(("put", key, value, ks.expires.get(key)))
        ks.remove(key)


def _lrem(value: List, count: int, item: bytes) -> int:
    """Remove up to |count| items equal to `item` (all when 0; from the tail when negative)."""
    if count >= 0:
        kept = []
        removed = 0
        for x in value:
            if x == item and (count == 0 or removed < count):
                removed += 1
            else:
                kept.append(x)
    else:
        kept_rev = []
        removed = 0
        for x in reversed(value):
            if x == item and removed < -count:
                removed += 1
            else:
                kept_rev.append(x)
        kept = kept_rev[::-1]
    if removed:
        value.clear()
        value.extend(kept)
    return removed


def _apply_stream(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    """The stream effects: a new stream is stored at the key (undone by putting back what was
    there); a change in place leaves its own undo callable."""
    key = eff[1]
    old: Any = ks.data.get(key)
    created, back = apply_stream(old, eff)
    if created is not None:
        if undo is not None:
            undo.append(("put", key, old, ks.expires.get(key)))
        ks.put(key, created, None)  # type: ignore[arg-type]  # (keyspace.Value does not name Stream)
    elif back is not None and undo is not None:
        undo.append(("xcall", back))


def _apply_setrange(ks: Keyspace, eff: Effect, undo: list | None) -> None:
    """A bitmap write touches a few bytes: logging it as the range it wrote keeps the AOF record
    small, where a SET of the whole value would write it all out again for every SETBIT."""
    _, key, offset, piece = eff
    cur = ks.data.get(key)
    exp = ks.expires.get(key)
    if undo is not None:
        undo.append(("put", key, cur, exp))
    if type(cur) is not bytes:
        cur, exp = b"", None
    n = len(cur)
    if offset > n:
        new = b"".join((cur, bytes(offset - n), piece))
    else:
        # One copy of the string (memoryview slices copy nothing): a SETBIT on a large bitmap
        # costs one memcpy of it, as strings are immutable bytes here.
        view = memoryview(cur)
        new = b"".join((view[:offset], piece, view[offset + len(piece):]))
    ks.put(key, new, exp)


def undo_effects(ks: Keyspace, undo: list) -> None:
    """Roll back, newest first, what `apply_effect` recorded.

    A ("ks", keyspace) entry says the entries after it were made in that database (SELECT); the
    ones before the first such entry were made in `ks`."""
    for entry in undo:
        if entry[0] == "ks":
            break
    else:
        for entry in reversed(undo):
            _undo_one(ks, entry)
        return
    owners: list[Keyspace] = []
    cur = ks
    for entry in undo:
        if entry[0] == "ks":
            cur = entry[1]
        owners.append(cur)
    for i in range(len(undo) - 1, -1, -1):
        _undo_one(owners[i], undo[i])


def undo_start(ks: Keyspace, undo: list, upto: int) -> Keyspace:
    """The database undo entry `upto` was made in: the last ("ks", ...) entry before it, else `ks`."""
    for i in range(min(upto, len(undo)) - 1, -1, -1):
        if undo[i][0] == "ks":
            found: Keyspace = undo[i][1]
            return found
    return ks


def _undo_one(ks: Keyspace, entry: tuple) -> None:
    kind = entry[0]
    if kind == "put":
        _, key, value, exp = entry
        if value is None:
            ks.remove(key)
        else:
            ks.put(key, value, exp)
    elif kind == "exp":
        _, key, exp = entry
        if exp is None:
            ks.clear_expiry(key)
        else:
            ks.set_expiry(key, exp)
    elif kind == "zrestore":
        _, key, olds = entry
        z = ks.data.get(key)
        if isinstance(z, ZSet):
            was_skiplist = z.skiplist  # (members put back convert nothing)
            for member, old in reversed(olds):
                if old is None:
                    z.remove(member)
                else:
                    z.add(member, old)
            z.skiplist = was_skiplist
    elif kind == "hrestore":
        h = ks.data.get(entry[1])
        if type(h) is Hash:
            for f, old in reversed(entry[2]):
                if old is None:
                    h.pop(f, None)
                else:
                    h[f] = old
    elif kind == "srestore":
        members = ks.data.get(entry[1])
        if type(members) is set:
            members.difference_update(entry[2])
            members.update(entry[3])
    elif kind == "swap":
        ks.swap_in(entry[1], entry[2])
    elif kind == "swapin":
        entry[1].swap_in(entry[2], entry[3])
    elif kind == "swapdb":
        entry[1].swap(entry[2], entry[3])
    elif kind == "ks":
        pass
    elif kind == "xcall":
        entry[1]()
    elif kind == "lib":
        ks.put_library(entry[1], entry[2])
    elif kind == "libs":
        ks.swap_libraries(entry[1])
    else:
        _undo_list(ks, entry)


def _undo_list(ks: Keyspace, entry: tuple) -> None:
    kind, key = entry[0], entry[1]
    value: Any = ks.data.get(key)
    if type(value) is not List:
        return
    if kind == "lunpush":
        _, _, head, n = entry
        for _ in range(n):
            value.popleft() if head else value.pop()
    elif kind == "lunpop":
        _, _, head, items = entry
        (value.extendleft if head else value.extend)(reversed(items))  # popped outermost first
    elif kind == "lset":
        value[entry[2]] = entry[3]
    elif kind == "ldel":
        del value[entry[2]]
    elif kind == "lrestore":
        value.clear()
        value.extend(entry[2])


def effect_keys(eff: Effect) -> list[bytes]:
    if eff[0] == "MULTI":
        return [k for sub in eff[1] for k in effect_keys(sub)]
    if eff[0] in KEYLESS_CMDS:
        return []
    return [eff[1]]
