"""The pending entries lists of consumer groups: XACK, XPENDING, XCLAIM and XAUTOCLAIM.

A claim logs the PEL rows it wrote (consumer, delivery time, count) and acks the
pending ids whose entries were deleted, so replay never consults a clock.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.streams.common import (
    LLONG_MAX,
    ZERO,
    entry_reply,
    get_stream,
    parse_id,
    parse_interval,
)
from helios_core.atlas.commands.table import SYNTAX, Ctx, command, err, parse_int
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.streamtype import MAX_ID, U64, Stream, StreamID, fmt_id
from helios_core.errors import CommandError

__all__: list[str] = []


def _nogroup(key: bytes, group: bytes) -> CommandError:
    return err(f"NOGROUP No such key '{key.decode(errors='replace')}' or consumer group "
               f"'{group.decode(errors='replace')}'")


@command("xack", -4, "write fast")
def xack(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_stream(ctx, args[0])
    g = s.groups.get(args[1]) if s is not None else None
    if g is None:
        return 0
    ids = [parse_id(a, 0, True) for a in args[2:]]
    acked = [i for i in dict.fromkeys(ids) if i in g.pel]
    if acked:
        ctx.emit(("XACK", args[0], args[1], acked))
    return len(acked)


@command("xpending", -3, "readonly")
def xpending(ctx: Ctx, args: list[bytes]) -> Any:
    argc = len(args) + 1
    if argc != 3 and not 6 <= argc <= 9:
        raise err(SYNTAX)
    key, gname = args[0], args[1]
    minidle = 0
    count = 0
    consumer_name: bytes | None = None
    start = end = ZERO
    if argc >= 6:
        at = 2
        if args[2].lower() == b"idle":
            minidle = parse_int(args[3])
            if argc < 8:
                raise err(SYNTAX)
            at += 2
        count = max(parse_int(args[at + 2]), 0)
        start = parse_interval(args[at], 0, True)
        end = parse_interval(args[at + 1], U64, False)
        if at + 3 < len(args):
            consumer_name = args[at + 3]
    s = get_stream(ctx, key)
    g = s.groups.get(gname) if s is not None else None
    if g is None:
        raise _nogroup(key, gname)
    if argc == 3:
        if not g.pel:
            return [0, None, None, NULL_ARRAY]
        per = [[name, b"%d" % len(c.pel)] for name, c in sorted(g.consumers.items()) if c.pel]
        return [len(g.pel), fmt_id(g.pel.peekitem(0)[0]), fmt_id(g.pel.peekitem(-1)[0]), per]
    pel = g.pel
    if consumer_name is not None:
        c = g.consumers.get(consumer_name)
        if c is None:
            return []
        pel = c.pel
    now = ctx.now_ms
    out = []
    if count and start <= end:
        for sid in pel.irange(start, end):
            nack = pel[sid]
            if minidle and now - nack.time < minidle:
                continue
            out.append([fmt_id(sid), nack.consumer, max(now - nack.time, 0), nack.count])
            if len(out) == count:
                break
    return out


def _claimentry_reply(s: Stream, sid: StreamID, justid: bool) -> Any:
    if justid:
        return fmt_id(sid)
    return entry_reply(s, sid)


@command("xclaim", -6, "write fast")
def xclaim(ctx: Ctx, args: list[bytes]) -> Any:
    key, gname, cname = args[0], args[1], args[2]
    s = get_stream(ctx, key)
    g = s.groups.get(gname) if s is not None else None
    if s is None or g is None:
        raise _nogroup(key, gname)
    minidle = max(parse_int(args[3], "ERR Invalid min-idle-time argument for XCLAIM"), 0)
    ids: list[StreamID] = []
    j = 4
    while j < len(args):
        try:
            ids.append(parse_id(args[j], 0, True))
        except CommandError:
            break
        j += 1
    now = ctx.now_ms
    delivery = -1
    retry = -1
    force = justid = False
    last_opt = ZERO
    while j < len(args):
        more = len(args) - 1 - j
        opt = args[j].lower()
        if opt == b"force":
            force = True
        elif opt == b"justid":
            justid = True
        elif opt == b"idle" and more:
            j += 1
            delivery = now - parse_int(args[j], "ERR Invalid IDLE option argument for XCLAIM")
        elif opt == b"time" and more:
            j += 1
            delivery = parse_int(args[j], "ERR Invalid TIME option argument for XCLAIM")
        elif opt == b"retrycount" and more:
            j += 1
            retry = parse_int(args[j], "ERR Invalid RETRYCOUNT option argument for XCLAIM")
        elif opt == b"lastid" and more:
            j += 1
            last_opt = parse_id(args[j], 0, True)
        else:
            raise err(f"ERR Unrecognized XCLAIM option '{args[j].decode(errors='replace')}'")
        j += 1
    if last_opt > g.last_id:
        ctx.emit(("XGROUP", key, gname, last_opt, g.entries_read))
    if delivery == -1 or delivery < 0 or delivery > now:
        delivery = now
    out: list = []
    nacks: list[tuple[StreamID, int, int]] = []
    gone: list[StreamID] = []
    # The PEL as this command changes it (an id given twice sees its first claim).
    state: dict[StreamID, tuple[bytes, int, int] | None] = {}
    for sid in ids:
        if sid in state:
            cur = state[sid]
        else:
            nack = g.pel.get(sid)
            cur = None if nack is None else (nack.consumer, nack.time, nack.count)
        if sid not in s.entries:
            if cur is not None:  # pending but deleted from the stream: it leaves the PEL
                state[sid] = None
                gone.append(sid)
            continue
        if cur is None:
            if not force:
                continue
            cnt = 1
        else:
            cnt = cur[2]
            if minidle and now - cur[1] < minidle:
                continue
        cnt = retry if retry >= 0 else (cnt if justid else cnt + 1)
        state[sid] = (cname, delivery, cnt)
        nacks.append((sid, delivery, cnt))
        out.append(_claimentry_reply(s, sid, justid))
    touched = bool(nacks)
    if touched:
        ctx.emit(("XCONSUMER", key, gname, cname, now))
        ctx.emit(("XNACK", key, gname, cname, nacks))
    if gone:
        ctx.emit(("XACK", key, gname, gone))
    return out


@command("xautoclaim", -6, "write fast")
def xautoclaim(ctx: Ctx, args: list[bytes]) -> Any:
    key, gname, cname = args[0], args[1], args[2]
    minidle = max(parse_int(args[3], "ERR Invalid min-idle-time argument for XAUTOCLAIM"), 0)
    start = parse_interval(args[4], 0, True)
    count = 100
    justid = False
    j = 5
    while j < len(args):
        more = len(args) - 1 - j
        opt = args[j].lower()
        if opt == b"count" and more:
            count = parse_int(args[j + 1], "ERR COUNT must be > 0")
            if not 1 <= count <= LLONG_MAX // 4:
                raise err("ERR COUNT must be > 0")
            j += 1
        elif opt == b"justid":
            justid = True
        else:
            raise err(SYNTAX)
        j += 1
    s = get_stream(ctx, key)
    g = s.groups.get(gname) if s is not None else None
    if s is None or g is None:
        raise _nogroup(key, gname)
    attempts = count * 10
    now = ctx.now_ms
    out: list = []
    nacks: list[tuple[StreamID, int, int]] = []
    gone: list[StreamID] = []
    it = g.pel.irange(start, MAX_ID)
    cursor = ZERO
    for sid in it:
        if attempts == 0 or count == 0:
            cursor = sid
            break
        attempts -= 1
        nack = g.pel[sid]
        if sid not in s.entries:
            gone.append(sid)
            continue
        if minidle and now - nack.time < minidle:
            continue
        nacks.append((sid, now, nack.count if justid else nack.count + 1))
        out.append(_claimentry_reply(s, sid, justid))
        count -= 1
    if nacks:
        ctx.emit(("XCONSUMER", key, gname, cname, now))
        ctx.emit(("XNACK", key, gname, cname, nacks))
    if gone:
        ctx.emit(("XACK", key, gname, gone))
    return [fmt_id(cursor), out, [fmt_id(i) for i in gone]]
