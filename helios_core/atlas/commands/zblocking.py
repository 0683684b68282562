"""BZPOPMIN, BZPOPMAX and BZMPOP: the sorted-set pops that block (Redis 7.0 semantics and texts).

Each tries its non-blocking pop first (logged as the ZREM of what it took); with
every key empty it parks its client (blocking.py) on a `Block` of kind ZSet:
the registry looks after each command for a sorted set appearing under a
waited key, so ZADD and the other commands that create one need not signal.
Inside MULTI/EXEC or a script they answer the timeout's nil at once.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.blocking import Block, may_block
from helios_core.atlas.commands.lists import parse_timeout
from helios_core.atlas.commands.table import SYNTAX, Ctx, command, err, parse_int
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.zset import ZSet
from helios_core.errors import CommandError

__all__: list[str] = []

LONG_MAX = (1 << 63) - 1


def _zpop(ctx: Ctx, keys: list[bytes], maximum: bool, count: int) -> tuple[bytes, list[tuple[float, bytes]]] | None:
    """Pop up to `count` from the first non-empty sorted set among `keys` (WRONGTYPE stops it)."""
    for key in keys:
        z = ctx.get_zset(key)
        if z is None:
            continue
        n = len(z)
        if maximum:
            got = list(z.order.islice(max(n - count, 0), n))
            got.reverse()
        else:
            got = list(z.order.islice(0, count))
        ctx.emit(("ZREM", key, [m for _, m in got]))
        return key, got
    return None


def _bzpop(ctx: Ctx, args: list[bytes], maximum: bool, name: bytes) -> Any:
    deadline = parse_timeout(args[-1], ctx.now_ms)
    keys = args[:-1]
    got = _zpop(ctx, keys, maximum, 1)
    if got is not None:
        key, ((score, member),) = got
        return [key, member, score]
    if may_block(ctx, name, len(args)):
        return Block(keys, deadline, ZSet)
    return NULL_ARRAY


@command("bzpopmin", -3, "write noscript blocking fast", keys=(1, -2, 1))
def bzpopmin(ctx: Ctx, args: list[bytes]) -> Any:
    return _bzpop(ctx, args, False, b"bzpopmin")


@command("bzpopmax", -3, "write noscript blocking fast", keys=(1, -2, 1))
def bzpopmax(ctx: Ctx, args: list[bytes]) -> Any:
    return _bzpop(ctx, args, True, b"bzpopmax")


def _range_long(raw: bytes, lo: int, msg: str) -> int:
    try:
        v = parse_int(raw)
    except CommandError:
        raise err(msg) from None
    if v < lo:
        raise err(msg)
    return v


@command("bzmpop", -5, "write blocking movablekeys", keys=(0, 0, 0))
def bzmpop(ctx: Ctx, args: list[bytes]) -> Any:
    numkeys = _range_long(args[1], 1, "ERR numkeys should be greater than 0")
    where_at = numkeys + 2
    if where_at >= len(args):
        raise err(SYNTAX)
    where = args[where_at].upper()
    if where != b"MIN" and where != b"MAX":
        raise err(SYNTAX)
    count = -1
    i = where_at + 1
    while i < len(args):
        if count == -1 and args[i].upper() == b"COUNT" and i + 1 < len(args):
            count = _range_long(args[i + 1], 1, "ERR count should be greater than 0")
            i += 2
        else:
            raise err(SYNTAX)
    deadline = parse_timeout(args[0], ctx.now_ms)
    keys = args[2:where_at]
    got = _zpop(ctx, keys, where == b"MAX", 1 if count == -1 else count)
    if got is not None:
        key, pairs = got
        return [key, [[member, score] for score, member in pairs]]
    if may_block(ctx, b"bzmpop", len(args)):
        return Block(keys, deadline, ZSet)
    return NULL_ARRAY
