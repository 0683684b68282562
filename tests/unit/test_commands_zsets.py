"""Sorted-set commands, run through the engine with a hand-driven clock."""

from __future__ import annotations

import math
from typing import Any

import pytest

from helios_core.atlas.commands.zsets import Pairs
from tests.unit.atlas_harness import NOT_INT, SYNTAX, WRONGTYPE, Atlas

INF = math.inf
NOT_FLOAT = "ERR value is not a valid float"
NOT_FLOAT_RANGE = "ERR min or max is not a float"
NOT_LEX_RANGE = "ERR min or max not valid string range item"
LIMIT_ERR = "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"


@pytest.fixture
def z(a: Atlas) -> Atlas:
    """`z` holds a=1 b=2 c=3 d=4 e=5."""
    a("ZADD", "z", 1, "a", 2, "b", 3, "c", 4, "d", 5, "e")
    return a


def scores(a: Atlas, key: str = "z") -> list[tuple[bytes, float]]:
    return list(a("ZRANGE", key, 0, -1, "WITHSCORES"))


# -- ZADD ------------------------------------------------------------------------------------

def test_zadd_adds_and_updates(a: Atlas) -> None:
    assert a("ZADD", "z", 1, "a", 2, "b") == 2
    assert a("ZADD", "z", 5, "a", 3, "c") == 1
    assert scores(a) == [(b"b", 2.0), (b"c", 3.0), (b"a", 5.0)]
    assert a("ZADD", "z", "CH", 6, "a", 3, "c", 0, "d") == 2  # changed a, added d; c unchanged
    assert a("ZCARD", "z") == 4


def test_zadd_nx_xx(a: Atlas) -> None:
    a("ZADD", "z", 1, "a")
    assert a("ZADD", "z", "NX", 5, "a", 2, "b") == 1
    assert a("ZADD", "z", "XX", 7, "a", 3, "c") == 0
    assert scores(a) == [(b"b", 2.0), (b"a", 7.0)]
    assert a("ZADD", "missing", "XX", 1, "a") == 0
    assert a("EXISTS", "missing") == 0


def test_zadd_gt_lt(a: Atlas) -> None:
    a("ZADD", "z", 5, "a")
    assert a("ZADD", "z", "GT", "CH", 4, "a", 1, "new") == 1      # new members are still added
    assert a("ZADD", "z", "GT", "CH", 6, "a") == 1
    assert a("ZADD", "z", "LT", "CH", 7, "a") == 0
    assert a("ZADD", "z", "LT", "XX", "CH", 2, "a", 0, "other") == 1
    assert scores(a) == [(b"new", 1.0), (b"a", 2.0)]


def test_zadd_incr(a: Atlas) -> None:
    assert a("ZADD", "z", "INCR", "2.5", "a") == 2.5
    assert a("ZADD", "z", "INCR", -1, "a") == 1.5
    assert a("ZADD", "z", "NX", "INCR", 1, "a") is None
    assert a("ZADD", "z", "XX", "INCR", 1, "b") is None
    assert a("ZADD", "z", "GT", "INCR", -1, "a") is None
    assert a("ZADD", "z", "LT", "INCR", -1, "a") == 0.5
    assert a("ZADD", "missing", "XX", "INCR", 1, "a") is None
    assert a.error("ZADD", "z", "INCR", 1, "a", 2, "b") == "ERR INCR option supports a single increment-element pair"


def test_zadd_inf_and_nan(a: Atlas) -> None:
    a("ZADD", "z", "inf", "a", "-inf", "b", "+inf", "c")
    assert scores(a) == [(b"b", -INF), (b"a", INF), (b"c", INF)]
    assert a.error("ZADD", "z", "INCR", "-inf", "a") == "ERR resulting score is not a number (NaN)"
    assert a.error("ZINCRBY", "z", "-inf", "c") == "ERR resulting score is not a number (NaN)"
    assert a("ZSCORE", "z", "a") == INF


def test_zadd_same_member_twice_keeps_the_last(a: Atlas) -> None:
    assert a("ZADD", "z", 0, "a", -1, "c") == 2
    assert a("ZADD", "z", "CH", 0, "c", "-inf", "c") == 2  # as Redis: each update counts
    assert a("ZSCORE", "z", "c") == -INF
    assert a("ZADD", "z", 1, "n", 2, "n") == 1
    assert a("ZSCORE", "z", "n") == 2.0
    assert a.aof()[-1] == ("ZADD", b"z", [(2.0, b"n")])


