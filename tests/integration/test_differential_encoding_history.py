"""OBJECT ENCODING's memory: a real atlasd against a real redis-server after the writes that only
history explains.

Redis 7.0 converts a set from intset to hashtable, and a hash from listpack to
hashtable, for good: a set that took a string (or passed
set-max-intset-entries) stays a hashtable after SREM leaves it small and
all-integer, and a hash that passed a limit stays one after HDEL.  RENAME,
MOVE and COPY keep the object's encoding (COPY duplicates it as it is); DUMP
and RESTORE go through the RDB format, which re-derives it from the content,
as every command that builds a new set does (SINTERSTORE, SUNIONSTORE,
SDIFFSTORE's first algorithm, SPOP with a count that keeps few members).
SDIFFSTORE's second algorithm copies the first set and removes from the copy,
so what the copy became is kept.  Each test compares OBJECT ENCODING (and for
DUMP the payload's RDB type byte) after every step.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import test_differential_encodings as _encodings
from tests.integration.test_atlasd_support import Daemon, wait_for_snapshot
from tests.integration.test_differential_encodings import both, config, encoding, many, same
from tests.integration.test_differential_types import Pair, Raw, Tree
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)


# The same servers and pair as test_differential_encodings (limits put back after each test).
atlasd = _encodings.atlasd
pair = _encodings.pair


def ints(lo: int, hi: int) -> list[bytes]:
    return [b"%d" % i for i in range(lo, hi)]


def shrunk_set(pair: Pair, key: bytes, n: int = 5) -> None:
    """`key`: a hashtable set of n integers (it held a string once)."""
    many(pair, [[b"SADD", key, *ints(0, n), b"x"], [b"SREM", key, b"x"]])
    assert encoding(pair, key) == b"hashtable"


def shrunk_hash(pair: Pair, key: bytes) -> None:
    """`key`: a hashtable hash of 3 short fields (it held 600 once)."""
    many(pair, [[b"HSET", key, *[x for i in range(600) for x in (b"f%d" % i, b"%d" % i)]],
                [b"HDEL", key, *[b"f%d" % i for i in range(3, 600)]]])
    assert encoding(pair, key) == b"hashtable"


def dump_type(pair: Pair, key: bytes) -> int:
    """The RDB type byte of DUMP's payload (the encoding the value is held in: 11 intset, 2 set,
    16 listpack hash, 4 hash); the same on both servers."""
    got, want = both(pair, [b"DUMP", key])
    assert got[0] == want[0] == "$"
    assert got[1][0] == want[1][0], f"DUMP {key!r}: atlasd type {got[1][0]}, redis {want[1][0]}"
    value: int = want[1][0]
    return value


# -- sets ------------------------------------------------------------------------------------

def test_a_set_that_held_a_string_stays_a_hashtable(pair: Pair) -> None:
    shrunk_set(pair, b"s")
    many(pair, [[b"SADD", b"s", b"7"], [b"SREM", b"s", b"0", b"1"]])
    assert encoding(pair, b"s") == b"hashtable"
    many(pair, [[b"SADD", b"t", *ints(0, 3)], [b"SREM", b"t", b"1"], [b"SADD", b"t", b"9"]])
    assert encoding(pair, b"t") == b"intset"  # never converted: still an intset


def test_a_set_past_the_entries_limit_stays_a_hashtable(pair: Pair) -> None:
    many(pair, [[b"SADD", b"s", *ints(0, 513)]])
    assert encoding(pair, b"s") == b"hashtable"
    many(pair, [[b"SREM", b"s", *ints(10, 513)]])
    assert encoding(pair, b"s") == b"hashtable"
    same(pair, [b"SMEMBERS", b"s"])


def renamed_copied_moved(pair: Pair, key: bytes, enc: bytes, replace: bool = True) -> None:
    """RENAME key to key2, RENAMENX to key3, COPY key3 to c (again with REPLACE) and to far in db 2,
    MOVE c to db 1, each the same on both servers; key3, c and far are all held as `enc`."""
    steps = [[b"RENAME", key, key + b"2"], [b"RENAMENX", key + b"2", key + b"3"], [b"COPY", key + b"3", b"c"]]
    if replace:
        steps.append([b"COPY", key + b"3", b"c", b"REPLACE"])
    steps += [[b"COPY", key + b"3", b"far", b"DB", b"2"], [b"MOVE", b"c", b"1"]]
    for step in steps:
        same(pair, step)
    assert encoding(pair, key + b"3") == enc
    for db, name in ((b"1", b"c"), (b"2", b"far")):
        same(pair, [b"SELECT", db])
        assert encoding(pair, name) == enc
        same(pair, [b"SELECT", b"0"])


@pytest.mark.parametrize("start", ["hashtable", "intset"])
def test_rename_move_and_copy_keep_a_sets_encoding(pair: Pair, start: str) -> None:
    if start == "hashtable":
        shrunk_set(pair, b"s")
    else:
        many(pair, [[b"SADD", b"s", *ints(0, 5)]])
    enc = start.encode()
    renamed_copied_moved(pair, b"s", enc)
    many(pair, [[b"SADD", b"s3", b"100"]])
    assert encoding(pair, b"s3") == enc


def test_sscan_returns_an_intset_whole(pair: Pair) -> None:
    many(pair, [[b"SADD", b"i", *ints(0, 300)], [b"SADD", b"h", *ints(0, 300), b"x"], [b"SREM", b"h", b"x"]])
    same(pair, [b"SSCAN", b"i", b"0", b"COUNT", b"10"])
    got, want = both(pair, [b"SSCAN", b"h", b"0", b"COUNT", b"10"])  # a hashtable: a page at a time
    assert got[1][0] != (b"$", b"0") and want[1][0] != (b"$", b"0")
    assert len(got[1][1][1]) < 300 and len(want[1][1][1]) < 300


def test_dump_and_restore_rederive_a_set(pair: Pair) -> None:
    shrunk_set(pair, b"s")
    assert dump_type(pair, b"s") == 2  # a hashtable is dumped as a plain set
    payload = both(pair, [b"DUMP", b"s"])[1][1]
    same(pair, [b"RESTORE", b"r", b"0", payload])
    assert encoding(pair, b"r") == b"intset"
    assert dump_type(pair, b"r") == 11
    same(pair, [b"RESTORE", b"s", b"0", payload, b"REPLACE"])
    assert encoding(pair, b"s") == b"intset"


def test_smove_keeps_both_sides_encodings(pair: Pair) -> None:
    shrunk_set(pair, b"src")
    same(pair, [b"SMOVE", b"src", b"dst", b"1"])  # a new destination: made for its first member
    same(pair, [b"SMOVE", b"src", b"src", b"2"])
    assert [encoding(pair, k) for k in (b"src", b"dst")] == [b"hashtable", b"intset"]
    shrunk_set(pair, b"held")
    same(pair, [b"SMOVE", b"dst", b"held", b"1"])
    assert encoding(pair, b"held") == b"hashtable"
    many(pair, [[b"SADD", b"other", b"a", b"2"]])
    same(pair, [b"SMOVE", b"other", b"fresh", b"a"])
    assert [encoding(pair, k) for k in (b"other", b"fresh")] == [b"hashtable", b"hashtable"]


@pytest.mark.parametrize("op", [b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE"])
def test_store_commands_build_a_new_set(pair: Pair, op: bytes) -> None:
    shrunk_set(pair, b"a")
    shrunk_set(pair, b"b", 3)
    same(pair, [op, b"out", b"a", b"b"])
    assert encoding(pair, b"out") == b"intset"
    same(pair, [op, b"a", b"a", b"b"])  # onto one of its sources: a new set all the same
    assert encoding(pair, b"a") == b"intset"


@pytest.mark.parametrize(("padding", "enc"), [(0, b"hashtable"), (7, b"hashtable"), (8, b"intset"),
                                              (9, b"intset")])
def test_sdiffstore_algorithms(pair: Pair, padding: int, enc: bytes) -> None:
    """SDIFFSTORE a b1..b4 takes its second algorithm (copy the first set, remove the others'
    members) while size(a) * sets / 2 < the sizes' sum: with 10 members in a and 4 more sets
    holding 7 + `padding`, 25 against 17 + padding.  The copy took a's strings: a hashtable."""
    many(pair, [[b"SADD", b"a", b"1", b"2", b"3", *[b"m%d" % i for i in range(7)]],
                [b"SADD", b"b1", b"m0"], [b"SADD", b"b2", b"m1", b"m2"], [b"SADD", b"b3", b"m3", b"m4"],
                [b"SADD", b"b4", b"m5", b"m6", *[b"pad%d" % i for i in range(padding)]]])
    same(pair, [b"SDIFFSTORE", b"out", b"a", b"b1", b"b2", b"nosuchkey", b"b3", b"b4"])
    same(pair, [b"SMEMBERS", b"out"])
    assert encoding(pair, b"out") == enc


