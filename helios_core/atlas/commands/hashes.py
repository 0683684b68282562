"""Hash commands with Redis 7.0's semantics, replies and error texts.

Every write compiles to HSET/HDEL effects (HINCRBY is logged as the HSET of
its result), so AOF replay never recomputes anything.  HGETALL returns a dict:
a map in RESP3, a flat array in RESP2, as Redis replies; for a listpack hash
in insertion order, as Redis's.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from helios_core.atlas.commands.longdouble import ld_add, ld_format, ld_parse
from helios_core.atlas.commands.table import OK, SYNTAX, Ctx, command, err, parse_int
from helios_core.atlas.hashset import (
    get_hash,
    parse_cursor,
    pick_distinct,
    pick_one,
    pick_repeating,
    resp3,
    scan_items,
)
from helios_core.atlas.hashtype import LISTPACK
from helios_core.errors import CommandError

__all__: list[str] = []

LONG_MAX = (1 << 63) - 1


def _pairs(ctx: Ctx, name: str, args: list[bytes]) -> list[tuple[bytes, bytes]]:
    # (Values over atlas.max_value_bytes never get here: Engine.execute checks every argument
    # of a write command first.)
    n = len(args)
    if n < 3 or not n % 2:
        raise err(f"ERR wrong number of arguments for '{name}' command")
    if n == 3:  # one field, the common case
        return [(args[1], args[2])]
    return list(zip(args[1::2], args[2::2], strict=True))


@command("hset", -4, "write denyoom fast")
def hset(ctx: Ctx, args: list[bytes]) -> Any:
    pairs = [(args[1], args[2])] if len(args) == 3 else _pairs(ctx, "hset", args)
    h = get_hash(ctx, args[0])
    if len(pairs) == 1:  # (no set comprehension: its frame costs more than the lookup)
        new = 1 if h is None or pairs[0][0] not in h else 0
    elif h is None:
        new = len({f for f, _ in pairs})
    else:
        new = len({f for f, _ in pairs if f not in h})
    ctx.emit(("HSET", args[0], pairs))
    return new


@command("hmset", -4, "write denyoom fast")
def hmset(ctx: Ctx, args: list[bytes]) -> Any:
    pairs = _pairs(ctx, "hmset", args)
    get_hash(ctx, args[0])
    ctx.emit(("HSET", args[0], pairs))
    return OK


@command("hsetnx", 4, "write denyoom fast")
def hsetnx(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    if h is not None and args[1] in h:
        return 0
    if ctx.engine is not None:
        ctx.engine.check_value_size(len(args[2]))
    ctx.emit(("HSET", args[0], [(args[1], args[2])]))
    return 1


@command("hget", 3, "readonly fast")
def hget(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    return None if h is None else h.get(args[1])


@command("hmget", -3, "readonly fast")
def hmget(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    if h is None:
        return [None] * (len(args) - 1)
    return [h.get(f) for f in args[1:]]


@command("hgetall", 2, "readonly")
def hgetall(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    return {} if h is None else h.to_dict()


@command("hkeys", 2, "readonly")
def hkeys(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    return [] if h is None else h.keys()


@command("hvals", 2, "readonly")
def hvals(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    return [] if h is None else h.values()


@command("hlen", 2, "readonly fast")
def hlen(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    return 0 if h is None else len(h)


@command("hexists", 3, "readonly fast")
def hexists(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    return int(h is not None and args[1] in h)


@command("hstrlen", 3, "readonly fast")
def hstrlen(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    v = None if h is None else h.get(args[1])
    return 0 if v is None else len(v)


@command("hdel", -3, "write fast")
def hdel(ctx: Ctx, args: list[bytes]) -> Any:
    h = get_hash(ctx, args[0])
    if h is None:
        return 0
    gone = [f for f in dict.fromkeys(args[1:]) if f in h]
    if gone:
        ctx.emit(("HDEL", args[0], gone))
    return len(gone)


@command("hincrby", 4, "write denyoom fast")
def hincrby(ctx: Ctx, args: list[bytes]) -> Any:
    incr = parse_int(args[2])
    h = get_hash(ctx, args[0])
    cur = None if h is None else h.get(args[1])
    base = 0
    if cur is not None:
        try:
            base = parse_int(cur)
        except CommandError:
            raise err("ERR hash value is not an integer") from None
    new = base + incr
    if not -(1 << 63) <= new <= LONG_MAX:
        raise err("ERR increment or decrement would overflow")
    ctx.emit(("HSET", args[0], [(args[1], b"%d" % new)]))
    return new


@command("hincrbyfloat", 4, "write denyoom fast")
def hincrbyfloat(ctx: Ctx, args: list[bytes]) -> Any:
    incr = ld_parse(args[2])
    if isinstance(incr, float):  # +-inf: Redis 7.0 refuses it before looking at the hash
        raise err("ERR value is NaN or Infinity")
    h = get_hash(ctx, args[0])
    cur = None if h is None else h.get(args[1])
    base: Any = Fraction(0)
    if cur is not None:
        try:
            base = ld_parse(cur)
        except CommandError:
            raise err("ERR hash value is not a float") from None
    n = ld_add(base, incr)
    if isinstance(n, float):
        raise err("ERR increment would produce NaN or Infinity")
    out = ld_format(n)
    ctx.emit(("HSET", args[0], [(args[1], out)]))
    return out


@command("hrandfield", -2, "readonly")
def hrandfield(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) == 1:
        h = get_hash(ctx, args[0])
        return None if h is None else pick_one(h)
    count = parse_int(args[1])
    if count < -LONG_MAX:
        raise err(f"ERR value is out of range, value must between {-LONG_MAX} and {LONG_MAX}")
    withvalues = False
    if len(args) > 3 or (len(args) == 3 and args[2].upper() != b"WITHVALUES"):
        raise err(SYNTAX)
    if len(args) == 3:
        withvalues = True
        if not -(LONG_MAX // 2) <= count <= LONG_MAX // 2:
            raise err("ERR value is out of range")
    h = get_hash(ctx, args[0])
    if h is None or count == 0:
        return []
    d = h.to_dict()
    fields = list(d)
    chosen = pick_distinct(fields, count) if count > 0 else pick_repeating(fields, -count)
    if not withvalues:
        return chosen
    if resp3(ctx):  # RESP3: an array of [field, value] pairs; RESP2: flat
        return [[f, d[f]] for f in chosen]
    return [x for f in chosen for x in (f, d[f])]


@command("hscan", -3, "readonly")
def hscan(ctx: Ctx, args: list[bytes]) -> Any:
    cursor = parse_cursor(args[1])
    h = get_hash(ctx, args[0])
    if h is None:
        return [b"0", []]

    d = h.to_dict()

    def emit(field: bytes, out: list[Any]) -> None:
        out.append(field)
        out.append(d[field])

    return scan_items(ctx, cursor, list(d), args[2:], emit, whole=h.encoding == LISTPACK)

