"""Stream commands with Redis 7.0's semantics, replies and error texts (RESP2 and RESP3).

Every write compiles to the stream effects (effects.py, streamtype.py) as what it
decided: XADD logs the concrete id it generated (`*` takes its milliseconds from
the engine's clock, never going below the stream's last id), trims log how many
entries went from the head, and group/PEL changes log their resulting state
(delivery times and counts included), so replay never consults a clock.

XREAD/XREADGROUP with BLOCK park their client (blocking.py) when nothing can be
served; XADD signals the key, and the parked command runs again (with `$`
resolved to the id it saw when it blocked).  Inside MULTI or a script they
answer the timeout's nil at once, as in Redis.
"""

from __future__ import annotations

import re
from typing import Any

from helios_core.atlas.blocking import Block, Gone, may_block, signal
from helios_core.atlas.commands.table import NOT_INT, OK, SYNTAX, WRONGTYPE, Ctx, Simple, command, err, parse_int
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.streamtype import (
    INVALID_READ,
    MAX_ID,
    U64,
    Group,
    Stream,
    StreamID,
    fmt_id,
)
from helios_core.errors import CommandError

__all__ = ["get_stream", "parse_id"]

ZERO: StreamID = (0, 0)
LLONG_MAX = (1 << 63) - 1
INVALID_ID = "ERR Invalid stream ID specified as stream command argument"
NO_KEY = "ERR no such key"
MUST_EXIST = ("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the "
              "MKSTREAM option to create an empty stream automatically.")


def get_stream(ctx: Ctx, key: bytes) -> Stream | None:
    value = ctx.lookup(key)
    if value is not None and type(value) is not Stream:
        raise err(WRONGTYPE)
    return value


# -- ids ----------------------------------------------------------------------------------------

_CANON = re.compile(rb"-?[1-9][0-9]*\Z|0\Z")
_STRTOULL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)\Z")


def _string2ull(raw: bytes) -> int | None:
    """Redis's string2ull: string2ll (negative refused), else C's strtoull over all of it."""
    if _CANON.match(raw):
        v = int(raw)
        if -(1 << 63) <= v <= LLONG_MAX:
            return v if v >= 0 else None
    m = _STRTOULL.match(raw)
    if m is None:
        return None
    v = int(m[2])
    if v > U64:
        return None
    return (-v) & U64 if m[1] == b"-" else v


def parse_id(raw: bytes, missing_seq: int = 0, strict: bool = False) -> StreamID:
    """streamGenericParseIDOrReply: `-`, `+` (unless strict), `ms` or `ms-seq`."""
    sid, _ = _parse_id(raw, missing_seq, strict, False)
    return sid


def _parse_id(raw: bytes, missing_seq: int, strict: bool, star_seq: bool) -> tuple[StreamID, bool]:
    """(id, seq_given); with `star_seq`, `ms-*` gives seq_given False (XADD)."""
    if len(raw) > 127:
        raise err(INVALID_ID)
    if raw == b"-" or raw == b"+":
        if strict:
            raise err(INVALID_ID)
        return (ZERO if raw == b"-" else MAX_ID), True
    ms_raw, dash, seq_raw = raw.partition(b"-")
    ms = _string2ull(ms_raw)
    if ms is None:
        raise err(INVALID_ID)
    if not dash:
        return (ms, missing_seq), True
    if star_seq and seq_raw == b"*":
        return (ms, 0), False
    seq = _string2ull(seq_raw)
    if seq is None:
        raise err(INVALID_ID)
    return (ms, seq), True


def _incr(sid: StreamID) -> StreamID | None:
    ms, seq = sid
    if seq == U64:
        return None if ms == U64 else (ms + 1, 0)
    return ms, seq + 1


def _decr(sid: StreamID) -> StreamID | None:
    ms, seq = sid
    if seq == 0:
        return None if ms == 0 else (ms - 1, U64)
    return ms, seq - 1


