"""INFO commandstats / latencystats and MONITOR's order: a real atlasd against a real redis-server (7.0).

The same commands run on both servers (`run_both`, raw sockets).  Timings differ, so commandstats
is compared by its names and counts (calls, rejected_calls, failed_calls) and by the shape of the
timing fields (usec an integer, usec_per_call usec/calls to two decimals); latencystats by the
names it lists and the shape of each line.  MONITOR is compared line by line with the time
dropped and the client's address written as `client` (a script's commands say `lua` on both).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_tracking import Connect, Wire, run_both
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)

_CMDSTAT = re.compile(rb"^cmdstat_(\S+):calls=(\d+),usec=(\d+),usec_per_call=(\d+\.\d\d),rejected_calls=(\d+),"
                      rb"failed_calls=(\d+)$")
_LATENCY = re.compile(rb"^latency_percentiles_usec_(\S+):p50=\d+\.\d{3},p99=\d+\.\d{3},p99\.9=\d+\.\d{3}$")


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("cmdstats")) as d:
        yield d


def _lines(frame: bytes) -> list[bytes]:
    assert frame.startswith(b"$"), frame
    return [line for line in frame.split(b"\r\n")[1:] if line and not line.startswith(b"#")]


def commandstats(w: Wire, drop: tuple[bytes, ...] = ()) -> dict[bytes, tuple[int, int, int]]:
    """name -> (calls, rejected, failed), after checking each line's shape and usec_per_call."""
    out = {}
    for line in _lines(w.call("INFO", "commandstats")):
        m = _CMDSTAT.match(line)
        assert m, line
        name, calls, usec, per_call, rejected, failed = m.groups()
        assert float(per_call) == pytest.approx(int(usec) / int(calls) if int(calls) else 0, abs=0.006), line
        if name not in drop:
            out[name] = (int(calls), int(rejected), int(failed))
    return out


def latencystats(w: Wire, drop: tuple[bytes, ...] = ()) -> list[bytes]:
    names = []
    for line in _lines(w.call("INFO", "latencystats")):
        m = _LATENCY.match(line)
        assert m, line
        if m.group(1) not in drop:
            names.append(m.group(1))
    return sorted(names)


# -- edge cases first: what must never be counted ----------------------------------------------------

