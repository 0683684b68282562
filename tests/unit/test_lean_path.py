"""The lean path (helios_core/atlas/lean.py) has exactly the general path's outcome.

Two engines on their own directories, with one clock, run the same commands: one through
`Engine.lean` (falling back to `Engine.execute` on MISS, as a connection does), the other through
`Engine.execute` only.  After every command they must agree on the reply or error, the keyspace
and its TTLs, what replies wait for (the reveal rule's seqs), the snapshot's dirty count, the
undo entries a failed write would apply, INFO commandstats, and in the end the AOF's bytes.
Every condition the lean path leaves to the general path returns MISS before touching anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.blocking import registry
from helios_core.atlas.cmdstats import CALLS, FAILED, HIST, NS, REJECTED
from helios_core.atlas.engine import Engine
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.lean import MISS
from helios_core.atlas.notify import parse_flags
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError

T0 = 1_700_000_000_000


def _undo(e: Engine) -> list:
    """The writer's pending undo entries, a database named by its index (each engine has its own)."""
    made = {id(ks): i for i, ks in e.dbs.made()}
    return [tuple(("db", made.get(id(x))) if isinstance(x, Keyspace) else x for x in entry)
            for entry in e.writer._undo]


class Twins:
    def __init__(self, base: Path) -> None:
        self.now = T0
        (base / "lean").mkdir()
        (base / "general").mkdir()
        cfg = AtlasConfig(save=(), max_value_bytes=1024)
        self.lean = Engine.open(base / "lean", cfg, clock=lambda: self.now)
        self.general = Engine.open(base / "general", cfg, clock=lambda: self.now)
        self.misses = 0
        self.hits = 0

    def close(self) -> None:
        self.lean.close()
        self.general.close()

    def run(self, *args: Any) -> Any:
        argv = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        a = self._outcome(self.lean, argv, lean=True)
        b = self._outcome(self.general, argv, lean=False)
        assert a == b, argv
        self.same()
        return a

    def _outcome(self, engine: Engine, argv: list[bytes], lean: bool) -> Any:
        try:
            fn = engine.lean.get(argv[0]) if lean else None
            reply = MISS if fn is None else fn(list(argv))
            if reply is MISS:
                if fn is not None:
                    self.misses += 1
                reply = engine.execute(list(argv))
            elif lean:
                self.hits += 1
            return ("reply", reply, engine.pending_seq())
        except CommandError as e:
            return ("error", str(e), engine.pending_seq())

    def same(self) -> None:
        a, b = self.lean, self.general
        for i in range(16):
            assert a.dbs[i].data == b.dbs[i].data
            assert a.dbs[i].expires == b.dbs[i].expires
        assert a._pending_keys == b._pending_keys
        assert (a._reply_seq, a._all_seq, a._reveal_top) == (b._reply_seq, b._all_seq, b._reveal_top)
        assert (a.seq, a.snapshots.dirty) == (b.seq, b.snapshots.dirty)
        assert a.stats.keyspace == b.stats.keyspace  # (INFO keyspace_hits/misses)
        assert _undo(a) == _undo(b)
        assert bytes(a.writer._buffer) == bytes(b.writer._buffer)
        ra, rb = a.stats.commands.records, b.stats.commands.records
        assert {k for k, r in ra.items() if any(r)} == {k for k, r in rb.items() if any(r)}
        for name, rec in ra.items():
            other = rb.get(name)
            if other is None:
                assert not any(rec)
                continue
            assert [rec[CALLS], rec[REJECTED], rec[FAILED]] == [other[CALLS], other[REJECTED], other[FAILED]], name
            assert sum(rec[HIST:]) == sum(other[HIST:]) == rec[CALLS], name
            assert (rec[NS] > 0) == (other[NS] > 0) or rec[CALLS] == 0

    def aof(self) -> tuple[bytes, bytes]:
        self.lean.flush_sync()
        self.general.flush_sync()
        return ((self.lean.dir.path / "appendonly.aof").read_bytes(),
                (self.general.dir.path / "appendonly.aof").read_bytes())


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[Twins]:
    t = Twins(tmp_path)
    yield t
    t.close()


def test_set_and_get_take_the_lean_path_with_the_same_outcome(twins: Twins) -> None:
    assert twins.run("GET", "k") == ("reply", None, 0)
    assert twins.run("SET", "k", "v")[1] == "OK"
    assert twins.run("get", "k")[1] == b"v"
    twins.run("set", "k", "w")
    twins.run("SET", b"\xff\x00", b"caf\xc3\xa9 \"q\" \\ \n")
    twins.run("GET", b"\xff\x00")
    twins.run("SET", "", "")
    twins.run("GET", "")
    assert twins.hits == 8 and twins.misses == 0
    assert twins.run("HSET", "h", "f", "1")[1] == 1
    assert twins.run("hset", "h", "f", "2")[1] == 0
    assert twins.run("HSET", "h", "g", "3")[1] == 1
    assert twins.run("SADD", "s", "m")[1] == 1
    assert twins.run("sadd", "s", "m")[1] == 0       # nothing added: no record, a read of s
    assert twins.run("SADD", "s", "7")[1] == 1
    assert twins.run("LPUSH", "l", "a")[1] == 1
    assert twins.run("rpush", "l", "b")[1] == 2
    twins.run("PEXPIRE", "h", "100")
    assert twins.run("HSET", "h", "i", "4")[1] == 1  # a TTL not yet due: the lean path, the TTL kept
    assert twins.hits == 17 and twins.misses == 0
    a, b = twins.aof()
    assert a == b and a.count(b"\n") == 13


