"""Keyspace commands: DEL EXISTS TOUCH EXPIRE* TTL* PERSIST TYPE KEYS SCAN RENAME DBSIZE FLUSHALL ..."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from helios_core.atlas.blocking import signal
from helios_core.atlas.commands.table import (
    OK,
    SYNTAX,
    Ctx,
    Simple,
    command,
    err,
    literal_prefix,
    parse_int,
    parse_int32,
)
from helios_core.atlas.dump import BadFormat, PayloadError, dump_value, load_payload
from helios_core.atlas.evict import LFU_DECAY_MS, LFU_INIT
from helios_core.atlas.glob import compile_glob
from helios_core.atlas.hashtype import Hash
from helios_core.atlas.listvalue import List
from helios_core.atlas.packed import as_int64, set_copy_effect, set_encoding
from helios_core.atlas.streamtype import Stream, stream_effects
from helios_core.atlas.zset import ZSet

MAX_MS = (1 << 63) - 1


@command("del", -2, "write", keys=(1, -1, 1))
def del_(ctx: Ctx, args: list[bytes]) -> Any:
    n = 0
    for key in dict.fromkeys(args):
        if ctx.lookup(key) is not None:
            ctx.emit(("DEL", key))
            n += 1
    return n


@command("unlink", -2, "write fast", keys=(1, -1, 1))
def unlink(ctx: Ctx, args: list[bytes]) -> Any:
    return del_(ctx, args)


@command("exists", -2, "readonly fast", keys=(1, -1, 1))
def exists(ctx: Ctx, args: list[bytes]) -> Any:
    return sum(1 for key in args if ctx.lookup(key) is not None)


@command("touch", -2, "readonly fast", keys=(1, -1, 1))
def touch(ctx: Ctx, args: list[bytes]) -> Any:
    """The keys that exist (a key named twice counts twice).  Their access time and LFU counter
    are recorded by the engine after every command with keys, under an LRU/LFU policy (evict.py)."""
    return sum(1 for key in args if ctx.lookup(key) is not None)


def _expire_generic(ctx: Ctx, args: list[bytes], unit_ms: int, absolute: bool, name: str) -> Any:
    key = args[0]
    nx = xx = gt = lt = False
    for raw in args[2:]:
        opt = raw.upper()
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        else:
            raise err(f"ERR Unsupported option {raw.decode(errors='replace')}")
    if nx and (xx or gt or lt):
        raise err("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise err("ERR GT and LT options at the same time are not compatible")
    t = parse_int(args[1])  # after the options, as Redis checks them
    if unit_ms == 1000 and abs(t) > MAX_MS // 1000:
        raise err(f"ERR invalid expire time in '{name}' command")
    when = t * unit_ms + (0 if absolute else ctx.now_ms)
    if not absolute and (t * unit_ms > MAX_MS - ctx.now_ms):
        raise err(f"ERR invalid expire time in '{name}' command")
    if ctx.lookup(key) is None:
        return 0
    cur = ctx.expiry(key)
    if nx and cur is not None:
        return 0
    if xx and cur is None:
        return 0
    if gt and (cur is None or when <= cur):
        return 0
    if lt and cur is not None and when >= cur:
        return 0
    if when <= ctx.now_ms:
        ctx.emit(("DEL", key))
    else:
        ctx.emit(("EXPIRE", key, when))
    return 1


@command("expire", -3, "write fast")
def expire(ctx: Ctx, args: list[bytes]) -> Any:
    return _expire_generic(ctx, args, 1000, False, "expire")


@command("pexpire", -3, "write fast")
def pexpire(ctx: Ctx, args: list[bytes]) -> Any:
    return _expire_generic(ctx, args, 1, False, "pexpire")


@command("expireat", -3, "write fast")
def expireat(ctx: Ctx, args: list[bytes]) -> Any:
    return _expire_generic(ctx, args, 1000, True, "expireat")


@command("pexpireat", -3, "write fast")
def pexpireat(ctx: Ctx, args: list[bytes]) -> Any:
    return _expire_generic(ctx, args, 1, True, "pexpireat")


def _ttl(ctx: Ctx, key: bytes) -> int:
    """Remaining ms; -2 missing, -1 persistent (as negative sentinels)."""
    if ctx.lookup(key) is None:
        return -2
    exp = ctx.expiry(key)
    if exp is None:
        return -1
    return max(exp - ctx.now_ms, 0)


@command("ttl", 2, "readonly fast")
def ttl(ctx: Ctx, args: list[bytes]) -> Any:
    ms = _ttl(ctx, args[0])
    return ms if ms < 0 else (ms + 500) // 1000


@command("pttl", 2, "readonly fast")
def pttl(ctx: Ctx, args: list[bytes]) -> Any:
    return _ttl(ctx, args[0])


@command("expiretime", 2, "readonly fast")
def expiretime(ctx: Ctx, args: list[bytes]) -> Any:
    if ctx.lookup(args[0]) is None:
        return -2
    exp = ctx.expiry(args[0])
    return -1 if exp is None else exp // 1000


@command("pexpiretime", 2, "readonly fast")
def pexpiretime(ctx: Ctx, args: list[bytes]) -> Any:
    if ctx.lookup(args[0]) is None:
        return -2
    exp = ctx.expiry(args[0])
    return -1 if exp is None else exp


@command("persist", 2, "write fast")
def persist(ctx: Ctx, args: list[bytes]) -> Any:
    if ctx.lookup(args[0]) is None or ctx.expiry(args[0]) is None:
        return 0
    ctx.emit(("PERSIST", args[0]))
    return 1


_TYPE_NAMES = {bytes: "string", ZSet: "zset", Hash: "hash", set: "set", List: "list", Stream: "stream"}


def type_name(value: Any) -> str:
    if value is None:
        return "none"
    return _TYPE_NAMES.get(type(value), "string")


@command("type", 2, "readonly fast")
def type_(ctx: Ctx, args: list[bytes]) -> Any:
    return Simple(type_name(ctx.lookup(args[0])))


@command("keys", 2, "readonly", keys=(0, 0, 0))
def keys(ctx: Ctx, args: list[bytes]) -> Any:
    pattern = args[0]
    prefix = literal_prefix(pattern)
    rx = None if pattern == prefix + b"*" else compile_glob(pattern)
    out = []
    for key in list(ctx.ks.keys_from(prefix, True)):
        if not key.startswith(prefix):
            break
        if (rx is None or rx.match(key)) and ctx.lookup(key) is not None:
            out.append(key)
    return out


class ScanCursors:
    """Server-side SCAN cursors: an opaque number standing for the last key returned.

    Keys are walked in sorted order, so every key present for a whole
    iteration is returned exactly once.  The table is bounded (oldest cursors
    are forgotten; using one answers "ERR invalid cursor" so a client never
    silently misses keys).
    """

    def __init__(self, limit: int = 10000) -> None:
        self.limit = limit
        self.positions: dict[int, bytes] = {}

    def resolve(self, cursor: int) -> bytes | None:
        if cursor == 0:
            return None
        try:
            return self.positions.pop(cursor)
        except KeyError:
            raise err("ERR invalid cursor") from None

    def issue(self, last_key: bytes) -> int:
        if len(self.positions) >= self.limit:
            del self.positions[next(iter(self.positions))]
        cursor = random.getrandbits(62) | 1
        self.positions[cursor] = last_key
        return cursor


@command("scan", -2, "readonly", keys=(0, 0, 0))
def scan(ctx: Ctx, args: list[bytes]) -> Any:
    cursor = int(args[0]) if args[0].isdigit() else -1  # isdigit: ASCII digits only, no sign or space
    if cursor < 0 or cursor >= 1 << 64:
        raise err("ERR invalid cursor")
    count, pattern, want_type = 10, None, None
    i = 1
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise err(SYNTAX)
        if opt == b"COUNT":
            count = parse_int(args[i + 1])
            if count < 1:
                raise err(SYNTAX)
        elif opt == b"MATCH":
            pattern = args[i + 1] if args[i + 1] != b"*" else None  # "*" matches all, as in Redis
        elif opt == b"TYPE":
            want_type = args[i + 1].decode(errors="replace").lower()
        else:
            raise err(SYNTAX)
        i += 2
    cursors: ScanCursors = ctx.engine.scan_cursors
    start = cursors.resolve(cursor)
    prefix = literal_prefix(pattern) if pattern is not None else b""
    rx = compile_glob(pattern) if pattern is not None else None
    if start is None or start < prefix:
        it = ctx.ks.keys_from(prefix, True)
    else:
        it = ctx.ks.keys_from(start, False)
    examined: list[bytes] = []
    done = True
    for key in it:
        if not key.startswith(prefix):
            break
        if len(examined) == count:
            done = False
            break
        examined.append(key)
    out = []
    for key in examined:
        if rx is not None and not rx.match(key):
            continue
        value = ctx.lookup(key)
        if value is None or (want_type is not None and type_name(value) != want_type):
            continue
        out.append(key)
    next_cursor = 0 if done or not examined else cursors.issue(examined[-1])
    return [b"%d" % next_cursor, out]


@command("randomkey", 1, "readonly", keys=(0, 0, 0))
def randomkey(ctx: Ctx, args: list[bytes]) -> Any:
    data = ctx.ks.data
    for _ in range(100):
        if not data:
            return None
        index = ctx.ks.sorted_keys()
        key = index[random.randrange(len(index))]
        if ctx.lookup(key) is not None:
            return key
    return None


def _rename(ctx: Ctx, args: list[bytes], nx: bool) -> Any:
    src, dst = args
    value = ctx.lookup(src)
    if value is None:
        raise err("ERR no such key")
    if src == dst:
        return 0 if nx else OK
    # (Redis looks dst up for RENAME too: one whose TTL ran out is "expired" before it is replaced)
    if ctx.lookup(dst) is not None and nx:
        return 0
    log_value(ctx, dst, value, ctx.expiry(src))
    ctx.emit(("DEL", src))
    return 1 if nx else OK


def log_value(ctx: Ctx, dst: bytes, value: Any, exp: int | None) -> None:
    """Put `value` (any type) under `dst` with expiry `exp`, replacing what dst held (RENAME, COPY,
    RESTORE).  The effects build a new value, so the source is never shared with dst.

    The copy is held as the source is (RENAME and MOVE move Redis's object, COPY duplicates it in
    its encoding): where rebuilding would choose otherwise (a hashtable that shrank, a listpack
    past a lowered limit), an ENCODING effect says which.  RESTORE's dict or set (just loaded)
    keeps the encoding chosen by content, as Redis's RDB loading does."""
    t = type(value)
    if t is Stream:
        if dst in ctx.ks.data:
            ctx.emit(("DEL", dst))
        for eff in stream_effects(dst, value):
            ctx.emit(eff)
        if exp is not None:
            ctx.emit(("EXPIRE", dst, exp))
        return
    if t is ZSet or t is Hash or t is dict or t is set or t is List or t is deque:  # (dict, deque: RESTORE's)
        # A collection is logged whole under its new name: DEL clears what dst held
        # (a collection of the same type would otherwise be merged into).
        if dst in ctx.ks.data:
            ctx.emit(("DEL", dst))
        if t is ZSet:
            ctx.emit(("ZADD", dst, list(value.items())))
            if value.encoding != value.loaded_encoding():
                ctx.emit(("ENCODING", dst, value.encoding))
        elif t is Hash or t is dict:
            ctx.emit(("HSET", dst, list(value.items())))
            if t is Hash and value.encoding != value.loaded_encoding():
                ctx.emit(("ENCODING", dst, value.encoding))
        elif t is List or t is deque:
            ctx.emit(("RPUSH", dst, list(value)))
            signal(ctx, dst)  # a list appeared under dst: clients blocked on it are served
        else:
            ctx.emit(("SADD", dst, list(value)))
            held = set_copy_effect(dst, value)
            if held is not None:
                ctx.emit(held)
        if exp is not None:
            ctx.emit(("EXPIRE", dst, exp))
    else:
        ctx.emit(("SET", dst, value, exp))


