"""A real atlasd against a real redis-server, over the network: the same command sequences, the same replies.

tests/integration/test_differential_redis.py compares the engine in process
with redis-server; this module sends the same generated commands (its
strategies, imported) over TCP to a running `helios atlasd` and to
redis-server, each through one raw redis-py connection (RESP2, full error
texts, no reply conversion), so the RESP encoder, the connection's
dispatch and the durability queue are in the comparison too.  On top of the
plain commands it generates transactions:

    [WATCH keys] [writes from a second client] MULTI cmd... [writes from a second client] EXEC | DISCARD

with queue-time errors (arity, unknown commands, WATCH or MULTI inside
MULTI) that must abort EXEC, run-time errors that must not, and writes by
another client to watched keys that must make EXEC return nil.

Intended differences: the seven listed in test_differential_redis.py hold
here too and are handled the same way (SCAN compared as the set of keys a
full iteration returns, KEYS sorted, TTLs within 2 s, BYLEX only on sorted
sets whose scores are all equal, no WITHSCORE on ZRANK, no past EXAT/PXAT on
SET, no oversized values).  Over the network both servers run on the wall
clock, so difference 3 shrinks to the 2 s tolerance.  In transactions:

8. ZRANGE ... BYLEX is not generated inside MULTI: whether its scores are all
   equal (difference 4) is only known when EXEC runs.
9. CLIENT SETINFO, which redis-py sends on connecting, is Redis 7.2's:
   redis-server 7.0 refuses it and atlasd accepts it.  redis-py ignores both
   answers, and no generated command depends on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_redis import (
    ARITY_CMDS,
    KEY_CMDS,
    SETUP_CMDS,
    STRING_CMDS,
    ZSET_CMDS,
    _FullErrorParser,
    any_key,
    cmd,
    key,
    keys_list,
    norm_redis,
    rel_s,
    same,
    scan_all,
    scan_all_keys,
    score_pairs,
    value,
    zkey,
)
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(600)


# -- reaching both servers --------------------------------------------------------------------


def _connect(port: int, password: str | None = None) -> redis.Connection:
    conn = redis.Connection(host="127.0.0.1", port=port, protocol=2, parser_class=_FullErrorParser,
                            socket_timeout=20, password=password)
    conn.connect()
    return conn


def _call(conn: redis.Connection, args: list[bytes]) -> Any:
    """One command's raw reply; an error (top level or inside EXEC's array) as ("error", text)."""
    conn.send_command(*args)
    try:
        reply = conn.read_response()
    except ResponseError as e:
        return ("error", str(e))
    if isinstance(reply, list):
        return [("error", str(x)) if isinstance(x, ResponseError) else x for x in reply]
    return reply


@dataclass
class Server:
    name: str
    main: redis.Connection
    other: redis.Connection  # a second client, to touch WATCHed keys

    def run(self, args: list[bytes]) -> Any:
        return _call(self.main, args)

    def close(self) -> None:
        self.main.disconnect()
        self.other.disconnect()


@dataclass
class Pair:
    atlas: Server
    redis: Server

    def reset(self) -> None:
        for side in (self.atlas, self.redis):
            for conn in (side.main, side.other):
                assert _call(conn, [b"RESET"]) == b"RESET"  # out of MULTI, nothing WATCHed
                if conn.password:  # RESET leaves the connection unauthenticated (as Redis)
                    assert _call(conn, [b"AUTH", conn.password.encode()]) == b"OK"
            assert _call(side.main, [b"FLUSHALL"]) == b"OK"


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("differential")) as d:
        yield d


@pytest.fixture(scope="module")
def pair(atlasd: Daemon, redis_server: RedisServer) -> Iterator[Pair]:  # noqa: F811
    p = Pair(Server("atlasd", _connect(atlasd.port, atlasd.password), _connect(atlasd.port, atlasd.password)),
             Server("redis", _connect(redis_server.port), _connect(redis_server.port)))
    try:
        yield p
    finally:
        p.atlas.close()
        p.redis.close()


# -- generating programs ---------------------------------------------------------------------------

def _upper(args: list[bytes]) -> list[bytes]:
    return [a.upper() for a in args]


plain = st.one_of(*STRING_CMDS, *KEY_CMDS, *ZSET_CMDS, *ARITY_CMDS)
in_multi = st.one_of(
    plain.filter(lambda a: b"BYLEX" not in _upper(a)),  # intended difference 8
    st.sampled_from([[b"NOSUCH"], [b"GET"], [b"ZADD", b"z1", b"1"], [b"WATCH", b"k1"], [b"MULTI"],
                     [b"SET", b"k1"]]),
)
other_write = st.one_of(
    cmd(b"SET", any_key, value), cmd(b"DEL", keys_list), cmd(b"INCR", key), cmd(b"ZADD", zkey, score_pairs),
    cmd(b"EXPIRE", any_key, rel_s), cmd(b"PERSIST", any_key), cmd(b"GET", key), cmd(b"FLUSHALL"),
)


@dataclass
class Tx:
    watch: list[bytes] | None
    others_before: list[list[bytes]]
    body: list[list[bytes]]
    others_after: list[list[bytes]]
    end: bytes


transaction = st.builds(
    Tx,
    watch=st.one_of(st.none(), keys_list),
    others_before=st.lists(other_write, max_size=2),
    body=st.lists(in_multi, max_size=5),
    others_after=st.lists(other_write, max_size=1),
    end=st.sampled_from([b"EXEC", b"EXEC", b"EXEC", b"exec", b"DISCARD"]),
)
step = st.one_of(plain, plain, plain, transaction, scan_all,
                 other_write.map(lambda a: ("OTHER", a)))
programs = st.tuples(st.lists(st.one_of(*SETUP_CMDS), min_size=1, max_size=4),
                     st.lists(step, min_size=1, max_size=12)).map(lambda parts: parts[0] + parts[1])


# -- comparing ---------------------------------------------------------------------------------

def _norm(args: list[bytes], reply: Any) -> Any:
    return norm_redis(args, reply)


def _sorted_if_keys(args: list[bytes], got: Any, want: Any) -> tuple[Any, Any]:
    if args[0].upper() == b"KEYS" and isinstance(got, list) and isinstance(want, list):
        return sorted(got), sorted(want)
    return got, want


def _scores_all_equal(pair: Pair, zset: bytes) -> bool:
    reply = _call(pair.redis.other, [b"ZRANGE", zset, b"0", b"-1", b"WITHSCORES"])
    return not isinstance(reply, list) or len(set(reply[1::2])) <= 1


def compare(pair: Pair, args: list[bytes], done: list, conn: str = "main") -> None:
    got = _norm(args, _call(getattr(pair.atlas, conn), args))
    want = _norm(args, _call(getattr(pair.redis, conn), args))
    got, want = _sorted_if_keys(args, got, want)
    assert same(args, got, want), f"{args!r} ({conn}): atlasd {got!r}, redis {want!r}; after {done!r}"


def run_tx(pair: Pair, tx: Tx, done: list) -> None:
    if tx.watch is not None:
        compare(pair, [b"WATCH", *tx.watch], done)
    for args in tx.others_before:
        compare(pair, args, done, "other")
    compare(pair, [b"MULTI"], done)
    queued: list[list[bytes]] = []
    for args in tx.body:
        got, want = pair.atlas.run(args), pair.redis.run(args)
        assert got == want, f"queueing {args!r}: atlasd {got!r}, redis {want!r}; after {done!r}"
        if want == b"QUEUED":
            queued.append(args)
    for args in tx.others_after:
        compare(pair, args, done, "other")
    got, want = pair.atlas.run([tx.end]), pair.redis.run([tx.end])
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want) == len(queued):
        for args, g, w in zip(queued, got, want, strict=True):
            g, w = _sorted_if_keys(args, _norm(args, g), _norm(args, w))
            assert same(args, g, w), f"{tx.end!r} reply to {args!r}: atlasd {g!r}, redis {w!r}; {tx!r} after {done!r}"
    else:
        assert got == want, f"{tx.end!r}: atlasd {got!r}, redis {want!r}; {tx!r} after {done!r}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_atlasd_replies_like_redis(pair: Pair, program: list) -> None:
    pair.reset()
    done: list = []
    for item in program:
        done.append(item)
        if isinstance(item, Tx):
            run_tx(pair, item, done)
        elif isinstance(item, tuple) and item[0] == "OTHER":
            compare(pair, item[1], done, "other")
        elif isinstance(item, tuple):  # a full SCAN iteration
            got = scan_all_keys(pair.atlas.run, *item[1:])
            want = scan_all_keys(pair.redis.run, *item[1:])
            assert got == want, f"SCAN {item[1:]} differs after {done}"
        elif _upper(item)[0] == b"ZRANGE" and b"BYLEX" in _upper(item) and not _scores_all_equal(pair, item[1]):
            pair.atlas.run(item)  # intended difference 4: run, do not compare
            pair.redis.run(item)
        else:
            compare(pair, item, done)


# -- hand-picked transactions --------------------------------------------------------------------

CORNERS: dict[str, list[Any]] = {
    "watch then a write by another client": [
        [b"SET", b"k1", b"1"], Tx([b"k1"], [[b"SET", b"k1", b"2"]], [[b"INCR", b"k1"]], [], b"EXEC"), [b"GET", b"k1"],
    ],
    "watch then our own write": [
        [b"WATCH", b"k1"], [b"SET", b"k1", b"x"], [b"MULTI"], [b"GET", b"k1"], [b"EXEC"],
    ],
    "watch a missing key, another client deletes it": [
        Tx([b"k2"], [[b"DEL", b"k2"]], [[b"SET", b"k2", b"v"]], [], b"EXEC"), [b"GET", b"k2"],
    ],
    "flushall by another client": [
        [b"SET", b"k1", b"1"], Tx([b"k1", b"k3"], [[b"FLUSHALL"]], [[b"GET", b"k1"]], [], b"EXEC"),
    ],
    "flushall leaves a watched key that was not there unchanged": [
        [b"SET", b"k1", b"1"], Tx([b"k3"], [], [[b"GET", b"k1"]], [[b"FLUSHALL"]], b"EXEC"),
        [b"SET", b"k3", b"1"], [b"DEL", b"k3"], Tx([b"k3"], [[b"FLUSHALL"]], [[b"SET", b"k3", b"2"]], [], b"EXEC"),
        Tx([b"k1"], [[b"SET", b"k1", b"x"], [b"DEL", b"k1"], [b"FLUSHALL"]], [[b"GET", b"k1"]], [], b"EXEC"),
    ],
    "queue-time and run-time errors": [
        [b"ZADD", b"z1", b"1", b"a"],
        Tx(None, [], [[b"INCR", b"z1"], [b"SET", b"k1", b"v"], [b"ZSCORE", b"z1", b"a"]], [], b"EXEC"),
        Tx(None, [], [[b"SET", b"k1", b"w"], [b"NOSUCH", b"x", b"y"], [b"GET", b"k1"]], [], b"EXEC"),
        Tx(None, [], [[b"SET", b"k1", b"w"], [b"GET"]], [], b"EXEC"), [b"GET", b"k1"],
    ],
    "nesting and misuse": [
        [b"EXEC"], [b"DISCARD"], [b"MULTI"], [b"MULTI"], [b"WATCH", b"k1"], [b"DISCARD"], [b"UNWATCH"],
        [b"MULTI"], [b"EXEC"],
    ],
}


@pytest.mark.parametrize("program", list(CORNERS.values()), ids=list(CORNERS))
def test_transaction_corners_like_redis(pair: Pair, program: list[Any]) -> None:
    pair.reset()
    done: list = []
    for item in program:
        done.append(item)
        if isinstance(item, Tx):
            run_tx(pair, item, done)
        else:
            compare(pair, item, done)


def _state(r: redis.Redis) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for k in r.keys():
        kind = r.type(k)
        data = r.get(k) if kind == b"string" else r.zrange(k, 0, -1, withscores=True)
        out[k] = (kind, data, r.pexpiretime(k))
    return out


def test_aof_replays_to_what_was_served(atlasd: Daemon, pair: Pair) -> None:
    """Last in this module: whatever the generated traffic left, a restart from the AOF serves the same."""
    with atlasd.client() as r:
        _call(pair.atlas.main, [b"MSET", b"k1", b"1", b"k2", b"\xff"])
        _call(pair.atlas.main, [b"ZADD", b"z1", b"1", b"a", b"2", b"b"])
        _call(pair.atlas.main, [b"EXPIRE", b"k1", b"1000"])
        before = _state(r)
    assert atlasd.stop() == 0
    again = Daemon(atlasd.data, "--appendfsync", "everysec").start()
    try:
        with again.client() as r:
            assert _state(r) == before
    finally:
        again.kill()
