"""atlasd with real Redis clients: redis-py sync and asyncio, RESP2 and RESP3."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from tests.integration.test_atlasd_support import Daemon, running_daemon

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path) as d:
        yield d


@pytest.fixture
def client(daemon: Daemon) -> Iterator[redis.Redis]:
    with daemon.client() as r:
        yield r


def test_set_get_and_types(client: redis.Redis) -> None:
    assert client.ping() is True
    assert client.set("a", "1") is True
    assert client.get("a") == b"1"
    assert client.incr("a") == 2
    assert client.get("missing") is None
    assert client.set("bin", b"\x00\r\n\xff") and client.get("bin") == b"\x00\r\n\xff"
    assert client.zadd("z", {"m1": 1.5, "m2": 2}) == 2
    assert client.zrange("z", 0, -1, withscores=True) == [(b"m1", 1.5), (b"m2", 2.0)]
    assert client.zscore("z", "m1") == 1.5
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.get("z")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client.execute_command("NOSUCH", "x")
    assert client.dbsize() == 3
    assert client.echo("hi") == b"hi"


def test_resp3_replies(daemon: Daemon) -> None:
    with daemon.client(protocol=3) as r:
        r.zadd("z", {"a": 1, "b": 2.5})
        assert r.zrange("z", 0, -1, withscores=True) == [[b"a", 1.0], [b"b", 2.5]]
        assert r.zscore("z", "b") == 2.5
        assert r.get("nothing") is None
        info = r.execute_command("HELLO", "3")
        assert info[b"proto"] == 3 and info[b"server"] == b"atlas"
        assert r.config_get("appendfsync") == {"appendfsync": "everysec"}


def test_pipeline_keeps_order(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"k{i}", i)
        pipe.incr(f"k{i}")
        pipe.get(f"k{i}")
    out = pipe.execute()
    assert out[2::3] == [str(i + 1).encode() for i in range(500)]


def test_big_value_round_trip(client: redis.Redis) -> None:
    value = os.urandom(3 * 1024 * 1024)
    client.set("big", value)
    assert client.get("big") == value
    assert client.strlen("big") == len(value)


def test_transactions(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.set("t", 1).incr("t").get("t")
    assert pipe.execute() == [True, 2, b"2"]
    # A runtime error inside EXEC fails that command only, as Redis.
    pipe = client.pipeline(transaction=True)
    pipe.set("s", "x").incr("s").set("after", 1)
    res = pipe.execute(raise_on_error=False)
    assert res[0] is True and isinstance(res[1], redis.ResponseError) and res[2] is True
    assert client.get("after") == b"1"


def test_watch_aborts_on_concurrent_change(daemon: Daemon) -> None:
    with daemon.client() as a, daemon.client() as b:
        a.set("w", 1)
        pipe = a.pipeline()
        pipe.watch("w")
        b.set("w", 2)
        pipe.multi()
        pipe.set("w", 3)
        with pytest.raises(redis.WatchError):
            pipe.execute()
        assert a.get("w") == b"2"
        # Unchanged: EXEC goes through.
        pipe = a.pipeline()
        pipe.watch("w")
        pipe.multi()
        pipe.set("w", 4)
        assert pipe.execute() == [True]
        assert a.get("w") == b"4"


def test_watch_sees_flushall(daemon: Daemon) -> None:
    with daemon.client() as a, daemon.client() as b:
        a.set("f", 1)
        pipe = a.pipeline()
        pipe.watch("f")
        b.flushall()
        pipe.multi()
        pipe.set("x", 1)
        with pytest.raises(redis.WatchError):
            pipe.execute()


def test_transaction_helper_with_retries(daemon: Daemon) -> None:
    """redis-py's transaction(): the shape RemoteStore.transact uses, under contention."""
    def bump(r: redis.Redis) -> None:
        def fn(pipe: redis.client.Pipeline) -> None:
            v = int(pipe.get("counter") or 0)
            pipe.multi()
            pipe.set("counter", v + 1)
        for _ in range(50):
            r.transaction(fn, "counter")

    clients = [daemon.client() for _ in range(4)]
    threads = [threading.Thread(target=bump, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clients[0].get("counter") == b"200"
    for c in clients:
        c.close()


def test_pubsub_resp2(daemon: Daemon) -> None:
    with daemon.client() as r, daemon.client() as pub:
        ps = r.pubsub()
        ps.subscribe("news")
        ps.psubscribe("n*")
        assert ps.get_message(timeout=2)["type"] == "subscribe"
        assert ps.get_message(timeout=2)["type"] == "psubscribe"
        assert pub.publish("news", "hello") == 2
        got = [ps.get_message(timeout=2) for _ in range(2)]
        assert {(m["type"], m["data"]) for m in got} == {("message", b"hello"), ("pmessage", b"hello")}
        assert pub.pubsub_numsub("news") == [(b"news", 1)]
        ps.close()


def test_pubsub_resp3_push(daemon: Daemon) -> None:
    with daemon.client(protocol=3) as r, daemon.client() as pub:
        ps = r.pubsub()
        ps.subscribe("ch")
        assert ps.get_message(timeout=2)["type"] == "subscribe"
        pub.publish("ch", "m1")
        msg = ps.get_message(timeout=2)
        assert msg["type"] == "message" and msg["data"] == b"m1"
        ps.close()


def test_asyncio_client(daemon: Daemon) -> None:
    async def main() -> None:
        r = aredis.Redis(connection_pool=aredis.BlockingConnectionPool(port=daemon.port, password=daemon.password,
                                                                   max_connections=20))
        try:
            await asyncio.gather(*(r.set(f"a{i}", i) for i in range(200)))  # several connections
            assert await r.mget([f"a{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]
            async with r.pipeline(transaction=True) as pipe:
                pipe.incr("ac").incr("ac")
                assert await pipe.execute() == [1, 2]
            ps = r.pubsub()
            await ps.subscribe("ach")
            await r.publish("ach", "x")
            msgs = []
            deadline = time.monotonic() + 3
            while len(msgs) < 2 and time.monotonic() < deadline:
                m = await ps.get_message(timeout=0.5)
                if m:
                    msgs.append(m)
            assert [m["type"] for m in msgs] == ["subscribe", "message"]
            await ps.aclose()
        finally:
            await r.aclose()

    asyncio.run(main())


def test_connection_and_server_commands(client: redis.Redis) -> None:
    assert client.client_setname("worker-1") is True
    assert client.client_getname() == "worker-1"
    cid = client.client_id()
    assert any(c["id"] == str(cid) and c["name"] == "worker-1" for c in client.client_list())
    assert f"id={cid}" in client.execute_command("CLIENT", "INFO").decode()
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        client.execute_command("SELECT", "16")
    assert client.execute_command("SELECT", "0")
    info = client.info()
    for field in ("atlas_version", "connected_clients", "used_memory", "aof_enabled",
                  "rdb_bgsave_in_progress", "rdb_last_save_time", "aof_last_write_status"):
        assert field in info, field
    client.set("k", 1)
    client.set("e", 1, ex=100)
    db0 = client.info("keyspace")["db0"]
    assert (db0["keys"], db0["expires"]) == (2, 1)
    assert 90_000 < db0["avg_ttl"] <= 100_000  # ms: the one key with a TTL has ~100 s left
    secs, micros = client.time()
    assert abs(secs - time.time()) < 5 and 0 <= micros < 1_000_000
    assert client.command_count() >= 80
    docs = client.execute_command("COMMAND DOCS", "SET")  # one word: redis-py has no parser for it
    doc = docs.get("set") or docs.get(b"set")
    assert b"Sets the string value" in (doc.get("summary") or doc.get(b"summary"))
    cmd = client.execute_command("COMMAND", "INFO", "get")["get"]
    assert (cmd["arity"], sorted(cmd["flags"]), cmd["first_key_pos"], cmd["last_key_pos"], cmd["step_count"]) \
        == (2, ["fast", "readonly"], 1, 1, 1)
    assert client.lastsave() is not None


def test_config_get_set(client: redis.Redis) -> None:
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert set(client.config_get("append*")) == {"appendonly", "appendfsync", "appendfilename"}
    assert client.config_set("appendfsync", "always") is True
    client.set("x", 1)  # under always the reply waits for the fsync
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    client.config_set("appendfsync", "everysec")
    client.config_set("save", "100 10 60 1000")
    assert client.config_get("save") == {"save": "100 10 60 1000"}
    client.config_set("max-value-bytes", "100")
    with pytest.raises(redis.ResponseError):
        client.set("v", "x" * 200)
    client.config_set("max-value-bytes", "1000000")
    # Every argument of a request is held to the limit: one too small for the CONFIG SET that raises it
    # again is refused (no client, the unix socket's included, could send that command any more).
    with pytest.raises(redis.ResponseError, match="between 64 and"):
        client.config_set("max-value-bytes", "10")
    assert client.config_get("max-value-bytes") == {"max-value-bytes": "1000000"}
    with pytest.raises(redis.ResponseError, match="must be one of"):
        client.config_set("appendfsync", "sometimes")
    with pytest.raises(redis.ResponseError, match="immutable"):
        client.config_set("port", "1")
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        client.config_set("nonsense", "1")


def test_requirepass_at_runtime_and_auth(daemon: Daemon) -> None:
    with daemon.client() as admin:
        admin.config_set("requirepass", "s3cret")
        admin.ping()  # already connected clients stay authenticated
    with daemon.client(password=None) as r:
        with pytest.raises(redis.AuthenticationError):
            r.get("x")
    with daemon.client(password="wrong") as r:
        with pytest.raises(redis.AuthenticationError):
            r.ping()
    with daemon.client(password="s3cret") as r:
        assert r.ping()
        r.config_set("requirepass", "")


def test_save_bgsave_lastsave(client: redis.Redis, daemon: Daemon) -> None:
    client.set("s", 1)
    before = client.lastsave()
    assert client.save() is True
    assert (daemon.data / "dump.rdb").exists()
    assert client.lastsave() >= before
    assert client.bgsave() is True
    deadline = time.monotonic() + 10
    while client.info("persistence")["rdb_bgsave_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.bgrewriteaof()


def test_unix_socket(daemon: Daemon) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket_path).st_mode)
    assert mode == 0o600
    with redis.Redis(unix_socket_path=str(daemon.socket_path)) as r:
        r.set("via-unix", 1)
        assert r.get("via-unix") == b"1"
        assert "U" in r.execute_command("CLIENT", "INFO").decode().split("flags=")[1].split()[0]


def _external_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_protected_mode_refuses_non_loopback(tmp_path: Path) -> None:
    ip = _external_ip()
    if ip is None:
        pytest.skip("no non-loopback address to connect from")
    d = Daemon(tmp_path / "data", "--bind", f"127.0.0.1 {ip}").start()
    try:
        with socket.create_connection((ip, d.port), timeout=5) as s:
            data = b""  # refused on accept: nothing to send (a write could race the close into a reset)
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"-DENIED") and b"protected mode" in data
        with d.client() as r:  # loopback is still served
            assert r.ping()
            r.config_set("requirepass", "pw")
        with redis.Redis(host=ip, port=d.port, password="pw") as r:  # with a password, anyone who knows it
            assert r.ping()
    finally:
        d.kill()
