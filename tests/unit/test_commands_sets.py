"""Set commands, run through the engine with a hand-driven clock."""

from __future__ import annotations

import pytest

from tests.unit.atlas_harness import NOT_INT, SYNTAX, WRONGTYPE, Atlas

NOT_POSITIVE = "ERR value is out of range, must be positive"


@pytest.fixture
def s(a: Atlas) -> Atlas:
    """`s1` holds a b c d, `s2` holds c d e."""
    a("SADD", "s1", "a", "b", "c", "d")
    a("SADD", "s2", "c", "d", "e")
    return a


def test_sadd_srem(a: Atlas) -> None:
    assert a("SADD", "s", "a", "b", "a") == 2
    assert a("SADD", "s", "b", "c") == 1
    assert a("SMEMBERS", "s") == {b"a", b"b", b"c"}
    assert a("TYPE", "s") == "set"
    assert a("SREM", "s", "a", "zz", "a") == 1
    assert a("SREM", "missing", "a") == 0
    assert a("SREM", "s", "b", "c") == 2
    assert a("EXISTS", "s") == 0
    assert a("SADD", "s", "x", "x") == 1 and a("SADD", "s", "x") == 0
    assert a.aof() == [("SADD", b"s", [b"a", b"b"]), ("SADD", b"s", [b"c"]), ("SREM", b"s", [b"a"]),
                       ("SREM", b"s", [b"b", b"c"]), ("SADD", b"s", [b"x"])]


def test_reads(s: Atlas) -> None:
    assert s("SCARD", "s1") == 4 and s("SCARD", "missing") == 0
    assert s("SISMEMBER", "s1", "a") == 1 and s("SISMEMBER", "s1", "e") == 0 and s("SISMEMBER", "no", "a") == 0
    assert s("SMISMEMBER", "s1", "a", "e", "b") == [1, 0, 1]
    assert s("SMISMEMBER", "missing", "a") == [0]
    assert s("SMEMBERS", "missing") == set()


def test_algebra(s: Atlas) -> None:
    assert s("SINTER", "s1", "s2") == {b"c", b"d"}
    assert s("SINTER", "s1", "missing") == set()
    assert s("SUNION", "s1", "s2", "missing") == {b"a", b"b", b"c", b"d", b"e"}
    assert s("SDIFF", "s1", "s2") == {b"a", b"b"}
    assert s("SDIFF", "missing", "s1") == set()
    assert s("SINTERCARD", 2, "s1", "s2") == 2
    assert s("SINTERCARD", 2, "s1", "s2", "LIMIT", 1) == 1
    assert s("SINTERCARD", 2, "s1", "s2", "LIMIT", 0) == 2


def test_sintercard_errors(s: Atlas) -> None:
    assert s.error("SINTERCARD", 0, "s1") == "ERR numkeys should be greater than 0"
    assert s.error("SINTERCARD", "x", "s1") == "ERR numkeys should be greater than 0"
    assert s.error("SINTERCARD", 3, "s1") == "ERR Number of keys can't be greater than number of args"
    assert s.error("SINTERCARD", 1, "s1", "LIMIT", -1) == "ERR LIMIT can't be negative"
    assert s.error("SINTERCARD", 1, "s1", "LIMIT") == SYNTAX
    assert s.error("SINTERCARD", 1, "s1", "FOO") == SYNTAX


def test_store_forms_replace_the_destination(s: Atlas) -> None:
    s("SET", "dst", "string")
    s("EXPIRE", "dst", 100)
    assert s("SINTERSTORE", "dst", "s1", "s2") == 2
    assert s("SMEMBERS", "dst") == {b"c", b"d"} and s("TTL", "dst") == -1
    assert s("SUNIONSTORE", "dst", "dst", "s2") == 3
    assert s("SDIFFSTORE", "dst", "s1", "s2") == 2
    assert s("SMEMBERS", "dst") == {b"a", b"b"}
    assert s("SINTERSTORE", "dst", "s1", "missing") == 0
    assert s("EXISTS", "dst") == 0


