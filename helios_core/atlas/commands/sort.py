"""SORT and SORT_RO with Redis 7.0's options, replies, errors and limits.

    SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA] [STORE destination]

The elements of a list, set or sorted set are sorted as numbers (a double each, ties broken by
the elements' bytes), or with ALPHA as strings, by themselves or by the values other keys hold:
a pattern's first `*` is replaced by the element (`w_*`), and `key->field` reads a hash field.
BY a pattern without `*` (`nosort`) keeps the container's own order (a list's or sorted set's,
reversed by DESC; a set's, which STORE and scripts make ALPHA-sorted as Redis does so that what
is logged or replicated does not depend on hash order).  GET (repeatable, `#` for the element)
replaces each element by the values its patterns name, nil (STORE: the empty string) where
there is none.  STORE replaces the destination with a list of the result, or deletes it when
the result is empty: a DEL and an RPUSH of what was computed, so the AOF replays it as it was.

The keys BY and GET read are looked up as Redis's lookupKeyRead does (an expired one goes,
access times are recorded under an LRU/LFU policy) but are not the command's keys: COMMAND
GETKEYS, client tracking and WATCH know only the sorted key and the destination, as in Redis.

Cost: the sort is O(N log N) in the container's size N, the reply or stored list O(GETs x N);
LIMIT is clamped to the container's size before anything is allocated, as Redis clamps it.

Ties: numeric sorts are total (the elements break ties), so only ALPHA BY with equal (or
missing) values leaves ties; they keep the container's order (Python's sort is stable, as
glibc's qsort is for these sizes), where Redis's own partial sort (BY with LIMIT) may order
them otherwise, and a set's or sorted set's order is Redis's hash order, not atlasd's.
"""

from __future__ import annotations

import math
from typing import Any

from helios_core.atlas.blocking import signal
from helios_core.atlas.commands.table import (
    C_SPACE,
    NOT_INT,
    SYNTAX,
    WRONGTYPE,
    Ctx,
    c_strtod,
    command,
    err,
    parse_int,
)
from helios_core.atlas.hashtype import Hash
from helios_core.atlas.listvalue import List
from helios_core.atlas.packed import INTSET, set_encoding
from helios_core.atlas.zset import ZSet
from helios_core.errors import CommandError

__all__ = ["sort_keys", "sort_ro_keys"]

NOT_DOUBLE = "ERR One or more scores can't be converted into double"
_DBL_MIN = 2.2250738585072014e-308  # below it (not zero) glibc's strtod reports ERANGE


def _c_str(arg: bytes) -> bytes:
    """What C's string functions see of an argument: up to its first NUL."""
    nul = arg.find(b"\0")
    return arg if nul < 0 else arg[:nul]


def _score(value: bytes) -> float | None:
    """The double strtod reads from `value` as SORT checks it (None: Redis's conversion error):
    leading white space skipped, the rest up to the first NUL all of the number, no ERANGE
    (overflow or an underflow to zero or a subnormal), no NaN; nothing at all reads as 0."""
    text = _c_str(value)
    if not text:
        return 0.0
    got = c_strtod(text.lstrip(C_SPACE))
    if got is None or got[1]:
        return None
    v = got[0]
    if math.isnan(v) or (v != 0 and abs(v) < _DBL_MIN):
        return None
    return v


def lookup_pattern(ctx: Ctx, pattern: bytes, subst: bytes) -> bytes | None:
    """The value a BY/GET pattern names for element `subst` (Redis's lookupKeyByPattern): `#` is
    the element itself; otherwise its first `*` takes the element's place, and `key->field`
    (something after the arrow) reads a field of the hash at key.  None: no `*`, no such key or
    field, or a key of another type."""
    p = _c_str(pattern)
    if p == b"#":
        return subst
    star = p.find(b"*")
    if star < 0:
        return None
    arrow = p.find(b"->", star + 1)
    field: bytes | None = None
    end = len(pattern)
    if arrow >= 0 and arrow + 2 < len(p):
        field, end = pattern[arrow + 2:], arrow
    key = pattern[:star] + subst + pattern[star + 1:end]
    value = ctx.lookup(key)
    if value is None:
        return None
    evictor = getattr(ctx.engine, "evictor", None)
    if evictor is not None and evictor.tracks_access:  # (lookupKeyRead touches what it reads)
        evictor.touch(ctx.ks.access, key, ctx.now_ms)
    if field is not None:
        if type(value) is not Hash:
            return None
        found: bytes | None = value.get(field)
        return found
    return value if type(value) is bytes else None


