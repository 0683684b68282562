"""The AOF writer: append, group commit, the fsync policy, rotation, the error state.

Durable up to seq N
-------------------
Every committed record gets the next `seq` (1, 2, 3, ...).  `durable_seq` is
the one answer to "what may a client be told": the highest N such that the
records 1..N are on disk as the policy promises.

- ``always``:   fsynced (group commit: the records appended during one loop
  pass share one write + fsync, run in a worker thread).
- ``everysec``: written to the file; a background fsync runs once a second.
  If that fsync has been running for more than 2 s, further writes wait for it
  (counted as ``aof_delayed_fsync``), so a crash loses at most ~2 s.
- ``no``:       written to the file; the OS decides when it reaches the disk.
  A part is still fsynced before it is rotated away, and on close.

The reveal rule, for every way out of the process (a reply, an error turned
into an HTTP error, a read): before anything leaves, every record it observed
must be <= `durable_seq`.  The engine works out which seq an answer observed
(`Engine.pending_seq`); `add_waiter(seq, cb)` is the one way to wait for it.
atlasd's connections and the embedded `Store` both go through it.

Failures
--------
A failed write or fsync of records nobody was told about yet undoes them in
memory (`on_lost`), cuts the file back to the end of the last good record and
puts the writer in a read-only error state (writes answer ``MISCONF``, reads
go on).  The seqs of undone records are reused only once the file is provably
back at that point (the truncate succeeded and `fstat` agrees); if the cut
itself fails, the writer stays in the error state and the disk probe (once a
second, in a worker thread) cuts it first.  A failed fsync of records that were
already acknowledged (everysec, no) means their pages may be gone: the writer
stays read-only until a snapshot rewrites everything from memory
(`rewritten()`) or the process restarts.  Every fsync, the probe and the
rotation run off the event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from helios_core.atlas.aof import AofFile
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import encode_record
from helios_core.atlas.fsops import Fs
from helios_core.errors import AofWriteError
from helios_core.observability.logging import get_logger

__all__ = ["AofWriter", "WriterStats", "DELAYED_FSYNC_S"]

log = get_logger("atlas.aof")

DELAYED_FSYNC_S = 2.0  # everysec: a background fsync older than this holds further writes back
PROBE_BYTES = 4096

Waiter = Callable[[BaseException | None], None]


@dataclass
class WriterStats:
    aof_bytes_total: int = 0
    fsync_count: int = 0
    fsync_seconds_total: float = 0.0
    delayed_fsync: int = 0


@dataclass
class _Sync:
    """An fsync in a worker thread, covering the records up to `last`."""

    start: int          # file offset where its not-yet-acknowledged records begin
    last: int
    undo: list          # their undo log (empty: nothing to undo)
    acked: bool         # it covers records already released (everysec, no): a failure loses them
    then: list[Waiter] = field(default_factory=list)


class AofWriter:
    def __init__(self, ddir: DataDir, aof: AofFile, policy: str, *, fs: Fs, seq: int,
                 on_lost: Callable[[list], None], on_durable: Callable[[int], None],
                 stats: WriterStats | None = None, mono: Callable[[], float] = time.monotonic) -> None:
        self.dir = ddir
        self.aof = aof
        self._policy = policy
        self._written = self._synced = self.durable_seq = seq
        self.fs = fs
        self.stats = stats or WriterStats()
        self.mono = mono
        self.on_lost = on_lost            # undo these records in memory (newest last in the list)
        self.on_durable = on_durable      # durable_seq moved up to this
        self.on_rewrite_needed: Callable[[], None] | None = None  # lost pages: ask for a snapshot
        self.seq = self.written_seq = self.synced_seq = seq
        self.error: str | None = None
        self.lost = False                 # acknowledged pages may be gone: only a rewrite clears it
        self._acked_through = 0           # records up to here were acknowledged before an fsync
        self.resets = 0                   # times records were given up (their seqs reused afterwards)
        self._cut_to: int | None = None   # a failed truncate left bytes past this offset
        self._buffer = bytearray()
        self._undo: list = []
        self._unsynced: tuple[int, list] | None = None  # always: written, no fsync yet (nobody waits)
        self._inflight: _Sync | None = None
        self._busy = False                # a worker thread owns the file (fsync, rotation, probe)
        self._bg_fsync_t0: float | None = None  # everysec: when the running background fsync began
        self._postponed = False
        self._sync_requests: list[Waiter] = []
        # Waiters are released in seq order.  They nearly always come in that order (each reply
        # waits for the newest record), so a deque holds them; one for a lower seq than the
        # deque's last goes to the `_late` heap instead.
        self._waiters: deque[tuple[int, Waiter]] = deque()
        self._late: list[tuple[int, int, Waiter]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: ThreadPoolExecutor | None = None
        self._every: Callable[[float, Callable[[], Any]], None] | None = None
        self._flush_scheduled = False
        self._lazy_fsync: asyncio.TimerHandle | None = None
        self._closed = False

    # -- the one notion ---------------------------------------------------------------

    # `durable_seq`: records 1..durable_seq are on disk as the policy promises (see the module
    # docstring).  A plain attribute, since every reply reads it: the setters of the three things
    # it follows from keep it up to date.

    def _moved(self) -> None:
        self.durable_seq = self._synced if self._policy == "always" else self._written

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, policy: str) -> None:
        self._policy = policy
        self._moved()

    @property
    def written_seq(self) -> int:
        """Records 1..written_seq are written to the file (not necessarily fsynced)."""
        return self._written

    @written_seq.setter
    def written_seq(self, seq: int) -> None:
        self._written = seq
        self._moved()

    @property
    def synced_seq(self) -> int:
        """Records 1..synced_seq are fsynced."""
        return self._synced

    @synced_seq.setter
    def synced_seq(self, seq: int) -> None:
        self._synced = seq
        self._moved()

    @property
    def busy(self) -> bool:
        return self._busy or self._bg_fsync_t0 is not None

    @property
    def fsync_pending(self) -> int:
        """Fsyncs running in a worker thread now, 0 or 1 (INFO aof_pending_bio_fsync)."""
        return int(self._inflight is not None or self._bg_fsync_t0 is not None)

    @property
    def buffered(self) -> int:
        """Bytes of records appended in memory, not yet written to the file (INFO aof_buffer_length)."""
        return len(self._buffer)

    def misconf(self) -> str:
        if self.lost:
            return (f"MISCONF Errors writing to the AOF file: {self.error}. Acknowledged writes may not be on "
                    f"disk; writes are refused until a snapshot rewrites the data from memory (BGSAVE, tried "
                    f"automatically once the disk works) or atlasd restarts")
        return (f"MISCONF Errors writing to the AOF file: {self.error}. Writes are refused until the "
                f"disk recovers (reads still work); free space or fix the disk and they resume by themselves")

    # -- appending --------------------------------------------------------------------

    def append(self, effects: list[tuple], undo: list) -> int:
        """Buffer one record holding `effects` (applied already, `undo` undoes them); returns its seq."""
        self.seq += 1
        line = encode_record(self.seq, effects)
        self._buffer += line
        self._undo += undo
        self.stats.aof_bytes_total += len(line)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_pass)
        return self.seq

    def add_waiter(self, seq: int, callback: Waiter) -> None:
        """Call `callback(None)` once `seq` is durable, or `callback(error)` if it never will be."""
        if seq <= self.durable_seq:
            callback(None)
            return
        waiters = self._waiters
        if not waiters or seq >= waiters[-1][0]:
            waiters.append((seq, callback))
        else:
            heapq.heappush(self._late, (seq, next(self._order), callback))
        if (self._unsynced is not None and seq <= self.written_seq and not self.busy
                and not self._flush_scheduled and self._loop is not None):
            # A read saw a record written lazily (no fsync yet): sync it now.
            self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled and self._loop is not None and not self._closed:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_pass)

    def _release(self) -> None:
        rel = self.durable_seq
        waiters, late = self._waiters, self._late
        while waiters and waiters[0][0] <= rel:
            if late and late[0][0] < waiters[0][0]:
                heapq.heappop(late)[2](None)
            else:
                waiters.popleft()[1](None)
        while late and late[0][0] <= rel:
            heapq.heappop(late)[2](None)
        self.on_durable(rel)

    def _fail_waiters(self, err: BaseException) -> None:
        waiters, late = self._waiters, self._late
        self._waiters, self._late = deque(), []
        for _, cb in sorted([*waiters, *((seq, cb) for seq, _, cb in late)], key=lambda w: w[0]):
            cb(err)
        requests, self._sync_requests = self._sync_requests, []
        for cb in requests:
            cb(err)

    # -- the loop ---------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, io: ThreadPoolExecutor,
               every: Callable[[float, Callable[[], Any]], None]) -> None:
        self._loop, self._io, self._every = loop, io, every
        if self.policy == "everysec":
            every(1.0, self._everysec_tick)
        if self.error is not None:
            every(1.0, self._probe_tick)
        if self._buffer:
            self._schedule()

    def _flush_pass(self) -> None:
        self._flush_scheduled = False
        if self._closed or self._busy or self._loop is None:
            return  # the running job's completion starts the next pass
        if self._sync_requests:
            if self._bg_fsync_t0 is None:  # (else its completion comes back here)
                self._start_sync(forced=True)
            return
        if not self._buffer:
            if self._unsynced is not None and (self._waiters or self._late):
                self._start_sync()
            return
        if (self.policy == "everysec" and self._bg_fsync_t0 is not None
                and self.mono() - self._bg_fsync_t0 > DELAYED_FSYNC_S):
            if not self._postponed:  # the slow fsync's completion writes the buffer
                self._postponed = True
                self.stats.delayed_fsync += 1
                log.warning("AOF fsync is taking too long (disk busy?); writes wait for it",
                            seconds=round(self.mono() - self._bg_fsync_t0, 1))
            return
        if not self._write_buffer():
            return
        if self.policy != "always":
            self._release()
        elif self._waiters or self._late:
            self._start_sync()
        elif self._lazy_fsync is None:
            # Nobody waits for these records (durable=False writes): under `always` they still
            # reach the disk within a second, like everysec, instead of costing an fsync each.
            self._lazy_fsync = self._loop.call_later(1.0, self._lazy_fsync_due)

    def _write_buffer(self) -> bool:
        """Write the buffer (on the loop: a write to the page cache); False if it failed."""
        data, undo = self._buffer, self._undo
        self._buffer, self._undo = bytearray(), []
        start = self.aof.size
        if self._unsynced is not None:
            start, undo = self._unsynced[0], self._unsynced[1] + undo
            self._unsynced = None
        if data:
            try:
                self.aof.write(data)
            except OSError as e:
                self._fail(e, start, undo)
                return False
            self.written_seq = self.seq
        if self.policy == "always" and (data or undo or start < self.aof.size):
            self._unsynced = (start, undo)
        return True

    def _start_sync(self, forced: bool = False) -> None:
        """fsync in a worker thread what is written (forced: whatever the policy, for a rotation)."""
        assert self._loop is not None and self._io is not None
        if forced and not self._write_buffer():
            return
        if self._lazy_fsync is not None:
            self._lazy_fsync.cancel()
            self._lazy_fsync = None
        start, undo = self._unsynced if self._unsynced is not None else (self.aof.size, [])
        self._unsynced = None
        # Records written under everysec/no were acknowledged already: if their fsync fails they
        # cannot be undone (memory keeps them, the writer stays read-only until a rewrite).
        acked = self.policy != "always" or self.synced_seq < self._acked_through
        sync = _Sync(start, self.written_seq, undo, acked=acked)
        if forced:
            sync.then, self._sync_requests = self._sync_requests, []
        self._inflight = sync
        self._busy = True
        t0 = time.perf_counter()
        fut = self._loop.run_in_executor(self._io, self.aof.os_fsync, self.aof.fd)
        fut.add_done_callback(lambda f: self._sync_done(f, sync, t0))

    def _sync_done(self, fut: asyncio.Future, sync: _Sync, t0: float) -> None:
        self._inflight = None
        self._busy = False
        exc = fut.exception()
        if exc is not None:
            if sync.acked:
                self._lose(exc)
            else:
                self._fail(exc, sync.start, sync.undo)
            err = AofWriteError(self.misconf())
            for cb in sync.then:
                cb(err)
            return
        self.stats.fsync_count += 1
        self.stats.fsync_seconds_total += time.perf_counter() - t0
        self.synced_seq = max(self.synced_seq, sync.last)
        self._release()
        for cb in sync.then:
            cb(None)
        waited = self._unsynced is not None and (self._waiters or self._late)
        if not self._busy and (self._buffer or self._sync_requests or waited):
            self._flush_pass()

    def _lazy_fsync_due(self) -> None:
        self._lazy_fsync = None
        if self._closed or self._unsynced is None:
            return
        if not self.busy:
            self._start_sync()
        elif self._loop is not None:  # the running job's completion picks it up
            self._lazy_fsync = self._loop.call_later(0.05, self._lazy_fsync_due)

    def sync_then(self, callback: Waiter) -> None:
        """Write and fsync everything appended so far (any policy), off the loop; then
        `callback(None)` on the loop before any further write, or `callback(error)`."""
        if self.error is not None and not self.lost:
            callback(AofWriteError(self.misconf()))
            return
        self._sync_requests.append(callback)
        self._schedule()

    def _everysec_tick(self) -> bool:
        if self.policy != "everysec" or self._closed:
            return False  # the policy changed: stop this timer
        if self.busy or self.error is not None or self.synced_seq >= self.written_seq:
            return True
        assert self._loop is not None and self._io is not None
        target, t0 = self.written_seq, time.perf_counter()
        self._bg_fsync_t0 = self.mono()

        def done(f: asyncio.Future) -> None:
            self._bg_fsync_t0 = None
            exc = f.exception()
            if exc is not None:
                self._lose(exc)
            else:
                self.stats.fsync_count += 1
                self.stats.fsync_seconds_total += time.perf_counter() - t0
                self.synced_seq = max(self.synced_seq, target)
            self._postponed = False
            if self._buffer or self._sync_requests:
                self._schedule()

        self._loop.run_in_executor(self._io, self.aof.os_fsync, self.aof.fd).add_done_callback(done)
        return True

    def set_policy(self, policy: str) -> None:
        """Change appendfsync at run time (CONFIG SET)."""
        old, self.policy = self.policy, policy
        if old == policy or self._loop is None or self._closed:
            return
        if old == "always" and self._unsynced is not None:
            self._unsynced = None  # written: the new policy's fsync covers it
        if policy == "everysec" and self._every is not None:
            self._every(1.0, self._everysec_tick)
        if old != "always":
            self._acked_through = self.written_seq
        if policy == "always" and self.synced_seq < self.written_seq:
            # Replies now wait for synced_seq: bring it up to what was written so far (off the loop).
            self.sync_then(lambda err: None)

    # -- failures ---------------------------------------------------------------------

    def _set_error(self, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        first = self.error is None
        self.error = reason
        if first and self._every is not None:
            self._every(1.0, self._probe_tick)

    def _fail(self, exc: BaseException, start: int, undo: list) -> None:
        """A write or fsync of records nobody was told about failed: undo them, cut the file back."""
        self.resets += 1
        self.on_lost(self._undo)      # newest first: still in the buffer,
        self.on_lost(undo)            # then the ones that failed
        self._undo, self._buffer, self._unsynced = [], bytearray(), None
        if self.policy == "always":
            self.written_seq = self.synced_seq
        self._set_error(exc)
        self._cut(start)
        # Seqs above written_seq are free again only if the file was provably cut back;
        # until then no write is accepted (the error state), so none can be reused.
        self.seq = self.written_seq
        log.error("AOF write failed; refusing writes until the disk recovers", error=self.error,
                  path=str(self.aof.path), cut_back=self._cut_to is None)
        self._fail_waiters(AofWriteError(self.misconf()))
        self.on_durable(self.durable_seq)

    def _lose(self, exc: BaseException) -> None:
        """An fsync of acknowledged records failed: the kernel may have dropped their pages."""
        self.resets += 1
        self.on_lost(self._undo)      # not yet written, not acknowledged: undone
        self._undo, self._buffer = [], bytearray()
        self.seq = self.written_seq
        self.lost = True
        self._set_error(exc)
        log.error("AOF fsync failed after writes were acknowledged; refusing writes until a snapshot "
                  "rewrites the data from memory", error=self.error, path=str(self.aof.path))
        self._fail_waiters(AofWriteError(self.misconf()))
        self.on_durable(self.durable_seq)

    def _cut(self, size: int) -> bool:
        try:
            self.aof.truncate(size)
            ok = self.aof.real_size() == size
        except OSError as e:
            log.error("cannot cut the AOF back after a failed write; retrying with the disk probe",
                      error=str(e), path=str(self.aof.path), offset=size)
            ok = False
        self._cut_to = None if ok else size
        return ok

    def probe_sync(self) -> bool:
        """While writes are refused: cut the file back if needed, then try a real write + fsync.

        Runs in a worker thread when attached (the loop does not touch the file meanwhile).
        """
        aof = self.aof
        good = self._cut_to if self._cut_to is not None else aof.size
        try:
            aof.truncate(good)
            aof.write(b"\n" * PROBE_BYTES)
            aof.fsync()
            aof.truncate(good)
            aof.fsync()
            ok = aof.real_size() == good
        except OSError as e:
            try:
                aof.truncate(good)
            except OSError:
                pass
            log.debug("AOF still not writable", error=str(e))
            return False
        if ok:
            self._cut_to = None
        return ok

    def _probe_tick(self) -> bool:
        if self.error is None or self._closed:
            return False
        if self._loop is None or self._io is None:
            return False
        if self.busy:
            return True
        self._busy = True

        def done(f: asyncio.Future) -> None:
            self._busy = False
            ok = f.exception() is None and f.result()
            if ok:
                self._recovered()
            if self._buffer or self._sync_requests:
                self._schedule()

        self._loop.run_in_executor(self._io, self.probe_sync).add_done_callback(done)
        return True

    def _recovered(self) -> None:
        if self.lost:
            if self.on_rewrite_needed is not None:
                log.warning("AOF writable again; rewriting it from memory with a snapshot")
                self.on_rewrite_needed()
            return
        log.warning("AOF writable again; accepting writes", previous_error=self.error)
        self.error = None

    def rewritten(self) -> None:
        """A snapshot holds every record (rotation + snapshot): lost pages no longer matter."""
        if self.lost and self._cut_to is None:
            log.warning("snapshot rewrote the data from memory; accepting writes", previous_error=self.error)
            self.lost = False
            self.error = None

    # -- without a loop ---------------------------------------------------------------

    def flush_sync(self, *, fsync: bool | None = None) -> None:
        """Write and fsync (unless appendfsync no, or `fsync` says) the buffer on this thread."""
        if self._busy:
            raise RuntimeError("flush_sync while a worker thread owns the AOF")
        do_fsync = self.policy != "no" if fsync is None else fsync
        if not self._write_buffer():
            raise AofWriteError(self.misconf())
        start, undo = self._unsynced if self._unsynced is not None else (self.aof.size, [])
        self._unsynced = None
        if do_fsync:
            t0 = time.perf_counter()
            try:
                self.aof.fsync()
            except OSError as e:
                if self.policy == "always":
                    self._fail(e, start, undo)
                else:
                    self._lose(e)
                raise AofWriteError(self.misconf()) from e
            self.stats.fsync_count += 1
            self.stats.fsync_seconds_total += time.perf_counter() - t0
            self.synced_seq = self.written_seq
        self._release()

    # -- rotation ---------------------------------------------------------------------

    def rotate_io(self) -> tuple[int, AofFile | None]:
        """Move the active part aside as the part holding records <= written_seq; open a new one.

        The caller has fsynced the part (`sync_then` or `flush_sync(fsync=True)`).  Runs in a
        worker thread when attached.  Returns (seq the part holds up to, the new file or None).
        """
        upto = self.written_seq
        if self.aof.size == 0:
            return upto, None
        self.fs.rename(self.aof.path, self.dir.rotated_path(upto))
        new = AofFile(self.dir.aof_path, self.fs)
        self.fs.fsync_dir(self.dir.path)  # the rename and the new file must survive a crash
        return upto, new

    def rotate_then(self, callback: Callable[[BaseException | None], None]) -> None:
        """`rotate_io` in a worker thread; writes wait for it."""
        assert self._loop is not None and self._io is not None
        self._busy = True

        def done(f: asyncio.Future) -> None:
            self._busy = False
            exc = f.exception()
            if exc is None:
                self._swap(f.result()[1])
            callback(exc)
            if self._buffer or self._sync_requests:
                self._schedule()

        self._loop.run_in_executor(self._io, self.rotate_io).add_done_callback(done)

    def rotate_sync(self) -> int:
        upto, new = self.rotate_io()
        self._swap(new)
        return upto

    def _swap(self, new: AofFile | None) -> None:
        if new is not None:
            self.aof.close()
            self.aof = new

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Write and fsync what is left (every policy: close() is a durability point)."""
        if self._closed:
            return
        if self._lazy_fsync is not None:
            self._lazy_fsync.cancel()
            self._lazy_fsync = None
        try:
            if self.error is None and not self._busy:
                self.flush_sync(fsync=True)
        finally:
            self._closed = True
            self.aof.close()
