"""Keyspace commands, run through the engine with a hand-driven clock."""

from __future__ import annotations

from typing import Any

import pytest

from helios_core.atlas.commands import Simple
from tests.unit.atlas_harness import NOT_INT, SYNTAX, T0, Atlas


def invalid_expire(cmd: str) -> str:
    return f"ERR invalid expire time in '{cmd}' command"


# -- DEL UNLINK EXISTS TYPE ------------------------------------------------------------------

def test_del_unlink_exists(a: Atlas) -> None:
    a("MSET", "a", "1", "b", "2", "c", "3")
    a("ZADD", "z", 1, "m")
    assert a("EXISTS", "a", "a", "z", "nope") == 3
    assert a("DEL", "a", "a", "nope") == 1
    assert a("UNLINK", "b", "z") == 2
    assert a("EXISTS", "a", "b", "z") == 0
    assert a("EXISTS", "c") == 1


def test_type(a: Atlas) -> None:
    a("SET", "s", "v")
    a("ZADD", "z", 1, "m")
    replies = [a("TYPE", k) for k in ("s", "z", "none")]
    assert replies == ["string", "zset", "none"]
    assert all(isinstance(r, Simple) for r in replies)


# -- EXPIRE family ---------------------------------------------------------------------------

def test_expire_pexpire_expireat_pexpireat(a: Atlas) -> None:
    a("MSET", "a", "1", "b", "1", "c", "1", "d", "1")
    assert a("EXPIRE", "a", 10) == 1
    assert a("PEXPIRE", "b", 1500) == 1
    assert a("EXPIREAT", "c", T0 // 1000 + 20) == 1
    assert a("PEXPIREAT", "d", T0 + 2500) == 1
    assert [a("PTTL", k) for k in "abcd"] == [10_000, 1500, 20_000, 2500]
    assert [a("PEXPIRETIME", k) for k in "abcd"] == [T0 + 10_000, T0 + 1500, T0 + 20_000, T0 + 2500]
    assert a("EXPIRETIME", "a") == (T0 + 10_000) // 1000
    assert a("EXPIRE", "missing", 10) == 0


@pytest.mark.parametrize("cmd, t", [("EXPIRE", 0), ("EXPIRE", -10), ("PEXPIRE", 0), ("EXPIREAT", 1),
                                    ("PEXPIREAT", T0), ("EXPIREAT", -5)])
def test_expire_in_the_past_deletes(a: Atlas, cmd: str, t: int) -> None:
    a("SET", "k", "v")
    assert a(cmd, "k", t) == 1
    assert a("EXISTS", "k") == 0
    assert a.aof()[-1] == ("DEL", b"k")


def test_expire_nx_xx(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("EXPIRE", "k", 100, "XX") == 0
    assert a("EXPIRE", "k", 100, "NX") == 1
    assert a("EXPIRE", "k", 200, "NX") == 0
    assert a("EXPIRE", "k", 200, "xx") == 1
    assert a("TTL", "k") == 200


def test_expire_gt_lt(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("EXPIRE", "k", 100, "GT") == 0   # no TTL counts as infinite: nothing is greater
    assert a("EXPIRE", "k", 100, "LT") == 1   # ... and everything is less
    assert a("EXPIRE", "k", 50, "GT") == 0
    assert a("EXPIRE", "k", 100, "GT") == 0   # equal is not greater
    assert a("EXPIRE", "k", 150, "GT") == 1
    assert a("EXPIRE", "k", 150, "LT") == 0
    assert a("EXPIRE", "k", 120, "LT", "XX") == 1
    assert a("TTL", "k") == 120


@pytest.mark.parametrize("flags, error", [
    (["NX", "XX"], "ERR NX and XX, GT or LT options at the same time are not compatible"),
    (["NX", "GT"], "ERR NX and XX, GT or LT options at the same time are not compatible"),
    (["lt", "nx"], "ERR NX and XX, GT or LT options at the same time are not compatible"),
    (["GT", "LT"], "ERR GT and LT options at the same time are not compatible"),
    (["XX", "GT", "LT"], "ERR GT and LT options at the same time are not compatible"),
    (["FOO"], "ERR Unsupported option FOO"),
    (["NX", "bar"], "ERR Unsupported option bar"),
])
def test_expire_option_errors(a: Atlas, flags: list, error: str) -> None:
    a("SET", "k", "v")
    for cmd in ("EXPIRE", "PEXPIREAT"):
        assert a.error(cmd, "k", 100, *flags) == error
        assert a.error(cmd, "k", "abc", *flags) == error  # options are checked before the time


@pytest.mark.parametrize("cmd, t, error", [
    ("EXPIRE", "abc", NOT_INT), ("EXPIRE", "1.5", NOT_INT),
    ("EXPIRE", 9223372036854775807, invalid_expire("expire")),
    ("EXPIRE", -9223372036854775807, invalid_expire("expire")),
    ("PEXPIRE", 9223372036854775807, invalid_expire("pexpire")),
    ("EXPIREAT", 9223372036854775807, invalid_expire("expireat")),
])
def test_expire_time_errors(a: Atlas, cmd: str, t: Any, error: str) -> None:
    a("SET", "k", "v")
    assert a.error(cmd, "k", t) == error
    assert a("TTL", "k") == -1


def test_pexpireat_at_the_largest_time(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("PEXPIREAT", "k", 9223372036854775807) == 1
    assert a("PEXPIRETIME", "k") == 9223372036854775807


def test_ttl_pttl_expiretime_persist(a: Atlas) -> None:
    assert [a(c, "missing") for c in ("TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME")] == [-2] * 4
    a("SET", "k", "v")
    assert [a(c, "k") for c in ("TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME")] == [-1] * 4
    assert a("PERSIST", "k") == 0
    a("PEXPIRE", "k", 2500)
    assert (a("TTL", "k"), a("PTTL", "k")) == (3, 2500)  # TTL rounds to the nearest second
    a.now += 1001
    assert (a("TTL", "k"), a("PTTL", "k")) == (1, 1499)
    assert a("PERSIST", "k") == 1
    assert (a("TTL", "k"), a("PERSIST", "k"), a("PERSIST", "missing")) == (-1, 0, 0)


def test_lazy_expiry_deletes_and_logs_a_del(a: Atlas) -> None:
    a("SET", "k", "v", "PX", 100)
    a("ZADD", "z", 1, "m")
    a("PEXPIRE", "z", 100)
    a.now += 99
    assert a("GET", "k") == b"v"
    a.now += 1
    assert a("GET", "k") is None
    assert a("ZCARD", "z") == 0
    assert [a(c, "k") for c in ("EXISTS", "TTL", "PTTL")] == [0, -2, -2]
    assert a("TYPE", "k") == "none"
    assert ("DEL", b"k") in a.aof() and ("DEL", b"z") in a.aof()
    assert a("DBSIZE") == 0
    assert a("SET", "k", "new", "NX") == "OK"  # the expired key does not count as existing


def test_expired_keys_are_invisible_to_keys_and_scan(a: Atlas) -> None:
    a("MSET", "a", "1", "b", "2")
    a("PEXPIRE", "a", 10)
    a.now += 10
    assert a("KEYS", "*") == [b"b"]
    assert a("SCAN", 0) == [b"0", [b"b"]]
    assert a("EXISTS", "a") == 0


# -- KEYS ----------------------------------------------------------------------------------

NAMES = [b"a", b"b", b"c", b"ab", b"a]", b"a-", b"a\\", b"[", b"x*y", b"a^", b"hello", b"hallo", b"hxllo",
         b"\xff", b"h\xffllo"]


@pytest.mark.parametrize("pattern, want", [
    (b"*", NAMES),
    (b"a*", [b"a", b"ab", b"a]", b"a-", b"a\\", b"a^"]),
    (b"h?llo", [b"hello", b"hallo", b"hxllo", b"h\xffllo"]),
    (b"h[ae]llo", [b"hello", b"hallo"]),
    (b"h[^e]llo", [b"hallo", b"hxllo", b"h\xffllo"]),
    (b"h[a-e]llo", [b"hello", b"hallo"]),
    (b"h[e-a]llo", [b"hello", b"hallo"]),   # reversed ranges count
    (b"[a-c]", [b"a", b"b", b"c"]),
    (b"[^a]", [b"b", b"c", b"[", b"\xff"]),
    (b"x\\*y", [b"x*y"]),
    (b"a\\*", []),
    (b"a[\\]]", [b"a]"]),
    (b"a\\", [b"a\\"]),                     # a trailing backslash is itself
    (b"[", []),
    (b"[ab", [b"a", b"b"]),                 # an unclosed class runs to the end
    (b"[a-]", [b"a"]),                      # as Redis: the range a..']' ...
    (b"[a-]*", [b"a"]),                     # ... swallows the rest of the pattern
    (b"[^]", [b"a", b"b", b"c", b"[", b"\xff"]),
    (b"[]", []),
    (b"?", [b"a", b"b", b"c", b"[", b"\xff"]),
    (b"[\\xff]", []),
    (b"\xff", [b"\xff"]),
    (b"nothing*", []),
])
def test_keys_patterns(a: Atlas, pattern: bytes, want: list[bytes]) -> None:
    for name in NAMES:
        a("SET", name, "1")
    assert sorted(a("KEYS", pattern)) == sorted(want)


def test_keys_ranges_compare_as_signed_chars(a: Atlas) -> None:
    # Redis compares class ranges as C's (signed) char: [a-\xff] is [\xff-a], all of 0x00..0x61 and 0xff.
    for name in (b"0", b"a", b"b", b"\x80", b"\xff"):
        a("SET", name, "1")
    assert sorted(a("KEYS", b"[a-\xff]")) == [b"0", b"a", b"\xff"]


def test_keys_and_the_empty_key(a: Atlas) -> None:
    a("SET", "", "1")
    a("SET", "k", "1")
    assert sorted(a("KEYS", "*")) == [b"", b"k"]
    assert a("KEYS", "**") == [b"k"]   # as Redis: only "*" itself matches an empty key
    assert a("KEYS", "") == [b""]


# -- SCAN ----------------------------------------------------------------------------------

def scan_all(a: Atlas, *opts: Any) -> list[bytes]:
    cursor, out = b"0", []
    while True:
        cursor, batch = a("SCAN", cursor, *opts)
        out += batch
        if cursor == b"0":
            return out


def test_scan_full_iteration_returns_each_key_once(a: Atlas) -> None:
    for i in range(25):
        a("SET", f"k{i:02d}", i)
    a("ZADD", "z", 1, "m")
    got = scan_all(a, "COUNT", 4)
    assert sorted(got) == sorted([b"k%02d" % i for i in range(25)] + [b"z"])
    assert len(got) == len(set(got))


def test_scan_count_limits_each_batch(a: Atlas) -> None:
    for i in range(10):
        a("SET", f"k{i}", i)
    cursor, batch = a("SCAN", 0, "COUNT", 3)
    assert cursor != b"0" and len(batch) == 3
    cursor, batch = a("SCAN", 0)  # the default COUNT is 10
    assert (cursor, len(batch)) == (b"0", 10)


def test_scan_with_writes_between_calls(a: Atlas) -> None:
    for i in range(30):
        a("SET", f"k{i:02d}", i)
    stable = {b"k%02d" % i for i in range(30) if i % 3 == 0}
    seen: list[bytes] = []
    cursor, step = b"0", 0
    while True:
        cursor, batch = a("SCAN", cursor, "COUNT", 4)
        seen += batch
        # Between calls: delete some keys, add new ones before and after the cursor.
        a("DEL", f"k{step * 3 + 1:02d}")
        a("SET", f"a-new-{step}", 1)
        a("SET", f"z-new-{step}", 1)
        step += 1
        if cursor == b"0":
            break
    assert stable <= set(seen)                   # every key present throughout is returned ...
    assert len(seen) == len(set(seen))           # ... and no key twice


def test_scan_match_and_type(a: Atlas) -> None:
    a("MSET", "user:1", "a", "user:2", "b", "other", "c")
    a("ZADD", "user:z", 1, "m")
    assert sorted(scan_all(a, "MATCH", "user:*", "COUNT", 1)) == [b"user:1", b"user:2", b"user:z"]
    assert sorted(scan_all(a, "MATCH", "user:?")) == [b"user:1", b"user:2", b"user:z"]
    assert scan_all(a, "TYPE", "zset") == [b"user:z"]
    assert sorted(scan_all(a, "type", "STRING", "match", "*r*")) == [b"other", b"user:1", b"user:2"]
    assert scan_all(a, "TYPE", "list") == []
    assert sorted(scan_all(a, "MATCH", "*")) == [b"other", b"user:1", b"user:2", b"user:z"]


@pytest.mark.parametrize("args, error", [
    (["x"], "ERR invalid cursor"), (["-1"], "ERR invalid cursor"), ([" 0"], "ERR invalid cursor"),
    (["18446744073709551616"], "ERR invalid cursor"), (["12345"], "ERR invalid cursor"),
    ([0, "COUNT", 0], SYNTAX), ([0, "COUNT", "x"], NOT_INT), ([0, "COUNT"], SYNTAX), ([0, "MATCH"], SYNTAX),
    ([0, "FOO", "bar"], SYNTAX),
])
def test_scan_errors(a: Atlas, args: list, error: str) -> None:
    a("SET", "k", "v")
    assert a.error("SCAN", *args) == error


def test_scan_cursor_is_single_use(a: Atlas) -> None:
    for i in range(5):
        a("SET", f"k{i}", i)
    cursor, _ = a("SCAN", 0, "COUNT", 2)
    a("SCAN", cursor, "COUNT", 2)
    assert a.error("SCAN", cursor) == "ERR invalid cursor"


# -- RENAME RENAMENX DBSIZE FLUSHALL ----------------------------------------------------------

def test_rename_moves_value_and_ttl(a: Atlas) -> None:
    a("SET", "src", "v", "EX", 100)
    a("SET", "dst", "old")
    assert a("RENAME", "src", "dst") == "OK"
    assert (a("GET", "dst"), a("TTL", "dst"), a("EXISTS", "src")) == (b"v", 100, 0)


def test_rename_a_zset_over_a_string(a: Atlas) -> None:
    a("ZADD", "z", 1, "a", 2, "b")
    a("PEXPIRE", "z", 5000)
    a("SET", "s", "v")
    assert a("RENAME", "z", "s") == "OK"
    assert a("ZRANGE", "s", 0, -1, "WITHSCORES") == [(b"a", 1.0), (b"b", 2.0)]
    assert (a("PTTL", "s"), a("EXISTS", "z")) == (5000, 0)
    a("SET", "t", "v")
    a("RENAME", "t", "s")
    assert a("TYPE", "s") == "string"


def test_rename_errors_and_same_key(a: Atlas) -> None:
    assert a.error("RENAME", "nope", "x") == "ERR no such key"
    assert a.error("RENAMENX", "nope", "nope") == "ERR no such key"
    a("SET", "k", "v", "EX", 10)
    assert a("RENAME", "k", "k") == "OK"
    assert (a("GET", "k"), a("TTL", "k")) == (b"v", 10)
    assert a("RENAMENX", "k", "k") == 0


def test_renamenx(a: Atlas) -> None:
    a("MSET", "a", "1", "b", "2")
    assert a("RENAMENX", "a", "b") == 0
    assert a("RENAMENX", "a", "c") == 1
    assert a("MGET", "a", "b", "c") == [None, b"2", b"1"]


def test_dbsize_and_flushall(a: Atlas) -> None:
    assert a("DBSIZE") == 0
    a("MSET", "a", "1", "b", "2")
    a("ZADD", "z", 1, "m")
    assert a("DBSIZE") == 3
    assert a("FLUSHALL") == "OK"
    assert a("DBSIZE") == 0
    a("SET", "a", "1")
    assert a("FLUSHALL", "async") == "OK" and a("FLUSHDB", "SYNC") == "OK"
    assert a.error("FLUSHALL", "NOW") == SYNTAX
    assert a.error("FLUSHALL", "SYNC", "ASYNC") == SYNTAX
    assert ("FLUSHALL",) in a.aof()


# -- errors common to every command ------------------------------------------------------------

@pytest.mark.parametrize("cmd", [
    ["DEL"], ["EXISTS"], ["TYPE"], ["TYPE", "a", "b"], ["EXPIRE", "k"], ["PEXPIREAT", "k"], ["TTL"],
    ["PTTL", "a", "b"], ["EXPIRETIME"], ["PERSIST"], ["KEYS"], ["KEYS", "a", "b"], ["SCAN"], ["RENAME", "a"],
    ["RENAMENX", "a", "b", "c"], ["DBSIZE", "x"], ["UNLINK"],
])
def test_wrong_number_of_arguments(a: Atlas, cmd: list) -> None:
    assert a.error(*cmd) == f"ERR wrong number of arguments for '{cmd[0].lower()}' command"


def test_unknown_command_without_arguments(a: Atlas) -> None:
    assert a.error("NOSUCH") == "ERR unknown command 'NOSUCH', with args beginning with: "


def test_unknown_command_lists_its_arguments_like_redis(a: Atlas) -> None:
    assert a.error("FOO", "a", "b", "c", "d", "e") == (
        "ERR unknown command 'FOO', with args beginning with: 'a' 'b' 'c' 'd' 'e' ")