@command("rename", 3, "write", keys=(1, 2, 1))
def rename(ctx: Ctx, args: list[bytes]) -> Any:
    return _rename(ctx, args, False)


@command("renamenx", 3, "write fast", keys=(1, 2, 1))
def renamenx(ctx: Ctx, args: list[bytes]) -> Any:
    return _rename(ctx, args, True)


@command("dbsize", 1, "readonly fast", keys=(0, 0, 0))
def dbsize(ctx: Ctx, args: list[bytes]) -> Any:
    return len(ctx.ks.data)


# -- COPY, OBJECT, DUMP/RESTORE ---------------------------------------------------------------

@command("copy", -3, "write denyoom", keys=(1, 2, 1))
def copy(ctx: Ctx, args: list[bytes]) -> Any:
    src, dst = args[0], args[1]
    engine = ctx.engine
    replace = False
    db = engine.db if engine is not None else 0
    j = 2
    while j < len(args):
        opt = args[j].upper()
        if opt == b"REPLACE":
            replace = True
        elif opt == b"DB" and j + 1 < len(args):
            db = parse_int32(args[j + 1])
            if engine is None or not 0 <= db < engine.dbs.count:
                raise err("ERR DB index is out of range")
            j += 1
        else:
            raise err(SYNTAX)
        j += 1
    same_db = engine is None or db == engine.db
    if src == dst and same_db:
        raise err("ERR source and destination objects are the same")
    value = ctx.lookup(src)
    if value is None:
        return 0
    exp = ctx.expiry(src)
    if same_db:
        if ctx.lookup_write(dst) is not None and not replace:
            return 0
        log_value(ctx, dst, value, exp)
        return 1
    with engine.in_db(db):  # (the value is built again there: nothing is shared between databases)
        if ctx.lookup_write(dst) is not None and not replace:
            return 0
        log_value(ctx, dst, value, exp)
    return 1


