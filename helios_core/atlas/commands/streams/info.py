"""XINFO: STREAM (and its FULL form), GROUPS, CONSUMERS and HELP."""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.streams.common import (
    check_subcommand,
    entry_reply,
    existing_stream,
    no_such_group,
    sub_syntax,
)
from helios_core.atlas.commands.table import Ctx, Simple, command, parse_int
from helios_core.atlas.streamtype import INVALID_READ, Group, Stream, fmt_id

__all__: list[str] = []


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
    sub = check_subcommand("XINFO", _XINFO_ARITY, argv)
    if sub == b"help":
        return [Simple(line) for line in _XINFO_HELP]
    key = argv[2]
    s = existing_stream(ctx, key)
    now = ctx.now_ms
    if sub == b"consumers":
        g = s.groups.get(argv[3])
        if g is None:
            raise no_such_group(key, argv[3])
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
            raise sub_syntax(argv)
        full = True
        if len(argv) > 4:
            if len(argv) != 6 or argv[4].lower() != b"count":
                raise sub_syntax(argv)
            count = max(parse_int(argv[5]), 0)
    info: dict[bytes, Any] = {
        b"length": len(s), b"radix-tree-keys": len(s.nodes), b"radix-tree-nodes": _rax_nodes(s),
        b"last-generated-id": fmt_id(s.last_id), b"max-deleted-entry-id": fmt_id(s.max_deleted),
        b"entries-added": s.entries_added, b"recorded-first-entry-id": fmt_id(s.first_id),
    }
    if not full:
        info[b"groups"] = len(s.groups)
        info[b"first-entry"] = entry_reply(s, s.entries.peekitem(0)[0]) if s.entries else None
        info[b"last-entry"] = entry_reply(s, s.entries.peekitem(-1)[0]) if s.entries else None
        return info
    entries: list = []
    for sid in s.entries:
        if count and len(entries) >= count:
            break
        entries.append(entry_reply(s, sid))
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
