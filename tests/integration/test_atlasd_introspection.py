"""Introspection, notifications and maxmemory on a real atlasd, with redis-py, where replies depend on timing.

(Replies that are deterministic are compared with redis-server in
test_differential_introspection.py.)  Waits are for conditions, with
generous deadlines; nothing asserts how long something took.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helios_core.atlas.fsops import FaultyFs
from tests.integration.test_atlasd_inprocess import run as run_in_process
from tests.integration.test_atlasd_inprocess import wire
from tests.integration.test_atlasd_support import Daemon, running_daemon

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (starting one is slow on a busy box); each test puts back what it sets."""
    with running_daemon(tmp_path_factory.mktemp("introspection")) as d:
        yield d


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RawConn:
    """A socket that sends RESP commands one by one and reads whatever comes back."""

    def __init__(self, d: Daemon) -> None:
        self.sock = socket.create_connection(("127.0.0.1", d.port), timeout=20)
        self.send("AUTH", d.password or "")
        assert self.recv_line() == b"+OK"

    def send(self, *words: str) -> None:
        out = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words)
        self.sock.sendall(out)

    def recv_line(self) -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf[:-2]

    def quiet(self, seconds: float = 0.3) -> bool:
        """Nothing to read for `seconds` (used only to show that a reply is *not* sent)."""
        return not select.select([self.sock], [], [], seconds)[0]

    def close(self) -> None:
        self.sock.close()


def test_slowlog_records_commands_over_the_threshold(atlasd: Daemon) -> None:
    r = atlasd.client()
    r.config_set("slowlog-log-slower-than", 0)
    r.slowlog_reset()
    r.set("a", "b" * 300)
    r.client_setname("me")
    r.get("a")
    entries = r.slowlog_get(10)
    commands = [e["command"] for e in entries]
    assert b"GET a" in commands
    big = [e for e in entries if e["command"].startswith(b"SET a")][0]
    assert big["command"].endswith(b"... (172 more bytes)")   # cut at 128 bytes as Redis does
    assert entries[0]["id"] > entries[-1]["id"]                 # newest first
    assert all(e["duration"] >= 0 for e in entries)
    assert r.slowlog_len() >= 3
    r.config_set("slowlog-max-len", 2)
    assert r.slowlog_len() <= 2
    r.config_set("slowlog-log-slower-than", -1)
    r.slowlog_reset()
    r.set("x", "y")
    assert r.slowlog_len() == 0
    r.config_set("slowlog-log-slower-than", 10000)
    r.config_set("slowlog-max-len", 128)


def test_config_resetstat_resets_counters(atlasd: Daemon) -> None:
    r = atlasd.client()
    for i in range(20):
        r.set(f"k{i}", i)
    assert r.info("stats")["total_commands_processed"] >= 20
    assert r.config_resetstat()
    stats = r.info("stats")
    assert stats["total_commands_processed"] <= 2   # only what ran since (the INFO itself)
    assert stats["expired_keys"] == 0 and stats["evicted_keys"] == 0
    assert r.info("commandstats").get("cmdstat_set") is None


def test_timeout_closes_idle_clients(atlasd: Daemon) -> None:
    r = atlasd.client()
    idle = RawConn(atlasd)
    sub = atlasd.client().pubsub()
    sub.subscribe("ch")                       # subscribers are exempt, as in Redis
    r.config_set("timeout", 1)
    assert r.config_get("timeout") == {"timeout": "1"}

    def closed() -> bool:
        try:
            return idle.sock.recv(1, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
    wait_for(closed, "the idle client to be closed")
    r.config_set("timeout", 0)
    assert r.ping()                           # a new connection of redis-py's pool
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    assert r.publish("ch", "still here") == 1
    idle.close()
    sub.close()


def test_client_reply_off_skip_on(atlasd: Daemon) -> None:
    c = RawConn(atlasd)
    c.send("CLIENT", "REPLY", "OFF")
    c.send("SET", "a", "1")
    assert c.quiet()
    c.send("CLIENT", "REPLY", "ON")
    assert c.recv_line() == b"+OK"
    c.send("CLIENT", "REPLY", "SKIP")
    c.send("INCR", "a")                       # skipped
    c.send("INCR", "a")
    assert c.recv_line() == b":3"
    c.close()


def test_client_reply_applies_to_commands_pipelined_behind_it(atlasd: Daemon) -> None:
    """CLIENT REPLY OFF/SKIP and the commands after it sent in one packet: as Redis answers them."""
    c = RawConn(atlasd)
    words = [("CLIENT", "REPLY", "OFF"), ("SET", "p", "1"), ("CLIENT", "REPLY", "ON"), ("GET", "p"),
             ("CLIENT", "REPLY", "SKIP"), ("INCR", "p"), ("INCR", "p")]
    c.sock.sendall(b"".join(b"*%d\r\n" % len(w) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x.encode()) for x in w)
                            for w in words))
    assert [c.recv_line() for _ in range(4)] == [b"+OK", b"$1", b"1", b":3"]
    assert c.quiet()
    c.close()