_OBJECT_HELP = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
]
_OBJECT_ARITY = {b"ENCODING": 2, b"FREQ": 2, b"IDLETIME": 2, b"REFCOUNT": 2, b"HELP": 1}

# Redis 7.0's strings up to 44 bytes in one allocation with their header (embstr).  (Hashes, sets
# and zsets follow CONFIG SET: packed.LIMITS.)
EMBSTR_LIMIT = 44
SHARED_INTEGERS = 10000
INT_MAX = (1 << 31) - 1


def encoding_name(value: Any) -> str:
    """The encoding Redis 7.0 would report for this value.  Hashes, sets and zsets remember their
    history as Redis's do (hashtype.py, packed.set_encoding, zset.py); strings are judged from
    their content now (Redis says raw for a string grown by APPEND/SETRANGE/SETBIT however short)."""
    t = type(value)
    if t is bytes:
        if as_int64(value) is not None:
            return "int"
        return "embstr" if len(value) <= EMBSTR_LIMIT else "raw"
    if t is List:
        return "quicklist"
    if t is Stream:
        return "stream"
    if t is set:
        return set_encoding(value)
    return str(value.encoding)  # (a Hash or a ZSet)


@command("object", -2, "", keys=(0, 0, 0))
def object_(ctx: Ctx, args: list[bytes]) -> Any:
    sub = args[0].upper()
    arity = _OBJECT_ARITY.get(sub)
    if arity is None:
        raise err(f"ERR unknown subcommand '{args[0].decode(errors='replace')[:128]}'. Try OBJECT HELP.")
    if len(args) != arity:
        raise err(f"ERR wrong number of arguments for 'object|{sub.decode().lower()}' command")
    if sub == b"HELP":
        return [Simple(line) for line in _OBJECT_HELP]
    value = ctx.lookup(args[1])
    if value is None:
        return None
    if sub == b"ENCODING":
        return encoding_name(value).encode()
    if sub == b"REFCOUNT":
        # Small integers are shared objects in Redis (refcount INT_MAX); everything else has its own.
        n = as_int64(value) if type(value) is bytes else None
        return INT_MAX if n is not None and 0 <= n < SHARED_INTEGERS else 1
    # Access times and LFU counters exist only while an LRU/LFU maxmemory policy tracks them
    # (evict.py); under any other policy IDLETIME is 0, where Redis would count from the last access.
    evictor = getattr(ctx.engine, "evictor", None)
    policy: str = getattr(evictor, "policy", "noeviction")
    lfu = policy.endswith("-lfu")
    last, counter = (evictor.last_access(ctx.ks, args[1]) if evictor is not None and evictor.tracks_access
                     else (ctx.now_ms, LFU_INIT))
    if sub == b"IDLETIME":
        if lfu:
            raise err("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when "
                      "switching between policies at runtime LRU and LFU data will take some time to adjust.")
        return max(ctx.now_ms - last, 0) // 1000
    if not lfu:
        raise err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that "
                  "when switching between policies at runtime LRU and LFU data will take some time to adjust.")
    periods = (ctx.now_ms - last) // LFU_DECAY_MS  # Redis's LFUDecrAndReturn, one step per minute idle
    return max(counter - periods, 0) if periods > 0 else counter


