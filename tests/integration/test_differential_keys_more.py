"""Strings and keys: LCS, SUBSTR, COPY, OBJECT, DUMP/RESTORE and SETRANGE's limit on a real atlasd and
a real redis-server side by side, RESP2 and RESP3, reply by reply (error texts included), with the
keyspace compared after every command (helpers from test_differential_zsets_more.py).

DUMP payloads are compared byte for byte where ATLAS writes what Redis writes (strings);
for the rest, what matters is that each server restores the other's payloads to the same value,
which is checked for every type in both directions.  OBJECT ENCODING is compared on values
written in one go (ATLAS judges the encoding from the value, see keys.encoding_name).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.dump import RDB_VERSION, crc64
from tests.integration.test_differential_types import Pair, cmd, module_pair
from tests.integration.test_differential_zsets_more import compare_state, run, words
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = [b"a", b"b", b"c", b"d", b"h", b"s", b"z", b"l", b"n", b"nope"]


atlasd, pair = module_pair("keys")  # the daemon and both servers' connections


SETUP = words([
    ["SET", "a", "ohmytext"], ["SET", "b", "mynewtext"], ["HSET", "h", "f", "v"], ["SADD", "s", "1", "2", "x"],
    ["ZADD", "z", "1", "m", "2.5", "n"], ["RPUSH", "l", "x", "y", "z"], ["SET", "n", "12"],
])

LCS = words([
    ["LCS", "a", "b"], ["LCS", "a", "b", "LEN"], ["LCS", "a", "b", "IDX"], ["LCS", "a", "b", "idx", "WITHMATCHLEN"],
    ["LCS", "a", "b", "IDX", "MINMATCHLEN", "4"], ["LCS", "a", "b", "IDX", "MINMATCHLEN", "-4", "WITHMATCHLEN"],
    ["LCS", "a", "b", "IDX", "LEN"], ["LCS", "a", "b", "LEN", "IDX"], ["LCS", "a", "b", "FOO"],
    ["LCS", "a", "b", "MINMATCHLEN"], ["LCS", "a", "b", "MINMATCHLEN", "x"], ["LCS", "a", "nope"],
    ["LCS", "nope", "nope", "IDX"], ["LCS", "a", "h"], ["LCS", "h", "nope", "FOO"], ["LCS", "a", "a", "IDX"],
    ["SET", "c", "GTAAGCTAGCTAGGCTACGGATCAGCTTAGGCAT"], ["SET", "d", "TACGGATCGGCTAATCCGATCGAGCTACGA"],
    ["LCS", "c", "d"], ["LCS", "c", "d", "IDX", "WITHMATCHLEN"], ["LCS", "c", "d", "IDX", "MINMATCHLEN", "3"],
    ["LCS", "a", "n", "IDX"], ["LCS", "a", "b", "LEN", "LEN", "WITHMATCHLEN"],
    ["SUBSTR", "a", "0", "3"], ["SUBSTR", "a", "-3", "-1"], ["SUBSTR", "a", "5", "2"], ["SUBSTR", "nope", "0", "1"],
    ["SUBSTR", "a", "x", "1"], ["SUBSTR", "h", "0", "1"], ["SUBSTR", "a", "0"],
    ["SETRANGE", "a", "536870912", "x"], ["SETRANGE", "a", "536870911", "xy"], ["APPEND", "a", ""],
    ["SETRANGE", "nope", "536870912", ""],
])

COPY = words([
    ["COPY", "a", "c"], ["GET", "c"], ["COPY", "a", "c"], ["COPY", "b", "c", "REPLACE"], ["GET", "c"],
    ["COPY", "a", "a"], ["COPY", "nope", "c"], ["COPY", "nope", "nope"], ["COPY", "h", "d"], ["HSET", "d", "g", "w"],
    ["HGETALL", "h"], ["COPY", "s", "d", "replace"], ["SADD", "d", "new"], ["COPY", "z", "d", "REPLACE"],
    ["ZADD", "d", "9", "q"], ["ZRANGE", "z", "0", "-1"], ["COPY", "l", "d", "REPLACE"], ["RPUSH", "d", "q"],
    ["LRANGE", "l", "0", "-1"], ["EXPIRE", "a", "100"], ["COPY", "a", "d", "REPLACE"], ["TTL", "d"],
    ["COPY", "a", "c", "DB", "0"], ["COPY", "a", "c", "DB", "0", "REPLACE"], ["COPY", "a", "a", "DB", "0"],
    ["COPY", "a", "c", "DB", "16"], ["COPY", "a", "c", "DB", "-1"], ["COPY", "a", "c", "DB", "x"],
    ["COPY", "a", "c", "DB", "4294967296"], ["COPY", "a", "c", "DB"], ["COPY", "a", "c", "FOO"],
    ["COPY", "a", "c", "REPLACE", "REPLACE"], ["COPY", "a"],
])

OBJECT = words([
    ["OBJECT", "ENCODING", "n"], ["OBJECT", "ENCODING", "a"], ["SET", "c", "x" * 44], ["OBJECT", "ENCODING", "c"],
    ["SET", "c", "x" * 45], ["OBJECT", "encoding", "c"], ["SET", "c", "-0"], ["OBJECT", "ENCODING", "c"],
    ["SET", "c", "9223372036854775807"], ["OBJECT", "ENCODING", "c"], ["SET", "c", "9223372036854775808"],
    ["OBJECT", "ENCODING", "c"], ["SET", "c", "-12"], ["OBJECT", "ENCODING", "c"], ["SET", "c", "012"],
    ["OBJECT", "ENCODING", "c"], ["OBJECT", "ENCODING", "h"], ["OBJECT", "ENCODING", "s"],
    ["OBJECT", "ENCODING", "z"], ["OBJECT", "ENCODING", "l"], ["OBJECT", "ENCODING", "nope"],
    ["HSET", "d", "f", "v" * 65], ["OBJECT", "ENCODING", "d"], ["DEL", "d"], ["SADD", "d", "1", "-5", "x"],
    ["OBJECT", "ENCODING", "d"], ["DEL", "d"], ["SADD", "d", *[str(i) for i in range(513)]],
    ["OBJECT", "ENCODING", "d"], ["DEL", "d"], ["ZADD", "d", "1", "m" * 65], ["OBJECT", "ENCODING", "d"],
    ["DEL", "d"], ["ZADD", "d", *[w for i in range(129) for w in (str(i), f"m{i}")]], ["OBJECT", "ENCODING", "d"],
    ["DEL", "d"], ["HSET", "d", *[w for i in range(512) for w in (f"f{i}", "v")]],
    ["OBJECT", "ENCODING", "d"], ["HSET", "d", "one", "more"], ["OBJECT", "ENCODING", "d"],
    ["DEL", "d"],
    ["OBJECT", "REFCOUNT", "n"], ["OBJECT", "REFCOUNT", "a"], ["OBJECT", "REFCOUNT", "h"],
    ["OBJECT", "REFCOUNT", "nope"], ["SET", "c", "10000"], ["OBJECT", "REFCOUNT", "c"],
    ["OBJECT", "IDLETIME", "a"], ["OBJECT", "IDLETIME", "nope"], ["OBJECT", "FREQ", "a"], ["OBJECT", "FREQ", "nope"],
    ["OBJECT", "HELP"], ["object", "help"], ["OBJECT", "HELP", "x"], ["OBJECT", "ENCODING"],
    ["OBJECT", "ENCODING", "a", "b"], ["OBJECT", "FOO", "a"], ["OBJECT", "FOO"], ["OBJECT"],
])

RESTORE = words([
    ["DUMP", "nope"], ["DUMP", "a"], ["DUMP", "n"], ["SET", "c", "-129"], ["DUMP", "c"], ["SET", "c", "40000"],
    ["DUMP", "c"], ["SET", "c", "-2147483648"], ["DUMP", "c"], ["SET", "c", "2147483648"], ["DUMP", "c"],
    ["SET", "c", "xyz" * 6 + "xy"], ["DUMP", "c"], ["SET", "c", "\xff\x00"], ["DUMP", "c"], ["SADD", "d", "member"],
    ["DUMP", "d"], ["DEL", "d"],
    ["RESTORE", "c", "0", "garbage"], ["RESTORE", "c", "0", "garbage", "REPLACE"], ["RESTORE", "nope", "0", ""],
    ["RESTORE", "nope", "0", "\x00\x01a\x0b\x00" + "\x00" * 8], ["RESTORE", "nope", "-1", "x"],
    ["RESTORE", "nope", "x", "x"], ["RESTORE", "nope", "0", "x", "FOO"],
    ["RESTORE", "nope", "0", "x", "IDLETIME", "-1"],
    ["RESTORE", "nope", "0", "x", "FREQ", "256"], ["RESTORE", "nope", "0", "x", "FREQ", "1", "IDLETIME", "1"],
    ["RESTORE", "nope", "0", "x", "IDLETIME"], ["RESTORE", "a", "0", "x"], ["RESTORE", "a", "x", "x"],
])


def _payload(body: bytes, version: int = RDB_VERSION) -> bytes:
    body += struct.pack("<H", version)
    return body + struct.pack("<Q", crc64(body))


# Checksums right, content wrong (Redis: "Bad data format"), or a newer RDB version.
RESTORE += [[b"RESTORE", b"nope", b"0", p] for p in (
    _payload(b"\x63\x01x"), _payload(b"\x00\x05ab"), _payload(b"\x02\x00"), _payload(b"\x00\x01a", RDB_VERSION + 1),
    _payload(b"\x00\xc3\x05\x03abc"), _payload(b"\x05\x01\x01a"),
)]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [LCS, COPY, OBJECT, RESTORE], ids=["lcs", "copy", "object", "restore"])
def test_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in SETUP + cases:
        run(pair, args, resp3)
        compare_state(pair, KEYS)


def _dump(side: object, key: bytes) -> bytes:
    reply = side.r2.call([b"DUMP", key])  # type: ignore[attr-defined]
    assert reply[0] == "$", reply
    return reply[1]


VALUES = words([
    ["SET", "k", "hello"], ["SET", "k", "7"], ["SET", "k", "-70000"], ["SET", "k", "x" * 100],
    ["SET", "k", "abc" * 200], ["SET", "k", "\x00\xff" * 9], ["SET", "k", "0123456789" * 3 + "abcabcabcabc"],
    ["SET", "k", "The quick brown fox jumps over the lazy dog. " * 40], ["SET", "k", "a" * 300 + "b" * 5 + "a" * 70],
    ["RPUSH", "k", "a", "1", "-99999", "x" * 70],
    ["SADD", "k", "1", "2", "-3"], ["SADD", "k", "a", "b"], ["SADD", "k", *[str(i) for i in range(600)]],
    ["HSET", "k", "f", "v", "n", "12"], ["HSET", "k", "f", "v" * 100],
    ["ZADD", "k", "1", "a", "-2.5", "b", "inf", "c", "1e300", "d"], ["ZADD", "k", *[w for i in range(200) for w in
                                                                                   (str(i / 3), f"m{i}")]],
    ["RPUSH", "k", *[str(i) for i in range(3000)]],
])


@pytest.mark.parametrize("write", VALUES, ids=lambda w: f"{w[0].decode()}-{len(w)}")
def test_dump_restores_across_servers(pair: Pair, write: list[bytes]) -> None:
    pair.reset()
    for side in (pair.atlas, pair.redis):
        side.r2.call(write)
        side.r2.call([b"EXPIRE", b"k", b"1000"])
    mine, theirs = _dump(pair.atlas, b"k"), _dump(pair.redis, b"k")
    if write[0] == b"SET":
        assert mine == theirs  # strings: Redis's encoding, its LZF compression included
    for to_atlas, to_redis in ((theirs, mine), (mine, theirs)):
        assert pair.atlas.r2.call([b"RESTORE", b"k", b"0", to_atlas, b"REPLACE"]) == ("+", "OK")
        assert pair.redis.r2.call([b"RESTORE", b"k", b"0", to_redis, b"REPLACE"]) == ("+", "OK")
        compare_state(pair, [b"k"])
    # A TTL given to RESTORE, relative and absolute; one in the past creates nothing.
    for args in ([b"RESTORE", b"k", b"100000", theirs, b"REPLACE"], [b"PTTL", b"k"],
                 [b"RESTORE", b"k", b"1", mine, b"REPLACE", b"ABSTTL"], [b"EXISTS", b"k"],
                 [b"RESTORE", b"k", b"0", mine], [b"RESTORE", b"k", b"0", mine[:-1] + bytes([mine[-1] ^ 1])]):
        got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
        if args[0] == b"PTTL":
            assert got[0] == want[0] == ":" and 99000 < int(got[1]) <= 100000
        else:
            assert got == want, (args, got, want)
    compare_state(pair, [b"k"])


# -- random programs ------------------------------------------------------------------------------

key = st.sampled_from([b"a", b"b", b"c", b"h", b"z", b"nope"])
PROG = [
    cmd(b"LCS", key, key), cmd(b"LCS", key, key, st.sampled_from([[b"LEN"], [b"IDX"], [b"IDX", b"WITHMATCHLEN"],
                                                                  [b"IDX", b"MINMATCHLEN", b"2"]])),
    cmd(b"SET", key, st.binary(max_size=8)), cmd(b"APPEND", key, st.binary(max_size=3)),
    cmd(b"COPY", key, key, st.sampled_from([[], [b"REPLACE"]])), cmd(b"SUBSTR", key, st.just(b"1"), st.just(b"-2")),
    cmd(b"ZADD", key, st.just(b"1"), st.binary(max_size=2)), cmd(b"HSET", key, st.just(b"f"), st.binary(max_size=2)),
    cmd(b"DEL", key), cmd(b"EXPIRE", key, st.just(b"100")), cmd(b"OBJECT", st.just(b"REFCOUNT"), key),
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(program=st.lists(st.tuples(st.one_of(*PROG), st.booleans()), min_size=1, max_size=10))
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args in SETUP:
        run(pair, args, False)
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair, [b"a", b"b", b"c", b"h", b"z"])


NEW_COMMANDS = ["lcs", "substr", "copy", "dump", "restore"]


def test_command_info_matches(pair: Pair) -> None:
    from tests.integration.test_differential_types import norm
    args = [b"COMMAND", b"INFO", *[c.encode() for c in NEW_COMMANDS]]
    got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    for g, w, name in zip(got[1], want[1], NEW_COMMANDS, strict=True):
        g6, w6 = norm(g)[1][:6], norm(w)[1][:6]
        g6[2], w6[2] = sorted(g6[2][1], key=repr), sorted(w6[2][1], key=repr)
        assert g6 == w6, name
        assert norm(g)[1][6] == norm(w)[1][6], (name, "ACL categories")


text = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([b"a", b"b", b"ab", b"abc", b"\x00", b"xyz" * 5]), max_size=300).map(b"".join),
    st.tuples(st.binary(min_size=1, max_size=40), st.integers(1, 60)).map(lambda t: t[0] * t[1]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=text)
def test_string_dumps_are_redis_bytes(pair: Pair, value: bytes) -> None:
    for side in (pair.atlas, pair.redis):
        side.r2.call([b"SET", b"k", value])
    assert _dump(pair.atlas, b"k") == _dump(pair.redis, b"k"), value


member = st.one_of(st.sampled_from([b"0", b"7", b"127", b"128", b"-1", b"4095", b"-4096", b"4096", b"32767",
                                    b"-32769", b"8388607", b"8388608", b"2147483648", b"-9223372036854775808",
                                    b"01", b"-0", b" 1", b"1.5", b""]),
                   st.binary(max_size=70))
score = st.sampled_from([b"0", b"-0", b"1", b"-2", b"1.5", b"0.1", b"1e20", b"4503599627370496", b"inf", b"-inf",
                         b"-3.25e-5"])
compact = st.one_of(
    st.lists(st.tuples(member, member), min_size=1, max_size=20).map(
        lambda fv: [b"HSET", b"k", *[x for p in fv for x in p]]),
    st.lists(st.tuples(score, member), min_size=1, max_size=20).map(
        lambda sm: [b"ZADD", b"k", *[x for p in sm for x in p]]),
    st.lists(st.integers(-(1 << 63), (1 << 63) - 1).map(lambda n: b"%d" % n), min_size=1, max_size=20).map(
        lambda ms: [b"SADD", b"k", *ms]),
    st.lists(st.integers(-40000, 40000).map(lambda n: b"%d" % n), min_size=1, max_size=20).map(
        lambda ms: [b"SADD", b"k", *ms]),
    st.lists(member, min_size=1, max_size=40).map(lambda items: [b"RPUSH", b"k", *items]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(write=compact)
def test_compact_collection_dumps_are_redis_bytes(pair: Pair, write: list[bytes]) -> None:
    for side in (pair.atlas, pair.redis):
        side.r2.call([b"DEL", b"k"])
        side.r2.call(write)
    assert _dump(pair.atlas, b"k") == _dump(pair.redis, b"k"), write
