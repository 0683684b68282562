"""SORT, SORT_RO, TOUCH and LOLWUT on a real atlasd and a real redis-server side by side, RESP2 and
RESP3, reply by reply, the keyspace compared after every command (the helpers are
test_differential_zsets_more.py's).

Where Redis's answer depends on its hash order (a set's own order: SORT set BY nosort; ties of
ALPHA BY in a set or sorted set, or under Redis's partial sort with LIMIT) only what does not is
compared: the elements without their order, or the count.  SORT ... STORE is logged as a DEL and
an RPUSH of the result: a restart of atlasd must find the stored lists, and redis-py's sort()
must work against atlasd.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Pair, cased, module_pair, norm
from tests.integration.test_differential_zsets_more import _where, compare_state, run, words
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = [b"l", b"s", b"is", b"z", b"str", b"h", b"ls", b"d", b"d2", b"nope", b"w_1", b"w_2", b"w_3", b"w_10",
        b"o_1", b"o_2", b"h_1", b"h_2", b"h_3", b"lb"]


atlasd, pair = module_pair("sort")  # the daemon and both servers' connections


SETUP = words([
    ["RPUSH", "l", "3", "1", "2", "10", "1", "-2.5", "0x10"], ["SADD", "s", "b", "a", "c", "aa"],
    ["SADD", "is", "5", "3", "-1", "100"], ["ZADD", "z", "3", "c", "1", "a", "2", "b", "2", "bb", "0", "10"],
    ["SET", "str", "x"], ["HSET", "h", "f", "v"], ["RPUSH", "ls", "b", "a", "C", "\xc3\xa9", "\xff", "ab"],
    ["MSET", "w_1", "30", "w_2", "20", "w_3", "10", "w_10", "-1", "o_1", "x", "o_2", "y"],
    ["HSET", "h_1", "f", "3", "g", "one"], ["HSET", "h_2", "f", "1", "g", "two"], ["HSET", "h_3", "f", "2"],
])

# Bad input first: every syntax, integer, type and conversion error, in Redis's order of checks.
ERRORS = words([
    ["SORT"], ["SORT_RO"], ["SORT", "l", "LIMIT", "1"], ["SORT", "l", "LIMIT", "x", "1"],
    ["SORT", "l", "LIMIT", "1", "x"],
    ["SORT", "l", "LIMIT", "9223372036854775808", "1"], ["SORT", "l", "LIMIT", "1", "-9223372036854775809"],
    ["SORT", "l", "FOO"], ["SORT", "l", "BY"], ["SORT", "l", "GET"], ["SORT", "l", "STORE"], ["SORT", "l", "ASC", "x"],
    ["SORT_RO", "l", "STORE", "d"], ["SORT_RO", "l", "store", "d", "LIMIT", "x", "1"], ["SORT", "str"],
    ["SORT", "h"], ["SORT", "str", "FOO"], ["SORT", "str", "LIMIT", "x", "1"], ["SORT", "str", "STORE", "d"],
    ["SORT", "ls"], ["SORT", "ls", "STORE", "d"], ["SORT", "s"], ["SORT", "l", "BY", "o_*"],
    ["SORT", "l", "BY", "h_*->g"],
    ["SORT", "l", "LIMIT", "0", "1", "LIMIT", "x", "0"], ["SORT", "l", "BY", "nosort", "FOO"],
    ["SET", "d", "keep"], ["SORT", "ls", "STORE", "d"], ["GET", "d"], ["SORT", "l", "BY", "o_*", "STORE", "d"],
    ["GET", "d"], ["SORT", "l", "ALPHA", "BY", "o_*", "STORE", "d"], ["LRANGE", "d", "0", "-1"],
    ["SORT", "l", "asc\x00junk"], ["SORT", "l", "LIMIT\x00", "0", "2"],
])

SCORES = words([
    ["RPUSH", "lb", "1e400"], ["SORT", "lb"], ["DEL", "lb"], ["RPUSH", "lb", "1e-310", "1"], ["SORT", "lb"],
    ["DEL", "lb"],
    ["RPUSH", "lb", "1e-300", " 1", "\t2"], ["SORT", "lb"], ["DEL", "lb"], ["RPUSH", "lb", "1 ", "2"], ["SORT", "lb"],
    ["DEL", "lb"], ["RPUSH", "lb", "", "-1", "inf", "-inf", "-0", "0", "+3", ".5", "5."], ["SORT", "lb"],
    ["SORT", "lb", "DESC"], ["DEL", "lb"], ["RPUSH", "lb", "nan"], ["SORT", "lb"], ["DEL", "lb"],
    ["RPUSH", "lb", "1\x00abc", "0x1p3", "-0x10", "1e5", "infinity", " "], ["SORT", "lb"], ["LPOP", "lb", "6"],
    ["RPUSH", "lb", "1\x00abc", "0x1p3", "-0x10", "1e5", "infinity"], ["SORT", "lb"],
    ["SORT", "lb", "DESC", "LIMIT", "1", "2"],
    ["RPUSH", "lb", "9223372036854775807", "9223372036854775806", "-9223372036854775808"], ["SORT", "lb"],
    ["DEL", "lb"], ["RPUSH", "lb", "2", "1", "2", "01", "1.0"], ["SORT", "lb"], ["SORT", "lb", "DESC"],
])

SORTS = words([
    ["SORT", "l"], ["SORT", "l", "DESC"], ["SORT", "l", "desc", "asc"], ["SORT", "l", "LIMIT", "1", "2"],
    ["SORT", "l", "LIMIT", "-5", "3"], ["SORT", "l", "LIMIT", "0", "-1"],
    ["SORT", "l", "LIMIT", "2", "9223372036854775807"],
    ["SORT", "l", "LIMIT", "100", "1"], ["SORT", "l", "LIMIT", "-9223372036854775808", "-9223372036854775808"],
    ["SORT", "l", "LIMIT", "6", "0"], ["SORT", "l", "LIMIT", "7", "5"], ["SORT", "l", "LIMIT", "6", "5"],
    ["SORT", "l", "ALPHA"], ["SORT", "l", "ALPHA", "DESC", "LIMIT", "1", "3"], ["SORT", "ls", "ALPHA"],
    ["SORT", "ls", "ALPHA", "DESC"], ["SORT", "ls", "ALPHA", "STORE", "d"], ["LRANGE", "d", "0", "-1"],
    ["SORT", "l", "BY", "nosort"], ["SORT", "l", "BY", "nosort", "DESC"],
    ["SORT", "l", "BY", "nosort", "LIMIT", "1", "3"],
    ["SORT", "l", "BY", "nosort", "DESC", "LIMIT", "1", "3"], ["SORT", "l", "BY", "nosort", "LIMIT", "6", "5"],
    ["SORT", "l", "BY", "nosort", "LIMIT", "9", "5"], ["SORT", "l", "BY", "nosort", "DESC", "LIMIT", "-3", "2"],
    ["SORT", "l", "BY", "nosort", "ALPHA"], ["SORT", "l", "BY", "nosort", "BY", "w_*"],
    ["SORT", "l", "BY", "w_*", "BY", "nosort"],
    ["SORT", "z"], ["SORT", "z", "ALPHA"], ["SORT", "z", "BY", "nosort"], ["SORT", "z", "BY", "nosort", "DESC"],
    ["SORT", "z", "BY", "nosort", "LIMIT", "1", "2"], ["SORT", "z", "BY", "nosort", "DESC", "LIMIT", "1", "2"],
    ["SORT", "z", "BY", "nosort", "DESC", "LIMIT", "4", "10"], ["OBJECT", "ENCODING", "z"],
    ["SORT", "is"], ["SORT", "is", "DESC"], ["SORT", "is", "BY", "nosort"], ["SORT", "s", "ALPHA"],
    ["SORT", "s", "ALPHA", "DESC", "LIMIT", "1", "2"], ["SORT", "s", "BY", "nosort", "STORE", "d"],
    ["LRANGE", "d", "0", "-1"],
    ["SORT", "s", "BY", "nosort", "DESC", "LIMIT", "1", "2", "STORE", "d"], ["LRANGE", "d", "0", "-1"],
    ["SORT", "l", "BY", "w_*"], ["SORT", "l", "BY", "w_*", "DESC"], ["SORT", "l", "BY", "w_*", "LIMIT", "1", "3"],
    ["SORT", "l", "BY", "w_*", "ALPHA"], ["SORT", "l", "BY", "h_*->f"], ["SORT", "l", "BY", "h_*->f", "DESC"],
    ["SORT", "l", "BY", "h_*->g", "ALPHA"], ["SORT", "l", "BY", "h_*->"], ["SORT", "l", "BY", "h_*->nofield"],
    ["SORT", "l", "BY", "*"], ["SORT", "l", "BY", "w_*", "GET", "#", "GET", "w_*", "GET", "h_*->g", "GET", "nope"],
    ["SORT", "l", "GET", "#"], ["SORT", "l", "GET", "o_*", "GET", "o_*"],
    ["SORT", "l", "GET", "h_*->f", "LIMIT", "0", "2"],
    ["SORT", "l", "GET", "h_*->"], ["SORT", "l", "GET", "*"], ["SORT", "l", "GET", "#\x00x"],
    ["SORT", "l", "GET", "w_\x00*"],
    ["SORT", "l", "BY", "w_\x00*"], ["SORT", "l", "GET", "h_*->f\x00x"], ["SORT", "nope"], ["SORT", "nope", "GET", "#"],
    ["SORT", "nope", "LIMIT", "0", "1"], ["SORT", "nope", "BY", "nosort", "DESC", "LIMIT", "1", "1"],
    ["SORT_RO", "l"], ["SORT_RO", "l", "BY", "w_*", "GET", "#", "GET", "w_*", "LIMIT", "1", "2", "DESC"],
    ["SORT_RO", "z", "ALPHA", "DESC"],
    ["EVAL", "return redis.call('sort', KEYS[1], 'BY', 'nosort')", "1", "s"],
    ["EVAL", "return redis.call('sort_ro', KEYS[1], 'BY', 'nosort', 'DESC', 'LIMIT', '1', '2')", "1", "s"],
    ["EVAL", "return redis.call('sort', KEYS[1], 'BY', 'nosort', 'GET', '#', 'GET', 'w_*')", "1", "is"],
    ["EVAL_RO", "return redis.call('sort', KEYS[1])", "1", "l"],
    ["EVAL_RO", "return redis.call('sort_ro', KEYS[1])", "1", "l"],
    ["EVAL", "return redis.call('sort', KEYS[1], 'STORE', KEYS[2])", "2", "l", "d2"], ["LRANGE", "d2", "0", "-1"],
])

STORES = words([
    ["SORT", "l", "STORE", "d"], ["LRANGE", "d", "0", "-1"], ["SORT", "l", "DESC", "LIMIT", "1", "2", "STORE", "d"],
    ["LRANGE", "d", "0", "-1"], ["EXPIRE", "d", "100"], ["SORT", "l", "STORE", "d"], ["TTL", "d"],
    ["SORT", "l", "GET", "#", "GET", "nope_*", "STORE", "d"], ["LRANGE", "d", "0", "-1"],
    ["SORT", "l", "STORE", "d", "STORE", "d2"], ["LRANGE", "d2", "0", "-1"], ["SORT", "nope", "STORE", "d"],
    ["EXISTS", "d"], ["SORT", "nope", "STORE", "d"], ["SORT", "l", "LIMIT", "0", "0", "STORE", "d2"], ["EXISTS", "d2"],
    ["SET", "d", "str"], ["SORT", "z", "STORE", "d"], ["TYPE", "d"], ["SORT", "z", "BY", "w_*", "STORE", "d"],
    ["SORT", "l", "STORE", "l"], ["LRANGE", "l", "0", "-1"], ["SORT", "s", "ALPHA", "STORE", "s"], ["TYPE", "s"],
    ["SORT", "ls", "ALPHA", "GET", "#", "STORE", "d"], ["LRANGE", "d", "0", "-1"],
    ["MULTI"], ["SORT", "l", "STORE", "d2"], ["SORT_RO", "d2", "DESC"], ["EXEC"],
])

TOUCH_LOLWUT = words([
    ["TOUCH"], ["TOUCH", "nope"], ["TOUCH", "l", "s", "nope", "l"], ["TOUCH", "str", "h", "z"],
    ["SET", "gone", "x"], ["DEL", "gone"], ["TOUCH", "gone", "gone", "str"], ["EXISTS", "gone"],
    ["LOLWUT", "VERSION", "x"], ["LOLWUT", "version", "9223372036854775808"],
    ["LOLWUT", "VERSION", "5", "x"], ["LOLWUT", "VERSION", "5", "1", "2", "y"], ["LOLWUT", "VERSION", "6", "1", "x"],
    ["LOLWUT", "VERSION", "4294967301", "x"],
])

LOLWUT_TEXT = words([["LOLWUT"], ["LOLWUT", "VERSION"], ["LOLWUT", "1", "2"], ["LOLWUT", "VERSION", "7"],
["LOLWUT", "VERSION", "4"],
                     ["LOLWUT", "VERSION", "-1", "x"], ["LOLWUT", "VERSION", "50"]])


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [ERRORS, SCORES, SORTS, STORES, TOUCH_LOLWUT],
                         ids=["errors", "scores", "sorts", "stores", "touch_lolwut"])
def test_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in SETUP:
        run(pair, args, False)
    for args in cases:
        own_order = len(args) > 1 and args[1] in (b"s", b"is") and b"nosort" in args
        if args[0] == b"SORT" and own_order and b"STORE" not in args:
            _run_unordered(pair, args, resp3, args[1] == b"s")
        else:
            run(pair, args, resp3)
            _after_erange(pair)
        compare_state(pair, KEYS)


def _after_erange(pair: Pair) -> None:
    """Redis 7.0's SORT reads C's errno after strtod without clearing it first, so an ERANGE (1e400,
    1e-310) fails its next numeric sorts too, until some system call of the server sets errno again;
    a new connection does (its accept loop ends in EAGAIN).  atlasd judges each value alone."""
    with socket.create_connection(("127.0.0.1", pair_port(pair)), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(16) == b"+PONG\r\n"


def pair_port(pair: Pair) -> int:
    port: int = pair.redis.r2.sock.getpeername()[1]
    return port


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_lolwut_is_the_version_line(pair: Pair, resp3: bool) -> None:
    """Redis 7.0's default LOLWUT: its version line, a verbatim string in RESP3; atlasd's names the
    version it reports everywhere (HELLO, INFO)."""
    for args in LOLWUT_TEXT:
        got, want = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
        assert want[0] == got[0] == "$"
        prefix = b"txt:" if resp3 else b""  # (the test client keeps a verbatim string's format)
        assert want[1] == prefix + b"Redis ver. 7.0.15\n"
        assert got[1] == prefix + b"Redis ver. 7.0.0\n"
    if resp3:  # the raw frame: =<len>\r\ntxt:<text>
        for side, text in ((pair.atlas, b"Redis ver. 7.0.0\n"), (pair.redis, b"Redis ver. 7.0.15\n")):
            side.r3.sock.sendall(b"*1\r\n$6\r\nLOLWUT\r\n")
            want_frame = b"=%d\r\ntxt:%s\r\n" % (len(text) + 4, text)
            buf = b""
            while len(buf) < len(want_frame):
                buf += side.r3.sock.recv(4096)
            assert buf == want_frame


def _run_unordered(pair: Pair, args: list[bytes], resp3: bool, hashed: bool) -> None:
    """A set's own order: intsets are ascending in both; a hash table's only its elements (or,
    under LIMIT, how many) are compared."""
    got = norm(pair.atlas.conn(resp3).call(args))
    want = norm(pair.redis.conn(resp3).call(args))
    if hashed and got[0] == "*" == want[0]:
        if any(a.upper() == b"LIMIT" for a in args):
            got, want = ("*", len(got[1])), ("*", len(want[1]))
        else:
            got, want = ("*", sorted(got[1], key=repr)), ("*", sorted(want[1], key=repr))
    assert got == want, _where(pair, args, resp3, got, want)
    pair.done.append((args, resp3))


def test_command_info_and_getkeys(pair: Pair) -> None:
    names = [b"sort", b"sort_ro", b"touch", b"lolwut"]
    got = pair.atlas.r2.call([b"COMMAND", b"INFO", *names])
    want = pair.redis.r2.call([b"COMMAND", b"INFO", *names])
    assert norm(got) == norm(want)
    for args in words([["SORT", "l"], ["SORT", "l", "STORE", "d"], ["SORT", "l", "STORE", "d", "STORE", "e"],
                       ["SORT", "l", "LIMIT", "0", "1", "STORE", "d"], ["SORT", "l", "GET", "store", "x"],
                       ["SORT", "l", "store"], ["SORT", "l", "BY", "w_*", "STORE", "d", "GET", "#"],
                       ["SORT_RO", "l", "STORE", "d"], ["TOUCH", "a", "b"], ["LOLWUT"]]):
        for sub in (b"GETKEYS", b"GETKEYSANDFLAGS"):
            line = [b"COMMAND", sub, *args]
            assert norm(pair.atlas.r2.call(line)) == norm(pair.redis.r2.call(line)), line


# -- random programs ------------------------------------------------------------------------------

LIST_ITEMS = [b"1", b"2", b"3", b"10", b"x", b"y", b"-1", b"2.5"]
src = st.sampled_from([b"rl", b"rs", b"rz", b"rstr", b"rh", b"rnope", b"rd"])
pattern = st.sampled_from([b"rw_*", b"rh_*->f", b"rh_*->g", b"nosort", b"rw_*->f", b"#", b"rnope_*", b"*"])
option = st.one_of(
    st.tuples(cased(b"BY"), pattern).map(list),
    st.tuples(cased(b"GET"), pattern).map(list),
    st.tuples(cased(b"LIMIT"), st.sampled_from([b"0", b"1", b"3", b"-1", b"9"]),
              st.sampled_from([b"0", b"1", b"2", b"-1", b"20"])).map(list),
    st.sampled_from([[b"ASC"], [b"DESC"], [b"ALPHA"], [b"alpha"], [b"STORE", b"rd"], [b"STORE", b"rd2"]]),
)
sort_cmd = st.tuples(st.sampled_from([b"SORT", b"SORT", b"SORT_RO"]), src,
                     st.lists(option, max_size=4)).map(lambda t: [t[0], t[1], *[w for o in t[2] for w in o]])
item = st.sampled_from(LIST_ITEMS)
write_cmd = st.one_of(
    st.tuples(st.just(b"RPUSH"), st.just(b"rl"), item).map(list),
    st.tuples(st.just(b"SADD"), st.just(b"rs"), item).map(list),
    st.tuples(st.just(b"ZADD"), st.just(b"rz"), st.sampled_from([b"1", b"2", b"0"]), item).map(list),
    st.tuples(st.just(b"SET"), st.sampled_from([b"rw_1", b"rw_2", b"rw_x", b"rw_10", b"rstr"]),
              st.sampled_from([b"5", b"-3", b"x", b"1.5", b""])).map(list),
    st.tuples(st.just(b"HSET"), st.sampled_from([b"rh_1", b"rh_x", b"rh_y", b"rw_3", b"rh"]),
              st.sampled_from([b"f", b"g"]), st.sampled_from([b"7", b"a", b"-1"])).map(list),
    st.tuples(st.just(b"DEL"), st.sampled_from([b"rw_1", b"rh_x", b"rl", b"rd"])).map(list),
)
programs = st.lists(st.tuples(st.one_of(sort_cmd, sort_cmd, write_cmd), st.booleans()), min_size=1, max_size=10)
RKEYS = [b"rl", b"rs", b"rz", b"rstr", b"rh", b"rd", b"rd2", b"rw_1", b"rw_2", b"rw_x", b"rw_10", b"rw_3", b"rh_1",
         b"rh_x", b"rh_y"]
RSETUP = words([["RPUSH", "rl", "3", "1", "x", "10"], ["SADD", "rs", "2", "y", "1"],
["ZADD", "rz", "1", "x", "2", "10"],
                ["SET", "rw_1", "2"], ["SET", "rw_x", "-1"], ["HSET", "rh_1", "f", "9"], ["HSET", "rh_10", "g", "q"]])


def _order_free(pair: Pair, args: list[bytes]) -> str:
    """'' when Redis's reply is determined, else how much of it is: 'set' (the elements, any order)
    or 'count' (how many).  Redis's order is its hash order for a set's own order and for ALPHA BY
    ties in a set or sorted set, and its partial sort's for ties under LIMIT."""
    words_ = [a.upper() for a in args]
    typ = pair.redis.r2.call([b"TYPE", args[1]])[1]
    by = [args[i + 1] for i, w in enumerate(words_[:-1]) if w == b"BY" and i >= 2]
    dontsort = any(b"*" not in p for p in by)
    limit = b"LIMIT" in words_[2:]
    store = b"STORE" in words_[2:] and args[0].upper() == b"SORT"
    if typ == "set" and dontsort and not store:
        return "count" if limit else "set"
    alpha_by = b"ALPHA" in words_ and by and not dontsort
    if alpha_by and (typ in ("set", "zset") or (limit and by)):
        return "count" if limit else "set"
    return ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args in RSETUP:
        run(pair, args, False)
    for args, resp3 in program:
        free = _order_free(pair, args) if args[0].startswith(b"SORT") else ""
        if free and any(a.upper() == b"STORE" for a in args):
            # (what would be stored depends on Redis's order: the reply's count is still compared)
            i = max(i for i, a in enumerate(args) if a.upper() == b"STORE")
            if i + 1 < len(args):
                args = args[:i] + args[i + 2:]
        if not free:
            run(pair, args, resp3)
        else:
            got = norm(pair.atlas.conn(resp3).call(args))
            want = norm(pair.redis.conn(resp3).call(args))
            if got[0] == want[0] == "*":
                got, want = ((len(got[1]), None), (len(want[1]), None)) if free == "count" else (
                    sorted(got[1], key=repr), sorted(want[1], key=repr))
            assert got == want, _where(pair, args, resp3, got, want)
            pair.done.append((args, resp3))
        compare_state(pair, RKEYS)