def test_client_pause_holds_other_clients_until_unpause(atlasd: Daemon) -> None:
    r = atlasd.client()
    other = RawConn(atlasd)
    assert r.client_pause(60_000)
    other.send("PING")
    assert other.quiet()                      # held while paused
    assert r.client_unpause()
    assert other.recv_line() == b"+PONG"
    other.close()


def test_client_kill_skipme_no_replies_then_closes(atlasd: Daemon) -> None:
    c = RawConn(atlasd)
    c.send("CLIENT", "KILL", "SKIPME", "no", "USER", "default")
    assert c.recv_line().startswith(b":")     # the count, including itself
    with pytest.raises(ConnectionError):
        c.recv_line()
    c.close()


def test_client_list_shows_the_subcommand(atlasd: Daemon) -> None:
    r = atlasd.client()
    me = r.client_list()[0]
    for name in ("id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "qbuf", "qbuf-free",
                 "argv-mem", "multi-mem", "rbs", "rbp", "obl", "oll", "omem", "tot-mem", "events", "cmd",
                 "user", "redir", "resp"):
        assert name in me
    assert me["cmd"] == "client|list"


def test_client_tracking_turns_on_and_off(atlasd: Daemon) -> None:
    r = atlasd.client()  # (invalidations themselves: test_differential_tracking.py)
    assert r.execute_command("CLIENT", "TRACKING", "ON")
    assert r.execute_command("CLIENT", "GETREDIR") == 0
    assert r.execute_command("CLIENT", "TRACKING", "OFF")
    assert r.execute_command("CLIENT", "GETREDIR") == -1


def test_keyspace_notifications_reach_subscribers(atlasd: Daemon) -> None:
    r = atlasd.client()
    r.config_set("notify-keyspace-events", "KEA")
    p = atlasd.client().pubsub()
    r.delete("k", "h")
    p.psubscribe("__key*__:*")
    assert p.get_message(timeout=5)["type"] == "psubscribe"
    r.set("k", "v", px=50)
    r.hset("h", "f", "v")

    got: list[tuple[bytes, bytes]] = []

    def saw(channel: bytes, data: bytes) -> bool:
        m = p.get_message(timeout=0.2)
        if m is not None and m["type"] == "pmessage":
            got.append((m["channel"], m["data"]))
        return (channel, data) in got
    wait_for(lambda: saw(b"__keyspace@0__:k", b"set"), "set on k")
    wait_for(lambda: saw(b"__keyevent@0__:hset", b"h"), "hset on h")
    # Nobody reads k again: the active expiry cycle deletes it and says so.
    wait_for(lambda: saw(b"__keyevent@0__:expired", b"k"), "k to expire")
    p.close()
    r.config_set("notify-keyspace-events", "")


def test_maxmemory_evicts_and_notifies_and_restarts_the_same(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--appendfsync", "always",
               env={"HELIOS_ATLASD__MAXMEMORY": "0", "HELIOS_ATLASD__MAXMEMORY_POLICY": "allkeys-random"}).start()
    try:
        r = d.client()
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-random"}
        for i in range(300):
            r.set(f"k{i}", "x" * 100)
        one = r.memory_usage("k1")
        assert one is not None and one > 100
        r.config_set("notify-keyspace-events", "Ee")
        p = d.client().pubsub()
        p.subscribe("__keyevent@0__:evicted")
        assert p.get_message(timeout=5)["type"] == "subscribe"
        r.config_set("maxmemory", one * 100)
        r.set("trigger", "v")
        info = r.info()
        assert info["evicted_keys"] >= 190
        assert r.dbsize() == 301 - info["evicted_keys"]
        m = p.get_message(timeout=5)
        assert m is not None and m["type"] == "message" and m["data"].startswith(b"k")
        keys = sorted(r.keys())
        p.close()
        d.stop()
        d.start()                             # the evictions were logged: replay gives the same keys
        assert sorted(d.client().keys()) == keys
    finally:
        d.kill()


