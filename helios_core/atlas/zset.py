"""Sorted set: members (bytes) with float scores, ordered by (score, member) like Redis.

Whatever Redis would hold it as, a zset is a dict and a SortedList here; `skiplist` is
the encoding Redis 7.0 would report (t_zset.c): a zset is made a listpack, converts to a
skiplist when an add of a new member leaves more than zset-max-listpack-entries members
or brings one longer than zset-max-listpack-value, and never converts back (ZREM, the
pops, ZREMRANGEBY*).  A zset built in one go (RDB loading, RESTORE, the *STORE
commands) gets the encoding of its content; RENAME, COPY and MOVE keep the source's
(an ENCODING effect: keys.log_value).  CONFIG SET of the limits converts none that exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

from helios_core.atlas.packed import LIMITS

__all__ = ["ZSet", "LISTPACK", "SKIPLIST", "content_encoding"]

LISTPACK = "listpack"
SKIPLIST = "skiplist"


def content_encoding(members: Iterable[bytes], n: int) -> str:
    """The encoding Redis gives a zset of these `n` members built in one go (RDB load, *STORE)."""
    if n > LIMITS.zset_entries or max(map(len, members), default=0) > LIMITS.zset_value:
        return SKIPLIST
    return LISTPACK


class ZSet:
    __slots__ = ("scores", "order", "skiplist")

    def __init__(self) -> None:
        self.scores: dict[bytes, float] = {}
        self.order: SortedList = SortedList()
        self.skiplist = False  # (Redis's encoding: its history, see the module's docstring)

    @property
    def encoding(self) -> str:
        """OBJECT ENCODING's answer."""
        return SKIPLIST if self.skiplist else LISTPACK

    def loaded_encoding(self) -> str:
        """The encoding Redis would give this content when loading it (RDB, RESTORE)."""
        return content_encoding(self.scores, len(self.scores))

    def __len__(self) -> int:
        return len(self.scores)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZSet) and self.scores == other.scores

    def __repr__(self) -> str:
        return f"ZSet({list(self.order)!r})"

    def copy(self) -> ZSet:
        z = ZSet()
        z.scores = dict(self.scores)
        z.order = SortedList(self.order)
        z.skiplist = self.skiplist
        return z

    def add(self, member: bytes, score: float) -> float | None:
        """Set member's score; returns the previous score (None if it was new).  A new member
        that leaves a listpack past a limit converts it (zsetAdd); a new score never does."""
        old = self.scores.get(member)
        if old is not None:
            if old == score:
                return old
            self.order.remove((old, member))
        elif not self.skiplist and (len(self.scores) >= LIMITS.zset_entries or len(member) > LIMITS.zset_value):
            self.skiplist = True
        self.scores[member] = score
        self.order.add((score, member))
        return old

    def remove(self, member: bytes) -> float | None:
        old = self.scores.pop(member, None)
        if old is not None:
            self.order.remove((old, member))
        return old

    def score(self, member: bytes) -> float | None:
        return self.scores.get(member)

    def rank(self, member: bytes) -> int | None:
        s = self.scores.get(member)
        if s is None:
            return None
        index: int = self.order.index((s, member))
        return index

    def items(self) -> Iterator[tuple[float, bytes]]:
        return iter(self.order)

    def range_by_index(self, start: int, stop: int) -> list[tuple[float, bytes]]:
        """Inclusive Redis-style indexes, negatives counted from the end."""
        n = len(self.order)
        if start < 0:
            start = max(n + start, 0)
        if stop < 0:
            stop = n + stop
        if start > stop or start >= n:
            return []
        return list(self.order.islice(start, min(stop, n - 1) + 1))

    def range_by_score(self, lo: float, lo_excl: bool, hi: float, hi_excl: bool) -> Iterable[tuple[float, bytes]]:
        # (score, member) tuples: a bare (score,) sorts before every member of that score.
        start = self._after_score(lo) if lo_excl else self.order.bisect_left((lo,))
        end = self._after_score(hi) if not hi_excl else self.order.bisect_left((hi,))
        if start >= end:
            return []
        found: Iterable[tuple[float, bytes]] = self.order.islice(start, end)
        return found

    def _after_score(self, score: float) -> int:
        """Index of the first element whose score is greater than `score`."""
        lst = self.order
        i: int = lst.bisect_left((score,))
        n = len(lst)
        lo: int
        # Members of equal score are contiguous; step over them with a galloping search.
        if i < n and lst[i][0] == score:
            lo, hi = i, n
            while lo < hi:
                mid = (lo + hi) // 2
                if lst[mid][0] <= score:
                    lo = mid + 1
                else:
                    hi = mid
            return lo
        return i

    def range_by_lex(self, lo: bytes | None, lo_excl: bool, hi: bytes | None,
                     hi_excl: bool) -> list[tuple[float, bytes]]:
        """BYLEX assumes equal scores (as Redis does); None bounds mean -/+ infinity."""
        return self.lex_walk((-1 if lo is None else 0, lo or b""), lo_excl, (1 if hi is None else 0, hi or b""),
                             hi_excl, False, 0, -1)

    def lex_walk(self, lo: tuple[int, bytes], lo_excl: bool, hi: tuple[int, bytes], hi_excl: bool,
                 rev: bool, offset: int, count: int) -> list[tuple[float, bytes]]:
        """The BYLEX walk of Redis 7.0 over a small (listpack) zset, step for step.

        Bounds are (rank, value): rank -1 is "-", 1 is "+", 0 a member value.  Redis
        finds the first member (the last one, reversed) not below the near bound, stops at
        once if it is past the far one, skips `offset` members without looking at them,
        then takes members while they are inside the far bound.  With equal scores that is
        the plain lexicographic range; with unequal scores it is what Redis answers.
        A negative offset or one past the end selects nothing; a negative count means all.
        """
        order = self.order
        n = len(order)
        if lo > hi or (lo == hi and (lo_excl or hi_excl)) or not n:
            return []

        def gte_min(m: bytes) -> bool:
            return (0, m) > lo if lo_excl else (0, m) >= lo

        def lte_max(m: bytes) -> bool:
            return (0, m) < hi if hi_excl else (0, m) <= hi

        if offset < 0 or (offset > 0 and offset >= n):
            return []
        if order[0][0] == order[-1][0]:
            return self._lex_slice(lo, lo_excl, hi, hi_excl, rev, offset, count)
        if not gte_min(order[-1][1]) or not lte_max(order[0][1]):
            return []
        if rev:
            i = n - 1
            while i >= 0 and not lte_max(order[i][1]):
                i -= 1
            if i < 0 or not gte_min(order[i][1]):
                return []
            i -= offset
            out = []
            while i >= 0 and count != 0 and gte_min(order[i][1]):
                out.append(order[i])
                i -= 1
                count -= 1
            return out
        i = 0
        while i < n and not gte_min(order[i][1]):
            i += 1
        if i == n or not lte_max(order[i][1]):
            return []
        i += offset
        out = []
        while i < n and count != 0 and lte_max(order[i][1]):
            out.append(order[i])
            i += 1
            count -= 1
        return out

    def _lex_slice(self, lo: tuple[int, bytes], lo_excl: bool, hi: tuple[int, bytes], hi_excl: bool,
                   rev: bool, offset: int, count: int) -> list[tuple[float, bytes]]:
        """lex_walk's answer when every score is equal (the members are then in lexicographic
        order): found by bisection, so a range costs O(log n + its length), not a walk from an end."""
        order = self.order
        score = order[0][0]
        start = self._lex_index(lo, lo_excl, score)
        end = self._lex_index(hi, not hi_excl, score)
        if rev:
            top = end - 1 - offset
            bottom = start if count < 0 else max(start, top - count + 1)
            got = list(order.islice(bottom, top + 1)) if bottom <= top else []
            got.reverse()
            return got
        first = start + offset
        last = end if count < 0 else min(end, first + count)
        return list(order.islice(first, last)) if first < last else []

    def _lex_index(self, bound: tuple[int, bytes], past: bool, score: float) -> int:
        """Where the members at or past a lex bound start (`past`: after members equal to it)."""
        rank, value = bound
        if rank:
            return 0 if rank < 0 else len(self.order)
        index: int = self.order.bisect_right((score, value)) if past else self.order.bisect_left((score, value))
        return index

    def pop_min(self, count: int) -> list[tuple[float, bytes]]:
        got = list(self.order.islice(0, count))
        for score, member in got:
            self.order.remove((score, member))
            del self.scores[member]
        return got

    def pop_max(self, count: int) -> list[tuple[float, bytes]]:
        n = len(self.order)
        got = list(self.order.islice(max(n - count, 0), n))
        got.reverse()
        for score, member in got:
            self.order.remove((score, member))
            del self.scores[member]
        return got
