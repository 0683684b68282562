"""The AOF line codec: encode_record / decode_line, old-format lines, and damage detection."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.atlas.effects import RecordError, decode_line, encode_record

NOW = 1_700_000_000_000
INF = math.inf


def roundtrip(effects: list[tuple], seq: int = 1) -> tuple:
    line = encode_record(seq, effects)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    got_seq, eff = decode_line(line[:-1], NOW)
    assert got_seq == seq
    return eff


@pytest.mark.parametrize("eff", [
    ("SET", b"k", b"v", None),
    ("SET", b"k", b"v", 1_800_000_000_000),
    ("SET", b"", b"", None),
    ("SET", b"caf\xc3\xa9 \xe2\x98\x83", b"line\nbreak \"quoted\" \\", None),
    ("SET", b"\xff\xfekey", b"\x00\x01\x80value", 5),
    ("DEL", b"k"),
    ("DEL", b"\xc3"),
    ("EXPIRE", b"k", 1_800_000_000_000),
    ("PERSIST", b"\x80"),
    ("ZADD", b"z", [(1.5, b"a"), (-INF, b"low"), (INF, b"high"), (0.0, b"")]),
    ("ZADD", b"z\xff", [(2.0, b"ok"), (3.0, b"\xfe\xff")]),
    ("ZADD", b"z", [(-0.0, b"neg zero"), (1e308, b"big"), (5e-324, b"tiny")]),
    ("ZREM", b"z", [b"a", b"b"]),
    ("ZREM", b"z", [b"a", b"\xff"]),
    ("ENCODING", b"s", "hashtable"),
    ("ENCODING", b"\xff", "listpack"),
    ("ENCODING", b"s", "intset"),
    ("FLUSHALL",),
])
def test_single_effect_round_trips(eff: tuple) -> None:
    assert roundtrip([eff]) == eff


def test_zadd_keeps_the_sign_of_zero_and_infinities() -> None:
    eff = roundtrip([("ZADD", b"z", [(-0.0, b"a"), (-INF, b"b"), (INF, b"c")])])
    scores = [s for s, _ in eff[2]]
    assert math.copysign(1, scores[0]) == -1 and scores[1:] == [-INF, INF]


def test_several_effects_become_one_multi_record() -> None:
    effects = [("SET", b"a", b"1", None), ("DEL", b"\xff"), ("ZADD", b"z", [(INF, b"m")]),
               ("EXPIRE", b"a", 99), ("FLUSHALL",)]
    assert roundtrip(effects, seq=42) == ("MULTI", effects)


def test_non_utf8_bytes_travel_as_b64_fields() -> None:
    rec = orjson.loads(encode_record(1, [("SET", b"\xff", b"ok", None)]))
    assert "key_b64" in rec and "key" not in rec and rec["value"] == "ok"
    rec = orjson.loads(encode_record(1, [("ZREM", b"z", [b"a", b"\xff"])]))
    assert "members_b64" in rec


keys = st.binary(max_size=12)
scores = st.floats(allow_nan=False)
effects = st.one_of(
    st.tuples(st.just("SET"), keys, st.binary(max_size=30), st.none() | st.integers(0, 2**62)),
    st.tuples(st.just("DEL"), keys),
    st.tuples(st.just("EXPIRE"), keys, st.integers(0, 2**62)),
    st.tuples(st.just("PERSIST"), keys),
    st.tuples(st.just("ZADD"), keys, st.lists(st.tuples(scores, keys), min_size=1, max_size=4)),
    st.tuples(st.just("ZREM"), keys, st.lists(keys, min_size=1, max_size=4)),
    st.tuples(st.just("ENCODING"), keys, st.sampled_from(["hashtable", "listpack", "intset"])),
    st.just(("FLUSHALL",)),
)


@given(st.lists(effects, min_size=1, max_size=4), st.integers(1, 2**62))
def test_any_effects_round_trip(effs: list[tuple], seq: int) -> None:
    got = roundtrip(effs, seq)
    assert got == (effs[0] if len(effs) == 1 else ("MULTI", effs))


@pytest.mark.parametrize("effs", [
    [("SET", b"k", b"v", 5)],
    [("ZADD", b"z", [(INF, b"\xff"), (1.5, b"a")]), ("DEL", b"k")],
])
def test_every_single_bit_flip_is_detected(effs: list[tuple]) -> None:
    line = encode_record(12345, effs)[:-1]
    for i in range(len(line)):
        for bit in range(8):
            damaged = bytearray(line)
            damaged[i] ^= 1 << bit
            with pytest.raises(RecordError):
                decode_line(bytes(damaged), NOW)


def test_a_torn_line_is_refused() -> None:
    line = encode_record(3, [("SET", b"key", b"value", None)])[:-1]
    for cut in range(1, len(line)):
        with pytest.raises(RecordError):
            decode_line(line[:cut], NOW)


def test_a_line_whose_crc_field_was_lost_is_refused() -> None:
    line = encode_record(3, [("SET", b"k", b"v", None)])[:-1]
    without_crc = line[:line.rfind(b',"crc":')] + b"}"
    with pytest.raises(RecordError, match="no 'crc'"):
        decode_line(without_crc, NOW)


# -- the original design's lines: no seq, no crc, relative ttl in seconds -------------------

def test_legacy_set_with_ttl_zero_has_no_expiry() -> None:
    assert decode_line(b'{"cmd":"SET","key":"foo","value":"bar","ttl":0}', NOW) == (
        None, ("SET", b"foo", b"bar", None))


def test_legacy_set_ttl_is_relative_to_now() -> None:
    assert decode_line(b'{"cmd":"SET","key":"foo","value":"bar","ttl":5}', NOW) == (
        None, ("SET", b"foo", b"bar", NOW + 5000))


def test_legacy_expire_is_relative_to_now() -> None:
    assert decode_line(b'{"cmd":"EXPIRE","key":"bar","ttl":60}', NOW) == (None, ("EXPIRE", b"bar", NOW + 60_000))
    assert decode_line(b'{"cmd":"EXPIRE","key":"bar","ttl":60}', NOW + 1) == (
        None, ("EXPIRE", b"bar", NOW + 60_001))


def test_legacy_expire_with_ttl_zero_deletes() -> None:
    assert decode_line(b'{"cmd":"EXPIRE","key":"bar","ttl":0}', NOW) == (None, ("DEL", b"bar"))


def test_legacy_lower_case_commands() -> None:
    assert decode_line(b'{"cmd":"del","key":"k"}', NOW) == (None, ("DEL", b"k"))
    assert decode_line(b'{"cmd":"set","key":"k","value":"v"}', NOW) == (None, ("SET", b"k", b"v", None))


# -- refused lines -------------------------------------------------------------------------

@pytest.mark.parametrize("line, why", [
    (b'{"cmd":"XFOO","key":"k"}', "unknown command 'XFOO'"),
    (b'{"key":"k","value":"v"}', "without 'cmd'"),
    (b'{"cmd":"SET","key":"k"}', "without 'value'"),
    (b'{"cmd":"SET","value":"v"}', "without 'key'"),
    (b'{"cmd":"DEL"}', "without 'key'"),
    (b'{"cmd":"EXPIRE","key":"k"}', "without 'exp' or 'ttl'"),
    (b'{"cmd":"ZADD","key":"z"}', "without 'members'"),
    (b'{"cmd":"ZADD","key":"z","members":[["a"]]}', "pairs"),
    (b'{"cmd":"ZADD","key":"z","members":[["abc","m"]]}', "bad score"),
    (b'{"cmd":"ZADD","key":"z","members":[["nan","m"]]}', "NaN"),
    (b'{"cmd":"ZREM","key":"z"}', "without 'members'"),
    (b'{"cmd":"ZREM","key":"z","members":[1]}', "list of strings"),
    (b'{"cmd":"MULTI"}', "'ops'"),
    (b'{"cmd":"MULTI","ops":[{"cmd":"NOPE"}]}', "unknown command 'NOPE'"),
    (b'{"cmd":"SET","key":"k","value":"v","exp":"soon"}', "'exp' must be an integer"),
    (b'{"cmd":"SET","key":"k","value":"v","ttl":"5"}', "'ttl' must be a number"),
    (b'{"cmd":"SET","key_b64":"!!","value":"v"}', "not valid base64"),
    (b'{"seq":0,"cmd":"DEL","key":"k"}', "'seq' must be a positive integer"),
    (b'[1,2]', "not a JSON object"),
    (b'{"cmd":"SET",', "not valid JSON"),
    (b'', "not valid JSON"),
])
def test_bad_lines_raise_record_error_naming_the_problem(line: bytes, why: str) -> None:
    with pytest.raises(RecordError, match=why.replace("(", r"\(").replace(")", r"\)")):
        decode_line(line, NOW)


@pytest.mark.parametrize("line", [
    b'{"cmd":"ZADD","key":"z","members_b64":[[1,"a"]]}',
    b'{"cmd":"ZREM","key":"z","members_b64":["a"]}',
])
def test_bad_member_base64_is_a_record_error(line: bytes) -> None:
    with pytest.raises(RecordError):
        decode_line(line, NOW)
