"""The engine's write path: AOF first, group commit, failures undone, the dir lock, recovery errors."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helios_core.atlas.aof import AofFile
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError, CorruptFileError, DataDirLockedError
from tests.atlas_state import state


def aof_lines(d: Path) -> list[bytes]:
    return (d / "appendonly.aof").read_bytes().splitlines()


def test_write_reaches_aof_only_through_flush(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig())
    e.execute([b"SET", b"a", b"1"])
    assert e.pending_seq() == 1          # the reply must wait
    assert aof_lines(tmp_path) == []
    e.flush_sync()
    assert e.pending_seq() == 0
    assert len(aof_lines(tmp_path)) == 1
    e.execute([b"GET", b"a"])
    assert e.pending_seq() == 0          # nothing new to wait for
    e.close()


def test_group_commit_shares_fsyncs_and_releases_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
        e.attach()
        released: list[int] = []

        async def one(i: int) -> None:
            e.execute([b"SET", b"k%d" % i, b"v"])
            await e.wait_durable(e.pending_seq())
            released.append(i)

        await asyncio.gather(*(one(i) for i in range(200)))
        assert len(released) == 200
        assert e.stats.fsync_count < 50, "writes in one loop pass should share an fsync"
        assert e.synced_seq == e.seq == 200
        await e.aclose()

    asyncio.run(main())


def test_failed_write_is_undone_and_writes_refused_until_disk_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
        e.attach()
        e.execute([b"SET", b"a", b"old"])
        await e.wait_durable()
        size = (tmp_path / "appendonly.aof").stat().st_size

        def full(fd: int, data: memoryview) -> int:
            os.write(fd, bytes(data[:10]))  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

        e.aof.os_write = full  # type: ignore[union-attr]
        e.execute([b"SET", b"a", b"new"])
        e.execute([b"ZADD", b"z", b"1", b"m"])
        with pytest.raises(Exception, match="MISCONF.*No space left"):
            await e.wait_durable()
        # Memory is back to what is on disk; the file was cut back.
        assert e.execute([b"GET", b"a"]) == b"old"
        assert e.execute([b"EXISTS", b"z"]) == 0
        assert (tmp_path / "appendonly.aof").stat().st_size == size
        with pytest.raises(CommandError, match="MISCONF"):
            e.execute([b"SET", b"b", b"x"])
        assert e.execute([b"GET", b"a"]) == b"old"  # reads go on
        del e.aof.os_write  # type: ignore[union-attr]  # the disk recovers
        e._probe_disk()
        assert e.aof_error is None
        e.execute([b"SET", b"b", b"x"])
        await e.wait_durable()
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig())
        assert e2.execute([b"GET", b"a"]) == b"old" and e2.execute([b"GET", b"b"]) == b"x"
        e2.close()

    asyncio.run(main())


def test_failed_fsync_under_always_is_undone(tmp_path: Path) -> None:
    async def main() -> None:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
        e.attach()

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        e.aof.os_fsync = eio  # type: ignore[union-attr]
        e.execute([b"SET", b"a", b"1"])
        with pytest.raises(Exception, match="MISCONF.*Input/output error"):
            await e.wait_durable()
        assert e.execute([b"GET", b"a"]) is None
        del e.aof.os_fsync  # type: ignore[union-attr]
        e._probe_disk()
        await e.aclose()

    asyncio.run(main())


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_real_full_disk(tmp_path: Path) -> None:
    """A real ENOSPC from a tiny tmpfs: refused writes, no divergence, resume after space frees."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "256k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        async def main() -> None:
            filler = mnt / "filler"
            e = Engine.open(mnt / "data", AtlasConfig(appendfsync="always", save=()))
            e.attach()
            filler.write_bytes(b"\0" * (200 * 1024))
            acked: dict[bytes, bytes] = {}
            failed = 0
            for i in range(2000):
                key, value = b"k%d" % i, b"x" * 200
                try:
                    e.execute([b"SET", key, value])
                    await e.wait_durable()
                    acked[key] = value
                except Exception as exc:  # noqa: BLE001
                    assert "MISCONF" in str(exc)
                    failed += 1
                    if failed > 3:
                        break
            assert failed, "the disk never filled up"
            assert e.aof_error is not None
            assert {k: v for k, (v, _) in state(e).items()} == acked
            filler.unlink()
            e._probe_disk()
            assert e.aof_error is None
            e.execute([b"SET", b"after", b"1"])
            await e.wait_durable()
            acked[b"after"] = b"1"
            await e.aclose()
            e2 = Engine.open(mnt / "data", AtlasConfig())
            assert {k: v for k, (v, _) in state(e2).items()} == acked
            e2.close()

        asyncio.run(main())
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_second_opener_is_refused_with_owner_pid(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig())
    with pytest.raises(DataDirLockedError, match=f"process {os.getpid()}"):
        Engine.open(tmp_path, AtlasConfig())
    code = ("import sys\nfrom helios_core.atlas.engine import Engine\n"
            "try:\n    Engine.open(sys.argv[1])\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 3
    assert f"in use by process {os.getpid()}" in out.stdout
    e.close()
    Engine.open(tmp_path, AtlasConfig()).close()  # free again


def test_original_design_aof_loads_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "appendonly.aof").write_text(
        '{"cmd":"SET","key":"foo","value":"bar","ttl":0}\n'
        '{"cmd":"SET","key":"tmp","value":"x","ttl":60}\n'
        '{"cmd":"SET","key":"gone","value":"x","ttl":0}\n'
        '{"cmd":"DEL","key":"gone"}\n'
        '{"cmd":"EXPIRE","key":"foo","ttl":3600}')  # no final newline, as hand-written files often are
    e = Engine.open(tmp_path, AtlasConfig())
    assert e.execute([b"GET", b"foo"]) == b"bar"
    assert 3590 <= e.execute([b"TTL", b"foo"]) <= 3600
    assert 50 <= e.execute([b"TTL", b"tmp"]) <= 60
    assert e.execute([b"EXISTS", b"gone"]) == 0
    e.execute([b"SET", b"new", b"1"])
    e.close()
    e = Engine.open(tmp_path, AtlasConfig())
    assert e.execute([b"GET", b"new"]) == b"1" and e.execute([b"GET", b"foo"]) == b"bar"
    e.close()


