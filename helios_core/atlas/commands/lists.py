"""List commands, blocking ones included, with Redis 7.0's semantics, replies and error texts.

Every write compiles to the list effects (effects.py): pushes log their items,
pops how many went from which end, LSET/LINSERT the absolute position they
computed, LREM/LTRIM their normalised arguments, so replay never searches for
anything the live command did not already decide.  A push that creates a list
signals its blocked clients (blocking.py); a blocking command first tries its
non-blocking form and returns a `Block` when it may park its client.
"""

from __future__ import annotations

import math
from typing import Any

from helios_core.atlas.blocking import Block, may_block, signal
from helios_core.atlas.commands.longdouble import ld_parse
from helios_core.atlas.commands.table import OK, SYNTAX, WRONGTYPE, Ctx, command, err, parse_int
from helios_core.atlas.listtype import LEFT, List, get_list, norm_index, norm_range, parse_side
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.errors import CommandError

__all__ = ["parse_timeout"]

LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)
NOT_POSITIVE = "ERR value is out of range, must be positive"


def _range_long(raw: bytes, lo: int, hi: int, msg: str | None = None) -> int:
    """Redis's getRangeLongFromObjectOrReply: `msg` for both a bad integer and one out of range."""
    try:
        v = parse_int(raw)
    except CommandError:
        raise err(msg or "ERR value is not an integer or out of range") from None
    if not lo <= v <= hi:
        raise err(msg or f"ERR value is out of range, value must between {lo} and {hi}")
    return v


def parse_timeout(raw: bytes, now_ms: int) -> int:
    """A blocking command's timeout in seconds (a long double) as an absolute deadline in ms, 0: forever.

    As Redis 7.0 on x86-64: ceil(seconds * 1000) as a long long, where a value past its range
    (inf, 1e20) becomes LLONG_MIN and so "negative"; any positive fraction waits at least 1 ms.
    """
    try:
        seconds = ld_parse(raw)
    except CommandError:
        raise err("ERR timeout is not a float or out of range") from None
    if isinstance(seconds, float):  # +-inf
        ms = LONG_MIN
    else:
        ms = math.ceil(seconds * 1000)
        if not LONG_MIN <= ms <= LONG_MAX:
            ms = LONG_MIN
    if ms < 0:
        raise err("ERR timeout is negative")
    return min(now_ms + ms, LONG_MAX) if ms else 0


# -- pushing ------------------------------------------------------------------------------

def _push(ctx: Ctx, args: list[bytes], op: str, only_existing: bool) -> int:
    key = args[0]
    lst = get_list(ctx, key)
    if lst is None:
        if only_existing:
            return 0
        ctx.emit((op, key, args[1:]))
        signal(ctx, key)
        return len(args) - 1
    ctx.emit((op, key, args[1:]))
    return len(lst)


@command("lpush", -3, "write denyoom fast")
def lpush(ctx: Ctx, args: list[bytes]) -> Any:
    return _push(ctx, args, "LPUSH", False)


@command("rpush", -3, "write denyoom fast")
def rpush(ctx: Ctx, args: list[bytes]) -> Any:
    return _push(ctx, args, "RPUSH", False)


@command("lpushx", -3, "write denyoom fast")
def lpushx(ctx: Ctx, args: list[bytes]) -> Any:
    return _push(ctx, args, "LPUSH", True)


@command("rpushx", -3, "write denyoom fast")
def rpushx(ctx: Ctx, args: list[bytes]) -> Any:
    return _push(ctx, args, "RPUSH", True)


@command("linsert", 5, "write denyoom")
def linsert(ctx: Ctx, args: list[bytes]) -> Any:
    key, where, pivot, item = args
    where = where.upper()
    if where != b"BEFORE" and where != b"AFTER":
        raise err(SYNTAX)
    lst = get_list(ctx, key)
    if lst is None:
        return 0
    for i, x in enumerate(lst):
        if x == pivot:
            ctx.emit(("LINSERT", key, i if where == b"BEFORE" else i + 1, item))
            return len(lst)
    return -1


# -- popping ------------------------------------------------------------------------------

def _pop_items(ctx: Ctx, key: bytes, lst: List, side: bytes, count: int) -> list[bytes]:
    """Pop up to `count` items from one end (the key goes when the list empties)."""
    total = len(lst)
    n = min(count, total)
    if side == LEFT:
        items = lst.range(0, n - 1)
        ctx.emit(("LPOP", key, n))
    else:
        items = lst.range(total - n, total - 1)
        items.reverse()
        ctx.emit(("RPOP", key, n))
    return items


def _pop(ctx: Ctx, args: list[bytes], side: bytes, name: str) -> Any:
    if len(args) > 2:
        raise err(f"ERR wrong number of arguments for '{name}' command")
    has_count = len(args) == 2
    count = _range_long(args[1], 0, LONG_MAX, NOT_POSITIVE) if has_count else 1
    lst = get_list(ctx, args[0])
    if lst is None:
        return NULL_ARRAY if has_count else None
    if has_count and count == 0:
        return []
    items = _pop_items(ctx, args[0], lst, side, count)
    return items if has_count else items[0]


