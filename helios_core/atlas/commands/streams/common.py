"""What the stream commands share: the stream at a key, ids as arguments, and the shapes of
their replies and errors (Redis 7.0's texts)."""

from __future__ import annotations

import re

from helios_core.atlas.commands.table import WRONGTYPE, Ctx, err
from helios_core.atlas.streamtype import MAX_ID, U64, Stream, StreamID, fmt_id
from helios_core.errors import CommandError

__all__ = [
    "ZERO", "LLONG_MAX", "NO_KEY", "get_stream", "existing_stream", "parse_id", "parse_add_id", "incr_id",
    "parse_interval", "entry_reply", "no_such_group", "sub_syntax", "check_subcommand",
]

ZERO: StreamID = (0, 0)
LLONG_MAX = (1 << 63) - 1
INVALID_ID = "ERR Invalid stream ID specified as stream command argument"
NO_KEY = "ERR no such key"


def get_stream(ctx: Ctx, key: bytes) -> Stream | None:
    value = ctx.lookup(key)
    if value is not None and type(value) is not Stream:
        raise err(WRONGTYPE)
    return value


def existing_stream(ctx: Ctx, key: bytes) -> Stream:
    """The stream at key, or Redis's 'no such key' (XSETID, XINFO)."""
    s = get_stream(ctx, key)
    if s is None:
        raise err(NO_KEY)
    return s


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


def parse_add_id(raw: bytes) -> tuple[StreamID, bool]:
    """XADD's explicit id, strict: (id, seq_given), where `ms-*` gives seq_given False."""
    return _parse_id(raw, 0, True, True)


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


def incr_id(sid: StreamID) -> StreamID | None:
    """The next id, or None after the maximal one."""
    ms, seq = sid
    if seq == U64:
        return None if ms == U64 else (ms + 1, 0)
    return ms, seq + 1


def _decr_id(sid: StreamID) -> StreamID | None:
    ms, seq = sid
    if seq == 0:
        return None if ms == 0 else (ms - 1, U64)
    return ms, seq - 1


def parse_interval(raw: bytes, missing_seq: int, start: bool) -> StreamID:
    """streamParseIntervalIDOrReply plus the exclusive `(` adjustment of XRANGE/XPENDING/XAUTOCLAIM."""
    if len(raw) > 1 and raw[:1] == b"(":
        sid = parse_id(raw[1:], missing_seq, True)
        moved = incr_id(sid) if start else _decr_id(sid)
        if moved is None:
            raise err(f"ERR invalid {'start' if start else 'end'} ID for the interval")
        return moved
    return parse_id(raw, missing_seq)


# -- replies and errors ---------------------------------------------------------------------------

def entry_reply(s: Stream, sid: StreamID) -> list:
    """An entry as the stream commands answer it: [id, [field, value, ...]]."""
    return [fmt_id(sid), list(s.entries[sid])]


def no_such_group(key: bytes, group: bytes) -> CommandError:
    """XGROUP's and XINFO's NOGROUP (XPENDING and XCLAIM word theirs differently)."""
    return err(f"NOGROUP No such consumer group '{group.decode(errors='replace')}' for key name "
               f"'{key.decode(errors='replace')}'")


def sub_syntax(argv: list[bytes]) -> CommandError:
    """A container's (XGROUP, XINFO) error for bad arguments after a known subcommand."""
    return err(f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')[:128]}'"
               f". Try {argv[0].decode().upper()} HELP.")


def check_subcommand(container: str, table: dict[bytes, int], argv: list[bytes]) -> bytes:
    """The subcommand of argv (lower case) once it is known and its arity is right."""
    sub = argv[1].lower()
    arity = table.get(sub)
    if arity is None:
        raise err(f"ERR unknown subcommand '{argv[1].decode(errors='replace')[:128]}'. Try {container} HELP.")
    n = len(argv)
    if (arity > 0 and n != arity) or (arity < 0 and n < -arity):
        raise err(f"ERR wrong number of arguments for '{container.lower()}|{sub.decode()}' command")
    return sub
