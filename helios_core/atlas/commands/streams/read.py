"""Reading: XLEN, XRANGE/XREVRANGE, and XREAD/XREADGROUP (one parser) with their blocking.

XREAD/XREADGROUP with BLOCK park their client (blocking.py) when nothing can be
served; XADD signals the key, and the parked command runs again (with `$`
resolved to the id it saw when it blocked).  Inside MULTI or a script they
answer the timeout's nil at once, as in Redis.  What XREADGROUP delivers to a
consumer (its PEL, the group's last id) is groups.py's `group_read`.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.blocking import Block, Gone, may_block
from helios_core.atlas.commands.streams.common import (
    LLONG_MAX,
    ZERO,
    entry_reply,
    get_stream,
    incr_id,
    parse_id,
    parse_interval,
)
from helios_core.atlas.commands.streams.groups import group_read
from helios_core.atlas.commands.table import SYNTAX, Ctx, command, err, parse_int
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.streamtype import MAX_ID, U64, Group, Stream, StreamID, fmt_id

__all__: list[str] = []


@command("xlen", 2, "readonly fast")
def xlen(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_stream(ctx, args[0])
    return 0 if s is None else len(s)


def _xrange(ctx: Ctx, args: list[bytes], rev: bool) -> Any:
    start_raw, end_raw = (args[2], args[1]) if rev else (args[1], args[2])
    start = parse_interval(start_raw, 0, True)
    end = parse_interval(end_raw, U64, False)
    count = -1
    j = 3
    while j < len(args):
        if args[j].lower() == b"count" and j + 1 < len(args):
            count = max(parse_int(args[j + 1]), 0)
            j += 2
        else:
            raise err(SYNTAX)
    s = get_stream(ctx, args[0])
    if s is None:
        return []
    if count == 0:
        return NULL_ARRAY
    out = []
    if start <= end:
        for sid in s.range(start, end, rev):
            out.append(entry_reply(s, sid))
            if len(out) == count:
                break
    return out


@command("xrange", -4, "readonly")
def xrange(ctx: Ctx, args: list[bytes]) -> Any:
    return _xrange(ctx, args, False)


@command("xrevrange", -4, "readonly")
def xrevrange(ctx: Ctx, args: list[bytes]) -> Any:
    return _xrange(ctx, args, True)


def _resp3(ctx: Ctx) -> bool:
    """Whether the reply goes to a RESP3 client (XREAD's map); a script's calls see RESP2 replies
    (redis.setresp(3) inside a script is not followed here)."""
    return bool(getattr(ctx.conn, "resp3", False)) and not _in_script(ctx)


def _xread(ctx: Ctx, args: list[bytes], group_mode: bool) -> Any:
    name = b"xreadgroup" if group_mode else b"xread"
    argv = [name, *args]
    argc = len(argv)
    timeout = -1
    count = 0
    streams_arg = 0
    streams_count = 0
    noack = False
    gname = cname = b""
    has_group = False
    i = 1
    while i < argc:
        more = argc - i - 1
        o = argv[i].lower()
        if o == b"block" and more:
            if _in_script(ctx):
                raise err(f"ERR {name.decode().upper()} command is not allowed with BLOCK option from scripts")
            i += 1
            timeout = parse_int(argv[i], "ERR timeout is not an integer or out of range")
            if timeout < 0:
                raise err("ERR timeout is negative")
        elif o == b"count" and more:
            i += 1
            count = max(parse_int(argv[i]), 0)
        elif o == b"streams" and more:
            streams_arg = i + 1
            streams_count = argc - streams_arg
            if streams_count % 2:
                symbol = ">" if group_mode else "$"
                raise err(f"ERR Unbalanced {name.decode().upper()} list of streams: for each stream key an ID or "
                          f"'{symbol}' must be specified.")
            streams_count //= 2
            break
        elif o == b"group" and more >= 2:
            if not group_mode:
                raise err("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.")
            gname, cname = argv[i + 1], argv[i + 2]
            has_group = True
            i += 2
        elif o == b"noack":
            if not group_mode:
                raise err("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.")
            noack = True
        else:
            raise err(SYNTAX)
        i += 1
    if streams_arg == 0:
        raise err(SYNTAX)
    if group_mode and not has_group:
        raise err("ERR Missing GROUP option for XREADGROUP")
    keys = argv[streams_arg:streams_arg + streams_count]
    ids: list[StreamID] = []
    groups: list[Group | None] = []
    resolved = list(argv)
    # Run again for a parked XREADGROUP (blocking.py): its stream or group may have gone meanwhile.
    rerun = group_mode and getattr(ctx.conn, "blocked", None) is not None
    for n, raw in enumerate(argv[streams_arg + streams_count:]):
        key = keys[n]
        if rerun:
            value = ctx.lookup(key)
            if type(value) is not Stream:
                raise err("UNBLOCKED the stream key no longer exists")
            if gname not in value.groups:
                raise err("NOGROUP the consumer group this client was blocked on no longer exists")
        s = get_stream(ctx, key)
        g = None
        if group_mode:
            g = s.groups.get(gname) if s is not None else None
            if g is None:
                raise err(f"NOGROUP No such key '{key.decode(errors='replace')}' or consumer group "
                          f"'{gname.decode(errors='replace')}' in XREADGROUP with GROUP option")
        groups.append(g)
        if raw == b"$":
            if group_mode:
                raise err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history "
                          "of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ "
                          "ID would just return an empty result set.")
            sid = s.last_id if s is not None else ZERO
            ids.append(sid)
            resolved[streams_arg + streams_count + n] = fmt_id(sid)
            continue
        if raw == b">":
            if not group_mode:
                raise err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> "
                          "<consumer> option.")
            ids.append(MAX_ID)
            continue
        ids.append(parse_id(raw, 0, True))
    served: list[tuple[bytes, list]] = []
    for n, key in enumerate(keys):
        s = get_stream(ctx, key)
        if s is None:
            continue
        gt = ids[n]
        g = groups[n]
        history = False
        if g is not None:
            if gt != MAX_ID:
                history = True
            elif s.entries and s.last_entry_id() > g.last_id:
                gt = g.last_id
            else:
                continue
        elif not (s.entries and s.last_entry_id() > gt):
            continue
        start = incr_id(gt) or MAX_ID  # (only the maximal id has no successor: nothing is above it)
        if g is None:
            out = []
            for sid in s.range(start, MAX_ID):
                out.append(entry_reply(s, sid))
                if len(out) == count:
                    break
        else:
            out = group_read(ctx, key, s, g, gname, cname, start, count, history, noack)
        served.append((key, out))
    if served:
        if _resp3(ctx):
            reply: dict = {}
            for k, v in served:  # (a key named twice is in Redis's map twice)
                reply[_DupKey(k) if k in reply else k] = v
            return reply
        return [[k, v] for k, v in served]
    if timeout != -1 and may_block(ctx, name, len(args)):
        deadline = min(ctx.now_ms + timeout, LLONG_MAX) if timeout else 0
        # (a parked XREADGROUP also wakes when its stream goes: Redis answers it with an error)
        return Block(keys, deadline, Gone(Stream) if group_mode else None, argv=resolved, reads=True)
    return NULL_ARRAY


class _DupKey(bytes):
    """A map key equal only to itself: XREAD STREAMS k k ... answers a RESP3 map holding k twice."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


def _in_script(ctx: Ctx) -> bool:
    scripting = getattr(ctx.engine, "scripting", None)
    return bool(getattr(scripting, "running", False))


@command("xread", -4, "readonly blocking movablekeys", keys=(0, 0, 0))
def xread(ctx: Ctx, args: list[bytes]) -> Any:
    return _xread(ctx, args, False)


@command("xreadgroup", -7, "write blocking movablekeys", keys=(0, 0, 0))
def xreadgroup(ctx: Ctx, args: list[bytes]) -> Any:
    return _xread(ctx, args, True)
