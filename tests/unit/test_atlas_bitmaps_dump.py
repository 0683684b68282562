"""Unit checks behind the bitmap and DUMP/RESTORE differential tests: the SETRANGE effect (apply,
undo, AOF codec, what SETBIT/BITFIELD log), the CRC-64 and LZF that DUMP payloads use, and
embedded-engine round trips of every type (no server needed)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.atlas.commands.strings import _LcsRows
from helios_core.atlas.dump import BadFormat, PayloadError, crc64, dump_value, load_payload, lzf_decompress
from helios_core.atlas.effects import apply_effect, decode_line, encode_record, undo_effects
from helios_core.atlas.keyspace import Keyspace
from tests.unit.atlas_harness import T0, Atlas


def test_setrange_effect_pads_keeps_expiry_and_undoes() -> None:
    ks = Keyspace()
    ks.put(b"k", b"abc", T0 + 5000)
    undo: list = []
    apply_effect(ks, ("SETRANGE", b"k", 5, b"\xff"), undo)
    assert ks.data[b"k"] == b"abc\x00\x00\xff" and ks.expires[b"k"] == T0 + 5000
    apply_effect(ks, ("SETRANGE", b"new", 2, b"x"), undo)
    assert ks.data[b"new"] == b"\x00\x00x" and b"new" not in ks.expires
    undo_effects(ks, undo)
    assert ks.data == {b"k": b"abc"} and ks.expires == {b"k": T0 + 5000}


@pytest.mark.parametrize("piece", [b"text", b"\xff\x00"])
def test_setrange_effect_round_trips_through_the_aof_codec(piece: bytes) -> None:
    line = encode_record(7, [("SETRANGE", b"k", 1 << 20, piece)])
    assert decode_line(line.rstrip(b"\n"), 0) == (7, ("SETRANGE", b"k", 1 << 20, piece))


def test_bit_writes_log_only_the_bytes_they_touch(a: Atlas) -> None:
    a("SET", "big", b"\x00" * 100_000)
    a("SETBIT", "big", 80_001, 1)
    a("BITFIELD", "big", "SET", "u16", "#3", 513, "INCRBY", "i8", 0, -1)
    a("SETRANGE", "big", 50_000, "xy")
    assert a.aof()[1:] == [("SETRANGE", b"big", 10_000, b"@"),
                           ("SETRANGE", b"big", 0, b"\xff\x00\x00\x00\x00\x00\x02\x01"),
                           ("SETRANGE", b"big", 50_000, b"xy")]
    assert a("GETBIT", "big", 80_001) == 1 and a("BITFIELD_RO", "big", "GET", "u16", "#3") == [513]


def test_crc64_is_redis_jones_crc() -> None:
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA


def test_lzf_back_references_may_overlap() -> None:
    # literal "ab", then a 6-byte copy from 2 back (overlapping): "abababab"
    assert lzf_decompress(bytes([1]) + b"ab" + bytes([(4 << 5) | 0, 1]), 8) == b"abababab"
    with pytest.raises(BadFormat):
        lzf_decompress(bytes([(1 << 5), 9]), 3)


@pytest.mark.parametrize("write", [
    ["SET", "k", "v"], ["SET", "k", "-32768"], ["SET", "k", "x" * 20000], ["RPUSH", "k", "a", "1", ""],
    ["SADD", "k", "a", "2"], ["HSET", "k", "f", "", "g", "1"], ["ZADD", "k", "-inf", "a", "1.5", "b", "inf", "c"],
])
def test_dump_restore_round_trips_every_type(a: Atlas, write: list) -> None:
    a(*write)
    a("PEXPIREAT", "k", T0 + 60_000)
    payload = a("DUMP", "k")
    a("RESTORE", "copy", 0, payload)
    assert a("DUMP", "copy") == payload and a("TYPE", "copy") == a("TYPE", "k")
    assert a.error("RESTORE", "copy", 0, payload) == "BUSYKEY Target key name already exists."
    a("RESTORE", "copy", T0 + 1000, payload, "REPLACE", "ABSTTL")
    assert a("PTTL", "copy") == 1000
    a.now += 2000
    assert a("EXISTS", "copy") == 0


def test_payload_checks() -> None:
    good = dump_value(b"hello")
    assert load_payload(good) == b"hello"
    with pytest.raises(PayloadError):
        load_payload(good[:-1] + bytes([good[-1] ^ 1]))
    body = b"\x00\x01a" + struct.pack("<H", 11)
    with pytest.raises(PayloadError):  # a newer RDB version
        load_payload(body + struct.pack("<Q", crc64(body)))
    body = b"\x63" + struct.pack("<H", 10)
    with pytest.raises(BadFormat):
        load_payload(body + struct.pack("<Q", crc64(body)))


def _naive_lcs(a: bytes, b: bytes) -> list[list[int]]:
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
    return t


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=14).map(lambda s: bytes(c % 3 for c in s)),
       b=st.binary(max_size=14).map(lambda s: bytes(c % 4 for c in s)))
def test_lcs_bit_rows_equal_the_plain_table(a: bytes, b: bytes) -> None:
    rows, table = _LcsRows(a, b), _naive_lcs(a, b)
    assert [[rows(i, j) for j in range(len(b) + 1)] for i in range(len(a) + 1)] == table


def test_object_idletime_and_freq_follow_the_eviction_policy(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("OBJECT", "IDLETIME", "k") == 0
    assert a.error("OBJECT", "FREQ", "k").startswith("ERR An LFU maxmemory policy is not selected")
    a.engine.evictor.set_policy("allkeys-lru", a.now)
    a("GET", "k")
    a.now += 7_500
    assert a("OBJECT", "IDLETIME", "k") == 7
    a.engine.evictor.set_policy("allkeys-lfu", a.now)
    a("GET", "k")
    assert a("OBJECT", "FREQ", "k") >= 5
    assert a.error("OBJECT", "IDLETIME", "k").startswith("ERR An LFU maxmemory policy is selected")
    assert a("OBJECT", "FREQ", "nope") is None
