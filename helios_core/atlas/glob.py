"""Redis glob patterns (`stringmatchlen`), matched in bounded time.

The semantics are Redis's: `*` any run of bytes, `?` one byte, `[abc]`,
`[^abc]`, `[a-z]` (ends compared as C's signed char, either order; a range
may end in `]`), `\\x` a literal x (also inside a class), an unterminated
class is a class to the pattern's end, a trailing backslash is literal, and
an empty key matches only the empty pattern (KEYS and SCAN treat `*` apart).
`nocase` folds ASCII letters as C's tolower does (CONFIG GET, COMMAND LIST).

Why not a regex translation: `*` becomes `.*`, and a pattern with k stars
that fails makes the backtracking engine try O(n^k) splits.  A KEYS with 11
stars against one 40-byte key ran 8 s with every other client blocked, and
20 stars never finished (issue 10).  Here the pattern is cut at its stars into
star-free segments of one-byte tokens.  Each segment is a fixed-length regex
(no quantifier, so the engine cannot backtrack into it), and:

    first segment   must match at the start,
    last segment    must match at the end,
    middle segments are found leftmost, in order, in what lies between.

Leftmost placement is optimal: a later placement never leaves more room for
the segments after it.  So a match costs at most O(len(key) * len(pattern))
byte steps, run inside the regex engine, whatever the number of stars: the
same bound as Redis's own fix (`skipLongerMatches`, Redis 7.0.11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Glob", "compile_glob", "glob_match"]



def _signed(c: int) -> int:
    return c - 256 if c > 127 else c


def _lower(c: int) -> int:
    """C's tolower in the C locale, on a signed char's value."""
    return c + 32 if 65 <= c <= 90 else c


def _class_bytes(items: list[tuple[str, int, int]], neg: bool, nocase: bool) -> frozenset[int]:
    """The bytes a `[...]` token matches, evaluated as stringmatchlen does for each byte."""
    out = set()
    for b in range(256):
        c = _signed(b)
        hit = False
        for kind, x, y in items:
            if kind == "esc":  # an escaped byte in a class compares exactly, even with nocase
                hit = x == c
            elif kind == "range":
                lo, hi = (x, y) if x <= y else (y, x)
                cc = c
                if nocase:
                    lo, hi, cc = _lower(lo), _lower(hi), _lower(c)
                hit = lo <= cc <= hi
            else:
                hit = x == c if not nocase else _lower(x) == _lower(c)
            if hit:
                break
        if hit != neg:
            out.add(b)
    return frozenset(out)


def _literal_bytes(b: int, nocase: bool) -> frozenset[int]:
    if nocase:
        low = _lower(_signed(b))
        return frozenset(x for x in range(256) if _lower(_signed(x)) == low)
    return frozenset((b,))


def _tokens(pattern: bytes, nocase: bool) -> list[frozenset[int] | None]:
    """The pattern as tokens: None for a run of stars, else the set of bytes one position matches."""
    toks: list[frozenset[int] | None] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            if not toks or toks[-1] is not None:
                toks.append(None)
            i += 1
        elif c == 0x3F:  # ?
            toks.append(frozenset(range(256)))
            i += 1
        elif c == 0x5B:  # [
            i += 1
            neg = i < n and pattern[i] == 0x5E  # ^
            if neg:
                i += 1
            items: list[tuple[str, int, int]] = []
            while True:
                left = n - i
                if left >= 2 and pattern[i] == 0x5C:  # \x
                    items.append(("esc", _signed(pattern[i + 1]), 0))
                    i += 2
                elif left and pattern[i] == 0x5D:  # ]
                    i += 1
                    break
                elif left == 0:  # unterminated: the class ends with the pattern
                    break
                elif left >= 3 and pattern[i + 1] == 0x2D:  # a-b, where b may be ']'
                    items.append(("range", _signed(pattern[i]), _signed(pattern[i + 2])))
                    i += 3
                else:
                    items.append(("char", _signed(pattern[i]), 0))
                    i += 1
            toks.append(_class_bytes(items, neg, nocase))
        elif c == 0x5C and i + 1 < n:  # \x
            toks.append(_literal_bytes(pattern[i + 1], nocase))
            i += 2
        else:
            toks.append(_literal_bytes(c, nocase))
            i += 1
    return toks


def _atom(chars: frozenset[int]) -> bytes:
    if len(chars) == 256:
        return b"[\\x00-\\xff]"
    if not chars:
        return b"(?!)"
    if len(chars) == 1:
        return re.escape(bytes(chars))
    spans = []
    run: list[int] = []
    for b in sorted(chars):
        if run and b == run[-1] + 1:
            run[-1] = b
        else:
            run = [b, b]
            spans.append(run)
    return b"[" + b"".join(b"\\x%02x-\\x%02x" % (lo, hi) for lo, hi in spans) + b"]"


def _segment(toks: list[frozenset[int]]) -> re.Pattern[bytes]:
    return re.compile(b"".join(_atom(t) for t in toks), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled pattern: `match(key)` answers as Redis's stringmatchlen would."""

    pattern: bytes
    head: re.Pattern[bytes]          # before the first star (the whole pattern if it has none)
    head_len: int
    middle: tuple[re.Pattern[bytes], ...]
    tail: re.Pattern[bytes] | None   # after the last star; None when the pattern has no star
    tail_len: int

    def match(self, key: bytes) -> bool:
        if not key:
            return not self.pattern
        n = len(key)
        if self.tail is None:
            return n == self.head_len and self.head.match(key) is not None
        end = n - self.tail_len
        if end < self.head_len or self.head.match(key) is None:
            return False
        pos = self.head_len
        for seg in self.middle:
            m = seg.search(key, pos, end)
            if m is None:
                return False  # not found leftmost, so nowhere: no earlier star can help (the early stop)
            pos = m.end()
        return self.tail.match(key, end) is not None


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes, nocase: bool = False) -> Glob:
    """Compile `pattern` once (cached: KEYS, SCAN MATCH and PSUBSCRIBE reuse patterns)."""
    toks = _tokens(pattern, nocase)
    segments: list[list[frozenset[int]]] = [[]]
    for t in toks:
        if t is None:
            segments.append([])
        else:
            segments[-1].append(t)
    head = segments[0]
    if len(segments) == 1:
        return Glob(pattern, _segment(head), len(head), (), None, 0)
    tail = segments[-1]
    middle = tuple(_segment(s) for s in segments[1:-1] if s)
    return Glob(pattern, _segment(head), len(head), middle, _segment(tail), len(tail))


def glob_match(pattern: bytes, key: bytes, nocase: bool = False) -> bool:
    return compile_glob(pattern, nocase).match(key)
