"""Bitmaps: SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO, and SETRANGE/APPEND's limits,
on a real atlasd and a real redis-server side by side, RESP2 and RESP3, reply by reply.

Every reply (error texts included) must be equal, and after every command the
keyspace (type, content, whether a TTL is set) is compared too; the helpers are
test_differential_zsets_more.py's.  Bitmap writes are logged as SETRANGE effects
of the bytes they touched: a restart of atlasd must rebuild the same values from
the AOF, and a SETBIT far into a large value must log a small record.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import running_daemon
from tests.integration.test_differential_types import Pair, cased, cmd, module_pair, some
from tests.integration.test_differential_zsets_more import compare_state, run, words
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = [b"b1", b"b2", b"b3", b"d", b"z", b"nope"]


atlasd, pair = module_pair("bitmaps")  # the daemon and both servers' connections


SETUP = words([["SET", "b1", "foobar"], ["SET", "b2", "\xff\xf0\x00"], ["ZADD", "z", "1", "a"]])

BITS = words([
    ["SETBIT", "b3", "7", "1"], ["GETBIT", "b3", "7"], ["GETBIT", "b3", "6"], ["GETBIT", "b3", "100"],
    ["SETBIT", "b3", "7", "0"], ["GET", "b3"], ["SETBIT", "b3", "100", "0"], ["STRLEN", "b3"],
    ["SETBIT", "b3", "0", "1"], ["SETBIT", "b3", "0", "1"], ["SETBIT", "b3", "-1", "1"], ["SETBIT", "b3", "x", "1"],
    ["SETBIT", "b3", "1", "2"], ["SETBIT", "b3", "1", "-1"], ["SETBIT", "b3", "1", "x"],
    ["SETBIT", "b3", "4294967296", "1"], ["SETBIT", "b3", "4294967295", "x"], ["SETBIT", "z", "1", "1"],
    ["SETBIT", "z", "-1", "1"], ["GETBIT", "z", "1"], ["GETBIT", "nope", "1"], ["GETBIT", "b1", "-1"],
    ["GETBIT", "b1", "+1"], ["EXPIRE", "b3", "100"], ["SETBIT", "b3", "1000", "1"], ["TTL", "b3"],
    ["BITCOUNT", "b1"], ["BITCOUNT", "b1", "1", "1"], ["BITCOUNT", "b1", "-2", "-1"], ["BITCOUNT", "b1", "-1", "-2"],
    ["BITCOUNT", "b1", "5", "30"], ["BITCOUNT", "b1", "1", "13", "BIT"], ["BITCOUNT", "b1", "-9", "-2", "bit"],
    ["BITCOUNT", "b1", "0", "0", "BYTE"], ["BITCOUNT", "b1", "0", "0", "FOO"], ["BITCOUNT", "b1", "0"],
    ["BITCOUNT", "b1", "x", "1"], ["BITCOUNT", "b1", "0", "1", "BIT", "x"], ["BITCOUNT", "nope", "x"],
    ["BITCOUNT", "nope", "0", "1", "FOO"], ["BITCOUNT", "z"], ["BITCOUNT", "b1", "3", "1"],
    ["BITCOUNT", "b1", "-100", "100"], ["BITCOUNT", "b1", "7", "12", "BIT"],
    ["BITPOS", "b2", "0"], ["BITPOS", "b2", "1"], ["BITPOS", "b2", "1", "1"], ["BITPOS", "b2", "0", "0", "0"],
    ["BITPOS", "b2", "0", "0", "1"], ["BITPOS", "b2", "0", "3", "-1"], ["BITPOS", "b2", "1", "2"],
    ["BITPOS", "b2", "0", "2"], ["BITPOS", "b2", "0", "1", "2", "BIT"], ["BITPOS", "b2", "0", "7", "11", "BIT"],
    ["BITPOS", "b2", "0", "0", "11", "BIT"], ["BITPOS", "b2", "1", "12", "-1", "BIT"],
    ["BITPOS", "b2", "1", "-5", "-1", "bit"], ["BITPOS", "b2", "0", "-100", "-1", "BYTE"],
    ["BITPOS", "b2", "2"], ["BITPOS", "b2", "x"], ["BITPOS", "b2", "1", "x"], ["BITPOS", "b2", "1", "0", "1", "X"],
    ["BITPOS", "b2", "1", "0", "1", "BIT", "x"], ["BITPOS", "nope", "0"], ["BITPOS", "nope", "1"],
    ["BITPOS", "nope", "1", "0", "1", "X"], ["BITPOS", "z", "1"], ["SET", "e", ""], ["BITPOS", "e", "0"],
    ["BITPOS", "e", "1"], ["BITCOUNT", "e"], ["BITPOS", "b2", "0", "5", "2"], ["SET", "ones", "\xff\xff"],
    ["BITPOS", "ones", "0"], ["BITPOS", "ones", "0", "0"], ["BITPOS", "ones", "0", "0", "-1"],
    ["BITPOS", "ones", "0", "3", "9", "BIT"],
])

BITOP = words([
    ["BITOP", "AND", "d", "b1", "b2"], ["GET", "d"], ["BITOP", "or", "d", "b1", "b2"], ["GET", "d"],
    ["BITOP", "XOR", "d", "b1", "b2", "b1"], ["GET", "d"], ["BITOP", "NOT", "d", "b1"], ["GET", "d"],
    ["BITOP", "NOT", "d", "b1", "b2"], ["BITOP", "NAND", "d", "b1"], ["BITOP", "AND", "d", "b1", "z"],
    ["BITOP", "AND", "d", "nope", "b1"], ["GET", "d"], ["EXPIRE", "d", "100"], ["BITOP", "OR", "d", "nope"],
    ["EXISTS", "d"], ["BITOP", "OR", "z", "b1"], ["TYPE", "z"], ["BITOP", "NOT", "b1", "b1"], ["GET", "b1"],
])

BITFIELD = words([
    ["BITFIELD", "b3"], ["BITFIELD", "b3", "SET", "i8", "0", "-100", "GET", "u4", "0", "GET", "i8", "0"],
    ["BITFIELD", "b3", "INCRBY", "u2", "100", "1", "OVERFLOW", "SAT", "INCRBY", "u2", "102", "7"],
    ["BITFIELD", "b3", "OVERFLOW", "FAIL", "INCRBY", "i5", "#3", "100", "GET", "i5", "#3"],
    ["BITFIELD", "b3", "SET", "u8", "#1", "255", "INCRBY", "u8", "#1", "10", "GET", "u8", "8"],
    ["BITFIELD", "b3", "OVERFLOW", "WRAP", "SET", "i8", "#2", "200", "GET", "i8", "#2"],
    ["BITFIELD", "b3", "OVERFLOW", "SAT", "SET", "i8", "#2", "200", "SET", "i8", "#2", "-200", "GET", "i8", "#2"],
    ["BITFIELD", "b3", "OVERFLOW", "SAT", "SET", "u8", "#2", "-1", "GET", "u8", "#2"],
    ["BITFIELD", "b3", "OVERFLOW", "FAIL", "SET", "u8", "#5", "-1", "GET", "u8", "#5"],
    ["BITFIELD", "b3", "SET", "i64", "0", "-9223372036854775808", "INCRBY", "i64", "0", "-1", "GET", "u63", "1"],
    ["BITFIELD", "b3", "OVERFLOW", "SAT", "INCRBY", "i64", "0", "-1", "INCRBY", "i64", "0", "9223372036854775807"],
    ["BITFIELD", "b3", "OVERFLOW", "SAT", "SET", "i8", "0", "-9223372036854775808", "GET", "i8", "0"],
    ["BITFIELD", "b3", "SET", "u63", "3", "9223372036854775807", "INCRBY", "u63", "3", "5", "GET", "u1", "200"],
    ["BITFIELD", "b3", "SET", "i1", "1", "1", "INCRBY", "i1", "1", "1", "GET", "i1", "1"],
    ["BITFIELD", "b3", "GET", "u64", "0"], ["BITFIELD", "b3", "GET", "i65", "0"], ["BITFIELD", "b3", "GET", "I8", "0"],
    ["BITFIELD", "b3", "GET", "i0", "0"], ["BITFIELD", "b3", "GET", "i8", "-1"], ["BITFIELD", "b3", "GET", "i8", "#-1"],
    ["BITFIELD", "b3", "GET", "i8", "x"], ["BITFIELD", "b3", "SET", "i8", "0", "x"], ["BITFIELD", "b3", "GET", "i8"],
    ["BITFIELD", "b3", "OVERFLOW", "BAD"], ["BITFIELD", "b3", "OVERFLOW"], ["BITFIELD", "b3", "FOO", "i8", "0"],
    ["BITFIELD", "b3", "GET", "i8", "4294967296"], ["BITFIELD", "b3", "GET", "i8", "#536870912"],
    ["BITFIELD", "z", "GET", "i8", "0"], ["BITFIELD", "z", "SET", "i8", "0", "1"], ["BITFIELD", "z"],
    ["BITFIELD", "nope", "GET", "u8", "0", "GET", "i64", "#3"], ["EXISTS", "nope"],
    ["BITFIELD_RO", "b3", "GET", "u8", "0", "GET", "i4", "#1"], ["BITFIELD_RO", "b3", "SET", "u8", "0", "1"],
    ["BITFIELD_RO", "z", "GET", "u8", "0"], ["BITFIELD_RO", "z", "INCRBY", "u8", "0", "1"],
    ["BITFIELD_RO", "b3", "GET", "u8", "x"], ["BITFIELD_RO", "b3"], ["BITFIELD_RO", "b3", "OVERFLOW", "SAT"],
    ["EXPIRE", "b3", "100"], ["BITFIELD", "b3", "SET", "u8", "#1000", "1"], ["TTL", "b3"], ["STRLEN", "b3"],
    ["BITFIELD", "b4", "OVERFLOW", "FAIL", "INCRBY", "u8", "80", "300"], ["GET", "b4"],
])

LIMITS = words([
    ["SETRANGE", "b1", "536870911", ""], ["SETRANGE", "b1", "536870912", "x"], ["SETRANGE", "b1", "536870911", "xy"],
    ["SETRANGE", "nope", "536870912", "x"], ["SETRANGE", "nope", "536870912", ""], ["SETRANGE", "b1", "-1", "x"],
    ["SETRANGE", "b1", "x", "x"], ["SETRANGE", "z", "1", "x"], ["SETRANGE", "b1", "10", "zz"], ["GET", "b1"],
    ["EXPIRE", "b1", "100"], ["SETRANGE", "b1", "1", "Q"], ["TTL", "b1"], ["GET", "b1"],
    ["SETRANGE", "b9", "3", "abc"], ["GET", "b9"], ["APPEND", "b9", "x"], ["GET", "b9"],
])


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [BITS, BITOP, BITFIELD, LIMITS], ids=["bits", "bitop", "bitfield", "limits"])
def test_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    keys = KEYS + [b"e", b"ones", b"b4", b"b9"]
    for args in SETUP + cases:
        run(pair, args, resp3)
        compare_state(pair, keys)


NEW_COMMANDS = ["setbit", "getbit", "bitcount", "bitpos", "bitop", "bitfield", "bitfield_ro"]


def test_command_info_matches(pair: Pair) -> None:
    from tests.integration.test_differential_types import norm
    args = [b"COMMAND", b"INFO", *[c.encode() for c in NEW_COMMANDS]]
    got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    for g, w, name in zip(got[1], want[1], NEW_COMMANDS, strict=True):
        g6, w6 = norm(g)[1][:6], norm(w)[1][:6]
        g6[2], w6[2] = sorted(g6[2][1], key=repr), sorted(w6[2][1], key=repr)
        assert g6 == w6, name
        assert norm(g)[1][6] == norm(w)[1][6], (name, "ACL categories")


# -- random programs ------------------------------------------------------------------------------

bkey = st.sampled_from([b"b1", b"b2", b"b3", b"b3", b"z", b"nope"])
offset = st.one_of(st.integers(0, 70).map(lambda n: b"%d" % n), st.sampled_from([b"-1", b"x", b"#2", b"#0"]))
small = st.one_of(st.integers(-20, 20).map(lambda n: b"%d" % n), st.sampled_from([b"-100", b"100", b"x"]))
bftype = st.sampled_from([b"i1", b"u1", b"i3", b"u5", b"i8", b"u8", b"i13", b"u16", b"i64", b"u63", b"u64"])
value = st.one_of(st.integers(-300, 300).map(lambda n: b"%d" % n),
                  st.sampled_from([b"9223372036854775807", b"-9223372036854775808", b"x"]))
sub = st.one_of(
    st.tuples(cased(b"GET"), bftype, offset).map(list),
    st.tuples(st.sampled_from([b"SET", b"INCRBY", b"incrby"]), bftype, offset, value).map(list),
    st.tuples(cased(b"OVERFLOW"), st.sampled_from([b"WRAP", b"SAT", b"FAIL", b"fail"])).map(list),
)
unit = st.sampled_from([[], [b"BYTE"], [b"BIT"], [b"bit"]])
BCMDS = [
    cmd(b"SETBIT", bkey, offset, st.sampled_from([b"0", b"1", b"1", b"2"])), cmd(b"GETBIT", bkey, offset),
    cmd(b"BITCOUNT", bkey), cmd(b"BITCOUNT", bkey, small, small, unit),
    cmd(b"BITPOS", bkey, st.sampled_from([b"0", b"1"])),
    cmd(b"BITPOS", bkey, st.sampled_from([b"0", b"1"]), small),
    cmd(b"BITPOS", bkey, st.sampled_from([b"0", b"1"]), small, small, unit),
    cmd(b"BITOP", st.sampled_from([b"AND", b"OR", b"XOR", b"NOT"]), bkey, some(bkey, 1, 3)),
    cmd(b"BITFIELD", bkey, some(sub, 0, 4).map(lambda xs: [b for x in xs for b in x])),
    cmd(b"BITFIELD_RO", bkey, some(sub, 0, 2).map(lambda xs: [b for x in xs for b in x])),
    cmd(b"SETRANGE", bkey, st.sampled_from([b"0", b"3", b"9"]), st.sampled_from([b"", b"\x01", b"ab"])),
    cmd(b"APPEND", bkey, st.sampled_from([b"\x80", b"xy"])),
]
programs = st.lists(st.tuples(st.one_of(*BCMDS), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args in SETUP:
        run(pair, args, False)
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair, KEYS)


# -- the AOF holds small records, and replays them --------------------------------------------------

def test_setbit_logs_the_byte_and_replays(tmp_path_factory: pytest.TempPathFactory) -> None:
    import redis
    data = tmp_path_factory.mktemp("bitmap-aof")
    with running_daemon(data) as d:
        r = redis.Redis(port=d.port, password=d.password)
        r.set("big", b"\x00" * (1 << 20))
        aof = sorted(data.rglob("*.aof*"))
        size_before = sum(p.stat().st_size for p in aof if p.is_file())
        for i in range(50):
            r.setbit("big", i * 9973, 1)
        r.bitfield("big").set("u8", "#7", 200).incrby("i16", 100, -5).execute()
        r.setrange("big", 500000, b"hello")
        r.expire("big", 1000)
        r.setbit("grow", 100, 1)
        want = (r.get("big"), r.get("grow"))
        size_after = sum(p.stat().st_size for p in sorted(data.rglob("*.aof*")) if p.is_file())
        r.close()
    assert size_after - size_before < 20000  # 53 small records, not 53 MB of values
    with running_daemon(data) as d:
        r = redis.Redis(port=d.port, password=d.password)
        assert (r.get("big"), r.get("grow")) == want
        assert r.ttl("big") > 0
        r.close()
