"""Sorted-set commands with Redis's semantics and error texts."""

from __future__ import annotations

import math
from typing import Any

from helios_core.atlas.commands.table import (
    C_SPACE,
    NOT_INT,
    SYNTAX,
    Ctx,
    c_strtod,
    command,
    err,
    parse_float,
    parse_int,
)
from helios_core.atlas.hashset import parse_cursor, pick_distinct, pick_one, pick_repeating, scan_items

__all__ = ["Pairs", "zrange_items", "store_zset", "format_score"]


class Pairs(list):
    """(member, score) pairs: flattened in RESP2, nested pairs in RESP3 (as Redis replies)."""


def _zadd_generic(ctx: Ctx, key: bytes, args: list[bytes], incr_cmd: bool) -> Any:
    nx = xx = gt = lt = ch = incr = False
    i = 0
    while i < len(args):
        opt = args[i].upper()
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        elif opt == b"CH":
            ch = True
        elif opt == b"INCR":
            incr = True
        else:
            break
        i += 1
    rest = args[i:]
    if incr_cmd:
        incr = True
    if not rest or len(rest) % 2:
        raise err(SYNTAX)
    if nx and xx:
        raise err("ERR XX and NX options at the same time are not compatible")
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise err("ERR GT, LT, and/or NX options at the same time are not compatible")
    if incr and len(rest) > 2:
        raise err("ERR INCR option supports a single increment-element pair")
    pairs = [(parse_float(rest[j]), rest[j + 1]) for j in range(0, len(rest), 2)]
    z = ctx.get_zset(key)
    if z is None and xx:
        return None if incr else 0
    added = changed = 0
    pending: dict[bytes, float] = {}
    result = None
    for score, member in pairs:
        cur = pending.get(member, z.score(member) if z is not None else None)
        if cur is None:
            if xx:
                continue
            new = score
            added += 1
        else:
            if nx:
                continue
            new = cur + score if incr else score
            if math.isnan(new):
                raise err("ERR resulting score is not a number (NaN)")
            if (gt and new <= cur) or (lt and new >= cur):
                continue
            if new != cur:
                changed += 1
        pending[member] = new
        result = new
    # A member named twice ends with its last score: compare that one with the stored score.
    # "+ 0.0" stores -0 as 0, as Redis's (listpack) sorted sets do; the INCR reply keeps "-0".
    real = [(s + 0.0, m) for m, s in pending.items() if z is None or z.score(m) != s]
    if real:
        ctx.emit(("ZADD", key, real))
    if incr:
        return result
    return added + changed if ch else added


@command("zadd", -4, "write denyoom fast")
def zadd(ctx: Ctx, args: list[bytes]) -> Any:
    return _zadd_generic(ctx, args[0], args[1:], False)


@command("zincrby", 4, "write denyoom fast")
def zincrby(ctx: Ctx, args: list[bytes]) -> Any:
    return _zadd_generic(ctx, args[0], [b"INCR", args[1], args[2]], True)


@command("zrem", -3, "write fast")
def zrem(ctx: Ctx, args: list[bytes]) -> Any:
    z = ctx.get_zset(args[0])
    if z is None:
        return 0
    gone = [m for m in dict.fromkeys(args[1:]) if z.score(m) is not None]
    if gone:
        ctx.emit(("ZREM", args[0], gone))
    return len(gone)


@command("zscore", 3, "readonly fast")
def zscore(ctx: Ctx, args: list[bytes]) -> Any:
    z = ctx.get_zset(args[0])
    return None if z is None else z.score(args[1])


@command("zmscore", -3, "readonly fast")
def zmscore(ctx: Ctx, args: list[bytes]) -> Any:
    z = ctx.get_zset(args[0])
    return [None if z is None else z.score(m) for m in args[1:]]


@command("zcard", 2, "readonly fast")
def zcard(ctx: Ctx, args: list[bytes]) -> Any:
    z = ctx.get_zset(args[0])
    return 0 if z is None else len(z)


def parse_score_bound(raw: bytes) -> tuple[float, bool]:
    """A score bound as Redis's zslParseRange reads it: C strtod on the C string.

    So, unlike a ZADD score, leading space, out-of-range values (to inf or 0) and
    even an empty string (0) are accepted; only NaN and trailing junk are not.
    """
    excl = raw.startswith(b"(")
    text = (raw[1:] if excl else raw).split(b"\0", 1)[0]
    if not text:
        return 0.0, excl
    got = c_strtod(text.lstrip(C_SPACE))
    if got is None or math.isnan(got[0]):
        raise err("ERR min or max is not a float")
    return got[0], excl


