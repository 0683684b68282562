"""Lists: a real atlasd against a real redis-server, RESP2 and RESP3, reply by reply.

The raw-socket client and the reply trees are test_differential_types.py's:
every reply keeps its RESP type, and everything (error texts included) must be
equal; lists are ordered, so nothing is normalised.  After every command the
whole keyspace (type, content, whether a TTL is set) is compared too.

Blocking commands are compared where their reply does not depend on another
client: with data present (they pop at once), inside MULTI (where they never
block), with a short timeout (nil, `*-1` in RESP2 and `_` in RESP3), and their
argument errors.  Waking by another client is test_atlasd_blocking.py's.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_differential_types import (
    Pair,
    Side,
    cased,
    cmd,
    module_pair,
    norm,
    some,
)
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)


atlasd, pair = module_pair("lists")  # the daemon and both servers' connections


LKEYS = [b"l1", b"l2", b"l3"]
OTHER = [b"k1", b"h1"]
ALL_KEYS = LKEYS + OTHER + [b"d", b"nope", b"z1", b"z2"]


def run(pair: Pair, args: list[bytes], resp3: bool) -> None:
    got = pair.atlas.conn(resp3).call(args)
    want = pair.redis.conn(resp3).call(args)
    assert norm(got) == norm(want), (f"{args!r} (resp{3 if resp3 else 2}) after {pair.done!r}: "
                                     f"atlasd {got!r}, redis {want!r}")
    pair.done.append((args, resp3))


def state(side: Side) -> list:
    types = side.r2.call_many([[b"TYPE", k] for k in ALL_KEYS])
    reads: list[list[bytes]] = []
    for k, (_, t) in zip(ALL_KEYS, types, strict=True):
        reads.append({"string": [b"GET", k], "list": [b"LRANGE", k, b"0", b"-1"], "hash": [b"HLEN", k],
                      "zset": [b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]}.get(t, [b"EXISTS", k]))
        reads.append([b"EXPIRETIME", k])
    replies = side.r2.call_many(reads)
    out: list = [(t, norm(r)) for (_, t), r in zip(types, replies[::2], strict=True)]
    out.append([r[1] != "-1" for r in replies[1::2]])  # a TTL or not (clocks differ)
    return out


def compare_state(pair: Pair) -> None:
    got, want = state(pair.atlas), state(pair.redis)
    assert got == want, f"keyspace differs after {pair.done!r}:\natlasd {got!r}\nredis  {want!r}"


def _words(cases: list[list[str]]) -> list[list[bytes]]:
    return [[w.encode() for w in c] for c in cases]


FIXED = _words([
    ["RPUSH", "l", "a", "b", "c"], ["LPUSH", "l", "z", "y"], ["LRANGE", "l", "0", "-1"], ["LLEN", "l"],
    ["LPUSHX", "nope", "a"], ["RPUSHX", "nope", "a"], ["LPUSHX", "l", "x1", "x2"], ["RPUSHX", "l", "t"],
    ["LRANGE", "l", "1", "2"], ["LRANGE", "l", "-3", "-1"], ["LRANGE", "l", "5", "1"], ["LRANGE", "l", "-100", "100"],
    ["LRANGE", "nope", "0", "-1"], ["LRANGE", "l", "x", "1"], ["LINDEX", "l", "0"], ["LINDEX", "l", "-1"],
    ["LINDEX", "l", "99"], ["LINDEX", "l", "x"], ["LINDEX", "nope", "x"], ["LSET", "l", "0", "A"],
    ["LSET", "l", "-1", "T"], ["LSET", "l", "99", "v"], ["LSET", "nope", "0", "v"], ["LSET", "l", "x", "v"],
    ["LINSERT", "l", "BEFORE", "a", "pre"], ["LINSERT", "l", "after", "a", "post"],
    ["LINSERT", "l", "AFTER", "T", "end"],
    ["LINSERT", "l", "before", "none", "v"], ["LINSERT", "nope", "before", "a", "v"],
    ["LINSERT", "l", "middle", "a", "v"],
    ["LRANGE", "l", "0", "-1"], ["LPOS", "l", "a"], ["LPOS", "l", "none"], ["LPOS", "nope", "a"],
    ["LPOS", "nope", "a", "COUNT", "0"], ["RPUSH", "p", "a", "b", "a", "c", "a", "a"], ["LPOS", "p", "a", "COUNT", "0"],
    ["LPOS", "p", "a", "RANK", "2"], ["LPOS", "p", "a", "RANK", "-1"], ["LPOS", "p", "a", "RANK", "-2", "COUNT", "2"],
    ["LPOS", "p", "a", "COUNT", "2", "MAXLEN", "3"], ["LPOS", "p", "a", "MAXLEN", "1"], ["LPOS", "p", "a", "RANK", "0"],
    ["LPOS", "p", "a", "COUNT", "-1"], ["LPOS", "p", "a", "MAXLEN", "-1"], ["LPOS", "p", "a", "RANK"],
    ["LPOS", "p", "a", "FOO", "1"], ["LPOS", "p", "a", "RANK", "x"], ["LPOS", "p", "a", "COUNT", "x"],
    ["LPOS", "p", "a", "RANK", "9", "COUNT", "0"], ["LPOS", "p", "a", "RANK", "-9223372036854775808"],
    ["LREM", "p", "2", "a"], ["LRANGE", "p", "0", "-1"], ["LREM", "p", "-1", "a"], ["LREM", "p", "0", "zz"],
    ["LREM", "p", "x", "a"], ["LREM", "nope", "0", "a"], ["LREM", "p", "0", "a"], ["LRANGE", "p", "0", "-1"],
    ["LTRIM", "l", "1", "-2"], ["LRANGE", "l", "0", "-1"], ["LTRIM", "l", "5", "1"], ["EXISTS", "l"],
    ["LTRIM", "nope", "0", "1"], ["LTRIM", "p", "x", "1"],
    ["RPUSH", "q", "1", "2", "3", "4", "5"], ["LPOP", "q"], ["RPOP", "q"], ["LPOP", "q", "2"], ["RPOP", "q", "0"],
    ["LPOP", "q", "-1"], ["LPOP", "q", "x"], ["LPOP", "q", "1", "2"], ["LPOP", "nope"], ["LPOP", "nope", "2"],
    ["RPOP", "nope", "0"], ["RPOP", "q", "10"], ["EXISTS", "q"], ["LPOP", "q", "0"],
    ["RPUSH", "s", "a", "b", "c"], ["RPOPLPUSH", "s", "d"], ["RPOPLPUSH", "s", "s"], ["LRANGE", "s", "0", "-1"],
    ["LMOVE", "s", "d", "LEFT", "LEFT"], ["LMOVE", "s", "d", "right", "right"], ["LMOVE", "s", "d", "up", "left"],
    ["LMOVE", "nope", "d", "LEFT", "RIGHT"], ["LRANGE", "d", "0", "-1"], ["EXISTS", "s"], ["RPOPLPUSH", "nope", "d"],
    ["RPUSH", "one", "x"], ["LMOVE", "one", "one", "LEFT", "RIGHT"], ["LRANGE", "one", "0", "-1"],
    ["LMPOP", "2", "nope", "d", "LEFT"], ["LMPOP", "2", "nope", "d", "RIGHT", "COUNT", "5"],
    ["LMPOP", "1", "nope", "LEFT"],
    ["LMPOP", "0", "d", "LEFT"], ["LMPOP", "x", "d", "LEFT"], ["LMPOP", "2", "d", "LEFT"],
    ["LMPOP", "1", "d", "MIDDLE"],
    ["LMPOP", "1", "d", "LEFT", "COUNT", "0"], ["LMPOP", "1", "d", "LEFT", "COUNT", "x"],
    ["LMPOP", "1", "d", "LEFT", "COUNT", "1", "COUNT", "2"], ["LMPOP", "1", "d", "LEFT", "FOO"],
    ["LMPOP", "3", "d", "LEFT"],
    ["SET", "k", "v"], ["HSET", "h", "f", "v"], ["LPUSH", "k", "a"], ["RPUSH", "h", "a"], ["LPUSHX", "k", "a"],
    ["LRANGE", "k", "0", "1"], ["LLEN", "k"], ["LINDEX", "k", "0"], ["LSET", "k", "0", "a"],
    ["LINSERT", "k", "BEFORE", "a", "b"], ["LPOS", "k", "a"], ["LREM", "k", "0", "a"], ["LTRIM", "k", "0", "1"],
    ["LPOP", "k"], ["RPOP", "k", "2"], ["RPOPLPUSH", "k", "d"], ["RPUSH", "src", "v"], ["RPOPLPUSH", "src", "k"],
    ["LMOVE", "src", "h", "LEFT", "LEFT"], ["LRANGE", "src", "0", "-1"], ["LMPOP", "2", "nope", "k", "LEFT"],
    ["LMPOP", "2", "src", "k", "LEFT"], ["GET", "src"], ["TYPE", "src"], ["TYPE", "nope"],
    ["RENAME", "src", "moved"], ["LRANGE", "moved", "0", "-1"], ["TYPE", "moved"],
    ["RPUSH", "e", "a"], ["EXPIRE", "e", "100"], ["RPUSH", "e", "b"], ["TTL", "e"], ["LPOP", "e", "2"], ["TTL", "e"],
    ["RPUSH", "bin", "\x00\xff", ""], ["LRANGE", "bin", "0", "-1"], ["LPOS", "bin", ""],
])

BLOCKING = _words([
    ["RPUSH", "b1", "a", "b", "c"], ["BLPOP", "nope", "b1", "0"], ["BRPOP", "b1", "0"], ["BLPOP", "nope", "0.05"],
    ["BRPOP", "nope", "nope2", "0.01"], ["BLPOP", "b1", "-1"], ["BLPOP", "b1", "x"], ["BLPOP", "b1", "inf"],
    ["BLPOP", "b1", "1e400"], ["BLPOP", "b1", "nan"], ["BLPOP", "b1", ""], ["BLPOP", "b1", " 1"],
    ["BLPOP", "nope", "1e-400"], ["BLPOP", "nope", "0.0001"], ["RPUSH", "b1", "x", "y"], ["BLPOP", "b1", "0x10"],
    ["BRPOPLPUSH", "b1", "b2", "0"], ["BRPOPLPUSH", "nope", "b2", "0.01"], ["BRPOPLPUSH", "b1", "b2", "-1"],
    ["BLMOVE", "b2", "b1", "LEFT", "RIGHT", "0"], ["BLMOVE", "nope", "b1", "LEFT", "RIGHT", "0.01"],
    ["BLMOVE", "b2", "b1", "UP", "RIGHT", "0"], ["BLMOVE", "b2", "b1", "LEFT", "RIGHT", "x"],
    ["BLMPOP", "0", "2", "nope", "b1", "LEFT", "COUNT", "9"], ["BLMPOP", "0.01", "1", "nope", "RIGHT"],
    ["BLMPOP", "-1", "1", "nope", "RIGHT"], ["BLMPOP", "0", "0", "nope", "RIGHT"], ["BLMPOP", "x", "1", "b1", "UP"],
    ["BLMPOP", "0", "1", "nope", "RIGHT", "COUNT", "0"], ["BLMPOP", "0", "5", "nope", "RIGHT"],
    ["SET", "bk", "v"], ["BLPOP", "nope", "bk", "0"], ["BLPOP", "bk", "nope", "0.01"], ["BRPOPLPUSH", "bk", "b1", "0"],
    ["RPUSH", "b3", "v"], ["BRPOPLPUSH", "b3", "bk", "0"], ["BLMPOP", "0", "2", "bk", "b3", "LEFT"],
    ["BLPOP", "b3", "bk", "0"], ["BLPOP", "b3"], ["BLMPOP", "0", "1"], ["BLMOVE", "a", "b", "LEFT", "LEFT"],
    # the sorted-set ones
    ["ZADD", "z1", "1", "a", "2.5", "b", "3", "c", "-inf", "m"], ["BZPOPMIN", "nope", "z1", "0"],
    ["BZPOPMAX", "z1", "0"],
    ["BZPOPMIN", "nope", "0.01"], ["BZPOPMAX", "nope", "nope2", "0.01"], ["BZPOPMIN", "z1", "-1"],
    ["BZPOPMIN", "z1", "x"], ["BZPOPMIN", "bk", "z1", "0"], ["BZPOPMIN", "z1", "bk", "0"], ["BZPOPMIN", "z1"],
    ["ZADD", "z2", "1", "x", "2", "y", "3", "z"], ["BZMPOP", "0", "2", "nope", "z2", "MIN", "COUNT", "2"],
    ["BZMPOP", "0", "1", "z2", "max"], ["BZMPOP", "0.01", "1", "z2", "MIN"], ["BZMPOP", "0", "0", "z2", "MIN"],
    ["BZMPOP", "x", "1", "z2", "MIN"], ["BZMPOP", "-1", "1", "z2", "MIN"], ["BZMPOP", "0", "1", "z2", "MID"],
    ["BZMPOP", "0", "1", "z2", "MIN", "COUNT", "0"], ["BZMPOP", "0", "1", "z2", "MIN", "COUNT", "1", "COUNT", "1"],
    ["BZMPOP", "0", "5", "z2", "MIN"], ["BZMPOP", "0", "1", "bk", "MIN"],
    ["BZMPOP", "0", "1", "z1", "MAX", "COUNT", "9"],
    # inside MULTI a blocking command acts as its non-blocking form (nil at once, even with timeout 0)
    ["MULTI"], ["BLPOP", "nope", "0"], ["BRPOPLPUSH", "nope", "d", "0"], ["BLMOVE", "nope", "d", "LEFT", "LEFT", "0"],
    ["BLMPOP", "0", "1", "nope", "LEFT"], ["RPUSH", "nope", "x"], ["BLPOP", "nope", "0"], ["BZPOPMIN", "nope", "0"],
    ["BZMPOP", "0", "1", "nope", "MIN"], ["ZADD", "z2", "5", "q"], ["BZPOPMAX", "z2", "0"], ["EXEC"],
])


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [FIXED, BLOCKING], ids=["fixed", "blocking"])
def test_every_list_command_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in cases:
        run(pair, args, resp3)
        compare_state(pair)


NEW_COMMANDS = ["lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "llen", "lrange", "lindex", "lset", "linsert",
                "lrem", "ltrim", "lpos", "rpoplpush", "lmove", "lmpop", "blpop", "brpop", "brpoplpush", "blmove",
                "blmpop", "bzpopmin", "bzpopmax", "bzmpop"]


def test_command_info_matches(pair: Pair) -> None:
    args = [b"COMMAND", b"INFO", *[c.encode() for c in NEW_COMMANDS]]
    got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    for g, w, name in zip(got[1], want[1], NEW_COMMANDS, strict=True):
        # name, arity, flags (as sets), first key, last key, step
        g6, w6 = norm(g)[1][:6], norm(w)[1][:6]
        g6[2], w6[2] = sorted(g6[2][1]), sorted(w6[2][1])
        assert g6 == w6, name
        assert norm(g)[1][6] == norm(w)[1][6], (name, "ACL categories")


# -- random programs, compared state by state ------------------------------------------------

lkey = st.sampled_from(LKEYS * 3 + OTHER + [b"nope"])
item = st.sampled_from([b"a", b"b", b"c", b"1", b"", b"\xff"])
index = st.one_of(st.integers(-6, 6).map(lambda n: b"%d" % n), st.sampled_from([b"x", b"9223372036854775807",
                                                                                 b"-9223372036854775808"]))
count = st.one_of(st.integers(-3, 5).map(lambda n: b"%d" % n), st.just(b"x"))
side = st.sampled_from([b"LEFT", b"RIGHT", b"left", b"up"])
lpos_opts = st.lists(st.one_of(st.tuples(cased(b"RANK"), index).map(list), st.tuples(cased(b"COUNT"), count).map(list),
                               st.tuples(cased(b"MAXLEN"), count).map(list)), max_size=2).map(
    lambda xs: [b for x in xs for b in x])

LIST_CMDS = [
    cmd(b"LPUSH", lkey, some(item)), cmd(b"RPUSH", lkey, some(item)), cmd(b"LPUSHX", lkey, some(item)),
    cmd(b"RPUSHX", lkey, some(item)), cmd(b"LPOP", lkey), cmd(b"RPOP", lkey, count), cmd(b"LLEN", lkey),
    cmd(b"LRANGE", lkey, index, index), cmd(b"LINDEX", lkey, index), cmd(b"LSET", lkey, index, item),
    cmd(b"LINSERT", lkey, st.sampled_from([b"BEFORE", b"after", b"x"]), item, item),
    cmd(b"LREM", lkey, count, item), cmd(b"LTRIM", lkey, index, index), cmd(b"LPOS", lkey, item, lpos_opts),
    cmd(b"RPOPLPUSH", lkey, lkey), cmd(b"LMOVE", lkey, lkey, side, side),
    st.tuples(cased(b"LMPOP"), some(lkey), side, st.sampled_from([[], [b"COUNT", b"2"], [b"COUNT", b"0"]])).map(
        lambda t: [t[0], b"%d" % len(t[1]), *t[1], t[2], *t[3]]),
    cmd(b"BLPOP", some(lkey), st.just(b"0.01")), cmd(b"BRPOPLPUSH", lkey, lkey, st.just(b"0.01")),
    cmd(b"BLMOVE", lkey, lkey, side, side, st.just(b"0.01")),
    cmd(b"TYPE", lkey), cmd(b"DEL", lkey), cmd(b"RENAME", lkey, lkey), cmd(b"SET", lkey, item),
    cmd(b"EXPIRE", lkey, st.just(b"1000")),
]
SETUP = [cmd(b"RPUSH", st.sampled_from(LKEYS), some(item, 1, 5))]

step = st.tuples(st.one_of(*LIST_CMDS), st.booleans())
programs = st.tuples(st.lists(st.tuples(st.one_of(*SETUP), st.booleans()), min_size=1, max_size=3),
                     st.lists(step, min_size=1, max_size=12)).map(lambda parts: parts[0] + parts[1])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair)
