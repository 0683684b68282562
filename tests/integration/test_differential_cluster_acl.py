"""CLUSTER, READONLY, READWRITE, ASKING, WAIT and ACL: a real atlasd against a real redis-server 7.0
that is standalone, has no replicas, no ACL file and atlasd's password (`locked_redis`), replies
compared byte for byte, RESP2 and RESP3.

Cluster-aware clients probe CLUSTER SLOTS/SHARDS and READONLY at connect and fall back on Redis's
"cluster support disabled"; libraries and HELIOS's own store (`store.wait_replicas`) send WAIT; tools
send ACL WHOAMI/LIST/LOG.  All of them must get what such a Redis answers, never an unknown command.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import weakref
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from helios_core.atlas.commands import acl as acl_module
from helios_core.errors import HeliosError
from helios_core.store.remote import RemoteStore
from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_errorstats import errorstats, locked_redis, run_locked  # noqa: F401
from tests.integration.test_differential_tracking import Connect, Wire
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)

DISABLED = b"-ERR This instance has cluster support disabled\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("cluster-acl")) as d:
        yield d


# -- who may call: NOAUTH before anything of ACL runs (written first) --------------------------------

BEFORE_AUTH = [
    ("ACL", "WHOAMI"), ("ACL", "USERS"), ("ACL", "LIST"), ("ACL", "GETUSER", "default"), ("ACL", "LOG"),
    ("ACL", "LOG", "RESET"), ("ACL", "CAT"), ("ACL", "GENPASS"), ("ACL", "DRYRUN", "default", "get", "k"),
    ("ACL", "HELP"), ("ACL", "SETUSER", "u", "on"), ("ACL", "DELUSER", "default"), ("ACL", "LOAD"),
    ("ACL", "SAVE"), ("acl", "whoami"),
    ("CLUSTER", "INFO"), ("CLUSTER", "HELP"), ("READONLY",), ("READWRITE",), ("ASKING",), ("WAIT", "0", "0"),
    ("WAIT", "1", "0"),
    # the table's refusals come first, as in Redis's processCommand
    ("ACL",), ("ACL", "NOSUCH"), ("ACL", "WHOAMI", "x"), ("ACL", "LOG", "1", "2"), ("CLUSTER",),
    ("CLUSTER", "NOSUCH"), ("CLUSTER", "INFO", "x"), ("READONLY", "x"), ("WAIT", "0"),
]


def test_unauthenticated_clients_get_noauth_for_all_of_acl(atlasd: Daemon) -> None:
    """atlasd alone: nothing of ACL (the password's hash, the log) reaches a client that has not
    authenticated on TCP."""
    b = socket.create_connection(("127.0.0.1", atlasd.port), timeout=10)
    f = b.makefile("rb")
    try:
        for args in [("ACL", "LIST"), ("ACL", "GETUSER", "default"), ("ACL", "LOG"), ("ACL", "WHOAMI"),
                     ("ACL", "SETUSER", "u", "on"), ("WAIT", "1", "0")]:
            b.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
            assert f.readline() == NOAUTH, args
    finally:
        f.close()
        b.close()


def test_before_auth_matches_redis(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        b = bare()
        return [(c, b.call(*c)) for c in BEFORE_AUTH]
    run_locked(atlasd, locked_redis, scenario)


# -- replies -------------------------------------------------------------------------------------------

CALLS = [
    # cluster
    ("CLUSTER", "INFO"), ("CLUSTER", "HELP"), ("cluster", "help"), ("CLUSTER", "SLOTS"), ("CLUSTER", "SHARDS"),
    ("CLUSTER", "NODES"), ("CLUSTER", "MYID"), ("CLUSTER", "KEYSLOT", "foo"), ("CLUSTER", "COUNTKEYSINSLOT", "1"),
    ("CLUSTER", "GETKEYSINSLOT", "1", "1"), ("CLUSTER", "LINKS"), ("CLUSTER", "RESET"), ("CLUSTER", "MEET", "a", "1"),
    ("CLUSTER", "ADDSLOTS", "1"), ("CLUSTER", "SETSLOT", "1", "NODE", "x"), ("CLUSTER",), ("CLUSTER", "NOSUCH"),
    ("CLUSTER", "INFO", "x"), ("CLUSTER", "KEYSLOT"), ("CLUSTER", "x" * 300),
    ("READONLY",), ("readonly",), ("READWRITE",), ("ASKING",), ("READONLY", "x"), ("ASKING", "x"),
    # wait
    ("WAIT", "0", "0"), ("WAIT", "-1", "0"), ("WAIT", "0", "9223372036854775807"), ("WAIT", "-5", "100"),
    ("WAIT",), ("WAIT", "0"), ("WAIT", "0", "0", "0"), ("WAIT", "x", "0"), ("WAIT", "0", "x"), ("WAIT", "0", "-1"),
    ("WAIT", "1", "-1"), ("WAIT", "0", "1.5"), ("WAIT", "99999999999999999999", "0"),
    ("WAIT", "0", "9223372036854775808"), ("WAIT", "1", "00"), ("WAIT", "0", "+5"), ("WAIT", "1", "x"),
    ("MULTI",), ("WAIT", "1", "0"), ("WAIT", "5", "x"), ("CLUSTER", "INFO"), ("READONLY",), ("EXEC",),
    ("EVAL", "return redis.pcall('WAIT', '0', '0')", "0"), ("EVAL", "return redis.pcall('CLUSTER', 'INFO')", "0"),
    ("EVAL", "return redis.pcall('READONLY')", "0"), ("EVAL", "return redis.pcall('ASKING')", "0"),
    # acl
    ("ACL", "HELP"), ("ACL", "help"), ("ACL", "WHOAMI"), ("acl", "whoami"), ("ACL", "USERS"), ("ACL", "LIST"),
    ("ACL", "GETUSER", "default"), ("ACL", "GETUSER", "nosuch"), ("ACL", "GETUSER", "DEFAULT"), ("ACL", "CAT"),
    ("ACL", "CAT", "nosuch"), ("ACL", "CAT", "@read"), ("ACL", "CAT", "read", "x"), ("ACL", "cat", "a", "b"),
    ("ACL", "GETUSER", "default", "x"), ("ACL", "GenPass", "1", "2"),
    ("ACL", "GENPASS", "0"), ("ACL", "GENPASS", "4097"), ("ACL", "GENPASS", "x"), ("ACL", "GENPASS", "-1"),
    ("ACL", "GENPASS", "9223372036854775808"), ("ACL", "GENPASS", "1", "2"),
    ("ACL", "DRYRUN", "default", "get", "k"), ("ACL", "DRYRUN", "default", "set", "k", "v"),
    ("ACL", "DRYRUN", "default", "nosuchcmd"), ("ACL", "DRYRUN", "default", "NOSUCH", "x"),
    ("ACL", "DRYRUN", "default", "get"), ("ACL", "DRYRUN", "nosuch", "get", "k"),
    ("ACL", "DRYRUN", "Default", "get", "k"), ("ACL", "DRYRUN", "default", "config", "get", "x"),
    ("ACL", "DRYRUN", "default", "config", "nosuch"), ("ACL", "DRYRUN", "default", "CONFIG", "NOSUCH"),
    ("ACL", "DRYRUN", "default", "config"), ("ACL", "DRYRUN", "default", "config", "get"),
    ("ACL", "DRYRUN", "default", "config|get", "x"), ("ACL", "DRYRUN", "default", "client", "list", "x", "y"),
    ("ACL", "DRYRUN", "default", "acl", "whoami"), ("ACL", "DRYRUN", "default", "FLUSHALL"),
    ("ACL", "DRYRUN", "default"), ("ACL", "DRYRUN"),
    ("ACL", "LOG", "RESET"), ("ACL", "LOG"), ("ACL", "LOG", "x"), ("ACL", "LOG", "-1"), ("ACL", "LOG", "0"),
    ("ACL", "LOG", "1", "2"), ("ACL", "LOG", "RESET", "x"), ("ACL", "LOG", "reset"), ("ACL", "LOG", "1.5"),
    ("ACL", "DELUSER", "nosuch"), ("ACL", "DELUSER", "nosuch", "other"), ("ACL", "DELUSER", "default"),
    ("ACL", "DELUSER", "nosuch", "default"), ("ACL", "DELUSER"),
    ("ACL",), ("ACL", "NOSUCH"), ("ACL", "nosuch", "a"), ("ACL", "WHOAMI", "x"), ("ACL", "USERS", "x"),
    ("ACL", "LIST", "x"), ("ACL", "GETUSER"), ("ACL", "SETUSER"), ("ACL", "LOAD", "x"), ("ACL", "SAVE", "x"),
    ("ACL", "HELP", "x"),
    ("EVAL", "return redis.pcall('ACL', 'WHOAMI')", "0"), ("EVAL", "return redis.pcall('ACL', 'CAT')", "0"),
    ("MULTI",), ("ACL", "WHOAMI"), ("ACL", "GETUSER", "default"), ("ACL", "NOSUCH"), ("EXEC",),
    ("MULTI",), ("ACL", "WHOAMI"), ("ACL", "USERS"), ("EXEC",),
    ("CLIENT", "NO-EVICT", "on"),  # (a line for HELLO/CLIENT INFO below)
    ("HELLO", "3"), ("ACL", "GETUSER", "default"), ("ACL", "LOG"), ("ACL", "CAT"), ("HELLO", "2"),
]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_replies_match_redis(atlasd: Daemon, locked_redis: RedisServer, resp3: bool) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(resp3)
        return [(c, _no_ids(w.call(*c))) for c in CALLS]
    run_locked(atlasd, locked_redis, scenario)


def _no_ids(reply: bytes) -> bytes:
    """HELLO's reply names the connection's id (and atlasd's server name and version)."""
    return reply[:1] if b"proto" in reply else reply


def test_info_cluster_matches_redis(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    """RESP2 (in RESP3 Redis 7.0 sends INFO as a verbatim string, atlasd as a bulk string: INFO's own
    difference, the same text inside)."""
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(False)
        return [w.call("INFO", "cluster"), w.call("INFO", "CLUSTER"), b"cluster_enabled:0" in w.call("INFO", "all")]
    run_locked(atlasd, locked_redis, scenario)


def test_the_texts_are_redis_texts(atlasd: Daemon) -> None:
    """atlasd alone, so a wrong text on both servers would still fail here (checked on 7.0.15)."""
    w = Wire(atlasd.port, atlasd.password, False)
    try:
        assert w.call("CLUSTER", "SLOTS") == DISABLED
        assert w.call("READONLY") == DISABLED
        assert w.call("WAIT", "0", "0") == b":0\r\n"
        assert w.call("ACL", "WHOAMI") == b"$7\r\ndefault\r\n"
        assert w.call("ACL", "DELUSER", "default") == b"-ERR The 'default' user cannot be removed\r\n"
        assert w.call("INFO", "cluster") == b"$30\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n"
    finally:
        w.close()


def test_list_and_getuser_show_the_passwords_sha256(atlasd: Daemon) -> None:
    import hashlib

    digest = hashlib.sha256((atlasd.password or "").encode()).hexdigest().encode()
    w = Wire(atlasd.port, atlasd.password, False)
    try:
        assert w.call("ACL", "LIST") == b"*1\r\n$93\r\nuser default on #" + digest + b" ~* &* +@all\r\n"
        assert b"$64\r\n" + digest + b"\r\n" in w.call("ACL", "GETUSER", "default")
        assert (atlasd.password or "").encode() not in w.call("ACL", "LIST")
    finally:
        w.close()


def test_the_unix_socket_is_the_default_user(atlasd: Daemon) -> None:
    """No AUTH on the socket (its file mode is its password): ACL WHOAMI says default."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(atlasd.socket_path))
    try:
        s.sendall(b"*2\r\n$3\r\nACL\r\n$6\r\nWHOAMI\r\n")
        assert s.recv(100) == b"$7\r\ndefault\r\n"
    finally:
        s.close()


# -- ACL CAT and GENPASS --------------------------------------------------------------------------------

def _bulks(reply: bytes) -> list[bytes]:
    return re.findall(rb"\$\d+\r\n([^\r]*)\r\n", reply)


def test_cat_lists_what_redis_lists_of_atlasds_commands(atlasd: Daemon,
                                                        locked_redis: RedisServer) -> None:  # noqa: F811
    """Per category, atlasd's commands and subcommands are Redis's, less the ones atlasd does not
    have (GEOADD, PFADD, ...); Redis's order is its dict's, so the lists compare as sets."""
    got, want = Wire(atlasd.port, atlasd.password, False), Wire(locked_redis.port, atlasd.password, False)
    try:
        cats = _bulks(want.call("ACL", "CAT"))
        assert _bulks(got.call("ACL", "CAT")) == cats and len(cats) == 21
        ours = set(_bulks(got.call("COMMAND", "LIST")))
        for cat in cats:
            mine, theirs = _bulks(got.call("ACL", "CAT", cat)), set(_bulks(want.call("ACL", "CAT", cat)))
            assert len(mine) == len(set(mine)), cat
            assert set(mine) == theirs & ours, (cat, set(mine) ^ (theirs & ours))
        assert b"acl|whoami" in _bulks(got.call("ACL", "CAT", "SLOW"))
        assert b"wait" in _bulks(got.call("ACL", "CAT", "connection"))
    finally:
        got.close()
        want.close()


def test_genpass_lengths_match_redis(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(False)
        out = []
        for bits in [None, "1", "4", "5", "8", "255", "256", "4095", "4096"]:
            reply = w.call("ACL", "GENPASS") if bits is None else w.call("ACL", "GENPASS", bits)
            (value,) = _bulks(reply)
            out.append((bits, len(value), re.fullmatch(rb"[0-9a-f]+", value) is not None))
        return out
    run_locked(atlasd, locked_redis, scenario)
    w = Wire(atlasd.port, atlasd.password, False)
    try:
        assert len({w.call("ACL", "GENPASS") for _ in range(5)}) == 5
    finally:
        w.close()


# -- ACL LOG: failed AUTH ------------------------------------------------------------------------------

_AGE = re.compile(rb"(\$11\r\nage-seconds\r\n)(?:\$\d+\r\n|,)[0-9.e+-]+\r\n")
_INFO = re.compile(rb"(\$11\r\nclient-info\r\n)\$\d+\r\n([^\r]*)\r\n")


def _log_shape(reply: bytes) -> bytes:
    """An ACL LOG reply without what differs by nature: the entries' ages, and of client-info (a CLIENT
    LIST line: ids, addresses, memory) all but the command and the user."""
    reply = _AGE.sub(rb"\1AGE\r\n", reply)

    def info(m: re.Match[bytes]) -> bytes:
        fields = dict(f.split(b"=", 1) for f in m[2].split(b" ") if b"=" in f)
        return m[1] + b"cmd=%s user=%s resp=%s\r\n" % (fields[b"cmd"], fields[b"user"], fields[b"resp"])
    return _INFO.sub(info, reply)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_log_of_failed_auth_matches_redis(atlasd: Daemon, locked_redis: RedisServer,  # noqa: F811
                                          resp3: bool) -> None:
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(resp3)
        t = [w.call("ACL", "LOG", "RESET"), w.call("ACL", "LOG")]
        b = bare()
        t += [b.call("AUTH", "wrong-1"), b.call("AUTH", "bob", "wrong-2"), b.call("auth", "wrong-3"),
              b.call("AUTH", "wrong-4"), b.call("HELLO", "3", "AUTH", "default", "wrong-5"),
              b.call("Hello", "2", "auth", "nobody", "wrong-6")]
        t += [_log_shape(w.call("ACL", "LOG")), _log_shape(w.call("ACL", "LOG", "2")), w.call("ACL", "LOG", "0")]
        # inside MULTI: context "multi" (and the command EXEC, in client-info)
        t += [w.call("MULTI"), w.call("AUTH", "wrong-7"), w.call("EXEC"), _log_shape(w.call("ACL", "LOG", "1"))]
        t += [w.call("ACL", "LOG", "RESET"), w.call("ACL", "LOG"), w.call("WAIT", "0", "0")]
        return t
    run_locked(atlasd, locked_redis, scenario)


def test_the_log_never_holds_the_password_tried(atlasd: Daemon) -> None:
    w = Wire(atlasd.port, atlasd.password, False)
    b = socket.create_connection(("127.0.0.1", atlasd.port), timeout=10)
    f = b.makefile("rb")
    try:
        w.call("ACL", "LOG", "RESET")
        for args in [(b"AUTH", b"guess-SECRET-1"), (b"AUTH", b"default", b"guess-SECRET-2"),
                     (b"HELLO", b"3", b"AUTH", b"default", b"guess-SECRET-3")]:
            b.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
            assert f.readline() == WRONGPASS
        log = w.call("ACL", "LOG")
        assert log.count(b"$5\r\ncount\r\n") == 2  # (AUTH default x2 folded into one, and HELLO's)
        assert b"SECRET" not in log
        assert b"SECRET" not in w.call("CLIENT", "LIST")
    finally:
        f.close()
        b.close()
        w.close()


def test_the_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: past ACLLOG_MAX_LEN entries the oldest go; a repeat within a minute among the ten
    newest is folded into its entry (count, time and client-info updated, moved to the front)."""
    monkeypatch.setattr(acl_module, "client_line", lambda c, caller: f"id={c.id} cmd=auth user=default")
    class Server:  # (weak-referenceable, as the daemon's server is)
        requirepass = b"pw"
    server = Server()
    ctx = SimpleNamespace(now_ms=1_000_000, engine=None)
    conn = SimpleNamespace(server=server, current=[b"AUTH", b"u", b"p"], id=1)
    for i in range(acl_module.ACLLOG_MAX_LEN + 50):
        acl_module.record_auth_failure(ctx, conn, b"auth", b"user-%d" % i)  # type: ignore[arg-type]
    log = acl_module._LOGS[server]
    assert len(log) == acl_module.ACLLOG_MAX_LEN
    assert log[0].username == b"user-177" and log[-1].username == b"user-50"
    conn.id = 2
    ctx.now_ms += 59_000
    acl_module.record_auth_failure(ctx, conn, b"auth", b"user-170")  # type: ignore[arg-type]
    assert len(log) == acl_module.ACLLOG_MAX_LEN
    assert (log[0].username, log[0].count, log[0].client_info) == (b"user-170", 2, "id=2 cmd=auth user=default")
    acl_module.record_auth_failure(ctx, conn, b"auth", b"user-60")  # type: ignore[arg-type]  (not in the ten newest)
    assert (log[0].username, log[0].count) == (b"user-60", 1)
    assert isinstance(acl_module._LOGS, weakref.WeakKeyDictionary)


# -- WAIT blocks until its timeout, CLIENT UNBLOCK or a hang-up -----------------------------------------

def test_wait_blocks_until_its_timeout(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(False)
        t0 = time.monotonic()
        w.pipeline([("WAIT", "1", "200"), ("PING",)])  # (the PING waits behind it)
        out = [w.frame(), w.frame(), time.monotonic() - t0 >= 0.19]
        w3 = connect(True)
        out += [w3.call("WAIT", "3", "50")]
        return out
    run_locked(atlasd, locked_redis, scenario)


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _blocked(w: Wire) -> bytes:
    return [ln for ln in w.call("INFO", "clients").split(b"\r\n") if ln.startswith(b"blocked_clients:")][0]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_wait_forever_and_client_unblock(atlasd: Daemon, locked_redis: RedisServer,  # noqa: F811
                                         resp3: bool) -> None:
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w, c = connect(resp3), connect(False)
        c.call("CONFIG", "RESETSTAT")
        w.send("WAIT", "1", "0")
        _until(lambda: _blocked(c) == b"blocked_clients:1")
        out = [b"flags=b" in c.call("CLIENT", "LIST", "ID", str(w.id))]
        out += [c.call("CLIENT", "UNBLOCK", str(w.id)), w.frame(), _blocked(c)]
        w.send("WAIT", "2", "0")
        _until(lambda: _blocked(c) == b"blocked_clients:1")
        out += [c.call("CLIENT", "UNBLOCK", str(w.id), "ERROR"), w.frame(), c.call("CLIENT", "UNBLOCK", str(w.id))]
        out += [w.call("PING"), errorstats(c)]
        stats = [ln.split(b",")[0] for ln in c.call("INFO", "commandstats").split(b"\r\n")
                 if ln.startswith(b"cmdstat_wait:")]
        out.append(stats)
        # a hang-up ends the wait
        h = connect(False)
        h.send("WAIT", "1", "0")
        _until(lambda: _blocked(c) == b"blocked_clients:1")
        h.close()
        _until(lambda: _blocked(c) == b"blocked_clients:0")
        return out
    run_locked(atlasd, locked_redis, scenario)


# -- errors counted, and the refusals of what atlasd does not have --------------------------------------

def test_errors_are_counted_as_redis_counts_them(atlasd: Daemon, locked_redis: RedisServer) -> None:  # noqa: F811
    def scenario(bare: Callable[[], Wire], connect: Connect) -> list:
        w = connect(False)
        w.call("CONFIG", "RESETSTAT")
        for c in [("CLUSTER", "INFO"), ("READONLY",), ("ASKING",), ("CLUSTER", "NOPE"), ("WAIT", "x", "0"),
                  ("WAIT", "0", "-1"), ("ACL", "CAT", "nope"), ("ACL", "NOPE"), ("ACL", "DELUSER", "default"),
                  ("ACL", "WHOAMI"), ("WAIT", "0", "0")]:
            w.call(*c)
        stats = [ln.split(b",")[0] + b"," + ln.split(b",")[3] for ln in w.call("INFO", "commandstats").split(b"\r\n")
                 if ln.startswith((b"cmdstat_cluster", b"cmdstat_acl", b"cmdstat_wait", b"cmdstat_readonly",
                                   b"cmdstat_asking"))]
        return [errorstats(w), sorted(stats)]
    run_locked(atlasd, locked_redis, scenario)


def test_setuser_load_and_save_are_refused_saying_why(atlasd: Daemon) -> None:
    w = Wire(atlasd.port, atlasd.password, False)
    try:
        w.call("CONFIG", "RESETSTAT")
        for args in [("ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all"), ("ACL", "SETUSER", "default", "off"),
                     ("acl", "load"), ("ACL", "SAVE")]:
            sub = args[1].upper().encode()
            assert w.call(*args) == (b"-ERR atlasd has one user, 'default' (its password is atlasd.requirepass): "
                                     b"ACL " + sub + b" is not supported\r\n")
        assert errorstats(w) == [b"errorstat_ERR:count=4", b"total_error_replies:4"]
        assert w.call("ACL", "USERS") == b"*1\r\n$7\r\ndefault\r\n"
        assert w.call("ACL", "WHOAMI") == b"$7\r\ndefault\r\n"
    finally:
        w.close()


# -- HELIOS's own store with store.wait_replicas pointed at atlasd ----------------------------------------

def test_a_store_that_waits_for_replicas_gets_an_honest_zero(atlasd: Daemon) -> None:
    """WAIT answers 0 after its timeout, so the write fails as "0 of 1 replicas acknowledged"
    (store_replication, 503), not as a server that refused WAIT; with wait_replicas 0 nothing waits."""
    async def run() -> None:
        url = f"redis://:{atlasd.password}@127.0.0.1:{atlasd.port}/0"
        store = RemoteStore(url, wait_replicas=1, wait_timeout_ms=50)
        try:
            with pytest.raises(HeliosError) as e:
                await store.set("cluster-acl:k", b"v")
            assert e.value.code == "store_replication"
            assert "only 0 of 1 replicas" in str(e.value)
            assert await store.get("cluster-acl:k") == b"v"  # (applied on the primary, as the error says)
        finally:
            await store.close()
    asyncio.run(run())




# -- redis-py's RedisCluster: its probe fails the same way on both ---------------------------------------

def test_redis_py_cluster_client_falls_back_as_on_redis(atlasd: Daemon,
                                                        locked_redis: RedisServer) -> None:  # noqa: F811
    """RedisCluster's first call (CLUSTER SLOTS) meets "cluster support disabled" on both servers and
    gives up with the same exception, so code that falls back to a plain client on it works on atlasd."""
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException

    errors = []
    for port in (atlasd.port, locked_redis.port):
        with pytest.raises(RedisClusterException, match="Cluster mode is not enabled on this node") as e:
            RedisCluster(host="127.0.0.1", port=port, password=atlasd.password, socket_timeout=5)
        errors.append((type(e.value), str(e.value).replace(str(port), "PORT")))
    assert errors[0] == errors[1]
    plain = redis.Redis(host="127.0.0.1", port=atlasd.port, password=atlasd.password)
    try:
        assert plain.ping() is True
    finally:
        plain.close()
