"""MODULE and DEBUG: a real atlasd against a real redis-server (7.0) with its defaults
(enable-module-command no, enable-debug-command no), replies compared byte for byte, RESP2 and RESP3.

Client libraries send MODULE LIST when they connect and test suites send DEBUG: both must get what a
default Redis 7.0 answers (an empty module list; the "not allowed" refusals), never an unknown command.
The redis-server here takes atlasd's password (`locked_redis`), so unauthenticated calls compare too.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_cmdstats import _lines, commandstats
from tests.integration.test_differential_errorstats import errorstats, locked_redis, run_locked  # noqa: F401
from tests.integration.test_differential_tracking import Connect, Wire
from tests.integration.test_differential_types import Raw, norm
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)

NOT_ALLOWED = (b"-ERR %s command not allowed. If the %s option is set to \"local\", you can run it from a local "
               b"connection, otherwise you need to set this option in the configuration file, and then restart "
               b"the server.\r\n")
DEBUG_REFUSED = NOT_ALLOWED % (b"DEBUG", b"enable-debug-command")
MODULE_REFUSED = NOT_ALLOWED % (b"MODULE", b"enable-module-command")


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("module-debug")) as d:
        yield d


# -- the attacker's angle first: MODULE LOAD never opens what it names -----------------------------

def test_module_load_never_opens_the_path(atlasd: Daemon, locked_redis: RedisServer,  # noqa: F811
                                          tmp_path: Path) -> None:
    """A FIFO blocks whoever opens it for reading until a writer comes: a server that opened, read or
    dlopen()ed the path would hang here.  Both servers refuse at once, with the same reply."""
    fifo = tmp_path / "evil.so"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:  # (only returns if someone opened the FIFO for reading)
        fd = os.open(fifo, os.O_WRONLY)
        opened.set()
        os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    real = tmp_path / "real.so"
    real.write_bytes(b"\x7fELF not really")
    for port in (atlasd.port, locked_redis.port):
        w = Wire(port, atlasd.password, False)
        try:
            for args in [("MODULE", "LOAD", str(fifo)), ("MODULE", "LOADEX", str(fifo), "ARGS", "x"),
                         ("MODULE", "LOAD", str(real), "a", "b"), ("MODULE", "LOAD", "../../etc/passwd"),
                         ("MODULE", "UNLOAD", str(fifo))]:
                assert w.call(*args) == MODULE_REFUSED, args
            assert w.call("MODULE", "LIST") == b"*0\r\n"
        finally:
            w.close()
    assert not opened.is_set()
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # (lets the writer thread finish)
    t.join(5)
    os.close(fd)


# -- replies ---------------------------------------------------------------------------------------

CALLS = [
    ("MODULE", "LIST"), ("module", "list"), ("MODULE", "HELP"), ("MODULE", "help"), ("MODULE",),
    ("MODULE", "LIST", "x"), ("MODULE", "HELP", "x"), ("MODULE", "NOSUCH"), ("MODULE", "nosuch", "a"),
    ("MODULE", "x" * 300), ("MODULE", "LOAD"), ("MODULE", "LOAD", "/nonexistent/m.so"),
    ("MODULE", "load", "/nonexistent/m.so", "arg1", "arg2"), ("MODULE", "LOADEX"),
    ("MODULE", "LOADEX", "/nonexistent/m.so"), ("MODULE", "LOADEX", "/x.so", "CONFIG", "a", "b", "ARGS", "c"),
    ("MODULE", "UNLOAD"), ("MODULE", "UNLOAD", "nosuch"), ("MODULE", "UNLOAD", "a", "b"),
    ("DEBUG",), ("DEBUG", "SLEEP", "0"), ("debug", "object", "k"), ("DEBUG", "RELOAD"), ("DEBUG", "NOSUCH"),
    ("DEBUG", "SET-ACTIVE-EXPIRE", "0"), ("DEBUG", "HELP"),
    ("COMMAND", "INFO", "debug"), ("COMMAND", "LIST", "FILTERBY", "PATTERN", "modul?"),
    ("COMMAND", "LIST", "FILTERBY", "PATTERN", "debu?"), ("COMMAND", "GETKEYS", "MODULE", "LIST"),
    ("COMMAND", "GETKEYS", "DEBUG", "OBJECT", "k"),
    ("EVAL", "return redis.call('DEBUG', 'SLEEP', '0')", "0"),
    ("EVAL", "return redis.pcall('MODULE', 'LOAD', 'x')", "0"),
    ("EVAL", "return redis.pcall('MODULE', 'LIST')", "0"),
]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_module_and_debug_replies_match_redis(atlasd: Daemon, locked_redis: RedisServer,  # noqa: F811
                                              resp3: bool) -> None:
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(resp3)
        return [(c, w.call(*c)) for c in CALLS]
    run_locked(atlasd, locked_redis, scenario)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_info_of_module(atlasd: Daemon, locked_redis: RedisServer, resp3: bool) -> None:  # noqa: F811
    """MODULE's entry but its subcommands (element 9, in a different order in every Redis process:
    test_differential_command_info compares them sorted), and COMMAND DOCS' group and version."""
    got, want = (Raw(port, atlasd.password, resp3) for port in (atlasd.port, locked_redis.port))
    try:
        for args in ([b"COMMAND", b"INFO", b"module"], [b"COMMAND", b"INFO", b"MODULE", b"debug", b"nosuch"]):
            g, w = got.call(args), want.call(args)
            assert [e[1][:9] if e[0] == "*" else e for e in g[1]] == [e[1][:9] if e[0] == "*" else e for e in w[1]]
        assert [v[1][9] for v in want.call([b"COMMAND", b"INFO", b"module"])[1]] != [("*", [])]  # (Redis lists 5)

        def docs(r: Raw) -> dict:
            (_, pairs) = norm(r.call([b"COMMAND", b"DOCS", b"module", b"debug"]))
            flat = dict(pairs) if r.resp3 else dict(zip(pairs[::2], pairs[1::2], strict=True))
            out = {}
            for name, (_, fields) in flat.items():
                fields = dict(fields) if r.resp3 else dict(zip(fields[::2], fields[1::2], strict=True))
                out[name] = (fields[("$", b"group")], fields[("$", b"since")])
            return out
        assert docs(got) == docs(want)
    finally:
        got.close()
        want.close()


