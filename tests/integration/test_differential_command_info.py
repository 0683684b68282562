"""COMMAND INFO, COMMAND GETKEYS and COMMAND GETKEYSANDFLAGS: a real atlasd against a real redis-server (7.0).

Every command atlasd has (and Redis 7.0 has too) gets the same COMMAND INFO entry, byte for byte in RESP2
and RESP3 (flags, ACL categories, tips and key specs are RESP3 sets, in Redis's order) except its
subcommands (element 9: atlasd lists none for its containers).  Key finding is compared on command lines
that walk each key spec kind (index/keyword, range/keynum), the commands whose flags depend on their
arguments (SET ... GET, BITFIELD) and the lines where a spec does not fit (a numkeys out of range).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.test_atlasd_support import running_daemon
from tests.integration.test_differential_types import Pair, close_pair, make_pair
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(exe).start()
    try:
        with running_daemon(tmp_path_factory.mktemp("command-info")) as d:
            p = make_pair(d, server)
            try:
                yield p
            finally:
                close_pair(p)
    finally:
        server.stop()


def _w(line: str) -> list[bytes]:
    return [w.encode() for w in line.split()]


# Commands atlasd takes in a later Redis's form: ZRANK/ZREVRANK ... WITHSCORE (7.2) make their arity -3.
LATER = {b"zrank", b"zrevrank"}


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_info_of_every_command_matches_redis(pair: Pair, resp3: bool) -> None:
    _, names = pair.atlas.r2.call(_w("COMMAND LIST"))
    args = [b"COMMAND", b"INFO", *(v for _, v in names)]
    (_, got), (_, want) = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
    compared, differ = 0, []
    for (_, name), g, w in zip(names, got, want, strict=True):
        if w[0] != "*" or name in LATER:  # a command Redis 7.0 lacks answers nil there
            continue
        compared += 1
        if g[1][:9] != w[1][:9]:
            differ.append((name, g[1][:9], w[1][:9]))
    assert not differ, f"{len(differ)} of {compared} differ: " + "\n".join(map(repr, differ))
    assert compared > 150


GETKEYS = [
    "get a", "set a 1", "set a 1 GET", "set a 1 EX 10 get", "mset a 1 b 2", "del a b c", "mget a b",
    "lmove a b LEFT RIGHT", "blmove a b LEFT RIGHT 0", "bitop AND d a b", "rename a b", "copy a b",
    "bitfield k GET u8 0", "bitfield k GET u8 0 OVERFLOW WRAP GET i4 1", "bitfield k SET u8 0 1",
    "bitfield k INCRBY u8 0 1", "bitfield k GET u8", "bitfield k", "bitfield_ro k GET u8 0",
    "eval x 2 a b c", "eval x 0", "eval x 5 a", "eval x -1 a", "eval x foo a", "evalsha x 1 a",
    "fcall f 1 a", "fcall_ro f 0",
    "zunionstore d 2 a b WEIGHTS 1 2", "zunionstore d 0 a", "zunionstore d 5 a", "zinterstore d 1 a",
    "zdiffstore d 2 a b", "zunion 2 a b", "zinter 3 a b", "zintercard 1 a LIMIT 1", "sintercard 2 a b",
    "lmpop 2 a b LEFT", "lmpop 0 a LEFT", "zmpop 1 a MIN", "blmpop 0 2 a b LEFT", "bzmpop 0 1 a MAX",
    "blpop a b 0", "brpop a 0", "brpoplpush a b 0", "sdiffstore d a b", "smove a b m",
    "xread STREAMS a 0", "xread COUNT 1 BLOCK 0 STREAMS a b 0 0", "xread STREAMS a", "xread streams",
    "xreadgroup GROUP g c STREAMS a b 0 0", "xreadgroup GROUP g c NOACK STREAMS a >",
    "zrangestore d a 0 -1", "hset h f v", "sadd s m", "lpush l v", "expire a 10", "object encoding a",
    "ping x", "foo x", "get a b", "get",
    "config get x", "xgroup create s g $", "object encoding", "object encoding a b", "xinfo stream s",
    "memory usage k", "object foo a", "object", "object help", "script flush", "function load x",
]


@pytest.mark.parametrize("sub", ["GETKEYS", "GETKEYSANDFLAGS"])
@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_getkeys_and_flags_match_redis(pair: Pair, sub: str, resp3: bool) -> None:
    differ = []
    for line in GETKEYS:
        args = [b"COMMAND", sub.encode(), *_w(line)]
        got, want = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
        if got != want:
            differ.append((line, got, want))
    assert not differ, differ
