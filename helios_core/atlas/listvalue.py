"""The list value type: Redis's quicklist, a sequence of packed nodes, in Python.

A `List` answers the part of the deque interface the list commands, effects,
snapshots and DUMP use (append/appendleft/extend/extendleft, pop/popleft,
[i], [i] = x, insert, del [i], count, clear, iteration both ways), so callers
do not care how it is held.

A node is one `bytes` object, ``SEP item1 SEP item2 ... SEP`` with the items
escaped (packed.py), as Redis keeps a listpack per quicklist node: an item
costs its bytes and a separator instead of a 33-byte object rounded to 16 and
a deque slot.  Pushing and popping at an end rewrites the end node (O(node)
copying at C speed, as listpack's memmove); an index is reached by counting
nodes, then `find`/`rfind` inside one from its nearer end; a range by `split`.
A node holds at most what list-max-listpack-size allows (-2, the default:
8 KiB; a positive size counts items, with quicklist's 8 KiB safety limit) and
at most 128 items whatever their size, since reaching the middle of a node
costs a Python-level step per item; an item larger than a node gets a node of
its own, as Redis's plain nodes.

A list of one node is held as that node alone (`_v` is the bytes), the common
small list: 48 bytes of object and the node.  Past one node `_v` is a
`_Quicklist` of nodes and their item counts; it goes back to one node when it
shrinks to one.  Redis 7.0 reports "quicklist" for every list, so none of this
is visible to clients.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from helios_core.atlas.packed import ESC, LIMITS, SEP, escape, list_node_bytes, unescape

__all__ = ["List", "NODE_MAX_ITEMS"]

NODE_MAX_ITEMS = 128
_SAFETY_BYTES = 8192  # quicklist.c SIZE_SAFETY_LIMIT: a node's bytes when its limit is an item count
_EMPTY = SEP


def _fits(n: int, nbytes: int) -> bool:
    """Whether a node of n items in nbytes is within the current limits."""
    if n > NODE_MAX_ITEMS:
        return False
    size = LIMITS.list_size
    if size >= 0:  # (0: one item per node, as quicklist's fill 0)
        return n <= max(size, 1) and nbytes <= _SAFETY_BYTES
    return nbytes <= list_node_bytes(size)


def _raw_items(node: bytes, n: int) -> list[bytes]:
    """A node's items, still escaped."""
    return node[1:-1].split(SEP) if n else []


def _items(node: bytes, n: int) -> list[bytes]:
    if not n:
        return []
    items = node.split(SEP)[1:-1]
    if not node.isascii() and ESC in node:
        return [unescape(x) for x in items]
    return items


def _span(node: bytes, n: int, i: int) -> tuple[int, int]:
    """(p, q): the separators around item i of a node of n items (0 <= i < n), found from the nearer end."""
    if i <= n // 2:
        p = 0
        for _ in range(i):
            p = node.find(SEP, p + 1)
        return p, node.find(SEP, p + 1)
    q = len(node) - 1
    for _ in range(n - 1 - i):
        q = node.rfind(SEP, 0, q)
    return node.rfind(SEP, 0, q), q


def _plain(item: Any) -> bool:
    """Bytes that need no escaping: stored as they are."""
    return type(item) is bytes and item.isascii()


def _node(escaped: list[bytes]) -> bytes:
    return b"".join((SEP, SEP.join(escaped), SEP))


def _pack(escaped: list[bytes]) -> tuple[list[bytes], list[int]]:
    """Escaped items cut into as few nodes as the limits allow: (nodes, counts)."""
    nodes: list[bytes] = []
    counts: list[int] = []
    i, n = 0, len(escaped)
    while i < n:
        chunk = escaped[i:i + NODE_MAX_ITEMS]
        if _fits(len(chunk), sum(map(len, chunk)) + len(chunk) + 1):  # the usual case: one join
            j = i + len(chunk)
        else:  # item by item (an item too large for any node gets one of its own)
            j, size = i + 1, len(escaped[i]) + 2
            while j < n and _fits(j - i + 1, size + len(escaped[j]) + 1):
                size += len(escaped[j]) + 1
                j += 1
        nodes.append(_node(escaped[i:j]))
        counts.append(j - i)
        i = j
    return nodes, counts


