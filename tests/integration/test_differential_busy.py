"""Redis 7.0's BUSY state: a real atlasd against a real redis-server 7.0.15, byte for byte.

Both servers get busy-reply-threshold 200 ms (CONFIG SET) and the same
password (redis-server --requirepass atlasd's), so NOAUTH answers compare
too.  One connection runs a script that spins (EVAL or FCALL), others probe
in RESP2 and RESP3, from before the script started and accepted while it is
busy; every reply must be the same bytes (HELLO's id and server name, and
FUNCTION STATS's duration, normalised).  Then SCRIPT KILL / FUNCTION KILL and
the script caller's error, UNKILLABLE for a script that wrote, SHUTDOWN NOSAVE
(each server its own, since it ends), INFO errorstats and the calls,
rejections and failures in INFO commandstats, and CONFIG for the threshold.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_busy_script import Wire
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)

SPIN = "while true do end"
LIB = ("#!lua name=busylib\n"
       "redis.register_function('spin', function(keys, args) while true do end end)\n"
       "redis.register_function('spin_w', function(keys, args)\n"
       "  redis.call('set', 'fw', '1')\n"
       "  local t0 = redis.call('time')\n"
       "  while true do\n"
       "    local t = redis.call('time')\n"
       "    if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 2000000 then return 'done' end\n"
       "  end\n"
       "end)")
# A script that writes, then runs for 2 s (wall clock: TIME), then returns.
WRITES_THEN_SPINS = ("redis.call('set', 'w', '1') local t0 = redis.call('time') while true do "
                     "local t = redis.call('time') "
                     "if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 2000000 then return 'done' end end")
EOF = b"<EOF>"


@dataclass
class Srv:
    port: int
    password: str

    def conn(self, resp3: bool = False, auth: bool = True) -> Wire:
        w = Wire(self.port, self.password if auth else None)
        if resp3:
            assert w.call("HELLO", "3").startswith(b"%7\r\n")
        return w


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("busydiff")) as d:
        yield d


def _redis(password: str) -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(exe).start()
    w = Wire(server.port)  # (the password is set once it answers PING: its start-up check is a bare PING)
    assert w.call("CONFIG", "SET", "requirepass", password) == b"+OK\r\n"
    w.close()
    return server


@pytest.fixture(scope="module")
def servers(atlasd: Daemon) -> Iterator[tuple[Srv, Srv]]:
    assert atlasd.password is not None
    redis = _redis(atlasd.password)
    try:
        yield Srv(atlasd.port, atlasd.password), Srv(redis.port, atlasd.password)
    finally:
        redis.stop()


def norm(reply: bytes) -> bytes:
    """HELLO's server name, id and version (atlasd says 7.0.0), FUNCTION STATS's duration: made equal."""
    reply = re.sub(rb"\$6\r\nserver\r\n\$5\r\n(redis|atlas)\r\n", b"$6\r\nserver\r\n$5\r\nSERVER\r\n", reply)
    reply = re.sub(rb"\$2\r\nid\r\n:\d+\r\n", b"$2\r\nid\r\n:ID\r\n", reply)
    reply = re.sub(rb"\$7\r\nversion\r\n\$\d+\r\n7\.0\.\d+\r\n", b"$7\r\nversion\r\n7.0\r\n", reply)
    return re.sub(rb"\$11\r\nduration_ms\r\n:\d+\r\n", b"$11\r\nduration_ms\r\n:MS\r\n", reply)


def ask(w: Wire, *cmd: object) -> bytes:
    try:
        return norm(w.call(*cmd))
    except (EOFError, OSError):
        return EOF


def wait_busy(probe: Wire) -> bytes:
    for _ in range(1000):
        got = probe.call("PING")
        if got.startswith(b"-BUSY"):
            return got
        time.sleep(0.01)
    raise AssertionError("the script never became busy")


def counts(info: bytes) -> list[str]:
    """INFO commandstats without the times: name, calls, rejected and failed calls (PING's calls
    left out: wait_busy's PINGs may be answered before the script starts, on either server)."""
    return sorted(re.sub(r"usec=\d+,usec_per_call=[\d.]+,", "", line)
                  for line in info.decode().split("\r\n")
                  if line.startswith("cmdstat_") and not line.startswith("cmdstat_ping:"))


def both(servers: tuple[Srv, Srv], scenario: Callable[[Srv], list]) -> None:
    atlas, redis = (scenario(s) for s in servers)
    assert len(atlas) == len(redis)
    for a, r in zip(atlas, redis, strict=True):
        assert a == r


def _setup(srv: Srv, probe: Wire) -> None:
    for cmd in (("FLUSHALL",), ("FUNCTION", "FLUSH"), ("CONFIG", "SET", "busy-reply-threshold", "200"),
                ("CONFIG", "SET", "maxclients", "10000"), ("FUNCTION", "LOAD", LIB), ("CONFIG", "RESETSTAT")):
        assert not probe.call(*cmd).startswith(b"-"), cmd


# Commands an authenticated client sends while an EVAL is busy, in this order (MULTI's
# queueing, refusals and EXECABORT included).
AUTHED = [("GET", "x"), ("NOPE", "a"), ("GET",), ("SCRIPT", "NOPE"), ("SCRIPT", "KILL", "x"), ("CONFIG", "GET"),
          ("FUNCTION", "STATS"), ("FUNCTION", "KILL"), ("SHUTDOWN",), ("SHUTDOWN", "SAVE"), ("SHUTDOWN", "ABORT"),
          ("SHUTDOWN", "NOSAVE", "SAVE"), ("EXEC",), ("DISCARD",), ("UNWATCH",), ("WATCH", "k"), ("MULTI",),
          ("GET", "x"), ("SCRIPT", "KILL"), ("AUTH", "x"), ("EXEC",), ("MULTI",), ("SHUTDOWN", "NOSAVE"),
          ("MULTI",), ("DISCARD",), ("HELLO",), ("HELLO", "3"), ("PING",), ("HELLO", "2"), ("CLIENT", "ID"),
          ("SUBSCRIBE", "c"), ("EVAL", "return 1", "0")]
# ... and one that has not authenticated yet (a failed AUTH comes last: atlasd then waits out its
# delay, which needs the loop, where Redis answers at once).
UNAUTHED = [("PING",), ("GET", "x"), ("NOPE",), ("GET",), ("SCRIPT", "KILL"), ("FUNCTION", "KILL"),
            ("SHUTDOWN", "NOSAVE"), ("SHUTDOWN",), ("MULTI",), ("WATCH", "x"), ("RESET",), ("HELLO", "3"),
            ("AUTH", "a", "b", "c"), ("QUIT", "x")]


def test_an_eval_busy_answers_as_redis(servers: tuple[Srv, Srv]) -> None:
    def scenario(srv: Srv) -> list:
        caller, probe = srv.conn(), srv.conn()
        older3 = srv.conn(resp3=True)  # connected before the script started
        out: list = []
        try:
            _setup(srv, probe)
            caller.send("EVAL", SPIN, 0)
            out.append(wait_busy(probe))
            for conn, label in ((probe, "resp2"), (older3, "resp3"), (srv.conn(), "new"),
                                (srv.conn(resp3=True), "new resp3")):
                out += [(label, cmd, ask(conn, *cmd)) for cmd in AUTHED]
                out.append((label, "QUIT", ask(conn, "QUIT")))
            fresh = srv.conn(auth=False)
            out += [("unauthed", cmd, ask(fresh, *cmd)) for cmd in UNAUTHED]
            out.append(("unauthed", "HELLO AUTH", ask(fresh, "HELLO", "3", "AUTH", "default", srv.password)))
            out += [("authed", cmd, ask(fresh, *cmd)) for cmd in (("PING",), ("RESET",), ("PING",),
                                                                   ("AUTH", srv.password), ("PING",))]
            out.append(("unauthed", "AUTH bad", ask(fresh, "AUTH", "bad")))
            killer = srv.conn()
            out.append(("kill", ask(killer, "SCRIPT", "KILL")))
            out.append(("caller", norm(caller.reply())))
            out.append(("after", ask(killer, "SCRIPT", "KILL"), ask(killer, "FUNCTION", "KILL"),
                        ask(killer, "PING")))
            out.append(("errorstats", ask(killer, "INFO", "errorstats")))
            out.append(("commandstats", counts(killer.call("INFO", "commandstats"))))
        finally:
            for w in (caller, probe, older3):
                w.close()
        return out

    both(servers, scenario)


def test_a_function_busy_answers_as_redis(servers: tuple[Srv, Srv]) -> None:
    def scenario(srv: Srv) -> list:
        caller, probe, probe3 = srv.conn(), srv.conn(), srv.conn(resp3=True)
        _setup(srv, probe)
        out: list = []
        caller.send("FCALL", "spin", 1, "k", "arg")
        out.append(wait_busy(probe))
        for conn in (probe, probe3):
            out += [ask(conn, "GET", "x"), ask(conn, "SCRIPT", "KILL"), ask(conn, "FUNCTION", "STATS"),
                    ask(conn, "SHUTDOWN"), ask(conn, "EXEC")]
        out.append(ask(probe3, "FUNCTION", "KILL"))
        out.append(norm(caller.reply()))
        out.append(ask(probe, "FUNCTION", "STATS"))
        out.append(ask(probe, "INFO", "errorstats"))
        out.append(counts(probe.call("INFO", "commandstats")))
        return out

    both(servers, scenario)


def test_a_script_that_wrote_is_unkillable_as_in_redis(servers: tuple[Srv, Srv]) -> None:
    def scenario(srv: Srv) -> list:
        caller, probe = srv.conn(), srv.conn()
        _setup(srv, probe)
        out: list = []
        for send in (("EVAL", WRITES_THEN_SPINS, 0), ("FCALL", "spin_w", 0)):
            caller.send(*send)
            out.append(wait_busy(probe))
            out += [ask(probe, "SCRIPT", "KILL"), ask(probe, "FUNCTION", "KILL"), ask(probe, "GET", "w")]
            out.append(norm(caller.reply()))  # it runs to its end
            out += [ask(probe, "GET", "w"), ask(probe, "GET", "fw")]
        return out

    both(servers, scenario)


def test_busy_reply_threshold_and_lua_time_limit_as_redis(servers: tuple[Srv, Srv]) -> None:
    def scenario(srv: Srv) -> list:
        c = srv.conn()
        out = [ask(c, "CONFIG", "GET", "busy-reply-threshold"), ask(c, "CONFIG", "GET", "lua-time-limit"),
               ask(c, "CONFIG", "GET", "busy*"), ask(c, "CONFIG", "GET", "lua-time*"),
               ask(c, "CONFIG", "SET", "lua-time-limit", "300"), ask(c, "CONFIG", "GET", "busy-reply-threshold"),
               ask(c, "CONFIG", "SET", "busy-reply-threshold", "-1"), ask(c, "CONFIG", "SET", "lua-time-limit", "x"),
               ask(c, "CONFIG", "SET", "busy-reply-threshold", "5000"), ask(c, "CONFIG", "GET", "lua-time-limit")]
        c.close()
        return out

    both(servers, scenario)


def test_shutdown_nosave_ends_a_busy_script_as_redis(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--appendfsync", "everysec").start()
    assert d.password is not None
    redis = _redis(d.password)
    try:
        def scenario(srv: Srv) -> list:
            caller, probe, other = srv.conn(), srv.conn(), srv.conn()
            assert probe.call("CONFIG", "SET", "busy-reply-threshold", "200") == b"+OK\r\n"
            caller.send("EVAL", "redis.call('set', 'x', '1') " + SPIN, 0)
            out: list = [wait_busy(probe), ask(probe, "SHUTDOWN"), ask(probe, "SHUTDOWN", "NOW"),
                         ask(srv.conn(auth=False), "SHUTDOWN", "NOSAVE"), ask(probe, "SHUTDOWN", "NOSAVE")]
            try:
                out.append(norm(caller.reply()))
            except (EOFError, OSError):
                out.append(EOF)
            out.append(ask(other, "PING"))
            return out

        both((Srv(d.port, d.password), Srv(redis.port, d.password)), scenario)
        assert d.proc is not None and d.proc.wait(20) == 0
    finally:
        d.kill()
        redis.stop()
