"""Hash commands, run through the engine with a hand-driven clock."""

from __future__ import annotations

import pytest

from tests.unit.atlas_harness import NOT_INT, SYNTAX, WRONGTYPE, Atlas


@pytest.fixture
def h(a: Atlas) -> Atlas:
    """`h` holds a=1 b=2 c=hello."""
    a("HSET", "h", "a", 1, "b", 2, "c", "hello")
    return a


def test_hset_counts_new_fields_and_overwrites(a: Atlas) -> None:
    assert a("HSET", "h", "a", 1, "b", 2) == 2
    assert a("HSET", "h", "a", 3, "c", 4, "c", 5) == 1  # a exists; c counted once, last value wins
    assert a("HGETALL", "h") == {b"a": b"3", b"b": b"2", b"c": b"5"}
    assert a("TYPE", "h") == "hash"
    assert a.error("HSET", "h", "a", 1, "b") == "ERR wrong number of arguments for 'hset' command"
    assert a.error("HSET", "h", "a") == "ERR wrong number of arguments for 'hset' command"


def test_hmset_hsetnx(a: Atlas) -> None:
    assert a("HMSET", "h", "a", 1, "b", 2) == "OK"
    assert a.error("HMSET", "h", "a", 1, "b") == "ERR wrong number of arguments for 'hmset' command"
    assert a("HSETNX", "h", "a", 9) == 0
    assert a("HSETNX", "h", "z", 9) == 1
    assert a("HMGET", "h", "a", "z", "nope") == [b"1", b"9", None]


def test_reads(h: Atlas) -> None:
    assert h("HGET", "h", "a") == b"1"
    assert h("HGET", "h", "nope") is None
    assert h("HGET", "missing", "a") is None
    assert h("HMGET", "missing", "a", "b") == [None, None]
    assert h("HLEN", "h") == 3 and h("HLEN", "missing") == 0
    assert h("HEXISTS", "h", "a") == 1 and h("HEXISTS", "h", "x") == 0 and h("HEXISTS", "missing", "a") == 0
    assert sorted(h("HKEYS", "h")) == [b"a", b"b", b"c"]
    assert sorted(h("HVALS", "h")) == [b"1", b"2", b"hello"]
    assert h("HKEYS", "missing") == [] and h("HVALS", "missing") == [] and h("HGETALL", "missing") == {}
    assert h("HSTRLEN", "h", "c") == 5 and h("HSTRLEN", "h", "x") == 0 and h("HSTRLEN", "missing", "x") == 0


def test_hdel_removes_the_key_when_empty(h: Atlas) -> None:
    assert h("HDEL", "h", "a", "a", "nope") == 1
    assert h("HDEL", "missing", "a") == 0
    assert h("HDEL", "h", "b", "c") == 2
    assert h("EXISTS", "h") == 0
    assert h("TYPE", "h") == "none"
    assert h.aof()[-1] == ("HDEL", b"h", [b"b", b"c"])


def test_hincrby(a: Atlas) -> None:
    assert a("HINCRBY", "h", "n", 5) == 5
    assert a("HINCRBY", "h", "n", -7) == -2
    a("HSET", "h", "s", "abc", "big", str((1 << 63) - 1))
    assert a.error("HINCRBY", "h", "s", 1) == "ERR hash value is not an integer"
    assert a.error("HINCRBY", "h", "n", "x") == NOT_INT
    assert a.error("HINCRBY", "h", "big", 1) == "ERR increment or decrement would overflow"
    assert a.aof()[1] == ("HSET", b"h", [(b"n", b"-2")])  # logged as the HSET of its result


def test_hincrbyfloat(a: Atlas) -> None:
    assert a("HINCRBYFLOAT", "h", "f", "0.1") == b"0.1"
    assert a("HINCRBYFLOAT", "h", "f", "0.2") == b"0.3"  # long double arithmetic, as Redis
    assert a("HINCRBYFLOAT", "h", "f", "1e2") == b"100.3"
    a("HSET", "h", "s", "abc")
    assert a.error("HINCRBYFLOAT", "h", "s", 1) == "ERR hash value is not a float"
    assert a.error("HINCRBYFLOAT", "h", "f", "abc") == "ERR value is not a valid float"
    assert a.error("HINCRBYFLOAT", "h", "f", "inf") == "ERR value is NaN or Infinity"