def test_spop(pair: Pair) -> None:
    shrunk_set(pair, b"few", 20)
    same(pair, [b"SCARD", b"few"])
    both(pair, [b"SPOP", b"few", b"16"])  # 4 left: 4 * 5 > 16, popped in place
    assert encoding(pair, b"few") == b"hashtable"
    shrunk_set(pair, b"most", 20)
    both(pair, [b"SPOP", b"most", b"17"])  # 3 left: 3 * 5 <= 17, the 3 are put in a new set
    assert encoding(pair, b"most") == b"intset"
    shrunk_set(pair, b"one", 3)
    both(pair, [b"SPOP", b"one"])
    assert encoding(pair, b"one") == b"hashtable"
    many(pair, [[b"SADD", b"big", *ints(0, 1000)]])
    both(pair, [b"SPOP", b"big", b"995"])
    assert encoding(pair, b"big") == b"intset"
    both(pair, [b"SPOP", b"big", b"10"])
    same(pair, [b"EXISTS", b"big"])


def test_scripts_and_transactions(pair: Pair) -> None:
    script = b"redis.call('sadd', KEYS[1], '1', 'x'); redis.call('srem', KEYS[1], 'x')"
    same(pair, [b"EVAL", script, b"1", b"ev"])
    assert encoding(pair, b"ev") == b"hashtable"
    many(pair, [[b"MULTI"], [b"SADD", b"tx", b"1", b"y"], [b"SREM", b"tx", b"y"], [b"RENAME", b"tx", b"tx2"],
                [b"EXEC"]])
    assert encoding(pair, b"tx2") == b"hashtable"


