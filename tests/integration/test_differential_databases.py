"""Numbered databases (SELECT, MOVE, SWAPDB, FLUSHDB/FLUSHALL, COPY ... DB, and everything that is
per database): a real atlasd against a real redis-server, byte for byte, RESP2 and RESP3.

Scenarios run the same script of commands on both servers (each from an empty server, see
`run_both`) and compare the transcripts: replies, error texts, pushes, pub/sub messages.  The
random programs run commands on a small keyspace over three databases through two connections
that SELECT as they go, and compare every database's content after every command.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_tracking import Connect, Wire, field, run_both
from tests.integration.test_differential_types import Raw, norm_for
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("databases")) as d:
        yield d


def script(*commands: tuple[str, ...]) -> list[tuple[bytes, ...]]:
    return [tuple(a.encode() for a in c) for c in commands]


def transcript(w: Wire, commands: list[tuple[bytes, ...]]) -> list[bytes]:
    # (HELLO's reply names the server and its version: only its type is compared)
    return [w.call(*c)[:1] if c[0] == b"HELLO" else w.call(*c) for c in commands]


# -- errors and replies, one connection --------------------------------------------------------------

ERRORS_AND_REPLIES = script(
    ("SELECT", "1"), ("SELECT", "15"), ("SELECT", "16"), ("SELECT", "-1"), ("SELECT", "x"), ("SELECT", "1.5"),
    ("SELECT", "99999999999"), ("SELECT", "2147483648"), ("SELECT", ""), ("SELECT", " 1"), ("SELECT",),
    ("SELECT", "1", "2"), ("SELECT", "01"), ("SELECT", "+1"), ("SELECT", "-0"), ("SELECT", "2147483647"),
    ("SELECT", "-2147483649"), ("SELECT", "0x1"), ("SELECT", "1e1"), ("select", "3"),
    ("MOVE", "k", "01"), ("SWAPDB", "01", "1"), ("SWAPDB", "-2147483649", "0"), ("SWAPDB", "0", "-0"),
    ("COPY", "k", "x", "DB", "01"), ("COPY", "k", "x", "DB", "-2147483649"), ("COPY", "k", "x", "db", "2"),
    ("SET", "k", "v3"), ("DBSIZE",), ("GET", "k"),
    ("MOVE", "k", "3"), ("MOVE", "k", "16"), ("MOVE", "k", "-1"), ("MOVE", "k", "x"), ("MOVE", "k", "99999999999"),
    ("MOVE", "nope", "4"), ("MOVE", "nope", "3"), ("MOVE", "k"),
    ("MOVE", "k", "4"), ("GET", "k"), ("DBSIZE",), ("SELECT", "4"), ("GET", "k"), ("DBSIZE",),
    ("SET", "k", "other"), ("SELECT", "3"), ("SET", "k", "again"), ("MOVE", "k", "4"), ("GET", "k"),
    ("SWAPDB", "x", "1"), ("SWAPDB", "1", "x"), ("SWAPDB", "x", "y"), ("SWAPDB", "99999999999", "1"),
    ("SWAPDB", "1", "99999999999"), ("SWAPDB", "-1", "1"), ("SWAPDB", "1", "16"), ("SWAPDB", "16", "x"),
    ("SWAPDB", "1"), ("SWAPDB", "3", "3"), ("GET", "k"), ("SWAPDB", "3", "4"), ("GET", "k"), ("DBSIZE",),
    ("SWAPDB", "4", "3"), ("GET", "k"),
    ("COPY", "k", "k"), ("COPY", "k", "k", "DB", "3"), ("COPY", "k", "k", "DB", "5"), ("SELECT", "5"), ("GET", "k"),
    ("SELECT", "3"), ("COPY", "k", "k", "DB", "5"), ("COPY", "k", "k", "DB", "5", "REPLACE"),
    ("COPY", "k", "k2", "DB", "16"), ("COPY", "k", "k2", "DB", "x"), ("COPY", "k", "k2", "DB", "-1"),
    ("COPY", "k", "k2", "DB", "99999999999"), ("COPY", "k", "k2", "DB"), ("COPY", "k", "k2", "REPLACE", "DB", "6"),
    ("COPY", "nope", "k2", "DB", "6"),
    ("FLUSHDB", "x"), ("FLUSHDB", "ASYNC", "SYNC"), ("FLUSHDB", "sync"), ("DBSIZE",), ("GET", "k"),
    ("SELECT", "5"), ("DBSIZE",), ("FLUSHDB", "ASYNC"), ("DBSIZE",), ("SELECT", "4"), ("DBSIZE",),
    ("FLUSHALL", "x"), ("FLUSHALL",), ("DBSIZE",), ("SELECT", "6"), ("DBSIZE",),
    ("CONFIG", "GET", "databases"), ("CONFIG", "SET", "databases", "4"),
    ("COMMAND", "INFO", "select", "move", "swapdb", "flushdb", "flushall", "copy", "dbsize"),
    ("COMMAND", "GETKEYS", "MOVE", "k", "1"), ("COMMAND", "GETKEYS", "COPY", "a", "b", "DB", "1"),
)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_errors_and_replies(atlasd: Daemon, redis_server: RedisServer, resp3: bool) -> None:  # noqa: F811
    run_both(atlasd, redis_server, lambda connect: transcript(connect(resp3), ERRORS_AND_REPLIES))


def test_move_and_copy_keep_type_ttl_and_refuse_existing(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        t = transcript(w, script(
            ("RPUSH", "l", "a", "b"), ("HSET", "h", "f", "v"), ("SADD", "s", "x"), ("ZADD", "z", "1", "m"),
            ("XADD", "x", "1-1", "f", "v"), ("SET", "t", "v", "EX", "1000"),
            ("MOVE", "l", "1"), ("MOVE", "h", "1"), ("MOVE", "s", "1"), ("MOVE", "z", "1"), ("MOVE", "x", "1"),
            ("MOVE", "t", "1"), ("DBSIZE",),
            ("SELECT", "1"), ("LRANGE", "l", "0", "-1"), ("HGETALL", "h"), ("SMEMBERS", "s"),
            ("ZRANGE", "z", "0", "-1", "WITHSCORES"), ("XRANGE", "x", "-", "+"), ("TYPE", "t"),
            ("COPY", "l", "l", "DB", "2"), ("COPY", "h", "h2", "DB", "0"), ("COPY", "z", "z", "DB", "0"),
            ("SELECT", "0"), ("HGETALL", "h2"), ("ZRANGE", "z", "0", "-1"), ("SET", "l", "in0"),
            ("SELECT", "1"), ("MOVE", "l", "0"), ("LLEN", "l"), ("SELECT", "2"), ("LRANGE", "l", "0", "-1"),
            ("LPUSH", "l", "c"), ("SELECT", "1"), ("LRANGE", "l", "0", "-1"),
        ))
        t.append(w.call("TTL", "t")[:2])  # (":1" of ":1000", ":999": a TTL was kept)
        t += [w.call("EXPIRETIME", "t") != b":-1\r\n"]
        return t
    run_both(atlasd, redis_server, scenario)


def test_keys_scan_randomkey_dbsize_are_per_database(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        t = transcript(w, script(
            ("MSET", "a", "1", "b", "2"), ("SELECT", "7"), ("SET", "c", "3"), ("DBSIZE",), ("KEYS", "*"),
            ("SCAN", "0", "COUNT", "100"), ("RANDOMKEY",), ("SELECT", "8"), ("RANDOMKEY",), ("KEYS", "*"),
            ("SCAN", "0"), ("EXISTS", "a", "c"), ("SELECT", "0"), ("EXISTS", "a", "b", "c"), ("DBSIZE",),
        ))
        t.append(sorted(w.call("KEYS", "*").split(b"\r\n")))
        return t
    run_both(atlasd, redis_server, scenario)


def test_info_keyspace_and_client_list(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(False)
        t = transcript(w, script(("SET", "a", "1"), ("SELECT", "3"), ("SET", "b", "1", "EX", "100"),
                                 ("SET", "c", "2"), ("SELECT", "12"), ("SET", "d", "1"), ("SELECT", "13")))
        info = w.call("INFO", "keyspace").split(b"\r\n")
        # (avg_ttl is an estimate each server makes by sampling, at its own moments)
        t.append([line.rsplit(b",avg_ttl=", 1)[0] for line in info[1:]])  # (and so the bulk's length)
        t.append(field(w.call("CLIENT", "INFO"), b"db"))
        lines = w.call("CLIENT", "LIST").split(b"\r\n", 1)[1].split(b"\n")  # (after the bulk's length)
        line = next(x for x in lines if x.startswith(b"id=%d " % w.id))
        t.append(field(line, b"db"))
        t += transcript(w, script(("SWAPDB", "3", "13"), ("DBSIZE",), ("FLUSHALL",)))
        t.append(w.call("INFO", "keyspace"))
        return t
    run_both(atlasd, redis_server, scenario)


# -- connection state: RESET, HELLO, MULTI, scripts ------------------------------------------------

@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_reset_hello_multi_and_scripts(atlasd: Daemon, redis_server: RedisServer, resp3: bool) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w = connect(resp3)
        t = transcript(w, script(("SELECT", "2"), ("SET", "k", "two"), ("HELLO", "3" if resp3 else "2"),
                                 ("GET", "k"), ("RESET",)))
        if w.sock.getpeername()[1] == atlasd.port:  # (RESET forgets AUTH; only atlasd's TCP needs one)
            assert w.call("AUTH", atlasd.password or "") == b"+OK\r\n"
        t += transcript(w, script(
            ("GET", "k"), ("SELECT", "2"), ("HELLO",), ("GET", "k"), ("SELECT", "0"),
            # MULTI with SELECT: the commands after it run there, and the connection stays there
            ("MULTI",), ("SET", "k", "zero"), ("SELECT", "5"), ("SET", "k", "five"), ("SELECT", "99"),
            ("MOVE", "k", "2"), ("GET", "k"), ("EXEC",), ("GET", "k"), ("SELECT", "2"), ("GET", "k"),
            # a script's SELECT is its own (Redis 7): the caller's database does not change
            ("EVAL", "redis.call('SELECT', 6); redis.call('SET', 'k', 'six'); return redis.call('GET', 'k')", "0"),
            ("GET", "k"), ("SELECT", "6"), ("GET", "k"),
            ("EVAL", "return redis.call('SELECT', 16)", "0"), ("EVAL", "return redis.pcall('SELECT', 'x')", "0"),
            ("EVAL", "redis.call('SELECT', 1); return redis.call('DBSIZE')", "0"), ("DBSIZE",),
            ("FUNCTION", "LOAD", "#!lua name=dblib\nredis.register_function('sel', function(k, a) "
             "redis.call('SELECT', a[1]); return redis.call('GET', k[1]) end)"),
            ("FCALL", "sel", "1", "k", "2"), ("GET", "k"), ("FUNCTION", "DELETE", "dblib"),
        ))
        t.append(field(w.call("CLIENT", "INFO"), b"db"))
        return t
    run_both(atlasd, redis_server, scenario)


def test_monitor_names_the_database(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        mon, w = connect(False), connect(False)
        t = [mon.call("MONITOR")]
        # A script's lines name the database its SELECT chose; EXEC follows the commands it ran.
        t += transcript(w, script(("SET", "a", "1"), ("SELECT", "3"), ("SET", "a", "3"), ("MOVE", "a", "4"),
                                  ("SELECT", "5"), ("DBSIZE",), ("SWAPDB", "5", "3"), ("GET", "a"),
                                  ("EVAL", "redis.call('SELECT', '2'); return redis.call('SET', 'b', '1')", "0"),
                                  ("MULTI",), ("SELECT", "6"), ("SET", "c", "1"), ("EXEC",), ("GET", "c")))
        w.call("PING", "sync")
        lines = []
        while b'"sync"' not in (f := mon.frame()):
            lines.append(f)
        # "+<time> [<db> <address>] <command>": the time and the address differ between the servers
        t.append([line.split(b" [", 1)[1].split(b" ", 1)[0] + b" " + line.split(b"] ", 1)[1] for line in lines])
        return t
    run_both(atlasd, redis_server, scenario)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_transactions_that_swap_move_and_flush(atlasd: Daemon, redis_server: RedisServer, resp3: bool) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        w, other = connect(resp3), connect(False)
        t = transcript(w, script(
            ("MULTI",), ("SET", "a", "0"), ("SWAPDB", "0", "1"), ("GET", "a"), ("SELECT", "1"), ("GET", "a"),
            ("MOVE", "a", "2"), ("SELECT", "2"), ("RPUSH", "a", "x"), ("FLUSHDB",), ("DBSIZE",), ("EXEC",),
            ("DBSIZE",), ("SELECT", "1"), ("EXISTS", "a"), ("SELECT", "0"),
            ("WATCH", "a"),
        ))
        t.append(other.call("SELECT", "0"))
        t.append(other.call("SET", "a", "other"))  # the watched key changes: EXEC fails, nothing runs
        t += transcript(w, script(("MULTI",), ("SELECT", "3"), ("SET", "b", "1"), ("EXEC",), ("SELECT", "3"),
                                  ("GET", "b"), ("DBSIZE",)))
        t.append(field(w.call("CLIENT", "INFO"), b"db"))
        return t
    run_both(atlasd, redis_server, scenario)


# -- keyspace notifications --------------------------------------------------------------------------

@pytest.mark.parametrize("resp3, flags", [(False, "KEA"), (True, "KEA"), (False, "KEAn"), (True, "Kgn$l")],
                         ids=["resp2", "resp3", "resp2-new", "resp3-some"])
def test_notifications_name_the_database(atlasd: Daemon, redis_server: RedisServer, resp3: bool,  # noqa: F811
                                         flags: str) -> None:
    def scenario(connect: Connect) -> list:
        w, sub = connect(False), connect(resp3)
        t = [w.call("CONFIG", "SET", "notify-keyspace-events", flags)]
        t.append(sub.call("PSUBSCRIBE", "__key*@*__:*"))
        t += transcript(w, script(
            ("SET", "a", "1"), ("SELECT", "4"), ("SET", "a", "2"), ("LPUSH", "l", "x"), ("MOVE", "a", "5"),
            ("MOVE", "a", "0"), ("COPY", "l", "l", "DB", "9"), ("EXPIRE", "l", "100"), ("SWAPDB", "4", "9"),
            ("FLUSHDB",), ("SELECT", "9"), ("DEL", "l"), ("FLUSHALL",),
        ))
        t.append(sub.drain())
        t.append(w.call("CONFIG", "SET", "notify-keyspace-events", ""))
        return t
    run_both(atlasd, redis_server, scenario)


# -- blocking commands -----------------------------------------------------------------------------

def test_blocking_waits_in_its_own_database(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, b, w = connect(False), connect(False), connect(False)
        t = [a.call("SELECT", "2"), b.call("SELECT", "3")]
        a.send("BLPOP", "q", "0")
        b.send("BLPOP", "q", "0")
        t.append(w.call("RPUSH", "q", "in0"))   # database 0: neither wakes
        t += [w.call("SELECT", "3"), w.call("RPUSH", "q", "in3")]  # b's database
        t.append(b.frame())
        t += [w.call("SELECT", "5"), w.call("RPUSH", "q", "in5"), w.call("SWAPDB", "5", "2")]  # q now in a's 2
        t.append(a.frame())
        t += [w.call("SELECT", "2"), w.call("LRANGE", "q", "0", "-1")]
        # a client blocked on a zset wakes on SWAPDB too; one whose key is still absent keeps waiting
        t += [a.call("SELECT", "6"), b.call("SELECT", "7")]
        a.send("BZPOPMIN", "z", "0")
        b.send("BLPOP", "q", "0.2")
        t += [w.call("SELECT", "8"), w.call("ZADD", "z", "1", "m"), w.call("SWAPDB", "8", "6")]
        t += [a.frame(), b.frame()]
        return t
    run_both(atlasd, redis_server, scenario)


# -- WATCH -------------------------------------------------------------------------------------------

def test_watch_is_per_database(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, w = connect(False), connect(False)

        def attempt(*writes: tuple[str, ...], watch: tuple[str, ...] = ("k",)) -> list[bytes]:
            out = [a.call("WATCH", *watch)]
            out += [w.call(*c) for c in writes]
            out += [a.call("MULTI"), a.call("PING"), a.call("EXEC")]
            return out
        t = [a.call("SELECT", "1"), w.call("SELECT", "0")]
        t += attempt(("SET", "k", "in0"))                               # another database: EXEC runs
        t += attempt(("SELECT", "1"), ("SET", "k", "in1"))              # the same one: EXEC fails
        t += attempt(("SELECT", "2"), ("SET", "j", "x"), ("SWAPDB", "1", "2"))  # both held k or j ...
        t += attempt(("SELECT", "3"), ("SWAPDB", "3", "4"), watch=("nothere",))  # neither had it: runs
        t += attempt(("SELECT", "5"), ("SET", "nothere", "v"), ("SWAPDB", "5", "1"), watch=("nothere",))
        t += attempt(("SELECT", "6"), ("FLUSHDB",), watch=("nothere",))  # another database flushed
        t += attempt(("SELECT", "1"), ("FLUSHDB",), watch=("nothere",))  # its own: the key was there
        t += attempt(("SELECT", "1"), ("FLUSHDB",), watch=("nothere",))  # ... and now was not
        t += attempt(("SET", "k", "v"), ("FLUSHALL",))
        return t
    run_both(atlasd, redis_server, scenario)


# -- CLIENT TRACKING -----------------------------------------------------------------------------

def test_tracking_invalidates_by_key_name_in_any_database(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, w = connect(True), connect(False)
        t = [a.call("CLIENT", "TRACKING", "ON"), a.call("SELECT", "1"), a.call("GET", "k"), a.call("GET", "j")]
        t += [w.call("SET", "k", "in0"), a.drain()]                      # same name, database 0
        t += [a.call("GET", "k"), w.call("SELECT", "2"), w.call("FLUSHDB"), a.drain()]  # any FLUSHDB
        t += [a.call("GET", "k"), w.call("SWAPDB", "1", "2"), a.drain()]
        t += [w.call("SELECT", "1"), w.call("SET", "k", "x"), a.drain()]
        t += [a.call("GET", "k"), w.call("MOVE", "k", "3"), a.drain()]
        return t
    run_both(atlasd, redis_server, scenario)


# -- random programs over three databases ---------------------------------------------------------------

KEYS = [b"a", b"b", b"l", b"h"]
DBS = [b"0", b"1", b"2"]
key = st.sampled_from(KEYS)
db = st.sampled_from(DBS + [b"3", b"16"])
val = st.sampled_from([b"1", b"x", b"10"])

STEPS = st.one_of(
    st.tuples(st.just(b"SELECT"), st.sampled_from(DBS)).map(list),
    st.tuples(st.just(b"SET"), key, val).map(list),
    st.tuples(st.just(b"GET"), key).map(list),
    st.tuples(st.just(b"INCR"), key).map(list),
    st.tuples(st.just(b"DEL"), key).map(list),
    st.tuples(st.just(b"RPUSH"), key, val).map(list),
    st.tuples(st.just(b"LPOP"), key).map(list),
    st.tuples(st.just(b"HSET"), key, val, val).map(list),
    st.tuples(st.just(b"EXPIRE"), key, st.just(b"1000")).map(list),
    st.tuples(st.just(b"MOVE"), key, db).map(list),
    st.tuples(st.just(b"COPY"), key, key, st.just(b"DB"), db).map(list),
    st.tuples(st.just(b"COPY"), key, key, st.just(b"DB"), db, st.just(b"REPLACE")).map(list),
    st.tuples(st.just(b"SWAPDB"), db, db).map(list),
    st.tuples(st.just(b"RENAME"), key, key).map(list),
    st.just([b"FLUSHDB"]), st.just([b"DBSIZE"]), st.just([b"KEYS", b"*"]),
)
programs = st.lists(st.tuples(STEPS, st.sampled_from([0, 1]), st.booleans()), min_size=1, max_size=20)


class Sides:
    """Per server: two working connections (RESP2, RESP3 by choice) and an observer."""

    def __init__(self, port: int, password: str | None) -> None:
        self.conns = [[Raw(port, password, False), Raw(port, password, True)],
                      [Raw(port, password, False), Raw(port, password, True)]]
        self.dbs = [b"0", b"0"]  # each working connection's database (both protocols follow it)
        self.observer = Raw(port, password, False)

    def close(self) -> None:
        for c in [*self.conns[0], *self.conns[1], self.observer]:
            c.close()

    def reset(self) -> None:
        for pair in self.conns:
            for c in pair:
                c.call([b"SELECT", b"0"])
        self.dbs = [b"0", b"0"]
        assert self.observer.call([b"FLUSHALL"]) == ("+", "OK")

    def run(self, args: list[bytes], who: int, resp3: bool) -> object:
        if args[0] == b"SELECT":  # both protocols' connections of `who` stand for one client
            replies = [c.call(args) for c in self.conns[who]]
            if replies[0] == ("+", "OK"):
                self.dbs[who] = args[1]
            return replies[0]
        reply = norm_for(args, self.conns[who][1 if resp3 else 0].call(args))
        if args[0] == b"KEYS" and reply[0] == "*":  # (Redis answers in hash order)
            return ("*", sorted(reply[1]))
        return reply

    def state(self) -> list:
        out: list = []
        o = self.observer
        for index in DBS:
            o.call([b"SELECT", index])
            types = o.call_many([[b"TYPE", k] for k in KEYS])
            reads = []
            for k, (_, t) in zip(KEYS, types, strict=True):
                reads.append({"string": [b"GET", k], "hash": [b"HGETALL", k],
                              "list": [b"LRANGE", k, b"0", b"-1"]}.get(t, [b"EXISTS", k]))
                reads.append([b"TTL", k])
            replies = o.call_many(reads)
            out.append([(t, norm_for(r, x), ttl[1] != "-1")
                        for (_, t), r, x, ttl in zip(types, reads[::2], replies[::2], replies[1::2], strict=True)])
        o.call([b"SELECT", b"0"])
        return out


@pytest.fixture(scope="module")
def sides(atlasd: Daemon, redis_server: RedisServer) -> Iterator[tuple[Sides, Sides]]:  # noqa: F811
    a, r = Sides(atlasd.port, atlasd.password), Sides(redis_server.port, None)
    try:
        yield a, r
    finally:
        a.close()
        r.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_over_three_databases(sides: tuple[Sides, Sides], program: list) -> None:
    a, r = sides
    a.reset()
    r.reset()
    done: list = []
    for args, who, resp3 in program:
        got, want = a.run(args, who, resp3), r.run(args, who, resp3)
        done.append((args, who, resp3))
        assert got == want, f"{args!r} after {done!r}: atlasd {got!r}, redis {want!r}"
        assert a.state() == r.state(), f"databases differ after {done!r}"