def parse_lex_bound(raw: bytes) -> tuple[bytes | None, bool, int]:
    """(value, exclusive, infinity sign) for BYLEX bounds: '-', '+', '[x', '(x'."""
    if raw == b"-":
        return None, False, -1
    if raw == b"+":
        return None, False, 1
    if raw[:1] == b"[":
        return raw[1:], False, 0
    if raw[:1] == b"(":
        return raw[1:], True, 0
    raise err("ERR min or max not valid string range item")


def _limit(items: list, offset: int, count: int) -> list:
    if offset < 0:
        return []
    return items[offset:] if count < 0 else items[offset:offset + count]


def _reply(items: list[tuple[float, bytes]], withscores: bool) -> Any:
    if withscores:
        return Pairs((m, s) for s, m in items)
    return [m for _, m in items]


def zrange_items(ctx: Ctx, key: bytes, start: bytes, stop: bytes, by: str, rev: bool,
                 limit: tuple[int, int] | None) -> list[tuple[float, bytes]] | None:
    """The (score, member) items Z[REV]RANGE[BY*]/ZRANGESTORE select, in reply order; None when the
    key is missing.  Arguments are checked before the key is looked up, as Redis does."""
    # Redis's default count is -1, so an explicit "LIMIT x -1" is no LIMIT at all.
    if limit is not None and limit[1] != -1 and by == "index":
        raise err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
    if by == "index":
        a, b = parse_int(start), parse_int(stop)
        z = ctx.get_zset(key)
        if z is None:
            return None
        if rev:
            n = len(z)
            # Reverse indexes: 0 is the highest score.
            a, b = max(a if a >= 0 else n + a, 0), min(b if b >= 0 else n + b, n - 1)
            items = z.range_by_index(n - 1 - b, n - 1 - a) if a <= b else []
            items.reverse()
        else:
            items = z.range_by_index(a, b)
        return items
    lo_raw, hi_raw = (stop, start) if rev else (start, stop)
    if by == "score":
        lo, lo_ex = parse_score_bound(lo_raw)
        hi, hi_ex = parse_score_bound(hi_raw)
        z = ctx.get_zset(key)
        if z is None:
            return None
        items = list(z.range_by_score(lo, lo_ex, hi, hi_ex))
    else:
        lex_lo, lo_ex, lo_inf = parse_lex_bound(lo_raw)
        lex_hi, hi_ex, hi_inf = parse_lex_bound(hi_raw)
        z = ctx.get_zset(key)
        if z is None:
            return None
        offset, count = limit if limit is not None else (0, -1)
        return z.lex_walk((lo_inf, lex_lo or b""), lo_ex, (hi_inf, lex_hi or b""), hi_ex, rev, offset, count)
    if rev:
        items.reverse()
    if limit is not None:
        items = _limit(items, *limit)
    return items