def test_torn_tail_is_cut_with_a_warning(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig())
    e.execute([b"SET", b"a", b"1"])
    e.close()
    good = (tmp_path / "appendonly.aof").stat().st_size
    with open(tmp_path / "appendonly.aof", "ab") as f:
        f.write(b'{"seq":2,"cmd":"SET","key":"b","val')
    with pytest.raises(CorruptFileError, match="aof_truncate_torn_tail is off"):
        Engine.open(tmp_path, AtlasConfig(aof_truncate_torn_tail=False))
    e = Engine.open(tmp_path, AtlasConfig())
    assert e.recovery is not None and e.recovery.truncated_bytes > 0
    assert (tmp_path / "appendonly.aof").stat().st_size == good
    assert e.execute([b"GET", b"a"]) == b"1"
    e.close()


def test_mid_file_damage_stops_startup_naming_file_offset_and_fix(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig())
    for i in range(3):
        e.execute([b"SET", b"k%d" % i, b"value"])
    e.close()
    path = tmp_path / "appendonly.aof"
    blob = bytearray(path.read_bytes())
    second = blob.index(b"\n") + 1
    blob[second + 30] ^= 0x01  # a bit flip inside the second record
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError) as info:
        Engine.open(tmp_path, AtlasConfig())
    msg = str(info.value)
    assert str(path) in msg and f"byte {second}" in msg and "helios aof-check --fix" in msg
    assert "1 valid record(s) follow" in msg
    assert path.read_bytes() == bytes(blob), "a refused start-up must not touch the file"


def test_snapshot_rotates_aof_and_recovery_uses_both(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig(save=()))
    for i in range(100):
        e.execute([b"SET", b"k%d" % i, b"v%d" % i])
    info = e.snapshot_sync()
    assert info.seq == 100 and info.keys == 100
    assert (tmp_path / "appendonly.aof").stat().st_size == 0  # rotated away and pruned
    assert not e.dir.rotated_parts()
    e.execute([b"DEL", b"k1"])
    e.execute([b"SET", b"k2", b"changed"])
    before = state(e)
    e.close()
    e = Engine.open(tmp_path, AtlasConfig())
    assert e.recovery is not None and e.recovery.snapshot_seq == 100 and e.recovery.records_replayed == 2
    assert state(e) == before
    e.close()