class _Quicklist:
    """More than one node: the nodes, head first, their item counts and the total."""

    __slots__ = ("nodes", "counts", "total")

    def __init__(self, nodes: list[bytes], counts: list[int]) -> None:
        self.nodes = nodes
        self.counts = counts
        self.total = sum(counts)

    def locate(self, i: int) -> tuple[int, int]:
        """(node, index in it) of item i (0 <= i < total), counting nodes from the nearer end."""
        counts = self.counts
        if i < self.total // 2:
            k = 0
            while i >= counts[k]:
                i -= counts[k]
                k += 1
            return k, i
        k = len(counts) - 1
        j = self.total - 1 - i  # from the tail
        while j >= counts[k]:
            j -= counts[k]
            k -= 1
        return k, counts[k] - 1 - j

    def items(self) -> list[bytes]:
        out: list[bytes] = []
        for node, n in zip(self.nodes, self.counts, strict=True):
            out += _items(node, n)
        return out

    def iter(self) -> Iterator[bytes]:
        for node, n in zip(self.nodes, self.counts, strict=True):
            yield from _items(node, n)

    def iter_reversed(self) -> Iterator[bytes]:
        for node, n in zip(reversed(self.nodes), reversed(self.counts), strict=True):
            yield from reversed(_items(node, n))

    def range(self, start: int, stop: int) -> list[bytes]:
        k, j = self.locate(start)
        want = stop - start + 1
        out: list[bytes] = []
        nodes, counts = self.nodes, self.counts
        while len(out) < want:
            out += _items(nodes[k], counts[k])[j:j + want - len(out)]
            k, j = k + 1, 0
        return out

    def get(self, i: int) -> bytes:
        k, j = self.locate(i)
        node = self.nodes[k]
        p, q = _span(node, self.counts[k], j)
        return unescape(node[p + 1:q])

    def replace(self, i: int, item: bytes) -> None:
        k, j = self.locate(i)
        node = self.nodes[k]
        p, q = _span(node, self.counts[k], j)
        self.nodes[k] = b"".join((node[:p + 1], escape(item), node[q:]))
        self._split_if_over(k)

    def insert(self, i: int, item: bytes) -> None:
        """Before item i (0 <= i < total)."""
        k, j = self.locate(i)
        node = self.nodes[k]
        p, _ = _span(node, self.counts[k], j)
        self.nodes[k] = b"".join((node[:p + 1], escape(item), node[p:]))
        self.counts[k] += 1
        self.total += 1
        self._split_if_over(k)

    def delete(self, i: int) -> None:
        k, j = self.locate(i)
        node = self.nodes[k]
        p, q = _span(node, self.counts[k], j)
        self._set_count(k, node[:p] + node[q:], self.counts[k] - 1)

    def _set_count(self, k: int, node: bytes, n: int) -> None:
        self.total += n - self.counts[k]
        if n:
            self.nodes[k], self.counts[k] = node, n
        else:
            del self.nodes[k]
            del self.counts[k]

    def _split_if_over(self, k: int) -> None:
        """A node an insert or a replace made too large is cut into nodes that fit."""
        node, n = self.nodes[k], self.counts[k]
        if _fits(n, len(node)):
            return
        nodes, counts = _pack(_raw_items(node, n))
        self.nodes[k:k + 1] = nodes
        self.counts[k:k + 1] = counts

    def push_tail(self, escaped: list[bytes]) -> None:
        nodes, counts = self.nodes, self.counts
        i = 0
        tail, n = nodes[-1], counts[-1]
        size = len(tail)
        while i < len(escaped) and _fits(n + i + 1, size + len(escaped[i]) + 1):
            size += len(escaped[i]) + 1
            i += 1
        if i:
            nodes[-1] = b"".join((tail, SEP.join(escaped[:i]), SEP))
            counts[-1] = n + i
        if i < len(escaped):
            more, more_counts = _pack(escaped[i:])
            nodes += more
            counts += more_counts
        self.total += len(escaped)

    def push_head(self, escaped: list[bytes]) -> None:
        """`escaped` in the order they will stand at the head."""
        nodes, counts = self.nodes, self.counts
        head, n = nodes[0], counts[0]
        size = len(head)
        i = len(escaped)
        while i > 0 and _fits(n + len(escaped) - i + 1, size + len(escaped[i - 1]) + 1):
            size += len(escaped[i - 1]) + 1
            i -= 1
        if i < len(escaped):
            nodes[0] = b"".join((SEP, SEP.join(escaped[i:]), head))
            counts[0] = n + len(escaped) - i
        if i:
            more, more_counts = _pack(escaped[:i])
            nodes[0:0] = more
            counts[0:0] = more_counts
        self.total += len(escaped)

    def pop_tail(self) -> bytes:
        node, n = self.nodes[-1], self.counts[-1]
        j = node.rfind(SEP, 0, len(node) - 1)
        self._set_count(len(self.nodes) - 1, node[:j + 1], n - 1)
        return unescape(node[j + 1:-1])

    def pop_head(self) -> bytes:
        node, n = self.nodes[0], self.counts[0]
        j = node.find(SEP, 1)
        self._set_count(0, node[j:], n - 1)
        return unescape(node[1:j])