@command("lpop", -2, "write fast")
def lpop(ctx: Ctx, args: list[bytes]) -> Any:
    return _pop(ctx, args, LEFT, "lpop")


@command("rpop", -2, "write fast")
def rpop(ctx: Ctx, args: list[bytes]) -> Any:
    return _pop(ctx, args, b"RIGHT", "rpop")


def _mpop(ctx: Ctx, keys: list[bytes], side: bytes, count: int, single: bool) -> Any:
    """Pop from the first non-empty list among `keys`: [key, item] (single) or [key, [items]];
    None when every key is empty.  A key of another type before it is WRONGTYPE."""
    for key in keys:
        lst = get_list(ctx, key)
        if lst is None:
            continue
        items = _pop_items(ctx, key, lst, side, count)
        return [key, items[0]] if single else [key, items]
    return None


def _parse_mpop(args: list[bytes]) -> tuple[list[bytes], bytes, int]:
    """LMPOP's `numkeys key... LEFT|RIGHT [COUNT n]` (BLMPOP's after its timeout)."""
    numkeys = _range_long(args[0], 1, LONG_MAX, "ERR numkeys should be greater than 0")
    where_at = numkeys + 1
    if where_at >= len(args):
        raise err(SYNTAX)
    side = parse_side(args[where_at])
    count = -1
    i = where_at + 1
    while i < len(args):
        if count == -1 and args[i].upper() == b"COUNT" and i + 1 < len(args):
            count = _range_long(args[i + 1], 1, LONG_MAX, "ERR count should be greater than 0")
            i += 2
        else:
            raise err(SYNTAX)
    return args[1:where_at], side, (1 if count == -1 else count)


@command("lmpop", -4, "write movablekeys", keys=(0, 0, 0))
def lmpop(ctx: Ctx, args: list[bytes]) -> Any:
    keys, side, count = _parse_mpop(args)
    reply = _mpop(ctx, keys, side, count, False)
    return NULL_ARRAY if reply is None else reply


def _move(ctx: Ctx, src: bytes, dst: bytes, wherefrom: bytes, whereto: bytes) -> Any:
    """LMOVE: the moved item, or nil when the source is empty."""
    lst = get_list(ctx, src)
    if lst is None:
        return None
    target = ctx.lookup(dst)
    if target is not None and type(target) is not List:
        raise err(WRONGTYPE)
    if src == dst and len(lst) == 1:
        # Rotating a one-item list onto itself: push the copy first, then pop the original, so
        # the key never empties on the way (an emptied key would lose its TTL; Redis keeps it).
        item = lst[0]
        ctx.emit(("LPUSH" if whereto == LEFT else "RPUSH", dst, [item]))
        ctx.emit(("LPOP" if wherefrom == LEFT else "RPOP", src, 1))
        return item
    item = _pop_items(ctx, src, lst, wherefrom, 1)[0]
    created = type(ctx.ks.data.get(dst)) is not List
    ctx.emit(("LPUSH" if whereto == LEFT else "RPUSH", dst, [item]))
    if created:
        signal(ctx, dst)
    return item


@command("rpoplpush", 3, "write denyoom", keys=(1, 2, 1))
def rpoplpush(ctx: Ctx, args: list[bytes]) -> Any:
    return _move(ctx, args[0], args[1], b"RIGHT", LEFT)


@command("lmove", 5, "write denyoom", keys=(1, 2, 1))
def lmove(ctx: Ctx, args: list[bytes]) -> Any:
    wherefrom, whereto = parse_side(args[2]), parse_side(args[3])
    return _move(ctx, args[0], args[1], wherefrom, whereto)


# -- blocking -----------------------------------------------------------------------------
# Each tries its non-blocking form; with nothing to pop it parks its client (a Block) when
# it may, else answers what Redis answers inside MULTI: the nil of a timeout.

def _bpop(ctx: Ctx, args: list[bytes], side: bytes, name: bytes) -> Any:
    deadline = parse_timeout(args[-1], ctx.now_ms)
    keys = args[:-1]
    reply = _mpop(ctx, keys, side, 1, True)
    if reply is not None:
        return reply
    if may_block(ctx, name, len(args)):
        return Block(keys, deadline)
    return NULL_ARRAY


@command("blpop", -3, "write noscript blocking", keys=(1, -2, 1))
def blpop(ctx: Ctx, args: list[bytes]) -> Any:
    return _bpop(ctx, args, LEFT, b"blpop")


@command("brpop", -3, "write noscript blocking", keys=(1, -2, 1))
def brpop(ctx: Ctx, args: list[bytes]) -> Any:
    return _bpop(ctx, args, b"RIGHT", b"brpop")


@command("blmpop", -5, "write blocking movablekeys", keys=(0, 0, 0))
def blmpop(ctx: Ctx, args: list[bytes]) -> Any:
    keys, side, count = _parse_mpop(args[1:])
    deadline = parse_timeout(args[0], ctx.now_ms)
    reply = _mpop(ctx, keys, side, count, False)
    if reply is not None:
        return reply
    if may_block(ctx, b"blmpop", len(args)):
        return Block(keys, deadline)
    return NULL_ARRAY


