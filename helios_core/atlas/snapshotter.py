"""Background snapshots: waiters, the forked child, rotation, retry.

A snapshot runs in steps, none of which blocks the loop on the disk:

1. `AofWriter.sync_then`: the active AOF part is written and fsynced in a
   worker thread (whatever the policy: a part is fsynced before it is relied on).
2. Fork (with `gc.freeze()` first, so the child's reference counting does not
   copy every page).  The child closes every inherited descriptor but its
   status pipe, writes the image at `upto` (the engine's seq at the fork),
   measures its copy-on-write size (Private_Dirty) and reports both.
3. In the parent, `AofWriter.rotate_then` moves the part aside (worker thread).
4. When the child exits and every record the image holds is durable (some
   may have been appended during step 1), the parent renames the image into
   place, drops the AOF parts it covers, and every waiter gets the
   SnapshotInfo.  If those records are undone instead (a failed fsync), the
   image is deleted: a snapshot never keeps a write the AOF gave up.

Any step failing (fork ENOMEM, rename error, disk full, the child dying)
fails every waiter with a `SnapshotError` naming the cause, leaks nothing,
and creates no AOF part (the fork comes before the rotation); automatic
snapshots then wait RETRY_MS before trying again.  INFO and /metrics show
the last status and error.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helios_core.atlas.aof_writer import AofWriter
from helios_core.atlas.databases import Databases
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.fsops import Fs
from helios_core.atlas.snapshot import VERSION as SNAPSHOT_VERSION
from helios_core.atlas.snapshot import SnapshotInfo, publish, temp_path, write_snapshot
from helios_core.errors import HeliosError, SnapshotError
from helios_core.observability.logging import get_logger

__all__ = ["Snapshotter", "SnapshotStats", "RETRY_MS", "cow_bytes"]

log = get_logger("atlas.snapshot")

RETRY_MS = 5000  # after a failed automatic snapshot, as Redis (CONFIG_BGSAVE_RETRY_DELAY)



@dataclass
class SnapshotStats:
    snapshots: int = 0
    last_snapshot_seconds: float = 0.0
    last_snapshot_status: str = "ok"
    last_snapshot_error: str = ""
    last_snapshot_ms: int = 0
    last_cow_size: int = 0
    snapshot_failures: int = 0
    consecutive_failures: int = 0  # since the last snapshot that worked (INFO aof_rewrites_consecutive_failures)
    last_snapshot_bytes: int = 0   # the image the AOF parts replay onto (INFO aof_base_size)
    forks: int = 0                 # snapshot children forked (INFO total_forks; CONFIG RESETSTAT: 0)
    last_fork_usec: int = 0        # how long the last fork() held the loop (INFO latest_fork_usec)


def cow_bytes() -> int:
    """This process's private dirty memory (its copy-on-write cost in a forked child)."""
    try:
        with open("/proc/self/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Private_Dirty:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _die_with_parent(parent: int) -> None:
    """In a snapshot child: die when the parent does.

    An orphaned child finishing later would rename an old image over a newer
    snapshot that the next owner of the directory took meanwhile, after that
    owner had dropped the AOF parts the old image needs (Redis guards the same
    way with PR_SET_PDEATHSIG).
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: fall back to the check below only
        pass
    if os.getppid() != parent:
        os._exit(1)


class Snapshotter:
    def __init__(self, ddir: DataDir, dbs: Databases, writer: AofWriter, *, fs: Fs, clock: Callable[[], int],
                 stats: SnapshotStats) -> None:
        self.dir = ddir
        self.dbs = dbs
        self.ks = dbs[0]
        self.writer = writer
        self.fs = fs
        self.clock = clock
        self.stats = stats
        self.dirty = 0                   # changes since the last snapshot
        self.retry_at = 0                # automatic snapshots wait until then after a failure
        self.child: int | None = None
        self._pid = 0                    # the last child's pid (names its temp file)
        self._resets_at_fork = 0
        self._waiters: list[asyncio.Future] = []
        self._requested = False          # waiting for the pre-fork sync
        self._rotating = False
        self._finishing = False
        self._exit: tuple[int | None, str] | None = None  # the child's end, held while rotating
        self._abort: str = ""            # why the parent gave up on the running child
        self._pipe = -1
        self._rederive = False           # the image is a rewrite's (snapshot.write_snapshot)
        self._upto = 0
        self._meta = (0, 0)
        self._t0 = 0.0
        self._dirty_at_start = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_progress(self) -> bool:
        return self.child is not None or self._requested or self._finishing

    @property
    def pending(self) -> bool:
        """Requested, waiting for the pre-fork AOF sync before it forks (INFO aof_pending_rewrite)."""
        return self._requested

    @property
    def keys_at_fork(self) -> int:
        """The keys the running child writes (INFO current_save_keys_total); 0 when none runs."""
        return self._meta[1] if self.child is not None else 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- starting ---------------------------------------------------------------------

    def request(self, rederive: bool = False) -> asyncio.Future:
        """Start a snapshot (or join the one starting); the future gives SnapshotInfo or SnapshotError.

        rederive=True writes the image an AOF rewrite leaves (BGREWRITEAOF): a restart from it
        chooses each hash's, set's and zset's encoding by its content, as Redis loading its
        rewritten AOF does; otherwise the encodings their history gave are noted, as Redis's
        replay of its AOF's commands keeps them (a BGSAVE's RDB is not what Redis with
        appendonly yes restarts from).  Joining a snapshot not yet forked can ask for it."""
        assert self._loop is not None, "bgsave needs attach(); use snapshot_sync() without a loop"
        fut = self._loop.create_future()
        self._waiters.append(fut)
        if not self.in_progress:
            self._requested = True
            self._rederive = rederive
            self.writer.sync_then(self._synced)
        elif rederive and self._requested:
            self._rederive = True
        return fut

    def cron(self, seconds_since_last: float, due: bool) -> None:
        """Automatic snapshots: start one when due, not before RETRY_MS after a failure."""
        if self.in_progress or self.clock() < self.retry_at:
            return
        if self.writer.error is not None and not self.writer.lost:
            return
        if due:
            log.info("automatic snapshot", changes=self.dirty, seconds_since_last=round(seconds_since_last, 1))
            self.request().add_done_callback(_retrieve)

    def _synced(self, err: BaseException | None) -> None:
        self._requested = False
        if err is not None:
            self._failed(f"the AOF could not be synced before the snapshot: {err}")
            return
        upto = self.writer.seq  # memory at the fork: every record up to here, written or buffered
        self._upto, self._t0, self._dirty_at_start = upto, time.perf_counter(), self.dirty
        created_ms = self.clock()
        self._meta = (created_ms, self.dbs.keys())
        try:
            read_fd, write_fd = self.fs.pipe()
        except OSError as e:
            self._failed(f"cannot create the snapshot child's pipe: {e}")
            return
        parent = os.getpid()
        gc.freeze()  # move every object to the permanent generation: the child's gc touches none
        t_fork = time.perf_counter_ns()
        try:
            pid = self.fs.fork()
        except OSError as e:
            gc.unfreeze()
            os.close(read_fd)
            os.close(write_fd)
            self._failed(f"cannot fork the snapshot child: {e.strerror or e}")
            return
        if pid == 0:  # pragma: no cover - the child; it leaves through os._exit only
            self._child(parent, write_fd, upto, created_ms)
        self.stats.last_fork_usec = (time.perf_counter_ns() - t_fork) // 1000
        self.stats.forks += 1
        gc.unfreeze()
        os.close(write_fd)
        self.child, self._pid, self._pipe, self._abort, self._exit = pid, pid, read_fd, "", None
        self._resets_at_fork = self.writer.resets
        log.info("snapshot started", seq=upto, pid=pid, keys=self._meta[1])
        assert self._loop is not None
        fut = self._loop.run_in_executor(None, self.fs.waitpid, pid, 0)
        fut.add_done_callback(self._reaped)
        self._rotating = True
        self.writer.rotate_then(self._rotated)

    def _child(self, parent: int, write_fd: int, upto: int, created_ms: int) -> None:  # pragma: no cover
        code = 1
        try:
            gc.disable()
            # Hold nothing of the parent's: client and listener sockets, the AOF, the lock file.
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, 1 << 20)
            _die_with_parent(parent)
            os.nice(10)  # the loop (same cores) comes first; the image can take longer
            # (rename=False: the parent publishes it once `upto` is durable)
            size = write_snapshot(self.dir.snapshot_path, self.ks.data, self.ks.expires, upto, created_ms, self.fs,
                                  rename=False, functions=self.ks.functions, others=self._others(),
                                  rederive=self._rederive)
            os.write(write_fd, f"OK {cow_bytes()} {size}".encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            try:
                os.write(write_fd, f"ERR {type(e).__name__}: {e}".encode()[:4000])
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)

    def _others(self) -> list[tuple[int, dict, dict]]:
        """Every database but 0 that holds keys, for the image (all databases go in each snapshot,
        which is also what the AOF is rewritten to)."""
        return [(i, ks.data, ks.expires) for i, ks in self.dbs.non_empty() if i]

    def _rotated(self, err: BaseException | None) -> None:
        self._rotating = False
        if err is not None:
            self._abort = f"cannot rotate the AOF: {getattr(err, 'strerror', None) or err}"
            if self.child is not None and self._exit is None:
                try:
                    os.kill(self.child, signal.SIGKILL)
                except OSError:
                    pass
        if self._exit is not None:
            status, why = self._exit
            self._exit = None
            self._finished(status, why)

    # -- finishing --------------------------------------------------------------------

    def _reaped(self, fut: asyncio.Future) -> None:
        exc = fut.exception()
        status: int | None = None if exc is not None else fut.result()[1]
        why = ""
        try:
            why = os.read(self._pipe, 4096).decode(errors="replace")
        except OSError:
            pass
        finally:
            os.close(self._pipe)
            self._pipe = -1
        if exc is not None:
            why = f"waiting for the snapshot child failed: {exc}"
        if self._rotating:
            self._exit = (status, why)
        else:
            self._finished(status, why)

    def reap_sync(self) -> None:
        """On close: wait for a running child (never blocking on a failed waitpid)."""
        if self.child is None:
            return
        try:
            _, status = self.fs.waitpid(self.child, 0)
        except OSError:  # reaped by the waiting thread already, or waitpid failed
            status = 0 if self._exit is None else self._exit[0] or 0
        why = ""
        if self._pipe >= 0:
            try:
                why = os.read(self._pipe, 4096).decode(errors="replace")
            except OSError:
                pass
            os.close(self._pipe)
            self._pipe = -1
        self._loop = None  # closing: finish on this thread
        self._finished(status, why)

    def _finished(self, status: int | None, why: str) -> None:
        if self.child is None:
            return
        self.child = None
        seconds = time.perf_counter() - self._t0
        ok = status is not None and os.waitstatus_to_exitcode(status) == 0 and why.startswith("OK")
        if ok and not self._abort:
            parts = why.split()
            self.stats.last_cow_size = int(parts[1]) if len(parts) > 1 else 0
            upto, tmp = self._upto, temp_path(self.dir.snapshot_path, self._pid)
            if self._loop is None:  # closing: publish only what is durable already
                if upto <= self.writer.durable_seq:
                    self._dropped(upto, seconds, None, self._publish(tmp, upto))
                else:
                    tmp.unlink(missing_ok=True)
                return
            # The image holds every record up to `upto`, some perhaps not durable yet (appended
            # during the pre-fork fsync): publish it only once they are, or they could be undone
            # after a failed fsync while the snapshot keeps them (and their seqs get reused).
            if self.writer.resets != self._resets_at_fork:
                tmp.unlink(missing_ok=True)
                self._failed("the AOF failed while it was written (records it holds were undone)")
                return
            self._finishing = True
            loop = self._loop

            def durable(err: BaseException | None) -> None:
                if err is not None:
                    tmp.unlink(missing_ok=True)
                    self._finishing = False
                    self._failed(f"records it holds could not be made durable: {err}")
                    return
                fut = loop.run_in_executor(None, self._publish, tmp, upto)  # rename, unlink, fsync dir
                fut.add_done_callback(lambda f: self._dropped(upto, seconds, f.exception(),
                                                              None if f.exception() else f.result()))

            self.writer.add_waiter(upto, durable)
            return
        temp_path(self.dir.snapshot_path, self._pid).unlink(missing_ok=True)  # (a killed child's)
        reason = self._abort or (why[4:] if why.startswith("ERR ") else why) or (
            f"the snapshot child ended with status {status}" if status is not None else "the snapshot child vanished")
        self._failed(reason)

    def _dropped(self, upto: int, seconds: float, exc: BaseException | None, size: int | None) -> None:
        self._finishing = False
        if exc is not None or size is None:
            self._failed(f"the snapshot was written but the AOF parts it covers could not be dropped: {exc}")
            return
        info = self._record(upto, seconds, size)
        self.dirty -= min(self.dirty, self._dirty_at_start)
        self.writer.rewritten()
        self._resolve(None, info)

    def _failed(self, reason: str) -> None:
        self.stats.last_snapshot_status = "err"
        reason = " ".join(reason.split())  # one line: INFO shows it
        self.stats.last_snapshot_error = reason
        self.retry_at = self.clock() + RETRY_MS
        self.stats.snapshot_failures += 1
        self.stats.consecutive_failures += 1
        err = SnapshotError(f"snapshot of {self.dir.path} failed: {reason}. The AOF still holds every write; "
                            f"fix the cause (memory, disk space, permissions) and run BGSAVE or helios snapshot "
                            f"again (automatic snapshots retry every {RETRY_MS // 1000} s)")
        log.error("snapshot failed; AOF parts kept", error=reason)
        self._resolve(err)

    def _resolve(self, err: BaseException | None, info: SnapshotInfo | None = None) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(err) if err else fut.set_result(info)

    def _publish(self, tmp: Path, upto: int) -> int:
        try:
            publish(tmp, self.dir.snapshot_path, self.fs)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._drop_parts(upto)

    def _drop_parts(self, upto: int) -> int:
        """The snapshot at `upto` is durable: drop AOF parts it covers; returns the snapshot's size."""
        for part_seq, path in self.dir.rotated_parts():
            if part_seq <= upto:
                path.unlink(missing_ok=True)
        self.fs.fsync_dir(self.dir.path)
        return self.dir.snapshot_path.stat().st_size

    def _record(self, upto: int, seconds: float, size: int) -> SnapshotInfo:
        self.stats.snapshots += 1
        self.stats.last_snapshot_seconds = seconds
        self.stats.last_snapshot_status = "ok"
        self.stats.last_snapshot_error = ""
        self.stats.last_snapshot_ms = self.clock()
        self.stats.consecutive_failures = 0
        self.stats.last_snapshot_bytes = size
        # Built from what the engine knows: re-reading a large file here would stall the loop.
        created_ms, keys = self._meta
        info = SnapshotInfo(str(self.dir.snapshot_path), SNAPSHOT_VERSION, upto, created_ms, keys, size)
        log.info("snapshot done", seq=upto, keys=info.keys, bytes=info.bytes, seconds=round(seconds, 3),
                 cow_bytes=self.stats.last_cow_size)
        return info

    # -- without a loop ---------------------------------------------------------------

    def snapshot_sync(self, rederive: bool = False) -> SnapshotInfo:
        """Snapshot in this process and thread (no loop): for tools working on an unowned dir
        (rederive: as request's)."""
        w = self.writer
        try:
            w.flush_sync(fsync=True)
            upto = w.seq
            w.rotate_sync()
            t0 = time.perf_counter()
            self._meta = (self.clock(), self.dbs.keys())
            write_snapshot(self.dir.snapshot_path, self.ks.data, self.ks.expires, upto, self._meta[0], self.fs,
                           functions=self.ks.functions, others=self._others(), rederive=rederive)
            info = self._record(upto, time.perf_counter() - t0, self._drop_parts(upto))
        except (OSError, HeliosError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            self.stats.last_snapshot_status = "err"
            self.stats.last_snapshot_error = reason
            self.stats.snapshot_failures += 1
            self.stats.consecutive_failures += 1
            raise SnapshotError(f"snapshot of {self.dir.path} failed: {reason}. The AOF still holds every "
                                f"write; fix the cause (disk space, permissions) and run helios snapshot again") from e
        self.dirty = 0
        w.rewritten()
        return info


def _retrieve(fut: Any) -> None:
    """An automatic snapshot's future: its error is logged by the snapshotter already."""
    if not fut.cancelled():
        fut.exception()
