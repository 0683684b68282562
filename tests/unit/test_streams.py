"""Streams in the engine: ids from the clock, effects in the AOF, replay, snapshots, the codec and undo."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.atlas.dump import BadFormat, PayloadError, crc64, dump_value, load_payload
from helios_core.atlas.effects import RecordError, apply_effect, decode_line, encode_record, undo_effects
from helios_core.atlas.engine import Engine
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.resp import NULL_ARRAY
from helios_core.atlas.snapshot import check_snapshot, load_snapshot, write_snapshot
from helios_core.atlas.streamtype import Stream, to_plain
from helios_core.config import AtlasConfig
from tests.unit.atlas_harness import T0, WRONGTYPE, Atlas

BIN = b"\xff\x00\x80"


def workload(a: Atlas) -> None:
    a("XADD", "s", "*", "f", "1")
    for i in range(1, 130):
        a("XADD", "s", f"{T0 + i}-0", "n", str(i), "b", BIN)
    a("XDEL", "s", f"{T0 + 5}-0", f"{T0 + 120}-0")
    a("XTRIM", "s", "MINID", f"{T0 + 10}")
    a("XADD", "s", "MAXLEN", "~", "20", "*", "x", "y")   # one whole node of 100 goes
    a("XGROUP", "CREATE", "s", "g", "0")
    a("XGROUP", "CREATE", "s", "h", "$", "ENTRIESREAD", "3")
    a("XREADGROUP", "GROUP", "g", "c1", "COUNT", "4", "STREAMS", "s", ">")
    a.now += 1000
    a("XREADGROUP", "GROUP", "g", "c2", "COUNT", "2", "STREAMS", "s", ">")
    a("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "0")
    a("XACK", "s", "g", f"{T0 + 101}-0")
    a("XCLAIM", "s", "g", "c3", "0", f"{T0 + 102}-0", "IDLE", "500", "RETRYCOUNT", "4")
    a("XAUTOCLAIM", "s", "g", "c4", "0", "0", "COUNT", "1")
    a("XGROUP", "DELCONSUMER", "s", "g", "c2")
    a("XGROUP", "CREATECONSUMER", "s", "h", "lazy")
    a("XGROUP", "CREATE", "e", "g", "$", "MKSTREAM")
    a("XSETID", "e", "5-5", "ENTRIESADDED", "9", "MAXDELETEDID", "2-2")
    a("XADD", "r", "1-1", "a", "b")
    a("RENAME", "r", "r2")
    a("COPY", "s", "s-copy")


def state(engine: Engine) -> dict:
    return {k: (to_plain(v) if type(v) is Stream else v) for k, v in engine.ks.data.items()}


def reopen(a: Atlas) -> Engine:
    a.engine.close()
    return Engine.open(a.path, AtlasConfig(), clock=lambda: a.now)


def test_commands_and_their_replies(a: Atlas) -> None:
    workload(a)
    assert a("TYPE", "s") == "stream" and a("OBJECT", "ENCODING", "s") == b"stream"
    assert a("XLEN", "s") == 30 and a("XLEN", "e") == 0 and a("XLEN", "nope") == 0
    assert a("XRANGE", "r2", "-", "+") == [[b"1-1", [b"a", b"b"]]]
    assert a("XRANGE", "nope", "-", "+", "COUNT", "0") == []
    assert a("XRANGE", "s", "-", "+", "COUNT", "0") is NULL_ARRAY
    assert a("XPENDING", "s", "g")[0] == 3  # 4 + 2 read, 1 acked, c2 (2) deleted
    a("SET", "str", "v")
    assert a.error("XADD", "str", "*", "f", "v") == WRONGTYPE
    assert a.error("XADD", "s", "1-1", "f", "v") == ("ERR The ID specified in XADD is equal or smaller than the "
                                                     "target stream top item")
    # XREAD BLOCK without a connection (MULTI, a script, the embedded Store) never blocks
    assert a("XREAD", "BLOCK", "0", "STREAMS", "nope", "$") is NULL_ARRAY


def test_star_ids_come_from_the_clock_and_never_go_back(a: Atlas) -> None:
    assert a("XADD", "s", "*", "f", "v") == b"%d-0" % T0
    assert a("XADD", "s", "*", "f", "v") == b"%d-1" % T0
    a.now = T0 - 60_000  # the clock steps back: ids keep growing from the last one
    assert a("XADD", "s", "*", "f", "v") == b"%d-2" % T0
    a.now = T0 + 7
    assert a("XADD", "s", "*", "f", "v") == b"%d-0" % (T0 + 7)
    assert a("XADD", "s", f"{T0 + 7}-*", "f", "v") == b"%d-1" % (T0 + 7)


def test_writes_are_logged_as_what_they_decided(a: Atlas) -> None:
    a("XADD", "s", "*", "f", "v")
    a("XADD", "s", "MAXLEN", "1", "*", "g", "w")
    a("XGROUP", "CREATE", "s", "grp", "0")
    a("XREADGROUP", "GROUP", "grp", "c", "STREAMS", "s", ">")
    a("XACK", "s", "grp", f"{T0}-1")
    assert a.aof() == [
        ("XADD", b"s", (T0, 0), [b"f", b"v"]),
        ("MULTI", [("XADD", b"s", (T0, 1), [b"g", b"w"]), ("XTRIM", b"s", 1)]),
        ("XGROUP", b"s", b"grp", (0, 0), -1),
        ("MULTI", [("XCONSUMER", b"s", b"grp", b"c", T0), ("XGROUP", b"s", b"grp", (T0, 1), 2),
                   ("XNACK", b"s", b"grp", b"c", [((T0, 1), T0, 1)])]),
        ("XACK", b"s", b"grp", [(T0, 1)]),
    ]


def test_aof_replay_rebuilds_streams_groups_and_pels(a: Atlas) -> None:
    workload(a)
    want = state(a.engine)
    a.engine = reopen(a)
    assert state(a.engine) == want
    # the node layout came back too: approximate trimming removes the same whole nodes
    assert a("XTRIM", "s", "MAXLEN", "~", "0") == 30


def test_snapshot_then_aof_tail(a: Atlas) -> None:
    workload(a)
    a.engine.snapshot_sync()
    a("XADD", "s", "*", "after", "snapshot")
    a("XREADGROUP", "GROUP", "h", "c9", "STREAMS", "s", ">")
    want = state(a.engine)
    a.engine = reopen(a)
    assert state(a.engine) == want
    assert check_snapshot(a.path / "dump.rdb").ok


def test_snapshot_codec_round_trip(tmp_path: Path, a: Atlas) -> None:
    workload(a)
    data = dict(a.engine.ks.data)
    path = tmp_path / "snap"
    write_snapshot(path, data, {}, seq=3, created_ms=1)
    _, got, _ = load_snapshot(path)
    assert {k: to_plain(v) if type(v) is Stream else v for k, v in got.items()} == state(a.engine)


def test_copies_keep_the_node_layout(a: Atlas) -> None:
    workload(a)
    src, copy = a.engine.ks.data[b"s"], a.engine.ks.data[b"s-copy"]
    assert type(src) is Stream and type(copy) is Stream
    assert to_plain(copy) == to_plain(src)


def test_dump_payload_round_trip(a: Atlas) -> None:
    workload(a)
    for key in (b"s", b"e", b"s-copy"):
        s = a.engine.ks.data[key]
        assert type(s) is Stream
        got = load_payload(dump_value(s))
        assert type(got) is Stream
        # entries, counters and groups exactly; nodes keep their boundaries (a payload holds live
        # entries only, so a node's deleted count and size may differ from the live stream's)
        plain, back = to_plain(s), to_plain(got)
        assert back[:4] == plain[:4] and back[5] == plain[5]
        assert [n[:2] + n[4:6] for n in back[4]] == [n[:2] + n[4:6] for n in plain[4]]
    body = dump_value(a.engine.ks.data[b"s"])[:40] + struct.pack("<H", 10)  # cut short, right checksum
    with pytest.raises(BadFormat):
        load_payload(body + struct.pack("<Q", crc64(body)))
    with pytest.raises(PayloadError):
        load_payload(body + b"\x00" * 8)


def test_values_are_bounded_like_other_writes(tmp_path: Path) -> None:
    a = Atlas(tmp_path, AtlasConfig(max_value_bytes=16))
    try:
        assert "max_value_bytes" in a.error("XADD", "s", "*", "f", "x" * 17)
        assert a("XLEN", "s") == 0
    finally:
        a.engine.close()


@pytest.mark.parametrize("eff", [
    ("XADD", b"k", (1, 2), [b"f", BIN, b"", b"v"]), ("XADD", BIN, ((1 << 64) - 1, 0), [b"a", b"b"]),
    ("XDEL", b"k", [(1, 2), (3, 4)]), ("XTRIM", b"k", 7), ("XSETID", b"k", (5, 6), 9, (1, 1)),
    ("XGROUP", b"k", BIN, (0, 0), -1), ("XGROUP", b"k", b"g", (3, 3), 12), ("XGDEL", b"k", b"g"),
    ("XCONSUMER", b"k", b"g", BIN, T0), ("XCDEL", b"k", b"g", b"c"),
    ("XNACK", b"k", b"g", b"c", [((1, 1), T0, 1), ((2, 0), T0 - 5, 4)]), ("XACK", b"k", b"g", [(1, 1)]),
    ("XNODES", b"k", [((1, 1), 3, 5, (4, 0), 120, [b"a", BIN]), ((9, 0), 1, 1, (9, 0), 30, [])]),
    ("MULTI", [("XADD", b"s", (1, 1), [b"a", b"b"]), ("XTRIM", b"s", 1)]),
])
def test_effect_codec_round_trip(eff: tuple) -> None:
    line = encode_record(9, [eff])
    assert decode_line(line[:-1], 0) == (9, eff)


@pytest.mark.parametrize("line", [
    b'{"cmd":"XADD","key":"k","id":"1-1","items":["a"]}', b'{"cmd":"XADD","key":"k","id":"1","items":["a","b"]}',
    b'{"cmd":"XADD","key":"k","id":"18446744073709551616-0","items":["a","b"]}', b'{"cmd":"XTRIM","key":"k"}',
    b'{"cmd":"XDEL","key":"k","ids":"1-1"}', b'{"cmd":"XGROUP","key":"k","group":"g","id":"1-1","read":-2}',
    b'{"cmd":"XNACK","key":"k","group":"g","consumer":"c","nacks":[["1-1",1]]}', b'{"cmd":"XACK","key":"k"}',
])
def test_effect_codec_refuses_bad_records(line: bytes) -> None:
    with pytest.raises(RecordError):
        decode_line(line, 0)


sid = st.tuples(st.integers(1, 8), st.integers(0, 2))
group = st.sampled_from([b"g", b"h"])
consumer = st.sampled_from([b"c1", b"c2"])
effect = st.one_of(
    st.tuples(st.just("XADD"), st.just(b"s"), st.integers(9, 20).map(lambda n: (n, 0)), st.just([b"f", b"v"])),
    st.tuples(st.just("XDEL"), st.just(b"s"), st.lists(sid, max_size=3)),
    st.tuples(st.just("XTRIM"), st.just(b"s"), st.integers(0, 4)),
    st.tuples(st.just("XSETID"), st.just(b"s"), st.just((30, 0)), st.integers(0, 40), sid),
    st.tuples(st.just("XGROUP"), st.just(b"s"), group, sid, st.integers(-1, 5)),
    st.tuples(st.just("XGDEL"), st.just(b"s"), group),
    st.tuples(st.just("XCONSUMER"), st.just(b"s"), group, consumer, st.integers(0, 9)),
    st.tuples(st.just("XCDEL"), st.just(b"s"), group, consumer),
    st.tuples(st.just("XNACK"), st.just(b"s"), group, consumer,
              st.lists(st.tuples(sid, st.integers(0, 9), st.integers(1, 3)), max_size=3)),
    st.tuples(st.just("XACK"), st.just(b"s"), group, st.lists(sid, max_size=3)),
    st.tuples(st.just("DEL"), st.just(b"s")),
)


def _seed(ks: Keyspace) -> None:
    for m in range(1, 9):
        for q in range(3):
            apply_effect(ks, ("XADD", b"s", (m, q), [b"n", b"%d" % m]), None)
    apply_effect(ks, ("XGROUP", b"s", b"g", (2, 0), 3), None)
    apply_effect(ks, ("XNACK", b"s", b"g", b"c1", [((1, 1), 5, 1), ((2, 0), 6, 2)]), None)


@settings(max_examples=300, deadline=None)
@given(effs=st.lists(effect, max_size=6))
def test_undo_restores_exactly(effs: list[tuple]) -> None:
    ks = Keyspace()
    _seed(ks)
    before = to_plain(ks.data[b"s"])  # type: ignore[arg-type]
    undo: list = []
    for eff in effs:
        cur = ks.data.get(b"s")
        if eff[0] == "XADD" and type(cur) is Stream and eff[2] <= cur.last_id:
            continue  # (commands only ever append above the last id)
        apply_effect(ks, eff, undo)
    undo_effects(ks, undo)
    value = ks.data[b"s"]
    assert type(value) is Stream and to_plain(value) == before
    assert value.nbytes == sum(len(x) for f in value.entries.values() for x in f)
