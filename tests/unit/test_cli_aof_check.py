"""`helios aof-check`: every verdict, every --fix branch, on AOF files a real engine wrote."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli import aof_check as aof_check_mod
from helios_cli.main import cli
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import encode_record
from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs, Fs
from helios_core.config import AtlasConfig
from tests.atlas_state import recovered_data

pytestmark = pytest.mark.usefixtures("restore_logging")

LEGACY = (b'{"cmd":"SET","key":"foo","value":"bar","ttl":0}\n'
          b'{"cmd":"SET","key":"baz","value":"qux","ttl":10}\n'
          b'{"cmd":"DEL","key":"foo"}\n')


def write_keys(data: Path, names: list[str]) -> None:
    eng = Engine.open(data, AtlasConfig())
    try:
        for name in names:
            eng.execute([b"SET", name.encode(), b"v-" + name.encode()])
        eng.flush_sync()
    finally:
        eng.close()


def line_starts(path: Path) -> list[int]:
    blob = path.read_bytes()
    starts = [0]
    for i, ch in enumerate(blob):
        if ch == ord("\n") and i + 1 < len(blob):
            starts.append(i + 1)
    return starts


def flip_value_bit(path: Path, line: int) -> None:
    """Flip one bit inside the value of record `line` (0-based): only the crc can notice."""
    blob = bytearray(path.read_bytes())
    at = blob.index(b'"value":"v-', line_starts(path)[line]) + len(b'"value":"v-')
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["aof-check", *args], input=input)


def run_json(*args: str) -> tuple[int, dict]:
    result = run("--json", *args)
    return result.exit_code, orjson.loads(result.stdout)


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data dir whose appendonly.aof holds five records, k0..k4 (seq 1..5)."""
    d = tmp_path / "data"
    write_keys(d, [f"k{i}" for i in range(5)])
    return d


@pytest.fixture
def aof(data: Path) -> Path:
    return data / "appendonly.aof"


@pytest.fixture
def rotated(data: Path) -> Iterator[tuple[Path, Path]]:
    """Two parts: appendonly-…05.aof (seq 1..5, k0..k4) and appendonly.aof (seq 6..8, k5..k7)."""
    part = DataDir(data).rotated_path(5)
    os.rename(data / "appendonly.aof", part)
    write_keys(data, ["k5", "k6", "k7"])
    yield part, data / "appendonly.aof"


# -- checking -------------------------------------------------------------------------


def test_valid_file(aof: Path) -> None:
    result = run(str(aof))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "records    5" in out and "keys       5" in out and "seq        1 .. 5" in out
    assert "status     OK" in out
    assert "\x1b[" not in out  # no colour when not a terminal


def test_json_shape(aof: Path) -> None:
    code, out = run_json(str(aof))
    assert code == 0
    assert out == {"files": [str(aof)], "records": 5, "bytes": aof.stat().st_size, "keys": 5,
                   "first_seq": 1, "last_seq": 5, "bad_lines": 0, "damage": None, "snapshot": None, "ok": True,
                   "fix": None}


def test_data_dir_checks_parts_in_replay_order(data: Path, rotated: tuple[Path, Path]) -> None:
    part, active = rotated
    code, out = run_json("--data", str(data))
    assert code == 0
    assert out["files"] == [str(part), str(active)]
    assert (out["records"], out["keys"], out["first_seq"], out["last_seq"]) == (8, 8, 1, 8)
    assert out["bytes"] == part.stat().st_size + active.stat().st_size


def test_empty_data_dir_is_valid(tmp_path: Path) -> None:
    code, out = run_json("--data", str(tmp_path))
    assert code == 0 and out["files"] == [] and out["records"] == 0


