"""INFO keyspace_hits and keyspace_misses count what Redis 7.0.15 counts, command by command.

Redis counts the lookups its commands make with lookupKeyRead (every lookup of a read command; a
write's sources in SORT, COPY, the STORE forms, GETSET/GETDEL/GETEX, SET ... GET, BITOP, PFMERGE,
GEORADIUS, XREADGROUP/XACK/XCLAIM/XAUTOCLAIM, OBJECT, XINFO) and not those made with lookupKeyWrite
(a write's own key, a destination) nor KEYS, SCAN, RANDOMKEY and MEMORY USAGE, which walk the
dictionary without looking keys up.  A random program over three keys runs every command form below
against a real atlasd and a real redis-server, and after each command the two counters must have
moved by the same amounts on both.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = ["k1", "k2", "k3"]
K = "<key>"


# Every command form, K standing for one of the three keys
FORMS: list[tuple[str, ...]] = [
    ("GET", K), ("SET", K, "v"), ("SET", K, "v", "GET"), ("MGET", K, K), ("EXISTS", K, K), ("TYPE", K), ("TTL", K),
    ("PTTL", K), ("STRLEN", K), ("GETRANGE", K, "0", "1"), ("GETDEL", K), ("GETEX", K), ("APPEND", K, "x"),
    ("INCR", K), ("DEL", K), ("UNLINK", K), ("HSET", K, "f", "1"), ("HGET", K, "f"), ("HGETALL", K),
    ("HEXISTS", K, "f"), ("HLEN", K), ("HMGET", K, "f", "g"), ("HINCRBY", K, "f", "1"), ("HDEL", K, "f"),
    ("LPUSH", K, "a"), ("RPUSH", K, "b"), ("LRANGE", K, "0", "-1"), ("LLEN", K), ("LINDEX", K, "0"), ("LPOP", K),
    ("RPOPLPUSH", K, K), ("LMOVE", K, K, "LEFT", "RIGHT"), ("SADD", K, "m"), ("SMEMBERS", K), ("SISMEMBER", K, "m"),
    ("SCARD", K), ("SINTER", K, K), ("SUNIONSTORE", K, K, K), ("SMOVE", K, K, "m"), ("SPOP", K), ("SRANDMEMBER", K),
    ("ZADD", K, "1", "a"), ("ZRANGE", K, "0", "-1"), ("ZSCORE", K, "a"), ("ZCARD", K), ("ZRANK", K, "a"),
    ("ZUNIONSTORE", K, "2", K, K), ("ZUNION", "2", K, K), ("ZINCRBY", K, "1", "a"), ("ZPOPMIN", K),
    ("EXPIRE", K, "100"), ("PERSIST", K), ("RENAME", K, K), ("COPY", K, K, "REPLACE"), ("DUMP", K),
    ("OBJECT", "ENCODING", K), ("TOUCH", K, K), ("SORT", K), ("SORT_RO", K), ("PFADD", K, "x"), ("PFCOUNT", K),
    ("PFCOUNT", K, K), ("PFMERGE", K, K), ("SETRANGE", K, "1", "x"), ("GETSET", K, "v"), ("MSET", K, "1", K, "2"),
    ("SETNX", K, "v"), ("BITCOUNT", K), ("GETBIT", K, "1"), ("SETBIT", K, "1", "1"), ("BITOP", "OR", K, K, K),
    ("XADD", K, "*", "f", "v"), ("XLEN", K), ("XRANGE", K, "-", "+"), ("GEOADD", K, "1", "1", "p"),
    ("GEOPOS", K, "p"), ("GEODIST", K, "p", "q"), ("MEMORY", "USAGE", K), ("LPOS", K, "a"), ("HRANDFIELD", K),
    ("ZRANDMEMBER", K), ("SINTERCARD", "2", K, K), ("LMPOP", "2", K, K, "LEFT"), ("ZMPOP", "2", K, K, "MIN"),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", K), ("HSTRLEN", K, "f"), ("INCRBYFLOAT", K, "1.5"),
    ("LSET", K, "0", "z"), ("LTRIM", K, "0", "1"), ("SDIFF", K, K), ("ZCOUNT", K, "0", "5"),
    ("XREAD", "STREAMS", K, "0"), ("RANDOMKEY",), ("DBSIZE",), ("KEYS", "*"), ("SCAN", "0"), ("EXPIRETIME", K),
    ("HKEYS", K), ("ZREVRANGE", K, "0", "-1"), ("ZRANGEBYSCORE", K, "0", "5"), ("ZRANGESTORE", K, K, "0", "-1"),
    ("SMISMEMBER", K, "m", "n"), ("ZMSCORE", K, "a"), ("LCS", K, K), ("RESTORE", K, "0", "x"),
    ("SORT", K, "BY", "nosort", "GET", "k*"), ("SORT", K, "BY", K, "GET", "#", "GET", K),
    ("SORT", K, "ALPHA", "STORE", K), ("SORT_RO", K, "BY", "w_*"), ("SSCAN", K, "0"), ("HSCAN", K, "0"),
    ("ZSCAN", K, "0"), ("GEOSEARCH", K, "FROMLONLAT", "0", "0", "BYRADIUS", "1", "km"), ("ZRANGEBYLEX", K, "-", "+"),
    ("ZLEXCOUNT", K, "-", "+"), ("XINFO", "STREAM", K), ("OBJECT", "FREQ", K), ("PEXPIRETIME", K),
    ("MSETNX", K, "1", K, "2"), ("SETEX", K, "10", "v"), ("INCRBY", K, "2"), ("HVALS", K), ("SUNION", K, K),
    ("ZINTER", "2", K, K), ("ZDIFF", "2", K, K), ("ZINTERCARD", "2", K, K), ("LINSERT", K, "BEFORE", "a", "x"),
    ("LREM", K, "0", "a"), ("BLPOP", K, "0.01"), ("BZPOPMIN", K, "0.01"), ("BLMOVE", K, K, "LEFT", "LEFT", "0.01"),
    ("XREADGROUP", "GROUP", "g", "c", "STREAMS", K, ">"), ("XGROUP", "CREATE", K, "g", "$", "MKSTREAM"),
    ("XPENDING", K, "g"), ("XACK", K, "g", "1-1"), ("XDEL", K, "1-1"), ("SETRANGE", K, "0", "ab"),
    ("HINCRBYFLOAT", K, "f", "1.5"), ("RPUSHX", K, "a"), ("ZREM", K, "a"), ("SREM", K, "m"),
    ("EXPIREAT", K, "99999999999"), ("RENAMENX", K, K), ("MOVE", K, "1"), ("GETRANGE", K, "0", "-1"), ("EVAL",),
    ("FCALL_RO", "nofn", "0"), ("GEORADIUSBYMEMBER", K, "p", "1", "km"), ("XCLAIM", K, "g", "c", "0", "1-1"),
    ("XAUTOCLAIM", K, "g", "c", "0", "0"), ("XINFO", "GROUPS", K), ("XSETID", K, "5-5"),
    ("XINFO", "CONSUMERS", K, "g"), ("GEOHASH", K, "p"), ("SRANDMEMBER", K, "-2"), ("HSETNX", K, "f", "v"),
    ("SUBSTR", K, "0", "1"), ("XTRIM", K, "MAXLEN", "1"),
]


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("keyspace_hits")) as d:
        yield d


def _counts(c: redis.Redis) -> tuple[int, int]:
    info = c.info("stats")
    return info["keyspace_hits"], info["keyspace_misses"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hits_and_misses_move_as_redis_counts_them(atlasd: Daemon, redis_server: RedisServer,  # noqa: F811
                                                    seed: int, tmp_path: Path) -> None:
    a = atlasd.client()
    r = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)
    rng = random.Random(seed)
    try:
        for step in range(700):
            if step % 40 == 0:
                a.flushall()
                r.flushall()
            cmd = [rng.choice(KEYS) if w == K else w for w in rng.choice(FORMS)]
            moved = []
            for c in (a, r):
                before = _counts(c)
                try:
                    c.execute_command(*cmd)
                except redis.ResponseError:
                    pass
                after = _counts(c)
                moved.append((after[0] - before[0], after[1] - before[1]))
            assert moved[0] == moved[1], f"{cmd}: atlasd moved (hits, misses) by {moved[0]}, redis by {moved[1]}"
    finally:
        a.close()
        r.close()


# A blocking command, the command that wakes it, and what to create first
BLOCKED: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]] = [
    (("XREAD", "BLOCK", "0", "STREAMS", "s", "$"), ("XADD", "s", "*", "f", "v"), None),
    (("XREAD", "BLOCK", "0", "STREAMS", "s", "t", "$", "$"), ("XADD", "t", "*", "f", "v"), None),
    (("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"), ("XADD", "s", "*", "f", "v"),
     ("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")),
    (("BLPOP", "l", "0"), ("RPUSH", "l", "x"), None),
    (("BLMOVE", "l", "d", "LEFT", "RIGHT", "0"), ("RPUSH", "l", "x"), None),
    (("BLMPOP", "0", "2", "l", "m", "LEFT"), ("RPUSH", "m", "x"), None),
    (("BZPOPMIN", "z", "0"), ("ZADD", "z", "1", "a"), None),
]


@pytest.mark.parametrize("blocked", BLOCKED, ids=[" ".join(b[0][:2]) for b in BLOCKED])
def test_a_blocked_command_served_after_a_wake_up_counts_its_lookups_once(
        atlasd: Daemon, redis_server: RedisServer, blocked: tuple) -> None:  # noqa: F811
    """Redis counts a blocking command's lookups when it blocks, and serves it later without counting
    (LOOKUP_NOSTATS); atlasd runs the command again after the wake-up, and must not count again."""
    cmd, wake, setup = blocked
    moved = []
    for make in (atlasd.client, lambda: redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)):
        waiter, other = make(), make()
        try:
            other.flushall()
            if setup is not None:
                other.execute_command(*setup)
            other.config_resetstat()
            reply: list = []
            t = threading.Thread(target=lambda: reply.append(waiter.execute_command(*cmd)))  # noqa: B023
            t.start()
            deadline = time.monotonic() + 10
            while other.info("clients")["blocked_clients"] < 1:
                assert time.monotonic() < deadline, f"{cmd} did not block"
                time.sleep(0.01)
            blocked_at = _counts(other)
            other.execute_command(*wake)
            t.join(10)
            assert reply, f"{cmd} was not served by {wake}"
            served_at = _counts(other)
            moved.append((blocked_at, (served_at[0] - blocked_at[0], served_at[1] - blocked_at[1])))
        finally:
            waiter.close()
            other.close()
    assert moved[0] == moved[1], f"{cmd}: atlasd (on blocking, on serving) {moved[0]}, redis {moved[1]}"


def test_resetstat_zeroes_them(atlasd: Daemon) -> None:
    with atlasd.client() as a:
        a.set("k", "v")
        a.get("k")
        a.get("nope")
        assert _counts(a)[0] >= 1 and _counts(a)[1] >= 1
        a.config_resetstat()
        assert _counts(a) == (0, 0)