def _interval(raw: bytes, missing_seq: int, start: bool) -> StreamID:
    """streamParseIntervalIDOrReply plus the exclusive `(` adjustment of XRANGE/XPENDING."""
    if len(raw) > 1 and raw[:1] == b"(":
        sid = parse_id(raw[1:], missing_seq, True)
        moved = _incr(sid) if start else _decr(sid)
        if moved is None:
            raise err(f"ERR invalid {'start' if start else 'end'} ID for the interval")
        return moved
    return parse_id(raw, missing_seq)


def _long(raw: bytes, msg: str = NOT_INT) -> int:
    return parse_int(raw, msg)


def _entry(s: Stream, sid: StreamID) -> list:
    return [fmt_id(sid), list(s.entries[sid])]


# -- XADD / XTRIM ---------------------------------------------------------------------------------

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
            a.approx = False
            nxt = argv[i + 1]
            if more >= 2 and nxt == b"~":
                a.approx = True
                i += 1
            elif more >= 2 and nxt == b"=":
                i += 1
            a.maxlen = _long(argv[i + 1])
            if a.maxlen < 0:
                raise err("ERR The MAXLEN argument must be >= 0.")
            i += 1
            a.strategy = MAXLEN
        elif low == b"minid" and more:
            a.approx = False
            nxt = argv[i + 1]
            if more >= 2 and nxt == b"~":
                a.approx = True
                i += 1
            elif more >= 2 and nxt == b"=":
                i += 1
            a.minid = parse_id(argv[i + 1], 0, True)
            i += 1
            a.strategy = MINID
        elif low == b"limit" and more:
            a.limit = _long(argv[i + 1])
            if a.limit < 0:
                raise err("ERR The LIMIT argument must be >= 0.")
            limit_given = True
            i += 1
        elif xadd and low == b"nomkstream":
            a.nomkstream = True
        elif xadd:
            a.id, a.seq_given = _parse_id(opt, 0, True, True)
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
    return _incr(last)


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
        sid = _incr(last) if last[1] != U64 else None
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


# -- reading ---------------------------------------------------------------------------------

@command("xlen", 2, "readonly fast")
def xlen(ctx: Ctx, args: list[bytes]) -> Any:
    s = get_stream(ctx, args[0])
    return 0 if s is None else len(s)


def _xrange(ctx: Ctx, args: list[bytes], rev: bool) -> Any:
    start_raw, end_raw = (args[2], args[1]) if rev else (args[1], args[2])
    start = _interval(start_raw, 0, True)
    end = _interval(end_raw, U64, False)
    count = -1
    j = 3
    while j < len(args):
        if args[j].lower() == b"count" and j + 1 < len(args):
            count = max(_long(args[j + 1]), 0)
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
            out.append(_entry(s, sid))
            if len(out) == count:
                break
    return out


@command("xrange", -4, "readonly")
def xrange(ctx: Ctx, args: list[bytes]) -> Any:
    return _xrange(ctx, args, False)


@command("xrevrange", -4, "readonly")
def xrevrange(ctx: Ctx, args: list[bytes]) -> Any:
    return _xrange(ctx, args, True)


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


# -- XREAD / XREADGROUP --------------------------------------------------------------------------

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
            timeout = _long(argv[i], "ERR timeout is not an integer or out of range")
            if timeout < 0:
                raise err("ERR timeout is negative")
        elif o == b"count" and more:
            i += 1
            count = max(_long(argv[i]), 0)
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
        start = _incr(gt) or MAX_ID  # (only the maximal id has no successor: nothing is above it)
        if g is None:
            out = []
            for sid in s.range(start, MAX_ID):
                out.append(_entry(s, sid))
                if len(out) == count:
                    break
        else:
            out = _group_read(ctx, key, s, g, gname, cname, start, count, history, noack)
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


