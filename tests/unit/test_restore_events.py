"""RESTORE's keyspace events over a key whose TTL ran out but which is still held, on the engine's
own clock (no active expiry can reap the key first, as it may over the network).

Redis 7.0's RESTORE without REPLACE looks the key up (lookupKeyWrite: the key expires, "expired"),
then adds it ("new", "restore").  With REPLACE it deletes what the key holds without a lookup
(dbDelete: no event) and adds it ("new", "restore"); with a TTL already in the past it only deletes
it ("del").  tests/integration/test_differential_store_events.py compares the same cases with
redis-server, where timing can blur them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helios_core.atlas.commands.table import OK
from helios_core.atlas.engine import Engine
from helios_core.atlas.notify import parse_flags
from helios_core.config import AtlasConfig
from tests.unit.test_databases import run

NOW = 1_700_000_000_000

EXPIRED = [(b"__keyspace@0__:d", b"expired"), (b"__keyevent@0__:expired", b"d")]
NEW_RESTORE = [(b"__keyspace@0__:d", b"new"), (b"__keyevent@0__:new", b"d"),
               (b"__keyspace@0__:d", b"restore"), (b"__keyevent@0__:restore", b"d")]
DEL = [(b"__keyspace@0__:d", b"del"), (b"__keyevent@0__:del", b"d")]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Engine, list[int], list[tuple[bytes, bytes]]]]:
    clock = [NOW]
    eng = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0])
    sent: list[tuple[bytes, bytes]] = []
    eng.notifier.publish = lambda channel, message: sent.append((channel, message)) or 0
    eng.notifier.flags = parse_flags("KEAn")
    eng.observers_changed()
    try:
        yield eng, clock, sent
    finally:
        eng.close()


@pytest.mark.parametrize("held", [("SADD", "d", "a"), ("SET", "d", "x")], ids=["set", "string"])
@pytest.mark.parametrize(("options", "events"), [
    ((), EXPIRED + NEW_RESTORE),
    (("REPLACE",), NEW_RESTORE),
    (("REPLACE", "ABSTTL"), DEL),  # (a TTL of 1 ms after the epoch: already past)
], ids=["plain", "replace", "replace-past-ttl"])
def test_restore_over_a_key_whose_ttl_ran_out(engine: tuple, held: tuple[str, ...], options: tuple[str, ...],
                                               events: list) -> None:
    eng, clock, sent = engine
    run(eng, None, "SADD", "s1", "m")
    payload = run(eng, None, "DUMP", "s1")
    assert isinstance(payload, bytes)
    run(eng, None, *held)
    run(eng, None, "PEXPIRE", "d", "10")
    clock[0] += 100
    assert b"d" in eng.ks.data  # (held still: nothing reaped it)
    eng.flush_sync()
    eng._durable_to(eng.seq)
    sent.clear()
    ttl = "1" if "ABSTTL" in options else "0"
    assert run(eng, None, "RESTORE", "d", ttl, payload, *options) is OK
    eng.flush_sync()  # (messages are held until their record is durable, then published)
    eng._durable_to(eng.seq)
    assert sent == events
    if "ABSTTL" in options:
        assert b"d" not in eng.ks.data
    else:
        assert eng.ks.data[b"d"] == {b"m"} and b"d" not in eng.ks.expires