def test_config_set_converts_no_existing_set(pair: Pair) -> None:
    many(pair, [[b"SADD", b"big", *ints(0, 600)], [b"SADD", b"small", *ints(0, 300)]])
    config(pair, b"set-max-intset-entries", b"1000")
    assert [encoding(pair, k) for k in (b"big", b"small")] == [b"hashtable", b"intset"]
    many(pair, [[b"SADD", b"new", *ints(0, 600)], [b"SADD", b"big", b"9999"]])
    assert [encoding(pair, k) for k in (b"new", b"big")] == [b"intset", b"hashtable"]
    config(pair, b"set-max-intset-entries", b"100")
    assert [encoding(pair, k) for k in (b"new", b"small")] == [b"intset", b"intset"]
    same(pair, [b"RENAME", b"new", b"new2"])
    assert encoding(pair, b"new2") == b"intset"
    many(pair, [[b"SREM", b"small", b"0"], [b"SADD", b"small", b"0"], [b"SADD", b"small", b"0"]])
    assert encoding(pair, b"small") == b"hashtable"  # the SADD that added a member converted it
    many(pair, [[b"SREM", b"small", *ints(50, 300)]])
    assert encoding(pair, b"small") == b"hashtable"
    many(pair, [[b"SADD", b"n2", *ints(0, 101)], [b"SADD", b"n3", *ints(0, 100)]])
    assert [encoding(pair, k) for k in (b"n2", b"n3")] == [b"hashtable", b"intset"]


# -- hashes ----------------------------------------------------------------------------------

def test_rename_move_and_copy_keep_a_shrunk_hashs_hashtable(pair: Pair) -> None:
    shrunk_hash(pair, b"h")
    renamed_copied_moved(pair, b"h", b"hashtable", replace=False)
    many(pair, [[b"HSET", b"h3", b"new", b"1"]])
    assert encoding(pair, b"h3") == b"hashtable"
    same(pair, [b"HGETALL", b"h3"])


def test_dump_and_restore_rederive_a_hash(pair: Pair) -> None:
    shrunk_hash(pair, b"h")
    assert dump_type(pair, b"h") == 4
    payload = both(pair, [b"DUMP", b"h"])[1][1]
    same(pair, [b"RESTORE", b"r", b"0", payload])
    assert encoding(pair, b"r") == b"listpack"
    assert dump_type(pair, b"r") == 16
    same(pair, [b"HGETALL", b"r"])