def test_client_chosen_names_are_never_counted(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        w.call("CONFIG", "RESETSTAT")
        t = []
        for i in range(300):
            t.append(w.call(f"nosuch{i}", "x")[:1])
            t.append(w.call("CONFIG", f"SUB{i}")[:1])
            t.append(w.call("OBJECT", b"x" * 5000 + b"%d" % i)[:1])
        w.send("MULTI")
        t.append(w.frame())
        t.append(w.call(b"nosuch", b"in multi")[:1])
        t.append(w.call("EXEC"))
        t.append(commandstats(w))
        return t
    run_both(atlasd, redis_server, scenario)


# -- commandstats and latencystats ---------------------------------------------------------------------

LIB = ("#!lua name=cslib\nredis.register_function('csf', function(k, a) return redis.call('set', k[1], a[1]) end)\n"
       "redis.register_function{function_name='csbad', callback=function(k, a) return redis.call('incr', k[1]) end}")


def test_calls_rejections_and_failures(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w, other = connect(False), connect(False)
        t = [w.call("CONFIG", "RESETSTAT")]
        for c in [("SET", "k", "v"), ("GET", "k"), ("get", "k"), ("GET",), ("INCR", "k"), ("INCR", "k", "2"),
                  ("CONFIG", "GET", "maxmemory"), ("CONFIG", "GET"), ("CONFIG",), ("CONFIG", "NOSUCH"),
                  ("OBJECT", "ENCODING", "k"), ("OBJECT",), ("OBJECT", "ENCODING"), ("SLOWLOG", "LEN"),
                  ("COMMAND", "COUNT"), ("EXEC",), ("DISCARD",),
                  # transactions: an arity error refuses the command and aborts EXEC (failed), an error
                  # inside EXEC fails the command, not EXEC
                  ("MULTI",), ("GET",), ("SET", "a", "b"), ("EXEC",),
                  ("MULTI",), ("INCR", "k"), ("SET", "a", "b"), ("EXEC",),
                  ("MULTI",), ("SET", "a", "b"), ("DISCARD",),
                  ("MULTI",), ("WATCH", "a"), ("DISCARD",),
                  # scripts: their commands count; refused ones (arity, not allowed, a write from a
                  # read-only script) as rejected; a script that errors (or returns pcall's error) fails
                  ("EVAL", "redis.call('set', 'a', '1'); return redis.call('get', 'a')", "0"),
                  ("EVAL", "return redis.call('incr', 'k')", "0"),
                  ("EVAL", "return redis.pcall('incr', 'k')", "0"),
                  ("EVAL", "return redis.call('get')", "0"),
                  ("EVAL", "return redis.call('nosuch')", "0"),
                  ("EVAL", "return redis.call('multi')", "0"),
                  ("EVAL", "return redis.call('config', 'get')", "0"),
                  ("EVAL_RO", "return redis.call('set', 'x', '1')", "0"),
                  ("EVALSHA", "0" * 40, "0"), ("SCRIPT", "LOAD", "return 1"),
                  ("FUNCTION", "LOAD", LIB), ("FCALL", "csf", "1", "fk", "fv"), ("FCALL", "csbad", "1", "k"),
                  ("FUNCTION", "DELETE", "cslib"),
                  # a blocking command counts once: when it times out
                  ("BLPOP", "nolist", "0.05"),
                  # RESP2 subscribed mode refuses other commands
                  ("SUBSCRIBE", "ch"), ("GET", "k"), ("UNSUBSCRIBE", "ch")]:
            t.append(w.call(*c)[:1])
        # a blocked command served by another client's push: one call
        w.send("BLPOP", "q", "0")
        while b"blocked_clients:1" not in other.call("INFO", "clients"):
            pass
        t.append(other.call("LPUSH", "q", "x"))
        t.append(w.frame())
        t.append(commandstats(w, drop=(b"info",)))
        t.append(latencystats(w, drop=(b"info",)))
        return t
    run_both(atlasd, redis_server, scenario)


def test_resetstat_and_noauth(atlasd: Daemon) -> None:
    """atlasd only (the shared redis-server has no password): NOAUTH refuses, RESETSTAT resets.  An
    unknown command is refused as such before NOAUTH (test_differential_errorstats compares that with a
    redis-server that has a password)."""
    w = Wire(atlasd.port, atlasd.password, False)
    bare = Wire.__new__(Wire)
    import socket
    bare.sock, bare.buf = socket.create_connection(("127.0.0.1", atlasd.port), timeout=10), b""
    try:
        for _ in range(3):
            w.call("SET", "k", "v")
        assert commandstats(w)[b"set"][0] >= 3
        assert w.call("CONFIG", "RESETSTAT") == b"+OK\r\n"
        assert bare.call("GET", "k").startswith(b"-NOAUTH")
        assert bare.call("CONFIG", "GET", "x").startswith(b"-NOAUTH")
        assert bare.call("NOSUCH") == b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n"
        assert commandstats(w) == {b"config|resetstat": (1, 0, 0), b"get": (0, 1, 0), b"config|get": (0, 1, 0)}
        assert latencystats(w) == [b"config|resetstat", b"info"]
    finally:
        w.close()
        bare.close()


# -- MONITOR -------------------------------------------------------------------------------------------

def test_monitor_shows_a_script_before_its_commands(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        mon = connect(False)   # (after w: atlasd's AUTH and CLIENT ID of w are not in its feed)
        t = [mon.call("MONITOR")]
        for c in [("SET", "k", "v"),
                  ("EVAL", "redis.call('set', 'k', 'v'); redis.call('select', '2'); return redis.call('get', 'k')",
                   "0"),
                  ("EVAL", "return redis.call('incr', 'k')", "0"),   # a failed script and its failed command
                  ("EVAL", "return redis.call('get')", "0"),         # a refused one: not shown
                  ("EVALSHA", "0" * 40, "0"),                        # NOSCRIPT: shown all the same
                  ("INCR", "k"), ("GET",),                           # failed: shown; refused: not
                  ("MULTI",), ("SET", "a", "b"), ("GET", "a"), ("EXEC",),
                  ("MULTI",), ("SET", "a", "c"), ("DISCARD",),
                  ("FUNCTION", "LOAD", LIB), ("FCALL", "csf", "1", "fk", "fv"), ("FCALL_RO", "csf", "1", "fk", "fv"),
                  ("FUNCTION", "DELETE", "cslib"),
                  ("SELECT", "3"), ("EVAL", "return redis.call('get', 'k')", "0"), ("SELECT", "0"),
                  ("MULTI",), ("EVAL", "return redis.call('set', 'm', '1')", "0"), ("EXEC",),
                  ("BLPOP", "nolist", "0.05"),
                  # a container's line is shown or not as its subcommand is admin or not
                  ("CLIENT", "ID"), ("CLIENT", "GETNAME"), ("CLIENT", "LIST"), ("CLIENT", "INFO"),
                  ("CONFIG", "GET", "timeout"), ("OBJECT", "ENCODING", "k"), ("MEMORY", "USAGE", "k"),
                  ("SLOWLOG", "LEN"), ("COMMAND", "COUNT"), ("FUNCTION", "LIST"), ("SCRIPT", "EXISTS", "x"),
                  ("PUBSUB", "NUMPAT"), ("LATENCY", "LATEST"), ("XINFO", "HELP"), ("INFO", "server")]:
            t.append(w.call(*c)[:1])
        w.call("PING", "sync")
        lines = []
        while b'"sync"' not in (f := mon.frame()):
            lines.append(f)
        # "+<time> [<db> <address>] <command>": the time and the client's address differ
        for line in lines:
            head, _, command = line.partition(b"] ")
            db, _, where = head.split(b" [", 1)[1].partition(b" ")
            t.append(b"%s %s %s" % (db, where if where == b"lua" else b"client", command))
        return t
    run_both(atlasd, redis_server, scenario)


def _histograms(reply: dict) -> list:
    """LATENCY HISTOGRAM's reply (as redis-py parses it) with each histogram checked (powers of two
    of usec, counts growing to the calls) and replaced by "ok": timings differ between the servers."""
    out = []
    for name, entry in reply.items():
        hist = entry[b"histogram_usec"]
        keys, counts = list(hist), list(hist.values())
        assert keys == sorted(keys) and counts == sorted(counts) and counts[-1] == entry[b"calls"], (name, hist)
        out.append([name, entry[b"calls"], "ok"])
    return out


def test_latency_histogram(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        w.call("CONFIG", "RESETSTAT")
        for c in [("SET", "k", "v")] * 5 + [("GET", "k")] * 3 + [("CONFIG", "GET", "timeout"), ("GET",)]:
            w.call(*c)
        return [w.call("LATENCY", "HISTOGRAM", "nosuch", "x" * 3000, "hset")]
    run_both(atlasd, redis_server, scenario)
    for port, password in ((atlasd.port, atlasd.password), (redis_server.port, None)):
        r = redis.Redis(port=port, password=password)
        try:
            r.config_resetstat()
            for _ in range(5):
                r.set("k", "v")
            r.get("k")
            r.config_get("timeout")
            by_name = _histograms(r.execute_command("LATENCY", "HISTOGRAM", "set", "GET", "config", "nosuch"))
            # (a container's subcommands follow it in Redis's hash order: compared as a set)
            assert by_name[:2] == [[b"set", 5, "ok"], [b"get", 1, "ok"]], port
            assert sorted(by_name[2:]) == [[b"config|get", 1, "ok"], [b"config|resetstat", 1, "ok"]], port
            every = {row[0] for row in _histograms(r.execute_command("LATENCY", "HISTOGRAM"))}
            assert every == {b"set", b"get", b"config|get", b"config|resetstat", b"latency|histogram"}, port
        finally:
            r.close()