def test_what_the_lean_path_leaves_to_the_general_one(twins: Twins) -> None:
    twins.run("SET", "k", "v", "EX", "10")        # an option
    twins.run("SET", "k", "v2")                   # a TTL not yet due: cleared by the same SET effect
    twins.run("SET", "t", "v", "PX", "5")
    twins.now += 10
    twins.run("GET", "t")                         # expired: the lazy DEL is logged
    twins.run("SET", "t2", "v", "PX", "5")
    twins.now += 10
    twins.run("SET", "t2", "again")               # expired, then set: DEL + SET in one record
    twins.run("HSET", "h", "f", "v")
    twins.run("GET", "h")                         # WRONGTYPE
    twins.run("SET", "h", "now a string")         # SET replaces any type (lean: no TTL on h)
    for cmd in (("HSET", "k", "f", "v"), ("SADD", "k", "m"), ("LPUSH", "k", "v"), ("RPUSH", "k", "v")):
        twins.run(*cmd)                           # WRONGTYPE
    twins.run("HSET", "h2", "f", "v", "g")        # HSET's own arity error
    twins.run("HSET", "t3", "f", "v")
    twins.run("PEXPIRE", "t3", "5")
    twins.now += 10
    twins.run("HSET", "t3", "f", "v")             # expired: DEL + HSET
    twins.run("GET")                              # arity errors
    twins.run("SET", "k")
    twins.run("SET", "big", "x" * 2000)           # over max_value_bytes
    twins.run("SET", "x" * 2000, "v")
    twins.run("GET", "x" * 2000)
    a, b = twins.aof()
    assert a == b
    assert twins.misses >= 16


def test_pending_reads_wait_for_what_they_reveal(twins: Twins) -> None:
    twins.run("SET", "a", "1")
    twins.run("DEL", "b")
    twins.run("GET", "a")
    twins.run("GET", "b")
    twins.run("GET", "zz")                        # a key never written: nothing to wait for
    twins.run("FLUSHALL")
    twins.run("GET", "a")                         # waits for the FLUSHALL (_all_seq)
    twins.run("SET", "a", "2")
    twins.lean.flush_sync()
    twins.general.flush_sync()
    twins.lean._durable_to(twins.lean.seq)
    twins.general._durable_to(twins.general.seq)
    twins.run("GET", "a")


class _Conn:
    def __init__(self, db: int) -> None:
        self.db = db
        self.addr = "127.0.0.1:1"
        self.name = b""


_SET_ONLY = ("notifications", "commit_hook", "listener", "misconf", "value_size")
_PUSH_ONLY = ("blocked_client",)  # (SET, HSET and SADD wake nobody)
_GET_ONLY = ("tracking",)


def _observe(e: Engine, condition: str) -> None:
    if condition == "monitor":
        e.monitor = lambda *a: None
    elif condition == "notifications":
        e.notifier.flags = parse_flags("KEA")
        e.notifier.publish = lambda channel, message: 0
        e.observers_changed()
    elif condition == "commit_hook":  # (WATCH, and client tracking's invalidations of writes)
        e.commit_hooks.append(lambda effects: None)
    elif condition == "listener":  # (the embedded Store's subscribe)
        e._listeners.append((b"k", lambda key: None))
    elif condition == "maxmemory":
        e.evictor.maxmemory = 1 << 30
        e.observers_changed()
    elif condition == "lru":
        e.evictor.set_policy("allkeys-lru", T0, [e.ks])
    elif condition == "db":
        e.select(3)
    elif condition == "conn_db":
        e.ctx.conn = _Conn(2)
    elif condition == "misconf":
        e.writer.error = "disk full"
    elif condition == "tracking":
        e.tracking.readers = 1
    elif condition == "value_size":
        e.config = AtlasConfig(save=(), max_value_bytes=1)  # (b"w" fits, b"SET" does not)
    elif condition == "blocked_client":
        registry(e).by_key[(0, b"l")] = deque()


