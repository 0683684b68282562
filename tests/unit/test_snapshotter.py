"""Background snapshots when things fail: fork ENOMEM, a rename error, a child that holds
sockets, a failed waitpid; the back-off of automatic snapshots; INFO's snapshot fields.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from helios_core.atlas.commands.server import info_text
from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs
from helios_core.config import AtlasConfig
from helios_core.errors import SnapshotError

T0 = 1_800_000_000_000


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), 20)

    asyncio.run(main())


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def put(e: Engine, key: bytes, value: bytes) -> None:
    e.execute([b"SET", key, value])
    await e.wait_durable()


def info(e: Engine) -> dict[str, str]:
    text = info_text(e, None, ["persistence"])
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_fork_enomem_fails_every_waiter_and_leaks_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0, fs=fs)
        e.attach()
        await put(e, b"a", b"1")
        before = fds()
        fs.fail("fork", err=errno.ENOMEM, count=2)
        a, b = e.bgsave(), e.bgsave()  # BGSAVE and SAVE (or the admin endpoint) waiting together
        for fut in (a, b):
            with pytest.raises(SnapshotError, match="cannot fork.*Cannot allocate memory"):
                await fut
        assert not e.snapshot_in_progress
        with pytest.raises(SnapshotError):
            await e.bgsave()
        assert fds() == before, "a failed start leaked descriptors"
        assert e.dir.rotated_parts() == [], "a failed start created an AOF part"
        fields = info(e)
        assert fields["rdb_last_bgsave_status"] == "err"
        assert "Cannot allocate memory" in fields["rdb_last_bgsave_error"]
        info_ok = await e.bgsave()  # memory is back: the next one works
        assert info_ok.seq == 1 and info(e)["rdb_last_bgsave_status"] == "ok"
        await e.aclose()

    run(body)


def test_rename_error_in_the_child_fails_the_waiter_with_the_reason(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0, fs=fs)
        e.attach()
        await put(e, b"a", b"1")
        fs.fail("rename", err=errno.EACCES, count=2)  # the rotation's, and the child's own
        with pytest.raises(SnapshotError, match="Permission denied"):
            await e.bgsave()
        assert e.stats.last_snapshot_status == "err"
        fs.heal()
        assert (await e.bgsave()).seq == 1
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig(save=()))
        assert e2.execute([b"GET", b"a"]) == b"1"
        e2.close()

    run(body)


def test_automatic_snapshots_back_off_5s_after_a_failure(tmp_path: Path) -> None:
    async def body() -> None:
        now = [T0]
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(save=((1, 1),)), clock=lambda: now[0], fs=fs)
        e.attach()
        await put(e, b"a", b"1")
        fs.fail("fork", err=errno.ENOMEM, count=100)
        now[0] += 2000  # one change, and more than a second since the last snapshot: due
        e._cron()
        await asyncio.sleep(0.05)  # the pre-fork sync runs in a worker thread
        while e.snapshot_in_progress:
            await asyncio.sleep(0.005)
        assert fs.calls["fork"] == 1
        now[0] += 1000
        e._cron()
        assert not e.snapshot_in_progress and fs.calls["fork"] == 1, "retried before the 5 s back-off"
        now[0] += 4500
        e._cron()
        while e.snapshot_in_progress:
            await asyncio.sleep(0.005)
        assert fs.calls["fork"] == 2
        assert e.dir.rotated_parts() == []
        await e.aclose()

    run(body)


def _fd_links(pid: int) -> set[str]:
    """What the process's open descriptors point at; one it closes while being listed is skipped."""
    links = set()
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{n}"))
        except FileNotFoundError:  # closed between the listing and the readlink (the child closes what it inherited)
            pass
    return links


def test_child_holds_no_inherited_socket(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0, fs=fs)
        e.attach()
        await put(e, b"a", b"1")
        client, peer = socket.socketpair()  # a client connection the parent serves
        gate = fs.block("fsync", after=1)   # the parent's pre-fork fsync passes; the child's own hangs
        fut = e.bgsave()
        while e.snapshots.child is None:
            await asyncio.sleep(0.002)
        pid = e.snapshots.child
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while True:  # wait until the child has started its image (its temp file is open)
                links = _fd_links(pid)
                if any(".tmp-" in link for link in links) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.005)
            inherited = {n for n in os.listdir(f"/proc/{pid}/fd") if int(n) > 2}
            assert str(client.fileno()) not in inherited and str(peer.fileno()) not in inherited
            assert len(inherited) <= 2, f"the child holds {sorted(links)}"
        finally:
            os.kill(pid, signal.SIGKILL)
            gate.set()
        with pytest.raises(SnapshotError):
            await fut
        client.close()
        peer.close()
        await e.aclose()

    run(body)


