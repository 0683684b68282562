"""Keyspace notifications (`notify-keyspace-events`), as Redis 7.0 publishes them.

For an event E on key K in class C, when the configured flags include C and
K (keyspace) and/or E (keyevent), atlasd publishes through its ordinary
pub/sub:

    __keyspace@N__:K   message E
    __keyevent@N__:E   message K

where N is the database the effect was made in (MOVE and COPY ... DB make
events in two).

Events come from what a command did, not from parsing its arguments: the
engine shows every effect to `Notifier.before` just before applying it (so
the notifier still sees the key's old state: was it there, had its TTL run
out), and calls `command_done` when the command returns.  A command's effects
are then named after the command, as Redis names them (INCR is "incrby",
RENAME is "rename_from"/"rename_to", SET EX adds "expire"), a DEL of a key
whose TTL had run out is "expired", a container the command emptied adds
"del", and a key that did not exist before adds "new" (class n).  Active
expiry and eviction report "expired" and "evicted" through `internal`.

Messages wait in `outbox` until the command's AOF record is durable (the
engine hands them to `deliver` then), as its reply does; a record the disk
lost (undone) drops them.  Nothing runs per command while the flags are
empty: the engine's hook is only installed when some class is on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from helios_core.atlas.effects import KEYLESS_CMDS, effect_keys
from helios_core.atlas.streamtype import STREAM_OPS

__all__ = ["Notifier", "parse_flags", "flags_to_string", "BAD_FLAGS", "CLASS"]

# Redis's NOTIFY_* bits.
K, E, G, STR, LIST, SET, HASH, ZSET, EXPIRED, EVICTED, STREAM, MISS, MODULE, NEW = (1 << i for i in range(14))
ALL = G | STR | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE  # 'A'
_CHARS = {"K": K, "E": E, "g": G, "$": STR, "l": LIST, "s": SET, "h": HASH, "z": ZSET, "x": EXPIRED,
          "e": EVICTED, "t": STREAM, "m": MISS, "d": MODULE, "n": NEW, "A": ALL}
BAD_FLAGS = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'."

CLASS = {"generic": G, "string": STR, "list": LIST, "set": SET, "hash": HASH, "zset": ZSET, "stream": STREAM}
_STREAM_COMMANDS = frozenset({"xadd", "xtrim", "xdel", "xsetid", "xgroup", "xreadgroup", "xclaim", "xautoclaim",
                              "xack"})


def parse_flags(text: str) -> int:
    """The bits of a flags string; ValueError(BAD_FLAGS) for a character Redis does not know."""
    flags = 0
    for ch in text:
        bit = _CHARS.get(ch)
        if bit is None:
            raise ValueError(BAD_FLAGS)
        flags |= bit
    return flags


def flags_to_string(flags: int) -> str:
    """CONFIG GET's canonical spelling (keyspaceEventsFlagsToString)."""
    out = ""
    if flags & ALL == ALL:
        out += "A"
    else:
        for ch, bit in (("g", G), ("$", STR), ("l", LIST), ("s", SET), ("h", HASH), ("z", ZSET), ("x", EXPIRED),
                        ("e", EVICTED), ("t", STREAM), ("d", MODULE), ("n", NEW)):
            if flags & bit:
                out += ch
    for ch, bit in (("K", K), ("E", E), ("m", MISS)):
        if flags & bit:
            out += ch
    return out


