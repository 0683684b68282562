"""ZSet: members ordered by (score, member), ranges by index, score and lex."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from helios_core.atlas.zset import ZSet

INF = math.inf


def zset(*pairs: tuple[float, bytes]) -> ZSet:
    z = ZSet()
    for score, member in pairs:
        z.add(member, score)
    return z


def members(items) -> list[bytes]:
    return [m for _, m in items]


def test_add_returns_previous_score_and_reorders() -> None:
    z = ZSet()
    assert z.add(b"a", 1.0) is None
    assert z.add(b"b", 2.0) is None
    assert z.add(b"a", 3.0) == 1.0
    assert list(z.items()) == [(2.0, b"b"), (3.0, b"a")]
    assert len(z) == 2


def test_add_same_score_is_a_no_op() -> None:
    z = zset((1.0, b"a"))
    assert z.add(b"a", 1.0) == 1.0
    assert list(z.items()) == [(1.0, b"a")]


def test_equal_scores_order_by_member_bytes() -> None:
    z = zset((0.0, b"b"), (0.0, b"\xff"), (0.0, b"a"), (0.0, b""), (-1.0, b"z"))
    assert members(z.items()) == [b"z", b"", b"a", b"b", b"\xff"]


def test_remove_and_score() -> None:
    z = zset((1.0, b"a"), (2.0, b"b"))
    assert z.remove(b"a") == 1.0
    assert z.remove(b"a") is None
    assert z.score(b"a") is None
    assert z.score(b"b") == 2.0
    assert len(z) == 1


def test_rank() -> None:
    z = zset((3.0, b"c"), (1.0, b"a"), (2.0, b"b"))
    assert [z.rank(m) for m in (b"a", b"b", b"c")] == [0, 1, 2]
    assert z.rank(b"nope") is None


def test_infinite_scores_sort_at_the_ends() -> None:
    z = zset((INF, b"top"), (-INF, b"bottom"), (0.0, b"mid"))
    assert members(z.items()) == [b"bottom", b"mid", b"top"]
    assert members(z.range_by_score(-INF, False, -INF, False)) == [b"bottom"]
    assert members(z.range_by_score(INF, False, INF, False)) == [b"top"]
    assert members(z.range_by_score(-INF, True, INF, True)) == [b"mid"]


def test_range_by_index_like_redis() -> None:
    z = zset(*((float(i), b"m%d" % i) for i in range(5)))
    assert members(z.range_by_index(0, -1)) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert members(z.range_by_index(1, 2)) == [b"m1", b"m2"]
    assert members(z.range_by_index(-2, -1)) == [b"m3", b"m4"]
    assert members(z.range_by_index(-100, 0)) == [b"m0"]
    assert members(z.range_by_index(3, 100)) == [b"m3", b"m4"]
    assert z.range_by_index(5, 10) == []
    assert z.range_by_index(3, 1) == []
    assert z.range_by_index(0, -6) == []
    assert ZSet().range_by_index(0, -1) == []


def test_range_by_score_bounds_and_exclusion() -> None:
    z = zset((1.0, b"a"), (2.0, b"b1"), (2.0, b"b2"), (3.0, b"c"))
    assert members(z.range_by_score(2.0, False, 2.0, False)) == [b"b1", b"b2"]
    assert members(z.range_by_score(2.0, True, 3.0, False)) == [b"c"]
    assert members(z.range_by_score(1.0, False, 2.0, True)) == [b"a"]
    assert members(z.range_by_score(2.0, True, 2.0, True)) == []
    assert members(z.range_by_score(3.0, False, 1.0, False)) == []
    assert members(z.range_by_score(-INF, False, INF, False)) == [b"a", b"b1", b"b2", b"c"]


def test_range_by_lex() -> None:
    z = zset(*((0.0, m) for m in (b"a", b"b", b"c", b"d")))
    assert members(z.range_by_lex(None, False, None, False)) == [b"a", b"b", b"c", b"d"]
    assert members(z.range_by_lex(b"b", False, b"c", False)) == [b"b", b"c"]
    assert members(z.range_by_lex(b"b", True, b"d", True)) == [b"c"]
    assert members(z.range_by_lex(b"c", False, None, False)) == [b"c", b"d"]
    assert members(z.range_by_lex(b"d", False, b"a", False)) == []


def test_pop_min_and_max() -> None:
    z = zset((1.0, b"a"), (2.0, b"b"), (3.0, b"c"))
    assert z.pop_min(2) == [(1.0, b"a"), (2.0, b"b")]
    assert z.pop_max(5) == [(3.0, b"c")]
    assert len(z) == 0 and z.scores == {}


def test_copy_is_independent_and_equality_is_by_content() -> None:
    z = zset((1.0, b"a"))
    c = z.copy()
    assert c == z
    c.add(b"b", 2.0)
    assert c != z and len(z) == 1
    assert z != {b"a": 1.0}


@given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"\xff"]),
                          st.floats(allow_nan=False)), max_size=30))
def test_order_always_matches_scores(ops: list[tuple[bytes, float]]) -> None:
    z = ZSet()
    want: dict[bytes, float] = {}
    for member, score in ops:
        if score < 0 and member in want:  # mix in removals
            z.remove(member)
            del want[member]
        else:
            z.add(member, score)
            want[member] = score
    assert z.scores == want
    assert list(z.items()) == sorted((s, m) for m, s in want.items())
    for i, (_, m) in enumerate(z.items()):
        assert z.rank(m) == i
