"""Blocking list commands with real clients (redis-py): atlasd and redis-server side by side.

Every behaviour test runs against both servers, so what is asserted is Redis 7.0's
behaviour: a client blocked on an empty key is woken by another client's push,
woken clients are served in the order they blocked (FIFO per key) right after the
write and before the writer's next command, timeouts answer nil, a blocked
connection reads nothing more until its reply, and a client that goes away stops
waiting.  The atlasd-only tests: a kill -9 keeps list contents (the pops of woken
clients included) through the AOF, and a snapshot plus AOF tail keeps them too.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helios_core.atlas.blocking import blocked_count
from helios_core.atlas.fsops import FaultyFs
from tests.integration.test_atlasd_inprocess import run as run_in_process
from tests.integration.test_atlasd_inprocess import wire
from tests.integration.test_atlasd_support import Daemon, running_daemon, wait_for_snapshot
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)

WAIT = 20.0  # generous: 4 test processes share 2 busy cores


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("blocking")) as d:
        yield d


@pytest.fixture(params=["atlasd", "redis"])
def connect(request: pytest.FixtureRequest, atlasd: Daemon) -> Iterator[Callable[[], redis.Redis]]:
    """A factory of clients of one server (flushed first); every client it made is closed after."""
    if request.param == "atlasd":
        port, password = atlasd.port, atlasd.password
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        port, password = server.port, None
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        r = redis.Redis(port=port, password=password, socket_timeout=WAIT + 10)
        made.append(r)
        return r

    make().flushall()
    try:
        yield make
    finally:
        for r in made:
            r.close()


class Call(threading.Thread):
    """Run one (blocking) call on its own thread; `result()` waits for it."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:  # handed to the test thread
            self.error = e

    def result(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the blocked call never returned"
        if self.error is not None:
            raise self.error
        return self.value


def wait_blocked(r: redis.Redis, n: int) -> None:
    """Until INFO says `n` clients are blocked (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if r.info("clients")["blocked_clients"] == n:
            return
        time.sleep(0.01)
    raise AssertionError(f"blocked_clients never reached {n}: {r.info('clients')}")


def test_a_push_from_another_client_wakes_the_blocked_one(connect: Callable[[], redis.Redis]) -> None:
    a, b = connect(), connect()
    call = Call(lambda: b.blpop(["empty", "k"], 0))
    wait_blocked(a, 1)
    assert a.rpush("k", "x", "y") == 2
    assert call.result() == (b"k", b"x")
    assert a.lrange("k", 0, -1) == [b"y"]
    wait_blocked(a, 0)


def test_woken_in_arrival_order_one_item_each(connect: Callable[[], redis.Redis]) -> None:
    a = connect()
    calls = []
    for n in range(3):
        c = connect()
        calls.append(Call(lambda c=c: c.brpop(["q"], 0)))
        wait_blocked(a, n + 1)  # so the order they block in is known
    a.rpush("q", "1", "2", "3", "4")
    # BRPOP pops from the tail: the first to block gets the last item.
    assert [c.result() for c in calls] == [(b"q", b"4"), (b"q", b"3"), (b"q", b"2")]
    assert a.lrange("q", 0, -1) == [b"1"]


def test_served_right_after_the_write_before_the_writers_next_command(connect: Callable[[], redis.Redis]) -> None:
    a, b = connect(), connect()
    call = Call(lambda: b.blpop(["k"], 0))
    wait_blocked(a, 1)
    p = a.pipeline(transaction=False)
    p.rpush("k", "only")
    p.lpop("k")
    assert p.execute() == [1, None]  # the blocked client popped it in between
    assert call.result() == (b"k", b"only")


def test_a_transaction_or_a_script_wakes_after_it_ends(connect: Callable[[], redis.Redis]) -> None:
    a, b = connect(), connect()
    call = Call(lambda: b.blpop(["t"], 0))
    wait_blocked(a, 1)
    p = a.pipeline(transaction=True)
    p.rpush("t", "1", "2")
    p.lpop("t")  # inside the transaction: the blocked client cannot get in between
    assert p.execute() == [2, b"1"]
    assert call.result() == (b"t", b"2")
    call = Call(lambda: b.brpop(["t"], 0))
    wait_blocked(a, 1)
    assert a.eval("redis.call('rpush', KEYS[1], 'a', 'b'); return redis.call('llen', KEYS[1])", 1, "t") == 2
    assert call.result() == (b"t", b"b")
    p = a.pipeline(transaction=True)
    p.rpush("t2", "x")
    p.lpop("t2")  # pushed and taken back in one transaction: a waiter on t2 keeps waiting
    call = Call(lambda: b.blpop(["t2"], 0))
    wait_blocked(a, 1)
    assert p.execute() == [1, b"x"]
    a.rpush("t2", "y")
    assert call.result() == (b"t2", b"y")


def test_blmove_chain_wakes_a_client_blocked_on_the_destination(connect: Callable[[], redis.Redis]) -> None:
    a, b, c = connect(), connect(), connect()
    mover = Call(lambda: b.blmove("src", "dst", 0, "LEFT", "RIGHT"))
    wait_blocked(a, 1)
    popper = Call(lambda: c.blpop(["dst"], 0))
    wait_blocked(a, 2)
    a.lpush("src", "v")
    assert mover.result() == b"v"
    assert popper.result() == (b"dst", b"v")
    assert a.exists("src", "dst") == 0


def test_blmpop_with_count_and_brpoplpush(connect: Callable[[], redis.Redis]) -> None:
    a, b, c = connect(), connect(), connect()
    mp = Call(lambda: b.blmpop(0, 2, "m1", "m2", direction="RIGHT", count=2))
    wait_blocked(a, 1)
    a.rpush("m2", "a", "b", "c")
    assert mp.result() == [b"m2", [b"c", b"b"]]
    mv = Call(lambda: c.brpoplpush("none", "m2", 0))
    wait_blocked(a, 1)
    a.rpush("none", "z")
    assert mv.result() == b"z"
    assert a.lrange("m2", 0, -1) == [b"z", b"a"]


def test_sorted_set_pops_wake_on_zadd(connect: Callable[[], redis.Redis]) -> None:
    a, b, c = connect(), connect(), connect()
    low = Call(lambda: b.bzpopmin(["zs"], 0))
    wait_blocked(a, 1)
    multi = Call(lambda: c.bzmpop(0, 2, ["other", "zs"], max=True, count=5))
    wait_blocked(a, 2)
    a.zadd("zs", {"one": 1, "two": 2, "three": 3})
    assert low.result() == (b"zs", b"one", 1.0)
    assert multi.result() == [b"zs", [[b"three", b"3"], [b"two", b"2"]]]  # (redis-py leaves these as bytes)
    assert a.exists("zs") == 0
    assert b.bzpopmax(["zs"], 0.05) is None


def test_timeouts_answer_nil(connect: Callable[[], redis.Redis]) -> None:
    a, b = connect(), connect()
    assert b.blpop(["nothing"], 0.05) is None
    assert b.brpoplpush("nothing", "d", 0.05) is None
    assert b.blmove("nothing", "d", 0.05, "LEFT", "LEFT") is None
    assert b.blmpop(0.05, 1, "nothing", direction="LEFT") is None
    assert a.info("clients")["blocked_clients"] == 0
    assert b.rpush("after", "x") == 1  # the connection reads again after its timeout


def test_resp3_timeout_is_a_null(connect: Callable[[], redis.Redis]) -> None:
    r = connect()
    info = r.connection_pool.connection_kwargs
    with socket.create_connection(("127.0.0.1", info["port"]), timeout=WAIT) as s:
        hello = b"HELLO 3" + (b" AUTH default " + info["password"].encode() if info.get("password") else b"")
        s.sendall(hello + b"\r\n")
        _read_until(s, b"proto")
        s.sendall(b"BLPOP nothing 0.05\r\nPING\r\n")
        assert _read_until(s, b"+PONG\r\n").endswith(b"_\r\n+PONG\r\n")


def _read_until(s: socket.socket, end: bytes) -> bytes:
    buf = b""
    while end not in buf:
        chunk = s.recv(4096)
        assert chunk, f"connection closed after {buf!r}"
        buf += chunk
    return buf


def test_commands_pipelined_after_a_blocking_one_wait_for_it(connect: Callable[[], redis.Redis]) -> None:
    a = connect()
    info = a.connection_pool.connection_kwargs
    with socket.create_connection(("127.0.0.1", info["port"]), timeout=WAIT) as s:
        if info.get("password"):
            s.sendall(b"AUTH " + info["password"].encode() + b"\r\n")
            assert _read_until(s, b"\r\n") == b"+OK\r\n"
        s.sendall(b"BLPOP w 0\r\nRPUSH mine 1\r\nPING\r\n")
        wait_blocked(a, 1)
        assert a.exists("mine") == 0  # RPUSH waits behind the blocked BLPOP
        a.lpush("w", "v")
        assert _read_until(s, b"+PONG\r\n") == b"*2\r\n$1\r\nw\r\n$1\r\nv\r\n:1\r\n+PONG\r\n"
    assert a.lrange("mine", 0, -1) == [b"1"]


def test_a_client_that_goes_away_stops_waiting(connect: Callable[[], redis.Redis]) -> None:
    a = connect()
    info = a.connection_pool.connection_kwargs
    s = socket.create_connection(("127.0.0.1", info["port"]), timeout=WAIT)
    if info.get("password"):
        s.sendall(b"AUTH " + info["password"].encode() + b"\r\n")
        assert _read_until(s, b"\r\n") == b"+OK\r\n"
    s.sendall(b"BLPOP gone 0\r\n")
    wait_blocked(a, 1)
    s.close()
    wait_blocked(a, 0)
    assert a.rpush("gone", "kept") == 1
    assert a.lrange("gone", 0, -1) == [b"kept"]


def test_client_list_flags_a_blocked_client(connect: Callable[[], redis.Redis]) -> None:
    a, b = connect(), connect()
    call = Call(lambda: b.blpop(["f"], 0))
    wait_blocked(a, 1)
    assert any("b" in c["flags"] for c in a.client_list())
    a.rpush("f", "x")
    assert call.result() == (b"f", b"x")


# -- durability: atlasd only ------------------------------------------------------------------

def lists(r: redis.Redis) -> dict:
    return {k: r.lrange(k, 0, -1) for k in ("a", "b", "c", "moved")} | {"types": [r.type(k) for k in ("a", "b")]}


def test_kill_9_then_snapshot_and_tail_keep_lists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r, d.client() as w:
            r.rpush("a", "1", "2", "3", b"\xff\x00")
            r.lpush("a", "0")
            r.linsert("a", "BEFORE", "2", "1.5")
            r.lset("a", -1, "last")
            r.rpush("b", "x", "y", "x", "z", "x")
            r.lrem("b", -2, "x")
            r.ltrim("b", 0, 1)
            r.rpush("c", "c1", "c2")
            r.lmove("c", "moved", "LEFT", "LEFT")
            r.rpush("gone", "g")
            r.lpop("gone")
            call = Call(lambda: w.blpop(["woken"], 0))
            wait_blocked(r, 1)
            r.rpush("woken", "w1", "w2")  # the woken client's pop is a write of its own
            assert call.result() == (b"woken", b"w1")
            want = lists(r) | {"woken": r.lrange("woken", 0, -1), "gone": r.exists("gone")}
            assert want["woken"] == [b"w2"] and want["gone"] == 0
    finally:
        d.kill()  # SIGKILL: only the AOF can bring this back
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert lists(r) | {"woken": r.lrange("woken", 0, -1), "gone": r.exists("gone")} == want
            assert r.bgsave()
            wait_for_snapshot(data)
            r.rpush("a", "after-snapshot")
            r.rpop("b")
            want = lists(r)
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert lists(r) == want
    finally:
        d.kill()


# -- the reveal rule: in process, with a disk that holds or fails its fsync -------------------

def _in_process(tmp_path: Path, body: Callable[[Any, FaultyFs, Callable[[], Any]], Any]) -> None:
    fs = FaultyFs()
    run_in_process(tmp_path, lambda server, connect: body(server, fs, connect), appendfsync="always", fs=fs)


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def test_the_push_and_the_pop_it_caused_are_durable_before_either_reply(tmp_path: Path) -> None:
    async def body(server: Any, fs: FaultyFs, connect: Callable[[], Any]) -> None:
        a, b = await connect(), await connect()
        await b.send(wire("BLPOP", "k", "0"))
        await _until(lambda: blocked_count(server.engine) == 1)
        gate = fs.block("fsync")
        await a.send(wire("RPUSH", "k", "v"))
        await _until(lambda: server.engine.seq >= 2 and blocked_count(server.engine) == 0)
        # Both records wait on the held fsync: neither client may see anything yet.
        pending = [asyncio.ensure_future(a.reply()), asyncio.ensure_future(b.reply())]
        done, _ = await asyncio.wait(pending, timeout=0.3)
        assert not done, "a reply was revealed before the push and the pop were durable"
        gate.set()
        assert await pending[0] == 1
        assert await pending[1] == [b"k", b"v"]
        assert server.engine.released_seq >= server.engine.seq

    _in_process(tmp_path, body)


def test_a_failed_fsync_reveals_neither_the_push_nor_the_pop(tmp_path: Path) -> None:
    async def body(server: Any, fs: FaultyFs, connect: Callable[[], Any]) -> None:
        a, b = await connect(), await connect()
        await b.send(wire("BLPOP", "k", "0"))
        await _until(lambda: blocked_count(server.engine) == 1)
        fs.fail("fsync")
        await a.send(wire("RPUSH", "k", "v"))
        pushed, popped = await a.reply(), await b.reply()
        assert pushed[0] == "ERR" and popped[0] == "ERR", (pushed, popped)
        assert "k" not in [key.decode() for key in server.engine.ks.data]  # both undone

    _in_process(tmp_path, body)