def _group_read(ctx: Ctx, key: bytes, s: Stream, g: Group, gname: bytes, cname: bytes, start: StreamID,
                count: int, history: bool, noack: bool) -> list:
    now = ctx.now_ms
    ctx.emit(("XCONSUMER", key, gname, cname, now))
    out: list = []
    nacks: list[tuple[StreamID, int, int]] = []
    if history:
        c = g.consumers[cname]
        for sid in c.pel.irange(start, MAX_ID):
            if count and len(out) >= count:
                break
            if sid in s.entries:
                out.append(_entry(s, sid))
                nacks.append((sid, now, c.pel[sid].count + 1))
            else:
                out.append([fmt_id(sid), NULL_ARRAY])
    else:
        last, read = g.last_id, g.entries_read
        for sid in s.range(start, MAX_ID):
            out.append(_entry(s, sid))
            if sid > last:
                if read != INVALID_READ and not s.has_tombstones(sid):
                    read += 1
                elif s.entries_added:
                    read = s.estimate_read(sid)
                last = sid
            if not noack:
                nacks.append((sid, now, 1))
            if len(out) == count:
                break
        if (last, read) != (g.last_id, g.entries_read):
            ctx.emit(("XGROUP", key, gname, last, read))
    if nacks:
        ctx.emit(("XNACK", key, gname, cname, nacks))
    return out


@command("xread", -4, "readonly movablekeys", keys=(0, 0, 0))
def xread(ctx: Ctx, args: list[bytes]) -> Any:
    return _xread(ctx, args, False)


@command("xreadgroup", -7, "write movablekeys", keys=(0, 0, 0))
def xreadgroup(ctx: Ctx, args: list[bytes]) -> Any:
    return _xread(ctx, args, True)


# -- consumer groups -------------------------------------------------------------------------------

def _nogroup(key: bytes, group: bytes) -> CommandError:
    return err(f"NOGROUP No such key '{key.decode(errors='replace')}' or consumer group "
               f"'{group.decode(errors='replace')}'")


def _entries_read_opt(argv: list[bytes], i: int, allow_mkstream: bool) -> tuple[bool, int]:
    mkstream = False
    read = INVALID_READ
    while i < len(argv):
        opt = argv[i].lower()
        if allow_mkstream and opt == b"mkstream":
            mkstream = True
            i += 1
        elif opt == b"entriesread" and i + 1 < len(argv):
            read = _long(argv[i + 1])
            if read < 0 and read != INVALID_READ:
                raise err("ERR value for ENTRIESREAD must be positive or -1")
            i += 2
        else:
            raise _sub_syntax(argv)
    return mkstream, read


def _sub_syntax(argv: list[bytes]) -> CommandError:
    return err(f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')[:128]}'"
               f". Try {argv[0].decode().upper()} HELP.")


_XGROUP_ARITY = {b"create": -5, b"setid": -5, b"destroy": 4, b"createconsumer": 5, b"delconsumer": 5, b"help": 2}
_XGROUP_HELP = [
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
]


def _check_sub_arity(container: str, table: dict[bytes, int], argv: list[bytes]) -> bytes:
    sub = argv[1].lower()
    arity = table.get(sub)
    if arity is None:
        raise err(f"ERR unknown subcommand '{argv[1].decode(errors='replace')[:128]}'. Try {container} HELP.")
    n = len(argv)
    if (arity > 0 and n != arity) or (arity < 0 and n < -arity):
        raise err(f"ERR wrong number of arguments for '{container.lower()}|{sub.decode()}' command")
    return sub


