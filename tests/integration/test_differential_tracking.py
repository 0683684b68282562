"""CLIENT TRACKING (server-assisted client-side caching): a real atlasd against a real redis-server.

Each scenario runs the same commands on both servers over raw sockets and
records every frame each connection received, byte for byte: replies, RESP3
`>2 invalidate` pushes, and RESP2 `message`s on `__redis__:invalidate` for a
REDIRECT target.  A connection's pending invalidations are collected by a
PING after the write's reply came back: both servers have sent them by then
(atlasd once the write is durable, as its reply).  Client ids differ between
the servers and are written as `<id>` in the transcripts.

What is not differential: the tracking-table-max-keys cap (both invalidate keys
picked at random), the memory freed at disconnect (Redis forgets lazily),
redis-py's own client-side cache running against atlasd, and two in-process
cases (an invalidation held while its write's fsync is; active expiry under
the engine's own clock).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cache import CacheConfig
from redis.connection import CacheProxyConnection

from helios_core.atlas.daemon import AtlasServer
from helios_core.atlas.fsops import FaultyFs
from tests.integration.test_atlasd_inprocess import Raw, run, wire
from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)

SYNC = b"$4\r\nsync\r\n"
SYNC_SUBSCRIBED = b"*2\r\n$4\r\npong\r\n$4\r\nsync\r\n"


class Wire:
    """One raw connection whose frames are kept as the bytes the server sent."""

    def __init__(self, port: int, password: str | None, resp3: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        if password is not None:
            assert self.call(b"AUTH", password.encode()) == b"+OK\r\n"
        if resp3:
            assert self.call(b"HELLO", b"3").startswith(b"%")
        self.id = int(self.call(b"CLIENT", b"ID")[1:-2])

    def close(self) -> None:
        self.sock.close()

    def send(self, *args: bytes | str) -> None:
        self.pipeline([args])

    def pipeline(self, commands: list[tuple[bytes | str, ...]]) -> None:
        """Send commands in one write (the server reads them as one batch)."""
        out = b""
        for args in commands:
            parts = [a.encode() if isinstance(a, str) else a for a in args]
            out += b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)
        self.sock.sendall(out)

    def call(self, *args: bytes | str) -> bytes:
        self.send(*args)
        return self.frame()

    def drain(self) -> list[bytes]:
        """Every frame that arrived before the reply to a PING sent now."""
        self.send(b"PING", b"sync")
        got = []
        while (f := self.frame()) not in (SYNC, SYNC_SUBSCRIBED):
            got.append(f)
        return got

    def frame(self) -> bytes:
        start = 0
        end = self._end(start)
        while end is None:
            self._fill()
            end = self._end(start)
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _end(self, at: int) -> int | None:
        """Where the frame starting at `at` ends in the buffer, or None if it is not all here."""
        nl = self.buf.find(b"\r\n", at)
        if nl < 0:
            return None
        kind, head, after = self.buf[at:at + 1], self.buf[at + 1:nl], nl + 2
        if kind in (b"$", b"=", b"!"):
            n = int(head)
            if n < 0:
                return after
            return after + n + 2 if len(self.buf) >= after + n + 2 else None
        if kind in (b"*", b"~", b">", b"%", b"|"):
            n = int(head)
            if kind in (b"%", b"|"):
                n *= 2
            for _ in range(max(n, 0)):
                end = self._end(after)
                if end is None:
                    return None
                after = end
            return after
        return after


Connect = Callable[[bool], Wire]


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("tracking")) as d:
        yield d


def run_both(atlasd: Daemon, redis: RedisServer, scenario: Callable[[Connect], list]) -> None:
    """Run `scenario` on each server (from an empty keyspace) and compare the transcripts."""
    out = []
    for port, password in ((atlasd.port, atlasd.password), (redis.port, None)):
        wires: list[Wire] = []

        def connect(resp3: bool, port: int = port, password: str | None = password,
                    wires: list[Wire] = wires) -> Wire:
            w = Wire(port, password, resp3)
            wires.append(w)
            return w
        try:
            assert connect(False).call(b"FLUSHALL") == b"+OK\r\n"
            out.append(scenario(connect))
        finally:
            for w in wires:
                w.close()
    assert out[0] == out[1]


def ids(frame: bytes, *wires: Wire) -> bytes:
    """A frame with the client ids of `wires` written as <id>."""
    for w in wires:
        frame = frame.replace(b":%d\r\n" % w.id, b":<id>\r\n")
        if frame == b"redir=%d" % w.id:
            frame = b"redir=<id>"
    return frame


def field(line: bytes, name: bytes) -> bytes:
    """One field of a CLIENT INFO line."""
    return next(f for f in line.split() if f.startswith(name + b"="))


# -- differential scenarios ------------------------------------------------------------------

def test_default_mode_resp3_invalidates_once(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, b = connect(True), connect(False)
        t = [a.call("CLIENT", "TRACKING", "ON"), a.call("GET", "k"), a.call("MGET", "k", "k2"),
             a.call("HGET", "h", "f"), a.call("EXISTS", "gone")]
        t += [b.call("SET", "k", "v"), a.drain()]
        t += [b.call("SET", "k", "v2"), a.drain()]  # forgotten after one invalidation: silence
        t += [b.call("HSET", "h", "f", "1"), a.drain()]
        t += [b.call("DEL", "k", "k2"), a.drain()]  # k2 was never there: no change, no message
        t += [b.call("SET", "k2", "x"), a.drain()]
        t += [a.call("GET", "k"), a.call("SET", "k", "mine"), a.drain()]  # its own write: reply, then push
        t += [b.call("SET", "other", "1"), a.drain()]
        # Pipelined: its own invalidation comes right after the write's reply, before the next reply.
        a.call("GET", "k")
        a.pipeline([("SET", "k", "again"), ("GET", "other")])
        t += [[a.frame() for _ in range(3)], a.drain()]
        # A script's reads count for the client that ran it (EVAL_RO's own keys do not: its commands do).
        t += [a.call("EVAL", "return redis.call('get', KEYS[1])", "1", "s1"),
              a.call("EVAL_RO", "return 1", "1", "s2"), b.call("MSET", "s1", "1", "s2", "2"), a.drain()]
        t += [a.call("CLIENT", "TRACKINGINFO"), a.call("CLIENT", "GETREDIR")]
        t += [field(a.call("CLIENT", "INFO"), b"flags"), field(a.call("CLIENT", "INFO"), b"redir")]
        return t
    run_both(atlasd, redis_server, scenario)


def test_redirect_to_resp2_subscriber(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        c, a, a3, b = connect(False), connect(False), connect(True), connect(False)
        t = [c.call("SUBSCRIBE", "__redis__:invalidate")]
        t += [a.call("CLIENT", "TRACKING", "ON", "REDIRECT", str(c.id)), a.call("GET", "k"), a.call("GET", "j")]
        t += [a3.call("CLIENT", "TRACKING", "ON", "REDIRECT", str(c.id)), a3.call("GET", "k")]
        t += [b.call("SET", "k", "1"), sorted(c.drain()), a.drain(), a3.drain()]
        t += [ids(a.call("CLIENT", "GETREDIR"), c), ids(a.call("CLIENT", "TRACKINGINFO"), c)]
        t += [ids(field(a.call("CLIENT", "INFO"), b"redir"), c)]
        # A flush: a null in the tracking client's protocol ($-1 for RESP2, _ for RESP3), to both.
        t += [b.call("FLUSHALL"), sorted(c.drain())]
        # The target goes away: a RESP2 tracker cannot be told; a RESP3 one gets tracking-redir-broken.
        t += [a.call("GET", "j"), a3.call("GET", "j")]
        c.close()
        t += [b.call("SET", "j", "2"), a.drain(), [ids(f, c) for f in a3.drain()]]
        t += [ids(a.call("CLIENT", "TRACKINGINFO"), c), field(a.call("CLIENT", "INFO"), b"flags")]
        return t
    run_both(atlasd, redis_server, scenario)


def test_bcast_prefixes_and_noloop(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, b, all_ = connect(True), connect(False), connect(True)
        t = [a.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a:", "PREFIX", "b:", "NOLOOP"),
             all_.call("CLIENT", "TRACKING", "ON", "BCAST")]
        t += [b.call("SET", "a:1", "x"), a.drain(), all_.drain()]
        t += [b.call("SET", "c:1", "x"), a.drain(), all_.drain()]
        t += [b.call("MSET", "b:2", "1", "a:2", "1", "a:1", "2"), a.drain(), all_.drain()]
        t += [a.call("SET", "a:3", "mine"), a.drain(), all_.drain()]  # NOLOOP: not its own write
        t += [a.call("GET", "a:1"), b.call("SET", "zzz", "1"), a.drain()]  # BCAST remembers no reads
        t += [a.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "c:"), b.call("DEL", "c:1"), a.drain()]
        t += [a.call("CLIENT", "TRACKINGINFO"), field(a.call("CLIENT", "INFO"), b"flags")]
        info = a.call("INFO", "stats") + a.call("INFO", "clients")
        t += [line for line in info.split(b"\r\n") if line.startswith(b"tracking_")]
        return t
    run_both(atlasd, redis_server, scenario)


def test_noloop_optin_optout(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        n, i, o, b = connect(True), connect(True), connect(True), connect(False)
        t = [n.call("CLIENT", "TRACKING", "ON", "NOLOOP"), n.call("GET", "k1"), n.call("SET", "k1", "1"), n.drain()]
        t += [b.call("SET", "k1", "2"), n.drain()]  # its own write forgot the key
        t += [i.call("CLIENT", "TRACKING", "ON", "OPTIN"), i.call("GET", "k2"), i.call("CLIENT", "CACHING", "YES"),
              i.call("CLIENT", "TRACKINGINFO"), i.call("GET", "k3"), i.call("GET", "k4")]
        t += [i.call("CLIENT", "CACHING", "YES"), i.call("MULTI"), i.call("GET", "k5"), i.call("GET", "k6"),
              i.call("EXEC"), i.call("GET", "k7")]
        t += [o.call("CLIENT", "TRACKING", "ON", "OPTOUT"), o.call("GET", "k2"), o.call("CLIENT", "CACHING", "NO"),
              o.call("CLIENT", "TRACKINGINFO"), o.call("GET", "k3"), o.call("GET", "k4")]
        for key in ("k2", "k3", "k4", "k5", "k6", "k7"):
            t += [b.call("SET", key, "x"), i.drain(), o.drain()]
        return t
    run_both(atlasd, redis_server, scenario)


def test_flush_and_expiry(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, bc, b = connect(True), connect(True), connect(False)
        t = [a.call("CLIENT", "TRACKING", "ON"), bc.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "x")]
        t += [a.call("GET", "k"), b.call("SET", "k", "1"), b.call("FLUSHALL"), a.drain(), bc.drain()]
        t += [a.call("GET", "k"), b.call("FLUSHDB"), a.drain()]
        t += [a.call("FLUSHALL"), a.drain()]  # its own flush: the reply, then the null
        t += [b.call("SET", "k", "1", "PX", "200"), a.call("GET", "k")]
        # Wait for the TTL by asking (no sleep): the read that finds it expired deletes it.
        deadline = time.monotonic() + 10
        while b.call("EXISTS", "k") != b":0\r\n":
            assert time.monotonic() < deadline, "k did not expire"
        t += [a.drain()]
        return t
    run_both(atlasd, redis_server, scenario)


def test_errors_and_settings(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    def scenario(connect: Connect) -> list:
        a, a3 = connect(False), connect(True)
        t: list = []
        for w in (a, a3):
            t += [w.call("CLIENT", "TRACKINGINFO"), w.call("CLIENT", "GETREDIR"),
                  w.call("CLIENT", "CACHING", "YES"),
                  w.call("CLIENT", "TRACKING", "ON", "PREFIX", "a"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a", "PREFIX", "ab"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab", "PREFIX", "a"),
                  w.call("CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"),
                  w.call("CLIENT", "TRACKING", "ON", "REDIRECT", "999999"),
                  w.call("CLIENT", "TRACKING", "ON", "REDIRECT", "x"),
                  w.call("CLIENT", "TRACKING", "ON", "REDIRECT", str(w.id), "REDIRECT", str(w.id)),
                  w.call("CLIENT", "TRACKING", "ON", "NOPE"),
                  w.call("CLIENT", "TRACKING", "ON", "PREFIX"),
                  w.call("CLIENT", "TRACKING", "MAYBE"),
                  w.call("CLIENT", "TRACKING"), w.call("CLIENT", "CACHING"), w.call("CLIENT", "GETREDIR", "x"),
                  w.call("CLIENT", "TRACKINGINFO", "x"), w.call("CLIENT", "CACHING", "YES", "x"),
                  w.call("CLIENT", "TRACKING", "OFF")]
            t += [w.call("CLIENT", "TRACKING", "ON", "OPTIN"), w.call("CLIENT", "CACHING", "NO"),
                  w.call("CLIENT", "CACHING", "MAYBE"), w.call("CLIENT", "TRACKING", "ON", "OPTOUT"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST"), w.call("CLIENT", "TRACKING", "OFF")]
            t += [w.call("CLIENT", "TRACKING", "ON", "OPTOUT"), w.call("CLIENT", "CACHING", "YES"),
                  w.call("CLIENT", "TRACKING", "ON", "OPTIN"), w.call("CLIENT", "TRACKING", "OFF")]
            t += [w.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "p"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "p"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "pq"),
                  w.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "q"),
                  w.call("CLIENT", "TRACKING", "ON"),
                  w.call("CLIENT", "TRACKINGINFO"), w.call("CLIENT", "TRACKING", "OFF"),
                  w.call("CLIENT", "TRACKINGINFO"), w.call("CLIENT", "GETREDIR")]
            t += [w.call("CLIENT", "TRACKING", "ON", "REDIRECT", str(w.id)), ids(w.call("CLIENT", "GETREDIR"), w),
                  w.call("CLIENT", "TRACKING", "OFF")]
        t += [a.call("CONFIG", "GET", "tracking-table-max-keys"),
              a.call("CONFIG", "SET", "tracking-table-max-keys", "-1"),
              a.call("CONFIG", "SET", "tracking-table-max-keys", "x"),
              a.call("CONFIG", "SET", "tracking-table-max-keys", "5"),
              a.call("CONFIG", "GET", "tracking-table-max-keys"),
              a.call("CONFIG", "SET", "tracking-table-max-keys", "1000000")]
        return t
    run_both(atlasd, redis_server, scenario)


# -- atlasd only -------------------------------------------------------------------------------

def _stat(w: Wire, name: str) -> int:
    info = w.call("INFO", "everything")
    return int(next(line for line in info.split(b"\r\n") if line.startswith(name.encode() + b":")).split(b":")[1])


def test_table_cap_invalidates_random_keys_and_memory_goes_with_the_client(atlasd: Daemon) -> None:
    b = Wire(atlasd.port, atlasd.password, False)
    a = Wire(atlasd.port, atlasd.password, True)
    try:
        assert b.call("CONFIG", "SET", "tracking-table-max-keys", "2") == b"+OK\r\n"
        a.call("CLIENT", "TRACKING", "ON")
        dropped = []
        for round_ in range(20):  # three keys read against a cap of two: one is dropped, picked at random
            keys = [f"{k}{round_}" for k in "abc"]
            for key in keys:
                a.call("GET", key)
            (push,) = a.drain()
            key = push.rsplit(b"\r\n", 2)[1].decode()
            assert push == b">2\r\n$10\r\ninvalidate\r\n*1\r\n$%d\r\n%s\r\n" % (len(key), key.encode())
            assert key in keys
            dropped.append(keys.index(key))
            assert (_stat(b, "tracking_total_keys"), _stat(b, "tracking_total_items")) == (2, 2)
            assert b.call("SET", key, "1") == b"+OK\r\n" and a.drain() == []  # forgotten when evicted
            kept = [k for k in keys if k != key]
            assert b.call("SET", kept[0], "1") == b"+OK\r\n"  # still tracked: its change is sent
            assert a.drain() == [b">2\r\n$10\r\ninvalidate\r\n*1\r\n$%d\r\n%s\r\n" % (len(kept[0]), kept[0].encode())]
            assert b.call("SET", kept[1], "1") == b"+OK\r\n" and len(a.drain()) == 1  # (the table empty again)
        assert set(dropped) != {0}  # not always the oldest ((1/3)^20 by chance)
        assert b.call("CONFIG", "SET", "tracking-table-max-keys", "1000000") == b"+OK\r\n"
        a.call("MGET", "x", "y", "z")
        assert (_stat(b, "tracking_clients"), _stat(b, "tracking_total_keys")) == (1, 3)
        a.close()  # a client that goes away takes its keys with it (Redis forgets them lazily)
        deadline = time.monotonic() + 10
        while _stat(b, "tracking_clients"):
            assert time.monotonic() < deadline
        assert (_stat(b, "tracking_total_keys"), _stat(b, "tracking_total_items")) == (0, 0)
        a = Wire(atlasd.port, atlasd.password, True)
        a.call("CLIENT", "TRACKING", "ON")
        a.call("GET", "k")
        a.call("CLIENT", "TRACKING", "ON", "NOLOOP")  # (on again: the keys stay)
        assert _stat(b, "tracking_total_keys") == 1
        a.call("CLIENT", "TRACKING", "OFF")
        assert (_stat(b, "tracking_total_keys"), _stat(b, "tracking_clients")) == (0, 0)
        a.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "p")
        a.call("RESET")  # RESET turns tracking off too
        assert (_stat(b, "tracking_total_prefixes"), _stat(b, "tracking_clients")) == (0, 0)
    finally:
        a.close()
        b.close()


def test_redis_py_client_side_cache_is_invalidated(atlasd: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py's own client-side cache (RESP3, CLIENT TRACKING ON) against atlasd.

    redis-py 8 enables its cache only for a server whose HELLO says "redis" at 7.4 or later (it
    refuses a real Redis 7.0 too); atlasd says "atlas" and 7.0, so the test lifts that gate."""
    monkeypatch.setattr(CacheProxyConnection, "DEFAULT_SERVER_NAME", "atlas")
    monkeypatch.setattr(CacheProxyConnection, "MIN_ALLOWED_VERSION", "7.0.0")
    cached = redis.Redis(port=atlasd.port, password=atlasd.password, protocol=3, cache_config=CacheConfig(),
                         socket_timeout=10)
    other = atlasd.client()
    try:
        other.set("cached:k", "v1")
        assert cached.get("cached:k") == b"v1"
        assert cached.get("cached:k") == b"v1"
        cache = cached.get_cache()
        assert cache is not None and cache.size == 1  # the second GET was served from it
        other.set("cached:k", "v2")
        deadline = time.monotonic() + 10
        while cached.get("cached:k") != b"v2":  # the invalidation drops the entry; the next GET asks
            assert time.monotonic() < deadline, "the cached value was never invalidated"
        assert cached.get("cached:k") == b"v2"
    finally:
        cached.close()
        other.close()


