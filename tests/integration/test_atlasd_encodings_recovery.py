"""Small and large hashes and lists in a real atlasd survive kill -9 (AOF replay) and BGSAVE + restart
with the same content and the encoding Redis 7.0 would load them in (listpack / hashtable / quicklist)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import Daemon, wait_for_snapshot

pytestmark = pytest.mark.timeout(120)

BIN = b"\xff\xfe\xfd\x00"
KEYS = (b"small", b"large", b"longval", b"l", b"biglist")


def contents(r: redis.Redis) -> dict:
    """Content and encoding per key; a listpack hash's HGETALL in its order (insertion order)."""
    out = {}
    for k in KEYS:
        enc = r.object("encoding", k)
        if r.type(k) == b"hash":
            pairs = list(r.hgetall(k).items())
            out[k] = (enc, pairs if enc == b"listpack" else sorted(pairs))
        else:
            out[k] = (enc, r.lrange(k, 0, -1))
    return out


def fill(r: redis.Redis) -> None:
    r.hset("small", mapping={"b": "1", "a": "2", BIN: BIN})
    r.hset("small", "b", "3")
    r.hset("large", mapping={f"f{i}": i for i in range(600)})
    r.hset("longval", mapping={"f": "v" * 65, "g": "w"})
    r.rpush("l", "a", BIN, "c")
    r.lpush("l", "z")
    r.rpush("biglist", *[f"item{i}" * 20 for i in range(300)])
    r.lpop("biglist")


def test_kill_9_replay_then_bgsave_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            fill(r)
            want = contents(r)
    finally:
        d.kill()  # SIGKILL: only the AOF can bring this back
    assert [want[k][0] for k in KEYS] == [b"listpack", b"hashtable", b"hashtable", b"quicklist", b"quicklist"]
    assert want[b"small"][1] == [(b"b", b"3"), (b"a", b"2"), (BIN, BIN)]
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert contents(r) == want
            assert r.bgsave()
            wait_for_snapshot(data)
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert contents(r) == want
    finally:
        d.kill()
