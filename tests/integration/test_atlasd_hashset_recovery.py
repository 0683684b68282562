"""Hashes and sets in a real atlasd survive kill -9 (AOF replay) and a snapshot plus AOF tail."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import Daemon, wait_for_snapshot

pytestmark = pytest.mark.timeout(120)


def contents(r: redis.Redis) -> dict:
    return {"h": r.hgetall("h"), "s": r.smembers("s"), "u": r.smembers("u"), "types": [r.type(k) for k in
                                                                                         ("h", "s", "u", "g")],
            "ttl": r.ttl("h") > 0}


def test_kill_9_then_snapshot_and_tail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            r.hset("h", mapping={"a": "1", "b": "2", b"\xff": b"\x00"})
            r.hincrbyfloat("h", "a", 0.5)
            r.expire("h", 1000)
            r.sadd("s", "x", "y", "z", "w")
            popped = r.spop("s")
            r.sunionstore("u", ["s", "missing"])
            r.hset("g", "f", "v")
            r.hdel("g", "f")
            want = contents(r)
            assert popped not in want["s"] and want["types"] == [b"hash", b"set", b"set", b"none"]
    finally:
        d.kill()  # SIGKILL: only the AOF can bring this back
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert contents(r) == want
            assert r.bgsave()
            wait_for_snapshot(data)
            r.hset("h", "after", "snapshot")
            r.srem("s", *want["s"])
            want = contents(r)
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert contents(r) == want
    finally:
        d.kill()
