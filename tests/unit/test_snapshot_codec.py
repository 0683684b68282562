"""Snapshot files: write_snapshot / load_snapshot round trips and damage detection."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from helios_core.atlas import snapshot as snapshot_mod
from helios_core.atlas.snapshot import VERSION, load_snapshot, read_header, write_snapshot
from helios_core.atlas.zset import ZSet
from helios_core.errors import CorruptFileError


def zset(*pairs: tuple[float, bytes]) -> ZSet:
    z = ZSet()
    for score, member in pairs:
        z.add(member, score)
    return z


def sample() -> tuple[dict, dict]:
    data = {
        b"s": b"value",
        b"empty": b"",
        b"\xff\xfe": b"\x00\x80binary",
        b"z": zset((1.5, b"a"), (-math.inf, b"low"), (math.inf, b"\xff"), (0.0, b"")),
        b"one": zset((2.0, b"x")),
    }
    return data, {b"s": 1_800_000_000_000, b"z": 1_800_000_000_001}


def test_round_trip_strings_zsets_and_expiries(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    data, expires = sample()
    size = write_snapshot(path, data, expires, seq=17, created_ms=123)
    assert size == path.stat().st_size
    info, got_data, got_expires = load_snapshot(path)
    assert (info.version, info.seq, info.created_ms, info.keys, info.bytes) == (VERSION, 17, 123, 5, size)
    assert got_data == data and got_expires == expires
    z = got_data[b"z"]
    assert list(z.items()) == list(data[b"z"].items())  # the order index is rebuilt too
    assert z.rank(b"\xff") == 3
    assert read_header(path).seq == 17


def test_round_trip_empty(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    write_snapshot(path, {}, {}, seq=0)
    info, data, expires = load_snapshot(path)
    assert (info.keys, data, expires) == (0, {}, {})


def test_round_trip_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_mod, "CHUNK", 3)
    path = tmp_path / "dump.rdb"
    data = {b"k%d" % i: b"v%d" % i for i in range(10)}
    expires = {b"k%d" % i: 1000 + i for i in range(0, 10, 2)}
    write_snapshot(path, data, expires, seq=1)
    assert load_snapshot(path)[1:] == (data, expires)


def test_write_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    write_snapshot(path, {b"a": b"1"}, {}, seq=1)
    write_snapshot(path, {b"b": b"2"}, {}, seq=2)
    assert load_snapshot(path)[1] == {b"b": b"2"}
    assert [p.name for p in tmp_path.iterdir()] == ["dump.rdb"]


def _written(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "dump.rdb"
    write_snapshot(path, *sample(), seq=9)
    return path, path.read_bytes()


def test_every_truncation_is_refused_naming_the_file(tmp_path: Path) -> None:
    path, blob = _written(tmp_path)
    for cut in range(len(blob)):
        path.write_bytes(blob[:cut])
        with pytest.raises(CorruptFileError) as e:
            load_snapshot(path)
        assert str(path) in str(e.value) and e.value.path == str(path)


def test_every_flipped_byte_is_refused_naming_the_file(tmp_path: Path) -> None:
    path, blob = _written(tmp_path)
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 0x41
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptFileError) as e:
            load_snapshot(path)
        assert str(path) in str(e.value)


def test_read_header_verifies_the_checksum(tmp_path: Path) -> None:
    path, blob = _written(tmp_path)
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CorruptFileError, match="checksum"):
        read_header(path)


def test_not_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    path.write_bytes(b"REDIS0009" + b"\x00" * 64)
    with pytest.raises(CorruptFileError, match="not a HELIOS snapshot"):
        load_snapshot(path)
