"""The AOF writer's failure paths and promises, driven through the file-system seam (FaultyFs).

Seq reuse after a failed truncate, everysec's bounded loss when fsync is slow, lost pages
after an fsync error, `appendfsync no` on rotation and close, waiters released in seq order,
lazy-expiry DELs that cost nobody a wait, owner-only data files.
"""

from __future__ import annotations

import asyncio
import errno
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs
from helios_core.config import AtlasConfig
from helios_core.errors import AofWriteError, CommandError

T0 = 1_800_000_000_000


def open_engine(d: Path, policy: str, fs: FaultyFs, **kw: object) -> Engine:
    return Engine.open(d, AtlasConfig(appendfsync=policy, save=(), **kw), clock=lambda: T0, fs=fs)  # type: ignore[arg-type]


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), 20)

    asyncio.run(main())


async def until(cond: Callable[[], bool]) -> None:
    """Let the loop (and the worker threads it waits on) run until cond holds."""
    while not cond():
        await asyncio.sleep(0.001)


async def put(e: Engine, key: bytes, value: bytes) -> None:
    e.execute([b"SET", key, value])
    await e.wait_durable()


# -- item 3: a failed write followed by a failed truncate ------------------------------------


def test_failed_fsync_then_failed_truncate_never_reuses_a_seq(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "always", fs)
        e.attach()
        await put(e, b"a", b"1")
        fs.fail("fsync")
        fs.fail("ftruncate", count=3)  # the cut back fails too, and keeps failing for a while
        with pytest.raises(AofWriteError, match="MISCONF"):
            await put(e, b"b", b"2")
        assert e.execute([b"GET", b"b"]) is None
        # The disk takes writes again but the cut still fails: the engine must stay read-only.
        assert e._probe_disk() and e.aof_error is not None
        with pytest.raises(CommandError, match="MISCONF"):
            e.execute([b"SET", b"c", b"3"])
        fs.heal()
        assert not e._probe_disk(), "the probe cuts the file back first, then accepts writes"
        await put(e, b"c", b"3")
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig(save=()))  # every restart loads
        assert (e2.execute([b"GET", b"a"]), e2.execute([b"GET", b"b"]), e2.execute([b"GET", b"c"])) == \
            (b"1", None, b"3")
        e2.close()

    run(body)


def test_partial_write_then_failed_truncate_leaves_a_loadable_file(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "always", fs)
        e.attach()
        await put(e, b"a", b"1")
        fs.fail("write", partial=7, err=errno.ENOSPC)
        fs.fail("ftruncate")
        with pytest.raises(AofWriteError, match="No space left"):
            await put(e, b"b", b"2")
        fs.heal()
        assert not e._probe_disk()
        await put(e, b"c", b"3")
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig(save=()))
        assert e2.execute([b"MGET", b"a", b"b", b"c"]) == [b"1", None, b"3"]
        e2.close()

    run(body)


# -- item 7: everysec, slow and failing fsyncs ------------------------------------------------


def test_everysec_postpones_writes_behind_an_fsync_older_than_2s(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "everysec", fs)
        e.attach()
        now = [100.0]
        e.writer.mono = lambda: now[0]
        await put(e, b"a", b"1")                 # written (everysec's promise)
        gate = fs.block("fsync")
        assert e.writer._everysec_tick()        # the background fsync starts and hangs
        await until(lambda: fs.calls["fsync"] == 1)
        await put(e, b"b", b"2")                 # under 2 s: writes go on
        now[0] += 2.5
        e.execute([b"SET", b"c", b"3"])
        waiting = asyncio.ensure_future(e.wait_durable())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done(), "a write was acknowledged behind an fsync running for 2.5 s"
        assert e.written_seq == 2 and e.stats.delayed_fsync == 1
        gate.set()
        await waiting                            # released once the slow fsync finishes
        assert e.written_seq == 3
        await e.aclose()

    run(body)


def test_everysec_fsync_error_treats_written_pages_as_lost(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "everysec", fs)
        e.attach()
        await put(e, b"a", b"1")  # acknowledged: written, not fsynced yet
        fs.fail("fsync")
        assert e.writer._everysec_tick()
        await until(lambda: e.aof_error is not None)
        with pytest.raises(CommandError, match="MISCONF.*snapshot"):
            e.execute([b"SET", b"b", b"2"])
        fs.heal()
        # The disk writes again, but the pages of "a" may be gone: a plain probe is not enough;
        # the engine rewrites everything from memory (a snapshot) before it accepts writes.
        e._probe_disk()
        await until(lambda: e.aof_error is None)
        assert e.stats.snapshots == 1
        await put(e, b"b", b"2")
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig(save=()))
        assert e2.execute([b"MGET", b"a", b"b"]) == [b"1", b"2"]
        e2.close()

    run(body)