@command("xgroup", -2, "", keys=(0, 0, 0))
def xgroup(ctx: Ctx, args: list[bytes]) -> Any:
    argv = [b"xgroup", *args]
    sub = _check_sub_arity("XGROUP", _XGROUP_ARITY, argv)
    if sub == b"help":
        return [Simple(line) for line in _XGROUP_HELP]
    mkstream, read = False, INVALID_READ
    if sub == b"create":
        mkstream, read = _entries_read_opt(argv, 5, True)
    elif sub == b"setid":
        _, read = _entries_read_opt(argv, 5, False)
    key, gname = argv[2], argv[3]
    s = get_stream(ctx, key)
    g = None
    if not mkstream:
        if s is None:
            raise err(MUST_EXIST)
        g = s.groups.get(gname)
        if g is None and sub in (b"setid", b"createconsumer", b"delconsumer"):
            raise err(f"NOGROUP No such consumer group '{gname.decode(errors='replace')}' for key name "
                      f"'{key.decode(errors='replace')}'")
    elif s is not None:
        g = s.groups.get(gname)
    if sub == b"create":
        if len(argv) > 8:
            raise _sub_syntax(argv)
        if argv[4] == b"$":
            sid = s.last_id if s is not None else ZERO
        else:
            sid = parse_id(argv[4], 0, True)
        if s is None:
            ctx.emit(("XSETID", key, ZERO, 0, ZERO))
        if g is not None:
            raise err("BUSYGROUP Consumer Group name already exists")
        ctx.emit(("XGROUP", key, gname, sid, read))
        return OK
    assert s is not None and (g is not None or sub == b"destroy")
    if sub == b"setid":
        if len(argv) not in (5, 7):
            raise _sub_syntax(argv)
        sid = s.last_id if argv[4] == b"$" else parse_id(argv[4], 0)
        ctx.emit(("XGROUP", key, gname, sid, read))
        return OK
    if sub == b"destroy":
        if g is None:
            return 0
        ctx.emit(("XGDEL", key, gname))
        signal(ctx, key)  # parked XREADGROUPs on it get their NOGROUP error
        return 1
    assert g is not None
    cname = argv[4]
    if sub == b"createconsumer":
        if cname in g.consumers:
            return 0
        ctx.emit(("XCONSUMER", key, gname, cname, ctx.now_ms))
        return 1
    c = g.consumers.get(cname)
    if c is None:
        return 0
    pending = len(c.pel)
    ctx.emit(("XCDEL", key, gname, cname))
    return pending


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
            added = _long(args[i + 1])
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
    s = ctx.lookup(args[0])
    if s is None:
        raise err(NO_KEY)
    if type(s) is not Stream:
        raise err(WRONGTYPE)
    if s.entries:
        if sid < s.last_entry_id():
            raise err("ERR The ID specified in XSETID is smaller than the target stream top item")
        if added != -1 and len(s) > added:
            raise err("ERR The entries_added specified in XSETID is smaller than the target stream length")
    ctx.emit(("XSETID", args[0], sid, s.entries_added if added == -1 else added,
              s.max_deleted if maxdel == ZERO else maxdel))
    return OK


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
            minidle = _long(args[3])
            if argc < 8:
                raise err(SYNTAX)
            at += 2
        count = max(_long(args[at + 2]), 0)
        start = _interval(args[at], 0, True)
        end = _interval(args[at + 1], U64, False)
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


def _claim_entry(s: Stream, sid: StreamID, justid: bool) -> Any:
    if justid:
        return fmt_id(sid)
    return _entry(s, sid)


@command("xclaim", -6, "write fast")
def xclaim(ctx: Ctx, args: list[bytes]) -> Any:
    key, gname, cname = args[0], args[1], args[2]
    s = get_stream(ctx, key)
    g = s.groups.get(gname) if s is not None else None
    if s is None or g is None:
        raise _nogroup(key, gname)
    minidle = max(_long(args[3], "ERR Invalid min-idle-time argument for XCLAIM"), 0)
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
            delivery = now - _long(args[j], "ERR Invalid IDLE option argument for XCLAIM")
        elif opt == b"time" and more:
            j += 1
            delivery = _long(args[j], "ERR Invalid TIME option argument for XCLAIM")
        elif opt == b"retrycount" and more:
            j += 1
            retry = _long(args[j], "ERR Invalid RETRYCOUNT option argument for XCLAIM")
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
        out.append(_claim_entry(s, sid, justid))
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
    minidle = max(_long(args[3], "ERR Invalid min-idle-time argument for XAUTOCLAIM"), 0)
    start = _interval(args[4], 0, True)
    count = 100
    justid = False
    j = 5
    while j < len(args):
        more = len(args) - 1 - j
        opt = args[j].lower()
        if opt == b"count" and more:
            count = _long(args[j + 1], "ERR COUNT must be > 0")
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
        out.append(_claim_entry(s, sid, justid))
        count -= 1
    if nacks:
        ctx.emit(("XCONSUMER", key, gname, cname, now))
        ctx.emit(("XNACK", key, gname, cname, nacks))
    if gone:
        ctx.emit(("XACK", key, gname, gone))
    return [fmt_id(cursor), out, [fmt_id(i) for i in gone]]


