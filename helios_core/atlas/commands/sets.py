"""Set commands with Redis 7.0's semantics, replies and error texts.

Writes compile to SADD/SREM effects (the *STORE forms to a DEL and an SADD of
the result), and the random ones log what they chose: SPOP is logged as the
SREM of the members it popped, so replay never draws a random number.  Where
Redis builds the result as a new set whose encoding is not the one these
effects leave (SPOP keeping few members, SDIFFSTORE's second algorithm), an
ENCODING effect follows (packed.py keeps a set's encoding; SPOP's also names the
encoding a restart gives, as Redis logs SPOP as SREMs of the old set).
Replies that Redis sends as a set in RESP3 (SMEMBERS, SINTER, SPOP with a
count, ...) are Python sets: `~` in RESP3, an array in RESP2.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.table import SYNTAX, WRONGTYPE, Ctx, command, err, parse_int
from helios_core.atlas.hashset import (
    get_set,
    parse_cursor,
    pick_distinct,
    pick_one,
    pick_repeating,
    scan_items,
)
from helios_core.atlas.packed import INTSET, restart_encoding, set_content_encoding, set_encoding
from helios_core.errors import CommandError

__all__: list[str] = []

LONG_MAX = (1 << 63) - 1
SPOP_MOVE_STRATEGY_MUL = 5  # t_set.c: an SPOP count >= 5x the members it leaves moves those to a new set
NOT_POSITIVE = "ERR value is out of range, must be positive"


@command("sadd", -3, "write denyoom fast")
def sadd(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_set(ctx, args[0])
    # (Members over atlas.max_value_bytes never get here: Engine.execute checks every argument
    # of a write command first.)
    if len(args) == 2:  # one member, the common case
        new = [args[1]] if s is None or args[1] not in s else []
    else:
        new = [m for m in dict.fromkeys(args[1:]) if s is None or m not in s]
    if new:
        ctx.emit(("SADD", args[0], new))
    return len(new)


@command("srem", -3, "write fast")
def srem(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_set(ctx, args[0])
    if s is None:
        return 0
    gone = [m for m in dict.fromkeys(args[1:]) if m in s]
    if gone:
        ctx.emit(("SREM", args[0], gone))
    return len(gone)


@command("smembers", 2, "readonly")
def smembers(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_set(ctx, args[0])
    return set() if s is None else set(s)


@command("sismember", 3, "readonly fast")
def sismember(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_set(ctx, args[0])
    return int(s is not None and args[1] in s)


@command("smismember", -3, "readonly fast")
def smismember(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_set(ctx, args[0]) or set()
    return [int(m in s) for m in args[1:]]


@command("scard", 2, "readonly fast")
def scard(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_set(ctx, args[0])
    return 0 if s is None else len(s)


@command("spop", -2, "write fast")
def spop(ctx: Ctx, args: list[bytes]) -> Any:
    key = args[0]
    if len(args) == 1:
        s = get_set(ctx, key)
        if s is None:
            return None
        member = pick_one(s)
        ctx.emit(("SREM", key, [member]))
        return member
    if len(args) > 2:
        raise err(SYNTAX)
    try:
        count = parse_int(args[1])
    except CommandError:
        raise err(NOT_POSITIVE) from None
    if count < 0:
        raise err(NOT_POSITIVE)
    s = get_set(ctx, key)
    if s is None or count == 0:
        return set()
    if count >= len(s):
        out = set(s)
        ctx.emit(("DEL", key))
        return out
    chosen = pick_distinct(list(s), count)
    renew = None
    if (len(s) - count) * SPOP_MOVE_STRATEGY_MUL <= count:
        # Redis moves the few members it keeps to a new set (encoded by their content) and
        # replies with the old one, where fewer pops are done in place (the encoding stays).
        kept = set_content_encoding(s.difference(chosen))
        renew = kept if kept != set_encoding(s) else None
    # (Redis logs either as SREMs, so its restart replays them on the old set, in its encoding:
    # the ENCODING effect says so, and its AOF line holds that encoding.)
    restart = restart_encoding(s)
    ctx.emit(("SREM", key, chosen))
    if renew is not None:
        ctx.emit(("ENCODING", key, renew) if renew == restart else ("ENCODING", key, renew, restart))
    return set(chosen)


@command("srandmember", -2, "readonly")
def srandmember(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) == 1:
        s = get_set(ctx, args[0])
        return None if s is None else pick_one(s)
    if len(args) > 2:
        raise err(SYNTAX)
    count = parse_int(args[1])
    if count < -LONG_MAX:
        raise err(f"ERR value is out of range, value must between {-LONG_MAX} and {LONG_MAX}")
    s = get_set(ctx, args[0])
    if s is None or count == 0:
        return []
    members = list(s)
    return pick_distinct(members, count) if count > 0 else pick_repeating(members, -count)


@command("smove", 4, "write fast", keys=(1, 2, 1))
def smove(ctx: Ctx, args: list[bytes]) -> Any:
    src_key, dst_key, member = args
    src = ctx.lookup(src_key)
    dst = ctx.lookup(dst_key)
    if src is None:  # Redis answers 0 before looking at either type
        return 0
    if type(src) is not set or (dst is not None and type(dst) is not set):
        raise err(WRONGTYPE)
    if src_key == dst_key:
        return int(member in src)
    if member not in src:
        return 0
    ctx.emit(("SREM", src_key, [member]))
    if dst is None or member not in dst:
        ctx.emit(("SADD", dst_key, [member]))
    return 1


# -- intersection, union, difference ------------------------------------------------------

def _sets(ctx: Ctx, keys: list[bytes]) -> list[set[bytes] | None]:
    """Every key's set (None when missing); a key of another type is WRONGTYPE, wherever it is."""
    return [get_set(ctx, k) for k in keys]