# command -> (event, class) where Redis's event is not the command's name or its class not its group.
_EVENTS: dict[str, tuple[str, int]] = {
    "set": ("set", STR), "setnx": ("set", STR), "setex": ("set", STR), "psetex": ("set", STR),
    "mset": ("set", STR), "msetnx": ("set", STR), "getset": ("set", STR), "getdel": ("del", G),
    "getex": ("getex", G),
    "incr": ("incrby", STR), "decr": ("incrby", STR), "incrby": ("incrby", STR), "decrby": ("incrby", STR),
    "incrbyfloat": ("incrbyfloat", STR), "append": ("append", STR), "setrange": ("setrange", STR),
    "setbit": ("setbit", STR), "bitop": ("set", STR), "bitfield": ("setbit", STR),
    "del": ("del", G), "unlink": ("del", G), "expire": ("expire", G), "pexpire": ("expire", G),
    "expireat": ("expire", G), "pexpireat": ("expire", G), "persist": ("persist", G),
    "copy": ("copy_to", G), "move": ("move_to", G), "restore": ("restore", G),
    "hset": ("hset", HASH), "hmset": ("hset", HASH), "hsetnx": ("hset", HASH), "hdel": ("hdel", HASH),
    "hincrby": ("hincrby", HASH), "hincrbyfloat": ("hincrbyfloat", HASH),
    "sadd": ("sadd", SET), "srem": ("srem", SET), "spop": ("spop", SET),
    "sinterstore": ("sinterstore", SET), "sunionstore": ("sunionstore", SET), "sdiffstore": ("sdiffstore", SET),
    "lpush": ("lpush", LIST), "lpushx": ("lpush", LIST), "rpush": ("rpush", LIST), "rpushx": ("rpush", LIST),
    "lpop": ("lpop", LIST), "rpop": ("rpop", LIST), "blpop": ("lpop", LIST), "brpop": ("rpop", LIST),
    "lset": ("lset", LIST), "linsert": ("linsert", LIST), "lrem": ("lrem", LIST), "ltrim": ("ltrim", LIST),
    "zadd": ("zadd", ZSET), "zincrby": ("zincr", ZSET), "zrem": ("zrem", ZSET),
    "zremrangebyscore": ("zremrangebyscore", ZSET), "zremrangebyrank": ("zremrangebyrank", ZSET),
    "zremrangebylex": ("zremrangebylex", ZSET), "zpopmin": ("zpopmin", ZSET), "zpopmax": ("zpopmax", ZSET),
    "bzpopmin": ("zpopmin", ZSET), "bzpopmax": ("zpopmax", ZSET),
    "zunionstore": ("zunionstore", ZSET), "zinterstore": ("zinterstore", ZSET), "zdiffstore": ("zdiffstore", ZSET),
    "zrangestore": ("zrangestore", ZSET),
    # PFMERGE publishes "pfadd" as Redis does; PFCOUNT's cache write and PFDEBUG's conversion publish nothing.
    "pfadd": ("pfadd", STR), "pfmerge": ("pfadd", STR), "pfcount": ("pfcount", 0), "pfdebug": ("pfdebug", 0),
    "geoadd": ("zadd", ZSET), "georadius": ("georadiusstore", ZSET), "georadiusbymember": ("georadiusstore", ZSET),
    "geosearchstore": ("geosearchstore", ZSET),
    "sort": ("sortstore", LIST),
}
# Commands that replace their destination whole (a DEL, then the writes of the new value) where
# Redis overwrites it in one step (setKey's dbOverwrite): no "del", and no "new" for a key that
# was there.
_REPLACES = frozenset({"sort", "georadius", "georadiusbymember", "geosearchstore", "sinterstore", "sunionstore",
                       "sdiffstore", "zrangestore", "zunionstore", "zinterstore", "zdiffstore"})
# Commands that Redis makes delete the destination silently and add it again (dbDelete, dbAdd):
# no "del", but "new" even for a key that was there, and no "expire" for the TTL they give it.
_RECREATES = frozenset({"copy", "restore"})
# Commands whose events are named after each effect, in Redis's order: LMOVE's push onto the
# destination before the pop from the source (then "del" if that emptied it), SMOVE's "srem"
# (and "del") of the source before the "sadd" of the destination (none when it held the member).
_MOVES = frozenset({"lmove", "rpoplpush", "blmove", "brpoplpush", "smove"})
_OP_EVENTS = {"LPUSH": "lpush", "RPUSH": "rpush", "LPOP": "lpop", "RPOP": "rpop", "SADD": "sadd", "SREM": "srem"}
_PUSHES = frozenset({"LPUSH", "RPUSH"})
_CREATES = frozenset({"SET", "SETRANGE", "ZADD", "HSET", "SADD", "LPUSH", "RPUSH"})
_EMPTIES = frozenset({"ZREM", "HDEL", "SREM", "LPOP", "RPOP", "LREM", "LTRIM"})
_OP_CLASS = {"ZADD": ZSET, "ZREM": ZSET, "HSET": HASH, "HDEL": HASH, "SADD": SET, "SREM": SET, "SET": STR,
             "SETRANGE": STR,
             "LPUSH": LIST, "RPUSH": LIST, "LPOP": LIST, "RPOP": LIST, "LSET": LIST, "LINSERT": LIST,
             "LREM": LIST, "LTRIM": LIST}


@dataclass
class _Seen:
    eff: tuple
    expired: bool   # a DEL of a key whose TTL had run out (lazy expiry)
    new: bool       # the key was absent before this effect
    fresh: bool = False  # XGROUP / XCONSUMER: the group / consumer did not exist before it
    db: int = 0          # the database it was made in


_STREAM_CREATES = frozenset({"XADD", "XSETID"})
_STREAM_EVENTS = {"XADD": "xadd", "XTRIM": "xtrim", "XDEL": "xdel", "XGDEL": "xgroup-destroy",
                  "XCDEL": "xgroup-delconsumer"}