def test_damaged_snapshot_stops_startup(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig(save=()))
    e.execute([b"SET", b"a", b"1"])
    e.snapshot_sync()
    e.close()
    snap = tmp_path / "dump.rdb"
    snap.write_bytes(snap.read_bytes()[:-3])
    with pytest.raises(CorruptFileError, match="dump.rdb is damaged"):
        Engine.open(tmp_path, AtlasConfig())


def test_active_expiry_bounds_memory_without_access(tmp_path: Path) -> None:
    now = [1_000_000]
    e = Engine.open(tmp_path, AtlasConfig(active_expire_budget=1000), clock=lambda: now[0])
    for i in range(5000):
        e.execute([b"SET", b"k%d" % i, b"v", b"PX", b"%d" % (1000 + i)])
    e.execute([b"SET", b"keep", b"v"])
    now[0] += 10_000
    for _ in range(5):
        e._active_expire()
    assert list(e.ks.data) == [b"keep"]
    e.flush_sync()
    assert aof_lines(tmp_path)[-1].startswith(b'{"seq":')  # expiries are logged as DELs
    e.close()
    e = Engine.open(tmp_path, AtlasConfig(), clock=lambda: now[0])
    assert list(e.ks.data) == [b"keep"]
    e.close()


def test_automatic_snapshot_by_save_rule(tmp_path: Path) -> None:
    async def main() -> None:
        now = [10_000_000]
        e = Engine.open(tmp_path, AtlasConfig(save=((60, 100),), snapshot_on_aof_bytes=0), clock=lambda: now[0])
        e.attach()
        for i in range(150):
            e.execute([b"SET", b"k%d" % i, b"v"])
        await e.wait_durable()
        now[0] += 30_000
        e._cron()
        assert not e.snapshot_in_progress, "60 s have not passed yet"
        now[0] += 31_000
        e._cron()
        assert e.snapshot_in_progress
        while e.snapshot_in_progress:
            await asyncio.sleep(0.01)
        assert (tmp_path / "dump.rdb").exists() and e.dirty == 0
        await e.aclose()

    asyncio.run(main())


def test_value_over_limit_is_refused_and_nothing_logged(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig(max_value_bytes=100))
    with pytest.raises(CommandError, match="exceeds the maximum of 100 bytes"):
        e.execute([b"SET", b"a", b"x" * 101])
    e.execute([b"SET", b"a", b"x" * 60])
    with pytest.raises(CommandError, match="exceeds the maximum"):
        e.execute([b"APPEND", b"a", b"y" * 60])
    assert e.execute([b"STRLEN", b"a"]) == 60
    e.flush_sync()
    assert len(aof_lines(tmp_path)) == 1
    e.close()


def test_aof_file_seam_defaults_are_real_os_calls() -> None:
    assert AofFile.os_write is os.write and AofFile.os_fsync is os.fsync