def test_legacy_lines_accepted(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    path.write_bytes(LEGACY)
    code, out = run_json(str(path))
    assert code == 0, out
    assert (out["records"], out["keys"], out["first_seq"], out["last_seq"]) == (3, 2, 1, 3)


def test_torn_tail(aof: Path) -> None:
    size = aof.stat().st_size
    with open(aof, "ab") as f:
        f.write(b'{"seq":6,"cmd":"SET","ke')
    result = run(str(aof))
    assert result.exit_code == 1
    assert "DAMAGED: torn tail" in result.stdout and f"at byte {size}" in result.stdout
    code, out = run_json(str(aof))
    assert code == 1 and out["ok"] is False and out["records"] == 5
    d = out["damage"]
    assert (d["file"], d["offset"], d["kind"], d["torn_tail"]) == (str(aof), size, "torn_tail", True)
    assert (d["records_after"], d["bytes_after"], d["cut_at"]) == (0, 24, size)


def test_bit_flip_inside_a_record_is_caught_by_the_crc(aof: Path) -> None:
    flip_value_bit(aof, 2)
    code, out = run_json(str(aof))
    assert code == 1
    d = out["damage"]
    assert d["offset"] == line_starts(aof)[2]
    assert "checksum mismatch" in d["reason"]
    assert (d["kind"], d["torn_tail"], d["records_after"]) == ("mid_file", False, 2)
    assert out["records"] == 4  # the flipped line no longer counts as a record


def test_mid_file_damage_human_output(aof: Path) -> None:
    flip_value_bit(aof, 1)
    result = run(str(aof))
    assert result.exit_code == 1
    assert "DAMAGED: mid-file damage" in result.stdout
    assert "3 valid record(s) in this file" in result.stdout
    assert f"helios aof-check --fix --force {aof}" in result.stdout


def test_seq_must_increase(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.aof"
    path.write_bytes(encode_record(1, [("DEL", b"a")]) + encode_record(5, [("DEL", b"b")])
                     + encode_record(5, [("DEL", b"c")]) + b'{"cmd":"DEL","key":"d"}\n')
    code, out = run_json(str(path))
    assert code == 1
    d = out["damage"]
    assert d["offset"] == line_starts(path)[2]
    assert d["reason"] == "record seq 5 is not above the previous record's 5"
    assert (d["kind"], d["records_after"]) == ("mid_file", 2)  # the out-of-order record and the next


def test_seq_order_is_checked_across_parts(data: Path, rotated: tuple[Path, Path]) -> None:
    part, active = rotated
    active.write_bytes(encode_record(3, [("DEL", b"k0")]))  # below the rotated part's last seq 5
    code, out = run_json("--data", str(data))
    assert code == 1
    d = out["damage"]
    assert (d["file"], d["offset"], d["kind"]) == (str(active), 0, "mid_file")
    assert "not above the previous record's 5" in d["reason"]


def test_damage_in_a_rotated_part(data: Path, rotated: tuple[Path, Path]) -> None:
    part, _ = rotated
    flip_value_bit(part, 3)
    code, out = run_json("--data", str(data))
    assert code == 1
    d = out["damage"]
    assert (d["file"], d["kind"], d["records_after"]) == (str(part), "rotated_part", 1)
    assert (d["later_files"], d["later_records"]) == (1, 3)


def test_usage_errors(aof: Path, data: Path) -> None:
    assert run().exit_code == 2
    assert run(str(aof), "--data", str(data)).exit_code == 2
    assert run(str(aof), "--yes").exit_code == 2
    assert run(str(aof), "--force").exit_code == 2
    assert run(str(data / "missing.aof")).exit_code == 2


def test_progress_bar_only_for_large_files_on_a_terminal(
        aof: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats the streams as terminals
    assert "checking AOF" not in run(str(aof)).stderr  # 64 MiB threshold not reached
    monkeypatch.setattr(aof_check_mod, "PROGRESS_MIN_BYTES", 0)
    result = run(str(aof))
    assert result.exit_code == 0 and "checking AOF" in result.stderr
    result = run("--json", str(aof))
    assert result.exit_code == 0 and "checking AOF" not in result.stderr
    assert orjson.loads(result.stdout)["ok"] is True


def test_progress_callback_reaches_total(aof: Path) -> None:
    seen: list[int] = []
    report = aof_check_mod.check_parts([aof], 0, seen.append)
    assert report.ok and seen[-1] == aof.stat().st_size


# -- repairing ------------------------------------------------------------------------


@pytest.fixture
def torn(aof: Path) -> tuple[Path, bytes]:
    good = aof.read_bytes()
    with open(aof, "ab") as f:
        f.write(b'{"seq":6,"cmd":"SET","key":"k5","va')
    return aof, good


def test_fix_torn_tail_with_yes(torn: tuple[Path, bytes], data: Path) -> None:
    aof, good = torn
    damaged = aof.read_bytes()
    result = run("--fix", "--yes", str(aof))
    assert result.exit_code == 0, result.output
    assert aof.read_bytes() == good
    [backup] = backups(aof)
    assert backup.read_bytes() == damaged
    assert f"backup     {backup}" in result.stdout
    assert f"at byte {len(good)}: dropped {len(damaged) - len(good)} bytes" in result.stdout
    assert "now        OK, 5 records" in result.stdout
    assert sorted(recovered_data(data)) == [b"k0", b"k1", b"k2", b"k3", b"k4"]


def test_fix_json(torn: tuple[Path, bytes]) -> None:
    aof, good = torn
    code, out = run_json("--fix", "--yes", str(aof))
    assert code == 0
    assert out["ok"] is False and out["damage"]["kind"] == "torn_tail"
    fix = out["fix"]
    assert (fix["file"], fix["cut_at"], fix["records_dropped"]) == (str(aof), len(good), 0)
    assert fix["backup"] == str(backups(aof)[0])
    assert fix["after"]["ok"] is True and fix["after"]["records"] == 5


def test_fix_without_damage_does_nothing(aof: Path) -> None:
    result = run("--fix", "--yes", str(aof))
    assert result.exit_code == 0 and "nothing to fix" in result.stdout
    assert backups(aof) == []


def test_fix_refuses_without_yes_when_not_interactive(torn: tuple[Path, bytes]) -> None:
    aof, _ = torn
    before = aof.read_bytes()
    result = run("--fix", str(aof))
    assert result.exit_code == 1
    assert "add --yes" in result.stderr
    assert aof.read_bytes() == before and backups(aof) == []


@pytest.mark.parametrize(("answer", "cut"), [("y\n", True), ("n\n", False)])
def test_fix_asks_when_interactive(torn: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch,
                                   answer: str, cut: bool) -> None:
    aof, good = torn
    before = aof.read_bytes()
    monkeypatch.setattr(aof_check_mod, "_stdin_interactive", lambda: True)
    result = run("--fix", str(aof), input=answer)
    assert f"Cut {aof} at byte {len(good)}" in result.stderr  # the prompt stays off stdout
    if cut:
        assert result.exit_code == 0 and aof.read_bytes() == good and len(backups(aof)) == 1
    else:
        assert result.exit_code == 1 and aof.read_bytes() == before and backups(aof) == []


def test_fix_mid_file_needs_force(aof: Path) -> None:
    flip_value_bit(aof, 2)
    before = aof.read_bytes()
    cut_at = line_starts(aof)[2]
    result = run("--fix", "--yes", str(aof))
    assert result.exit_code == 1
    assert f"2 valid record(s) ({len(before) - cut_at} bytes)" in result.stderr
    assert "--force" in result.stderr
    assert aof.read_bytes() == before and backups(aof) == []


def test_fix_mid_file_with_force(aof: Path, data: Path) -> None:
    flip_value_bit(aof, 2)
    before = aof.read_bytes()
    cut_at = line_starts(aof)[2]
    result = run("--fix", "--yes", "--force", str(aof))
    assert result.exit_code == 0, result.output
    assert aof.read_bytes() == before[:cut_at]
    assert backups(aof)[0].read_bytes() == before
    assert "(2 valid records)" in result.stdout
    assert sorted(recovered_data(data)) == [b"k0", b"k1"]


def test_fix_rotated_part_refused_then_forced(data: Path, rotated: tuple[Path, Path]) -> None:
    part, active = rotated
    flip_value_bit(part, 2)
    part_before, active_before, cut_at = part.read_bytes(), active.read_bytes(), line_starts(part)[2]
    result = run("--data", str(data), "--fix", "--yes")
    assert result.exit_code == 1
    assert "rotated AOF part" in result.stderr and "3 record(s) in 1 later part(s)" in result.stderr
    assert part.read_bytes() == part_before

    result = run("--data", str(data), "--fix", "--yes", "--force")
    assert result.exit_code == 0, result.output
    assert part.read_bytes() == part_before[:cut_at]
    assert active.read_bytes() == active_before  # later parts are left alone
    assert "dropped" in result.stdout and "(2 valid records)" in result.stdout
    assert sorted(recovered_data(data)) == [b"k0", b"k1", b"k5", b"k6", b"k7"]


def test_fix_refused_while_a_process_owns_the_dir(torn: tuple[Path, bytes], data: Path) -> None:
    aof, _ = torn
    before = aof.read_bytes()
    lock = DataDir(data).lock()
    try:
        for args in (["--data", str(data)], [str(aof)]):
            result = run("--fix", "--yes", "--force", *args)
            assert result.exit_code == 1
            assert f"in use by process {os.getpid()}" in result.stderr
        assert run(str(aof)).exit_code == 1  # checking alone is still allowed
    finally:
        lock.release()
    assert aof.read_bytes() == before and backups(aof) == []


def test_fix_refusal_in_json_mode_still_prints_the_report(aof: Path) -> None:
    flip_value_bit(aof, 0)
    result = run("--json", "--fix", "--yes", str(aof))
    assert result.exit_code == 1
    out = orjson.loads(result.stdout)
    assert out["damage"]["records_after"] == 4
    assert "--force" in out["fix"]["error"] and "--force" in result.stderr


# -- a damaged last record is corruption, not a torn tail (issue 11, item 4) ------------


def test_bit_flip_in_the_last_complete_line_is_not_a_torn_tail(aof: Path) -> None:
    flip_value_bit(aof, 4)  # the newline is there: the record was written whole, then damaged
    code, out = run_json(str(aof))
    assert code == 1
    d = out["damage"]
    assert (d["offset"], d["kind"], d["torn_tail"], d["records_after"]) == (
        line_starts(aof)[4], "last_record", False, 0)
    result = run(str(aof))
    assert "DAMAGED: damaged last record (its line is complete: not a torn write)" in result.stdout
    assert f"helios aof-check --fix --force {aof}" in result.stdout


def test_fix_damaged_last_record_needs_force_and_keeps_a_copy(aof: Path, data: Path) -> None:
    flip_value_bit(aof, 4)
    before, cut_at = aof.read_bytes(), line_starts(aof)[4]
    result = run("--fix", "--yes", str(aof))
    assert result.exit_code == 1
    assert "not a torn tail" in result.stderr and "--force" in result.stderr
    assert aof.read_bytes() == before and backups(aof) == []
    result = run("--fix", "--yes", "--force", str(aof))
    assert result.exit_code == 0, result.output
    [backup] = backups(aof)
    assert backup.read_bytes() == before and aof.read_bytes() == before[:cut_at]
    assert f"backup     {backup} (the whole file as it was before the cut)" in result.stdout
    assert sorted(recovered_data(data)) == [b"k0", b"k1", b"k2", b"k3"]


def test_recovery_and_aof_check_name_the_same_damage(aof: Path, data: Path) -> None:
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig
    from helios_core.errors import CorruptFileError

    flip_value_bit(aof, 4)
    with pytest.raises(CorruptFileError) as info:
        Engine.open(data, AtlasConfig())
    _, out = run_json("--data", str(data))
    assert (info.value.path, info.value.offset) == (out["damage"]["file"], out["damage"]["offset"])
    assert f"helios aof-check --fix --force --data {data}" in str(info.value)


# -- the snapshot is verified too -------------------------------------------------------


@pytest.fixture
def snapshotted(data: Path) -> Path:
    """The data dir with dump.rdb at seq 5 (k0..k4) and k5, k6 in the AOF after it."""
    eng = Engine.open(data, AtlasConfig(save=()))
    try:
        eng.snapshot_sync()
        for name in ("k5", "k6"):
            eng.execute([b"SET", name.encode(), b"v"])
        eng.flush_sync()
    finally:
        eng.close()
    return data / "dump.rdb"


def test_data_dir_check_verifies_the_snapshot(data: Path, snapshotted: Path) -> None:
    code, out = run_json("--data", str(data))
    assert code == 0 and out["ok"] is True
    assert out["snapshot"] == {"file": str(snapshotted), "ok": True, "seq": 5, "keys": 5,
                               "bytes": snapshotted.stat().st_size, "offset": None, "reason": None}
    result = run("--data", str(data))
    assert f"snapshot   {snapshotted}: seq 5, 5 keys, {snapshotted.stat().st_size} bytes, OK" in result.stdout


def test_corrupt_snapshot_fails_the_check(data: Path, snapshotted: Path) -> None:
    blob = bytearray(snapshotted.read_bytes())
    blob[len(blob) // 2] ^= 0x10
    snapshotted.write_bytes(bytes(blob))
    code, out = run_json("--data", str(data))
    assert code == 1 and out["ok"] is False and out["damage"] is None  # the AOF itself is fine
    snap = out["snapshot"]
    assert (snap["file"], snap["ok"]) == (str(snapshotted), False)
    assert "checksum mismatch" in snap["reason"]
    result = run("--data", str(data))
    assert result.exit_code == 1
    assert f"snapshot   DAMAGED: {snapshotted}" in result.stdout
    assert "status     DAMAGED: snapshot" in result.stdout


def test_truncated_snapshot_names_the_file_and_what_to_do(data: Path, snapshotted: Path) -> None:
    snapshotted.write_bytes(snapshotted.read_bytes()[:40])
    code, out = run_json("--data", str(data))
    assert code == 1 and out["snapshot"]["ok"] is False
    result = run("--data", str(data), "--fix", "--yes")
    assert result.exit_code == 1
    assert "aof-check does not repair snapshots" in result.stderr and "restore a backup" in result.stderr
    assert snapshotted.read_bytes()  # left as it was


def test_snapshot_file_as_path_is_verified(data: Path, snapshotted: Path) -> None:
    code, out = run_json(str(snapshotted))
    assert code == 0 and out["files"] == [] and out["snapshot"]["seq"] == 5
    snapshotted.write_bytes(snapshotted.read_bytes()[:-1])
    code, out = run_json(str(snapshotted))
    assert code == 1 and out["snapshot"]["ok"] is False


def test_snapshot_damage_is_located_not_reported_at_the_checksum(data: Path, snapshotted: Path) -> None:
    """The checksum sits in the footer; the damage is where the first chunk stops parsing."""
    blob = bytearray(snapshotted.read_bytes())
    first_chunk = 16 + 4 + int.from_bytes(blob[16:20], "big")
    blob[first_chunk] ^= 0x40  # the chunk's array marker becomes an integer's
    snapshotted.write_bytes(bytes(blob))
    _, out = run_json("--data", str(data))
    snap = out["snapshot"]
    assert snap["offset"] == first_chunk
    assert f"the first chunk that does not parse starts at byte {first_chunk}" in snap["reason"]
    assert f"at byte {len(blob) - 8}" not in snap["reason"]


def test_snapshot_damage_inside_a_value_says_a_checksum_cannot_locate_it(data: Path, snapshotted: Path) -> None:
    blob = bytearray(snapshotted.read_bytes())
    blob[blob.index(b"v-k3") + 3] ^= 0x01
    snapshotted.write_bytes(bytes(blob))
    _, out = run_json("--data", str(data))
    snap = out["snapshot"]
    assert snap["offset"] is None and "a checksum cannot say where" in snap["reason"]


# -- the copy is durable before the cut (issue 11, item 9) ------------------------------


class JournalFs(Fs):
    """The real calls, journaled."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _note(self, op: str, what: str) -> None:
        self.calls.append((op, what))

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
        self._note("open", Path(path).name)
        return super().open(path, flags, mode)

    def fsync(self, fd: int) -> None:
        self._note("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        super().fsync(fd)

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        self._note("rename", f"{Path(src).name} -> {Path(dst).name}")
        super().rename(src, dst)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        self._note("fsync_dir", Path(path).name)
        super().fsync_dir(path)

    def ftruncate(self, fd: int, size: int) -> None:
        self._note("ftruncate", f"{Path(os.readlink(f'/proc/self/fd/{fd}')).name} {size}")
        super().ftruncate(fd, size)


def _fix_torn(aof: Path, fs: Fs) -> aof_check_mod.FixResult:
    report = aof_check_mod.check_parts([aof], 0)
    assert report.damage is not None
    return aof_check_mod.fix_damage(report.damage, DataDir(aof.parent), yes=True, force=False,
                                    must_lock=True, fs=fs)


def test_fix_renames_a_synced_copy_and_syncs_the_directory_before_cutting(torn: tuple[Path, bytes]) -> None:
    aof, good = torn
    damaged = aof.read_bytes()
    fs = JournalFs()
    result = _fix_torn(aof, fs)
    name = Path(result.backup).name
    assert fs.calls == [("open", f"{name}.tmp"), ("fsync", f"{name}.tmp"), ("rename", f"{name}.tmp -> {name}"),
                        ("fsync_dir", "data"), ("ftruncate", f"appendonly.aof {len(good)}"),
                        ("fsync", "appendonly.aof")]
    assert Path(result.backup).read_bytes() == damaged and aof.read_bytes() == good
    assert Path(result.backup).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("step", ["open", "fsync", "rename", "fsync_dir"])
def test_a_failed_copy_step_leaves_the_file_uncut(torn: tuple[Path, bytes], step: str) -> None:
    aof, _ = torn
    damaged = aof.read_bytes()
    fs = FaultyFs()
    fs.fail(step, err=errno.ENOSPC if step == "open" else errno.EIO)
    with pytest.raises(OSError):
        _fix_torn(aof, fs)
    assert aof.read_bytes() == damaged
    assert not list(aof.parent.glob("*.tmp")), "no temp copy is left behind"
    assert not DataDir(aof.parent).owner(), "the lock is released"
