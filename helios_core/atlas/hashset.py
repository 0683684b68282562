"""What the hash and set commands share: typed lookups, random picks and HSCAN/SSCAN.

A hash is a `Hash` (hashtype.py: listpack or hashtable, as Redis encodes it)
and a set a plain `set[bytes]`; the effects (HSET/HDEL/SADD/SREM) are the only
code that mutates them, and they delete a key whose hash or set empties.
"""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from itertools import islice
from typing import Any, TypeVar

from helios_core.atlas.commands.table import SYNTAX, WRONGTYPE, Ctx, err, parse_int
from helios_core.atlas.glob import compile_glob
from helios_core.atlas.hashtype import Hash

__all__ = ["get_hash", "get_set", "pick_one", "pick_distinct", "pick_repeating", "parse_cursor", "scan_items", "resp3",
           "SMALL"]

T = TypeVar("T")

# Redis keeps a small hash (listpack) and a small set of integers (intset) in one compact block
# that HSCAN/SSCAN return whole, cursor 0, whatever the COUNT.  A listpack hash and an intset are
# returned whole here too; other collections up to this size as well, so a client iterating a
# small collection sees Redis's reply.
SMALL = 128


def get_hash(ctx: Ctx, key: bytes) -> Hash | None:
    value = ctx.lookup(key)
    if value is not None and type(value) is not Hash:
        raise err(WRONGTYPE)
    return value


def get_set(ctx: Ctx, key: bytes) -> set[bytes] | None:
    value = ctx.lookup(key)
    if value is not None and type(value) is not set:
        raise err(WRONGTYPE)
    return value


def resp3(ctx: Ctx) -> bool:
    """Whether the caller speaks RESP3 (for the few replies whose shape, not only type, differs)."""
    return bool(getattr(ctx.conn, "resp3", False))


def pick_one(items: Collection[T]) -> T:
    """One element at random.  Python's set and dict have no random access, so this walks to a
    random position (at C speed, without copying): O(n), where Redis's is O(1)."""
    return next(islice(items, random.randrange(len(items)), None))


def pick_distinct(items: Sequence[T], count: int) -> list[T]:
    """`count` different elements in random order (all of them when count >= len)."""
    if count >= len(items):
        return list(items)
    return random.sample(items, count)


def pick_repeating(items: Sequence[T], count: int) -> list[T]:
    """`count` elements drawn independently (a negative count in SRANDMEMBER/HRANDFIELD)."""
    return random.choices(items, k=count)


_CURSOR_RE = re.compile(rb"[+-]?[0-9]+\Z")


def parse_cursor(raw: bytes) -> int:
    """A cursor as Redis's strtoul reads one (a sign is accepted, "-1" wraps to 2**64-1)."""
    if not _CURSOR_RE.match(raw) or abs(int(raw)) >= 1 << 64:
        raise err("ERR invalid cursor")
    return int(raw) % (1 << 64)


def scan_items(ctx: Ctx, cursor: int, items: list[bytes], options: list[bytes],
               emit: Callable[[bytes, list[Any]], None], whole: bool = False) -> list[Any]:
    """HSCAN/SSCAN over `items` (fields or members): [next cursor, flat replies from `emit`].

    Small collections (and any with `whole`: a listpack hash, an intset) come back whole with cursor 0,
    as Redis answers for its compact encodings.  Larger ones are walked in sorted order and
    the cursor stands for the last item returned (the engine's SCAN cursor table), so every
    item present during the whole iteration is returned once, as with SCAN.
    """
    count, pattern = 10, None
    i = 0
    while i < len(options):
        opt = options[i].upper()
        if i + 1 >= len(options):
            raise err(SYNTAX)
        if opt == b"COUNT":
            count = parse_int(options[i + 1])
            if count < 1:
                raise err(SYNTAX)
        elif opt == b"MATCH":
            pattern = options[i + 1] if options[i + 1] != b"*" else None
        else:
            raise err(SYNTAX)
        i += 2
    rx = compile_glob(pattern) if pattern is not None else None
    next_cursor = 0
    if len(items) > SMALL and not whole:
        ordered = sorted(items)
        cursors = ctx.engine.scan_cursors
        last = cursors.resolve(cursor)
        start = 0 if last is None else bisect_right(ordered, last)
        chosen = ordered[start:start + count]
        if start + count < len(ordered) and chosen:
            next_cursor = cursors.issue(chosen[-1])
    else:
        chosen = items
    out: list[Any] = []
    for item in chosen:
        if rx is None or rx.match(item):
            emit(item, out)
    return [b"%d" % next_cursor, out]
