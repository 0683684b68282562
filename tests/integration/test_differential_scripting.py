"""Scripting: a real atlasd against a real redis-server, byte for byte, RESP2 and RESP3.

Every script below runs by EVAL on both servers (the same raw-socket client
and typed reply trees as test_differential_types.py) and the replies must be
equal, error texts included; the keys the scripts touch are compared after
each one.  Then EVALSHA/SCRIPT, and a kill -9 of atlasd after scripts that
wrote: the AOF holds their effects, never a script, and replay brings them
back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Raw, Side, close_pair, make_pair, norm
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = [b"s", b"n", b"h", b"z", b"set", b"l", b"new"]

# (script, keys, args): Redis 7.0's conversions, errors and sandbox, one behaviour each.
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("return 1", [], []),
    ("return 'hello'", [], []),
    ("return 3.99", [], []),
    ("return -2.7", [], []),
    ("return true", [], []),
    ("return false", [], []),
    ("return nil", [], []),
    ("return {1, 2, {3, 'x'}, nil, 4}", [], []),
    ("return {1, true, false, 3}", [], []),
    # redis.setresp(3): RESP3 replies as Lua values, RESP3 booleans back; typed tables either way.
    ("redis.setresp(3); return true", [], []),
    ("redis.setresp(3); return false", [], []),
    ("redis.setresp(3); return {1, true, false}", [], []),
    ("redis.setresp(2); return false", [], []),
    ("redis.setresp(4)", [], []),
    ("redis.setresp()", [], []),
    ("redis.setresp(3, 2)", [], []),
    ("redis.setresp('3'); return true", [], []),
    ("redis.setresp('x')", [], []),
    ("return {double = 3.5}", [], []),
    ("return {double = 3}", [], []),
    ("return {double = 'x'}", [], []),
    ("return {big_number = '12345678901234567890'}", [], []),
    ("return {big_number = 'a\\r\\nb'}", [], []),
    ("return {verbatim_string = {format = 'txt', string = 'hi'}}", [], []),
    ("return {verbatim_string = {format = 'markdown', string = 'hi'}}", [], []),
    ("return {verbatim_string = {format = 'tx', string = 'hi'}}", [], []),
    ("return {map = {a = 1}}", [], []),
    ("return {map = {a = {1, 2}}}", [], []),
    ("return {set = {a = true}}", [], []),
    ("return {ok = 'x', double = 1}", [], []),
    ("return {double = 2, map = {a = 1}}", [], []),
    ("redis.setresp(3); redis.call('hset', 'h', 'f', 'v'); return redis.call('hgetall', 'h')", [], []),
    ("redis.setresp(3); local r = redis.call('hgetall', 'h'); return type(r.map) .. r.map.f", [], []),
    ("redis.setresp(3); redis.call('sadd', 'set', 'm'); local r = redis.call('smembers', 'set'); "
     "return tostring(r.set.m)", [], []),
    ("redis.setresp(3); redis.call('zadd', 'z', 1.5, 'a'); local r = redis.call('zscore', 'z', 'a'); "
     "return r.double * 2", [], []),
    ("redis.setresp(3); return redis.call('zscore', 'z', 'a')", [], []),
    ("redis.setresp(3); return redis.call('zrange', 'z', 0, -1, 'withscores')", [], []),
    ("redis.setresp(3); return type(redis.call('get', 'nokey'))", [], []),
    ("redis.setresp(3); return redis.call('get', 'nokey')", [], []),
    ("redis.setresp(3); return redis.call('mget', 'nokey', 'h')", [], []),
    ("redis.setresp(3); return redis.call('set', 'x', '1')", [], []),
    ("redis.setresp(3); return redis.pcall('incr', 'h')", [], []),
    ("redis.setresp(3); return redis.call('exists', 'x')", [], []),
    ("redis.setresp(3); return redis.call('config', 'get', 'maxmemory')", [], []),
    ("return {a = 1}", [], []),
    ("return {ok = 'fine'}", [], []),
    ("return {ok = 1}", [], []),
    ("return {err = 'x y'}", [], []),
    ("return {err = 'noprefix'}", [], []),
    ("return {1, {err = 'E x'}, {ok = 's'}}", [], []),
    ("return redis.status_reply('FINE')", [], []),
    ("return redis.error_reply('MY err')", [], []),
    ("return redis.error_reply('lower case')", [], []),
    ("return redis.error_reply('UPPER')", [], []),
    ("return redis.error_reply('-X y')", [], []),
    ("return redis.error_reply()", [], []),
    ("return redis.status_reply()", [], []),
    ("return redis.sha1hex('')", [], []),
    ("return redis.sha1hex(1)", [], []),
    # sha1hex's and setresp's errors name the script's line (`return f()` is no tail call that drops it)
    ("return redis.sha1hex()", [], []),
    ("return redis.sha1hex(1, 2)", [], []),
    ("\n\nreturn redis.setresp(5)", [], []),
    ("return redis.setresp()", [], []),
    ("local ok, e = pcall(redis.sha1hex); return e", [], []),
    ("local ok, e = pcall(redis.setresp, 5); return e", [], []),
    # what is no string or number hashes as ''; setresp reads its argument as lua_tonumber, truncated
    ("return {redis.sha1hex(nil), redis.sha1hex({}), redis.sha1hex(true), redis.sha1hex(1e20), "
     "redis.sha1hex(1.5)}", [], []),
    ("redis.setresp(3.7); return true", [], []),
    ("redis.setresp('0x3'); return true", [], []),
    ("return redis.setresp(2.5)", [], []),
    ("redis.setresp(nil)", [], []),
    ("return KEYS[1] .. ARGV[1] .. #KEYS .. #ARGV", ["a"], ["b", "c"]),
    ("return redis.call('set', KEYS[1], ARGV[1])", ["s"], ["v"]),
    ("return redis.call('get', KEYS[1])", ["s"], []),
    ("return redis.call('get', 'nokey')", [], []),
    ("return type(redis.call('get', 'nokey'))", [], []),
    ("return redis.call('ping')", [], []),
    # XREAD/XREADGROUP are flagged "blocking" (as Redis): a script may call them, but not with BLOCK.
    ("redis.call('XADD', KEYS[1], '1-1', 'f', 'v'); return redis.call('XREAD', 'STREAMS', KEYS[1], '0')",
     ["xs"], []),
    ("return redis.call('XREAD', 'COUNT', '1', 'STREAMS', 'nostream', '0')", [], []),
    ("return redis.call('XREAD', 'BLOCK', '0', 'STREAMS', 'nostream', '0')", [], []),
    ("return redis.pcall('XREADGROUP', 'GROUP', 'g', 'c', 'BLOCK', '10', 'STREAMS', 'nostream', '>')", [], []),
    ("return redis.call('ping').ok", [], []),
    ("return redis.call('incr', 'n')", [], []),
    ("return redis.call('incrbyfloat', 'n', 1.5)", [], []),
    ("return redis.call('set', 'n', 3.5)", [], []),
    ("return redis.call('set', 'n', 12)", [], []),
    ("return redis.call('incr', 's')", [], []),
    ("return redis.pcall('incr', 's')", [], []),
    ("local r = redis.pcall('incr', 's'); return type(r) .. r.err", [], []),
    ("local ok, e = pcall(redis.call, 'incr', 's'); return {tostring(ok), e.err}", [], []),
    ("local r = redis.pcall('incr', 's'); error(r)", [], []),
    ("return redis.call('nosuch')", [], []),
    ("return redis.pcall('nosuch')", [], []),
    ("return redis.call('get')", [], []),
    ("return redis.pcall('get')", [], []),
    # a container's subcommand is looked up first: unknown, or its own arity, before noscript
    ("return redis.call('config', 'get')", [], []),
    ("return redis.pcall('config', 'get')", [], []),
    ("return redis.pcall('CONFIG', 'GeT')", [], []),
    ("return redis.call('config', 'nosuch')", [], []),
    ("return redis.pcall('config', 'nosuch')", [], []),
    ("return redis.pcall('config', '" + "g" * 40 + "')", [], []),
    ("return redis.pcall('config')", [], []),
    ("return redis.pcall('object', 'encoding')", [], []),
    ("return redis.pcall('xinfo', 'stream')", [], []),
    ("return redis.pcall('client', 'x')", [], []),
    ("return redis.pcall('client', 'setinfo', 'lib-name', 'x')", [], []),
    ("return redis.pcall('script', 'nosuch')", [], []),
    ("return redis.pcall('script', 'flush')", [], []),
    ("return redis.pcall('function', 'nosuch')", [], []),
    ("return redis.pcall('config', 'get', 'maxmemory', 'x')", [], []),
    ("local ok, e = pcall(redis.call, 'config', 'get'); return e", [], []),
    ("return cjson.encode(redis.pcall('config', 'nosuch'))", [], []),
    # a container's subcommand is judged by its own flags: CONFIG HELP runs, CONFIG GET does not
    ("return redis.pcall('config', 'help')[1]", [], []),
    ("return redis.pcall('module', 'help')[1]", [], []),
    ("return redis.pcall('client', 'help')[1]", [], []),
    ("return redis.pcall('latency', 'help')[1]", [], []),
    ("return redis.pcall('script', 'help')[1]", [], []),
    ("return redis.pcall('function', 'help')[1]", [], []),
    ("return redis.pcall('function', 'flush')", [], []),
    ("return redis.pcall('module', 'list')", [], []),
    ("return redis.call()", [], []),
    ("return redis.call('set', 'x', {})", [], []),
    ("return redis.call('multi')", [], []),
    ("return redis.call('eval', 'return 1', 0)", [], []),
    ("return redis.call('subscribe', 'c')", [], []),
    ("return redis.call('hset', 'h', 'f', 'v', 'g', 'w')", [], []),
    ("return redis.call('hgetall', 'h')", [], []),
    ("return redis.call('hgetall', 'nokey')", [], []),
    ("return redis.call('zadd', 'z', 1.5, 'a', 2, 'b')", [], []),
    ("return redis.call('zrange', 'z', 0, -1, 'withscores')", [], []),
    ("return redis.call('zscore', 'z', 'a')", [], []),
    ("return redis.call('sadd', 'set', 'm')", [], []),
    ("return redis.call('smembers', 'set')", [], []),
    ("return redis.call('exists', 'nokey', 's')", [], []),
    ("return redis.call('get', 'h')", [], []),
    ("redis.call('set', 'new', '1'); error('after a write')", [], []),
    ("error('boom')", [], []),
    ("error({err = 'abc'})", [], []),
    ("error({err = 'ABC def'})", [], []),
    ("error(12)", [], []),
    ("error()", [], []),
    ("error('x', 0)", [], []),
    ("x = 1", [], []),
    ("return os.time()", [], []),
    ("return io", [], []),
    ("return loadfile", [], []),
    ("return dofile", [], []),
    ("return require", [], []),
    ("string.format = nil", [], []),
    ("syntax error here", [], []),
    ("return string.format('%d', 3) .. ('x'):upper() .. table.concat({1, 2}, ',') .. math.floor(2.5)", [], []),
    ("local t = {}; t[1] = 1; t[3] = 3; return t", [], []),
    ("return 'a\\r\\nb'", [], []),
    ("return cjson.encode({1, 2, {a = {true, false}}, 'x/y\"z', 1e20, 1.5})", [], []),
    ("return cjson.encode({})", [], []),
    ("return cjson.encode({[1] = 1, [3] = 3})", [], []),
    ("return cjson.encode({[1] = 1, [20] = 3})", [], []),
    ("return cjson.encode(function() end)", [], []),
    ("local t = cjson.decode('{\"a\":[1,2,{\"b\":null}],\"c\":1.5,\"d\":12345678901234567}');"
     "return {type(t.a[3].b), tostring(t.a[3].b == cjson.null), tostring(t.c), tostring(t.d), #t.a}", [], []),
    ("return {bit.band(7, 3, 1), bit.bor(1, 2, 4), bit.tohex(255), bit.tohex(-1, -4), bit.lshift(1, 31),"
     "bit.rshift(-1, 28), bit.arshift(-256, 4), bit.bnot(0), bit.rol(0x12345678, 8), bit.bswap(0x12345678),"
     "bit.tobit(2^32 + 5)}", [], []),
    ("return bit.band('x')", [], []),
    ("return {err = 'a\\r\\nb'}", [], []),
]

# Commands around EVAL: argument checks, EVALSHA, the cache.
COMMANDS: list[list[bytes]] = [
    [b"EVAL", b"return 1", b"-1"],
    [b"EVAL", b"return 1", b"2", b"a"],
    [b"EVAL", b"return 1", b"x"],
    [b"EVAL", b"return 1"],
    [b"EVALSHA", b"ffffffffffffffffffffffffffffffffffffffff", b"0"],
    [b"EVALSHA", b"short", b"0"],
    [b"SCRIPT", b"LOAD", b"return 'loaded'"],
    [b"EVALSHA", b"8dbad59f0ec6d4c6f6b1ab1e5f7b3fe6e4a2e59a", b"0"],
    [b"SCRIPT", b"EXISTS", b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db", b"ff"],
    [b"SCRIPT", b"LOAD", b"syntax error"],
    [b"EVAL_RO", b"return redis.call('set', 'k', 'v')", b"0"],
    [b"EVAL_RO", b"return redis.call('xgroup', 'help')[1]", b"0"],
    [b"EVAL_RO", b"return redis.pcall('xgroup', 'destroy', 's', 'g')", b"0"],
    [b"EVAL_RO", b"return redis.call('get', KEYS[1])", b"1", b"s"],
    [b"SCRIPT", b"KILL"],
    [b"SCRIPT", b"FLUSH"],
    [b"SCRIPT", b"FLUSH", b"bogus"],
    [b"SCRIPT", b"EXISTS"],
    [b"SCRIPT", b"NOPE"],
    [b"EVAL", b"#!lua flags=no-writes\nreturn redis.call('set', 'k', 'v')", b"0"],
    [b"EVAL", b"#!lua\nreturn redis.call('set', 'k', 'v')", b"0"],
]


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("scripting")) as d:
        yield d


@pytest.fixture(scope="module")
def sides(atlasd: Daemon, redis_server: RedisServer) -> Iterator[tuple[Side, Side]]:  # noqa: F811
    p = make_pair(atlasd, redis_server)
    for side in (p.atlas, p.redis):
        side.r2.call([b"FLUSHALL"])
        side.r2.call([b"SCRIPT", b"FLUSH"])
    try:
        yield p.atlas, p.redis
    finally:
        close_pair(p)


def keyspace(conn: Raw) -> list:
    out = []
    for k in KEYS:
        kind = conn.call([b"TYPE", k])
        dump = {"string": [b"GET", k], "hash": [b"HGETALL", k], "zset": [b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"],
                "set": [b"SMEMBERS", k]}.get(kind[1])
        out.append((k, kind, norm(conn.call(dump)) if dump else None))
    return out


def _eval(script: str, keys: list[str], args: list[str]) -> list[bytes]:
    return [b"EVAL", script.encode(), str(len(keys)).encode(), *(x.encode() for x in keys),
            *(x.encode() for x in args)]


def test_scripts_reply_as_redis_does(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    for resp3 in (False, True):
        for side in (atlas, redis_):
            side.r2.call([b"FLUSHALL"])
        for script, keys, args in SCRIPTS:
            argv = _eval(script, keys, args)
            got = norm(atlas.conn(resp3).call(argv))
            want = norm(redis_.conn(resp3).call(argv))
            assert got == want, f"{script!r} (resp{3 if resp3 else 2}): atlasd {got!r}, redis {want!r}"
            assert keyspace(atlas.r2) == keyspace(redis_.r2), script


def test_eval_evalsha_and_script_commands(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    for side in (atlas, redis_):
        side.r2.call([b"FLUSHALL"])
        side.r2.call([b"SET", b"s", b"v"])
    for argv in COMMANDS:
        for resp3 in (False, True):
            got, want = atlas.conn(resp3).call(argv), redis_.conn(resp3).call(argv)
            if argv[:2] == [b"SCRIPT", b"NOPE"] or argv[:2] == [b"SCRIPT", b"FLUSH"] and len(argv) == 3:
                # Redis 7.0 words these two its own way per subcommand; the error kind must agree.
                assert got[0] == want[0] == "-", (argv, got, want)
                continue
            assert got == want, f"{argv!r}: atlasd {got!r}, redis {want!r}"
    sha = atlas.r2.call([b"SCRIPT", b"LOAD", b"return ARGV[1]"])
    assert sha == redis_.r2.call([b"SCRIPT", b"LOAD", b"return ARGV[1]"])
    upper = sha[1].upper()  # EVALSHA takes the SHA in either case
    assert atlas.r2.call([b"EVALSHA", upper, b"0", b"x"]) == redis_.r2.call([b"EVALSHA", upper, b"0", b"x"])


def test_script_in_multi_and_reveal(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    seq = [[b"MULTI"], [b"EVAL", b"redis.call('set', 'new', 'in-multi'); return redis.call('incr', 'n')", b"0"],
           [b"EVAL", b"redis.call('set', 'h', 'x'); error('fails')", b"0"], [b"GET", b"new"], [b"EXEC"]]
    for side in (atlas, redis_):
        side.r2.call([b"FLUSHALL"])
    got = atlas.r2.call_many(seq)
    want = redis_.r2.call_many(seq)
    assert got[:4] == want[:4]
    # In EXEC a failed script's writes stand in Redis; ATLAS matches for the error and the keys.
    assert got[4][0] == want[4][0] == "*" and [x[0] for x in got[4][1]] == [x[0] for x in want[4][1]]
    assert keyspace(atlas.r2) == keyspace(redis_.r2)


def test_runaway_script_is_killed_and_server_answers(atlasd: Daemon) -> None:
    """Past busy-reply-threshold others get BUSY and SCRIPT KILL ends a script that has not written
    (the busy state byte for byte against redis-server: test_differential_busy.py; a script that
    wrote, which only the hard cap or SHUTDOWN NOSAVE ends: test_busy_script.py)."""
    # No client-side timeout and no retry: on a crowded box the script may take a while to become
    # busy, and redis-py's default retry would send the EVAL again after a timeout (a second script,
    # which then gets BUSY behind the first).
    once = Retry(NoBackoff(), 0)
    with atlasd.client(socket_timeout=None, retry=once) as r, atlasd.client(socket_timeout=60, retry=once) as other:
        r.config_set("busy-reply-threshold", 100)
        errors: list[Exception] = []

        def runaway() -> None:
            try:
                r.eval("while true do end", 0)
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=runaway)
        t.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # poll until the script is busy
                try:
                    other.ping()
                except redis.ResponseError as e:
                    if str(e).startswith("BUSY"):
                        break
                time.sleep(0.01)
            else:
                raise AssertionError("the script never became busy")
            assert other.script_kill()
        finally:
            t.join(30)
        assert len(errors) == 1 and "Script killed by user with SCRIPT KILL" in str(errors[0])
        assert other.ping() and r.config_set("busy-reply-threshold", 5000)


def test_script_writes_survive_kill_9_as_effects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            sha = r.script_load("for i, k in ipairs(KEYS) do redis.call('set', k, ARGV[1] .. i) end "
                                "redis.call('zadd', 'z', 1, 'm'); return redis.call('incr', 'n')")
            assert r.evalsha(sha, 3, "a", "b", "c", "v") == 1
            with pytest.raises(redis.ResponseError, match="fails after a write"):
                r.eval("redis.call('hset', 'h', 'f', 'v'); error('fails after a write')", 0)
    finally:
        d.kill()
    aof = b"".join(p.read_bytes() for p in data.rglob("*.aof*") if p.is_file())
    assert b"EVAL" not in aof.upper() and b"redis.call" not in aof
    records = [json.loads(line) for line in aof.splitlines() if line.startswith(b"{")]
    assert any(rec.get("cmd") == "MULTI" for rec in records)  # one script, one record
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert [r.get(k) for k in ("a", "b", "c", "n")] == [b"v1", b"v2", b"v3", b"1"]
            assert r.zscore("z", "m") == 1.0 and r.hget("h", "f") == b"v"
    finally:
        d.kill()


def test_redis_py_lock_runs_unchanged_on_atlasd(atlasd: Daemon) -> None:
    """redis-py's Lock is Lua scripts (acquire by SET NX PX; release, extend, reacquire by EVALSHA)."""
    with atlasd.client() as r, atlasd.client() as other:
        r.script_flush()  # the Lock registers its scripts itself: EVALSHA, NOSCRIPT, then EVAL
        lock = r.lock("resource", timeout=30)
        assert lock.acquire(blocking=False)
        assert not other.lock("resource", timeout=30).acquire(blocking=False)
        assert lock.extend(10) and 30_000 < r.pttl("resource") <= 40_000
        assert lock.reacquire() and r.pttl("resource") <= 30_000
        stolen = other.lock("resource", timeout=30)
        stolen.local.token = b"not-the-owner"
        with pytest.raises(redis.exceptions.LockNotOwnedError):
            stolen.release()
        lock.release()
        assert r.get("resource") is None
        with pytest.raises(redis.exceptions.LockNotOwnedError):
            lock.do_release(b"gone")