def test_zadd_stores_negative_zero_as_zero(a: Atlas) -> None:
    assert a("ZINCRBY", "z", "-0", "a") == 0.0
    assert math.copysign(1, a("ZINCRBY", "z", "-0", "b")) == -1   # the reply keeps its sign ...
    assert math.copysign(1, a("ZSCORE", "z", "b")) == 1            # ... the stored score does not
    a("ZADD", "z", "-0.0", "c")
    assert math.copysign(1, a("ZSCORE", "z", "c")) == 1


@pytest.mark.parametrize("score", ["0x10", "1e3", ".5", "-2.", "+1", "Infinity", "-INF", "4e-324"])
def test_zadd_accepts_what_strtod_accepts(a: Atlas, score: str) -> None:
    assert a("ZADD", "z", score, "m") == 1


@pytest.mark.parametrize("score", ["abc", "nan", "1e400", "-1e400", "1e-400", " 1", "1 ", "", "1_0", "0x", "1e"])
def test_zadd_refuses_bad_scores(a: Atlas, score: str) -> None:
    assert a.error("ZADD", "z", 1, "ok", score, "m") == NOT_FLOAT
    assert a("EXISTS", "z") == 0   # nothing is added when any score is bad


@pytest.mark.parametrize("args, error", [
    (["NX", "XX", 1, "a"], "ERR XX and NX options at the same time are not compatible"),
    (["NX", "GT", 1, "a"], "ERR GT, LT, and/or NX options at the same time are not compatible"),
    (["LT", "NX", 1, "a"], "ERR GT, LT, and/or NX options at the same time are not compatible"),
    (["GT", "LT", 1, "a"], "ERR GT, LT, and/or NX options at the same time are not compatible"),
    ([1, "a", 2], SYNTAX),
    (["CH", "NX"], SYNTAX),
    (["XX", "NX", 1], SYNTAX),            # the pair count is checked before the flags
    (["FOO", "a"], NOT_FLOAT),
])
def test_zadd_errors(a: Atlas, args: list, error: str) -> None:
    assert a.error("ZADD", "z", *args) == error


# -- ZREM ZSCORE ZMSCORE ZCARD ZINCRBY ---------------------------------------------------------

def test_zrem_deletes_the_key_when_empty(z: Atlas) -> None:
    assert z("ZREM", "z", "a", "a", "nope") == 1
    assert z("ZREM", "missing", "a") == 0
    assert z("ZREM", "z", "b", "c", "d", "e") == 4
    assert z("EXISTS", "z") == 0
    assert z.aof()[-1] == ("ZREM", b"z", [b"b", b"c", b"d", b"e"])


def test_zscore_zmscore_zcard(z: Atlas) -> None:
    assert z("ZSCORE", "z", "c") == 3.0
    assert z("ZSCORE", "z", "nope") is None
    assert z("ZSCORE", "missing", "a") is None
    assert z("ZMSCORE", "z", "a", "nope", "e") == [1.0, None, 5.0]
    assert z("ZMSCORE", "missing", "a", "b") == [None, None]
    assert (z("ZCARD", "z"), z("ZCARD", "missing")) == (5, 0)


def test_zincrby(a: Atlas) -> None:
    assert a("ZINCRBY", "z", 2, "a") == 2.0
    assert a("ZINCRBY", "z", "-0.5", "a") == 1.5
    assert a.error("ZINCRBY", "z", "abc", "a") == NOT_FLOAT
    assert a.error("ZINCRBY", "z", "nx", "a") == SYNTAX   # as Redis: the increment is read as an option


# -- ZCOUNT and score bounds -----------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, n", [
    ("-inf", "+inf", 5), (2, 4, 3), ("(2", 4, 2), (2, "(4", 2), ("(2", "(3", 0), (4, 2, 0), (3, 3, 1),
    ("(3", 3, 0), ("-inf", "(1", 0), ("1e400", "inf", 0), ("-1e400", "0x2", 2),
    ("", "", 0), ("(", 1, 1), (" 2", "\t3", 2), ("(inf", "inf", 0),
])
def test_zcount(z: Atlas, lo: Any, hi: Any, n: int) -> None:
    assert z("ZCOUNT", "z", lo, hi) == n