# -- the AOF replays SORT ... STORE; redis-py's sort() -------------------------------------------------

def test_sort_store_replays_from_the_aof(tmp_path_factory: pytest.TempPathFactory) -> None:
    import redis
    data = tmp_path_factory.mktemp("sort-aof")
    with running_daemon(data) as d:
        r = redis.Redis(port=d.port, password=d.password)
        r.rpush("src", *[str(n) for n in (5, 3, 9, 1)])
        r.mset({"w_5": 1, "w_3": 4, "w_9": 2, "w_1": 3})
        r.hset("h_9", "f", "nine")
        assert r.sort("src", store="dst") == 4
        assert r.sort("src", by="w_*", get=["#", "h_*->f"], store="dst2") == 8
        r.set("gone", "x")
        assert r.sort("nope", store="gone") == 0
        r.expire("dst", 1000)
        assert r.sort("src", desc=True, start=1, num=2, store="dst") == 2
        want = (r.lrange("dst", 0, -1), r.lrange("dst2", 0, -1), r.exists("gone"), r.ttl("dst"))
        r.close()
    assert want == ([b"5", b"3"], [b"5", b"", b"9", b"nine", b"1", b"", b"3", b""], 0, -1)
    with running_daemon(data) as d:
        r = redis.Redis(port=d.port, password=d.password)
        assert (r.lrange("dst", 0, -1), r.lrange("dst2", 0, -1), r.exists("gone"), r.ttl("dst")) == want
        r.close()


