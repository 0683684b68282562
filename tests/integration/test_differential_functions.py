"""Functions (FUNCTION, FCALL, FCALL_RO) and blocking commands in scripts: a real atlasd against a
real redis-server, byte for byte, RESP2 and RESP3.

The same raw-socket client and typed reply trees as test_differential_types.py.
Redis lists libraries, and a library's functions, in hash-table order: those
two levels of FUNCTION LIST are compared as multisets; everything else, error
texts included, must be equal, FUNCTION DUMP payloads too (and each server
restores the other's).  Then durability: a kill -9 after an
acknowledged FUNCTION LOAD (appendfsync always) finds the library after
restart, from the AOF (an FLOAD record holding the code, never an FCALL) and
from a snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Raw, Side, Tree, close_pair, make_pair, norm
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = [b"k", b"x", b"l", b"m", b"z", b"new"]

MYLIB = (b"#!lua name=mylib\n"
         b"redis.register_function('f1', function(keys, args) return redis.call('set', keys[1], args[1]) end)\n"
         b"redis.register_function{function_name='f2', callback=function(keys, args) "
         b"return redis.call('get', keys[1]) end, flags={'no-writes'}, description='reads'}")

# Runtime behaviour: one library, each function called on its own (name, keys, args).
RTLIB = b"""#!lua name=rt
redis.register_function{function_name='w_in_ro', callback=function(keys, args) return redis.call('set', 'x', 'y') end,
                        flags={'no-writes'}}