def zrange_generic(ctx: Ctx, key: bytes, start: bytes, stop: bytes, by: str, rev: bool,
                   limit: tuple[int, int] | None, withscores: bool) -> Any:
    if limit is not None and limit[1] != -1 and by == "index":
        raise err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
    if withscores and by == "lex":
        raise err("ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    items = zrange_items(ctx, key, start, stop, by, rev, limit)
    return [] if items is None else _reply(items, withscores)


def _parse_range_opts(args: list[bytes], allow_by: bool, store: bool = False) -> Any:
    by, rev, limit, withscores = "index", False, None, False
    i = 0
    # REV, BYSCORE and BYLEX may each be given once, and BYSCORE/BYLEX not together;
    # ZRANGESTORE knows no WITHSCORES (a syntax error).
    while i < len(args):
        opt = args[i].upper()
        if opt == b"WITHSCORES" and not store:
            withscores = True
        elif opt == b"LIMIT" and i + 2 < len(args):
            limit = (parse_int(args[i + 1]), parse_int(args[i + 2]))
            i += 2
        elif allow_by and opt == b"BYSCORE" and by == "index":
            by = "score"
        elif allow_by and opt == b"BYLEX" and by == "index":
            by = "lex"
        elif allow_by and opt == b"REV" and not rev:
            rev = True
        else:
            raise err(SYNTAX)
        i += 1
    return by, rev, limit, withscores


@command("zrange", -4, "readonly")
def zrange(ctx: Ctx, args: list[bytes]) -> Any:
    by, rev, limit, withscores = _parse_range_opts(args[3:], True)
    return zrange_generic(ctx, args[0], args[1], args[2], by, rev, limit, withscores)


@command("zrangebyscore", -4, "readonly")
def zrangebyscore(ctx: Ctx, args: list[bytes]) -> Any:
    _, _, limit, withscores = _parse_range_opts(args[3:], False)
    return zrange_generic(ctx, args[0], args[1], args[2], "score", False, limit, withscores)


@command("zrevrangebyscore", -4, "readonly")
def zrevrangebyscore(ctx: Ctx, args: list[bytes]) -> Any:
    _, _, limit, withscores = _parse_range_opts(args[3:], False)
    return zrange_generic(ctx, args[0], args[1], args[2], "score", True, limit, withscores)


@command("zrevrange", -4, "readonly")
def zrevrange(ctx: Ctx, args: list[bytes]) -> Any:
    _, _, limit, withscores = _parse_range_opts(args[3:], False)
    return zrange_generic(ctx, args[0], args[1], args[2], "index", True, limit, withscores)


@command("zcount", 4, "readonly fast")
def zcount(ctx: Ctx, args: list[bytes]) -> Any:
    lo, lo_ex = parse_score_bound(args[1])
    hi, hi_ex = parse_score_bound(args[2])
    z = ctx.get_zset(args[0])
    if z is None:
        return 0
    return sum(1 for _ in z.range_by_score(lo, lo_ex, hi, hi_ex))


def _rank(ctx: Ctx, args: list[bytes], rev: bool) -> Any:
    withscore = False
    if len(args) == 3:
        if args[2].upper() != b"WITHSCORE":
            raise err(SYNTAX)
        withscore = True
    elif len(args) != 2:
        raise err(SYNTAX)
    z = ctx.get_zset(args[0])
    if z is None:
        return None
    r = z.rank(args[1])
    if r is None:
        return None
    if rev:
        r = len(z) - 1 - r
    return [r, z.score(args[1])] if withscore else r


@command("zrank", -3, "readonly fast")
def zrank(ctx: Ctx, args: list[bytes]) -> Any:
    return _rank(ctx, args, False)


@command("zrevrank", -3, "readonly fast")
def zrevrank(ctx: Ctx, args: list[bytes]) -> Any:
    return _rank(ctx, args, True)


def _pop(ctx: Ctx, args: list[bytes], high: bool) -> Any:
    if len(args) > 2:
        raise err(SYNTAX)
    count = 1
    if len(args) == 2:
        # Redis answers a count that is not a number with the same text as a negative one.
        count = parse_int(args[1], "ERR value is out of range, must be positive")
        if count < 0:
            raise err("ERR value is out of range, must be positive")
    z = ctx.get_zset(args[0])
    if z is None or count == 0:
        return Pairs() if len(args) == 2 else []
    n = len(z)
    items = z.range_by_index(max(n - count, 0), n - 1) if high else z.range_by_index(0, count - 1)
    if high:
        items.reverse()
    ctx.emit(("ZREM", args[0], [m for _, m in items]))
    if len(args) == 2:
        return Pairs((m, s) for s, m in items)
    return [x for s, m in items for x in (m, s)]


@command("zpopmin", -2, "write fast")
def zpopmin(ctx: Ctx, args: list[bytes]) -> Any:
    return _pop(ctx, args, False)


@command("zpopmax", -2, "write fast")
def zpopmax(ctx: Ctx, args: list[bytes]) -> Any:
    return _pop(ctx, args, True)


@command("zremrangebyscore", 4, "write")
def zremrangebyscore(ctx: Ctx, args: list[bytes]) -> Any:
    lo, lo_ex = parse_score_bound(args[1])
    hi, hi_ex = parse_score_bound(args[2])
    z = ctx.get_zset(args[0])
    if z is None:
        return 0
    gone = [m for _, m in z.range_by_score(lo, lo_ex, hi, hi_ex)]
    if gone:
        ctx.emit(("ZREM", args[0], gone))
    return len(gone)


@command("zremrangebyrank", 4, "write")
def zremrangebyrank(ctx: Ctx, args: list[bytes]) -> Any:
    a, b = parse_int(args[1]), parse_int(args[2])
    z = ctx.get_zset(args[0])
    if z is None:
        return 0
    gone = [m for _, m in z.range_by_index(a, b)]
    if gone:
        ctx.emit(("ZREM", args[0], gone))
    return len(gone)



# -- BYLEX, ZRANGESTORE, ZRANDMEMBER, ZSCAN ---------------------------------------------------

@command("zrangebylex", -4, "readonly")
def zrangebylex(ctx: Ctx, args: list[bytes]) -> Any:
    _, _, limit, withscores = _parse_range_opts(args[3:], False)
    return zrange_generic(ctx, args[0], args[1], args[2], "lex", False, limit, withscores)


@command("zrevrangebylex", -4, "readonly")
def zrevrangebylex(ctx: Ctx, args: list[bytes]) -> Any:
    _, _, limit, withscores = _parse_range_opts(args[3:], False)
    return zrange_generic(ctx, args[0], args[1], args[2], "lex", True, limit, withscores)


def _lex_items(ctx: Ctx, args: list[bytes]) -> list[tuple[float, bytes]] | None:
    lo, lo_ex, lo_inf = parse_lex_bound(args[1])
    hi, hi_ex, hi_inf = parse_lex_bound(args[2])
    z = ctx.get_zset(args[0])
    if z is None:
        return None
    return z.lex_walk((lo_inf, lo or b""), lo_ex, (hi_inf, hi or b""), hi_ex, False, 0, -1)


@command("zlexcount", 4, "readonly fast")
def zlexcount(ctx: Ctx, args: list[bytes]) -> Any:
    return len(_lex_items(ctx, args) or ())


@command("zremrangebylex", 4, "write")
def zremrangebylex(ctx: Ctx, args: list[bytes]) -> Any:
    items = _lex_items(ctx, args)
    if items:
        ctx.emit(("ZREM", args[0], [m for _, m in items]))
    return len(items or ())


def store_zset(ctx: Ctx, dst: bytes, items: list[tuple[float, bytes]]) -> int:
    """Replace `dst` with a zset of `items` (deleting it when empty), dropping any TTL, as Redis's
    setKey/dbDelete do; logged as a DEL and one ZADD, so replay never recomputes the result."""
    if ctx.lookup_write(dst) is not None:
        ctx.emit(("DEL", dst))
    if items:
        ctx.emit(("ZADD", dst, [(s + 0.0, m) for s, m in items]))
    return len(items)


@command("zrangestore", -5, "write denyoom", keys=(1, 2, 1))
def zrangestore(ctx: Ctx, args: list[bytes]) -> Any:
    by, rev, limit, _ = _parse_range_opts(args[4:], True, store=True)
    items = zrange_items(ctx, args[1], args[2], args[3], by, rev, limit)
    return store_zset(ctx, args[0], items or [])


LONG_MAX = (1 << 63) - 1


@command("zrandmember", -2, "readonly")
def zrandmember(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) == 1:
        z = ctx.get_zset(args[0])
        return None if z is None else pick_one(z.scores)
    count = parse_int(args[1], NOT_INT)
    if count < -LONG_MAX:
        raise err(f"ERR value is out of range, value must between {-LONG_MAX} and {LONG_MAX}")
    if len(args) > 3 or (len(args) == 3 and args[2].upper() != b"WITHSCORES"):
        raise err(SYNTAX)
    withscores = len(args) == 3
    if withscores and not -(LONG_MAX // 2) <= count <= LONG_MAX // 2:  # C division truncates
        raise err("ERR value is out of range")
    z = ctx.get_zset(args[0])
    if z is None or count == 0:
        return []
    members = list(z.scores)
    chosen = pick_distinct(members, count) if count > 0 else pick_repeating(members, -count)
    if withscores:
        return Pairs((m, z.scores[m]) for m in chosen)
    return chosen


def format_score(score: float) -> bytes:
    """A score as ZSCAN sends it: Redis 7.0's d2string/ld2string text ("%.17g", "inf", "-0")."""
    return b"%.17g" % score


@command("zscan", -3, "readonly")
def zscan(ctx: Ctx, args: list[bytes]) -> Any:
    cursor = parse_cursor(args[1])
    z = ctx.get_zset(args[0])
    if z is None:
        return [b"0", []]
    scores = z.scores

    def emit(member: bytes, out: list[Any]) -> None:
        out.append(member)
        out.append(format_score(scores[member]))

    # In score order, as Redis walks a small (listpack) zset.
    return scan_items(ctx, cursor, [m for _, m in z.items()], args[2:], emit)