@pytest.mark.parametrize("bound", ["abc", "nan", "(nan", "1 ", "((1", "   ", "[1"])
def test_zcount_bad_bounds(z: Atlas, bound: str) -> None:
    assert z.error("ZCOUNT", "z", bound, 5) == NOT_FLOAT_RANGE
    assert z.error("ZCOUNT", "missing", 0, bound) == NOT_FLOAT_RANGE


# -- ZRANK ZREVRANK -----------------------------------------------------------------------------

def test_zrank_zrevrank(z: Atlas) -> None:
    assert [z("ZRANK", "z", m) for m in "ae"] == [0, 4]
    assert [z("ZREVRANK", "z", m) for m in "ae"] == [4, 0]
    assert z("ZRANK", "z", "nope") is None
    assert z("ZREVRANK", "missing", "a") is None


def test_zrank_withscore(z: Atlas) -> None:
    # Redis 7.2's form (redis-server 7.0 has arity 3): an intended extension.
    assert z("ZRANK", "z", "b", "WITHSCORE") == [1, 2.0]
    assert z("ZREVRANK", "z", "b", "withscore") == [3, 2.0]
    assert z.error("ZRANK", "z", "b", "FOO") == SYNTAX


# -- ZRANGE and friends ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, want", [
    ([0, -1], [b"a", b"b", b"c", b"d", b"e"]),
    ([1, 2], [b"b", b"c"]),
    ([-2, -1], [b"d", b"e"]),
    ([3, 100], [b"d", b"e"]),
    ([-100, 0], [b"a"]),
    ([5, 10], []),
    ([2, 1], []),
    ([0, -1, "REV"], [b"e", b"d", b"c", b"b", b"a"]),
    ([1, 2, "rev"], [b"d", b"c"]),
    ([-1, -1, "REV"], [b"a"]),
    ([0, -1, "LIMIT", 0, -1], [b"a", b"b", b"c", b"d", b"e"]),  # count -1 is no LIMIT at all
    ([2, 4, "BYSCORE"], [b"b", b"c", b"d"]),
    (["(2", "+inf", "BYSCORE", "LIMIT", 1, 2], [b"d", b"e"]),
    ([4, 2, "BYSCORE", "REV"], [b"d", b"c", b"b"]),
    (["+inf", "-inf", "BYSCORE", "REV", "LIMIT", 1, 1], [b"d"]),
    (["-inf", "+inf", "BYSCORE", "LIMIT", 3, -5], [b"d", b"e"]),
    (["-inf", "+inf", "BYSCORE", "LIMIT", -1, 2], []),
    (["-inf", "+inf", "BYSCORE", "LIMIT", 0, 0], []),
    ([2, 4, "BYSCORE", "LIMIT", 0, 1, "LIMIT", 0, 2], [b"b", b"c"]),  # the last LIMIT counts
])
def test_zrange(z: Atlas, args: list, want: list[bytes]) -> None:
    assert z("ZRANGE", "z", *args) == want


def test_zrange_withscores_gives_pairs(z: Atlas) -> None:
    reply = z("ZRANGE", "z", 0, 1, "WITHSCORES")
    assert isinstance(reply, Pairs) and reply == [(b"a", 1.0), (b"b", 2.0)]
    assert z("ZRANGE", "z", 5, 4, "BYSCORE", "REV", "WITHSCORES") == [(b"e", 5.0), (b"d", 4.0)]


@pytest.mark.parametrize("args, want", [
    (["-", "+"], [b"a", b"b", b"c", b"d"]),
    (["[b", "[c"], [b"b", b"c"]),
    (["(b", "(d"], [b"c"]),
    (["[c", "+"], [b"c", b"d"]),
    (["+", "-"], []),
    (["-", "-"], []),
    (["[", "(b"], [b"a"]),
    (["+", "-", "REV"], [b"d", b"c", b"b", b"a"]),
    (["[c", "[a", "REV", "LIMIT", 1, 5], [b"b", b"a"]),
])
def test_zrange_bylex(a: Atlas, args: list, want: list[bytes]) -> None:
    a("ZADD", "l", 0, "a", 0, "b", 0, "c", 0, "d")
    assert a("ZRANGE", "l", *args[:2], "BYLEX", *args[2:]) == want


