"""Keyspace commands: DEL EXISTS EXPIRE* TTL* PERSIST TYPE KEYS SCAN RENAME DBSIZE FLUSHALL ..."""

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
)
from helios_core.atlas.glob import compile_glob
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


_TYPE_NAMES = {bytes: "string", ZSet: "zset", dict: "hash", set: "set", deque: "list"}


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
    if nx and ctx.lookup(dst) is not None:
        return 0
    if src == dst:
        return 0 if nx else OK
    exp = ctx.expiry(src)
    t = type(value)
    if t is ZSet or t is dict or t is set or t is deque:
        # A collection is logged whole under its new name: DEL clears what dst held
        # (a collection of the same type would otherwise be merged into).
        ctx.emit(("DEL", dst))
        if t is ZSet:
            ctx.emit(("ZADD", dst, list(value.items())))
        elif t is dict:
            ctx.emit(("HSET", dst, list(value.items())))
        elif t is deque:
            ctx.emit(("RPUSH", dst, list(value)))
            signal(ctx, dst)  # a list appeared under dst: clients blocked on it are served
        else:
            ctx.emit(("SADD", dst, list(value)))
        if exp is not None:
            ctx.emit(("EXPIRE", dst, exp))
    else:
        ctx.emit(("SET", dst, value, exp))
    ctx.emit(("DEL", src))
    return 1 if nx else OK


@command("rename", 3, "write", keys=(1, 2, 1))
def rename(ctx: Ctx, args: list[bytes]) -> Any:
    return _rename(ctx, args, False)


@command("renamenx", 3, "write fast", keys=(1, 2, 1))
def renamenx(ctx: Ctx, args: list[bytes]) -> Any:
    return _rename(ctx, args, True)


@command("dbsize", 1, "readonly fast", keys=(0, 0, 0))
def dbsize(ctx: Ctx, args: list[bytes]) -> Any:
    return len(ctx.ks.data)


def _flush(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) > 1 or (args and args[0].upper() not in (b"ASYNC", b"SYNC")):
        raise err(SYNTAX)
    ctx.emit(("FLUSHALL",))
    return OK


@command("flushall", -1, "write", keys=(0, 0, 0))
def flushall(ctx: Ctx, args: list[bytes]) -> Any:
    return _flush(ctx, args)


@command("flushdb", -1, "write", keys=(0, 0, 0))
def flushdb(ctx: Ctx, args: list[bytes]) -> Any:
    return _flush(ctx, args)
