"""OBJECT ENCODING and replies across the compact encodings: a real atlasd against a real redis-server.

Redis 7.0 keeps a hash as a listpack up to hash-max-listpack-entries fields
(512) of at most hash-max-listpack-value bytes (64) and converts it to a hash
table, for good, on the write that passes either; a list is "quicklist" at any
size; a set of integers is an intset up to set-max-intset-entries.  Each test
walks a key to and past a threshold (the defaults, and values set with CONFIG
SET under both names), comparing OBJECT ENCODING after every step and the
replies of the reads there.  A listpack hash answers HGETALL/HKEYS/HVALS in
insertion order, so while both servers say listpack those replies are compared
as they are; a hash table's order is its own, so then they are compared as
multisets (test_differential_types.norm_for).  The parameters are put back
afterwards: the redis-server is shared by the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Pair, Tree, close_pair, make_pair, norm_for, scan_all
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

DEFAULTS = [(b"hash-max-listpack-entries", b"512"), (b"hash-max-listpack-value", b"64"),
            (b"list-max-listpack-size", b"-2"), (b"set-max-intset-entries", b"512")]


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("encodings")) as d:
        yield d


@pytest.fixture
def pair(atlasd: Daemon, redis_server: RedisServer) -> Iterator[Pair]:  # noqa: F811
    p = make_pair(atlasd, redis_server)
    try:
        p.reset()
        yield p
    finally:
        for side in (p.atlas, p.redis):
            side.r2.call([b"SELECT", b"0"])
            for name, value in DEFAULTS:
                side.r2.call([b"CONFIG", b"SET", name, value])
        close_pair(p)


def both(pair: Pair, args: list[bytes], resp3: bool = False) -> tuple[Tree, Tree]:
    return pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)


def same(pair: Pair, args: list[bytes], resp3: bool = False, ordered: bool = False) -> Tree:
    """Run `args` on both; the replies must match (as they are when `ordered`, else normalised)."""
    got, want = both(pair, args, resp3)
    if not ordered:
        got, want = norm_for(args, got), norm_for(args, want)
    assert got == want, f"{args!r} (resp{3 if resp3 else 2}): atlasd {got!r}, redis {want!r}"
    return want


def many(pair: Pair, commands: list[list[bytes]]) -> None:
    """Pipelined writes on both; every reply must match."""
    got, want = pair.atlas.r2.call_many(commands), pair.redis.r2.call_many(commands)
    assert got == want


def encoding(pair: Pair, key: bytes) -> bytes:
    got, want = both(pair, [b"OBJECT", b"ENCODING", key])
    assert got == want, f"OBJECT ENCODING {key!r}: atlasd {got!r}, redis {want!r}"
    assert want[0] == "$"
    value: bytes = want[1]
    return value


def config(pair: Pair, name: bytes, value: bytes) -> None:
    for side in (pair.atlas, pair.redis):
        assert side.r2.call([b"CONFIG", b"SET", name, value]) == ("+", "OK")


def hash_reads(pair: Pair, key: bytes) -> None:
    """Every whole-hash read, in both protocols; ordered while the hash is a listpack."""
    ordered = encoding(pair, key) == b"listpack"
    for resp3 in (False, True):
        for name in (b"HGETALL", b"HKEYS", b"HVALS"):
            same(pair, [name, key], resp3, ordered=ordered)
        same(pair, [b"HLEN", key], resp3)
        same(pair, [b"HMGET", key, b"f0", b"nope", b"f1"], resp3)
        got = scan_all(pair.atlas.conn(resp3), [b"HSCAN", key, b"0"])
        assert got == scan_all(pair.redis.conn(resp3), [b"HSCAN", key, b"0"])
    if ordered:  # a listpack is returned whole by one HSCAN, whatever the COUNT
        same(pair, [b"HSCAN", key, b"0", b"COUNT", b"2"])


def fields(key: bytes, lo: int, hi: int, value: bytes = b"v") -> list[list[bytes]]:
    return [[b"HSET", key, b"f%d" % i, value + b"%d" % i] for i in range(lo, hi)]


def test_hash_converts_past_512_fields_and_never_back(pair: Pair) -> None:
    many(pair, fields(b"h", 0, 511))
    assert encoding(pair, b"h") == b"listpack"
    many(pair, [[b"HSET", b"h", b"f3", b"changed"], [b"HDEL", b"h", b"f7"], [b"HSET", b"h", b"f7", b"back"]])
    many(pair, fields(b"h", 511, 512))  # 512 fields: still a listpack
    assert encoding(pair, b"h") == b"listpack"
    hash_reads(pair, b"h")
    many(pair, fields(b"h", 512, 513))
    assert encoding(pair, b"h") == b"hashtable"
    hash_reads(pair, b"h")
    many(pair, [[b"HDEL", b"h", *[b"f%d" % i for i in range(1, 513)]]])
    assert encoding(pair, b"h") == b"hashtable"  # shrinking never converts back
    hash_reads(pair, b"h")


@pytest.mark.parametrize("where", ["field", "value"])
def test_hash_converts_on_a_field_or_value_past_64_bytes(pair: Pair, where: str) -> None:
    many(pair, fields(b"h", 0, 5))
    at_limit, past = b"x" * 64, b"y" * 65
    many(pair, [[b"HSET", b"h", at_limit, b"v"] if where == "field" else [b"HSET", b"h", b"f9", at_limit]])
    assert encoding(pair, b"h") == b"listpack"
    hash_reads(pair, b"h")
    many(pair, [[b"HSET", b"h", past, b"v"] if where == "field" else [b"HSET", b"h", b"f1", past]])
    assert encoding(pair, b"h") == b"hashtable"
    hash_reads(pair, b"h")
    many(pair, [[b"HDEL", b"h", past, b"f1"]])
    assert encoding(pair, b"h") == b"hashtable"


@pytest.mark.parametrize("write", [
    [b"HINCRBY", b"h", b"k" * 65, b"1"],
    [b"HINCRBYFLOAT", b"h", b"k" * 65, b"1.5"],
    [b"HSETNX", b"h", b"new", b"w" * 65],
    [b"HMSET", b"h", b"a", b"1", b"b", b"w" * 65],
    [b"HSET", b"new", b"a", b"1", b"b", b"w" * 65],
])
def test_every_hash_write_converts_on_a_long_element(pair: Pair, write: list[bytes]) -> None:
    many(pair, fields(b"h", 0, 3))
    same(pair, write)
    assert encoding(pair, write[1]) == b"hashtable"
    hash_reads(pair, write[1])


def test_binary_fields_and_values_in_a_listpack(pair: Pair) -> None:
    odd = [b"", b"\xff", b"\xfe", b"\xfd", b"\xfd\x01", b"\xfd\x02\xff", b"\x00\r\n", b"\xfe\xfd\xff"]
    many(pair, [[b"HSET", b"h", f, v] for f, v in zip(odd, reversed(odd), strict=True)])
    many(pair, [[b"HSET", b"h", b"\xfd", b""], [b"HDEL", b"h", b"\xfe"]])
    assert encoding(pair, b"h") == b"listpack"
    hash_reads(pair, b"h")
    for f in odd:
        for resp3 in (False, True):
            same(pair, [b"HGET", b"h", f], resp3)
            same(pair, [b"HEXISTS", b"h", f], resp3)
            same(pair, [b"HSTRLEN", b"h", f], resp3)


@pytest.mark.parametrize("alias", [False, True])
def test_config_set_thresholds(pair: Pair, alias: bool) -> None:
    kind = b"ziplist" if alias else b"listpack"
    config(pair, b"hash-max-%s-entries" % kind, b"3")
    config(pair, b"hash-max-%s-value" % kind, b"5")
    for name in (b"hash-max-listpack-entries", b"hash-max-ziplist-entries"):
        same(pair, [b"CONFIG", b"GET", name])
    many(pair, [[b"HSET", b"a", b"f1", b"12345", b"f2", b"x", b"f3", b"y"]])
    assert encoding(pair, b"a") == b"listpack"
    many(pair, [[b"HSET", b"a", b"f4", b"z"]])
    assert encoding(pair, b"a") == b"hashtable"
    many(pair, [[b"HSET", b"b", b"f1", b"123456"]])
    assert encoding(pair, b"b") == b"hashtable"
    many(pair, [[b"HSET", b"c", b"f1", b"1", b"f2", b"2", b"f3", b"3", b"f4", b"4"]])  # one HSET past it
    assert encoding(pair, b"c") == b"hashtable"
    hash_reads(pair, b"c")
    config(pair, b"hash-max-listpack-entries", b"0")
    many(pair, [[b"HSET", b"d", b"f", b"v"]])
    assert encoding(pair, b"d") == b"hashtable"


def test_lowered_threshold_converts_on_the_next_write_only(pair: Pair) -> None:
    many(pair, fields(b"h", 0, 6))
    config(pair, b"hash-max-listpack-entries", b"3")
    for read in ([b"HGET", b"h", b"f1"], [b"HGETALL", b"h"], [b"HLEN", b"h"]):
        same(pair, read)
    assert encoding(pair, b"h") == b"listpack"
    many(pair, [[b"HDEL", b"h", b"f0"]])
    assert encoding(pair, b"h") == b"listpack"
    many(pair, [[b"HSET", b"h", b"f1", b"updated"]])  # an update of a field counts too
    assert encoding(pair, b"h") == b"hashtable"
    hash_reads(pair, b"h")


def test_copy_and_restore_choose_by_content(pair: Pair) -> None:
    many(pair, fields(b"h", 0, 10))
    same(pair, [b"COPY", b"h", b"h2"])
    assert encoding(pair, b"h2") == b"listpack"
    many(pair, fields(b"big", 0, 600))
    same(pair, [b"COPY", b"big", b"big2"])
    assert encoding(pair, b"big2") == b"hashtable"
    payload = both(pair, [b"DUMP", b"h"])[1][1]
    same(pair, [b"RESTORE", b"h3", b"0", payload])
    assert encoding(pair, b"h3") == b"listpack"
    hash_reads(pair, b"h3")


def test_lists_are_quicklists_at_every_size(pair: Pair) -> None:
    many(pair, [[b"RPUSH", b"l", b"a"]])
    assert encoding(pair, b"l") == b"quicklist"
    # past 128 items and past one 8 KiB node; then items with the separator bytes in them
    many(pair, [[b"RPUSH", b"l", *[b"i%d" % i for i in range(200)]], [b"LPUSH", b"l", b"\xff\xfe", b"\xfd"]])
    many(pair, [[b"RPUSH", b"big", *[b"%d" % i * 40 for i in range(100)]]])
    for key in (b"l", b"big"):
        assert encoding(pair, key) == b"quicklist"
        for resp3 in (False, True):
            for args in ([b"LRANGE", key, b"0", b"-1"], [b"LRANGE", key, b"5", b"17"], [b"LRANGE", key, b"-9", b"-2"],
                         [b"LINDEX", key, b"0"], [b"LINDEX", key, b"-1"], [b"LINDEX", key, b"77"],
                         [b"LLEN", key], [b"LPOS", key, b"i7"]):
                same(pair, args, resp3, ordered=True)


@pytest.mark.parametrize("size", [b"4", b"-1", b"-2"])
def test_list_writes_across_the_packed_limit(pair: Pair, size: bytes) -> None:
    config(pair, b"list-max-listpack-size", size)
    writes = [[b"RPUSH", b"l", b"a", b"b", b"c"], [b"LPUSH", b"l", b"x"], [b"LINSERT", b"l", b"BEFORE", b"b", b"\xff"],
              [b"RPUSH", b"l", *[b"%d" % i * 50 for i in range(130)]], [b"LSET", b"l", b"2", b"set"],
              [b"LREM", b"l", b"0", b"a"], [b"LPOP", b"l", b"2"], [b"RPOP", b"l", b"3"], [b"LTRIM", b"l", b"1", b"-2"],
              [b"LMOVE", b"l", b"m", b"LEFT", b"RIGHT"], [b"LREM", b"l", b"-1", b"x"]]
    for w in writes:
        same(pair, w, ordered=True)
        for key in (b"l", b"m"):
            same(pair, [b"LRANGE", key, b"0", b"-1"], ordered=True)
            same(pair, [b"LINDEX", key, b"3"], ordered=True)
    assert encoding(pair, b"l") == b"quicklist"


def test_sets_intset_to_hashtable(pair: Pair) -> None:
    many(pair, [[b"SADD", b"s", *[b"%d" % i for i in range(512)]]])
    assert encoding(pair, b"s") == b"intset"
    many(pair, [[b"SADD", b"s", b"512"]])
    assert encoding(pair, b"s") == b"hashtable"
    many(pair, [[b"SADD", b"t", b"1", b"2"], [b"SADD", b"t", b"x"]])
    assert encoding(pair, b"t") == b"hashtable"