def test_invalidation_waits_for_the_write_to_be_durable(tmp_path: Path) -> None:
    """While the write's fsync is held, neither its reply nor its invalidation goes out."""
    fs = FaultyFs()

    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        c, a, b = await connect(), await connect(), await connect()
        cid = await c.call("CLIENT", "ID")
        assert await c.call("SUBSCRIBE", "__redis__:invalidate") == [b"subscribe", b"__redis__:invalidate", 1]
        assert await a.call("CLIENT", "TRACKING", "ON", "REDIRECT", str(cid)) == "OK"
        assert await a.call("GET", "k") is None
        gate = fs.block("fsync")
        await b.send(wire("SET", "k", "v"))
        try:
            message = asyncio.ensure_future(c.reply())
            done, _ = await asyncio.wait([message], timeout=0.3)
            assert not done, "an invalidation went out before its write was durable"
        finally:
            gate.set()
        assert await asyncio.wait_for(message, 5) == [b"message", b"__redis__:invalidate", [b"k"]]
        assert await b.reply() == "OK"

    run(tmp_path, body, fs=fs)


def test_active_expiry_of_a_tracked_key_invalidates_it(tmp_path: Path) -> None:
    """Nobody reads the key again: the active expiry cycle deletes it, and the tracker hears of it."""
    now = [1_700_000_000_000]

    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        c, a = await connect(), await connect()
        cid = await c.call("CLIENT", "ID")
        assert await c.call("SUBSCRIBE", "__redis__:invalidate") == [b"subscribe", b"__redis__:invalidate", 1]
        assert await a.call("CLIENT", "TRACKING", "ON", "REDIRECT", str(cid)) == "OK"
        assert await a.call("SET", "k", "v", "PX", "100") == "OK"
        assert await a.call("GET", "k") == b"v"
        now[0] += 150  # (time is the engine's clock here: no sleeping for the TTL)
        assert await asyncio.wait_for(c.reply(), 10) == [b"message", b"__redis__:invalidate", [b"k"]]
        assert server.engine.stats.expired_keys == 1

    run(tmp_path, body, clock=lambda: now[0], fs=FaultyFs())
