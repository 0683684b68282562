"""Lists in the engine: commands, their effects, AOF replay, snapshots, the line codec, undo and blocking's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.atlas.blocking import Block, Registry, Waiter
from helios_core.atlas.commands.lists import parse_timeout
from helios_core.atlas.effects import RecordError, apply_effect, decode_line, encode_record, undo_effects
from helios_core.atlas.engine import Engine
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.listvalue import List
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.snapshot import check_snapshot, load_snapshot, write_snapshot
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError
from tests.unit.atlas_harness import T0, WRONGTYPE, Atlas

BIN = b"\xff\x00\x80"


def workload(a: Atlas) -> None:
    a("RPUSH", "l", "a", "b", "c", BIN)
    a("LPUSH", "l", "z", "y")
    a("LINSERT", "l", "AFTER", "b", "b2")
    a("LSET", "l", -1, "tail")
    a("LPOP", "l")
    a("RPOP", "l", 2)
    a("RPUSH", "r", "x", "y", "x", "z", "x", "w")
    a("LREM", "r", -2, "x")
    a("LTRIM", "r", 1, -1)
    a("RPUSH", "m", "1", "2")
    a("LMOVE", "m", "n", "LEFT", "RIGHT")
    a("RPOPLPUSH", "m", "n")
    a("LMPOP", 2, "none", "n", "RIGHT", "COUNT", 1)
    a("BLPOP", "none", "r", 0)  # no connection: never blocks, pops at once
    a("RPUSH", "gone", "g")
    a("LREM", "gone", 0, "g")
    a("PEXPIRE", "l", 60_000)
    a("RENAME", "l", "l2")
    a("SET", "str", "v")
    a("RENAME", "r", "str")  # a list over a string


def state(engine: Engine) -> tuple[dict, dict]:
    ks = engine.ks
    return {k: (list(v) if type(v) is List else v) for k, v in ks.data.items()}, dict(ks.expires)


def reopen(a: Atlas) -> Engine:
    a.engine.close()
    return Engine.open(a.path, AtlasConfig(), clock=lambda: a.now)


def test_commands_and_their_replies(a: Atlas) -> None:
    workload(a)
    data, expires = state(a.engine)
    assert data[b"l2"] == [b"z", b"a", b"b", b"b2"] and b"l2" in expires
    assert data[b"str"] == [b"z", b"w"]
    assert data[b"n"] == [b"2"] and b"m" not in data and b"gone" not in data
    assert a("TYPE", "l2") == "list" and a("LLEN", "nope") == 0
    assert a("LPOS", "l2", "b") == 2 and a("LINDEX", "l2", -1) == b"b2"
    a("SET", "s", "v")
    assert a.error("LPUSH", "s", "v") == WRONGTYPE
    assert a("LPOP", "nope", 1) is NULL_ARRAY and a("LPOP", "nope") is None


def test_every_write_is_logged_as_list_effects(a: Atlas) -> None:
    a("RPUSH", "l", "a", "b")
    a("LINSERT", "l", "BEFORE", "b", "x")
    a("LREM", "l", 0, "a")
    a("LTRIM", "l", 0, 0)
    a("LPOP", "l")
    assert a.aof() == [("RPUSH", b"l", [b"a", b"b"]), ("LINSERT", b"l", 1, b"x"), ("LREM", b"l", 0, b"a"),
                       ("LTRIM", b"l", 0, 1), ("LPOP", b"l", 1)]


def test_aof_replay_rebuilds_lists(a: Atlas) -> None:
    workload(a)
    want = state(a.engine)
    a.engine = reopen(a)
    assert state(a.engine) == want
    assert type(a.engine.ks.data[b"l2"]) is List


def test_snapshot_then_aof_tail(a: Atlas) -> None:
    workload(a)
    a.engine.snapshot_sync()
    a("RPUSH", "l2", "after", "snapshot")
    a("LPOP", "n")
    want = state(a.engine)
    a.engine = reopen(a)
    assert state(a.engine) == want
    assert check_snapshot(a.path / "dump.rdb").ok


def test_snapshot_codec_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    data = {b"l": List([b"a", BIN, b"", b"a"]), b"str": b"x"}
    write_snapshot(path, data, {b"l": 1_800_000_000_000}, seq=3, created_ms=1)
    info, got, expires = load_snapshot(path)
    assert got == data and type(got[b"l"]) is List and expires == {b"l": 1_800_000_000_000} and info.keys == 2


@pytest.mark.parametrize("eff", [
    ("LPUSH", b"k", [b"a", b"b"]), ("RPUSH", b"k", [BIN, b""]), ("LPOP", b"k", 3), ("RPOP", BIN, 1),
    ("LSET", b"k", 4, b"v"), ("LINSERT", b"k", 0, BIN), ("LREM", b"k", -2, b"x"), ("LTRIM", b"k", 1, 0),
    ("MULTI", [("RPOP", b"s", 1), ("LPUSH", b"d", [b"x"])]),
])
def test_effect_codec_round_trip(eff: tuple) -> None:
    line = encode_record(9, [eff])
    assert decode_line(line[:-1], 0) == (9, eff)


@pytest.mark.parametrize("line", [
    b'{"cmd":"RPUSH","key":"k"}', b'{"cmd":"LPOP","key":"k","count":-1}', b'{"cmd":"LSET","key":"k","index":0}',
    b'{"cmd":"LTRIM","key":"k","left":"1","right":0}', b'{"cmd":"LREM","key":"k","count":1.5,"value":"v"}',
])
def test_effect_codec_refuses_bad_records(line: bytes) -> None:
    with pytest.raises(RecordError):
        decode_line(line, 0)


effect = st.one_of(
    st.tuples(st.sampled_from(["LPUSH", "RPUSH"]), st.lists(st.sampled_from([b"a", b"b"]), min_size=1, max_size=3)),
    st.tuples(st.sampled_from(["LPOP", "RPOP"]), st.integers(0, 4)),
    st.tuples(st.just("LSET"), st.integers(0, 6), st.sampled_from([b"x", b"y"])),
    st.tuples(st.just("LINSERT"), st.integers(0, 6), st.sampled_from([b"x", b"y"])),
    st.tuples(st.just("LREM"), st.integers(-2, 2), st.sampled_from([b"a", b"x"])),
    st.tuples(st.just("LTRIM"), st.integers(0, 3), st.integers(0, 3)),
)


@settings(max_examples=200, deadline=None)
@given(start=st.lists(st.sampled_from([b"a", b"b", b"x"]), max_size=6), effs=st.lists(effect, max_size=6))
def test_undo_restores_exactly(start: list[bytes], effs: list[tuple]) -> None:
    ks = Keyspace()
    if start:
        ks.put(b"k", List(start), 123)
    undo: list = []
    for op, *rest in effs:
        value = ks.data.get(b"k")
        n = len(value) if type(value) is List else 0
        if op in ("LSET",) and not rest[0] < n:
            continue  # commands only emit positions inside the list
        if op == "LINSERT" and not rest[0] <= n:
            continue
        apply_effect(ks, (op, b"k", *rest), undo)
    undo_effects(ks, undo)
    if start:
        assert list(ks.data[b"k"]) == start and ks.expires == {b"k": 123}
    else:
        assert ks.data == {}


def test_timeouts_parse_as_redis_7_0() -> None:
    assert parse_timeout(b"0", T0) == 0
    assert parse_timeout(b"1.5", T0) == T0 + 1500
    assert parse_timeout(b"0.0001", T0) == T0 + 1  # a positive fraction waits at least a millisecond
    assert parse_timeout(b"0x10", T0) == T0 + 16_000
    for raw, text in ((b"-1", "ERR timeout is negative"), (b"inf", "ERR timeout is negative"),
                      (b"1e400", "ERR timeout is negative"), (b"x", "ERR timeout is not a float or out of range"),
                      (b"nan", "ERR timeout is not a float or out of range"),
                      (b" 1", "ERR timeout is not a float or out of range")):
        with pytest.raises(CommandError) as e:
            parse_timeout(raw, T0)
        assert str(e.value) == text, raw


class FakeConn:
    """A parked client: `serve_blocked` pops for it from a shared list (None when empty)."""

    def __init__(self, name: str, items: list[bytes], reg: Registry, log: list) -> None:
        self.name, self.items, self.reg, self.log = name, items, reg, log
        self.waiter: Waiter | None = None

    def serve_blocked(self, w: Waiter) -> int | None:
        if not self.items:
            return None
        self.log.append((self.name, self.items.pop(0)))
        self.reg.remove(w)
        return len(self.log)


def test_registry_wakes_fifo_and_stops_when_the_key_empties_again() -> None:
    reg = Registry()
    items: list[bytes] = []
    log: list = []
    conns = [FakeConn(n, items, reg, log) for n in ("first", "second", "third")]
    for c in conns:
        c.waiter = reg.park(c, [b"BLPOP", b"k", b"0"], Block([b"k", b"k"], 0))
    assert reg.count == 3 and len(reg.by_key[(0, b"k")]) == 3  # a key named twice waits once (keys: (db, key))
    reg.signal((0, b"other"))
    assert not reg.ready
    items += [b"1", b"2"]
    reg.signal((0, b"k"))
    assert reg.serve() == 2
    assert log == [("first", b"1"), ("second", b"2")] and reg.count == 1 and not reg.ready
    assert conns[2].waiter is not None
    reg.remove(conns[2].waiter)
    reg.remove(conns[2].waiter)  # twice is harmless (timeout and hang-up racing)
    assert reg.count == 0 and reg.by_key == {}