@command("dump", 2, "readonly")
def dump(ctx: Ctx, args: list[bytes]) -> Any:
    value = ctx.lookup(args[0])
    return None if value is None else dump_value(value)


@command("restore", -4, "write denyoom")
def restore(ctx: Ctx, args: list[bytes]) -> Any:
    key = args[0]
    replace = absttl = False
    idle = freq = -1
    j = 3
    while j < len(args):
        opt = args[j].upper()
        more = j + 1 < len(args)
        if opt == b"REPLACE":
            replace = True
        elif opt == b"ABSTTL":
            absttl = True
        elif opt == b"IDLETIME" and more and freq == -1:
            idle = parse_int(args[j + 1])
            if idle < 0:
                raise err("ERR Invalid IDLETIME value, must be >= 0")
            j += 1
        elif opt == b"FREQ" and more and idle == -1:
            freq = parse_int(args[j + 1])
            if not 0 <= freq <= 255:
                raise err("ERR Invalid FREQ value, must be >= 0 and <= 255")
            j += 1
        else:
            raise err(SYNTAX)
        j += 1
    engine = ctx.engine
    notifier = engine.notifier if engine is not None and engine.notifier.on else None
    since = notifier.mark() if notifier is not None else 0  # (this command's own events start here)
    if replace:  # (Redis deletes what key holds without looking it up: no lazy expiry, no "expired")
        exists = key in ctx.ks.data
    elif ctx.lookup(key) is not None:
        raise err("BUSYKEY Target key name already exists.")
    else:
        exists = False
    ttl = parse_int(args[1])
    if ttl < 0:
        raise err("ERR Invalid TTL value, must be >= 0")
    try:
        value = load_payload(args[2])
    except PayloadError:
        raise err("ERR DUMP payload version or checksum are wrong") from None
    except BadFormat:
        raise err("ERR Bad data format") from None
    exp = None
    if ttl:
        exp = ttl if absttl else ttl + ctx.now_ms
        if exp <= ctx.now_ms:  # already expired: nothing is created (a replaced key is still gone)
            if exists:
                ctx.emit(("DEL", key))
                if notifier is not None:
                    notifier.replaced(key, since)
            return OK
    log_value(ctx, key, value, exp)
    if exists and notifier is not None:
        notifier.replaced(key, since)
    return OK