def test_noeviction_answers_oom(atlasd: Daemon) -> None:
    r = atlasd.client()
    r.flushall()
    for i in range(5):
        r.set(f"k{i}", "v")
    r.config_set("maxmemory", 1000)
    try:
        assert r.config_get("maxmemory") == {"maxmemory": "1000"}
        with pytest.raises(redis.exceptions.OutOfMemoryError) as e:   # redis-py's class for "-OOM ..."
            for i in range(100):
                r.set(f"more{i}", "x" * 50)
        assert str(e.value) == "command not allowed when used memory > 'maxmemory'."
        assert r.get("k1") == b"v"
        assert r.info("memory")["maxmemory_policy"] == "noeviction"
        assert r.delete("k1") == 1           # DEL frees memory: allowed
    finally:
        r.config_set("maxmemory", 0)
        r.flushall()


def test_monitor_streams_commands(atlasd: Daemon) -> None:
    r = atlasd.client()
    mon = RawConn(atlasd)
    mon.send("MONITOR")
    assert mon.recv_line() == b"+OK"
    r.set("mon\nkey", b"v\x01")
    r.config_get("timeout")                   # admin: not shown, as in Redis
    r.get("after")
    lines: list[bytes] = []
    while not lines or not lines[-1].endswith(b'"GET" "after"'):
        lines.append(mon.recv_line())
    assert all(line.startswith(b"+") and b" [0 127.0.0.1:" in line for line in lines)
    assert not any(atlasd.password.encode() in line for line in lines)   # HELLO/AUTH are redacted
    assert lines[-2].endswith(b'"SET" "mon\\nkey" "v\\x01"')
    mon.close()
    wait_for(lambda: not any(c["cmd"] == "monitor" for c in r.client_list()), "the monitor's connection to close")
    assert r.set("after", "1")                # the feed drops a closed monitor


# -- notifications and durability: in process, with a disk that holds or fails its fsync ------------

async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def test_a_notification_waits_for_its_write_to_be_durable(tmp_path: Path) -> None:
    fs = FaultyFs()

    async def body(server: Any, connect: Callable[[], Any]) -> None:
        a, sub = await connect(), await connect()
        await a.send(wire("CONFIG", "SET", "notify-keyspace-events", "KA"))
        assert await a.reply() == "OK"
        await sub.send(wire("SUBSCRIBE", "__keyspace@0__:k"))
        assert (await sub.reply())[0] == b"subscribe"
        gate = fs.block("fsync")
        await a.send(wire("SET", "k", "v"))
        await _until(lambda: server.engine.seq >= 1 and server.engine.released_seq < server.engine.seq)
        pending = [asyncio.ensure_future(a.reply()), asyncio.ensure_future(sub.reply())]
        done, _ = await asyncio.wait(pending, timeout=0.3)
        assert not done, "the write was revealed (reply or notification) before it was durable"
        gate.set()
        assert await pending[0] == "OK"
        assert await pending[1] == [b"message", b"__keyspace@0__:k", b"set"]
        # A write the disk loses is undone: its notification never goes out.
        fs.fail("fsync")
        await a.send(wire("SET", "k", "lost"))
        assert (await a.reply())[0] == "ERR"
        fs.heal()
        await _until(lambda: server.engine.aof_error is None)
        await a.send(wire("DEL", "k"))
        assert await a.reply() == 1
        assert await sub.reply() == [b"message", b"__keyspace@0__:k", b"del"]  # not the lost "set"

    run_in_process(tmp_path, body, appendfsync="always", fs=fs)


def test_a_keyless_read_after_an_undone_write_is_answered(tmp_path: Path) -> None:
    fs = FaultyFs()

    async def body(server: Any, connect: Callable[[], Any]) -> None:
        a = await connect()
        fs.fail("fsync")
        await a.send(wire("SET", "k", "lost"))
        assert (await a.reply())[0] == "ERR"
        fs.heal()
        await _until(lambda: server.engine.aof_error is None)
        await a.send(wire("DBSIZE"))          # it revealed nothing undone: no wait for a later write
        assert await a.reply() == 0

    run_in_process(tmp_path, body, appendfsync="always", fs=fs)