class _Options:
    __slots__ = ("desc", "alpha", "start", "count", "store", "by", "dontsort", "gets")

    def __init__(self) -> None:
        self.desc = self.alpha = self.dontsort = False
        self.start, self.count = 0, -1
        self.store: bytes | None = None
        self.by: bytes | None = None
        self.gets: list[bytes] = []


def _parse(args: list[bytes], readonly: bool) -> _Options:
    """SORT's options in Redis's order of checks: the first bad one is the error."""
    o = _Options()
    n, j = len(args), 1
    while j < n:
        left = n - j - 1
        opt = _c_str(args[j]).lower()
        if opt == b"asc":
            o.desc = False
        elif opt == b"desc":
            o.desc = True
        elif opt == b"alpha":
            o.alpha = True
        elif opt == b"limit" and left >= 2:
            o.start = parse_int(args[j + 1], NOT_INT)
            o.count = parse_int(args[j + 2], NOT_INT)
            j += 2
        elif opt == b"store" and left >= 1 and not readonly:
            o.store = args[j + 1]
            j += 1
        elif opt == b"by" and left >= 1:
            o.by = args[j + 1]
            if b"*" not in _c_str(o.by):
                o.dontsort = True  # (for good: a later BY with a `*` does not sort again, as in Redis)
            j += 1
        elif opt == b"get" and left >= 1:
            o.gets.append(args[j + 1])
            j += 1
        else:
            raise err(SYNTAX)
        j += 1
    return o


def _in_script(ctx: Ctx) -> bool:
    scripting = getattr(ctx.engine, "scripting", None)
    return bool(getattr(scripting, "running", False))


def _set_order(s: set[bytes]) -> list[bytes]:
    """A set's elements in the order Redis walks it where atlasd can tell: an intset's ascending."""
    if set_encoding(s) == INTSET:
        return sorted(s, key=int)
    return list(s)


def _sort(ctx: Ctx, args: list[bytes], readonly: bool) -> Any:
    o = _parse(args, readonly)
    value = ctx.lookup(args[0])
    kind = type(value)
    if value is not None and kind is not List and kind is not set and kind is not ZSet:
        raise CommandError(WRONGTYPE)
    dontsort, alpha, by = o.dontsort, o.alpha, o.by
    if dontsort and kind is set and (o.store is not None or _in_script(ctx)):
        dontsort, alpha, by = False, True, None  # a set's own order is its hash order: not for the AOF
    if kind is ZSet:
        value.skiplist = True  # (Redis converts the sorted set it sorts, SORT_RO too; not logged, as there)
    size = len(value) if value is not None else 0

    # LIMIT, clamped to the size first (no caller's number allocates more than the input has).
    start = min(max(o.start, 0), size)
    count = min(max(o.count, -1), size)
    end = size - 1 if count < 0 else start + count - 1
    if start >= size:
        start, end = size - 1, size - 2
    end = min(end, size - 1)

    if value is None:
        elems: list[bytes] = []
    elif dontsort and (kind is List or kind is ZSet):
        # The range straight from the container's own order (DESC: from its end).
        elems = []
        if end >= start:
            if kind is List:
                if o.desc:
                    lo, hi = size - 1 - end, size - 1 - start
                    elems = value.range(lo, hi)[::-1]
                else:
                    elems = value.range(start, end)
            else:
                if o.desc:
                    lo, hi = size - 1 - end, size - 1 - start
                    elems = [m for _, m in value.range_by_index(lo, hi)][::-1]
                else:
                    elems = [m for _, m in value.range_by_index(start, end)]
            end -= start
            start = 0
    elif kind is List:
        elems = list(value)
    elif kind is set:
        elems = _set_order(value)
    else:
        elems = list(value.scores)

    if not dontsort:
        elems = _sorted(ctx, elems, by, alpha, o.desc, o.store is not None)

    getop = len(o.gets)
    picked = elems[start:end + 1] if end >= start else []
    if o.store is None:
        if not getop:
            return picked
        return [lookup_pattern(ctx, g, e) for e in picked for g in o.gets]
    if not getop:
        out = picked
    else:
        out = []
        for e in picked:
            for g in o.gets:
                v = lookup_pattern(ctx, g, e)
                out.append(b"" if v is None else v)
    dst = o.store
    existed = ctx.lookup_write(dst) is not None
    if out:
        if existed:
            ctx.emit(("DEL", dst))
        ctx.emit(("RPUSH", dst, out))
        if not existed:
            signal(ctx, dst)  # (a new list: clients blocked on it are served, as after a push)
    elif existed:
        ctx.emit(("DEL", dst))
    return len(out)


