"""Numbered databases survive kill -9: a real atlasd under appendfsync always, SIGKILLed after
writes in several databases, SWAPDB, MOVE, FLUSHDB and COPY ... DB, restarted on the same
directory with every database as it was acknowledged; the same after a snapshot (BGSAVE) and more
writes.  Data written before databases existed (a fixture made by the code of that time) loads
into database 0."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import Daemon, wait_for_snapshot

pytestmark = pytest.mark.timeout(180)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "atlas_before_databases"
DATABASES = 16


def read(value_type: bytes, r: redis.Redis, key: bytes) -> object:
    if value_type == b"string":
        return r.get(key)
    if value_type == b"hash":
        return r.hgetall(key)
    if value_type == b"list":
        return r.lrange(key, 0, -1)
    if value_type == b"set":
        return r.smembers(key)
    if value_type == b"zset":
        return r.zrange(key, 0, -1, withscores=True)
    return value_type


def everything(d: Daemon) -> dict[int, dict]:
    """Every database's keys: type, content, and absolute expiry (ms), as the server answers."""
    out: dict[int, dict] = {}
    for index in range(DATABASES):
        with d.client(db=index) as r:
            keys = {}
            for key in r.scan_iter(count=1000):
                t = r.type(key)
                keys[key] = (t, read(t, r, key), r.pexpiretime(key))
            if keys:
                out[index] = keys
    return out


def test_kill_9_keeps_every_database_then_snapshot_and_tail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client(db=3) as r3, d.client(db=5) as r5, d.client() as r0:
            r3.set("s", "three")
            r3.hset("h", mapping={"f": "v", "g": "w"})
            r3.rpush("l", "a", "b", "c")
            r3.set("t", "ttl", px=10_000_000)
            r5.set("s", "five")
            r5.sadd("set", "x", "y")
            r5.zadd("z", {"m": 1.5})
            r0.set("s", "zero")
            assert r3.swapdb(3, 7)                    # db 3's keys are now db 7's
            r5.execute_command("MOVE", "set", "3")    # into the emptied db 3
            r5.execute_command("COPY", "z", "z", "DB", "9")
            r0.set("gone", "x")
            r5.execute_command("SELECT", "0")         # (this connection's own database changes)
            r5.flushdb()                              # database 0 only
            with r3.pipeline(transaction=True) as p:  # MULTI/EXEC holding a SELECT
                p.execute_command("SELECT", "11")
                p.set("multi", "eleven")
                p.execute_command("SELECT", "3")
                p.execute()
            r3.execute_command("SELECT", "12")
            r3.set("k", "twelve")
        want = everything(d)
        assert sorted(want) == [3, 5, 7, 9, 11, 12]
        assert want[7][b"s"][1] == b"three" and want[3][b"set"][1] == {b"x", b"y"} and 0 not in want
    finally:
        d.kill()  # SIGKILL: only the AOF can bring this back
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        assert everything(d) == want
        with d.client(db=7) as r7:
            since = time.time() - 1
            assert r7.bgsave()
            wait_for_snapshot(data, since)
            r7.set("after", "snapshot")
            r7.execute_command("SWAPDB", "7", "8")
            r7.execute_command("MOVE", "after", "2")  # (r7 is in database 7: now the old db 8, empty)
            with d.client(db=8) as r8:
                r8.execute_command("MOVE", "after", "2")
                r8.delete("h")
            with d.client(db=11) as r11:
                r11.flushdb()
        want = everything(d)
        assert 11 not in want and want[2] == {b"after": (b"string", b"snapshot", -1)}
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        assert everything(d) == want
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.kill()
    # Fewer databases than the data holds: start-up stops and says what to set.
    d = Daemon(data, "--appendfsync", "always", env={"HELIOS_ATLASD__DATABASES": "4"}).start(wait=False)
    try:
        assert d.proc.wait(timeout=30) != 0
        assert "atlasd.databases is 4" in d.log() and "HELIOS_ATLASD__DATABASES" in d.log()
    finally:
        d.kill()


def test_data_written_before_databases_loads_into_db0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for f in FIXTURE.iterdir():
        shutil.copy(f, data / f.name)
        (data / f.name).chmod(0o600)
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        got = everything(d)
        assert list(got) == [0]
        db0 = {k: v[:2] for k, v in got[0].items()}
        assert db0 == {
            b"snap:str": (b"string", b"before the snapshot"),
            b"snap:hash": (b"hash", {b"f": b"v", b"g": b"w", b"h": b"x"}),
            b"snap:list": (b"list", [b"b", b"c"]),
            b"snap:zset": (b"zset", [(b"z", 1.5)]),
            b"snap:ttl": (b"string", b"v"),
            b"aof:str": (b"string", b"after the snapshot"),
            b"aof:bin": (b"string", b"\xff\x00"),
            b"aof:m2": (b"string", b"2"),
        }  # (aof:m1 expired in 2023: its record gives it an absolute expiry)
        assert got[0][b"snap:ttl"][2] == 4_000_000_000_000
        with d.client(db=1) as r1:
            r1.set("new", "one")
        with d.client() as r0:
            assert r0.dbsize() == 8
    finally:
        d.kill()


def test_kill_9_under_load_keeps_each_acknowledged_write_in_its_database(tmp_path: Path) -> None:
    """Four clients, each in its own database, write and move keys as fast as they can; atlasd is
    SIGKILLed mid-stream.  Every write a client saw acknowledged is there after restart, in its
    database and nowhere else (a record replayed into the wrong database would show up as a key
    in a database its client never wrote)."""
    import threading

    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    acked: dict[int, dict[bytes, bytes]] = {db: {} for db in (1, 2, 5, 9)}
    moved: dict[int, set[bytes]] = {db: set() for db in acked}
    inflight: dict[int, bytes] = {}  # a MOVE sent, its reply not seen (the kill may cut it either way)
    stop = threading.Event()

    def client(db: int) -> None:
        try:
            with d.client(db=db) as r:
                i = 0
                while not stop.is_set():
                    key = b"k%d" % i
                    r.set(key, b"%d:%d" % (db, i))
                    acked[db][key] = b"%d:%d" % (db, i)
                    if i % 7 == 3:  # one in seven goes to database 12 (a record with two databases)
                        inflight[db] = key
                        if r.execute_command("MOVE", key, "12") == 1:
                            moved[db].add(key)
                        del inflight[db]
                    i += 1
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # the kill

    threads = [threading.Thread(target=client, args=(db,)) for db in acked]
    for t in threads:
        t.start()
    time.sleep(1.5)
    d.kill()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert all(len(a) > 10 for a in acked.values()), {db: len(a) for db, a in acked.items()}
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        got = everything(d)
        in12 = {k: v[1] for k, v in got.get(12, {}).items()}
        for db, writes in acked.items():
            here = {k: v[1] for k, v in got.get(db, {}).items()}
            for key, value in writes.items():
                if key in moved[db]:
                    assert key not in here and in12.get(key) == value, (db, key)
                elif inflight.get(db) == key:
                    assert (here.get(key), in12.get(key)) in ((value, None), (value, in12.get(key)), (None, value))
                else:
                    assert here.get(key) == value, (db, key, here.get(key))
            # nothing from another client's database
            assert all(v.startswith(b"%d:" % db) for v in here.values()), db
        assert set(got) <= {1, 2, 5, 9, 12}
    finally:
        d.kill()