def test_a_listpack_past_a_lowered_limit_is_renamed_as_a_listpack(pair: Pair) -> None:
    many(pair, [[b"HSET", b"h", *[x for i in range(10) for x in (b"f%d" % i, b"v" * 10)]]])
    config(pair, b"hash-max-listpack-entries", b"4")
    config(pair, b"hash-max-listpack-value", b"5")
    same(pair, [b"RENAME", b"h", b"h2"])
    same(pair, [b"COPY", b"h2", b"h3"])
    assert [encoding(pair, k) for k in (b"h2", b"h3")] == [b"listpack", b"listpack"]
    same(pair, [b"HGETALL", b"h3"], ordered=True)
    assert dump_type(pair, b"h3") == 16


# -- sorted sets -----------------------------------------------------------------------------

ZSET_DEFAULTS = [(b"zset-max-listpack-entries", b"128"), (b"zset-max-listpack-value", b"64")]


@pytest.fixture
def zpair(pair: Pair) -> Iterator[Pair]:
    """The pair, with the zset limits put back afterwards (the shared fixture knows the others)."""
    try:
        yield pair
    finally:
        for name, value in ZSET_DEFAULTS:
            config(pair, name, value)


def shrunk_zset(pair: Pair, key: bytes, n: int = 5) -> None:
    """`key`: a skiplist zset of n members (it held 130 once)."""
    many(pair, [[b"ZADD", key, *[x for i in range(130) for x in (b"%d" % i, b"m%03d" % i)]],
                [b"ZREMRANGEBYRANK", key, b"0", b"%d" % (129 - n)]])
    assert encoding(pair, key) == b"skiplist"


