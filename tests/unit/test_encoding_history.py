"""A hash's and a set's encoding history (OBJECT ENCODING) in process: what the effects, the
AOF replay, snapshots and undo keep.  test_differential_encoding_history compares the same
histories with a real redis-server."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.atlas import packed, snapshot
from helios_core.atlas.commands.table import parse_int
from helios_core.atlas.effects import RecordError, apply_effect, decode_line, encode_record, undo_effects
from helios_core.atlas.engine import Engine
from helios_core.atlas.hashtype import Hash
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.packed import LIMITS, keep_set_encoding, set_encoding
from helios_core.atlas.snapshot import check_snapshot, load_snapshot, write_snapshot
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError
from tests.unit.atlas_harness import Atlas


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    yield
    LIMITS.set_entries, LIMITS.hash_entries, LIMITS.hash_value = 512, 512, 64


def reopen(a: Atlas) -> Engine:
    a.engine.close()
    return Engine.open(a.path, AtlasConfig(), clock=lambda: a.now)


def encodings(a: Atlas) -> dict[bytes, bytes]:
    return {k: a("OBJECT", "ENCODING", k) for k in sorted(a.engine.ks.data)}


def history(a: Atlas) -> None:
    a("SADD", "s", 1, 2, 3, "x")
    a("SREM", "s", "x")                        # hashtable, all integers
    a("SADD", "big", *range(600))
    a("SREM", "big", *range(10, 600))          # hashtable by its past size
    a("SADD", "t", 1, 2)                       # intset all along
    a("RENAME", "s", "s2")
    a("COPY", "big", "bigcopy")
    a("HSET", "h", *[x for i in range(600) for x in (f"f{i}", i)])
    a("HDEL", "h", *[f"f{i}" for i in range(2, 600)])
    a("RENAME", "h", "h2")
    a("COPY", "h2", "h3")
    a("HSET", "small", "a", 1)


WANT = {b"big": b"hashtable", b"bigcopy": b"hashtable", b"h2": b"hashtable", b"h3": b"hashtable",
        b"s2": b"hashtable", b"small": b"listpack", b"t": b"intset"}


@pytest.mark.parametrize("via", ["aof", "snapshot", "snapshot-then-aof"])
def test_history_survives_a_restart(a: Atlas, via: str) -> None:
    history(a)
    want = dict(WANT)
    if via != "aof":
        a.engine.snapshot_sync()
    if via == "snapshot-then-aof":
        a("SADD", "s2", 4)
        a("RENAME", "s2", "s3")
        want[b"s3"] = want.pop(b"s2")
    assert encodings(a) == want
    a.engine = reopen(a)
    assert encodings(a) == want


def test_rename_logs_the_encoding_only_where_rebuilding_would_differ(a: Atlas) -> None:
    a("SADD", "s", 1, "x")
    a("SREM", "s", "x")
    a("SADD", "plain", "x", "y")
    a("HSET", "h", "f", "v" * 65)
    a("HDEL", "h", "f")  # (gone: a hash never stays empty)
    a("HSET", "h", "f", "v" * 65, "g", 1)
    a("HDEL", "h", "f")
    start = len(a.aof())
    for src, dst in (("s", "s2"), ("plain", "p2"), ("h", "h2")):
        a("RENAME", src, dst)
    ops = [[e[0] for e in eff[1]] if eff[0] == "MULTI" else [eff[0]] for eff in a.aof()[start:]]
    assert ops == [["SADD", "ENCODING", "DEL"], ["SADD", "DEL"], ["HSET", "ENCODING", "DEL"]]


def test_config_set_of_the_intset_limit_converts_nothing(a: Atlas) -> None:
    a("SADD", "over", *range(600))
    a("SADD", "under", *range(300))
    a("CONFIG", "SET", "set-max-intset-entries", 1000)
    assert (a("OBJECT", "ENCODING", "over"), a("OBJECT", "ENCODING", "under")) == (b"hashtable", b"intset")
    a("CONFIG", "SET", "set-max-intset-entries", 100)
    assert a("OBJECT", "ENCODING", "under") == b"intset"
    a("SADD", "under", 300)  # a member added: now it converts
    assert a("OBJECT", "ENCODING", "under") == b"hashtable"
    assert a("DUMP", "over")[0] == 2  # a plain set, as Redis dumps a hashtable


def test_spop_and_sdiffstore_encode_the_set_they_build(a: Atlas) -> None:
    a("SADD", "p", *range(20), "x")
    a("SREM", "p", "x")
    a("SPOP", "p", 17)  # 3 left: a new set
    assert a("OBJECT", "ENCODING", "p") == b"intset"
    a("SADD", "q", *range(20), "x")
    a("SREM", "q", "x")
    a("SPOP", "q", 2)  # popped in place
    assert a("OBJECT", "ENCODING", "q") == b"hashtable"
    a("SADD", "first", 1, 2, 3, *[f"m{i}" for i in range(7)])
    for i in range(4):
        a("SADD", f"o{i}", f"m{2 * i}", f"m{2 * i + 1}")
    a("SDIFFSTORE", "d", "first", "o0", "o1", "o2", "o3")
    assert a("OBJECT", "ENCODING", "d") == b"hashtable"
    a.engine = reopen(a)
    assert [a("OBJECT", "ENCODING", k) for k in ("p", "q", "d")] == [b"intset", b"hashtable", b"hashtable"]


def test_undo_puts_the_encoding_back() -> None:
    ks = Keyspace()
    s = {b"1", b"2", b"3"}
    ks.put(b"s", s, None)
    LIMITS.set_entries = 2
    keep_set_encoding(s, "intset")  # as a CONFIG SET lowering the limit leaves it
    undo: list = []
    apply_effect(ks, ("SADD", b"s", [b"4"]), undo)
    assert set_encoding(s) == "hashtable"
    undo_effects(ks, undo)
    assert s == {b"1", b"2", b"3"} and set_encoding(s) == "intset"
    h = Hash([(b"f", b"v")])
    ks.put(b"h", h, None)
    undo = []
    apply_effect(ks, ("ENCODING", b"h", "hashtable"), undo)
    assert h.encoding == "hashtable"
    undo_effects(ks, undo)
    assert h.encoding == "listpack" and h.to_dict() == {b"f": b"v"}


def test_a_note_dies_with_its_set() -> None:
    s = {b"1", b"x"}
    s.discard(b"x")
    packed.set_removed(s, [b"x"], 2)
    assert set_encoding(s) == "hashtable" and id(s) in packed._SET_MARKS
    key = id(s)
    del s
    gc.collect()
    assert key not in packed._SET_MARKS


def test_encoding_effect_codec() -> None:
    eff = ("ENCODING", b"k\xff", "hashtable")
    line = encode_record(4, [eff])
    assert decode_line(line[:-1], 0) == (4, eff)
    with pytest.raises(RecordError):
        decode_line(b'{"cmd":"ENCODING","key":"k","encoding":"ziplist"}', 0)


def test_snapshot_notes_and_rederive(tmp_path: Path) -> None:
    s = {b"1", b"2"}
    keep_set_encoding(s, "hashtable")
    h = Hash([(b"f", b"v")])
    h.with_encoding("hashtable")
    data = {b"s": s, b"h": h, b"plain": {b"1"}}
    path = tmp_path / "snap"
    write_snapshot(path, data, {}, seq=1, created_ms=1)
    _, got, _ = load_snapshot(path)
    assert (set_encoding(got[b"s"]), got[b"h"].encoding, set_encoding(got[b"plain"])) == (
        "hashtable", "hashtable", "intset")
    write_snapshot(path, data, {}, seq=1, created_ms=1, rederive=True)  # as an AOF rewrite loads
    _, got, _ = load_snapshot(path)
    assert (set_encoding(got[b"s"]), got[b"h"].encoding) == ("intset", "listpack")
    assert check_snapshot(path).ok


def test_snapshot_with_an_impossible_note_is_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "set_note", lambda v: "intset")  # an intset of strings
    path = tmp_path / "snap"
    write_snapshot(path, {b"s": {b"a"}}, {}, seq=1, created_ms=1)
    check = check_snapshot(path)
    assert not check.ok and "encoding" in (check.reason or "")


@given(st.one_of(st.text("-+0123456789 a", max_size=22).map(str.encode), st.integers(-(1 << 64), 1 << 64).map(
    lambda n: b"%d" % n), st.binary(max_size=4)))
def test_is_int64_is_string2ll(m: bytes) -> None:
    """What an intset holds: the integers Redis's string2ll reads (parse_int's rule)."""
    try:
        parse_int(m)
    except CommandError:
        assert not packed.is_int64(m)
    else:
        assert packed.is_int64(m)
