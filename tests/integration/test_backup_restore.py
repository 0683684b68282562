"""`helios backup` and `helios restore` against real directories and a real `helios atlasd`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from helios_cli.backup import BackupResult, backup_name, backups_to_delete, make_backup, parse_backup_name
from helios_cli.main import cli
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.engine import Engine
from helios_core.atlas.snapshot import check_snapshot
from helios_core.config import HeliosConfig
from helios_core.gateway.app import Started, serve
from tests.integration.test_atlasd_support import HELIOS, Daemon

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("restore_logging")]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}


def _helios(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELIOS, *args], capture_output=True, text=True, timeout=60, env=_env())


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fill(data: Path, n: int) -> None:
    """A free directory holding keys k0..k{n-1} (written through the engine, then closed)."""
    eng = Engine.open(data)
    try:
        for i in range(n):
            eng.execute([b"SET", f"k{i}".encode(), str(i).encode()])
    finally:
        eng.close()


# -- names and rotation --------------------------------------------------------------------

def test_backup_names_sort_by_time_and_parse_back() -> None:
    t = datetime(2026, 12, 2, 13, 27, 55, 123456, tzinfo=UTC)
    name = backup_name(t, 42)
    assert name == "helios-20261202T132755.123Z-seq42.rdb"
    assert parse_backup_name(name) == ("20261202T132755.123Z", 42)
    for other in ("helios-20261202T132755Z-seq42.rdb", "helios-x-seq1.rdb", name + ".bak", "notes.txt"):
        assert parse_backup_name(other) is None


def test_rotation_keeps_the_newest_and_never_the_unrelated() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    names = [backup_name(t0 + timedelta(days=i), i) for i in range(5)]
    unrelated = ["notes.txt", "helios-latest.rdb", names[0] + ".bak", "dump.rdb"]
    assert backups_to_delete(names + unrelated, keep=2) == names[:3]
    assert backups_to_delete(names, keep=10) == []
    # The backup just made survives a clock set back (it sorts oldest).
    early = backup_name(t0 - timedelta(days=30), 9)
    assert backups_to_delete([*names, early], keep=2, protect=early) == names[:4]


# -- backup ------------------------------------------------------------------------------------

def test_backup_through_a_running_atlasd_then_restore_into_its_directory(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    d = Daemon(data).start()
    try:
        with d.client() as r:
            for i in range(50):
                r.set(f"k{i}", i)
        out = _helios("backup", "--data", str(data), "--to", str(backups), "--json")
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        path = Path(res["path"])
        assert res["keys"] == 50 and res["deleted"] == []
        parsed = parse_backup_name(path.name)
        assert parsed is not None and parsed[1] == res["seq"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(backups.stat().st_mode) == 0o700
        check = check_snapshot(path)
        assert check.ok and check.keys == 50 and check.seq == res["seq"]
        assert d.proc is not None and d.proc.poll() is None  # the daemon kept serving
        with d.client() as r:
            r.set("later", 1)  # after the backup: a restore must not bring it back
        # A directory a process owns is never restored into (in process from here: the daemon is the real one).
        out = _run("restore", "--from", str(path), "--data", str(data))
        assert out.exit_code == 1 and "in use by process" in out.output
    finally:
        assert d.stop() == 0

    before = {p.name: _digest(p) for p in data.iterdir() if p.name == "dump.rdb" or p.name.startswith("appendonly")}
    assert "appendonly.aof" in before
    out = _run("restore", "--from", str(path), "--data", str(data))
    assert out.exit_code == 1 and "holds data" in out.output and "--yes" in out.output
    assert {p.name: _digest(p) for p in data.iterdir() if p.name in before} == before  # nothing moved

    out = _run("restore", "--from", str(path), "--data", str(data), "--yes", "--json")
    assert out.exit_code == 0, out.output
    res2 = json.loads(out.stdout)
    assert res2["seq"] == res["seq"] and res2["keys"] == 50
    aside = Path(res2["moved_to"])
    assert aside.parent == data.resolve() and aside.name.startswith("pre-restore-")
    assert {p.name: _digest(p) for p in aside.iterdir()} == before  # kept aside, byte for byte
    assert stat.S_IMODE((data / "dump.rdb").stat().st_mode) == 0o600
    assert (data / "appendonly.aof").stat().st_size == 0

    d2 = Daemon(data).start()
    try:
        with d2.client() as r:
            assert sorted(r.keys()) == sorted(f"k{i}".encode() for i in range(50))
            assert r.get("k49") == b"49"
    finally:
        assert d2.stop() == 0


def test_backup_while_the_gateway_runs_on_the_directory(tmp_path: Path) -> None:
    """Cron's case: `helios gateway --data DIR` owns DIR and serves its socket; the backup goes through it."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    base = HeliosConfig()
    config = dataclasses.replace(base, gateway=dataclasses.replace(base.gateway, bind="127.0.0.1", port=0))

    async def main() -> tuple[BackupResult, dict | None]:
        stop = asyncio.Event()
        started: list[Started] = []
        task = asyncio.create_task(serve(config, data, started.append, stop=stop))
        try:
            while not started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            owner = DataDir(data).owner()
            res = await asyncio.get_running_loop().run_in_executor(
                None, lambda: make_backup(DataDir(data), backups, 7, config, lambda: datetime.now(UTC), 60))
            return res, owner
        finally:
            stop.set()
            await task

    res, owner = asyncio.run(main())
    assert owner is not None and owner.get("socket")  # it was the gateway's, served over its socket
    assert check_snapshot(res.path).ok and res.keys > 0  # the admin user and its role, at least
    out = _run("restore", "--from", str(res.path), "--data", str(tmp_path / "restored"), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["keys"] == res.keys


def test_backup_of_a_free_directory_in_process(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "new" / "backups"
    _fill(data, 20)
    res = CliRunner().invoke(cli, ["backup", "--data", str(data), "--to", str(backups), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["keys"] == 20 and Path(out["path"]).parent == backups
    assert [p.name for p in backups.iterdir()] == [Path(out["path"]).name]  # no staging file left
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    eng = Engine.open(data)  # the lock was released
    eng.close()


def test_keep_rotation_deletes_only_backup_named_files(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    _fill(data, 3)
    backups.mkdir(mode=0o700)
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    old = [backup_name(t0 + timedelta(hours=i), i) for i in range(4)]
    unrelated = ["notes.txt", "helios-manual.rdb", old[0] + ".bak", "dump.rdb"]
    # Staging files of a backup killed mid-copy go; a live process's stay.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [f".helios-backup-{dead.pid}.partial", f"..helios-backup-{dead.pid}.partial.tmp-{dead.pid}"]
    live = f".helios-backup-{os.getppid()}.partial"
    for name in old + unrelated + stale + [live]:
        (backups / name).write_bytes(b"x")
    res = CliRunner().invoke(cli, ["backup", "--data", str(data), "--to", str(backups), "--keep", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["deleted"] == old[:3]
    assert sorted(p.name for p in backups.iterdir()) == sorted([Path(out["path"]).name, old[3], *unrelated, live])


def test_backup_usage_and_failures(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["backup", "--data", str(tmp_path / "missing"), "--to", str(tmp_path / "b")])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = runner.invoke(cli, ["backup", "--data", str(tmp_path), "--to", str(tmp_path / "b"), "--keep", "0"])
    assert res.exit_code == 2


# -- restore -----------------------------------------------------------------------------------

def _one_backup(tmp_path: Path, keys: int = 5) -> Path:
    data = tmp_path / "src"
    _fill(data, keys)
    res = CliRunner().invoke(cli, ["backup", "--data", str(data), "--to", str(tmp_path / "backups"), "--json"])
    assert res.exit_code == 0, res.output
    return Path(json.loads(res.stdout)["path"])


def test_restore_refuses_a_corrupt_backup(tmp_path: Path) -> None:
    path = _one_backup(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(bytes(blob))
    target = tmp_path / "target"
    res = CliRunner().invoke(cli, ["restore", "--from", str(bad), "--data", str(target), "--yes"])
    assert res.exit_code == 1 and "damaged" in res.output
    assert not (target / "dump.rdb").exists()


def test_restore_into_a_fresh_directory_loads_exactly_the_backup(tmp_path: Path) -> None:
    path = _one_backup(tmp_path, keys=7)
    target = tmp_path / "fresh"
    res = CliRunner().invoke(cli, ["restore", "--from", str(path), "--data", str(target)])
    assert res.exit_code == 0, res.output
    assert "keys     7" in res.output
    assert not any(p.name.startswith("pre-restore-") for p in target.iterdir())
    eng = Engine.open(target)
    try:
        assert sorted(eng.ks.data) == sorted(f"k{i}".encode() for i in range(7))
    finally:
        eng.close()


def test_restore_from_the_directory_own_snapshot_file(tmp_path: Path) -> None:
    # The file to restore is one of those moved aside: it is copied in before anything moves.
    data = tmp_path / "data"
    _fill(data, 4)
    eng = Engine.open(data)
    try:
        eng.snapshot_sync()
        eng.execute([b"SET", b"after", b"1"])  # only in the AOF, which goes aside
    finally:
        eng.close()
    res = _run("restore", "--from", str(data / "dump.rdb"), "--data", str(data), "--yes", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["keys"] == 4 and set(out["moved"]) >= {"dump.rdb", "appendonly.aof"}
    assert not [p.name for p in data.iterdir() if ".restore-" in p.name]  # no staging file left
    eng = Engine.open(data)
    try:
        assert b"after" not in eng.ks.data and len(eng.ks.data) == 4
    finally:
        eng.close()
