"""The list value type: one packed buffer while the list fits one quicklist node, a deque past it.

A `List` answers the part of the deque interface the list commands, effects,
snapshots and DUMP use (append/appendleft/extend/extendleft, pop/popleft,
[i], [i] = x, insert, del [i], count, clear, iteration both ways), so callers
do not care how it is held.

packed: one `bytes` object, ``SEP item1 SEP item2 ... SEP`` with the items
escaped (packed.py), as Redis 7.0 holds a small list: a quicklist of one
listpack node.  Pushing and popping at either end is one slice or
concatenation (O(n) copying, at C speed, as listpack's memmove); an index is
reached by `find`/`rfind` from the nearer end; a range by one `split`.
deque: past the node's limit (list-max-listpack-size: -2, the default, is
8 KiB; a positive size counts entries, with quicklist's 8 KiB safety limit),
and past 128 items whatever their size, since reaching the middle of a packed
list costs a Python-level step per item.  Redis 7.0 reports "quicklist" for
every list, so the form is not visible to clients; a list that shrinks stays
a deque until it is emptied (the key goes) or cleared by LREM.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from helios_core.atlas.packed import ESC, LIMITS, SEP, escape, list_node_bytes, unescape

__all__ = ["List", "PACKED_MAX_ITEMS"]

PACKED_MAX_ITEMS = 128
_SAFETY_BYTES = 8192  # quicklist.c SIZE_SAFETY_LIMIT: a node's bytes when its limit is an entry count
_EMPTY = SEP


def _fits(n: int, nbytes: int) -> bool:
    """Whether a packed list of n items in nbytes stays packed under the current limits."""
    if n > PACKED_MAX_ITEMS:
        return False
    size = LIMITS.list_size
    if size > 0:
        return n <= size and nbytes <= _SAFETY_BYTES
    return nbytes <= list_node_bytes(size)


class List:
    """A Redis list of bytes items.

    `_v` is the packed `bytes` and `_n` its number of items, or `_v` is the deque and
    `_n` is -1 (two slots keep the object at 48 bytes).
    """

    __slots__ = ("_v", "_n")

    def __init__(self, items: Iterable[bytes] = ()) -> None:
        self._v: Any = _EMPTY
        self._n = 0
        if items:
            self.extend(items)

    @property
    def packed(self) -> bool:
        return self._n >= 0

    def __len__(self) -> int:
        n = self._n
        return len(self._v) if n < 0 else n

    def __repr__(self) -> str:
        return f"List({'packed' if self._n >= 0 else 'deque'}, {self._items()!r})"

    def __eq__(self, other: object) -> bool:
        """Same items in the same order (a deque or a list compares by content too)."""
        if isinstance(other, List):
            return len(self) == len(other) and self._items() == other._items()
        if isinstance(other, (deque, list)):
            return self._items() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like deque

    # -- reading ------------------------------------------------------------------------

    def _items(self) -> list[bytes]:
        if self._n < 0:
            return list(self._v)
        if not self._n:
            return []
        blob: bytes = self._v
        items = blob[1:-1].split(SEP)
        if ESC in blob:
            return [unescape(x) for x in items]
        return items

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._v) if self._n < 0 else iter(self._items())

    def __reversed__(self) -> Iterator[bytes]:
        return reversed(self._v) if self._n < 0 else reversed(self._items())

    def range(self, start: int, stop: int) -> list[bytes]:
        """Items start..stop inclusive (0 <= start <= stop < len: LRANGE's normalised span)."""
        if self._n < 0:
            d = self._v
            n = len(d)
            if start == 0 and stop == n - 1:
                return list(d)
            if start > n - 1 - stop:  # nearer the tail: walk from there (a deque has no O(1) middle)
                out = list(islice(reversed(d), n - 1 - stop, n - start))
                out.reverse()
                return out
            return list(islice(d, start, stop + 1))
        return self._items()[start:stop + 1]

    def _span(self, i: int) -> tuple[int, int]:
        """Packed: (p, q), the separators around item i (0 <= i < n), walking from the nearer end."""
        blob: bytes = self._v
        n = self._n
        if i <= n // 2:
            p = 0
            for _ in range(i):
                p = blob.find(SEP, p + 1)
            return p, blob.find(SEP, p + 1)
        q = len(blob) - 1
        for _ in range(n - 1 - i):
            q = blob.rfind(SEP, 0, q)
        return blob.rfind(SEP, 0, q), q

    def _index(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list index out of range")
        return i

    def __getitem__(self, i: int) -> bytes:
        if self._n < 0:
            item: bytes = self._v[i]
            return item
        p, q = self._span(self._index(i))
        return unescape(self._v[p + 1:q])

    def count(self, item: bytes) -> int:
        if self._n < 0:
            return int(self._v.count(item))
        return self._items().count(item)

    # -- writing ------------------------------------------------------------------------

    def _settle(self) -> None:
        """Become a deque when the packed form has outgrown one node."""
        if not _fits(self._n, len(self._v)):
            self._v, self._n = deque(self._items()), -1

    def append(self, item: bytes) -> None:
        if self._n < 0:
            self._v.append(item)
            return
        self._v = self._v + escape(item) + SEP
        self._n += 1
        self._settle()

    def appendleft(self, item: bytes) -> None:
        if self._n < 0:
            self._v.appendleft(item)
            return
        self._v = SEP + escape(item) + self._v
        self._n += 1
        self._settle()

    def extend(self, items: Iterable[bytes]) -> None:
        if self._n < 0:
            self._v.extend(items)
            return
        items = items if isinstance(items, list) else list(items)
        if items:
            self._v = b"".join((self._v, SEP.join([escape(x) for x in items]), SEP))
            self._n += len(items)
            self._settle()

    def extendleft(self, items: Iterable[bytes]) -> None:
        """Push each item at the head in turn (so they end up reversed), as deque.extendleft."""
        if self._n < 0:
            self._v.extendleft(items)
            return
        items = items if isinstance(items, list) else list(items)
        if items:
            self._v = b"".join((SEP, SEP.join([escape(x) for x in reversed(items)]), self._v))
            self._n += len(items)
            self._settle()

    def popleft(self) -> bytes:
        if self._n < 0:
            item: bytes = self._v.popleft()
            return item
        if not self._n:
            raise IndexError("pop from an empty list")
        blob: bytes = self._v
        j = blob.find(SEP, 1)
        self._v = blob[j:]
        self._n -= 1
        return unescape(blob[1:j])

    def pop(self) -> bytes:
        if self._n < 0:
            item: bytes = self._v.pop()
            return item
        if not self._n:
            raise IndexError("pop from an empty list")
        blob: bytes = self._v
        j = blob.rfind(SEP, 0, len(blob) - 1)
        self._v = blob[:j + 1]
        self._n -= 1
        return unescape(blob[j + 1:-1])

    def __setitem__(self, i: int, item: bytes) -> None:
        if self._n < 0:
            self._v[i] = item
            return
        p, q = self._span(self._index(i))
        blob: bytes = self._v
        self._v = b"".join((blob[:p + 1], escape(item), blob[q:]))
        self._settle()

    def insert(self, i: int, item: bytes) -> None:
        """Insert before position i (0..len), as deque.insert does for those."""
        if self._n < 0:
            self._v.insert(i, item)
            return
        n = self._n
        if i >= n:
            self.append(item)
            return
        p, _ = self._span(max(i, 0))
        blob: bytes = self._v
        self._v = b"".join((blob[:p + 1], escape(item), blob[p:]))
        self._n += 1
        self._settle()

    def __delitem__(self, i: int) -> None:
        if self._n < 0:
            del self._v[i]
            return
        p, q = self._span(self._index(i))
        blob: bytes = self._v
        self._v = blob[:p] + blob[q:]
        self._n -= 1

    def clear(self) -> None:
        """Empty it; it starts packed again (LREM rebuilds a list through clear + extend)."""
        self._v, self._n = _EMPTY, 0

