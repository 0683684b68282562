"""A hash's, a set's and a sorted set's encoding history (OBJECT ENCODING) in process: what the
effects, the AOF replay, snapshots and undo keep.  test_differential_encoding_history compares the same
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
from helios_core.atlas.zset import ZSet
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError
from tests.unit.atlas_harness import Atlas


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    yield
    LIMITS.set_entries, LIMITS.hash_entries, LIMITS.hash_value = 512, 512, 64
    LIMITS.zset_entries, LIMITS.zset_value = 128, 64


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
    a("ZADD", "z", *[x for i in range(130) for x in (i, f"m{i}")])
    a("ZREMRANGEBYRANK", "z", 0, 120)
    a("ZPOPMIN", "z")                          # skiplist by its past size
    a("ZADD", "zl", 1, "x" * 65, 2, "b")
    a("ZREM", "zl", "x" * 65)                  # skiplist by a long member it had
    a("RENAME", "zl", "zl2")
    a("COPY", "z", "zcopy")
    a("ZADD", "zsmall", 1, "a")


WANT = {b"big": b"hashtable", b"bigcopy": b"hashtable", b"h2": b"hashtable", b"h3": b"hashtable",
        b"s2": b"hashtable", b"small": b"listpack", b"t": b"intset", b"z": b"skiplist", b"zcopy": b"skiplist",
        b"zl2": b"skiplist", b"zsmall": b"listpack"}


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


@pytest.mark.parametrize("via", ["aof", "snapshot", "rewrite"])
def test_spop_and_sdiffstore_encode_the_set_they_build(a: Atlas, via: str) -> None:
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
    a("SADD", "q", "y")
    a("SREM", "q", "y")
    a("SPOP", "q", 15)  # 3 left: a new set
    a("RENAME", "q", "q2")
    a("COPY", "q2", "qcopy")
    a("SADD", "q2", 100)
    assert encodings(a)[b"q2"] == encodings(a)[b"qcopy"] == b"intset"
    # Redis logs SPOP as SREMs: its restart replays them on the hashtable, so the set is one again
    after = {b"d": b"hashtable", b"first": b"hashtable", b"p": b"hashtable", b"q2": b"hashtable",
             b"qcopy": b"hashtable", **{b"o%d" % i: b"hashtable" for i in range(4)}}
    if via == "snapshot":
        a.engine.snapshot_sync()
    elif via == "rewrite":  # the AOF rewritten from memory: every encoding by content
        a.engine.snapshots.snapshot_sync(rederive=True)
        after.update({b"d": b"intset", b"p": b"intset", b"q2": b"intset", b"qcopy": b"intset"})
    a.engine = reopen(a)
    assert encodings(a) == after


def test_a_zset_converts_as_redis_and_never_back(a: Atlas) -> None:
    a("ZADD", "z", *[x for i in range(128) for x in (i, f"m{i}")])
    assert a("OBJECT", "ENCODING", "z") == b"listpack"
    a("ZADD", "z", 0, "m0", 1, "m1")  # only scores change: no conversion
    assert a("OBJECT", "ENCODING", "z") == b"listpack"
    a("ZINCRBY", "z", 1, "m128")  # the 129th member
    assert a("OBJECT", "ENCODING", "z") == b"skiplist"
    for step in (("ZREM", "z", "m0"), ("ZPOPMIN", "z", 5), ("ZPOPMAX", "z"), ("ZREMRANGEBYSCORE", "z", 0, 100),
                 ("ZREMRANGEBYLEX", "z", "[m99", "[m99"), ("ZREMRANGEBYRANK", "z", 0, 10)):
        a(*step)
        assert a("OBJECT", "ENCODING", "z") == b"skiplist", step
    assert a("DUMP", "z")[0] == 5  # a plain zset, as Redis dumps a skiplist
    a("RESTORE", "r", 0, a("DUMP", "z"))
    assert a("OBJECT", "ENCODING", "r") == b"listpack"  # loading chooses by content
    for op in ("ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"):
        a(op, f"{op}-out", 1, "z")
        assert a("OBJECT", "ENCODING", f"{op}-out") == b"listpack", op
    a("ZRANGESTORE", "rs", "z", 0, -1)
    assert a("OBJECT", "ENCODING", "rs") == b"listpack"
    a("ZADD", "long", 1, "x" * 65)
    assert a("OBJECT", "ENCODING", "long") == b"skiplist"


def test_config_set_of_the_zset_limits_converts_nothing(a: Atlas) -> None:
    a("ZADD", "z", 1, "a", 2, "b", 3, "c")
    a("CONFIG", "SET", "zset-max-listpack-entries", 2)
    assert a("OBJECT", "ENCODING", "z") == b"listpack"
    a("ZADD", "z", 4, "a")  # an update: still no conversion
    a("RENAME", "z", "z2")
    assert a("OBJECT", "ENCODING", "z2") == b"listpack"
    assert a("DUMP", "z2")[0] == 17
    a("ZADD", "z2", 5, "d")  # a new member: now it converts
    assert a("OBJECT", "ENCODING", "z2") == b"skiplist"
    a("ZADD", "n", 1, "a", 2, "b", 3, "c")
    a("CONFIG", "SET", "zset-max-ziplist-value", 1)
    a("ZADD", "v", 1, "a", 2, "bb")
    assert [a("OBJECT", "ENCODING", k) for k in ("n", "v")] == [b"skiplist", b"skiplist"]


@pytest.mark.parametrize("via", ["aof", "snapshot", "rewrite"])
def test_a_zsets_history_survives_a_restart_but_not_a_rewrite(a: Atlas, via: str) -> None:
    a("ZADD", "z", *[x for i in range(130) for x in (i, f"m{i}")])
    a("ZREMRANGEBYRANK", "z", 0, 120)
    a("ZADD", "long", 1, "x" * 65, 2, "b")
    a("ZREM", "long", "x" * 65)
    a("RENAME", "long", "long2")
    a("COPY", "z", "zcopy")
    a("ZADD", "small", 1, "a")
    if via == "snapshot":
        a.engine.snapshot_sync()
    elif via == "rewrite":
        a.engine.snapshots.snapshot_sync(rederive=True)
    a.engine = reopen(a)
    kept = b"listpack" if via == "rewrite" else b"skiplist"
    assert encodings(a) == {b"long2": kept, b"small": b"listpack", b"z": kept, b"zcopy": kept}


def test_undo_puts_a_zsets_encoding_back() -> None:
    ks = Keyspace()
    LIMITS.zset_entries = 1
    undo: list = []
    apply_effect(ks, ("ZADD", b"z", [(1.0, b"a")]), None)
    z = ks.data[b"z"]
    apply_effect(ks, ("ZADD", b"z", [(2.0, b"b")]), undo)
    assert z.encoding == "skiplist"
    undo_effects(ks, undo)
    assert z.encoding == "listpack" and z.scores == {b"a": 1.0}
    undo = []
    apply_effect(ks, ("ENCODING", b"z", "skiplist"), undo)
    assert z.encoding == "skiplist"
    undo_effects(ks, undo)
    assert z.encoding == "listpack"


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
    for eff in (("ENCODING", b"k\xff", "hashtable"), ("ENCODING", b"z", "skiplist")):
        line = encode_record(4, [eff])
        assert decode_line(line[:-1], 0) == (4, eff)
    # SPOP's live-only form: the AOF holds the encoding a restart gives
    assert decode_line(encode_record(4, [("ENCODING", b"p", "intset", "hashtable")])[:-1], 0) == (
        4, ("ENCODING", b"p", "hashtable"))
    with pytest.raises(RecordError):
        decode_line(b'{"cmd":"ENCODING","key":"k","encoding":"ziplist"}', 0)


def test_snapshot_notes_and_rederive(tmp_path: Path) -> None:
    s = {b"1", b"2"}
    keep_set_encoding(s, "hashtable")
    h = Hash([(b"f", b"v")])
    h.with_encoding("hashtable")
    z, lp = ZSet(), ZSet()
    z.add(b"a", 1.0)
    z.skiplist = True
    for i in range(3):
        lp.add(b"%d" % i, i)
    data = {b"s": s, b"h": h, b"plain": {b"1"}, b"z": z, b"lp": lp}
    path = tmp_path / "snap"
    LIMITS.zset_entries = 2  # (lp was made under a higher limit: a CONFIG SET converts nothing)
    write_snapshot(path, data, {}, seq=1, created_ms=1)
    _, got, _ = load_snapshot(path)
    assert (set_encoding(got[b"s"]), got[b"h"].encoding, set_encoding(got[b"plain"])) == (
        "hashtable", "hashtable", "intset")
    assert (got[b"z"].encoding, got[b"lp"].encoding) == ("skiplist", "listpack")
    write_snapshot(path, data, {}, seq=1, created_ms=1, rederive=True)  # as an AOF rewrite loads
    _, got, _ = load_snapshot(path)
    assert (set_encoding(got[b"s"]), got[b"h"].encoding) == ("intset", "listpack")
    assert (got[b"z"].encoding, got[b"lp"].encoding) == ("listpack", "skiplist")
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


def test_a_restart_note_dies_with_its_set() -> None:
    s = {b"1", b"2"}
    packed.keep_restart_encoding(s, "hashtable")
    assert packed.restart_encoding(s) == "hashtable" and set_encoding(s) == "intset"
    key = id(s)
    del s
    gc.collect()
    assert key not in packed._RESTART_MARKS


_BOUND = st.one_of(st.just((-1, b"")), st.just((1, b"")), st.sampled_from([b"", b"a", b"ab", b"b", b"c", b"d"]).map(
    lambda v: (0, v)))


@given(st.sets(st.sampled_from([b"a", b"aa", b"ab", b"b", b"ba", b"c"]), min_size=1), _BOUND, st.booleans(), _BOUND,
       st.booleans(), st.booleans(), st.integers(-1, 7), st.integers(-1, 4))
def test_bylex_over_equal_scores_is_the_lexicographic_range(members: set[bytes], lo: tuple[int, bytes], lo_excl: bool,
                                                            hi: tuple[int, bytes], hi_excl: bool, rev: bool,
                                                            offset: int, count: int) -> None:
    """With every score equal (a skiplist's BYLEX, found by bisection) the walk's answer is the
    plain range: members inside both bounds, reversed for REV, then LIMIT offset count."""
    z = ZSet()
    for m in members:
        z.add(m, 1.0)

    def inside(m: bytes) -> bool:
        return ((0, m) > lo if lo_excl else (0, m) >= lo) and ((0, m) < hi if hi_excl else (0, m) <= hi)

    want: list = []
    if not (lo > hi or (lo == hi and (lo_excl or hi_excl))) and not (offset < 0 or 0 < len(members) <= offset):
        found = [(1.0, m) for m in sorted(members) if inside(m)]
        found = (found[::-1] if rev else found)[offset:]
        want = found if count < 0 else found[:count]
    assert z.lex_walk(lo, lo_excl, hi, hi_excl, rev, offset, count) == want
