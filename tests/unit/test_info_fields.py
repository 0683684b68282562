"""INFO's fields that follow the engine's own state, in process: the active-expiry cycle's
counts, the snapshot (AOF rewrite) failures in a row, the base the AOF replays onto, the keys the
last start loaded, the script caches' bytes.  (Field names and order against a real Redis 7.0:
tests/integration/test_differential_introspection.py.)
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from helios_core.atlas.commands.server import info_text
from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs
from helios_core.config import AtlasConfig
from helios_core.errors import SnapshotError

T0 = 1_800_000_000_000


def info(e: Engine, section: str) -> dict[str, str]:
    text = info_text(e, None, [section])
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_active_expiry_counts_stale_keys_capped_cycles_and_its_time(tmp_path: Path) -> None:
    clock = [T0]
    e = Engine.open(tmp_path, AtlasConfig(save=(), active_expire_budget=10), clock=lambda: clock[0])
    try:
        for i in range(25):
            e.execute([b"SET", b"t%d" % i, b"v", b"PX", b"10"])
        for i in range(75):
            e.execute([b"SET", b"keep%d" % i, b"v", b"EX", b"1000"])
        fields = info(e, "stats")
        assert (fields["expired_stale_perc"], fields["expired_time_cap_reached_count"]) == ("0.00", "0")
        clock[0] += 100
        e._active_expire()  # 25 of 100 keys with a TTL are due; the budget takes 10
        fields = info(e, "stats")
        assert fields["expired_keys"] == "10"
        assert fields["expired_time_cap_reached_count"] == "1"
        assert fields["expired_stale_perc"] == f"{10 / 100 * 0.05 * 100:.2f}"
        e._active_expire()
        e._active_expire()  # 5 left: under the budget
        fields = info(e, "stats")
        assert (fields["expired_keys"], fields["expired_time_cap_reached_count"]) == ("25", "2")
        assert float(fields["expired_stale_perc"]) > 0
        assert int(fields["expire_cycle_cpu_milliseconds"]) >= 0
        assert e.stats.expire_cycle_seconds > 0
        e.stats.reset_expire_cycle()
        fields = info(e, "stats")
        assert (fields["expired_stale_perc"], fields["expired_time_cap_reached_count"],
                fields["expire_cycle_cpu_milliseconds"]) == ("0.00", "0", "0")
    finally:
        e.close()


def test_consecutive_rewrite_failures_count_until_one_works(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0, fs=fs)
        e.attach()
        e.execute([b"SET", b"a", b"1"])
        await e.wait_durable()
        fs.fail("fork", err=errno.ENOMEM, count=2)
        for expected in ("1", "2"):
            with pytest.raises(SnapshotError):
                await e.bgsave()
            assert info(e, "persistence")["aof_rewrites_consecutive_failures"] == expected
        await e.bgsave()
        fields = info(e, "persistence")
        assert fields["aof_rewrites_consecutive_failures"] == "0"
        assert int(fields["aof_base_size"]) == (tmp_path / "dump.rdb").stat().st_size > 0
        assert fields["aof_pending_rewrite"] == fields["aof_pending_bio_fsync"] == "0"
        assert fields["aof_last_cow_size"] == fields["rdb_last_cow_size"]
        stats = info(e, "stats")  # (the failed forks are not counted, as in Redis)
        assert stats["total_forks"] == "1" and int(stats["latest_fork_usec"]) > 0
        e.execute([b"CONFIG", b"RESETSTAT"])
        stats = info(e, "stats")
        assert stats["total_forks"] == stats["latest_fork_usec"] == "0"
        await e.aclose()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_keys_loaded_at_startup_are_the_snapshots(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig(save=()))
    assert info(e, "persistence")["rdb_last_load_keys_loaded"] == "0"
    for i in range(7):
        e.execute([b"SET", b"k%d" % i, b"v"])
    e.snapshot_sync()
    e.execute([b"SET", b"later", b"v"])  # replayed from the AOF, not loaded from the snapshot
    e.close()
    e = Engine.open(tmp_path, AtlasConfig(save=()))
    try:
        fields = info(e, "persistence")
        assert fields["rdb_last_load_keys_loaded"] == "7"
        assert int(fields["aof_base_size"]) == (tmp_path / "dump.rdb").stat().st_size
        assert int(info(e, "memory")["used_memory_startup"]) > 0
    finally:
        e.close()


def test_script_cache_bytes_follow_load_and_flush(tmp_path: Path) -> None:
    e = Engine.open(tmp_path, AtlasConfig(save=()))
    try:
        fields = info(e, "memory")
        assert (fields["used_memory_lua"], fields["used_memory_scripts_eval"]) == ("0", "0")  # no Lua state yet
        body = b"return 'abc'"
        sha = e.execute([b"SCRIPT", b"LOAD", body])
        fields = info(e, "memory")
        assert int(fields["used_memory_scripts_eval"]) == len(body) + len(sha)
        assert int(fields["used_memory_lua"]) > 0
        assert fields["used_memory_vm_total"] == fields["used_memory_vm_eval"] == fields["used_memory_lua"]
        e.execute([b"SCRIPT", b"LOAD", body])  # cached once
        assert int(info(e, "memory")["used_memory_scripts_eval"]) == len(body) + len(sha)
        e.execute([b"SCRIPT", b"FLUSH"])
        assert info(e, "memory")["used_memory_scripts_eval"] == "0"
    finally:
        e.close()
