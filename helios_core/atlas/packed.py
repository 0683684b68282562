"""What the compact encodings of hashes and lists share: the byte escaping and the limits.

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
list-max-listpack-size), process-wide as Redis's are server-wide: atlasd runs
one engine per process.  Tests that change them put them back.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SEP", "VSEP", "ESC", "escape", "unescape", "Limits", "LIMITS", "set_limit", "list_node_bytes"]

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


LIMITS = Limits()

_NAMES = {"hash-max-listpack-entries": "hash_entries", "hash-max-ziplist-entries": "hash_entries",
          "hash-max-listpack-value": "hash_value", "hash-max-ziplist-value": "hash_value",
          "list-max-listpack-size": "list_size", "list-max-ziplist-size": "list_size"}


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
