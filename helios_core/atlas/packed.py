"""What the compact encodings share: the byte escaping, the limits, and a set's encoding.

A small hash or list is kept in one `bytes` object instead of a Python
container of `bytes` objects: each element of a dict or deque costs a 33-byte
object header rounded up to 16 bytes plus its slot in the container (about
100 bytes for a 16-byte field), where one buffer costs its bytes and a
separator.  That is Redis's own trade (its listpack): O(n) lookups and
rewrites over a few hundred entries, done here at C speed by `bytes.find`,
`split` and slicing, which is why separators are used rather than length
prefixes (walking length prefixes would be a Python-level loop per entry).

Separators must never occur inside an element, so the three top bytes are
escaped: 0xFD -> FD 01, 0xFE -> FD 02, 0xFF -> FD 03.  Valid UTF-8 never
holds those bytes, so text needs no escaping and only binary values pay for
it.  `unescape` undoes FD 03 first, then FD 02, then FD 01: an escaped buffer
holds FD only as the start of one of those pairs, so each replace matches
exactly the pairs it means.

`LIMITS` are Redis's conversion thresholds (CONFIG SET hash-max-listpack-*,
list-max-listpack-size, set-max-intset-entries, zset-max-listpack-*), process-wide
as Redis's are server-wide: atlasd runs one engine per process.  Tests that change them put them back.

A set is a plain `set` whatever Redis would hold it as, so its encoding is
derived from its content (intset: every member an integer, at most
set-max-intset-entries of them) except where Redis's history says otherwise:
a set that became a hashtable stays one when SREM leaves it small and
all-integer, and a CONFIG SET of the limit converts no existing set.  Those
few sets are noted in `_SET_MARKS` with the encoding Redis holds them in, by
identity through a weak reference, so the note goes with the object (an undo,
SWAPDB) and dies with it.  A flag on every set would cost memory per set, and
a set subclass would fail the `type(v) is set` tests all over the server.
`_RESTART_MARKS` notes, the same way, the few sets a restart would hold in
another encoding than they are held in now (SPOP's new set: `restart_note`);
snapshots write that one, as the AOF does.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["SEP", "VSEP", "ESC", "escape", "unescape", "Limits", "LIMITS", "set_limit", "list_node_bytes",
           "INTSET", "HASHTABLE", "is_int64", "as_int64", "set_encoding", "set_content_encoding", "keep_set_encoding",
           "set_added", "set_removed", "pin_set_encodings", "set_note", "restart_note", "keep_restart_encoding",
           "restart_encoding", "set_copy_effect"]

SEP = b"\xff"   # before every hash field and list item, and once more at the end
VSEP = b"\xfe"  # between a hash field and its value
ESC = b"\xfd"


def escape(x: bytes) -> bytes:
    """`x` with the separator bytes escaped (itself, uncopied, when it has none: the usual case).

    TypeError for anything but bytes (what a damaged snapshot may hold: its loader refuses it)."""
    if type(x) is not bytes:
        raise TypeError(f"a hash or list element is {type(x).__name__}, not bytes")
    if x.isascii() or (SEP not in x and VSEP not in x and ESC not in x):
        return x
    return x.replace(ESC, b"\xfd\x01").replace(VSEP, b"\xfd\x02").replace(SEP, b"\xfd\x03")


def unescape(x: bytes) -> bytes:
    if ESC not in x:
        return x
    return x.replace(b"\xfd\x03", SEP).replace(b"\xfd\x02", VSEP).replace(b"\xfd\x01", ESC)


@dataclass
class Limits:
    """Redis 7.0's defaults (`CONFIG GET` on redis-server 7.0.15)."""

    hash_entries: int = 512   # hash-max-listpack-entries
    hash_value: int = 64      # hash-max-listpack-value
    list_size: int = -2       # list-max-listpack-size: >0 entries per node, -1..-5 a node of 4..64 KiB
    set_entries: int = 512    # set-max-intset-entries
    zset_entries: int = 128   # zset-max-listpack-entries
    zset_value: int = 64      # zset-max-listpack-value


LIMITS = Limits()

_NAMES = {"hash-max-listpack-entries": "hash_entries", "hash-max-ziplist-entries": "hash_entries",
          "hash-max-listpack-value": "hash_value", "hash-max-ziplist-value": "hash_value",
          "list-max-listpack-size": "list_size", "list-max-ziplist-size": "list_size",
          "set-max-intset-entries": "set_entries",
          "zset-max-listpack-entries": "zset_entries", "zset-max-ziplist-entries": "zset_entries",
          "zset-max-listpack-value": "zset_value", "zset-max-ziplist-value": "zset_value"}


def set_limit(name: str, value: int) -> None:
    """Apply a CONFIG SET of an encoding parameter (names this module does not use are ignored)."""
    attr = _NAMES.get(name)
    if attr is not None:
        setattr(LIMITS, attr, value)


# quicklist.c's optimization_level: the byte size of a node for list-max-listpack-size -1..-5.
_NODE_BYTES = (4096, 8192, 16384, 32768, 65536)


def list_node_bytes(size: int) -> int:
    """The most bytes one quicklist node holds for a negative list-max-listpack-size (past -5: -5's)."""
    return _NODE_BYTES[min(-size, 5) - 1]


# -- a set's encoding ---------------------------------------------------------------------

INTSET = "intset"
HASHTABLE = "hashtable"


def is_int64(m: bytes) -> bool:
    """Whether an intset could hold `m` (Redis's isSdsRepresentableAsLongLong: string2ll's
    canonical text, no +, no leading 0, no -0).  (bytes.isdigit: ASCII digits only, at C speed;
    this runs on SREM's path.)"""
    if m.isdigit():
        digits = m
    elif m[:1] == b"-" and m[1:].isdigit():
        digits = m[1:]
    else:
        return False
    if digits[0] == 48:  # b"0"
        return m == b"0"
    return len(digits) < 19 or -(1 << 63) <= int(m) < 1 << 63