def test_a_script_write_breaks_a_watch(sides: tuple[Side, Side]) -> None:
    atlas, redis_ = sides
    for side in (atlas, redis_):
        side.r2.call([b"FLUSHALL"])
    for side in (atlas, redis_):
        assert side.r2.call([b"WATCH", b"w"]) == ("+", "OK")
        side.r3.call([b"EVAL", b"return redis.call('set', KEYS[1], 'x')", b"1", b"w"])  # another client
        got = side.r2.call_many([[b"MULTI"], [b"SET", b"w", b"mine"], [b"EXEC"]])
        assert got[2] == ("nil", None), got  # EXEC aborted
        assert side.r2.call([b"GET", b"w"]) == ("$", b"x")


def test_command_info_of_the_scripting_commands(sides: tuple[Side, Side]) -> None:
    """Name, arity, flags, key positions and ACL categories as Redis 7.0 reports them (key specs
    are not reported)."""
    atlas, redis_ = sides
    for name in (b"eval", b"evalsha", b"eval_ro", b"evalsha_ro", b"script"):
        got, want = atlas.r2.call([b"COMMAND", b"INFO", name]), redis_.r2.call([b"COMMAND", b"INFO", name])
        g, w = got[1][0][1], want[1][0][1]
        assert g[:2] == w[:2] and g[3:6] == w[3:6], (name, g, w)
        assert sorted(f[1] for f in g[2][1]) == sorted(f[1] for f in w[2][1]), (name, g[2], w[2])
        assert g[6] == w[6], (name, g[6], w[6])