@pytest.mark.parametrize("args, error", [
    ([0, -1, "LIMIT", 0, 1], LIMIT_ERR),
    ([0, -1, "REV", "LIMIT", 0, 2], LIMIT_ERR),
    (["-", "+", "BYLEX", "WITHSCORES"], "ERR syntax error, WITHSCORES not supported in combination with BYLEX"),
    ([0, -1, "REV", "REV"], SYNTAX),
    ([0, 1, "BYSCORE", "BYLEX"], SYNTAX),
    ([0, 1, "BYSCORE", "BYSCORE"], SYNTAX),
    ([0, 1, "LIMIT", 0], SYNTAX),
    ([0, 1, "FOO"], SYNTAX),
    ([0, 1, "BYSCORE", "LIMIT", "x", 1], NOT_INT),
    (["a", 1], NOT_INT),
    ([0, "1.5"], NOT_INT),
    (["a", 1, "BYSCORE"], NOT_FLOAT_RANGE),
    (["a", "+", "BYLEX"], NOT_LEX_RANGE),
    (["-", "+x", "BYLEX"], NOT_LEX_RANGE),
])
def test_zrange_errors(z: Atlas, args: list, error: str) -> None:
    assert z.error("ZRANGE", "z", *args) == error
    assert z.error("ZRANGE", "missing", *args) == error


def test_zrangebyscore_and_zrevrangebyscore(z: Atlas) -> None:
    assert z("ZRANGEBYSCORE", "z", 2, 4) == [b"b", b"c", b"d"]
    assert z("ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", 1, 2, "WITHSCORES") == [(b"b", 2.0), (b"c", 3.0)]
    assert z("ZREVRANGEBYSCORE", "z", 4, 2) == [b"d", b"c", b"b"]
    assert z("ZREVRANGEBYSCORE", "z", "+inf", "(4", "WITHSCORES") == [(b"e", 5.0)]
    assert z("ZREVRANGEBYSCORE", "z", 2, 4) == []
    for cmd in ("ZRANGEBYSCORE", "ZREVRANGEBYSCORE"):
        assert z.error(cmd, "z", 0, 1, "REV") == SYNTAX
        assert z.error(cmd, "z", 0, 1, "BYSCORE") == SYNTAX
        assert z.error(cmd, "z", 0, "x") == NOT_FLOAT_RANGE


def test_zrevrange(z: Atlas) -> None:
    assert z("ZREVRANGE", "z", 0, 1) == [b"e", b"d"]
    assert z("ZREVRANGE", "z", -2, -1, "WITHSCORES") == [(b"b", 2.0), (b"a", 1.0)]
    assert z("ZREVRANGE", "z", 0, -1, "LIMIT", 0, -1) == [b"e", b"d", b"c", b"b", b"a"]
    assert z.error("ZREVRANGE", "z", 0, -1, "LIMIT", 0, 1) == LIMIT_ERR
    assert z.error("ZREVRANGE", "z", 0, -1, "REV") == SYNTAX


# -- ZPOPMIN ZPOPMAX -------------------------------------------------------------------------------

def test_zpopmin_zpopmax(z: Atlas) -> None:
    assert z("ZPOPMIN", "z") == [b"a", 1.0]
    assert z("ZPOPMAX", "z") == [b"e", 5.0]
    reply = z("ZPOPMIN", "z", 2)
    assert isinstance(reply, Pairs) and reply == [(b"b", 2.0), (b"c", 3.0)]
    assert z("ZPOPMAX", "z", 0) == []
    assert z("ZPOPMAX", "z", 10) == [(b"d", 4.0)]
    assert z("EXISTS", "z") == 0
    assert z("ZPOPMIN", "z") == [] and z("ZPOPMIN", "z", 3) == []