# -- item 8: appendfsync no on rotation and close ---------------------------------------------


def test_no_policy_fsyncs_a_part_before_rotating_it(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "no", fs)
        e.attach()
        await put(e, b"a", b"1")
        assert fs.calls["fsync"] == 0
        fs.fail("fsync")  # the part cannot be made durable: it must not be rotated and relied on
        with pytest.raises(Exception, match="snapshot.*failed"):
            await e.bgsave()
        assert fs.calls["fsync"] == 1 and e.dir.rotated_parts() == []
        await e.aclose()

    run(body)


def test_no_policy_close_fsyncs(tmp_path: Path) -> None:
    fs = FaultyFs()
    e = open_engine(tmp_path, "no", fs)
    e.execute([b"SET", b"a", b"1"])
    e.flush_sync()
    assert fs.calls["fsync"] == 0
    e.close()
    assert fs.calls["fsync"] == 1


# -- item 9: waiters in seq order; lazy expiry ------------------------------------------------


def test_a_waiter_behind_a_slower_one_is_released_in_seq_order(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "always", fs)
        e.attach()
        gate = fs.block("fsync")
        e.execute([b"SET", b"a", b"1"])
        await until(lambda: fs.calls["fsync"] == 1)  # seq 1 is being fsynced
        e.execute([b"SET", b"b", b"2"])               # seq 2 waits for the next round
        released: list[tuple[str, int]] = []
        e.add_waiter(2, lambda err: released.append(("slow", e.synced_seq)))
        e.add_waiter(1, lambda err: released.append(("fast", e.synced_seq)))
        gate.set()
        await until(lambda: len(released) == 2)
        assert released[0] == ("fast", 1), f"seq 1 waited for seq 2's fsync: {released}"
        await e.aclose()

    run(body)


def test_lazy_expiry_del_is_logged_but_nobody_waits_for_it(tmp_path: Path) -> None:
    now = [T0]
    fs = FaultyFs()
    e = Engine.open(tmp_path, AtlasConfig(appendfsync="always", save=()), clock=lambda: now[0], fs=fs)
    e.execute([b"SET", b"k", b"v", b"PX", b"100"])
    e.flush_sync()
    now[0] += 1000
    assert e.execute([b"GET", b"k"]) is None
    assert e.seq == 2                      # the DEL is logged (replay and snapshots agree)
    assert e.pending_seq() == 0, "a lazy-expiry DEL reveals nothing: the reply need not wait for it"
    assert e.execute([b"DBSIZE"]) == 0 and e.pending_seq() == 0
    e.close()


# -- item 1 (issue 10): owner-only data files -------------------------------------------------


def test_data_files_are_owner_only(tmp_path: Path) -> None:
    async def body() -> None:
        e = open_engine(tmp_path, "always", FaultyFs())
        e.attach()
        await put(e, b"a", b"1")
        await e.bgsave()
        await put(e, b"b", b"2")
        await e.aclose()

    run(body)
    files = [p for p in tmp_path.iterdir() if p.is_file() and not p.name.endswith(".lock")]
    assert {"appendonly.aof", "dump.rdb"} <= {p.name for p in files}, files
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p.name} is {oct(mode)}"


def test_switching_to_always_never_undoes_an_acknowledged_write(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = open_engine(tmp_path, "everysec", fs)
        e.attach()
        await put(e, b"a", b"1")             # acknowledged under everysec
        fs.fail("fsync")
        e.set_policy("always")               # CONFIG SET appendfsync always: syncs what was written (off the loop)
        await until(lambda: e.aof_error is not None)
        assert e.execute([b"GET", b"a"]) == b"1", "an acknowledged write was undone"
        with pytest.raises(CommandError, match="MISCONF"):
            e.execute([b"SET", b"b", b"2"])
        fs.heal()
        e._probe_disk()
        await until(lambda: e.aof_error is None)  # rewritten from memory by a snapshot
        await put(e, b"b", b"2")
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig(save=()))  # (a reused seq would stop this start)
        assert e2.execute([b"MGET", b"a", b"b"]) == [b"1", b"2"]
        e2.close()

    run(body)
