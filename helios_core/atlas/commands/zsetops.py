"""Sorted-set algebra and multi-key pops: ZUNION/ZINTER/ZDIFF (and their STORE forms),
ZINTERCARD and ZMPOP, with Redis 7.0's argument order, replies and error texts.

Inputs may be sorted sets or plain sets (a set member scores 1.0), as in Redis.
Scores are combined exactly as t_zset.c does, so floating-point results are
bit-equal: inputs of ZUNION/ZINTER are visited from the smallest to the largest
(a stable sort, as glibc's qsort merge sort is), `weight * score` that is NaN
counts as 0, and a SUM that becomes NaN (inf + -inf) is 0.  The STORE forms
log the result as a DEL and one ZADD (store_zset), never the computation.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.table import SYNTAX, WRONGTYPE, Ctx, command, err, parse_float, parse_int
from helios_core.atlas.commands.zsets import Pairs, store_zset
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.zset import ZSet
from helios_core.errors import CommandError

__all__ = ["parse_zmpop", "zmpop_pop"]

LONG_MAX = (1 << 63) - 1
UNION, INTER, DIFF = "union", "inter", "diff"

Source = ZSet | set[bytes] | None


def _scores(src: Source) -> dict[bytes, float]:
    """member -> score of one input (a set's members score 1.0)."""
    if src is None:
        return {}
    if isinstance(src, ZSet):
        return src.scores
    return dict.fromkeys(src, 1.0)


def _ordered(src: Source) -> list[tuple[bytes, float]]:
    """(member, score) in the input's own order (a zset by score; a set in any order)."""
    if src is None:
        return []
    if isinstance(src, ZSet):
        return [(m, s) for s, m in src.items()]
    return [(m, 1.0) for m in src]


def _aggregate(target: float, value: float, how: bytes) -> float:
    if how == b"SUM":
        out = target + value
        return 0.0 if out != out else out  # inf + -inf is NaN: Redis's convention is 0
    if how == b"MIN":
        return value if value < target else target
    return value if value > target else target


def _parse(ctx: Ctx, args: list[bytes], name: str, op: str, has_dst: bool, card: bool) -> tuple:
    """numkeys, the keys' values (looked up before the options, as Redis does) and the options."""
    setnum = parse_int(args[0])
    if setnum < 1:
        raise err(f"ERR at least 1 input key is needed for '{name}' command")
    if setnum > len(args) - 1:
        raise err(SYNTAX)
    keys = args[1:1 + setnum]
    sources: list[Source] = []
    for key in keys:
        value = ctx.lookup(key)
        if value is not None and type(value) is not ZSet and type(value) is not set:
            raise err(WRONGTYPE)
        sources.append(value)
    weights = [1.0] * setnum
    how, withscores, limit = b"SUM", False, 0
    j = 1 + setnum
    while j < len(args):
        opt = args[j].upper()
        remaining = len(args) - j
        if op != DIFF and not card and remaining >= setnum + 1 and opt == b"WEIGHTS":
            weights = [parse_float(w, "ERR weight value is not a float") for w in args[j + 1:j + 1 + setnum]]
            j += setnum + 1
        elif op != DIFF and not card and remaining >= 2 and opt == b"AGGREGATE":
            how = args[j + 1].upper()
            if how not in (b"SUM", b"MIN", b"MAX"):
                raise err(SYNTAX)
            j += 2
        elif not has_dst and not card and opt == b"WITHSCORES":
            withscores = True
            j += 1
        elif card and remaining >= 2 and opt == b"LIMIT":
            try:
                limit = parse_int(args[j + 1])
            except CommandError:
                limit = -1
            if limit < 0:
                raise err("ERR LIMIT can't be negative")
            j += 2
        else:
            raise err(SYNTAX)
    return sources, weights, how, withscores, limit


def _compute(op: str, sources: list[Source], weights: list[float], how: bytes) -> dict[bytes, float]:
    """The result as member -> score."""
    out: dict[bytes, float] = {}
    _walk(op, sources, weights, how, out, None)
    return out


def _walk(op: str, sources: list[Source], weights: list[float], how: bytes, out: dict[bytes, float],
          card_limit: int | None) -> int:
    """Fill `out` with the result; with `card_limit` (ZINTERCARD) only count, stopping at a non-zero limit."""
    if op == DIFF:
        first = _scores(sources[0])
        rest = [_scores(s) for s in sources[1:] if s]
        out.update((m, s) for m, s in first.items() if not any(m in r for r in rest))
        return len(out)
    # Smallest input first, weights travelling with their input.
    order = sorted(range(len(sources)), key=lambda i: len(sources[i] or ()))
    srcs = [sources[i] for i in order]
    ws = [weights[i] for i in order]
    count = 0
    if op == INTER:
        if not srcs[0]:
            return 0
        others = [_scores(s) for s in srcs[1:]]
        for member, base in _ordered(srcs[0]):
            score = ws[0] * base
            if score != score:
                score = 0.0
            for j, other in enumerate(others, 1):
                value = other.get(member)
                if value is None:
                    break
                score = _aggregate(score, value * ws[j], how)
            else:
                if card_limit is not None:
                    count += 1
                    if card_limit and count >= card_limit:
                        break
                else:
                    out[member] = score
        return count
    for i, src in enumerate(srcs):
        for member, base in _ordered(src):
            score = ws[i] * base
            if score != score:
                score = 0.0
            cur = out.get(member)
            out[member] = score if cur is None else _aggregate(cur, score, how)
    return len(out)


def _sorted_items(result: dict[bytes, float]) -> list[tuple[float, bytes]]:
    return sorted((s, m) for m, s in result.items())


def _reply(ctx: Ctx, args: list[bytes], name: str, op: str) -> Any:
    sources, weights, how, withscores, _ = _parse(ctx, args, name, op, False, False)
    items = _sorted_items(_compute(op, sources, weights, how))
    if withscores:
        return Pairs((m, s) for s, m in items)
    return [m for _, m in items]


def _store(ctx: Ctx, args: list[bytes], name: str, op: str) -> Any:
    sources, weights, how, _, _ = _parse(ctx, args[1:], name, op, True, False)
    return store_zset(ctx, args[0], _sorted_items(_compute(op, sources, weights, how)))


@command("zunion", -3, "readonly movablekeys", keys=(0, 0, 0))
def zunion(ctx: Ctx, args: list[bytes]) -> Any:
    return _reply(ctx, args, "zunion", UNION)


@command("zinter", -3, "readonly movablekeys", keys=(0, 0, 0))
def zinter(ctx: Ctx, args: list[bytes]) -> Any:
    return _reply(ctx, args, "zinter", INTER)


@command("zdiff", -3, "readonly movablekeys", keys=(0, 0, 0))
def zdiff(ctx: Ctx, args: list[bytes]) -> Any:
    return _reply(ctx, args, "zdiff", DIFF)


@command("zunionstore", -4, "write denyoom movablekeys", keys=(1, 1, 1))
def zunionstore(ctx: Ctx, args: list[bytes]) -> Any:
    return _store(ctx, args, "zunionstore", UNION)


@command("zinterstore", -4, "write denyoom movablekeys", keys=(1, 1, 1))
def zinterstore(ctx: Ctx, args: list[bytes]) -> Any:
    return _store(ctx, args, "zinterstore", INTER)


@command("zdiffstore", -4, "write denyoom movablekeys", keys=(1, 1, 1))
def zdiffstore(ctx: Ctx, args: list[bytes]) -> Any:
    return _store(ctx, args, "zdiffstore", DIFF)


@command("zintercard", -3, "readonly movablekeys", keys=(0, 0, 0))
def zintercard(ctx: Ctx, args: list[bytes]) -> Any:
    sources, weights, how, _, limit = _parse(ctx, args, "zintercard", INTER, False, True)
    return _walk(INTER, sources, weights, how, {}, limit)


# -- ZMPOP ------------------------------------------------------------------------------------

def _range_long(raw: bytes, lo: int, hi: int, msg: str) -> int:
    try:
        v = parse_int(raw)
    except CommandError:
        raise err(msg) from None
    if not lo <= v <= hi:
        raise err(msg)
    return v


def parse_zmpop(args: list[bytes]) -> tuple[list[bytes], bool, int]:
    """`numkeys key... MIN|MAX [COUNT n]` -> (keys, pop the highest, count); BZMPOP's after its timeout."""
    numkeys = _range_long(args[0], 1, LONG_MAX, "ERR numkeys should be greater than 0")
    where_at = numkeys + 1
    if where_at >= len(args):
        raise err(SYNTAX)
    where = args[where_at].upper()
    if where not in (b"MIN", b"MAX"):
        raise err(SYNTAX)
    count = -1
    i = where_at + 1
    while i < len(args):
        if count == -1 and args[i].upper() == b"COUNT" and i + 1 < len(args):
            count = _range_long(args[i + 1], 1, LONG_MAX, "ERR count should be greater than 0")
            i += 2
        else:
            raise err(SYNTAX)
    return args[1:where_at], where == b"MAX", (1 if count == -1 else count)


def zmpop_pop(ctx: Ctx, keys: list[bytes], high: bool, count: int) -> list | None:
    """Pop from the first non-empty zset among `keys`: [key, [[member, score], ...]] (nested in
    RESP2 too, as Redis replies); None when all are empty.  The first key that exists decides:
    a value of another type there is WRONGTYPE."""
    for key in keys:
        z = ctx.get_zset(key)
        if z is None:
            continue
        n = len(z)
        items = z.range_by_index(max(n - count, 0), n - 1) if high else z.range_by_index(0, count - 1)
        if high:
            items.reverse()
        ctx.emit(("ZREM", key, [m for _, m in items]))
        return [key, [[m, s] for s, m in items]]
    return None


@command("zmpop", -4, "write movablekeys", keys=(0, 0, 0))
def zmpop(ctx: Ctx, args: list[bytes]) -> Any:
    keys, high, count = parse_zmpop(args)
    reply = zmpop_pop(ctx, keys, high, count)
    return NULL_ARRAY if reply is None else reply
