"""INFO errorstats, total_error_replies, and MULTI's refusals when queueing: a real atlasd against a real
redis-server (7.0), as test_differential_cmdstats does.

The same commands run on both servers (`run_both`, raw sockets) and every reply is compared byte for
byte, then INFO errorstats and the total_error_replies line (atlasd's INFO stats has fewer fields).
What is not differential: the bound on distinct error codes (Redis 7.0.15 has none; atlasd keeps Redis
7.2's, see cmdstats.ERRORSTATS_LIMIT).  NOAUTH is compared with a redis-server of this module's own
(`locked_redis`) that takes atlasd's password: the shared one has none.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_cmdstats import _lines, commandstats
from tests.integration.test_differential_tracking import Connect, Wire, run_both
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("errorstats")) as d:
        yield d


@pytest.fixture(scope="module")
def locked_redis(atlasd: Daemon) -> Iterator[RedisServer]:
    """A redis-server of this module's own whose clients need atlasd's password.  The password is set
    once it runs (RedisServer's readiness check is a PING without AUTH, which --requirepass refuses)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(exe).start()
    try:
        w = bare_wire(server.port)
        assert w.call("CONFIG", "SET", "requirepass", atlasd.password or "") == b"+OK\r\n"
        w.close()
        yield server
    finally:
        server.stop()


def bare_wire(port: int) -> Wire:
    """A raw connection that has not authenticated."""
    w = Wire.__new__(Wire)
    w.sock, w.buf = socket.create_connection(("127.0.0.1", port), timeout=10), b""
    return w


def run_locked(atlasd: Daemon, locked: RedisServer, scenario: Callable[[Callable[[], Wire], Connect], list]) -> None:
    """Run `scenario(bare, connect)` on atlasd and on `locked` (same password) and compare the transcripts:
    `bare()` opens a connection that has not authenticated, `connect(resp3)` one that has."""
    out = []
    for port in (atlasd.port, locked.port):
        wires: list[Wire] = []

        def bare(port: int = port, wires: list[Wire] = wires) -> Wire:
            wires.append(bare_wire(port))
            return wires[-1]

        def connect(resp3: bool, port: int = port, wires: list[Wire] = wires) -> Wire:
            wires.append(Wire(port, atlasd.password, resp3))
            return wires[-1]
        try:
            assert connect(False).call("FLUSHALL") == b"+OK\r\n"
            out.append(scenario(bare, connect))
        finally:
            for w in wires:
                w.close()
    assert out[0] == out[1]


def errorstats(w: Wire) -> list[bytes]:
    """INFO errorstats' lines as sent, then INFO stats' total_error_replies line (`w`: RESP2)."""
    total = [line for line in _lines(w.call("INFO", "stats")) if line.startswith(b"total_error_replies:")]
    return [*_lines(w.call("INFO", "errorstats")), *total]


# -- edge cases first: a client that makes up error codes ------------------------------------------

def test_codes_a_client_makes_up_are_bounded(atlasd: Daemon) -> None:
    """atlasd only: Redis 7.0.15 keeps every code (7.2 added the bound atlasd has)."""
    w = Wire(atlasd.port, atlasd.password, False)
    try:
        w.call("CONFIG", "RESETSTAT")
        n = 3000
        w.pipeline([("EVAL", "return redis.error_reply(ARGV[1] .. ' boom')", "0", f"C{i}") for i in range(n)])
        for i in range(n):
            assert w.frame() == b"-C%d boom\r\n" % i
        assert errorstats(w) == [b"errorstat_ERRORSTATS_DISABLED:count=1", b"total_error_replies:%d" % n]
        assert w.call("CONFIG", "RESETSTAT") == b"+OK\r\n"
        assert w.call("GET").startswith(b"-ERR")
        assert errorstats(w) == [b"errorstat_ERR:count=1", b"total_error_replies:1"]
    finally:
        w.close()


def test_noauth_counts(atlasd: Daemon) -> None:
    """atlasd only (the shared redis-server has no password; checked by hand on 7.0.15: NOAUTH:count=1)."""
    w = Wire(atlasd.port, atlasd.password, False)
    bare = Wire.__new__(Wire)
    bare.sock, bare.buf = socket.create_connection(("127.0.0.1", atlasd.port), timeout=10), b""
    try:
        w.call("CONFIG", "RESETSTAT")
        assert bare.call("GET", "k") == b"-NOAUTH Authentication required.\r\n"
        assert bare.call("MULTI") == b"-NOAUTH Authentication required.\r\n"
        assert errorstats(w) == [b"errorstat_NOAUTH:count=2", b"total_error_replies:2"]
    finally:
        w.close()
        bare.close()


def test_table_refusals_come_before_noauth(atlasd: Daemon, locked_redis: RedisServer) -> None:
    """Redis 7.0's processCommand refuses an unknown command or subcommand and a wrong arity before it
    asks for authentication; a refused EXEC is EXECABORT (rejectCommand's execCommandAbort).  Nothing
    runs: GET k's key is not read, and each refusal counts as redis-server counts it."""
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        info, b = connect(False), bare()
        t = [info.call("SET", "k", "v"), info.call("CONFIG", "RESETSTAT")]
        for c in [("GET",), ("nosuch", "a", "b"), ("CONFIG",), ("CONFIG", "GET"), ("config", "GeT"),
                  ("CONFIG", "NOSUCH"), ("CLIENT", "x" * 300), ("OBJECT", "ENCODING"), ("SET", "k"),
                  ("GET", "k"), ("PING",), ("CONFIG", "GET", "maxmemory"), ("COMMAND", "COUNT"),
                  ("MULTI",), ("EXEC",), ("EXEC", "x"), ("DISCARD",), ("AUTH",), ("HELLO", "4"),
                  ("EVAL", "return redis.call('set', 'k', 'changed')", "0")]:
            t.append(b.call(*c))
        t.append(info.call("GET", "k"))
        t.append(errorstats(info))
        t.append(commandstats(info, drop=(b"info", b"client|id", b"hello", b"auth", b"set", b"get")))
        return t
    run_locked(atlasd, locked_redis, scenario)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_exec_refused_aborts_and_unwatches(atlasd: Daemon, redis_server: RedisServer, resp3: bool) -> None:  # noqa: F811
    """A refused EXEC (EXEC x) ends the transaction and unwatches the keys, inside MULTI or not; DISCARD x
    and MULTI x inside MULTI are refused and EXEC aborts."""
    def scenario(connect: Connect) -> list:
        w, other, info = connect(resp3), connect(False), connect(False)
        t = [info.call("CONFIG", "RESETSTAT")]
        t += [w.call("WATCH", "k"), w.call("EXEC", "x"), other.call("SET", "k", "1"),
              w.call("MULTI"), w.call("GET", "k"), w.call("EXEC")]  # unwatched: EXEC runs
        t += [w.call("WATCH", "k"), w.call("MULTI"), w.call("SET", "a", "b"), w.call("EXEC", "x"),
              other.call("SET", "k", "2"), w.call("EXEC"), w.call("MULTI"), w.call("GET", "a"), w.call("EXEC")]
        for bad in [("DISCARD", "x"), ("MULTI", "x"), ("RESET", "x")]:
            t += [w.call("MULTI"), w.call(*bad), w.call("SET", "a", "c"), w.call("EXEC")]
        t += [w.call("DISCARD", "x"), w.call("MULTI", "x")]
        t.append(errorstats(info))
        t.append(commandstats(info, drop=(b"info", b"client|id", b"hello", b"auth")))
        return t
    run_both(atlasd, redis_server, scenario)


# -- what counts, as redis-server counts it ----------------------------------------------------------

def test_commands_and_scripts(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        t = [w.call("SET", "s", "str"), w.call("CONFIG", "RESETSTAT"), errorstats(w)]
        for c in [("GET",), ("nosuch", "x"), ("CONFIG", "NOSUCH"), ("CONFIG", "GET"), ("CLIENT",),
                  ("INCR", "s"), ("LPUSH", "s", "x"), ("EVALSHA", "0" * 40, "0"), ("EXEC",), ("DISCARD",),
                  ("SET", "k", "v", "EX", "0"), ("XADD", "s", "*", "f", "v"),
                  # a failed call counts when it fails; the script's error made from it does not again
                  ("EVAL", "return redis.pcall('incr', 's')", "0"),
                  ("EVAL", "return redis.call('incr', 's')", "0"),
                  ("EVAL", "redis.pcall('lpush', 's', 'x'); return 1", "0"),
                  ("EVAL", "error(redis.pcall('incr', 's'))", "0"),
                  ("EVAL", "local e = redis.pcall('incr', 's'); return {err = e.err}", "0"),
                  ("EVAL", "local t = redis.pcall('incr', 's'); t.err = 'CHANGED x'; return t", "0"),
                  ("EVAL", "return cjson.encode(redis.pcall('incr', 's'))", "0"),
                  # refused calls count too, a missing argument only once returned
                  ("EVAL", "return redis.call('get')", "0"),
                  ("EVAL", "redis.pcall('nosuch'); return 1", "0"),
                  ("EVAL", "return redis.pcall('multi')", "0"),
                  ("EVAL_RO", "return redis.pcall('set', 'x', '1')", "0"),
                  ("EVAL", "redis.pcall(); return 1", "0"),
                  ("EVAL", "return redis.pcall()", "0"),
                  # a script's own error replies, nested ones included, under their codes
                  ("EVAL", "return redis.error_reply('MYERR boom')", "0"),
                  ("EVAL", "return redis.error_reply('nospace')", "0"),
                  ("EVAL", "return {err = 'lower case x'}", "0"),
                  ("EVAL", "return redis.error_reply('ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 long')", "0"),
                  ("EVAL", "return redis.error_reply('ABCDEFGHIJKLMNOPQRSTUVWXYZ0123 fits')", "0"),
                  ("EVAL", "return {1, redis.error_reply('NESTED y'), {redis.error_reply('DEEP z')}}", "0"),
                  ("EVAL", "return {1, redis.pcall('lpush', 's', 'x')}", "0"),
                  ("EVAL", "error('raw')", "0"),
                  ("EVAL", "return 'x' ..", "0"),
                  ("FCALL", "nosuchfn", "0")]:
            t.append(w.call(*c))
        t.append(errorstats(w))
        t.append(w.call("CONFIG", "RESETSTAT"))
        t.append(errorstats(w))
        return t
    run_both(atlasd, redis_server, scenario)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_multi_refuses_when_queueing(atlasd: Daemon, redis_server: RedisServer, resp3: bool) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w, info = connect(resp3), connect(False)
        t = [w.call("SET", "s", "str"), info.call("CONFIG", "RESETSTAT")]
        for c in [("MULTI",), ("INCR", "s"), ("LPUSH", "s", "x"), ("SET", "a", "b"), ("EXEC",),  # EXEC's items
                  # refused when queued, then EXECABORT: a subcommand's arity or an unknown subcommand
                  # as a command's arity or an unknown command
                  ("MULTI",), ("CONFIG", "GET"), ("SET", "a", "b"), ("EXEC",),
                  ("MULTI",), ("OBJECT", "ENCODING"), ("EXEC",),
                  ("MULTI",), ("CONFIG", "NOSUCH"), ("SET", "a", "b"), ("EXEC",),
                  ("MULTI",), ("object", "nosuch", "k"), ("EXEC",),
                  ("MULTI",), ("CLIENT", "x" * 300), ("DISCARD",),
                  ("MULTI",), ("XINFO", "NOSUCH"), ("COMMAND", "NOSUCH"), ("EXEC",),
                  ("MULTI",), ("CLIENT",), ("EXEC",),
                  ("MULTI",), ("MEMORY",), ("EXEC",),
                  ("MULTI",), ("GET",), ("EXEC",),
                  ("MULTI",), ("nosuch",), ("EXEC",),
                  # queued: a container's valid call, HELP, a container called alone
                  ("MULTI",), ("CONFIG", "GET", "maxmemory"), ("OBJECT", "ENCODING", "s"), ("CLIENT", "GETNAME"),
                  ("config", "help"), ("EXEC",),
                  # errors MULTI does not flag: EXEC runs
                  ("MULTI",), ("MULTI",), ("WATCH", "x"), ("EXEC",),
                  # a script's errors inside EXEC, returned or raised
                  ("MULTI",), ("EVAL", "return redis.pcall('incr', 's')", "0"), ("EVALSHA", "0" * 40, "0"),
                  ("EVAL", "return redis.error_reply('INMULTI x')", "0"), ("EXEC",),
                  ("EXEC",), ("DISCARD",)]:
            t.append(w.call(*c))
        t.append(errorstats(info))
        t.append(commandstats(info, drop=(b"info", b"client|id", b"hello", b"auth")))
        return t
    run_both(atlasd, redis_server, scenario)


def test_a_protocol_error_counts(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w, bad = connect(False), connect(False)
        t = [w.call("CONFIG", "RESETSTAT")]
        bad.sock.sendall(b"*1\r\n$x\r\n")
        t.append(bad.frame())
        t.append(errorstats(w))
        return t
    run_both(atlasd, redis_server, scenario)