@pytest.mark.parametrize("args, error", [
    ([-1], "ERR value is out of range, must be positive"),
    (["x"], "ERR value is out of range, must be positive"),
    ([1, 2], SYNTAX),
])
def test_zpop_errors(z: Atlas, args: list, error: str) -> None:
    assert z.error("ZPOPMIN", "z", *args) == error
    assert z.error("ZPOPMAX", "z", *args) == error


# -- ZREMRANGEBYSCORE ZREMRANGEBYRANK ----------------------------------------------------------------

def test_zremrangebyscore(z: Atlas) -> None:
    assert z("ZREMRANGEBYSCORE", "z", "(1", 3) == 2
    assert z("ZREMRANGEBYSCORE", "z", 10, 20) == 0
    assert z("ZRANGE", "z", 0, -1) == [b"a", b"d", b"e"]
    assert z("ZREMRANGEBYSCORE", "z", "-inf", "+inf") == 3
    assert z("EXISTS", "z") == 0
    assert z("ZREMRANGEBYSCORE", "z", 0, 1) == 0
    assert z.error("ZREMRANGEBYSCORE", "z", "x", 1) == NOT_FLOAT_RANGE


def test_zremrangebyrank(z: Atlas) -> None:
    assert z("ZREMRANGEBYRANK", "z", -2, -1) == 2
    assert z("ZREMRANGEBYRANK", "z", 5, 10) == 0
    assert z("ZREMRANGEBYRANK", "z", 2, 1) == 0
    assert z("ZRANGE", "z", 0, -1) == [b"a", b"b", b"c"]
    assert z("ZREMRANGEBYRANK", "z", 0, 100) == 3
    assert z("EXISTS", "z") == 0
    assert z.error("ZREMRANGEBYRANK", "z", "x", 1) == NOT_INT


# -- WRONGTYPE, arity, AOF ---------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [
    ["ZADD", "s", 1, "m"], ["ZINCRBY", "s", 1, "m"], ["ZREM", "s", "m"], ["ZSCORE", "s", "m"],
    ["ZMSCORE", "s", "m"], ["ZCARD", "s"], ["ZCOUNT", "s", 0, 1], ["ZRANK", "s", "m"], ["ZREVRANK", "s", "m"],
    ["ZRANGE", "s", 0, -1], ["ZRANGE", "s", 0, 1, "BYSCORE"], ["ZRANGE", "s", "+", "-", "BYLEX"],
    ["ZRANGEBYSCORE", "s", 0, 1], ["ZREVRANGEBYSCORE", "s", 1, 0], ["ZREVRANGE", "s", 0, -1],
    ["ZPOPMIN", "s"], ["ZPOPMAX", "s", 0], ["ZREMRANGEBYSCORE", "s", 0, 1], ["ZREMRANGEBYRANK", "s", 0, 1],
])
def test_zset_commands_on_a_string(a: Atlas, cmd: list) -> None:
    a("SET", "s", "v")
    assert a.error(*cmd) == WRONGTYPE
    assert a("GET", "s") == b"v"


@pytest.mark.parametrize("cmd", [
    ["ZADD", "z", 1], ["ZINCRBY", "z", 1], ["ZREM", "z"], ["ZSCORE", "z"], ["ZMSCORE", "z"], ["ZCARD"],
    ["ZCOUNT", "z", 0], ["ZRANK", "z"], ["ZRANGE", "z", 0], ["ZRANGEBYSCORE", "z", 0], ["ZPOPMIN"],
    ["ZREMRANGEBYRANK", "z", 0], ["ZREMRANGEBYSCORE", "z", 0, 1, 2],
])
def test_wrong_number_of_arguments(a: Atlas, cmd: list) -> None:
    assert a.error(*cmd) == f"ERR wrong number of arguments for '{cmd[0].lower()}' command"


def test_writes_reach_the_aof_and_reads_do_not(a: Atlas) -> None:
    a("ZADD", "z", 1, "a", "inf", b"\xff")
    a("ZADD", "z", 1, "a")               # no change: no record
    a("ZRANGE", "z", 0, -1)
    a("ZINCRBY", "z", 1, "a")
    a("ZPOPMAX", "z")
    assert a.aof() == [("ZADD", b"z", [(1.0, b"a"), (INF, b"\xff")]), ("ZADD", b"z", [(2.0, b"a")]),
                       ("ZREM", b"z", [b"\xff"])]