def test_redis_py_sort_against_atlasd(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    import redis
    clients = [redis.Redis(port=atlasd.port, password=atlasd.password), redis.Redis(port=redis_server.port)]
    out = []
    for r in clients:
        r.flushall()
        r.rpush("l", "b", "a", "c")
        r.mset({"w_a": 3, "w_b": 1, "w_c": 2, "v_a": "A", "v_c": "C"})
        out.append((r.sort("l", alpha=True), r.sort("l", by="w_*", get=["#", "v_*"], desc=True),
                    r.sort("l", start=0, num=2, alpha=True, groups=False), r.sort_ro("l", alpha=True, desc=True),
                    r.sort("l", by="nosort", store="o"), r.lrange("o", 0, -1), r.touch("l", "o", "nope"),
                    r.sort("l", by="w_*", get=["#", "v_*"], groups=True)))
        r.close()
    assert out[0] == out[1]


def test_store_notifies_and_wakes_as_redis(pair: Pair) -> None:
    """Keyspace events: "sortstore" (and "new" for a new destination, never a "del" before an
    overwrite), "del" when an empty result deletes it, none for what BY and GET read;
    and a client blocked on the destination is served by the list STORE makes."""
    from tests.integration.test_differential_types import Raw
    pair.reset()
    subs = []
    for side in (pair.atlas, pair.redis):
        side.r2.call([b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"])
        port = side.r2.sock.getpeername()[1]
        password = None if side is pair.redis else _password(pair)
        sub = Raw(port, password, False)
        assert sub.call([b"PSUBSCRIBE", b"__key*__:*"])[0] == "*"
        subs.append(sub)
    try:
        steps = words([["RPUSH", "l", "2", "1"], ["SORT", "l", "STORE", "d"], ["SORT", "l", "DESC", "STORE", "d"],
                       ["SORT", "nope", "STORE", "d"], ["SORT", "nope", "STORE", "d"], ["SET", "w_1", "5"],
                       ["SORT", "l", "BY", "w_*"], ["SORT_RO", "l", "GET", "#"],
                       ["SET", "d", "x"], ["SORT", "l", "STORE", "d"], ["SET", "end", "x"]])
        for args in steps:
            run(pair, args, False)
        got, want = [], []
        for sub, out in ((subs[0], got), (subs[1], want)):
            sub.sock.settimeout(2)
            while True:
                msg = sub._read()
                out.append(msg)
                if msg[1][2:] == [("$", b"__keyevent@0__:set"), ("$", b"end")]:
                    break
        assert got == want
        assert sum(m[1][2] == ("$", b"__keyevent@0__:sortstore") for m in got) == 3
    finally:
        for sub in subs:
            sub.close()
        for side in (pair.atlas, pair.redis):
            side.r2.call([b"CONFIG", b"SET", b"notify-keyspace-events", b""])
    # BLPOP on a destination STORE creates
    blocked = [Raw(s.r2.sock.getpeername()[1], None if s is pair.redis else _password(pair), False)
               for s in (pair.atlas, pair.redis)]
    try:
        for b in blocked:
            b.sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$4\r\nwake\r\n$1\r\n5\r\n")
        run(pair, [b"SORT", b"l", b"STORE", b"wake"], False)
        assert [b._read() for b in blocked] == [("*", [("$", b"wake"), ("$", b"1")])] * 2
        compare_state(pair, [b"wake"])
    finally:
        for b in blocked:
            b.close()


def _password(pair: Pair) -> str | None:
    """The atlasd side's password (the module's daemon fixture's), from its RESP2 connection."""
    return _PASSWORD[0]


_PASSWORD: list[str | None] = [None]


@pytest.fixture(scope="module", autouse=True)
def _remember_password(atlasd: Daemon) -> None:
    _PASSWORD[0] = atlasd.password