def test_waitpid_failure_cannot_block_shutdown(tmp_path: Path) -> None:
    async def body() -> None:
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0, fs=fs)
        e.attach()
        await put(e, b"a", b"1")
        fs.fail("waitpid", err=errno.ECHILD, count=2)
        with pytest.raises(SnapshotError, match="waiting for the snapshot child failed"):
            await e.bgsave()
        await asyncio.wait_for(e.aclose(), 5)

    run(body)


def test_info_reports_the_childs_copy_on_write_size(tmp_path: Path) -> None:
    async def body() -> None:
        e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0)
        e.attach()
        for i in range(200):
            e.execute([b"SET", b"k%d" % i, b"v" * 100])
        await e.wait_durable()
        await e.bgsave()
        fields = info(e)
        assert int(fields["rdb_last_cow_size"]) > 0
        assert fields["rdb_last_bgsave_error"] == ""
        assert fields["aof_delayed_fsync"] == "0"
        await e.aclose()

    run(body)


def test_admin_snapshot_endpoint_answers_the_failure_as_json(tmp_path: Path) -> None:
    from tests.unit.test_gateway_harness import Api, run_gateway

    async def body(api: Api) -> None:
        admin = await api.admin_token()
        fs = FaultyFs()
        fs.fail("fork", err=errno.ENOMEM)
        api.store.engine.snapshots.fs = fs
        r = await api.call("POST", "/admin/snapshot", token=admin)
        assert r.code == 503
        error = r.json()["error"]
        assert error["code"] == "snapshot_failed" and "Cannot allocate memory" in error["message"]
        assert (await api.call("POST", "/admin/snapshot", token=admin)).code == 200

    run_gateway(tmp_path, body)


def test_a_snapshot_never_keeps_a_write_the_aof_gave_up(tmp_path: Path) -> None:
    """Records appended during the pre-fork fsync are in the image; if their own fsync then
    fails they are undone (and their seqs reused): the image must not be published."""
    from helios_core.errors import AofWriteError

    async def body() -> None:
        fs = FaultyFs()
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="always", save=()), clock=lambda: T0, fs=fs)
        e.attach()
        await put(e, b"a", b"1")
        gate = fs.block("fsync")                # the pre-fork fsync hangs a moment
        fs.fail("fsync", parent_only=True)      # then x's own fsync fails (not the child's)
        snap = e.bgsave()
        while fs.calls["fsync"] < 2:            # (a's was the first)
            await asyncio.sleep(0.001)
        e.execute([b"SET", b"x", b"undone"])   # appended while the pre-fork fsync runs
        x = e.wait_durable()
        gate.set()
        with pytest.raises(AofWriteError):
            await x
        with pytest.raises(SnapshotError):
            await snap
        fs.heal()
        e._probe_disk()
        await put(e, b"b", b"2")                # reuses x's seq
        await e.aclose()
        e2 = Engine.open(tmp_path, AtlasConfig(save=()))
        assert e2.execute([b"MGET", b"a", b"x", b"b"]) == [b"1", None, b"2"]
        e2.close()

    run(body)


def test_snapshot_sync_failure_is_a_clear_error_and_keeps_the_aof(tmp_path: Path) -> None:
    """What `helios snapshot --data` (no daemon) runs: a rename error names the cause and what to do."""
    fs = FaultyFs()
    e = Engine.open(tmp_path, AtlasConfig(save=()), clock=lambda: T0, fs=fs)
    e.execute([b"SET", b"a", b"1"])
    fs.fail("rename", err=errno.EROFS)
    with pytest.raises(SnapshotError, match="Read-only file system.*run helios snapshot again"):
        e.snapshot_sync()
    assert e.stats.last_snapshot_status == "err"
    e.close()
    e2 = Engine.open(tmp_path, AtlasConfig(save=()))
    assert e2.execute([b"GET", b"a"]) == b"1"
    e2.close()
