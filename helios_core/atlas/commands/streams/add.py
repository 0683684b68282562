"""Adding and removing entries: XADD, XTRIM (and the MAXLEN/MINID/LIMIT options they share),
XDEL and XSETID.

XADD logs the concrete id it generated (`*` takes its milliseconds from the engine's
clock, never going below the stream's last id) and a trim logs how many entries went
from the head, so replay never consults a clock or redoes a trim's decision.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.blocking import signal
from helios_core.atlas.commands.streams.common import (
    ZERO,
    existing_stream,
    get_stream,
    incr_id,
    parse_add_id,
    parse_id,
)
from helios_core.atlas.commands.table import OK, SYNTAX, Ctx, command, err, parse_int
from helios_core.atlas.streamtype import MAX_ID, U64, Stream, StreamID, fmt_id

__all__: list[str] = []

MAXLEN, MINID = 1, 2


class _TrimArgs:
    __slots__ = ("strategy", "maxlen", "minid", "approx", "limit", "nomkstream", "id", "id_given", "seq_given")

    def __init__(self) -> None:
        self.strategy = 0
        self.maxlen = 0
        self.minid: StreamID = ZERO
        self.approx = False
        self.limit = 0
        self.nomkstream = False
        self.id: StreamID = ZERO
        self.id_given = False
        self.seq_given = True


def _threshold_at(argv: list[bytes], i: int, a: _TrimArgs) -> int:
    """The index of the threshold after MAXLEN/MINID at `i`, past an optional `~` (approximate) or `=`."""
    a.approx = len(argv) - i > 2 and argv[i + 1] == b"~"
    if a.approx or (len(argv) - i > 2 and argv[i + 1] == b"="):
        i += 1
    return i + 1


def _parse_add_trim(argv: list[bytes], xadd: bool) -> tuple[int, _TrimArgs]:
    """streamParseAddOrTrimArgsOrReply over the whole argv (name first): (index after the options)."""
    a = _TrimArgs()
    limit_given = False
    argc = len(argv)
    i = 2
    while i < argc:
        more = argc - 1 - i
        opt = argv[i]
        low = opt.lower()
        if xadd and opt == b"*":
            break
        if low == b"maxlen" and more:
            i = _threshold_at(argv, i, a)
            a.maxlen = parse_int(argv[i])
            if a.maxlen < 0:
                raise err("ERR The MAXLEN argument must be >= 0.")
            a.strategy = MAXLEN
        elif low == b"minid" and more:
            i = _threshold_at(argv, i, a)
            a.minid = parse_id(argv[i], 0, True)
            a.strategy = MINID
        elif low == b"limit" and more:
            a.limit = parse_int(argv[i + 1])
            if a.limit < 0:
                raise err("ERR The LIMIT argument must be >= 0.")
            limit_given = True
            i += 1
        elif xadd and low == b"nomkstream":
            a.nomkstream = True
        elif xadd:
            a.id, a.seq_given = parse_add_id(opt)
            a.id_given = True
            break
        else:
            raise err(SYNTAX)
        i += 1
    if a.limit and not a.strategy:
        raise err("ERR syntax error, LIMIT cannot be used without specifying a trimming strategy")
    if not xadd and not a.strategy:
        raise err("ERR syntax error, XTRIM must be called with a trimming strategy")
    if limit_given:
        if not a.approx:
            raise err("ERR syntax error, LIMIT cannot be used without the special ~ option")
    elif a.approx:
        a.limit = 10000  # 100 * stream-node-max-entries, capped at 10000
    else:
        a.limit = 0
    return i, a


def _trim_count(s: Stream, a: _TrimArgs) -> int:
    """How many entries streamTrim removes from the head (whole nodes; inside one only when exact)."""
    length = len(s)
    deleted = 0
    for master, node in s.nodes.items():
        if a.strategy == MAXLEN and length <= a.maxlen:
            break
        entries = node.live
        if a.limit and deleted + entries > a.limit:
            break
        remove = (length - entries >= a.maxlen) if a.strategy == MAXLEN else node.last < a.minid
        if remove:
            length -= entries
            deleted += entries
            continue
        if a.approx:
            break
        for sid in s.entries.irange(master, node.last):
            if (length <= a.maxlen) if a.strategy == MAXLEN else sid >= a.minid:
                break
            length -= 1
            deleted += 1
        break
    return deleted


def _trim(ctx: Ctx, key: bytes, s: Stream, a: _TrimArgs) -> int:
    n = _trim_count(s, a)
    if n:
        ctx.emit(("XTRIM", key, n))
    return n


def _next_id(last: StreamID, now_ms: int) -> StreamID | None:
    """streamNextID: the clock's ms when it is past the last id's, else the last id plus one
    (a clock stepped back never produces an id below the last)."""
    if now_ms > last[0]:
        return now_ms, 0
    return incr_id(last)


@command("xadd", -5, "write denyoom fast")
def xadd(ctx: Ctx, args: list[bytes]) -> Any:
    argv = [b"xadd", *args]
    i, a = _parse_add_trim(argv, True)
    field_pos = i + 1
    nfields = len(argv) - field_pos
    if nfields < 2 or nfields % 2:
        raise err("ERR wrong number of arguments for 'xadd' command")
    if a.id_given and a.seq_given and a.id == ZERO:
        raise err("ERR The ID specified in XADD must be greater than 0-0")
    key = argv[1]
    s = get_stream(ctx, key)
    if s is None and a.nomkstream:
        return None
    last = s.last_id if s is not None else ZERO
    if last == MAX_ID:
        raise err("ERR The stream has exhausted the last possible ID, unable to add more items")
    if not a.id_given:
        sid = _next_id(last, ctx.now_ms)
    elif a.seq_given:
        sid = a.id
    elif a.id[0] == last[0]:
        sid = incr_id(last) if last[1] != U64 else None
    else:
        sid = a.id
    if sid is None or sid <= last:
        raise err("ERR The ID specified in XADD is equal or smaller than the target stream top item")
    ctx.emit(("XADD", key, sid, argv[field_pos:]))
    if a.strategy:
        after = ctx.ks.data.get(key)
        assert type(after) is Stream
        _trim(ctx, key, after, a)
    signal(ctx, key)
    return fmt_id(sid)


@command("xtrim", -4, "write")
def xtrim(ctx: Ctx, args: list[bytes]) -> Any:
    _, a = _parse_add_trim([b"xtrim", *args], False)
    s = get_stream(ctx, args[0])
    if s is None:
        return 0
    return _trim(ctx, args[0], s, a)


@command("xdel", -3, "write fast")
def xdel(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_stream(ctx, args[0])
    if s is None:
        return 0
    ids = [parse_id(a, 0, True) for a in args[1:]]
    present = [i for i in dict.fromkeys(ids) if i in s.entries]
    if present:
        ctx.emit(("XDEL", args[0], present))
    return len(present)


@command("xsetid", -3, "write denyoom fast")
def xsetid(ctx: Ctx, args: list[bytes]) -> Any:
    sid = parse_id(args[1], 0, True)
    added = -1
    maxdel = ZERO
    i = 2
    while i < len(args):
        more = len(args) - 1 - i
        opt = args[i].lower()
        if opt == b"entriesadded" and more:
            added = parse_int(args[i + 1])
            if added < 0:
                raise err("ERR entries_added must be positive")
            i += 2
        elif opt == b"maxdeletedid" and more:
            maxdel = parse_id(args[i + 1], 0, True)
            if sid < maxdel:
                raise err("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id")
            i += 2
        else:
            raise err(SYNTAX)
    s = existing_stream(ctx, args[0])
    if s.entries:
        if sid < s.last_entry_id():
            raise err("ERR The ID specified in XSETID is smaller than the target stream top item")
        if added != -1 and len(s) > added:
            raise err("ERR The entries_added specified in XSETID is smaller than the target stream length")
    ctx.emit(("XSETID", args[0], sid, s.entries_added if added == -1 else added,
              s.max_deleted if maxdel == ZERO else maxdel))
    return OK