# -- XINFO -----------------------------------------------------------------------------------------

_XINFO_ARITY = {b"stream": -3, b"groups": 3, b"consumers": 4, b"help": 2}
_XINFO_HELP = [
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
]


def _rax_nodes(s: Stream) -> int:
    """radix-tree-nodes: Redis's rax internals, not modelled; an estimate (one node per key plus the root)."""
    return len(s.nodes) + 1 if s.nodes else 1


def _read_or_nil(g: Group) -> int | None:
    return None if g.entries_read == INVALID_READ else g.entries_read


@command("xinfo", -2, "", keys=(0, 0, 0))
def xinfo(ctx: Ctx, args: list[bytes]) -> Any:
    argv = [b"xinfo", *args]
    sub = _check_sub_arity("XINFO", _XINFO_ARITY, argv)
    if sub == b"help":
        return [Simple(line) for line in _XINFO_HELP]
    key = argv[2]
    s = ctx.lookup(key)
    if s is None:
        raise err(NO_KEY)
    if type(s) is not Stream:
        raise err(WRONGTYPE)
    now = ctx.now_ms
    if sub == b"consumers":
        g = s.groups.get(argv[3])
        if g is None:
            raise err(f"NOGROUP No such consumer group '{argv[3].decode(errors='replace')}' for key name "
                      f"'{key.decode(errors='replace')}'")
        return [{b"name": c.name, b"pending": len(c.pel), b"idle": max(now - c.seen, 0)}
                for _, c in sorted(g.consumers.items())]
    if sub == b"groups":
        return [{b"name": name, b"consumers": len(g.consumers), b"pending": len(g.pel),
                 b"last-delivered-id": fmt_id(g.last_id), b"entries-read": _read_or_nil(g), b"lag": s.lag(g)}
                for name, g in sorted(s.groups.items())]
    full = False
    count = 10
    if len(argv) > 3:
        if argv[3].lower() != b"full":
            raise _sub_syntax(argv)
        full = True
        if len(argv) > 4:
            if len(argv) != 6 or argv[4].lower() != b"count":
                raise _sub_syntax(argv)
            count = max(_long(argv[5]), 0)
    info: dict[bytes, Any] = {
        b"length": len(s), b"radix-tree-keys": len(s.nodes), b"radix-tree-nodes": _rax_nodes(s),
        b"last-generated-id": fmt_id(s.last_id), b"max-deleted-entry-id": fmt_id(s.max_deleted),
        b"entries-added": s.entries_added, b"recorded-first-entry-id": fmt_id(s.first_id),
    }
    if not full:
        info[b"groups"] = len(s.groups)
        info[b"first-entry"] = _entry(s, s.entries.peekitem(0)[0]) if s.entries else None
        info[b"last-entry"] = _entry(s, s.entries.peekitem(-1)[0]) if s.entries else None
        return info
    entries: list = []
    for sid in s.entries:
        if count and len(entries) >= count:
            break
        entries.append(_entry(s, sid))
    info[b"entries"] = entries
    groups = []
    for name, g in sorted(s.groups.items()):
        pel: list = []
        for sid, nack in g.pel.items():
            if count and len(pel) >= count:
                break
            pel.append([fmt_id(sid), nack.consumer, nack.time, nack.count])
        consumers = []
        for _, c in sorted(g.consumers.items()):
            cpel: list = []
            for sid, nack in c.pel.items():
                if count and len(cpel) >= count:
                    break
                cpel.append([fmt_id(sid), nack.time, nack.count])
            consumers.append({b"name": c.name, b"seen-time": c.seen, b"pel-count": len(c.pel), b"pending": cpel})
        groups.append({b"name": name, b"last-delivered-id": fmt_id(g.last_id), b"entries-read": _read_or_nil(g),
                       b"lag": s.lag(g), b"pel-count": len(g.pel), b"pending": pel, b"consumers": consumers})
    info[b"groups"] = groups
    return info
