"""Recovery's verdict on damaged AOF files: only a line the file ends inside is a torn tail.

A bit flip in a complete line (its newline was written, so the record was
acknowledged under every fsync policy once that newline reached the disk) is
corruption wherever it sits, the last line included: start-up stops naming
the file, the byte offset and the repair command, and the file is left alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import encode_record
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.recovery import RecoveryReport, recover
from helios_core.errors import CorruptFileError

pytestmark = pytest.mark.usefixtures("restore_logging")

NOW = 1_700_000_000_000


def records(first: int, last: int) -> bytes:
    return b"".join(encode_record(s, [("SET", b"k%d" % s, b"value-%d" % s, None)]) for s in range(first, last + 1))


def line_start(blob: bytes, n: int) -> int:
    at = 0
    for _ in range(n):
        at = blob.index(b"\n", at) + 1
    return at


def flip(blob: bytes, at: int, bit: int = 0) -> bytes:
    out = bytearray(blob)
    out[at] ^= 1 << bit
    return bytes(out)


def run_recover(d: Path, *, truncate: bool = True) -> tuple[Keyspace, RecoveryReport]:
    ks = Keyspace()
    return ks, recover(DataDir(d), ks, now_ms=NOW, truncate_torn_tail=truncate)


def refused(d: Path, *, truncate: bool = True) -> CorruptFileError:
    with pytest.raises(CorruptFileError) as info:
        run_recover(d, truncate=truncate)
    return info.value


@pytest.fixture
def aof(tmp_path: Path) -> Path:
    path = tmp_path / "appendonly.aof"
    path.write_bytes(records(1, 5))
    return path


def test_bit_flip_in_the_last_complete_line_stops_startup(aof: Path) -> None:
    blob = aof.read_bytes()
    last = line_start(blob, 4)
    damaged = flip(blob, last + blob[last:].index(b"value-5") + 2)
    aof.write_bytes(damaged)
    err = refused(aof.parent)
    assert (err.path, err.offset) == (str(aof), last)
    msg = str(err)
    assert f"AOF {aof} is damaged at byte {last}" in msg and "checksum mismatch" in msg
    assert "ends with a newline" in msg and "not a torn write" in msg
    assert f"helios aof-check --fix --force --data {aof.parent}" in msg
    assert aof.read_bytes() == damaged, "a refused start-up must not touch the file"


def test_flipped_newline_merging_the_last_two_records_is_damage(aof: Path) -> None:
    blob = aof.read_bytes()
    nl = line_start(blob, 4) - 1
    aof.write_bytes(flip(blob, nl, 1))  # "\n" -> "\x08": records 4 and 5 become one bad line
    err = refused(aof.parent)
    assert err.offset == line_start(blob, 3)


def test_damage_in_the_last_line_is_refused_even_when_a_torn_piece_follows(aof: Path) -> None:
    blob = aof.read_bytes()
    last = line_start(blob, 4)
    aof.write_bytes(flip(blob, last + 20) + b'{"seq":6,"cmd":"SE')
    assert refused(aof.parent).offset == last


def test_incomplete_last_line_is_a_torn_tail_and_cut_with_a_warning(aof: Path) -> None:
    good = aof.read_bytes()
    aof.write_bytes(good + b'{"seq":6,"cmd":"SET","key":"k6","va')
    err = refused(aof.parent, truncate=False)
    assert err.offset == len(good) and "aof_truncate_torn_tail is off" in str(err)
    assert f"helios aof-check --fix --data {aof.parent}" in str(err) and "--force" not in str(err)
    ks, rep = run_recover(aof.parent)
    assert rep.truncated_bytes == 35 and rep.last_seq == 5
    assert aof.read_bytes() == good and len(ks.data) == 5


def test_last_record_cut_inside_its_newline_less_line_is_a_torn_tail(aof: Path) -> None:
    """A write cut short by a crash: the record's own bytes, but not all of them."""
    blob = aof.read_bytes()
    last = line_start(blob, 4)
    aof.write_bytes(blob[:-5])
    ks, rep = run_recover(aof.parent)
    assert rep.truncated_bytes == len(blob) - 5 - last and sorted(ks.data) == [b"k1", b"k2", b"k3", b"k4"]


def test_incomplete_last_line_of_a_rotated_part_is_damage(tmp_path: Path) -> None:
    part = DataDir(tmp_path).rotated_path(5)
    part.write_bytes(records(1, 5)[:-5])
    (tmp_path / "appendonly.aof").write_bytes(records(6, 7))
    err = refused(tmp_path)
    assert err.path == str(part) and err.offset == line_start(records(1, 5), 4)
    assert "--force" in str(err)


def test_valid_last_record_without_newline_is_kept(aof: Path) -> None:
    blob = aof.read_bytes()
    aof.write_bytes(blob[:-1])
    ks, rep = run_recover(aof.parent)
    assert rep.truncated_bytes == 0 and rep.needs_newline and len(ks.data) == 5