def test_a_zset_that_became_a_skiplist_stays_one(pair: Pair) -> None:
    shrunk_zset(pair, b"z", 20)
    for step in ([b"ZREM", b"z", b"m129"], [b"ZPOPMIN", b"z"], [b"ZPOPMAX", b"z", b"2"],
                 [b"ZREMRANGEBYSCORE", b"z", b"0", b"112"], [b"ZREMRANGEBYRANK", b"z", b"0", b"1"],
                 [b"ZMPOP", b"1", b"z", b"MIN"], [b"BZPOPMIN", b"z", b"0"], [b"BZMPOP", b"0", b"1", b"z", b"MAX"],
                 [b"ZADD", b"z", b"1", b"m117"], [b"ZINCRBY", b"z", b"1", b"new"]):
        same(pair, step)
        assert encoding(pair, b"z") == b"skiplist", step
    same(pair, [b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"], ordered=True)
    many(pair, [[b"ZADD", b"long", b"1", b"x" * 65, b"2", b"b"], [b"ZREM", b"long", b"x" * 65]])
    assert encoding(pair, b"long") == b"skiplist"
    many(pair, [[b"ZADD", b"lp", *[x for i in range(128) for x in (b"%d" % i, b"m%d" % i)]],
                [b"ZADD", b"lp", b"5", b"m0", b"XX", b"INCR", b"1", b"m1"]])
    assert encoding(pair, b"lp") == b"listpack"  # 128 members, scores changed: still a listpack
    many(pair, [[b"ZADD", b"lp", b"NX", b"0", b"m128"]])
    assert encoding(pair, b"lp") == b"skiplist"


@pytest.mark.parametrize("start", ["skiplist", "listpack"])
def test_rename_move_and_copy_keep_a_zsets_encoding(zpair: Pair, start: str) -> None:
    pair = zpair
    if start == "skiplist":
        shrunk_zset(pair, b"z")
    else:  # a listpack past a lowered limit
        many(pair, [[b"ZADD", b"z", *[x for i in range(6) for x in (b"%d" % i, b"m%d" % i)]]])
        config(pair, b"zset-max-listpack-entries", b"3")
    enc = start.encode()
    renamed_copied_moved(pair, b"z", enc)
    assert dump_type(pair, b"z3") == (5 if start == "skiplist" else 17)
    same(pair, [b"ZRANGE", b"z3", b"0", b"-1", b"WITHSCORES"], ordered=True)


def test_dump_and_restore_rederive_a_zset(pair: Pair) -> None:
    shrunk_zset(pair, b"z")
    assert dump_type(pair, b"z") == 5  # a skiplist is dumped as a plain zset
    payload = both(pair, [b"DUMP", b"z"])[1][1]
    same(pair, [b"RESTORE", b"r", b"0", payload])
    assert encoding(pair, b"r") == b"listpack"
    assert dump_type(pair, b"r") == 17
    same(pair, [b"RESTORE", b"z", b"0", payload, b"REPLACE"])
    assert encoding(pair, b"z") == b"listpack"


@pytest.mark.parametrize("step", [[b"ZUNIONSTORE", b"out", b"1", b"z"], [b"ZINTERSTORE", b"out", b"2", b"z", b"z"],
                                  [b"ZDIFFSTORE", b"out", b"1", b"z"], [b"ZRANGESTORE", b"out", b"z", b"0", b"-1"],
                                  [b"ZRANGESTORE", b"out", b"z", b"[m", b"+", b"BYLEX"],
                                  [b"ZUNIONSTORE", b"z", b"1", b"z"]])
def test_zset_store_commands_build_a_new_zset(zpair: Pair, step: list[bytes]) -> None:
    pair = zpair
    shrunk_zset(pair, b"z")
    same(pair, step)
    assert encoding(pair, step[1]) == b"listpack"
    config(pair, b"zset-max-listpack-entries", b"4")  # a new zset: by its content, under the limits now
    same(pair, step)
    assert encoding(pair, step[1]) == b"skiplist"


def test_config_set_converts_no_existing_zset(zpair: Pair) -> None:
    pair = zpair
    many(pair, [[b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"c"], [b"ZADD", b"v", b"1", b"aa"]])
    config(pair, b"zset-max-listpack-entries", b"2")
    config(pair, b"zset-max-ziplist-value", b"1")
    assert [encoding(pair, k) for k in (b"z", b"v")] == [b"listpack", b"listpack"]
    many(pair, [[b"ZADD", b"z", b"9", b"a"], [b"ZADD", b"v", b"5", b"aa"], [b"ZADD", b"n", b"1", b"a", b"2", b"b"],
                [b"ZADD", b"n3", b"1", b"a", b"2", b"b", b"3", b"c"], [b"ZADD", b"nv", b"1", b"ab"]])
    assert [encoding(pair, k) for k in (b"z", b"v", b"n", b"n3", b"nv")] == [
        b"listpack", b"listpack", b"listpack", b"skiplist", b"skiplist"]
    many(pair, [[b"ZADD", b"z", b"4", b"d"]])  # a new member: it converts now
    assert encoding(pair, b"z") == b"skiplist"
    config(pair, b"zset-max-listpack-entries", b"0")
    many(pair, [[b"ZADD", b"zero", b"1", b"a"]])
    assert encoding(pair, b"zero") == b"skiplist"


def test_bylex_on_a_skiplist(pair: Pair) -> None:
    """BYLEX over equal scores answers the lexicographic range whatever the encoding (atlasd
    finds it by bisection); with unequal scores Redis's skiplist answer depends on its nodes'
    random levels, so only equal scores are compared."""
    members = [b"%c%d" % (c, i) for c in b"abcdefgh" for i in range(40)]
    many(pair, [[b"ZADD", b"z", *[x for m in members for x in (b"0", m)]]])
    assert encoding(pair, b"z") == b"skiplist"
    for lo, hi in ((b"-", b"+"), (b"[b", b"(c"), (b"(b1", b"[b3"), (b"[c", b"-"), (b"+", b"+"), (b"(a", b"[h9")):
        same(pair, [b"ZRANGEBYLEX", b"z", lo, hi], ordered=True)
        same(pair, [b"ZREVRANGEBYLEX", b"z", hi, lo], ordered=True)
        same(pair, [b"ZLEXCOUNT", b"z", lo, hi])
        for offset, count in ((b"0", b"5"), (b"3", b"-1"), (b"10", b"7"), (b"500", b"1"), (b"-1", b"2")):
            same(pair, [b"ZRANGEBYLEX", b"z", lo, hi, b"LIMIT", offset, count], ordered=True)
            same(pair, [b"ZREVRANGEBYLEX", b"z", hi, lo, b"LIMIT", offset, count], ordered=True)
            same(pair, [b"ZRANGE", b"z", lo, hi, b"BYLEX", b"LIMIT", offset, count], ordered=True)
    same(pair, [b"ZREMRANGEBYLEX", b"z", b"[c", b"(e"])
    same(pair, [b"ZRANGE", b"z", b"0", b"-1"], ordered=True)


# -- a restart -------------------------------------------------------------------------------

RESTART_WORKLOAD: list[list[bytes]] = [
    [b"SADD", b"s", b"1", b"2", b"3", b"x"], [b"SREM", b"s", b"x"], [b"RENAME", b"s", b"s2"],
    [b"SADD", b"big", *ints(0, 600)], [b"SREM", b"big", *ints(10, 600)], [b"COPY", b"big", b"bigcopy"],
    [b"SADD", b"t", b"1", b"2"],
    [b"HSET", b"h", *[x for i in range(600) for x in (b"f%d" % i, b"%d" % i)]],
    [b"HDEL", b"h", *[b"f%d" % i for i in range(2, 600)]], [b"RENAME", b"h", b"h2"], [b"COPY", b"h2", b"h3"],
    [b"HSET", b"small", b"a", b"1"],
    [b"SADD", b"a", b"1", b"2", b"3", *[b"m%d" % i for i in range(7)]],
    *[[b"SADD", b"o%d" % i, b"m%d" % (2 * i), b"m%d" % (2 * i + 1)] for i in range(4)],
    [b"SDIFFSTORE", b"d", b"a", b"o0", b"o1", b"o2", b"o3"],
    [b"SADD", b"p", *ints(0, 20), b"x"], [b"SREM", b"p", b"x"], [b"SPOP", b"p", b"17"],
    [b"SADD", b"pr", *ints(0, 20), b"x"], [b"SREM", b"pr", b"x"], [b"SPOP", b"pr", b"17"], [b"RENAME", b"pr", b"pr2"],
    [b"ZADD", b"z", *[x for i in range(130) for x in (b"%d" % i, b"m%d" % i)]],
    [b"ZREMRANGEBYRANK", b"z", b"0", b"120"],
    [b"ZPOPMIN", b"z"], [b"COPY", b"z", b"zcopy"], [b"ZADD", b"zl", b"1", b"x" * 65, b"2", b"b"],
    [b"ZREM", b"zl", b"x" * 65], [b"RENAME", b"zl", b"zl2"], [b"ZADD", b"zsmall", b"1", b"a"],
    [b"ZUNIONSTORE", b"zu", b"1", b"z"],
]
AFTER_SNAPSHOT: list[list[bytes]] = [
    [b"SADD", b"s2", b"4"], [b"RENAME", b"s2", b"s3"], [b"MOVE", b"h3", b"1"],
    [b"SADD", b"late", b"1", b"y"], [b"SREM", b"late", b"y"],
    [b"SADD", b"q", *ints(0, 20), b"x"], [b"SREM", b"q", b"x"], [b"SPOP", b"q", b"17"], [b"MOVE", b"zcopy", b"1"],
    [b"ZADD", b"zlate", *[x for i in range(130) for x in (b"%d" % i, b"m%d" % i)]], [b"ZPOPMAX", b"zlate", b"128"],
]


def test_a_restart_keeps_what_redis_with_appendonly_keeps(tmp_path: Path) -> None:
    """Both servers killed (-9) and started again on their own files.  Redis with appendonly yes
    replays its AOF's commands (its RDB file, written by the BGSAVE here, is not read), so every
    history comes back; atlasd replays its snapshot, which notes the encodings, and the AOF after
    it.  One change is Redis's own: SPOP keeping few members of a hashtable set answers an
    intset (a new set) but is logged as SREMs, which a restart replays on the hashtable (a
    RENAME after it renames the hashtable): atlasd's snapshot and AOF hold what Redis's replay
    gives."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(exe, args=("--appendonly", "yes", "--appendfsync", "always")).start()
    atlas = Daemon(tmp_path / "data", "--appendfsync", "always").start()
    try:
        ports = (atlas.port, redis.port)
        passwords = (atlas.password, None)
        for port, password in zip(ports, passwords, strict=True):
            assert all(r[0] != "-" for r in run(port, password, [*RESTART_WORKLOAD, [b"BGSAVE"]]))
        wait_for_snapshot(atlas.data)
        for port, password in zip(ports, passwords, strict=True):
            assert all(r[0] != "-" for r in run(port, password, AFTER_SNAPSHOT))
        before = [all_encodings(port, password) for port, password in zip(ports, passwords, strict=True)]
        assert before[0] == before[1]
        atlas.kill()
        atlas.start()
        redis.restart()
        after = [all_encodings(port, password) for port, password in zip(ports, passwords, strict=True)]
        assert after[0] == after[1]
        assert after[1] == {**before[1], (0, b"p"): b"hashtable", (0, b"pr2"): b"hashtable", (0, b"q"): b"hashtable"}
    finally:
        atlas.kill()
        redis.stop()


# Changes in place after the rewrite (RENAME, COPY and MOVE after it are not compared: atlasd logs
# the encoding the value is held in, where Redis's replay moves the object its rewrite re-derived).
AFTER_REWRITE: list[list[bytes]] = [
    [b"SADD", b"s2", b"4"], [b"SADD", b"big", b"y"], [b"SREM", b"big", b"y"], [b"HSET", b"h3", b"f0", b"x"],
    [b"ZADD", b"zcopy", b"1", b"new"], [b"SADD", b"q", *ints(0, 20), b"x"], [b"SREM", b"q", b"x"],
    [b"SPOP", b"q", b"17"], [b"ZADD", b"zlate", *[x for i in range(130) for x in (b"%d" % i, b"m%d" % i)]],
    [b"ZPOPMAX", b"zlate", b"128"],
]


def test_a_restart_after_bgrewriteaof_chooses_encodings_by_content(tmp_path: Path) -> None:
    """Redis's rewritten AOF (an RDB preamble) loads every hash, set and zset by its content, as
    RDB loading does; atlasd's rewrite is a snapshot written without the history's notes."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(exe, args=("--appendonly", "yes", "--appendfsync", "always")).start()
    atlas = Daemon(tmp_path / "data", "--appendfsync", "always").start()
    try:
        ports = (atlas.port, redis.port)
        passwords = (atlas.password, None)
        since = time.time() - 1
        for port, password in zip(ports, passwords, strict=True):
            assert all(r[0] != "-" for r in run(port, password, [*RESTART_WORKLOAD, [b"BGREWRITEAOF"]]))
        wait_for_snapshot(atlas.data, since)
        wait_for_rewrite(redis.port)
        for port, password in zip(ports, passwords, strict=True):
            assert all(r[0] != "-" for r in run(port, password, AFTER_REWRITE))
        before = [all_encodings(port, password) for port, password in zip(ports, passwords, strict=True)]
        assert before[0] == before[1]
        atlas.kill()
        atlas.start()
        redis.restart()
        after = [all_encodings(port, password) for port, password in zip(ports, passwords, strict=True)]
        rederived = [after[1][0, k] for k in (b"bigcopy", b"p", b"z", b"h2")]
        assert rederived == [b"intset", b"intset", b"listpack", b"listpack"]
        assert after[0] == after[1]
    finally:
        atlas.kill()
        redis.stop()


def wait_for_rewrite(port: int) -> None:
    for _ in range(400):
        info = run(port, None, [[b"INFO", b"persistence"]])[0][1]
        if b"aof_rewrite_in_progress:0" in info and b"aof_rewrite_scheduled:0" in info:
            return
        time.sleep(0.05)
    raise AssertionError("redis-server's AOF rewrite did not finish")


def run(port: int, password: str | None, commands: list[list[bytes]]) -> list[Tree]:
    conn = Raw(port, password, False)
    try:
        return conn.call_many(commands)
    finally:
        conn.close()


def all_encodings(port: int, password: str | None) -> dict[tuple[int, bytes], bytes]:
    """(database, key) -> OBJECT ENCODING for every key of databases 0 and 1."""
    out = {}
    for db in (0, 1):
        keys = run(port, password, [[b"SELECT", b"%d" % db], [b"KEYS", b"*"]])[1][1]
        replies = run(port, password, [[b"SELECT", b"%d" % db], *[[b"OBJECT", b"ENCODING", k[1]] for k in keys]])
        out.update({(db, k[1]): r[1] for k, r in zip(keys, replies[1:], strict=True)})
    return out