class List:
    """A Redis list of bytes items.

    `_v` is the one node (`bytes`) and `_n` its number of items, or `_v` is a `_Quicklist`
    and `_n` is -1 (two slots keep the object at 48 bytes).
    """

    __slots__ = ("_v", "_n")

    def __init__(self, items: Iterable[bytes] = ()) -> None:
        self._v: Any = _EMPTY
        self._n = 0
        if items:
            self.extend(items)

    @property
    def packed(self) -> bool:
        """Whether the list is one node (True) or a quicklist of several."""
        return self._n >= 0

    def __len__(self) -> int:
        n = self._n
        return self._v.total if n < 0 else n

    def __repr__(self) -> str:
        form = "packed" if self._n >= 0 else f"{len(self._v.nodes)} nodes"
        return f"List({form}, {self._items()!r})"

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
        return self._v.items() if self._n < 0 else _items(self._v, self._n)

    def __iter__(self) -> Iterator[bytes]:
        """Node by node (LPOS or LINSERT that stop early decode only what they walked)."""
        return self._v.iter() if self._n < 0 else iter(_items(self._v, self._n))

    def __reversed__(self) -> Iterator[bytes]:
        return self._v.iter_reversed() if self._n < 0 else reversed(_items(self._v, self._n))

    def range(self, start: int, stop: int) -> list[bytes]:
        """Items start..stop inclusive (0 <= start <= stop < len: LRANGE's normalised span)."""
        if self._n < 0:
            items: list[bytes] = self._v.range(start, stop)
            return items
        node: bytes = self._v  # (inlined _items: LRANGE's path)
        items = node.split(SEP)  # ['', item, ..., item, '']
        if not node.isascii() and ESC in node:
            items = [unescape(x) for x in items]
        return items[start + 1:stop + 2]

    def _index(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list index out of range")
        return i

    def __getitem__(self, i: int) -> bytes:
        i = self._index(i)
        if self._n < 0:
            item: bytes = self._v.get(i)
            return item
        p, q = _span(self._v, self._n, i)
        return unescape(self._v[p + 1:q])

    def count(self, item: bytes) -> int:
        return self._items().count(item)

    # -- writing ------------------------------------------------------------------------

    def _settle(self) -> None:
        """One node that outgrew the limits becomes a quicklist; a quicklist down to one node, that node."""
        n = self._n
        if n >= 0:
            node: bytes = self._v
            if n <= 1 or (n <= 16 and len(node) <= 1024 and not 0 <= LIMITS.list_size < 16):
                return  # (within any limit: the common small list skips the full test)
            if not _fits(n, len(node)):
                nodes, counts = _pack(_raw_items(node, n))
                if len(nodes) > 1:  # (one item too large for any node stays a node of its own)
                    self._v, self._n = _Quicklist(nodes, counts), -1
        elif len(self._v.nodes) <= 1:
            ql: _Quicklist = self._v
            self._v, self._n = (ql.nodes[0], ql.counts[0]) if ql.nodes else (_EMPTY, 0)

    def append(self, item: bytes) -> None:
        ei = item if item.isascii() else escape(item)
        if self._n < 0:
            self._v.push_tail([ei])
            return
        self._v = self._v + ei + SEP
        self._n += 1
        self._settle()

    def appendleft(self, item: bytes) -> None:
        ei = item if item.isascii() else escape(item)
        if self._n < 0:
            self._v.push_head([ei])
            return
        self._v = SEP + ei + self._v
        self._n += 1
        self._settle()

    def extend(self, items: Iterable[bytes]) -> None:
        if type(items) is list and len(items) == 1 and _plain(items[0]):  # RPUSH of one item
            if self._n < 0:
                self._v.push_tail(items)
                return
            self._v = self._v + items[0] + SEP
            self._n += 1
            if self._n > 1:
                self._settle()
            return
        escaped = [x if type(x) is bytes and x.isascii() else escape(x) for x in items]
        if not escaped:
            return
        if self._n < 0:
            self._v.push_tail(escaped)
            return
        self._v = b"".join((self._v, SEP.join(escaped), SEP))
        self._n += len(escaped)
        if self._n > 1:
            self._settle()

    def extendleft(self, items: Iterable[bytes]) -> None:
        """Push each item at the head in turn (so they end up reversed), as deque.extendleft."""
        if type(items) is list and len(items) == 1 and _plain(items[0]):  # LPUSH of one item
            if self._n < 0:
                self._v.push_head(items)
                return
            self._v = SEP + items[0] + self._v
            self._n += 1
            if self._n > 1:
                self._settle()
            return
        escaped = [x if type(x) is bytes and x.isascii() else escape(x) for x in items]
        if not escaped:
            return
        if len(escaped) > 1:
            escaped.reverse()
        if self._n < 0:
            self._v.push_head(escaped)
            return
        self._v = b"".join((SEP, SEP.join(escaped), self._v))
        self._n += len(escaped)
        if self._n > 1:
            self._settle()

    def popleft(self) -> bytes:
        if self._n < 0:
            item: bytes = self._v.pop_head()
            self._settle()
            return item
        if not self._n:
            raise IndexError("pop from an empty list")
        node: bytes = self._v
        j = node.find(SEP, 1)
        self._v = node[j:]
        self._n -= 1
        item = node[1:j]
        return item if item.isascii() else unescape(item)

    def pop(self) -> bytes:
        if self._n < 0:
            item: bytes = self._v.pop_tail()
            self._settle()
            return item
        if not self._n:
            raise IndexError("pop from an empty list")
        node: bytes = self._v
        j = node.rfind(SEP, 0, len(node) - 1)
        self._v = node[:j + 1]
        self._n -= 1
        item = node[j + 1:-1]
        return item if item.isascii() else unescape(item)

    def __setitem__(self, i: int, item: bytes) -> None:
        i = self._index(i)
        if self._n < 0:
            self._v.replace(i, item)
            return
        node: bytes = self._v
        p, q = _span(node, self._n, i)
        self._v = b"".join((node[:p + 1], escape(item), node[q:]))
        self._settle()

    def insert(self, i: int, item: bytes) -> None:
        """Insert before position i (0..len), as deque.insert does for those."""
        n = len(self)
        if i >= n:
            self.append(item)
            return
        i = max(i, 0)
        if self._n < 0:
            self._v.insert(i, item)
            return
        node: bytes = self._v
        p, _ = _span(node, n, i)
        self._v = b"".join((node[:p + 1], escape(item), node[p:]))
        self._n += 1
        self._settle()

    def __delitem__(self, i: int) -> None:
        i = self._index(i)
        if self._n < 0:
            self._v.delete(i)
            self._settle()
            return
        node: bytes = self._v
        p, q = _span(node, self._n, i)
        self._v = node[:p] + node[q:]
        self._n -= 1

    def clear(self) -> None:
        self._v, self._n = _EMPTY, 0