def test_smove(s: Atlas) -> None:
    assert s("SMOVE", "s1", "s2", "a") == 1
    assert s("SMOVE", "s1", "s2", "c") == 1  # already in s2: only removed from s1
    assert s("SMEMBERS", "s1") == {b"b", b"d"} and s("SMEMBERS", "s2") == {b"a", b"c", b"d", b"e"}
    assert s("SMOVE", "s1", "s2", "zz") == 0
    assert s("SMOVE", "s1", "s1", "b") == 1 and s("SMOVE", "s1", "s1", "zz") == 0
    s("SET", "str", "x")
    assert s("SMOVE", "missing", "str", "a") == 0  # a missing source answers before the types
    assert s.error("SMOVE", "s1", "str", "b") == WRONGTYPE
    assert s.error("SMOVE", "str", "s1", "b") == WRONGTYPE
    assert s("SMOVE", "s1", "new", "b") == 1 and s("SMOVE", "s1", "new", "d") == 1
    assert s("EXISTS", "s1") == 0 and s("SMEMBERS", "new") == {b"b", b"d"}


def test_spop_is_logged_as_srem(s: Atlas) -> None:
    m = s("SPOP", "s1")
    assert m in (b"a", b"b", b"c", b"d") and s("SCARD", "s1") == 3
    assert s.aof()[-1] == ("SREM", b"s1", [m])
    two = s("SPOP", "s1", 2)
    assert isinstance(two, set) and len(two) == 2 and s("SCARD", "s1") == 1
    assert s.aof()[-1][0] == "SREM" and set(s.aof()[-1][2]) == two
    assert s("SPOP", "s1", 0) == set()
    assert len(s("SPOP", "s1", 10)) == 1 and s("EXISTS", "s1") == 0
    assert s("SPOP", "missing") is None and s("SPOP", "missing", 3) == set()
    assert s.error("SPOP", "s2", -1) == NOT_POSITIVE
    assert s.error("SPOP", "s2", "x") == NOT_POSITIVE
    assert s.error("SPOP", "s2", 1, 2) == SYNTAX


def test_srandmember(s: Atlas) -> None:
    assert s("SRANDMEMBER", "s2") in (b"c", b"d", b"e")
    assert s("SRANDMEMBER", "missing") is None
    assert sorted(s("SRANDMEMBER", "s2", 10)) == [b"c", b"d", b"e"]
    assert len(set(s("SRANDMEMBER", "s2", 2))) == 2
    many = s("SRANDMEMBER", "s2", -9)
    assert len(many) == 9 and set(many) <= {b"c", b"d", b"e"}
    assert s("SRANDMEMBER", "s2", 0) == [] and s("SRANDMEMBER", "missing", 5) == []
    assert s.error("SRANDMEMBER", "s2", "x") == NOT_INT
    assert s("SCARD", "s2") == 3  # nothing was removed


def test_sscan(s: Atlas) -> None:
    cursor, members = s("SSCAN", "s1", 0)
    assert cursor == b"0" and sorted(members) == [b"a", b"b", b"c", b"d"]
    assert s("SSCAN", "s1", 0, "MATCH", "[ab]")[1] in ([b"a", b"b"], [b"b", b"a"])
    big = [b"m%04d" % i for i in range(1000)]
    s("SADD", "big", *big)
    seen: list[bytes] = []
    cursor = b"0"
    while True:
        cursor, batch = s("SSCAN", "big", cursor, "COUNT", 100)
        seen += batch
        if cursor == b"0":
            break
    assert sorted(seen) == big


def test_wrongtype_both_ways(s: Atlas) -> None:
    s("SET", "str", "x")
    s("HSET", "h", "f", "v")
    for cmd in (("SADD", "str", "a"), ("SMEMBERS", "h"), ("SINTER", "s1", "str"), ("SINTER", "missing", "str"),
                ("SUNIONSTORE", "d", "s1", "h"), ("SPOP", "str", 0), ("SRANDMEMBER", "h", 0), ("SCARD", "h"),
                ("SINTERCARD", 1, "str")):
        assert s.error(*cmd) == WRONGTYPE, cmd
    for cmd in (("GET", "s1"), ("HGET", "s1", "a"), ("ZSCORE", "s1", "a"), ("INCRBYFLOAT", "s1", 1)):
        assert s.error(*cmd) == WRONGTYPE, cmd


def test_expiry_rename_type_scan(s: Atlas) -> None:
    s("PEXPIRE", "s1", 500)
    assert s("RENAME", "s1", "s2") == "OK"  # a set over a set: replaced, not merged
    assert s("SMEMBERS", "s2") == {b"a", b"b", b"c", b"d"} and s("PTTL", "s2") == 500
    assert s("SCAN", 0, "TYPE", "set")[1] == [b"s2"]
    assert s("KEYS", "*") == [b"s2"]
    s.now += 500
    assert s("SCARD", "s2") == 0 and s("DBSIZE") == 0
    s("SADD", "x", "1")
    assert s("FLUSHALL") == "OK" and s("DBSIZE") == 0
