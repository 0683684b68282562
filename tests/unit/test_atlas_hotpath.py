"""atlasd's per-command fast paths (H21) keep the slow paths' behaviour exactly.

- encode_record's direct build of single HSET/HDEL/SADD/SREM/LPUSH/RPUSH records gives the
  same bytes as the general path (and decodes back to the effect);
- Engine.script_step (a class now, not a generator) keeps a failed script's writes, undoes a
  killed one's, freezes the clock while it runs and restores it after;
- EVALSHA's numkeys lookup accepts and refuses exactly what parse_int does;
- tune_gc raises the collector's thresholds and freezes what is loaded.
"""

from __future__ import annotations

import gc
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.atlas import effects_codec
from helios_core.atlas.commands.scripting import split_keys
from helios_core.atlas.daemon import GC_GEN0_THRESHOLD, tune_gc
from helios_core.atlas.effects import decode_line, encode_record
from helios_core.atlas.engine import Engine
from helios_core.atlas.scripting import ScriptKilled
from helios_core.errors import CommandError

NOW = 1_700_000_000_000


def _general(seq: int, eff: tuple) -> bytes:
    """encode_record's general path, spelled out (what the fast path must equal byte for byte)."""
    body = orjson.dumps({"seq": seq, **effects_codec._effect_to_obj(eff)})
    return b"%s,\"crc\":%d}\n" % (body[:-1], zlib.crc32(body))


@pytest.mark.parametrize("eff", [
    ("HSET", b"h", [(b"f", b"v")]),
    ("HSET", b"h", [(b"f", b"v"), (b"caf\xc3\xa9", b"line\nbreak \"q\" \\")]),
    ("HSET", b"h\xff", [(b"f", b"v")]),
    ("HSET", b"h", [(b"f", b"\xfe")]),
    ("HDEL", b"h", [b"a", b"b"]),
    ("SADD", b"s", [b"m"]),
    ("SADD", b"s", [b"\xff", b"ok"]),
    ("SREM", b"s", [b"x", b"y"]),
    ("LPUSH", b"l", [b"v", b"", b"w"]),
    ("RPUSH", b"l\xc3", [b"\x00"]),
])
def test_direct_records_equal_the_general_path(eff: tuple) -> None:
    line = encode_record(42, [eff])
    assert line == _general(42, eff)
    seq, back = decode_line(line[:-1], NOW)
    assert seq == 42 and back[0] == eff[0] and back[1] == eff[1]
    assert [tuple(x) if isinstance(x, list) else x for x in back[2]] == list(eff[2])


_bytes = st.binary(max_size=12) | st.text(max_size=6).map(str.encode)


@given(op=st.sampled_from(["HDEL", "SADD", "SREM", "LPUSH", "RPUSH"]), key=_bytes,
       items=st.lists(_bytes, min_size=1, max_size=4), seq=st.integers(1, 1 << 40))
def test_direct_member_records_equal_the_general_path(op: str, key: bytes, items: list[bytes], seq: int) -> None:
    assert encode_record(seq, [(op, key, items)]) == _general(seq, (op, key, items))


@given(key=_bytes, pairs=st.lists(st.tuples(_bytes, _bytes), min_size=1, max_size=4))
def test_direct_hset_records_equal_the_general_path(key: bytes, pairs: list[tuple[bytes, bytes]]) -> None:
    assert encode_record(7, [("HSET", key, pairs)]) == _general(7, ("HSET", key, pairs))


@given(key=_bytes | st.binary(max_size=40), value=_bytes | st.binary(max_size=200),
       exp=st.none() | st.integers(0, 1 << 50), seq=st.integers(1, 1 << 62))
def test_direct_set_records_equal_the_general_path(key: bytes, value: bytes, exp: int | None, seq: int) -> None:
    assert encode_record(seq, [("SET", key, value, exp)]) == _general(seq, ("SET", key, value, exp))


@pytest.mark.parametrize("text", [b"", b"plain ascii ~!@#$%^&*()_+-=[]{};:,./<>?|`", b"\x7f", b'"', b"\\", b"\x1f",
                                  b"\n", b"caf\xc3\xa9", b"\xff", bytes(range(128))])
def test_direct_set_records_of_every_ascii_byte(text: bytes) -> None:
    for eff in (("SET", text, b"v", None), ("SET", b"k", text, None), ("SET", text, text, None)):
        assert encode_record(3, [eff]) == _general(3, eff)


# -- script_step ---------------------------------------------------------------------