@pytest.mark.parametrize("condition", [
    "monitor", "notifications", "commit_hook", "listener", "maxmemory", "lru", "db", "conn_db", "misconf",
    "tracking", "value_size", "blocked_client",
])
def test_every_observer_sends_the_commands_to_the_general_path(tmp_path: Path, condition: str) -> None:
    e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0)
    try:
        e.execute([b"SET", b"k", b"v"])
        set_, get = e.lean[b"SET"], e.lean[b"GET"]
        writes = [[b"HSET", b"h", b"f", b"v"], [b"SADD", b"s", b"m"], [b"LPUSH", b"l", b"v"], [b"RPUSH", b"l", b"w"]]
        # (the same calls without the condition take the lean path)
        assert set_([b"SET", b"k", b"v"]) is not MISS and get([b"GET", b"k"]) == b"v"
        assert [e.lean[argv[0]](argv) for argv in writes] == [1, 1, 1, 2]
        _observe(e, condition)
        before = (dict(e.ks.data), e.seq, e._reply_seq, bytes(e.writer._buffer),
                  e.stats.commands.record_for("set")[CALLS], e.stats.commands.record_for("get")[CALLS])
        if condition in _PUSH_ONLY:
            assert e.lean[b"LPUSH"]([b"LPUSH", b"l", b"x"]) is MISS
            assert e.lean[b"rpush"]([b"rpush", b"l", b"x"]) is MISS
            assert set_([b"SET", b"k", b"v"]) is not MISS
            return
        if condition not in _GET_ONLY:
            assert set_([b"SET", b"k", b"w"]) is MISS
            assert all(e.lean[argv[0]](argv) is MISS for argv in
                       [[b"HSET", b"h", b"g", b"v"], [b"SADD", b"s", b"n"], [b"LPUSH", b"l", b"x"]])
        if condition not in _SET_ONLY:
            assert get([b"GET", b"k"]) is MISS
        after = (dict(e.ks.data), e.seq, e._reply_seq, bytes(e.writer._buffer),
                 e.stats.commands.record_for("set")[CALLS], e.stats.commands.record_for("get")[CALLS])
        assert after == before
    finally:
        e.writer.error = None
        e.ctx.conn = None
        e.close()


_keys = st.sampled_from([b"a", b"b", b"c"])
_values = st.binary(max_size=6) | st.sampled_from([b"", b"\xff", b"\"\\\n"])
_commands = st.one_of(
    st.tuples(st.just(b"SET"), _keys, _values),
    st.tuples(st.just(b"set"), _keys, _values),
    st.tuples(st.just(b"GET"), _keys),
    st.tuples(st.just(b"get"), _keys),
    st.tuples(st.just(b"SET"), _keys, _values, st.sampled_from([b"NX", b"XX", b"GET", b"KEEPTTL"])),
    st.tuples(st.just(b"SET"), _keys, _values, st.just(b"PX"), st.sampled_from([b"1", b"5", b"100"])),
    st.tuples(st.just(b"PEXPIRE"), _keys, st.sampled_from([b"1", b"5", b"100"])),
    st.tuples(st.just(b"PERSIST"), _keys),
    st.tuples(st.just(b"DEL"), _keys),
    st.tuples(st.just(b"SADD"), _keys, _values),
    st.tuples(st.just(b"sadd"), _keys, st.sampled_from([b"1", b"2", b"x"])),
    st.tuples(st.just(b"HSET"), _keys, st.sampled_from([b"f", b"g"]), _values),
    st.tuples(st.just(b"hset"), _keys, st.sampled_from([b"f", b"g"]), _values, st.just(b"h"), st.just(b"2")),
    st.tuples(st.just(b"LPUSH"), _keys, _values),
    st.tuples(st.just(b"RPUSH"), _keys, _values),
    st.tuples(st.just(b"rpush"), _keys, _values, _values),
    st.tuples(st.just(b"SREM"), _keys, st.sampled_from([b"1", b"2", b"x"])),
    st.tuples(st.just(b"LPOP"), _keys),
    st.tuples(st.just(b"HDEL"), _keys, st.sampled_from([b"f", b"g"])),
    st.tuples(st.just(b"APPEND"), _keys, _values),
    st.tuples(st.just(b"MULTI_SET"), _keys, _values),
    st.tuples(st.just(b"SLEEP"), st.sampled_from([1, 3, 10])),
    st.tuples(st.just(b"DURABLE")),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_commands, max_size=30))
def test_random_programs_agree(tmp_path_factory: pytest.TempPathFactory, program: list[tuple]) -> None:
    twins = Twins(tmp_path_factory.mktemp("lean"))
    try:
        for step in program:
            if step[0] == b"SLEEP":
                twins.now += step[1]
            elif step[0] == b"DURABLE":
                for e in (twins.lean, twins.general):
                    e.flush_sync()
                    e._durable_to(e.seq)
            elif step[0] == b"MULTI_SET":  # a batch: the lean path must stay out of it
                for e in (twins.lean, twins.general):
                    with e.batch():
                        assert e.lean[b"SET"]([b"SET", step[1], step[2]]) is MISS
                        e.execute([b"SET", step[1], step[2]])
                twins.same()
            else:
                twins.run(*step)
        a, b = twins.aof()
        assert a == b
    finally:
        twins.close()
