"""The list lookups and index rules the list commands share; the value type is listvalue.List.

A list is a `List` (listvalue.py): a quicklist of packed nodes, as Redis's, so
LPUSH/RPOP and the blocking pops rewrite one end node (at most 8 KiB or 128
items); LINDEX/LSET/LINSERT count nodes from the nearer end, then walk one.
Only the list effects (effects.py) mutate one, and they delete the key when
its list empties: Redis never keeps an empty list, and a blocked client waits
on an absent key.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.table import SYNTAX, WRONGTYPE, Ctx, err
from helios_core.atlas.listvalue import List

__all__ = ["List", "get_list", "is_list", "norm_range", "norm_index", "parse_side", "LEFT", "RIGHT"]

LEFT = b"LEFT"
RIGHT = b"RIGHT"


def is_list(value: Any) -> bool:
    return type(value) is List


def get_list(ctx: Ctx, key: bytes) -> List | None:
    """The list at `key`, None when absent, WRONGTYPE when the key holds another type."""
    value = ctx.lookup(key)
    if value is not None and type(value) is not List:
        raise err(WRONGTYPE)
    return value


def norm_index(index: int, length: int) -> int | None:
    """A Redis index (negative from the end) as a position, or None when outside the list."""
    if index < 0:
        index += length
    return index if 0 <= index < length else None


def norm_range(start: int, stop: int, length: int) -> tuple[int, int] | None:
    """LRANGE/LTRIM's inclusive [start, stop] clamped to the list, or None when it selects nothing."""
    if start < 0:
        start += length
    if stop < 0:
        stop += length
    if start < 0:
        start = 0
    if start > stop or start >= length:
        return None
    if stop >= length:
        stop = length - 1
    return start, stop


def parse_side(raw: bytes) -> bytes:
    """LEFT or RIGHT (any case), else Redis's syntax error."""
    side = raw.upper()
    if side != LEFT and side != RIGHT:
        raise err(SYNTAX)
    return side