def _bmove(ctx: Ctx, args: list[bytes], wherefrom: bytes, whereto: bytes, name: bytes, nargs: int) -> Any:
    deadline = parse_timeout(args[-1], ctx.now_ms)
    src = args[0]
    if get_list(ctx, src) is not None:
        return _move(ctx, src, args[1], wherefrom, whereto)
    if may_block(ctx, name, nargs):
        return Block([src], deadline)
    return None


@command("brpoplpush", 4, "write denyoom noscript blocking", keys=(1, 2, 1))
def brpoplpush(ctx: Ctx, args: list[bytes]) -> Any:
    return _bmove(ctx, args, b"RIGHT", LEFT, b"brpoplpush", len(args))


@command("blmove", 6, "write denyoom noscript blocking", keys=(1, 2, 1))
def blmove(ctx: Ctx, args: list[bytes]) -> Any:
    wherefrom, whereto = parse_side(args[2]), parse_side(args[3])
    return _bmove(ctx, [args[0], args[1], args[4]], wherefrom, whereto, b"blmove", len(args))


# -- reading ------------------------------------------------------------------------------

@command("llen", 2, "readonly fast")
def llen(ctx: Ctx, args: list[bytes]) -> Any:
    lst = get_list(ctx, args[0])
    return 0 if lst is None else len(lst)


@command("lindex", 3, "readonly")
def lindex(ctx: Ctx, args: list[bytes]) -> Any:
    lst = get_list(ctx, args[0])
    if lst is None:
        return None
    i = norm_index(parse_int(args[1]), len(lst))
    return None if i is None else lst[i]


@command("lrange", 4, "readonly")
def lrange(ctx: Ctx, args: list[bytes]) -> Any:
    start, stop = parse_int(args[1]), parse_int(args[2])
    lst = get_list(ctx, args[0])
    if lst is None:
        return []
    span = norm_range(start, stop, len(lst))
    if span is None:
        return []
    return lst.range(*span)


@command("lpos", -3, "readonly")
def lpos(ctx: Ctx, args: list[bytes]) -> Any:
    key, item = args[0], args[1]
    rank, count, maxlen = 1, -1, 0
    i = 2
    while i < len(args):
        opt = args[i].upper()
        more = i + 1 < len(args)
        if opt == b"RANK" and more:
            rank = parse_int(args[i + 1])
            if rank == 0:
                raise err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
                          "or use negative to start from the end of the list")
        elif opt == b"COUNT" and more:
            count = _range_long(args[i + 1], 0, LONG_MAX, "ERR COUNT can't be negative")
        elif opt == b"MAXLEN" and more:
            maxlen = _range_long(args[i + 1], 0, LONG_MAX, "ERR MAXLEN can't be negative")
        else:
            raise err(SYNTAX)
        i += 2
    from_tail = rank < 0
    if from_tail and rank != LONG_MIN:  # (C's -LONG_MIN overflows back to LONG_MIN: any match counts)
        rank = -rank
    lst = get_list(ctx, key)
    if lst is None:
        return [] if count != -1 else None
    n = len(lst)
    found: list[int] = []
    matches = 0
    walk = reversed(lst) if from_tail else iter(lst)
    for index, x in enumerate(walk):
        if maxlen and index >= maxlen:
            break
        if x == item:
            matches += 1
            if matches >= rank:
                found.append(n - index - 1 if from_tail else index)
                if count == -1 or (count and matches - rank + 1 >= count):
                    break
    if count == -1:
        return found[0] if found else None
    return found


# -- changing in place --------------------------------------------------------------------

@command("lset", 4, "write denyoom")
def lset(ctx: Ctx, args: list[bytes]) -> Any:
    lst = ctx.lookup(args[0])
    if lst is None:
        raise err("ERR no such key")
    if type(lst) is not List:
        raise err(WRONGTYPE)
    i = norm_index(parse_int(args[1]), len(lst))
    if i is None:
        raise err("ERR index out of range")
    ctx.emit(("LSET", args[0], i, args[2]))
    return OK


@command("lrem", 4, "write")
def lrem(ctx: Ctx, args: list[bytes]) -> Any:
    count = parse_int(args[1])
    lst = get_list(ctx, args[0])
    if lst is None:
        return 0
    item = args[2]
    if count == 0:
        removed = lst.count(item)
    else:
        removed = min(abs(count), lst.count(item))
    if removed:
        if removed == len(lst):
            ctx.emit(("DEL", args[0]))
        else:
            ctx.emit(("LREM", args[0], count, item))
    return removed


@command("ltrim", 4, "write")
def ltrim(ctx: Ctx, args: list[bytes]) -> Any:
    start, stop = parse_int(args[1]), parse_int(args[2])
    lst = get_list(ctx, args[0])
    if lst is None:
        return OK
    n = len(lst)
    span = norm_range(start, stop, n)
    if span is None:
        ctx.emit(("DEL", args[0]))
    elif span != (0, n - 1):
        ctx.emit(("LTRIM", args[0], span[0], n - 1 - span[1]))
    return OK
