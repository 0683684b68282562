"""`helios snapshot`: snapshotting a free data dir, refusing an owned one, verifying files."""

from __future__ import annotations

import os
import zlib
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from tests.atlas_state import recovered_data

pytestmark = pytest.mark.usefixtures("restore_logging")


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["snapshot", *args], env=env)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data dir with an AOF only: three strings, one sorted set, one expiry."""
    d = tmp_path / "data"
    eng = Engine.open(d, AtlasConfig())
    try:
        for args in ([b"SET", b"a", b"1"], [b"SET", b"b", b"2"], [b"SET", b"c", b"3"],
                     [b"ZADD", b"z", b"1", b"m"], [b"PEXPIRE", b"a", b"3600000"], [b"DEL", b"c"]):
            eng.execute(args)
        eng.flush_sync()
    finally:
        eng.close()
    return d


def test_snapshot_free_dir_then_recovery_shows_the_same_keys(data: Path) -> None:
    before = recovered_data(data)
    result = run("--data", str(data))
    assert result.exit_code == 0, result.output
    snap = data / "dump.rdb"
    for line in ("seq      6", "keys     3", f"bytes    {snap.stat().st_size}", f"path     {snap}"):
        assert line in result.stdout
    assert "seconds  " in result.stdout
    # The AOF was rotated into the snapshot and pruned: recovery now comes from dump.rdb alone.
    assert DataDir(data).rotated_parts() == []
    assert (data / "appendonly.aof").stat().st_size == 0
    assert recovered_data(data) == before
    assert not list(data.glob("dump.rdb.tmp-*"))


def test_snapshot_json(data: Path) -> None:
    result = run("--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert set(out) == {"path", "seq", "keys", "bytes", "seconds", "created", "output"}
    assert (out["path"], out["seq"], out["keys"], out["output"]) == (str(data / "dump.rdb"), 6, 3, None)


def test_output_copy_verifies(data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "backups" / "nightly.rdb"
    copy.parent.mkdir()
    copy.write_bytes(b"an older copy")
    result = run("--data", str(data), "--output", str(copy))
    assert result.exit_code == 0, result.output
    assert f"output   {copy}" in result.stdout
    assert copy.read_bytes() == (data / "dump.rdb").read_bytes()
    assert os.listdir(copy.parent) == ["nightly.rdb"]  # no temp file left behind
    verified = run("--verify", str(copy), "--json")
    assert verified.exit_code == 0, verified.output
    assert orjson.loads(verified.stdout)["seq"] == 6


def test_verify_prints_the_header(data: Path) -> None:
    assert run("--data", str(data)).exit_code == 0
    snap = data / "dump.rdb"
    result = run("--verify", str(snap))
    assert result.exit_code == 0, result.output
    for line in ("seq      6", "keys     3", f"bytes    {snap.stat().st_size}", "version  1"):
        assert line in result.stdout
    out = orjson.loads(run("--verify", str(snap), "--json").stdout)
    assert out["created"].endswith("Z")
    created = datetime.fromisoformat(out["created"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0


def test_verify_truncated_snapshot_fails(data: Path, tmp_path: Path) -> None:
    assert run("--data", str(data)).exit_code == 0
    cut = tmp_path / "cut.rdb"
    cut.write_bytes((data / "dump.rdb").read_bytes()[:-10])
    result = run("--verify", str(cut))
    assert result.exit_code == 1
    assert str(cut) in result.stderr and "damaged" in result.stderr
    assert result.stdout == ""


def test_verify_loads_the_body_as_recovery_does(data: Path, tmp_path: Path) -> None:
    """A body that does not parse fails --verify even when its checksum matches (as aof-check says)."""
    from helios_core.atlas.snapshot import FOOTER, MAGIC

    assert run("--data", str(data)).exit_code == 0
    blob = (data / "dump.rdb").read_bytes()
    head = len(MAGIC) + 4
    start = head + int.from_bytes(blob[len(MAGIC):head], "big")
    body = bytearray(blob[:len(blob) - FOOTER.size])
    body[start:start + 4] = b"\xc1\xc1\xc1\xc1"  # msgpack's "never used" byte: no chunk parses
    forged = tmp_path / "forged.rdb"
    forged.write_bytes(bytes(body) + FOOTER.pack(b"CRC", zlib.crc32(bytes(body))))
    result = run("--verify", str(forged))
    assert result.exit_code == 1, result.stdout
    assert str(forged) in result.stderr and result.stdout == ""


def test_output_into_a_missing_directory_is_refused_before_anything(data: Path, tmp_path: Path) -> None:
    result = run("--data", str(data), "--output", str(tmp_path / "no" / "such" / "x.rdb"))
    assert result.exit_code == 2, result.output
    assert "does not exist; create it first (mkdir -p" in result.stderr
    assert not (data / "dump.rdb").exists()  # refused before the snapshot, not after it


def test_verify_missing_file_fails(tmp_path: Path) -> None:
    result = run("--verify", str(tmp_path / "none.rdb"))
    assert result.exit_code == 1
    assert "none.rdb" in result.stderr


def test_owned_dir_is_refused(data: Path) -> None:
    lock = DataDir(data).lock(socket="/run/helios/atlas.sock")
    try:
        result = run("--data", str(data))
    finally:
        lock.release()
    assert result.exit_code == 1
    assert f"process {os.getpid()}" in result.stderr
    assert "/run/helios/atlas.sock" in result.stderr and "ask that daemon" in result.stderr
    assert not (data / "dump.rdb").exists()


def test_snapshot_uses_the_loaded_config(data: Path) -> None:
    with open(data / "appendonly.aof", "ab") as f:
        f.write(b'{"seq":7,"cmd":"SET"')  # a torn tail: recovery cuts it only if configured to
    result = run("--data", str(data), env={"HELIOS_ATLAS__AOF_TRUNCATE_TORN_TAIL": "false"})
    assert result.exit_code == 1
    assert "aof_truncate_torn_tail is off" in result.stderr
    assert not (data / "dump.rdb").exists()
    assert run("--data", str(data)).exit_code == 0


def test_missing_data_dir_fails(tmp_path: Path) -> None:
    result = run("--data", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("args", [[], ["--verify", "x.rdb", "--data", "."],
                                  ["--verify", "x.rdb", "--output", "y"], ["--output", "y"]])
def test_usage_errors(args: list[str]) -> None:
    assert run(*args).exit_code == 2