redis.register_function('e1', function(keys, args) return redis.call('nosuch') end)
redis.register_function('e2', function(keys, args) error('boom') end)
redis.register_function('e3', function(keys, args) return KEYS end)
redis.register_function('e4', function(keys, args) return {#keys, #args, keys[1], args[1]} end)
redis.register_function('e5', function(keys, args) return redis.call('blmpop', 0, 1, 'l', 'left') end)
redis.register_function('e6', function(keys, args) return redis.call('fcall', 'e4', 0) end)
redis.register_function('e7', function(keys, args) return redis.register_function('zz', function() end) end)
redis.register_function{function_name='e8', callback=function() return 1 end,
                        flags={'allow-oom', 'allow-stale', 'no-cluster', 'allow-cross-slot-keys', 'no-writes'}}
redis.register_function('e9', function(keys, args) x = 5 end)
redis.register_function('e10', function(keys, args) return redis.pcall('set', 'x', 'y', 'z') end)
redis.register_function('e11', function(keys, args) error({err = 'MY error'}) end)
redis.register_function('e13', function(keys, args) return redis.call('function', 'list') end)
redis.register_function('e14', function(keys, args) return redis.call('eval', 'return 1', 0) end)
redis.register_function('e15', function(keys, args) return string.format('%d', 3) .. cjson.encode({1}) end)
redis.register_function('e16', function(keys, args)
  redis.call('set', 'new', '1'); redis.call('incr', 'new'); return redis.call('get', 'new') end)
redis.register_function('e17', function(keys, args) redis.call('set', 'new', 'kept'); error('after a write') end)
redis.register_function('e18', function(keys, args) return redis.call('blpop', 'l', 0) end)
redis.register_function('e19', function(keys, args) return redis.call('fcall_ro', 'e8', 0) end)
redis.register_function('e20', function(keys, args) return {1, 'two', {3}, redis.status_reply('ok'), false} end)
redis.register_function('e21', function(keys, args) return redis.call('config', 'get') end)
redis.register_function('e22', function(keys, args) return redis.call('config', 'nosuch') end)
redis.register_function('e23', function(keys, args) return redis.pcall('config', 'get') end)
redis.register_function('e24', function(keys, args) return redis.pcall('config', 'nosuch') end)
redis.register_function('e25', function(keys, args) return redis.sha1hex() end)
redis.register_function('e26', function(keys, args) return redis.setresp(5) end)
redis.register_function('e27', function(keys, args) local ok, e = pcall(redis.setresp); return e end)
"""
CALLS: list[tuple[bytes, list[bytes], list[bytes]]] = [
    (b"w_in_ro", [], []), (b"e1", [], []), (b"e2", [], []), (b"e3", [], []),
    (b"e4", [b"a", b"b"], [b"c", b"d"]), (b"e4", [], []), (b"e5", [], []), (b"e6", [], []), (b"e7", [], []),
    (b"e8", [], []), (b"e9", [], []), (b"e10", [], []), (b"e11", [], []), (b"e13", [], []), (b"e14", [], []),
    (b"e15", [], []), (b"e16", [], []), (b"e17", [], []), (b"e18", [], []), (b"e19", [], []), (b"e20", [], []),
    (b"e21", [], []), (b"e22", [], []), (b"e23", [], []), (b"e24", [], []), (b"e25", [], []), (b"e26", [], []),
    (b"e27", [], []),
]


def _load(code: bytes, *opts: bytes) -> list[bytes]:
    return [b"FUNCTION", b"LOAD", *opts, code]


def _lib(name: str, body: str) -> bytes:
    return f"#!lua name={name}\n{body}".encode()


_ONE = "redis.register_function('{}', function(keys, args) return 1 end)"

# FUNCTION and FCALL: argument checks, metadata, registration errors, the library table.
COMMANDS: list[list[bytes]] = [
    [b"FUNCTION", b"HELP"],
    [b"FUNCTION", b"HELP", b"x"],
    [b"FUNCTION"],
    [b"FUNCTION", b"NOPE"],
    [b"FUNCTION", b"LOAD"],
    [b"FUNCTION", b"STATS"],
    [b"FUNCTION", b"STATS", b"x"],
    [b"FUNCTION", b"KILL"],
    [b"FUNCTION", b"KILL", b"x"],
    [b"FUNCTION", b"LIST"],
    _load(MYLIB),
    _load(MYLIB),
    _load(MYLIB, b"REPLACE"),
    _load(MYLIB, b"replace", b"REPLACE"),
    _load(MYLIB, b"BOGUS"),
    [b"FUNCTION", b"LOAD", b"a", b"b", b"c"],
    [b"FUNCTION", b"LOAD", b"REPLACE"],
    [b"FCALL", b"f1", b"1", b"k", b"v"],
    [b"FCALL", b"f2", b"1", b"k"],
    [b"FCALL_RO", b"f2", b"1", b"k"],
    [b"FCALL_RO", b"f1", b"1", b"k", b"v"],
    [b"FCALL", b"nosuch", b"0"],
    [b"FCALL", b"nosuch", b"x"],
    [b"FCALL", b"f1", b"x"],
    [b"FCALL", b"f1", b" 1", b"k", b"v"],
    [b"FCALL", b"f1", b"2", b"k"],
    [b"FCALL", b"f1", b"-1"],
    [b"FCALL", b"f1"],
    [b"FCALL_RO", b"f2"],
    [b"FCALL", b"F1", b"1", b"k", b"v"],
    [b"FUNCTION", b"STATS"],
    [b"FUNCTION", b"LIST"],
    [b"FUNCTION", b"LIST", b"WITHCODE"],
    [b"FUNCTION", b"LIST", b"withcode", b"LIBRARYNAME", b"my*"],
    [b"FUNCTION", b"LIST", b"LIBRARYNAME", b"nomatch"],
    [b"FUNCTION", b"LIST", b"LIBRARYNAME"],
    [b"FUNCTION", b"LIST", b"bogus"],
    [b"FUNCTION", b"LIST", b"WITHCODE", b"WITHCODE"],
    [b"FUNCTION", b"LIST", b"LIBRARYNAME", b"a", b"LIBRARYNAME", b"b"],
    _load(b"redis.register_function('f1', function() return 1 end)"),
    _load(b"#!lua name=mylib"),
    _load(_lib("other", _ONE.format("f1"))),
    _load(_lib("other", "return 1")),
    _load(_lib("other", "redis.call('set', 'x', 'y')")),
    _load(_lib("other", "x = 1")),
    _load(_lib("other", "redis.x = 1")),
    _load(_lib("other", "local y = string.format('%d', 1)")),
    _load(_lib("other", "error('boom')")),
    _load(_lib("other", "local p = pcall")),
    _load(_lib("other", "syntax error")),
    _load(b"#!lua name=oth er\n" + _ONE.format("g").encode()),
    _load(b"#!lua name=o-k\n" + _ONE.format("g").encode()),
    _load(b"#!lua name=o2 foo=bar\n" + _ONE.format("g").encode()),
    _load(b"#!lua name=a name=b\n" + _ONE.format("g").encode()),
    _load(b"#!js name=o2\n" + _ONE.format("g").encode()),
    _load(b"#!lua\n" + _ONE.format("g").encode()),
    _load(_lib("o3", "redis.register_function('a', function() end, 1)")),
    _load(_lib("o3", "redis.register_function('a', 1)")),
    _load(_lib("o3", "redis.register_function({}, function() end)")),
    _load(_lib("o3", "redis.register_function('', function() end)")),
    _load(_lib("o3", "redis.register_function('a-b', function() end)")),
    _load(_lib("o3", "redis.register_function{function_name='a'}")),
    _load(_lib("o3", "redis.register_function{callback=function() end}")),
    _load(_lib("o3", "redis.register_function{function_name='a', callback=function() end, flags={'bogus'}}")),
    _load(_lib("o3", "redis.register_function{function_name='a', callback=function() end, flags='no-writes'}")),
    _load(_lib("o3", "redis.register_function{function_name='a', callback=function() end, flags={1}}")),
    _load(_lib("o3", "redis.register_function{function_name='a', callback=function() end, bogus=1}")),
    _load(_lib("o3", "redis.register_function{function_name={}, callback=function() end}")),
    _load(_lib("o3", "redis.register_function{function_name='a', callback=function() end, description={}}")),
    _load(_lib("o3", "redis.register_function{function_name='a', callback=1}")),
    _load(_lib("o3", "redis.register_function{[1]=2}")),
    _load(_lib("o3", "redis.register_function(function() end)")),
    _load(_lib("o3", "redis.register_function{}")),
    _load(_lib("o3", "redis.register_function()")),
    _load(_lib("o3", "redis.register_function('a', function() end) redis.register_function('a', function() end)")),
    _load(_lib("num", "redis.register_function(12, function() return 12 end)")),
    [b"FCALL", b"12", b"0"],
    _load(_lib("logs", "redis.log(redis.LOG_WARNING, 'loading') redis.register_function('lg', function() "
                       "return redis.REDIS_VERSION_NUM > 0 end) return redis.REDIS_VERSION")),
    [b"FCALL", b"lg", b"0"],
    _load(_lib("desc", "redis.register_function{function_name='d1', callback=function() return 1 end, "
                       "description=7, flags={}}")),
    [b"FUNCTION", b"LIST", b"LIBRARYNAME", b"desc"],
    [b"FUNCTION", b"DELETE", b"nosuch"],
    [b"FUNCTION", b"DELETE"],
    [b"FUNCTION", b"DELETE", b"a", b"b"],
    [b"FUNCTION", b"DELETE", b"num"],
    [b"FCALL", b"12", b"0"],
    [b"FUNCTION", b"STATS"],
    [b"FUNCTION", b"FLUSH", b"bogus"],
    [b"FUNCTION", b"FLUSH", b"a", b"b"],
    [b"FUNCTION", b"FLUSH", b"sync"],
    [b"FUNCTION", b"LIST"],
    [b"FCALL", b"f1", b"0"],
    [b"FUNCTION", b"FLUSH", b"ASYNC"],
    [b"FUNCTION", b"FLUSH"],
    [b"FUNCTION", b"STATS"],
]


def _is_container(tree: Tree) -> bool:
    return tree[0] in ("*", "%")


def norm_list(tree: Tree) -> Tree:
    """FUNCTION LIST: the libraries, and each library's functions, as multisets."""
    kind, libs = tree
    if kind != "*":
        return norm(tree)
    out = []
    for lib in libs:
        lib = norm(lib)
        if lib[0] == "*":  # RESP2: [name, value, name, value, ...]
            items = list(lib[1])
            for i in range(0, len(items) - 1, 2):
                if items[i] == ("$", b"functions"):
                    items[i + 1] = ("*", sorted(items[i + 1][1], key=repr))
            lib = ("*", items)
        else:  # RESP3 map, its pairs sorted by norm
            lib = ("%", [(k, ("*", sorted(v[1], key=repr)) if k == ("$", b"functions") else v) for k, v in lib[1]])
        out.append(lib)
    return ("*", sorted(out, key=repr))


def compare(atlas: Side, redis_: Side, argv: list[bytes], resp3: bool) -> None:
    got, want = atlas.conn(resp3).call(argv), redis_.conn(resp3).call(argv)
    if argv[:2] == [b"FUNCTION", b"LIST"]:
        got, want = norm_list(got), norm_list(want)
    else:
        got, want = norm(got), norm(want)
    assert got == want, f"{argv!r} (resp{3 if resp3 else 2}): atlasd {got!r}, redis {want!r}"


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("functions")) as d:
        yield d


@pytest.fixture
def sides(atlasd: Daemon, redis_server: RedisServer) -> Iterator[tuple[Side, Side]]:  # noqa: F811
    p = make_pair(atlasd, redis_server)
    for side in (p.atlas, p.redis):
        side.r2.call([b"FLUSHALL"])
        side.r2.call([b"FUNCTION", b"FLUSH"])
    try:
        yield p.atlas, p.redis
    finally:
        for side in (p.atlas, p.redis):
            side.r2.call([b"FUNCTION", b"FLUSH"])
        close_pair(p)


def keyspace(conn: Raw) -> list:
    out = []
    for k in KEYS:
        kind = conn.call([b"TYPE", k])
        dump = {"string": [b"GET", k], "list": [b"LRANGE", k, b"0", b"-1"],
                "zset": [b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]}.get(kind[1])
        out.append((k, kind, norm(conn.call(dump)) if dump else None))
    return out


def test_function_commands_reply_as_redis_does(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    for argv in COMMANDS:
        for resp3 in (False, True):
            compare(atlas, redis_, argv, resp3)
        assert keyspace(atlas.r2) == keyspace(redis_.r2), argv


def test_functions_run_as_redis_runs_them(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    for side in (atlas, redis_):
        assert side.r2.call(_load(RTLIB)) == ("$", b"rt")
    for resp3 in (False, True):
        for side in (atlas, redis_):
            side.r2.call([b"FLUSHALL"])
        for name, keys, args in CALLS:
            for cmd in (b"FCALL", b"FCALL_RO"):
                argv = [cmd, name, str(len(keys)).encode(), *keys, *args]
                compare(atlas, redis_, argv, resp3)
                assert keyspace(atlas.r2) == keyspace(redis_.r2), argv
    for argv in ([b"FUNCTION", b"LIST"], [b"FUNCTION", b"LIST", b"WITHCODE"], [b"FUNCTION", b"STATS"]):
        for resp3 in (False, True):
            compare(atlas, redis_, argv, resp3)


def test_functions_in_multi_and_a_function_write_breaks_a_watch(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    seq = [[b"MULTI"], _load(MYLIB), [b"FCALL", b"f1", b"1", b"k", b"in-multi"], [b"FCALL_RO", b"f2", b"1", b"k"],
           [b"FUNCTION", b"DELETE", b"mylib"], [b"FCALL", b"f2", b"1", b"k"], [b"EXEC"]]
    assert atlas.r2.call_many(seq) == redis_.r2.call_many(seq)
    assert keyspace(atlas.r2) == keyspace(redis_.r2)
    for side in (atlas, redis_):
        side.r2.call(_load(MYLIB))
        assert side.r2.call([b"WATCH", b"k"]) == ("+", "OK")
        side.r3.call([b"FCALL", b"f1", b"1", b"k", b"other"])  # another client
        got = side.r2.call_many([[b"MULTI"], [b"SET", b"k", b"mine"], [b"EXEC"]])
        assert got[2] == ("nil", None), got  # EXEC aborted
        # A library loaded while watching changes no key: EXEC goes on.
        assert side.r2.call([b"WATCH", b"mylib"]) == ("+", "OK")
        side.r3.call(_load(MYLIB, b"REPLACE"))
        got = side.r2.call_many([[b"MULTI"], [b"GET", b"k"], [b"EXEC"]])
        assert got[2] == ("*", [("$", b"other")]), got


# Blocking commands called by a script: Redis 7.0.15 flags BLPOP, BRPOP, BLMOVE, BRPOPLPUSH and
# BZPOPMIN/MAX `noscript` (refused), while BLMPOP and BZMPOP run as their non-blocking forms.
BLOCKING = [
    "return redis.call('blpop', 'l', 0)",
    "return redis.call('brpop', 'l', 1)",
    "return redis.call('blmove', 'l', 'm', 'left', 'right', 0)",
    "return redis.call('brpoplpush', 'l', 'm', 0)",
    "return redis.call('bzpopmin', 'z', 0)",
    "return redis.call('bzpopmax', 'z', 0)",
    "return redis.call('blmpop', 0, 1, 'l', 'left')",
    "return redis.call('blmpop', 0, 2, 'nol', 'l', 'right', 'count', 5)",
    "return redis.call('bzmpop', 0, 1, 'z', 'min')",
    "return redis.call('bzmpop', 0, 1, 'z', 'max', 'count', 2)",
    "return redis.pcall('blpop', 'l', 0)",
]


@pytest.mark.parametrize("resp3", [False, True])
def test_blocking_commands_from_a_script_as_redis(sides: tuple[Side, Side], resp3: bool) -> None:
    atlas, redis_ = sides
    for filled in (False, True):
        for script in BLOCKING:
            for side in (atlas, redis_):
                side.r2.call([b"FLUSHALL"])
                if filled:
                    side.r2.call([b"RPUSH", b"l", b"a", b"b", b"c"])
                    side.r2.call([b"ZADD", b"z", b"1", b"m1", b"2", b"m2"])
            compare(atlas, redis_, [b"EVAL", script.encode(), b"0"], resp3)
            assert keyspace(atlas.r2) == keyspace(redis_.r2), script


def test_command_info_and_getkeys_of_the_function_commands(sides: tuple[Side, Side]) -> None:
    """Name, arity, flags, key positions and ACL categories as Redis 7.0 reports them; FCALL's and
    FCALL_RO's key specs (numkeys); COMMAND GETKEYS."""
    atlas, redis_ = sides
    for name in (b"fcall", b"fcall_ro", b"function"):
        got, want = atlas.r2.call([b"COMMAND", b"INFO", name]), redis_.r2.call([b"COMMAND", b"INFO", name])
        g, w = got[1][0][1], want[1][0][1]
        assert g[:2] == w[:2] and g[3:7] == w[3:7], (name, g, w)
        assert sorted(f[1] for f in g[2][1]) == sorted(f[1] for f in w[2][1]), (name, g[2], w[2])
        if name != b"function":
            assert g[8] == w[8], (name, g[8], w[8])
    for argv in ([b"FCALL", b"f", b"2", b"a", b"b", b"c"], [b"FCALL_RO", b"f", b"1", b"a", b"b"],
                 [b"FCALL", b"f", b"0", b"a"], [b"FCALL", b"f", b"3", b"a"], [b"FCALL", b"f", b"x", b"a"],
                 [b"FCALL", b"f"]):
        for resp3 in (False, True):
            compare(atlas, redis_, [b"COMMAND", b"GETKEYS", *argv], resp3)


# -- durability ----------------------------------------------------------------------------------

def _aof_records(data: Path) -> list[dict]:
    aof = b"".join(p.read_bytes() for p in sorted(data.rglob("*.aof*")) if p.is_file())
    return [json.loads(line) for line in aof.splitlines() if line.startswith(b"{")]


def _library_names(r: redis.Redis) -> list[bytes]:
    return sorted(lib[1] for lib in r.function_list())  # (RESP2: [b"library_name", name, ...])


def test_an_acknowledged_function_load_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert r.function_load(MYLIB.decode()) == b"mylib"
            assert r.function_load(_lib("gone", _ONE.format("g")).decode()) == b"gone"
            assert r.function_delete("gone")
            assert r.fcall("f1", 1, "k", "v") == b"OK"
    finally:
        d.kill()
    records = _aof_records(data)
    assert [rec["cmd"] for rec in records] == ["FLOAD", "FLOAD", "FDEL", "SET"]  # no FCALL: its effects
    assert records[0]["name"] == "mylib" and records[0]["code"] == MYLIB.decode()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert _library_names(r) == [b"mylib"]
            assert r.fcall_ro("f2", 1, "k") == b"v"
            assert r.fcall("f1", 1, "k", "w") == b"OK"
            with pytest.raises(redis.ResponseError, match="Function not found"):
                r.fcall("g", 0)
    finally:
        d.kill()


def test_libraries_live_in_snapshots_and_flush_is_durable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            r.function_load(MYLIB.decode())
            r.function_load(_lib("second", _ONE.format("s")).decode())
            assert r.save()
            r.function_delete("second")
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            # The snapshot held both libraries; the AOF after it deleted one.
            assert _library_names(r) == [b"mylib"]
            assert r.fcall("f1", 1, "k", "snap") == b"OK"
            assert r.function_flush()
            assert r.flushall()
            r.set("after", "1")
            assert r.save()
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert r.function_list() == [] and r.get("after") == b"1"
    finally:
        d.kill()


def test_function_dump_and_restore_move_libraries_both_ways(sides: tuple[Side, Side]) -> None:
    """FUNCTION DUMP payloads are Redis's own: one library's dump is byte for byte Redis's, and a
    payload from either server restores on the other, with RESTORE's policies and errors."""
    atlas, redis_ = sides
    two = _lib("two", _ONE.format("t2"))
    for side in (atlas, redis_):
        side.r2.call(_load(MYLIB))
    one_a, one_r = atlas.r2.call([b"FUNCTION", b"DUMP"]), redis_.r2.call([b"FUNCTION", b"DUMP"])
    assert one_a == one_r and one_a[0] == "$"
    for side in (atlas, redis_):
        side.r2.call(_load(two))
    dumps = {"atlas": atlas.r2.call([b"FUNCTION", b"DUMP"])[1], "redis": redis_.r2.call([b"FUNCTION", b"DUMP"])[1]}
    key_dump = redis_.r2.call_many([[b"SET", b"k", b"v"], [b"DUMP", b"k"]])[1][1]
    redis_.r2.call([b"DEL", b"k"])
    for origin, payload in dumps.items():
        steps: list[list[bytes]] = [
            # (which of two taken names an error names is hash order: one is taken here)
            [b"FUNCTION", b"DELETE", b"two"],
            [b"FUNCTION", b"RESTORE", payload],  # APPEND: mylib is there
            [b"FUNCTION", b"RESTORE", payload, b"bogus"],
            [b"FUNCTION", b"RESTORE", payload, b"append", b"x"],
            [b"FUNCTION", b"RESTORE", payload[:-1] + bytes([payload[-1] ^ 1])],
            [b"FUNCTION", b"RESTORE", b"short"],
            [b"FUNCTION", b"RESTORE", key_dump],
            [b"FUNCTION", b"RESTORE", payload, b"REPLACE"],
            [b"FUNCTION", b"LIST"],
            [b"FUNCTION", b"DELETE", b"two"],
            _load(_lib("clash", _ONE.format("t2"))),
            [b"FUNCTION", b"RESTORE", payload, b"replace"],  # t2 is taken by another library
            [b"FUNCTION", b"RESTORE", payload, b"FLUSH"],
            [b"FUNCTION", b"LIST", b"WITHCODE"],
            [b"FCALL", b"t2", b"0"],
            [b"FUNCTION", b"FLUSH"],
            [b"FUNCTION", b"RESTORE", one_r[1]],
            [b"FUNCTION", b"LIST"],
            [b"FUNCTION", b"FLUSH"],
            [b"FUNCTION", b"DUMP"],
        ]
        for argv in steps:
            for resp3 in (False, True):
                try:
                    compare(atlas, redis_, argv, resp3)
                except AssertionError as e:
                    raise AssertionError(f"payload from {origin}: {e}") from None
        empty_a, empty_r = atlas.r2.call([b"FUNCTION", b"DUMP"]), redis_.r2.call([b"FUNCTION", b"DUMP"])
        assert empty_a == empty_r
        for side in (atlas, redis_):
            assert side.r2.call([b"FUNCTION", b"RESTORE", empty_r[1], b"FLUSH"]) == ("+", "OK")
            side.r2.call(_load(MYLIB))
            side.r2.call(_load(two))


def test_info_counts_functions_and_libraries(sides: tuple[Side, Side]) -> None:
    def counts(side: Side) -> dict[str, str]:
        text = side.r2.call([b"INFO", b"memory"])[1].decode()
        return {k: v for k, _, v in (line.partition(":") for line in text.split("\r\n"))
                if k in ("number_of_functions", "number_of_libraries")}

    atlas, redis_ = sides
    assert counts(atlas) == counts(redis_) == {"number_of_functions": "0", "number_of_libraries": "0"}
    for side in (atlas, redis_):
        side.r2.call(_load(MYLIB))
        side.r2.call(_load(RTLIB))
    assert counts(atlas) == counts(redis_) == {"number_of_functions": str(2 + len({c[0] for c in CALLS})),
                                               "number_of_libraries": "2"}


@pytest.mark.parametrize("shebang", [b'#!lua name="qx"', b'#!lua "name=x', b'#!lua name="a b"', b"#!  ",
                                     b"#!lua name=qz\t", b"#!LUA name=up", b"#!lua NAME=cased"])
def test_library_metadata_is_split_as_redis_splits_it(sides: tuple[Side, Side], shebang: bytes) -> None:
    atlas, redis_ = sides
    for resp3 in (False, True):
        compare(atlas, redis_, _load(shebang + b"\n" + _ONE.format("q1").encode(), b"REPLACE"), resp3)
    compare(atlas, redis_, [b"FUNCTION", b"LIST"], False)