@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    ticks = iter(range(NOW, NOW + 10_000_000, 5))
    eng = Engine.open(tmp_path / "data", clock=lambda: next(ticks))
    yield eng
    eng.close()


def test_script_step_keeps_writes_of_a_failed_script_and_freezes_time(engine: Engine) -> None:
    seq = engine.seq
    seen: list[int] = []
    with pytest.raises(CommandError):
        with engine.script_step(keep=lambda e: not isinstance(e, ScriptKilled)):
            seen += [engine.clock(), engine.clock()]
            engine.execute([b"SET", b"a", b"1"])
            engine.execute([b"SET", b"b", b"2"])
            raise CommandError("ERR failed after two writes")
    assert seen[0] == seen[1]  # time stands still inside
    assert engine.clock() != engine.clock()  # and moves again after
    assert engine.ks.data[b"a"] == b"1" and engine.ks.data[b"b"] == b"2"
    assert engine.seq == seq + 1  # both writes in one record
    assert not engine.in_batch


def test_script_step_undoes_a_killed_script(engine: Engine) -> None:
    engine.execute([b"SET", b"a", b"old"])
    seq = engine.seq
    with pytest.raises(ScriptKilled):
        with engine.script_step(keep=lambda e: not isinstance(e, ScriptKilled)):
            engine.execute([b"SET", b"a", b"new"])
            engine.execute([b"SADD", b"s", b"m"])
            raise ScriptKilled("ERR Script killed")
    assert engine.ks.data[b"a"] == b"old" and b"s" not in engine.ks.data
    assert engine.seq == seq and not engine.in_batch


def test_evalsha_runs_and_logs_effects(engine: Engine) -> None:
    sha = engine.execute([b"SCRIPT", b"LOAD", b"return redis.call('INCR', KEYS[1])"])
    assert engine.execute([b"EVALSHA", sha, b"1", b"n"]) == 1
    assert engine.execute([b"EVALSHA", sha.upper(), b"1", b"n"]) == 2
    engine.flush_sync()
    assert engine.aof.path.read_bytes().count(b'"cmd":"SET","key":"n"') == 2


@pytest.mark.parametrize("raw", [b"0", b"1", b"2", b"63", b"64", b"01", b"-1", b"+1", b" 1", b"1.0", b"", b"x",
                                 b"99999999999999999999"])
def test_numkeys_lookup_accepts_what_parse_int_accepts(raw: bytes) -> None:
    from helios_core.atlas.commands.table import parse_int

    args = [b"sha", raw, b"k1", b"k2", b"a1"]
    try:
        n = parse_int(raw)
    except CommandError as e:
        with pytest.raises(CommandError, match=str(e)):
            split_keys(args)
        return
    if n > 3:
        with pytest.raises(CommandError, match="greater than"):
            split_keys(args)
    elif n < 0:
        with pytest.raises(CommandError, match="negative"):
            split_keys(args)
    else:
        assert split_keys(args) == (args[2:2 + n], args[2 + n:])


# -- gc ------------------------------------------------------------------------------

def test_tune_gc_raises_thresholds_and_freezes_what_is_loaded() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        gen0, gen1, gen2 = gc.get_threshold()
        assert gen0 == GC_GEN0_THRESHOLD and gen1 >= before[1] and gen2 >= before[2]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- a script's environment is made once and reused --------------------------------------

def test_each_run_sees_its_own_keys_and_argv_and_leaves_nothing_behind(engine: Engine) -> None:
    sha = engine.execute([b"SCRIPT", b"LOAD", b"local k, a = KEYS, ARGV; KEYS = {'clobbered'}; ARGV = nil; "
                                              b"return {k[1] or false, a[1] or false, #k, #a}"])
    assert engine.execute([b"EVALSHA", sha, b"2", b"k1", b"k2", b"a1"]) == [b"k1", b"a1", 2, 1]
    assert engine.execute([b"EVALSHA", sha, b"0"]) == [None, None, 0, 0]
    assert engine.execute([b"EVALSHA", sha, b"1", b"k3", b"a3", b"a4"]) == [b"k3", b"a3", 1, 2]
    # New globals stay refused, run after run; another script's KEYS are its own.
    for _ in range(2):
        with pytest.raises(CommandError, match="readonly table"):
            engine.execute([b"EVAL", b"leak = 1", b"0"])
    assert engine.execute([b"EVAL", b"return KEYS[1]", b"1", b"other"]) == b"other"