def _stream_seen(eff: tuple, data: dict) -> _Seen:
    """A stream effect about to apply: was its key, group or consumer there before it."""
    op, key = eff[0], eff[1]
    value = data.get(key)
    fresh = False
    groups = getattr(value, "groups", None)
    if op == "XGROUP":
        fresh = groups is None or eff[2] not in groups
    elif op == "XCONSUMER":
        g = groups.get(eff[2]) if groups is not None else None
        fresh = g is not None and eff[3] not in g.consumers
    return _Seen(eff, False, op in _STREAM_CREATES and value is None, fresh)


def _replaced(seen: list[_Seen]) -> list[_Seen]:
    """A destination's DEL followed by writes of the same key in the same database is an
    overwrite: the DEL goes, and the key was not new (a DEL of an expired key stays: "expired")."""
    out: list[_Seen] = []
    for i, s in enumerate(seen):
        if s.eff[0] == "DEL" and not s.expired:
            key, db = s.eff[1], s.db
            later = [t for t in seen[i + 1:] if t.db == db and t.eff[0] != "DEL" and t.eff[1] == key]
            if later:
                for t in later:
                    t.new = False
                continue
        out.append(s)
    return out


def _recreated(seen: list[_Seen]) -> list[_Seen]:
    """A destination deleted and added again: the DEL of what it held goes (an expired one stays:
    "expired"), its first write is "new" whatever was there, and the TTL given to it says nothing."""
    out: list[_Seen] = []
    written: set[tuple[int, bytes]] = set()
    for i, s in enumerate(seen):
        op, key = s.eff[0], s.eff[1]
        if op == "DEL":
            if not s.expired and any(t.db == s.db and t.eff[0] != "DEL" and t.eff[1] == key for t in seen[i + 1:]):
                continue
        elif op == "EXPIRE":
            continue
        elif (s.db, key) not in written:
            written.add((s.db, key))
            s.new = True
        out.append(s)
    return out


def _moved(seen: list[_Seen]) -> list[_Seen]:
    """LMOVE's effects in the order of Redis's events: the lookups' expiries, the push, the pop."""
    return sorted(seen, key=lambda s: 0 if s.expired else (1 if s.eff[0] in _PUSHES else 2))