def test_a_reply_waits_only_for_records_it_may_reveal(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
    e.execute([b"SET", b"a", b"1"])
    e.execute([b"SET", b"gone", b"x"])
    e.flush_sync()
    e.execute([b"SET", b"a", b"2"])           # pending, seq 3
    assert e.pending_seq() == 3               # a write waits for itself
    e.execute([b"GET", b"b"])
    assert e.pending_seq() == 0               # another key: nothing to hide
    e.execute([b"GET", b"a"])
    assert e.pending_seq() == 3               # saw the pending value
    e.execute([b"DEL", b"gone"])              # pending, seq 4
    e.execute([b"EXISTS", b"gone"])
    assert e.pending_seq() == 4               # absence reveals the pending DEL too
    e.execute([b"DBSIZE"])
    assert e.pending_seq() == 4               # keyless commands wait for everything
    with pytest.raises(CommandError):
        e.execute([b"ZADD", b"a", b"1", b"m"])  # WRONGTYPE reveals the pending SET's type
    assert e.pending_seq() == 3
    e.flush_sync()
    e.execute([b"GET", b"a"])
    assert e.pending_seq() == 0
    e.execute([b"FLUSHALL"])                  # pending, seq 5
    e.execute([b"GET", b"never-written"])
    assert e.pending_seq() == 5               # a pending FLUSHALL touches every key
    e.close()


def test_always_syncs_unwaited_records_lazily_but_never_hides_them(tmp_path: Path) -> None:
    """Under `always`, records nobody waits for (durable=False writes) are written at once but
    fsynced within a second; a reply that may reveal one, or any durable write, syncs them first."""

    async def main() -> None:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
        e.attach()
        e.execute([b"SET", b"bucket", b"1"])          # nobody waits (a rate-limit bucket)
        await asyncio.sleep(0)                        # the flush pass runs
        await asyncio.sleep(0)
        assert e.written_seq == 1 and e.synced_seq == 0 and aof_lines(tmp_path)
        fsyncs = e.stats.fsync_count
        e.execute([b"GET", b"bucket"])                # a read that saw it must wait for the fsync
        await e.wait_durable(e.pending_seq())
        assert e.synced_seq == 1 and e.stats.fsync_count == fsyncs + 1

        e.execute([b"SET", b"bucket", b"2"])          # lazy again ...
        await asyncio.sleep(0)
        e.execute([b"SET", b"other", b"x"])           # ... until a durable write: one fsync covers both
        await e.wait_durable(e.pending_seq())
        assert e.synced_seq == 3

        e.execute([b"SET", b"bucket", b"3"])          # with no one ever waiting: synced within ~1 s
        for _ in range(300):
            if e.synced_seq == 4:
                break
            await asyncio.sleep(0.01)
        assert e.synced_seq == 4
        await e.aclose()

    asyncio.run(main())


def test_always_failed_lazy_fsync_undoes_the_unwaited_records(tmp_path: Path) -> None:
    async def main() -> None:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
        e.attach()
        e.execute([b"SET", b"a", b"durable"])
        await e.wait_durable(e.pending_seq())
        size = (tmp_path / "appendonly.aof").stat().st_size

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        e.execute([b"SET", b"bucket", b"1"])          # written lazily, not synced
        await asyncio.sleep(0)
        e.aof.os_fsync = eio  # type: ignore[union-attr]
        e.execute([b"SET", b"b", b"2"])               # its fsync fails: both are undone
        with pytest.raises(Exception, match="MISCONF"):
            await e.wait_durable(e.pending_seq())
        assert e.execute([b"GET", b"bucket"]) is None and e.execute([b"GET", b"b"]) is None
        assert e.execute([b"GET", b"a"]) == b"durable"
        assert (tmp_path / "appendonly.aof").stat().st_size == size and e.seq == 1
        del e.aof.os_fsync  # type: ignore[union-attr]
        e._probe_disk()
        await e.aclose()

    asyncio.run(main())


def test_xgroup_a_container_whose_subcommands_write_waits_for_its_record(tmp_path: Path) -> None:
    # COMMAND reports no flags for XGROUP (a container, as Redis 7.0), yet XGROUP CREATE writes: its
    # reply must wait for its own record, as any write's (it was released with the record before).
    e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
    e.execute([b"XADD", b"s", b"1-1", b"f", b"v"])
    e.flush_sync()
    assert e.execute([b"XGROUP", b"CREATE", b"s", b"g", b"0"]) == "OK"
    assert e.pending_seq() == 2
    e.flush_sync()
    e.execute([b"XGROUP", b"CREATECONSUMER", b"s", b"g", b"alice"])
    assert e.pending_seq() == 3
    e.close()


def test_a_command_not_flagged_as_a_write_that_writes_still_waits_for_its_record(tmp_path: Path) -> None:
    # The engine's net under the table: only lazy-expiry DELs may ride a read's reply unawaited.
    from helios_core.atlas.commands.table import TABLE, Command, Ctx

    def sneaky(ctx: Ctx, args: list[bytes]) -> str:
        ctx.emit(("SET", args[0], args[1], None))
        return "OK"

    TABLE.register(Command("test-sneaky-write", 3, frozenset(["readonly"]), sneaky))
    try:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always"))
        e.execute([b"SET", b"a", b"1"])
        e.flush_sync()
        e.execute([b"test-sneaky-write", b"b", b"2"])
        assert e.pending_seq() == 2
        e.flush_sync()
        e.execute([b"GET", b"b"])
        assert e.pending_seq() == 0
        e.close()
    finally:
        del TABLE.commands[b"test-sneaky-write"]