def _inter(sets: list[set[bytes] | None], limit: int = 0) -> set[bytes]:
    if not sets or any(s is None for s in sets):
        return set()
    present = sorted((s for s in sets if s is not None), key=len)
    out: set[bytes] = set()
    smallest, rest = present[0], present[1:]
    for m in smallest:
        if all(m in s for s in rest):
            out.add(m)
            if limit and len(out) >= limit:
                break
    return out


def _union(sets: list[set[bytes] | None]) -> set[bytes]:
    out: set[bytes] = set()
    for s in sets:
        if s is not None:
            out |= s
    return out


def _diff(sets: list[set[bytes] | None]) -> set[bytes]:
    first = sets[0]
    if first is None:
        return set()
    out = set(first)
    for s in sets[1:]:
        if s is not None:
            out -= s
    return out


def _store(ctx: Ctx, dst: bytes, result: set[bytes]) -> int:
    """Replace `dst` with `result` (deleting it when empty), dropping any TTL, as Redis does."""
    if ctx.lookup_write(dst) is not None:
        ctx.emit(("DEL", dst))
    if result:
        ctx.emit(("SADD", dst, list(result)))
    return len(result)


@command("sinter", -2, "readonly", keys=(1, -1, 1))
def sinter(ctx: Ctx, args: list[bytes]) -> Any:
    return _inter(_sets(ctx, args))


@command("sunion", -2, "readonly", keys=(1, -1, 1))
def sunion(ctx: Ctx, args: list[bytes]) -> Any:
    return _union(_sets(ctx, args))


@command("sdiff", -2, "readonly", keys=(1, -1, 1))
def sdiff(ctx: Ctx, args: list[bytes]) -> Any:
    return _diff(_sets(ctx, args))


@command("sinterstore", -3, "write denyoom", keys=(1, -1, 1))
def sinterstore(ctx: Ctx, args: list[bytes]) -> Any:
    return _store(ctx, args[0], _inter(_sets(ctx, args[1:])))


@command("sunionstore", -3, "write denyoom", keys=(1, -1, 1))
def sunionstore(ctx: Ctx, args: list[bytes]) -> Any:
    return _store(ctx, args[0], _union(_sets(ctx, args[1:])))


@command("sdiffstore", -3, "write denyoom", keys=(1, -1, 1))
def sdiffstore(ctx: Ctx, args: list[bytes]) -> Any:
    sets = _sets(ctx, args[1:])
    result = _diff(sets)
    n = _store(ctx, args[0], result)
    first = sets[0]
    if n and first is not None:
        # Redis's second algorithm (chosen when it looks cheaper: the first set's size times the
        # sets present, halved, against all their sizes) adds the whole first set to the new set
        # and removes the others' members from it: a hashtable the first set's content made
        # stays one, however few integers are left.
        present = [len(x) for x in sets if x is not None]
        if len(first) * len(present) // 2 > sum(present):
            built = set_content_encoding(first)
            if built != set_content_encoding(result):
                ctx.emit(("ENCODING", args[0], built))
    return n


@command("sintercard", -3, "readonly movablekeys", keys=(0, 0, 0))
def sintercard(ctx: Ctx, args: list[bytes]) -> Any:
    try:
        numkeys = parse_int(args[0])
    except CommandError:
        numkeys = 0
    if numkeys < 1:
        raise err("ERR numkeys should be greater than 0")
    if numkeys > len(args) - 1:
        raise err("ERR Number of keys can't be greater than number of args")
    keys, opts = args[1:1 + numkeys], args[1 + numkeys:]
    limit = 0
    i = 0
    while i < len(opts):
        if opts[i].upper() == b"LIMIT" and i + 1 < len(opts):
            try:
                limit = parse_int(opts[i + 1])
            except CommandError:
                limit = -1
            if limit < 0:
                raise err("ERR LIMIT can't be negative")
            i += 2
        else:
            raise err(SYNTAX)
    return len(_inter(_sets(ctx, keys), limit))


@command("sscan", -3, "readonly")
def sscan(ctx: Ctx, args: list[bytes]) -> Any:
    cursor = parse_cursor(args[1])
    s = get_set(ctx, args[0])
    if s is None:
        return [b"0", []]
    # An intset is returned whole, cursor 0, whatever the COUNT (as a listpack hash by HSCAN).
    return scan_items(ctx, cursor, list(s), args[2:], lambda m, out: out.append(m), whole=set_encoding(s) == INTSET)
