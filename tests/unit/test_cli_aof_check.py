"""`helios aof-check`: every verdict, every --fix branch, on AOF files a real engine wrote."""

from __future__ import annotations

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
                   "first_seq": 1, "last_seq": 5, "bad_lines": 0, "damage": None, "ok": True, "fix": None}


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