@dataclass
class Notifier:
    flags: int = 0
    publish: Callable[[bytes, bytes], int] | None = None  # the daemon's pub/sub; None: nobody to tell
    pending: list[_Seen] = field(default_factory=list)
    # Messages of commands that ran, held until their record is durable (the engine releases
    # them: a notification must not reveal a write the disk may still lose, like a reply).
    outbox: list[tuple[bytes, bytes]] = field(default_factory=list)
    db: int = 0  # the database effects are made in now (the engine sets it)

    def take(self) -> list[tuple[bytes, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def deliver(self, messages: list[tuple[bytes, bytes]]) -> None:
        publish = self.publish
        if publish is not None:
            for channel, message in messages:
                publish(channel, message)

    @property
    def on(self) -> bool:
        return bool(self.flags & (K | E)) and self.publish is not None

    def before(self, eff: tuple, data: dict, expires: dict, now_ms: int) -> None:
        """An effect about to be applied (the keyspace still holds the old state)."""
        op = eff[0]
        if op == "MULTI":
            for e in eff[1]:
                self.before(e, data, expires, now_ms)
            return
        if op in KEYLESS_CMDS:
            # (no key: Redis 7.0 publishes nothing for FLUSHALL, FLUSHDB, SWAPDB, FUNCTION LOAD ...)
            return
        key = eff[1]
        if op in STREAM_OPS:
            seen = _stream_seen(eff, data)
        elif op == "DEL":
            exp = expires.get(key)
            seen = _Seen(eff, exp is not None and exp <= now_ms and key in data, False)
        else:
            seen = _Seen(eff, False, op in _CREATES and key not in data)
        seen.db = self.db
        self.pending.append(seen)

    def mark(self) -> int:
        return len(self.pending)

    def discard(self, mark: int) -> None:
        del self.pending[mark:]

    def replaced(self, key: bytes, since: int) -> None:
        """The DEL of `key` emitted after `mark()` was `since` deletes it without a lookup (RESTORE ...
        REPLACE, as Redis's dbDelete): not an expiry, even if its TTL had run out."""
        for s in self.pending[since:]:
            if s.eff[0] == "DEL" and s.eff[1] == key and s.db == self.db:
                s.expired = False

    def command_done(self, mark: int, name: str, data: dict) -> None:
        """The command `name` returned: publish the events of the effects it emitted."""
        seen = self.pending[mark:]
        del self.pending[mark:]
        if not seen or not self.on:
            return
        db = self.db
        try:
            self._command_done(seen, name, data)
        finally:
            self.db = db

    def _command_done(self, seen: list[_Seen], name: str, data: dict) -> None:
        event, cls = _EVENTS.get(name, (name, G))
        if name == "rename" or name == "renamenx" or name == "move":
            self._rename(seen, name == "move")
            return
        if name in _STREAM_COMMANDS:
            self._stream(seen, name)
            return
        if name in _REPLACES:
            seen = _replaced(seen)
        elif name in _RECREATES:
            seen = _recreated(seen)
        elif name in _MOVES:
            seen = _moved(seen)
        sent: set[tuple[int, bytes, str]] = set()
        for s in seen:
            eff = s.eff
            op = eff[0]
            self.db = s.db
            key = eff[1]
            if s.expired:
                self.event(EXPIRED, "expired", key)
                continue
            if s.new:
                self.event(NEW, "new", key)
            if op == "DEL":
                ev = ("del", G) if name not in ("getdel",) else (event, cls)
                self._once(sent, key, ev[0], ev[1])
                continue
            if op == "EXPIRE":
                self._once(sent, key, "expire", G)
                continue
            if op == "PERSIST":
                self._once(sent, key, "persist", G)
                continue
            ev_cls = cls if name in _EVENTS else _OP_CLASS.get(op, cls)
            self._once(sent, key, _OP_EVENTS.get(op, event) if name in _MOVES else event, ev_cls)
            if op == "SET" and eff[3] is not None and name in ("set", "setex", "psetex", "getex"):
                self._once(sent, key, "expire", G)
            if op in _EMPTIES and key not in data:
                self._once(sent, key, "del", G)

    def _rename(self, seen: list[_Seen], move: bool) -> None:
        # RENAME src dst: DEL dst if it was there, the writes of dst (maybe an EXPIRE), DEL src;
        # Redis deletes and adds dst ("new" even over a key).  MOVE key db: the value written in db
        # (after a lookup there), then DEL in the source database.
        seen = _recreated(seen)
        for s in seen:
            self.db = s.db
            if s.expired:
                self.event(EXPIRED, "expired", s.eff[1])
            elif s.new:
                self.event(NEW, "new", s.eff[1])
        dels = [s for s in seen if s.eff[0] == "DEL" and not s.expired]
        sets = [s for s in seen if s.eff[0] != "DEL"]
        if dels:
            self.db = dels[0].db
            self.event(G, "move_from" if move else "rename_from", dels[0].eff[1])
        if sets:
            self.db = sets[0].db
            self.event(G, "move_to" if move else "rename_to", sets[0].eff[1])

    def _stream(self, seen: list[_Seen], name: str) -> None:
        """Stream commands: events as Redis 7.0 names them (xadd, xtrim, xdel, xsetid, xgroup-create,
        xgroup-setid, xgroup-destroy, xgroup-createconsumer, xgroup-delconsumer); the group and PEL
        bookkeeping of XREADGROUP/XCLAIM/XACK publishes nothing, as in Redis."""
        for s in seen:
            op, key = s.eff[0], s.eff[1]
            self.db = s.db
            if s.expired:
                self.event(EXPIRED, "expired", key)
                continue
            if s.new:
                self.event(NEW, "new", key)
            event = _STREAM_EVENTS.get(op)
            if op == "XSETID" and name == "xsetid":
                event = "xsetid"
            elif op == "XGROUP":
                event = "xgroup-create" if s.fresh else ("xgroup-setid" if name == "xgroup" else None)
            elif op == "XCONSUMER":
                event = "xgroup-createconsumer" if s.fresh else None
            elif op == "DEL":
                event = None if name != "del" else "del"
            if event is not None:
                self.event(STREAM if op != "DEL" else G, event, key)

    def _once(self, sent: set[tuple[int, bytes, str]], key: bytes, event: str, cls: int) -> None:
        if (self.db, key, event) not in sent:
            sent.add((self.db, key, event))
            self.event(cls, event, key)

    def internal(self, event: str, cls: int, effects: list[tuple]) -> None:
        """Active expiry ("expired") and eviction ("evicted") of the keys of `effects`."""
        if not self.on:
            return
        for eff in effects:
            for key in effect_keys(eff):
                self.event(cls, event, key)

    def event(self, cls: int, event: str, key: bytes | None) -> None:
        flags = self.flags
        if not flags & cls or self.publish is None or key is None:
            return
        ev = event.encode()
        db = self.db
        if flags & K:
            self.outbox.append((b"__keyspace@%d__:%s" % (db, key), ev))
        if flags & E:
            self.outbox.append((b"__keyevent@%d__:%s" % (db, ev), key))