def _sorted(ctx: Ctx, elems: list[bytes], by: bytes | None, alpha: bool, desc: bool, store: bool) -> list[bytes]:
    """The elements in SORT's order.  Every element's weight is looked up (and every conversion
    tried) before the error, as Redis loads the whole vector first."""
    if by is not None:
        weights = [lookup_pattern(ctx, by, e) for e in elems]
    if alpha:
        if by is None:
            if store:  # (Redis compares binary-safe for what it stores, with strcoll for a reply)
                return sorted(elems, reverse=desc)
            return sorted(elems, key=_c_str, reverse=desc)
        # A missing weight sorts before any (both missing: a tie, left in place).
        if store:
            keys = [(0, b"") if w is None else (1, w) for w in weights]
        else:
            keys = [(0, b"") if w is None else (1, _c_str(w)) for w in weights]
        order = sorted(range(len(elems)), key=keys.__getitem__, reverse=desc)
        return [elems[i] for i in order]
    scores: list[float] = []
    bad = False
    for i, e in enumerate(elems):
        if by is not None:
            w = weights[i]
            if w is None:
                scores.append(0.0)
                continue
        else:
            w = e
        s = _score(w)
        if s is None:
            bad = True
            s = 0.0
        scores.append(s)
    if bad:
        raise CommandError(NOT_DOUBLE)
    pairs = sorted(zip(scores, elems, strict=True), reverse=desc)
    return [e for _, e in pairs]


@command("sort", -2, "write denyoom movablekeys")
def sort(ctx: Ctx, args: list[bytes]) -> Any:
    return _sort(ctx, args, readonly=False)


@command("sort_ro", -2, "readonly movablekeys")
def sort_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _sort(ctx, args, readonly=True)


# -- COMMAND GETKEYS (Redis's sortGetKeys) ------------------------------------------------------

_SKIP = {b"limit": 2, b"get": 1, b"by": 1}


def sort_keys(argv: list[bytes]) -> list[tuple[int, tuple[str, ...]]]:
    """SORT's keys: the sorted key, then the last STORE's destination.  Options are skipped with
    their arguments; anything else counts as a word alone (a STORE's key is looked at as an option
    too, as Redis's scan does)."""
    found: list[tuple[int, tuple[str, ...]]] = [(1, ("RO", "access"))]
    store = 0
    i, n = 2, len(argv)
    while i < n:
        opt = _c_str(argv[i]).lower()
        skip = _SKIP.get(opt)
        if skip is not None:
            i += skip
        elif opt == b"store" and i + 1 < n:
            store = i + 1
        i += 1
    if store:
        found.append((store, ("OW", "update")))
    return found


def sort_ro_keys(argv: list[bytes]) -> list[tuple[int, tuple[str, ...]]]:
    """SORT_RO's key: the sorted one (its BY/GET spec is 'unknown', so Redis asks this function)."""
    return [(1, ("RO", "access"))]