def as_int64(m: bytes) -> int | None:
    """The integer Redis stores for `m` in an intset, a listpack or an int-encoded string (string2ll:
    canonical text of a 64-bit integer only), or None."""
    return int(m) if is_int64(m) else None


def _intset_max() -> int:
    return min(LIMITS.set_entries, 1 << 30)  # (setTypeAdd caps it: an intset holds at most 2**30)


def set_content_encoding(s: Iterable[bytes]) -> str:
    """The encoding Redis gives a set built from this content (SADD to a new key, *STORE, RDB load)."""
    members = s if isinstance(s, set | frozenset) else set(s)
    if len(members) <= _intset_max() and all(map(is_int64, members)):
        return INTSET
    return HASHTABLE


class _Mark(weakref.ref[set[bytes]]):
    __slots__ = ("key", "encoding")
    key: int
    encoding: str


def _forget(mark: _Mark) -> None:  # (the set is being freed: its id may be reused next)
    for marks in (_SET_MARKS, _RESTART_MARKS):
        if marks.get(mark.key) is mark:
            del marks[mark.key]


_SET_MARKS: dict[int, _Mark] = {}
# Sets a restart would hold in another encoding than the one they are held in now: an SPOP
# that kept few members of a hashtable made a new intset, but Redis logs it as SREMs, which
# its AOF replays on the hashtable.  (Rare: only such sets and their RENAMEd/COPYd copies.)
_RESTART_MARKS: dict[int, _Mark] = {}


def set_note(s: set[bytes]) -> str | None:
    """The encoding `s` is held in where its history, not its content, decides it (else None)."""
    mark = _SET_MARKS.get(id(s))
    return mark.encoding if mark is not None and mark() is s else None


def set_encoding(s: set[bytes]) -> str:
    """OBJECT ENCODING's answer for a set: what its history made it, else what its content makes it."""
    return set_note(s) or set_content_encoding(s)


def keep_set_encoding(s: set[bytes], encoding: str) -> None:
    """From now on `s` is held as `encoding` (noted only where its content would say otherwise)."""
    if encoding == set_content_encoding(s):
        _SET_MARKS.pop(id(s), None)
    else:
        mark = _Mark(s, _forget)
        mark.key, mark.encoding = id(s), encoding
        _SET_MARKS[id(s)] = mark


def restart_note(s: set[bytes]) -> str | None:
    """The encoding a restart (Redis's AOF replay) holds `s` in where it is not the one held now."""
    mark = _RESTART_MARKS.get(id(s))
    return mark.encoding if mark is not None and mark() is s else None


def keep_restart_encoding(s: set[bytes], encoding: str | None) -> None:
    """A restart holds `s` as `encoding` (None, or the encoding held now: as it is held)."""
    if encoding is None or encoding == set_encoding(s):
        _RESTART_MARKS.pop(id(s), None)
    else:
        mark = _Mark(s, _forget)
        mark.key, mark.encoding = id(s), encoding
        _RESTART_MARKS[id(s)] = mark


def restart_encoding(s: set[bytes]) -> str:
    """The encoding a restart replaying what Redis's AOF holds gives `s`."""
    return restart_note(s) or set_encoding(s)


def set_copy_effect(dst: bytes, s: set[bytes]) -> tuple | None:
    """The ENCODING effect that makes a copy of `s` built under `dst` by an SADD (RENAME, COPY,
    MOVE) held as `s` is, now and after a restart; None where the SADD does that alone."""
    held, restart = set_encoding(s), restart_note(s)
    if restart is not None and restart != held:
        return ("ENCODING", dst, held, restart)
    return ("ENCODING", dst, held) if held != set_content_encoding(s) else None


def set_added(s: set[bytes]) -> str | None:
    """Members were just added to `s`: an intset kept past its limit converts now (setTypeAdd).
    Returns the note it dropped (for an undo to put back), else None."""
    if _SET_MARKS and set_note(s) == INTSET:  # (SADD's path: usually no set is noted at all)
        del _SET_MARKS[id(s)]
        return INTSET
    return None


def set_removed(s: set[bytes], removed: list[bytes], size_before: int) -> None:
    """Members were just removed from `s` (a non-empty set): a hashtable stays one.

    The content before was a hashtable's if it was over the limit or one of the removed members
    was not an integer; only then, and only if the members left would make an intset, is a note
    needed.  The walk over the members left stops at the first string, so on a set of strings
    it is one step."""
    limit = _intset_max()
    if len(s) > limit or id(s) in _SET_MARKS:
        return
    if size_before <= limit and all(map(is_int64, removed)):
        return  # (it was small and lost no string: its content then said what it says now)
    if all(map(is_int64, s)):
        keep_set_encoding(s, HASHTABLE)


def pin_set_encodings(sets: Iterable[set[bytes]], new_limit: int) -> None:
    """Change set-max-intset-entries to `new_limit` (CONFIG SET).  Redis converts no existing set
    then (a later SADD does), so every set of `sets` whose content reads differently under the
    new limit keeps its current encoding as a note.  O(sets), once per CONFIG SET of the limit."""
    old = _intset_max()
    lo, hi = sorted((old, min(new_limit, 1 << 30)))
    if lo == hi:
        return
    keep = [(s, set_encoding(s)) for s in sets if lo < len(s) <= hi and all(map(is_int64, s))]
    LIMITS.set_entries = new_limit
    for s, encoding in keep:
        keep_set_encoding(s, encoding)
