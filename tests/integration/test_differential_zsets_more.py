"""The remaining sorted-set commands: a real atlasd against a real redis-server, RESP2 and RESP3.

ZUNION/ZINTER/ZDIFF and their STORE forms, ZINTERCARD, the BYLEX family,
ZRANGESTORE, ZRANDMEMBER, ZSCAN and ZMPOP.  The raw-socket client and reply
trees are test_differential_types.py's; every reply (error texts included)
must be equal, except ZRANDMEMBER's random choice, which is checked for its
shape (type, length, distinct members when promised, members and scores taken
from the zset).  After every command the keyspace (type, content, whether a
TTL is set) is compared too.  The helpers here (`run`, `compare_state`,
`words`) serve test_differential_bitmaps.py and test_differential_keys_more.py.
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


atlasd, pair = module_pair("zsets")  # the daemon and both servers' connections


def words(cases: list[list[str]]) -> list[list[bytes]]:
    return [[w.encode() for w in c] for c in cases]


ZKEYS = [b"z1", b"z2", b"z3"]
ALL_KEYS = ZKEYS + [b"s1", b"k1", b"d", b"nope"]


def _where(pair: Pair, args: list[bytes], resp3: bool, got: object, want: object) -> str:
    return f"{args!r} (resp{3 if resp3 else 2}) after {pair.done!r}: atlasd {got!r}, redis {want!r}"


def _zrandmember_ok(pair: Pair, args: list[bytes], resp3: bool, got: tuple, want: tuple) -> None:
    where = _where(pair, args, resp3, got, want)
    if want[0] in ("-", "nil") or got[0] in ("-", "nil") or len(args) == 2:
        if want[0] == "$" and got[0] == "$":
            return  # one member each: checked against the zset below
        assert got == want, where
        return
    assert got[0] == want[0] and len(got[1]) == len(want[1]), where
    flat = pair.redis.r2.call([b"ZRANGE", args[1], b"0", b"-1", b"WITHSCORES"])[1]
    content = {flat[i][1]: flat[i + 1][1] for i in range(0, len(flat), 2)}
    withscores = len(args) == 4
    items = got[1]
    if withscores and resp3:
        pairs = [(x[1][0][1], x[1][1][1]) for x in items]
    elif withscores:
        pairs = [(items[i][1], items[i + 1][1]) for i in range(0, len(items), 2)]
    else:
        pairs = [(x[1], None) for x in items]
    for member, score in pairs:
        assert member in content, where
        if score is not None and not resp3:
            assert content[member] == score, where
    if int(args[2]) > 0:
        assert len({m for m, _ in pairs}) == len(pairs), where


def run(pair: Pair, args: list[bytes], resp3: bool) -> None:
    got = pair.atlas.conn(resp3).call(args)
    want = pair.redis.conn(resp3).call(args)
    if args[0].upper() == b"ZRANDMEMBER":
        _zrandmember_ok(pair, args, resp3, got, want)
    else:
        assert norm(got) == norm(want), _where(pair, args, resp3, got, want)
    pair.done.append((args, resp3))


def state(side: Side, keys: list[bytes]) -> list:
    types = side.r2.call_many([[b"TYPE", k] for k in keys])
    reads: list[list[bytes]] = []
    for k, (_, t) in zip(keys, types, strict=True):
        reads.append({"string": [b"GET", k], "zset": [b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"],
                      "set": [b"SMEMBERS", k], "list": [b"LRANGE", k, b"0", b"-1"],
                      "hash": [b"HGETALL", k]}.get(t, [b"EXISTS", k]))
        reads.append([b"EXPIRETIME", k])
    replies = side.r2.call_many(reads)
    out: list = []
    for (_, t), r in zip(types, replies[::2], strict=True):
        if t in ("set", "hash"):  # hash-table order on Redis
            r = ("*", sorted(r[1], key=repr))
        out.append((t, norm(r)))
    out.append([r[1] != "-1" for r in replies[1::2]])  # a TTL or not (clocks differ)
    return out


def compare_state(pair: Pair, keys: list[bytes] = ALL_KEYS) -> None:
    got, want = state(pair.atlas, keys), state(pair.redis, keys)
    assert got == want, f"keyspace differs after {pair.done!r}:\natlasd {got!r}\nredis  {want!r}"


# -- fixed cases -------------------------------------------------------------------------------

SETUP = words([
    ["ZADD", "z1", "1", "a", "2", "b", "3", "c", "-inf", "m", "inf", "p"],
    ["ZADD", "z2", "0.1", "a", "0.2", "c", "5", "d", "-inf", "p", "inf", "m"],
    ["ZADD", "z3", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e", "0", "f", "0", "g"],
    ["SADD", "s1", "a", "d", "x"], ["SET", "k1", "v"],
])

ALGEBRA = words([
    ["ZUNION", "2", "z1", "z2"], ["ZUNION", "2", "z1", "z2", "WITHSCORES"], ["ZINTER", "2", "z1", "z2", "withscores"],
    ["ZDIFF", "2", "z1", "z2", "WITHSCORES"], ["ZDIFF", "1", "z1"], ["ZUNION", "3", "z1", "z2", "s1", "WITHSCORES"],
    ["ZINTER", "2", "z1", "s1", "WITHSCORES"], ["ZDIFF", "2", "s1", "z1", "WITHSCORES"],
    ["ZUNION", "2", "z1", "z2", "WEIGHTS", "2", "-1", "WITHSCORES"],
    ["ZUNION", "2", "z1", "z2", "WEIGHTS", "0", "1", "WITHSCORES"],
    ["ZUNION", "2", "z1", "z2", "AGGREGATE", "MIN", "WITHSCORES"],
    ["ZUNION", "2", "z1", "z2", "AGGREGATE", "max", "WITHSCORES"],
    ["ZINTER", "2", "z1", "z2", "AGGREGATE", "MAX", "WEIGHTS", "1", "3", "WITHSCORES", "WITHSCORES"],
    ["ZINTER", "3", "z1", "z1", "z1", "WEIGHTS", "1", "2", "3", "WITHSCORES"],
    ["ZUNION", "2", "z1", "nope", "WITHSCORES"], ["ZINTER", "2", "z1", "nope"], ["ZDIFF", "2", "nope", "z1"],
    ["ZUNION", "0", "z1"], ["ZUNION", "-1", "z1"], ["ZUNION", "x", "z1"], ["ZUNION", "3", "z1", "z2"],
    ["ZUNION", "2", "z1", "k1"], ["ZUNION", "2", "k1", "z1", "FOO"], ["ZUNION", "1", "z1", "FOO"],
    ["ZUNION", "2", "z1", "z2", "WEIGHTS", "1"], ["ZUNION", "2", "z1", "z2", "WEIGHTS", "1", "x"],
    ["ZUNION", "2", "z1", "z2", "WEIGHTS", "1", "nan"], ["ZUNION", "2", "z1", "z2", "AGGREGATE", "AVG"],
    ["ZUNION", "2", "z1", "z2", "AGGREGATE"], ["ZDIFF", "2", "z1", "z2", "WEIGHTS", "1", "2"],
    ["ZDIFF", "2", "z1", "z2", "AGGREGATE", "SUM"], ["ZDIFF", "0", "z1"],
    ["ZUNIONSTORE", "d", "2", "z1", "z2"], ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
    ["ZINTERSTORE", "d", "2", "z1", "z2", "WEIGHTS", "-1", "0.5"], ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
    ["ZDIFFSTORE", "d", "2", "z1", "z2"], ["ZUNIONSTORE", "d", "2", "z1", "z2", "WITHSCORES"],
    ["EXPIRE", "d", "100"], ["ZINTERSTORE", "d", "2", "z1", "nope"], ["EXISTS", "d"],
    ["ZUNIONSTORE", "k1", "1", "z1"], ["TYPE", "k1"], ["ZUNIONSTORE", "z1", "2", "z1", "z2", "AGGREGATE", "MAX"],
    ["ZINTERSTORE", "d", "0", "z1"], ["ZDIFFSTORE", "d", "x", "z1"], ["ZUNIONSTORE", "d", "1", "s1", "WEIGHTS", "inf"],
    ["ZINTERCARD", "2", "z1", "z2"], ["ZINTERCARD", "2", "z1", "z2", "LIMIT", "1"],
    ["ZINTERCARD", "2", "z1", "z2", "LIMIT", "0"], ["ZINTERCARD", "2", "z1", "z2", "LIMIT", "-1"],
    ["ZINTERCARD", "2", "z1", "z2", "LIMIT", "x"], ["ZINTERCARD", "2", "z1", "z2", "LIMIT"],
    ["ZINTERCARD", "0", "z1"], ["ZINTERCARD", "3", "z1"], ["ZINTERCARD", "1", "z1", "WITHSCORES"],
    ["ZINTERCARD", "1", "z1", "WEIGHTS", "1"], ["ZINTERCARD", "2", "s1", "z2"], ["ZINTERCARD", "1", "k1"],
])

LEX_RANGE = words([
    ["ZRANGEBYLEX", "z3", "-", "+"], ["ZRANGEBYLEX", "z3", "[b", "(e"], ["ZRANGEBYLEX", "z3", "(b", "[e"],
    ["ZRANGEBYLEX", "z3", "-", "+", "LIMIT", "1", "2"], ["ZRANGEBYLEX", "z3", "-", "+", "LIMIT", "-1", "2"],
    ["ZRANGEBYLEX", "z3", "-", "+", "LIMIT", "2", "-1"], ["ZRANGEBYLEX", "z3", "+", "-"],
    ["ZRANGEBYLEX", "z3", "b", "c"], ["ZRANGEBYLEX", "z3", "-", "+", "WITHSCORES"],
    ["ZRANGEBYLEX", "z3", "-", "+", "LIMIT", "1"], ["ZRANGEBYLEX", "z3", "-", "+", "REV"],
    ["ZRANGEBYLEX", "nope", "-", "+"], ["ZRANGEBYLEX", "k1", "-", "+"], ["ZRANGEBYLEX", "k1", "x", "+"],
    ["ZREVRANGEBYLEX", "z3", "+", "-"], ["ZREVRANGEBYLEX", "z3", "[e", "(b", "LIMIT", "1", "2"],
    ["ZREVRANGEBYLEX", "z3", "-", "+"], ["ZLEXCOUNT", "z3", "-", "+"], ["ZLEXCOUNT", "z3", "[c", "+"],
    ["ZLEXCOUNT", "z3", "x", "+"], ["ZLEXCOUNT", "nope", "-", "+"], ["ZLEXCOUNT", "k1", "-", "+"],
    ["ZRANGE", "z3", "[b", "[d", "BYLEX"], ["ZRANGE", "z3", "[d", "[b", "BYLEX", "REV", "LIMIT", "0", "2"],
    ["ZREMRANGEBYLEX", "z3", "[b", "(d"], ["ZREMRANGEBYLEX", "z3", "x", "+"], ["ZREMRANGEBYLEX", "nope", "-", "+"],
    ["ZREMRANGEBYLEX", "k1", "-", "+"], ["ZREMRANGEBYLEX", "z3", "-", "+"], ["EXISTS", "z3"],
    ["ZRANGESTORE", "d", "z1", "0", "-1"], ["ZRANGE", "d", "0", "-1", "WITHSCORES"],
    ["ZRANGESTORE", "d", "z1", "1", "3", "BYSCORE", "LIMIT", "0", "2"],
    ["ZRANGESTORE", "d", "z1", "3", "1", "BYSCORE", "REV"], ["ZRANGESTORE", "d", "z1", "+", "-", "BYLEX", "REV"],
    ["ZRANGESTORE", "d", "z1", "0", "-1", "WITHSCORES"], ["ZRANGESTORE", "d", "z1", "0", "-1", "LIMIT", "0", "1"],
    ["ZRANGESTORE", "d", "z1", "x", "-1"], ["ZRANGESTORE", "d", "k1", "0", "-1"], ["EXPIRE", "d", "100"],
    ["ZRANGESTORE", "d", "z1", "0", "1"], ["ZRANGESTORE", "d", "nope", "0", "-1"], ["EXISTS", "d"],
    ["ZRANGESTORE", "d", "z1", "5", "9"], ["ZRANGESTORE", "k1", "z1", "0", "0"], ["TYPE", "k1"],
])

MISC = words([
    ["ZRANDMEMBER", "nope"], ["ZRANDMEMBER", "nope", "3"], ["ZRANDMEMBER", "nope", "3", "WITHSCORES"],
    ["ZRANDMEMBER", "z1"], ["ZRANDMEMBER", "z1", "0"], ["ZRANDMEMBER", "z1", "3"], ["ZRANDMEMBER", "z1", "30"],
    ["ZRANDMEMBER", "z1", "-7"], ["ZRANDMEMBER", "z1", "1", "WITHSCORES"], ["ZRANDMEMBER", "z1", "3", "withscores"],
    ["ZRANDMEMBER", "z1", "-8", "WITHSCORES"], ["ZRANDMEMBER", "z1", "9", "WITHSCORES"],
    ["ZRANDMEMBER", "z1", "x"], ["ZRANDMEMBER", "z1", "1", "x"], ["ZRANDMEMBER", "z1", "1", "WITHSCORES", "x"],
    ["ZRANDMEMBER", "z1", "-9223372036854775808"], ["ZRANDMEMBER", "z1", "9223372036854775807", "WITHSCORES"],
    ["ZRANDMEMBER", "z1", "-4611686018427387904", "WITHSCORES"], ["ZRANDMEMBER", "k1"], ["ZRANDMEMBER", "k1", "1"],
    ["ZRANDMEMBER", "z1", "-4611686018427387903", "x"],
    ["ZSCAN", "z1", "0"], ["ZSCAN", "z2", "0", "MATCH", "[ab]*"], ["ZSCAN", "z2", "0", "COUNT", "1"],
    ["ZSCAN", "nope", "0"], ["ZSCAN", "k1", "0"], ["ZSCAN", "z1", "x"], ["ZSCAN", "z1", "0", "COUNT", "0"],
    ["ZSCAN", "z1", "0", "FOO", "1"], ["ZSCAN", "z1", "0", "MATCH"], ["ZADD", "zf", "0.1", "a", "-0", "b", "1e20", "c"],
    ["ZSCAN", "zf", "0"],
    ["ZMPOP", "1", "z1", "MIN"], ["ZMPOP", "2", "nope", "z1", "MAX", "COUNT", "2"], ["ZMPOP", "1", "nope", "MIN"],
    ["ZMPOP", "2", "nope", "k1", "MIN"], ["ZMPOP", "2", "z1", "k1", "MIN"], ["ZMPOP", "0", "z1", "MIN"],
    ["ZMPOP", "x", "z1", "MIN"], ["ZMPOP", "1", "z1", "LEFT"], ["ZMPOP", "3", "z1", "MIN"],
    ["ZMPOP", "1", "z1", "MIN", "COUNT", "0"], ["ZMPOP", "1", "z1", "MIN", "COUNT", "x"],
    ["ZMPOP", "1", "z1", "MIN", "COUNT", "1", "COUNT", "1"], ["ZMPOP", "1", "z1", "MIN", "FOO"],
    ["ZMPOP", "1", "z2", "max", "COUNT", "100"], ["EXISTS", "z2"],
    ["MULTI"], ["ZUNIONSTORE", "d", "1", "z1"], ["ZMPOP", "1", "d", "MIN"], ["ZRANGESTORE", "d", "z1", "0", "0"],
    ["ZREMRANGEBYLEX", "d", "-", "+"], ["EXEC"],
])


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [ALGEBRA, LEX_RANGE, MISC], ids=["algebra", "lex-store", "misc"])
def test_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in SETUP + cases:
        run(pair, args, resp3)
        compare_state(pair)


NEW_COMMANDS = ["zunion", "zinter", "zdiff", "zunionstore", "zinterstore", "zdiffstore", "zintercard",
                "zrangebylex", "zrevrangebylex", "zlexcount", "zremrangebylex", "zrangestore", "zrandmember",
                "zscan", "zmpop"]


def test_command_info_matches(pair: Pair) -> None:
    args = [b"COMMAND", b"INFO", *[c.encode() for c in NEW_COMMANDS]]
    got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    for g, w, name in zip(got[1], want[1], NEW_COMMANDS, strict=True):
        # name, arity, flags (atlasd lists them sorted), first key, last key, step
        g6, w6 = norm(g)[1][:6], norm(w)[1][:6]
        g6[2], w6[2] = sorted(g6[2][1], key=repr), sorted(w6[2][1], key=repr)
        assert g6 == w6, name
        assert norm(g)[1][6] == norm(w)[1][6], (name, "ACL categories")


# -- random programs ---------------------------------------------------------------------------

zkey = st.sampled_from(ZKEYS * 3 + [b"s1", b"k1", b"nope"])
dst = st.sampled_from([b"d", b"z1", b"z2", b"k1"])
member = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"", b"\xff"])
score = st.sampled_from([b"0", b"1", b"-1", b"2.5", b"0.1", b"-0", b"inf", b"-inf", b"1e300"])
weight = st.sampled_from([b"1", b"0", b"-1", b"2", b"0.5", b"inf", b"-inf", b"x"])
lex = st.sampled_from([b"-", b"+", b"[a", b"(b", b"[c", b"(", b"[", b"x"])
bound = st.sampled_from([b"0", b"1", b"-1", b"(1", b"-inf", b"+inf", b"2.5", b"x"])
index = st.sampled_from([b"0", b"1", b"-1", b"2", b"-2", b"10"])


def _algebra(name: bytes, store: bool) -> st.SearchStrategy[list[bytes]]:
    def build(t: tuple) -> list[bytes]:
        name_, d, keys, weights, agg, withscores = t
        out = [name_] + ([d] if store else []) + [b"%d" % len(keys), *keys]
        if weights and name.upper() not in (b"ZDIFF", b"ZDIFFSTORE"):
            out += [b"WEIGHTS", *[weights[i % len(weights)] for i in range(len(keys))]]
        if agg is not None and name.upper() not in (b"ZDIFF", b"ZDIFFSTORE"):
            out += [b"AGGREGATE", agg]
        if withscores and not store:
            out.append(b"WITHSCORES")
        return out
    return st.tuples(cased(name), dst, some(zkey, 1, 3), st.lists(weight, max_size=3),
                     st.one_of(st.none(), st.sampled_from([b"SUM", b"MIN", b"MAX"])), st.booleans()).map(build)


ZCMDS = [
    cmd(b"ZADD", zkey, some(st.tuples(score, member).map(list), 1, 3).map(lambda ps: [b for p in ps for b in p])),
    cmd(b"ZREM", zkey, some(member)),
    _algebra(b"ZUNION", False), _algebra(b"ZINTER", False), _algebra(b"ZDIFF", False),
    _algebra(b"ZUNIONSTORE", True), _algebra(b"ZINTERSTORE", True), _algebra(b"ZDIFFSTORE", True),
    st.tuples(cased(b"ZINTERCARD"), some(zkey), st.sampled_from([[], [b"LIMIT", b"1"], [b"LIMIT", b"0"]])).map(
        lambda t: [t[0], b"%d" % len(t[1]), *t[1], *t[2]]),
    cmd(b"ZRANGEBYLEX", zkey, lex, lex), cmd(b"ZREVRANGEBYLEX", zkey, lex, lex), cmd(b"ZLEXCOUNT", zkey, lex, lex),
    cmd(b"ZREMRANGEBYLEX", zkey, lex, lex),
    cmd(b"ZRANGESTORE", dst, zkey, index, index), cmd(b"ZRANGESTORE", dst, zkey, bound, bound, st.just(b"BYSCORE")),
    cmd(b"ZRANGESTORE", dst, zkey, lex, lex, st.just(b"BYLEX"), st.sampled_from([[], [b"REV"]])),
    cmd(b"ZRANDMEMBER", zkey), cmd(b"ZRANDMEMBER", zkey, st.sampled_from([b"-3", b"1", b"2", b"9"]),
                                   st.sampled_from([[], [b"WITHSCORES"]])),
    cmd(b"ZSCAN", zkey, st.just(b"0")),
    st.tuples(cased(b"ZMPOP"), some(zkey), st.sampled_from([b"MIN", b"MAX"]),
              st.sampled_from([[], [b"COUNT", b"2"]])).map(lambda t: [t[0], b"%d" % len(t[1]), *t[1], t[2], *t[3]]),
    cmd(b"EXPIRE", zkey, st.just(b"1000")),
]

programs = st.lists(st.tuples(st.one_of(*ZCMDS), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args in SETUP:
        run(pair, args, False)
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair)