def test_the_refusals_are_redis_texts(atlasd: Daemon) -> None:
    """atlasd alone, so a wrong text on both servers would still fail here (checked on 7.0.15)."""
    w = Wire(atlasd.port, atlasd.password, False)
    try:
        assert w.call("DEBUG", "SLEEP", "0") == DEBUG_REFUSED
        assert w.call("MODULE", "LOAD", "/x.so") == MODULE_REFUSED
        assert w.call("MODULE", "UNLOAD", "x") == MODULE_REFUSED
        assert w.call("MODULE", "LIST") == b"*0\r\n"
    finally:
        w.close()


def test_info_modules_section(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    """INFO modules is its header alone, on both; INFO everything has it between cpu and errorstats."""
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(False)
        every = w.call("INFO", "everything")
        head = [line for line in every.split(b"\r\n") if line.startswith(b"# ")]
        at = every.index(b"# Modules\r\n")
        return [w.call("INFO", "modules"), w.call("INFO", "MODULES"), head.index(b"# Modules") > head.index(b"# CPU"),
                every[at:at + len(b"# Modules\r\n\r\n#")]]
    run_locked(atlasd, locked_redis, scenario)


def test_errors_and_stats_counted(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    """What INFO errorstats counts for the refusals, and module|list's calls in commandstats."""
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(False)
        w.call("CONFIG", "RESETSTAT")
        for c in [("MODULE", "LIST"), ("MODULE", "LOAD", "x"), ("DEBUG", "SLEEP", "0"), ("MODULE", "NOPE")]:
            w.call(*c)
        calls = [line.split(b",")[0] for line in _lines(w.call("INFO", "commandstats"))
                 if line.startswith(b"cmdstat_module|list:")]
        return [errorstats(w), calls]
    run_locked(atlasd, locked_redis, scenario)


# -- before AUTH: lookup and arity come first (processCommand), then the protected refusal, then NOAUTH --

def test_before_auth_table_refusals_and_noauth(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        b = bare()
        return [b.call(*c) for c in [("MODULE",), ("MODULE", "LIST"), ("MODULE", "HELP"), ("MODULE", "LIST", "x"),
                                     ("MODULE", "NOPE"), ("MODULE", "LOAD"), ("MODULE", "UNLOAD"), ("DEBUG",)]]
    run_locked(atlasd, locked_redis, scenario)


def test_protected_refusal_before_auth_and_when_queued(atlasd: Daemon,
                                                       locked_redis: RedisServer) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        b, w = bare(), connect(False)
        t = [b.call(*c) for c in [("DEBUG", "SLEEP", "0"), ("MODULE", "LOAD", "/x.so"), ("MODULE", "UNLOAD", "m")]]
        t += [w.call("MULTI"), w.call("DEBUG", "SLEEP", "0"), w.call("MODULE", "LIST"), w.call("EXEC")]
        return t
    run_locked(atlasd, locked_redis, scenario)


def test_an_unauthenticated_module_load_never_runs(atlasd: Daemon) -> None:
    """What atlasd answers today without AUTH (a refusal either way; nothing is loaded)."""
    b = socket.create_connection(("127.0.0.1", atlasd.port), timeout=10)
    try:
        b.sendall(b"*3\r\n$6\r\nMODULE\r\n$4\r\nLOAD\r\n$5\r\n/x.so\r\n")
        assert b.recv(4096).startswith(b"-")
    finally:
        b.close()


def test_a_protected_call_counts_as_rejected_and_is_not_monitored(atlasd: Daemon,
                                                                  locked_redis: RedisServer) -> None:  # noqa: F811
    """Authenticated, outside MULTI: refused before it runs, as Redis's processCommand refuses it, so
    INFO commandstats counts a rejected call (not a call that failed) and MONITOR shows nothing of it;
    MODULE LIST runs, and MONITOR hides it too (module|list is an admin subcommand)."""
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w, m = connect(False), connect(False)
        t = [w.call("CONFIG", "RESETSTAT"), m.call("MONITOR")]
        t += [w.call("DEBUG", "SLEEP", "0"), w.call("MODULE", "LOAD", "/x.so"), w.call("MODULE", "LIST"),
              w.call("MODULE", "HELP")[:40], w.call("SET", "after", "1")]
        stats = commandstats(w)
        t.append({k: v for k, v in stats.items() if k.startswith((b"debug", b"module", b"set"))})
        t.append(errorstats(w))
        line = m.frame()  # the first line MONITOR shows: MODULE HELP's, then the SET's
        t.append(line.split(b"] ", 1)[1])
        t.append(m.frame().split(b"] ", 1)[1])
        return t
    run_locked(atlasd, locked_redis, scenario)
