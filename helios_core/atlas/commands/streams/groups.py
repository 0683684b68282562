"""Consumer groups: XGROUP (CREATE, SETID, DESTROY, CREATECONSUMER, DELCONSUMER), and what
XREADGROUP delivers to a consumer (`group_read`).

Group and PEL changes are logged as their resulting state (delivery times and counts
included), so replay never consults a clock.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.blocking import signal
from helios_core.atlas.commands.streams.common import (
    ZERO,
    check_subcommand,
    entry_reply,
    get_stream,
    no_such_group,
    parse_id,
    sub_syntax,
)
from helios_core.atlas.commands.table import OK, Ctx, Simple, command, err, parse_int
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.streamtype import INVALID_READ, MAX_ID, Group, Stream, StreamID, fmt_id

__all__ = ["group_read"]

MUST_EXIST = ("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the "
              "MKSTREAM option to create an empty stream automatically.")


def _entries_read_opt(argv: list[bytes], i: int, allow_mkstream: bool) -> tuple[bool, int]:
    mkstream = False
    read = INVALID_READ
    while i < len(argv):
        opt = argv[i].lower()
        if allow_mkstream and opt == b"mkstream":
            mkstream = True
            i += 1
        elif opt == b"entriesread" and i + 1 < len(argv):
            read = parse_int(argv[i + 1])
            if read < 0 and read != INVALID_READ:
                raise err("ERR value for ENTRIESREAD must be positive or -1")
            i += 2
        else:
            raise sub_syntax(argv)
    return mkstream, read


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


@command("xgroup", -2, "", keys=(0, 0, 0), conn="writes")
def xgroup(ctx: Ctx, args: list[bytes]) -> Any:
    argv = [b"xgroup", *args]
    sub = check_subcommand("XGROUP", _XGROUP_ARITY, argv)
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
            raise no_such_group(key, gname)
    elif s is not None:
        g = s.groups.get(gname)
    if sub == b"create":
        if len(argv) > 8:
            raise sub_syntax(argv)
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
            raise sub_syntax(argv)
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


def group_read(ctx: Ctx, key: bytes, s: Stream, g: Group, gname: bytes, cname: bytes, start: StreamID,
               count: int, history: bool, noack: bool) -> list:
    """XREADGROUP's reply for one stream from `start`: the consumer's own pending entries (`history`,
    a deleted one as [id, nil]) or new ones, which advance the group and (unless `noack`) enter the PEL."""
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
                out.append(entry_reply(s, sid))
                nacks.append((sid, now, c.pel[sid].count + 1))
            else:
                out.append([fmt_id(sid), NULL_ARRAY])
    else:
        last, read = g.last_id, g.entries_read
        for sid in s.range(start, MAX_ID):
            out.append(entry_reply(s, sid))
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