def test_hrandfield(h: Atlas) -> None:
    assert h("HRANDFIELD", "h") in (b"a", b"b", b"c")
    assert h("HRANDFIELD", "missing") is None
    assert sorted(h("HRANDFIELD", "h", 5)) == [b"a", b"b", b"c"]
    two = h("HRANDFIELD", "h", 2)
    assert len(set(two)) == 2
    many = h("HRANDFIELD", "h", -7)
    assert len(many) == 7 and set(many) <= {b"a", b"b", b"c"}
    flat = h("HRANDFIELD", "h", -4, "WITHVALUES")  # the engine has no connection: RESP2's flat shape
    assert len(flat) == 8 and all(dict(h("HGETALL", "h"))[f] == v for f, v in zip(flat[::2], flat[1::2], strict=True))
    assert h("HRANDFIELD", "h", 0) == [] and h("HRANDFIELD", "missing", 3) == []
    assert h.error("HRANDFIELD", "h", 1, "foo") == SYNTAX
    assert h.error("HRANDFIELD", "h", "x") == NOT_INT
    assert h.error("HRANDFIELD", "h", -(1 << 62) - 5, "WITHVALUES") == "ERR value is out of range"


def test_hscan(h: Atlas) -> None:
    assert h("HSCAN", "h", 0) == [b"0", [b"a", b"1", b"b", b"2", b"c", b"hello"]]
    assert h("HSCAN", "h", 0, "MATCH", "[ab]") == [b"0", [b"a", b"1", b"b", b"2"]]
    assert h("HSCAN", "missing", 0, "FOO") == [b"0", []]  # options are not read for a missing key
    assert h.error("HSCAN", "h", "x") == "ERR invalid cursor"
    assert h.error("HSCAN", "h", 0, "COUNT", 0) == SYNTAX
    assert h.error("HSCAN", "h", 0, "TYPE", "string") == SYNTAX


def test_hscan_of_a_large_hash_visits_every_field_once(a: Atlas) -> None:
    fields = [b"f%03d" % i for i in range(300)]
    a("HSET", "big", *[x for f in fields for x in (f, b"v")])
    seen: list[bytes] = []
    cursor = b"0"
    while True:
        cursor, batch = a("HSCAN", "big", cursor, "COUNT", 50)
        seen += batch[::2]
        if cursor == b"0":
            break
    assert sorted(seen) == fields


def test_wrongtype_both_ways(h: Atlas) -> None:
    h("SET", "str", "x")
    h("ZADD", "z", 1, "m")
    h("SADD", "s", "m")
    for cmd in (("HGET", "str", "a"), ("HSET", "z", "a", 1), ("HLEN", "s"), ("HGETALL", "str"),
                ("HINCRBY", "s", "a", 1), ("HSCAN", "z", 0), ("HRANDFIELD", "str", 0)):
        assert h.error(*cmd) == WRONGTYPE, cmd
    for cmd in (("GET", "h"), ("INCR", "h"), ("APPEND", "h", "x"), ("ZADD", "h", 1, "a"), ("ZCARD", "h"),
                ("SADD", "h", "x"), ("SMEMBERS", "h")):
        assert h.error(*cmd) == WRONGTYPE, cmd
    assert h("SET", "h", "plain") == "OK"  # SET replaces any type
    assert h("TYPE", "h") == "string"


def test_expiry_rename_scan_type(h: Atlas) -> None:
    h("PEXPIRE", "h", 1000)
    assert h("RENAME", "h", "h2") == "OK"
    assert h("PTTL", "h2") == 1000 and h("HGET", "h2", "c") == b"hello"
    h("SET", "str", "x")
    assert h("SCAN", 0, "TYPE", "hash")[1] == [b"h2"]
    h.now += 1000
    assert h("HGETALL", "h2") == {} and h("EXISTS", "h2") == 0


def test_undo_after_a_failed_transaction_leaves_the_hash_as_it_was(h: Atlas) -> None:
    from helios_core.atlas.effects import apply_effect, undo_effects
    ks = h.engine.ks
    before = dict(ks.data[b"h"])
    undo: list = []
    apply_effect(ks, ("HSET", b"h", [(b"a", b"new"), (b"z", b"1")]), undo)
    apply_effect(ks, ("HDEL", b"h", [b"a", b"b", b"c", b"z"]), undo)
    assert b"h" not in ks.data
    undo_effects(ks, undo)
    assert ks.data[b"h"] == before
    undo = []
    apply_effect(ks, ("SET", b"h", b"str", None), undo)
    apply_effect(ks, ("HSET", b"h", [(b"q", b"1")]), undo)  # replaces the string by a new hash
    undo_effects(ks, undo)
    assert ks.data[b"h"] == before
