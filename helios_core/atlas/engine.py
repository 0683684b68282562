"""The ATLAS engine: command execution, the AOF write path, durability, snapshots.

Write path, AOF first: a handler validates, then emits effects; each effect is
applied with an undo record and the command's effects become one AOF record
in a buffer.  Once per loop pass the buffer is written (and, under
`appendfsync always`, fsynced in a worker thread while the next batch
gathers: group commit).  Replies are released only when the records they may
have seen are durable under the policy.  If a write or fsync fails, every
record not yet durable is undone in memory, the file is cut back to its last
good size, waiting replies get the error, and the engine refuses writes
(reads go on) until a probe write succeeds: memory never gets ahead of disk.

Without a loop (CLI tools, tests) the same engine runs synchronously and the
caller calls `flush_sync()`.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios_core.atlas.aof import AofFile
from helios_core.atlas.commands import TABLE, Command, Ctx
from helios_core.atlas.commands.keys import ScanCursors
from helios_core.atlas.datadir import DataDir, DirLock, fsync_dir
from helios_core.atlas.effects import apply_effect, effect_keys, encode_record, undo_effects
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.recovery import RecoveryReport, recover
from helios_core.atlas.snapshot import VERSION as SNAPSHOT_VERSION
from helios_core.atlas.snapshot import SnapshotInfo, write_snapshot
from helios_core.clock import wall_ms
from helios_core.config import AtlasConfig
from helios_core.errors import AofWriteError, CommandError
from helios_core.observability.logging import get_logger

__all__ = ["Engine", "EngineStats"]

log = get_logger("atlas.engine")

_DISPATCH_CACHE = 512  # most command-name spellings remembered by `execute`


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


@dataclass
class EngineStats:
    started_ms: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    aof_bytes_total: int = 0
    fsync_count: int = 0
    fsync_seconds_total: float = 0.0
    snapshots: int = 0
    last_snapshot_seconds: float = 0.0
    last_snapshot_status: str = "ok"
    last_snapshot_ms: int = 0
    expired_keys: int = 0


class Engine:
    def __init__(self, data_dir: str | os.PathLike[str], config: AtlasConfig | None = None, *,
                 clock: Callable[[], int] = wall_ms) -> None:
        self.dir = DataDir(data_dir)
        self.config = config or AtlasConfig()
        self.clock = clock
        self.ks = Keyspace()
        self.ctx = Ctx(self.ks, self._emit, self)
        # Keys whose newest record is not durable yet -> that record's seq (shared with ctx, which
        # notes what a command read), and the seq of a pending FLUSHALL: a reply waits only for
        # the records it may have seen ("a read that saw it waits too"), not for every write.
        self._pending_keys: dict[bytes, int] = {}
        self.ctx.pending = self._pending_keys
        self._all_seq = 0
        self._reply_seq = 0
        self.scan_cursors = ScanCursors()
        self.stats = EngineStats(started_ms=clock())
        self.policy = self.config.appendfsync
        self.seq = 0
        self.written_seq = 0
        self.synced_seq = 0
        self.aof_error: str | None = None
        self.dirty = 0
        self.recovery: RecoveryReport | None = None
        self._lock: DirLock | None = None
        self.aof: AofFile | None = None
        self._effects: list[tuple] = []
        self._dispatch: dict[bytes, tuple[Command, int, bool]] = {}  # command name as sent -> table entry
        self._undo: list = []          # undo log of records in _buffer
        self._buffer = bytearray()
        self._batch_depth = 0
        self._waiters: deque[tuple[int, Callable[[BaseException | None], None]]] = deque()
        self._listeners: list[tuple[bytes, Callable[[bytes | None], None]]] = []
        # Called synchronously with each committed record's effects (atlasd's WATCH
        # needs to see a change before the next command runs; `subscribe` is deferred).
        self.commit_hook: Callable[[list[tuple]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: ThreadPoolExecutor | None = None
        self._flush_scheduled = False
        self._inflight: tuple[int, int, list] | None = None
        # appendfsync always: records written but not fsynced because nobody waits for them
        # (durable=False writes such as rate-limit buckets): where they start in the file and
        # their undo log, so a failed fsync can still cut them back off.
        self._unsynced: tuple[int, list] | None = None
        self._lazy_fsync: asyncio.TimerHandle | None = None
        self._fsync_running = False
        self._timers: list[asyncio.TimerHandle] = []
        self._snapshot_waiters: list[asyncio.Future] = []
        self._snapshot_requested = False
        self._snapshot_child: int | None = None
        self._snapshot_retry_at = 0
        # The snapshot being written: its seq, (created_ms, keys), start time, dirty count, child's pipe.
        self._snapshot_seq = 0
        self._snapshot_meta = (0, 0)
        self._snapshot_t0 = 0.0
        self._snapshot_dirty = 0
        self._snapshot_pipe = -1
        self._closed = False

    # -- opening and closing --------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], config: AtlasConfig | None = None, *,
             clock: Callable[[], int] = wall_ms, **lock_info: Any) -> Engine:
        """Lock the data dir (one owner), recover, and open the AOF for appending."""
        eng = cls(data_dir, config, clock=clock)
        eng._lock = eng.dir.lock(**lock_info)
        try:
            eng.dir.remove_stale_temp_files()
            rep = recover(eng.dir, eng.ks, now_ms=clock(), truncate_torn_tail=eng.config.aof_truncate_torn_tail)
            eng.recovery = rep
            eng.seq = eng.written_seq = eng.synced_seq = rep.last_seq
            eng.aof = AofFile(eng.dir.aof_path)
            if rep.needs_newline:
                eng.aof.write(b"\n")
                eng.aof.fsync()
            fsync_dir(eng.dir.path)
            snap = eng.dir.snapshot_path
            eng.stats.last_snapshot_ms = int(snap.stat().st_mtime * 1000) if snap.exists() else eng.stats.started_ms
        except BaseException:
            eng._lock.release()
            raise
        log.info("atlas ready", data=str(eng.dir.path), keys=len(eng.ks), seq=eng.seq,
                 snapshot_seq=rep.snapshot_seq, replayed=rep.records_replayed,
                 seconds=round(rep.seconds, 3), appendfsync=eng.policy)
        return eng

    def close(self) -> None:
        """Flush, fsync and release the directory (synchronous; the loop must be idle)."""
        if self._closed:
            return
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        if self._lazy_fsync is not None:
            self._lazy_fsync.cancel()
            self._lazy_fsync = None
        if self._snapshot_child is not None:
            try:
                _, status = os.waitpid(self._snapshot_child, 0)
            except ChildProcessError:  # reaped by the waiting thread already
                status = 0
            self._snapshot_finished(status)
        try:
            if self.aof is not None and self.aof_error is None:
                self.flush_sync()
        finally:
            self._closed = True
            if self.aof is not None:
                self.aof.close()
            if self._io is not None:
                self._io.shutdown(wait=True)
            if self._lock is not None:
                self._lock.release()
            self._loop = None

    async def aclose(self) -> None:
        """Close from the loop: wait for an in-flight fsync and a running snapshot first."""
        while self._inflight is not None or self._snapshot_child is not None:
            await asyncio.sleep(0.005)
        self.close()

    # -- executing commands -----------------------------------------------------------

    def execute(self, args: list[bytes]) -> Any:
        """Run one command; returns its reply or raises CommandError.

        The reply may not be shown to anyone before `pending_seq()` is durable
        (see `add_waiter`).
        """
        # The hot path of every protocol: one dict hit on the name as sent ("SET", "get")
        # instead of a case-folding table lookup and a property per call.
        try:
            cmd, arity, is_write = self._dispatch[args[0]]
        except (KeyError, IndexError):
            cmd, arity, is_write = self._resolve(args)
        n = len(args)
        if n != arity and (arity > 0 or n < -arity):
            raise CommandError(f"ERR wrong number of arguments for '{cmd.name}' command")
        if is_write:
            if self.aof_error is not None:
                raise CommandError(self._misconf())
            limit = self.config.max_value_bytes
            for a in args:
                if len(a) > limit:
                    self.check_value_size(len(a))
        ctx = self.ctx
        ctx.now_ms = self.clock()
        ctx.writable = self.aof_error is None
        ctx.seen = 0
        mark, undo_mark = len(self._effects), len(self._undo)
        seq_before = self.seq
        try:
            reply = cmd.handler(ctx, args[1:])
        except BaseException:
            self._rollback(mark, undo_mark)
            self._reply_seq = self._seen_seq(cmd)  # an error may reveal state too (WRONGTYPE)
            raise
        stats = self.stats.commands
        name = cmd.name
        stats[name] = stats.get(name, 0) + 1
        if self._effects and self._batch_depth == 0:  # (a handler that batches has committed already)
            self._commit()
        self._reply_seq = self.seq if self.seq != seq_before else self._seen_seq(cmd)
        return reply

    def _seen_seq(self, cmd: Command) -> int:
        """The newest not-yet-durable record a read may have seen."""
        if cmd.first_key == 0:  # keyless (KEYS, SCAN, DBSIZE, ...): it may have seen anything
            return self.seq
        seen = self.ctx.seen
        return seen if seen > self._all_seq else self._all_seq

    def _resolve(self, args: list[bytes]) -> tuple[Command, int, bool]:
        """The table entry for args[0] (remembered under that spelling), or Redis's error."""
        if not args:
            raise CommandError("ERR empty command")
        cmd = TABLE.get(args[0])
        if cmd is None:
            shown = ""  # as Redis: each argument quoted and followed by a space, 128 characters in all
            for a in args[1:]:
                if len(shown) >= 128:
                    break
                shown += f"'{a.decode(errors='replace')[:128 - len(shown)]}' "
            raise CommandError(f"ERR unknown command '{args[0].decode(errors='replace')[:128]}', "
                               f"with args beginning with: {shown}")
        entry = (cmd, cmd.arity, cmd.is_write)
        if len(self._dispatch) < _DISPATCH_CACHE:  # bounded: clients may spell names in any case
            self._dispatch[bytes(args[0])] = entry
        return entry

    def _rollback(self, mark: int, undo_mark: int) -> None:
        if len(self._undo) > undo_mark:
            undo_effects(self.ks, self._undo[undo_mark:])
            del self._undo[undo_mark:]
        del self._effects[mark:]

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every effect of the enclosed commands into one atomic AOF record."""
        self._batch_depth += 1
        mark, undo_mark = len(self._effects), len(self._undo)
        try:
            yield
        except BaseException:
            self._rollback(mark, undo_mark)
            raise
        finally:
            self._batch_depth -= 1
        if self._batch_depth == 0 and self._effects:
            self._commit()
            self._reply_seq = self.seq

    def check_value_size(self, n: int) -> None:
        limit = self.config.max_value_bytes
        if n > limit:
            raise CommandError(f"ERR value of {n} bytes exceeds the maximum of {limit} bytes "
                               f"(atlas.max_value_bytes); send a smaller value or raise the limit")

    def _misconf(self) -> str:
        return (f"MISCONF Errors writing to the AOF file: {self.aof_error}. Writes are refused until the "
                f"disk recovers (reads still work); free space or fix the disk and they resume by themselves")

    def _emit(self, eff: tuple) -> None:
        apply_effect(self.ks, eff, self._undo)
        self._effects.append(eff)

    def _commit(self) -> None:
        effects = self._effects
        self._effects = []
        self.seq += 1
        line = encode_record(self.seq, effects)
        self._buffer += line
        self.stats.aof_bytes_total += len(line)
        self.dirty += 1
        self._mark_pending(effects, self.seq)
        if self._listeners:
            self._notify(effects)
        if self.commit_hook is not None:
            self.commit_hook(effects)
        if not self._flush_scheduled and self._loop is not None:  # (scheduled already: most commits)
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_pass)

    def _mark_pending(self, effects: list[tuple], seq: int) -> None:
        pending = self._pending_keys
        for eff in effects:
            op = eff[0]
            if op == "FLUSHALL":
                self._all_seq = seq
            elif op == "MULTI":
                self._mark_pending(eff[1], seq)
            else:
                pending[eff[1]] = seq

    def internal_effects(self, effects: list[tuple]) -> None:
        """Apply and log effects the engine itself decides on (active expiry)."""
        for eff in effects:
            self._emit(eff)
        if self._batch_depth == 0 and self._effects:
            self._commit()

    # -- durability ---------------------------------------------------------------------

    @property
    def released_seq(self) -> int:
        return self.synced_seq if self.policy == "always" else self.written_seq

    def pending_seq(self) -> int:
        """The seq the reply of the last command must wait for (0: it may be sent at once).

        A write waits for its own record; a read for the newest pending record
        of the keys it looked at (all records, for keyless commands).
        """
        seq = self._reply_seq
        return seq if seq > self.released_seq else 0

    def add_waiter(self, seq: int, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(None)` once `seq` is durable, or `callback(error)` if it never will be."""
        if seq <= self.released_seq:
            callback(None)
            return
        self._waiters.append((seq, callback))
        if (self._unsynced is not None and seq <= self.written_seq and self._inflight is None
                and not self._flush_scheduled and self._loop is not None):
            # A read saw a record written lazily (no fsync yet): sync it now.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_pass)

    def wait_durable(self, seq: int | None = None) -> asyncio.Future:
        seq = self.pending_seq() if seq is None else seq
        fut = asyncio.get_running_loop().create_future()

        def done(err: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(err) if err else fut.set_result(None)

        self.add_waiter(seq, done)
        return fut

    def _release(self) -> None:
        rel = self.released_seq
        waiters = self._waiters
        while waiters and waiters[0][0] <= rel:
            waiters.popleft()[1](None)
        pending = self._pending_keys
        if rel >= self.seq:
            pending.clear()
            self._all_seq = 0
        elif pending:
            for key in [k for k, s in pending.items() if s <= rel]:
                del pending[key]

    def _fail(self, exc: BaseException, good_size: int, written_undo: list) -> None:
        """A write or fsync failed: undo everything not durable and refuse writes."""
        undo_effects(self.ks, self._undo)        # newest first: still in the buffer,
        undo_effects(self.ks, written_undo)      # then the batch that failed
        self._undo = []
        self._buffer = bytearray()
        self._unsynced = None
        # Memory is back to what is on disk: nothing is pending any more.
        self._pending_keys.clear()
        self._all_seq = self._reply_seq = 0
        if self.policy == "always":
            self.written_seq = self.synced_seq
        self.seq = self.written_seq  # the undone records' seqs are free again: the file was cut back
        assert self.aof is not None
        try:
            self.aof.truncate(good_size)
        except OSError as e:
            log.error("cannot cut the AOF back after a failed write", error=str(e))
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        first = self.aof_error is None
        self.aof_error = reason
        err = AofWriteError(self._misconf())
        waiters, self._waiters = self._waiters, deque()
        for _, cb in waiters:
            cb(err)
        log.error("AOF write failed; refusing writes until the disk recovers", error=reason,
                  path=str(self.aof.path))
        if first and self._loop is not None:
            self._every(1.0, self._probe_disk)

    def flush_sync(self) -> None:
        """Write and (unless appendfsync no) fsync the buffer on this thread."""
        assert self.aof is not None
        if self._inflight is not None:
            raise RuntimeError("flush_sync while an fsync is in flight")
        data, last, undo = self._buffer, self.seq, self._undo
        self._buffer, self._undo = bytearray(), []
        start = self.aof.size
        if self._unsynced is not None:
            start, undo = self._unsynced[0], self._unsynced[1] + undo
            self._unsynced = None
        try:
            if data:
                self.aof.write(data)
            if self.policy != "no":
                self._timed_fsync()
        except OSError as e:
            self._fail(e, start, undo)
            raise AofWriteError(self._misconf()) from e
        self.written_seq = self.synced_seq = last
        self._release()

    def _timed_fsync(self) -> None:
        assert self.aof is not None
        t0 = time.perf_counter()
        self.aof.fsync()
        self.stats.fsync_count += 1
        self.stats.fsync_seconds_total += time.perf_counter() - t0

    # -- the loop -----------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Drive flushing, fsync, expiry and automatic snapshots from an asyncio loop."""
        self._loop = loop or asyncio.get_running_loop()
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="atlas-io")
        self._every(1.0 / self.config.active_expire_hz, self._active_expire)
        self._every(1.0, self._cron)
        if self.policy == "everysec":
            self._every(1.0, self._everysec_fsync)
        if self._buffer:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_pass)

    def _every(self, seconds: float, fn: Callable[[], Any]) -> None:
        loop = self._loop
        assert loop is not None

        def tick() -> None:
            if self._closed or self._loop is None:
                return
            if fn() is False:
                return
            self._timers.append(loop.call_later(seconds, tick))

        self._timers.append(loop.call_later(seconds, tick))

    def _flush_pass(self) -> None:
        self._flush_scheduled = False
        if self._inflight is not None or self._closed:
            return  # the in-flight fsync's completion starts the next batch
        if self._snapshot_requested and self._snapshot_child is None:
            self._snapshot_requested = False
            try:
                self.flush_sync()
            except AofWriteError as e:
                self._finish_snapshot_waiters(e)
                return
            self._start_snapshot()
            return
        if not self._buffer:
            if self._unsynced is not None and self._waiters:
                self._start_fsync()
            return
        assert self.aof is not None and self._io is not None and self._loop is not None
        data, last, undo = self._buffer, self.seq, self._undo
        self._buffer, self._undo = bytearray(), []
        start = self.aof.size
        if self.policy == "always" and self._unsynced is not None:
            start, undo = self._unsynced[0], self._unsynced[1] + undo
        self._unsynced = None
        try:
            self.aof.write(data)
        except OSError as e:
            self._fail(e, start, undo)
            return
        self.written_seq = last
        if self.policy != "always":
            self._release()
            return
        self._unsynced = (start, undo)
        if self._waiters:
            self._start_fsync()
        elif self._lazy_fsync is None:
            # Nobody waits for these records (durable=False writes): under `always` they still
            # reach the disk within a second, like everysec, instead of costing an fsync each.
            self._lazy_fsync = self._loop.call_later(1.0, self._lazy_fsync_due)

    def _start_fsync(self) -> None:
        assert self.aof is not None and self._io is not None and self._loop is not None
        assert self._unsynced is not None and self._inflight is None
        start, undo = self._unsynced
        self._unsynced = None
        if self._lazy_fsync is not None:
            self._lazy_fsync.cancel()
            self._lazy_fsync = None
        self._inflight = (start, self.written_seq, undo)
        t0 = time.perf_counter()
        fut = self._loop.run_in_executor(self._io, self.aof.os_fsync, self.aof.fd)
        fut.add_done_callback(lambda f: self._fsync_done(f, t0))

    def _lazy_fsync_due(self) -> None:
        self._lazy_fsync = None
        if self._closed or self._unsynced is None:
            return
        if self._inflight is None:
            self._start_fsync()
        else:  # the in-flight fsync's completion picks it up
            self._lazy_fsync = self._loop.call_later(0.05, self._lazy_fsync_due) if self._loop else None

    def _fsync_done(self, fut: asyncio.Future, t0: float) -> None:
        assert self._inflight is not None
        start, last, undo = self._inflight
        self._inflight = None
        exc = fut.exception()
        if exc is not None:
            self._fail(exc, start, undo)
            return
        self.stats.fsync_count += 1
        self.stats.fsync_seconds_total += time.perf_counter() - t0
        self.synced_seq = last
        self._release()
        if self._buffer or self._snapshot_requested or (self._unsynced is not None and self._waiters):
            self._flush_pass()

    def set_policy(self, policy: str) -> None:
        """Change appendfsync at run time (CONFIG SET); the caller updates `config` too."""
        old, self.policy = self.policy, policy
        if old == policy or self._loop is None or self._closed:
            return
        if old == "always" and self._unsynced is not None:
            self._unsynced = None  # written: the new policy's fsync covers it
        if policy == "everysec":
            self._every(1.0, self._everysec_fsync)
        if policy == "always" and self._inflight is None and self.synced_seq < self.written_seq:
            # Replies now wait for synced_seq: bring it up to what was written so far.
            assert self.aof is not None
            self._timed_fsync()
            self.synced_seq = self.written_seq
            self._release()

    def _everysec_fsync(self) -> bool:
        if self.policy != "everysec":
            return False  # the policy changed: stop this timer
        if self._fsync_running or self.synced_seq >= self.written_seq or self.aof is None:
            return True
        assert self._loop is not None and self._io is not None
        self._fsync_running = True
        target, t0 = self.written_seq, time.perf_counter()

        def done(f: asyncio.Future) -> None:
            self._fsync_running = False
            exc = f.exception()
            if exc is not None:
                # Already acknowledged (that is everysec's bargain): refuse new writes.
                if self.aof_error is None:
                    self.aof_error = getattr(exc, "strerror", None) or str(exc)
                    log.error("AOF fsync failed; refusing writes", error=self.aof_error)
                    self._every(1.0, self._probe_disk)
                return
            self.stats.fsync_count += 1
            self.stats.fsync_seconds_total += time.perf_counter() - t0
            self.synced_seq = max(self.synced_seq, target)

        self._loop.run_in_executor(self._io, self.aof.os_fsync, self.aof.fd).add_done_callback(done)
        return True

    def _probe_disk(self) -> bool:
        """While writes are refused: try a real write + fsync, then cut it back off."""
        if self.aof_error is None or self.aof is None:
            return False
        size = self.aof.size
        try:
            self.aof.truncate(size)
            self.aof.write(b"\n" * 4096)
            self.aof.fsync()
            self.aof.truncate(size)
            self.aof.fsync()
        except OSError as e:
            try:
                self.aof.truncate(size)
            except OSError:
                pass
            log.debug("AOF still not writable", error=str(e))
            return True
        log.warning("AOF writable again; accepting writes", previous_error=self.aof_error)
        self.aof_error = None
        return False

    def _active_expire(self) -> None:
        if self.aof_error is not None:
            return
        keys = self.ks.due_keys(self.clock(), self.config.active_expire_budget)
        if keys:
            self.stats.expired_keys += len(keys)
            self.internal_effects([("DEL", k) for k in keys])

    def _cron(self) -> None:
        if self._snapshot_child is not None or self._snapshot_requested or self.aof_error is not None:
            return
        now = self.clock()
        if now < self._snapshot_retry_at:
            return
        since = (now - self.stats.last_snapshot_ms) / 1000
        due = any(self.dirty >= changes and since >= secs for secs, changes in self.config.save)
        limit = self.config.snapshot_on_aof_bytes
        if not due and limit and self.aof is not None and self.aof.size >= limit:
            due = True
        if due:
            log.info("automatic snapshot", changes=self.dirty, seconds_since_last=round(since, 1))
            self.bgsave()

    # -- change notification ------------------------------------------------------------

    def subscribe(self, prefix: bytes, callback: Callable[[bytes | None], None]) -> Callable[[], None]:
        """Call `callback(key)` after each committed change under `prefix` (None: everything went)."""
        entry = (prefix, callback)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    def _notify(self, effects: list[tuple]) -> None:
        for eff in effects:
            keys: list[bytes | None] = [None] if eff[0] == "FLUSHALL" else list(effect_keys(eff))
            for key in keys:
                for prefix, cb in list(self._listeners):
                    if key is None or key.startswith(prefix):
                        if self._loop is not None:
                            self._loop.call_soon(cb, key)
                        else:
                            cb(key)

    # -- snapshots ----------------------------------------------------------------------

    @property
    def snapshot_in_progress(self) -> bool:
        return self._snapshot_child is not None or self._snapshot_requested

    def bgsave(self) -> asyncio.Future:
        """Start a background snapshot at the next batch boundary; the future gives SnapshotInfo."""
        assert self._loop is not None, "bgsave needs attach(); use snapshot_sync() without a loop"
        fut = self._loop.create_future()
        self._snapshot_waiters.append(fut)
        if not self.snapshot_in_progress:
            self._snapshot_requested = True
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_pass)
        return fut

    def _rotate(self) -> int:
        """Move the active AOF aside as the part holding records <= seq; start a new one."""
        assert self.aof is not None
        upto = self.seq
        if self.aof.size == 0:
            return upto
        target = self.dir.rotated_path(upto)
        os.rename(self.aof.path, target)
        self.aof.close()
        self.aof = AofFile(self.dir.aof_path)
        fsync_dir(self.dir.path)  # the rename and the new file must survive a crash
        return upto

    def _start_snapshot(self) -> None:
        upto = self._rotate()
        self._snapshot_seq, self._snapshot_t0, self._snapshot_dirty = upto, time.perf_counter(), self.dirty
        created_ms = self.clock()
        self._snapshot_meta = (created_ms, len(self.ks.data))
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child: write the image and leave without running any parent cleanup
            code = 1
            try:
                _die_with_parent(parent)
                os.close(read_fd)
                os.nice(10)  # the loop (same cores) comes first; the image can take longer
                write_snapshot(self.dir.snapshot_path, self.ks.data, self.ks.expires, upto, created_ms)
                code = 0
            except BaseException as e:  # noqa: BLE001 - report anything to the parent
                try:
                    os.write(write_fd, f"{type(e).__name__}: {e}".encode()[:4000])
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(code)
        os.close(write_fd)
        self._snapshot_child = pid
        self._snapshot_pipe = read_fd
        log.info("snapshot started", seq=upto, pid=pid, keys=len(self.ks))
        assert self._loop is not None and self._io is not None
        fut = self._loop.run_in_executor(None, os.waitpid, pid, 0)
        fut.add_done_callback(lambda f: self._snapshot_finished(f.result()[1]))

    def _snapshot_finished(self, status: int) -> None:
        if self._snapshot_child is None:
            return
        self._snapshot_child = None
        try:
            why = os.read(self._snapshot_pipe, 4096).decode(errors="replace")
        finally:
            os.close(self._snapshot_pipe)
        seconds = time.perf_counter() - self._snapshot_t0
        if os.waitstatus_to_exitcode(status) == 0:
            info = self._after_snapshot(self._snapshot_seq, seconds)
            self.dirty -= min(self.dirty, self._snapshot_dirty)
            self._finish_snapshot_waiters(None, info)
        else:
            self.stats.last_snapshot_status = "err"
            self._snapshot_retry_at = self.clock() + 5000
            err = AofWriteError(f"snapshot failed: {why or 'child exited with status ' + str(status)}")
            log.error("snapshot failed; AOF parts kept, retrying later", error=str(err))
            self._finish_snapshot_waiters(err)

    def _finish_snapshot_waiters(self, err: BaseException | None, info: SnapshotInfo | None = None) -> None:
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(err) if err else fut.set_result(info)

    def _after_snapshot(self, upto: int, seconds: float) -> SnapshotInfo:
        """The snapshot at `upto` is durable: drop AOF parts it covers."""
        for part_seq, path in self.dir.rotated_parts():
            if part_seq <= upto:
                path.unlink(missing_ok=True)
        fsync_dir(self.dir.path)
        self.stats.snapshots += 1
        self.stats.last_snapshot_seconds = seconds
        self.stats.last_snapshot_status = "ok"
        self.stats.last_snapshot_ms = self.clock()
        # Built from what the engine knows: re-reading a large file here would stall the loop.
        created_ms, keys = self._snapshot_meta
        info = SnapshotInfo(str(self.dir.snapshot_path), SNAPSHOT_VERSION, upto, created_ms, keys,
                            self.dir.snapshot_path.stat().st_size)
        log.info("snapshot done", seq=upto, keys=info.keys, bytes=info.bytes, seconds=round(seconds, 3))
        return info

    def snapshot_sync(self) -> SnapshotInfo:
        """Snapshot in this process and thread (no loop): for tools working on an unowned dir."""
        if self._loop is not None:
            raise RuntimeError("snapshot_sync on an attached engine; use bgsave()")
        self.flush_sync()
        upto = self._rotate()
        t0 = time.perf_counter()
        self._snapshot_meta = (self.clock(), len(self.ks.data))
        write_snapshot(self.dir.snapshot_path, self.ks.data, self.ks.expires, upto, self._snapshot_meta[0])
        info = self._after_snapshot(upto, time.perf_counter() - t0)
        self.dirty = 0
        return info

    # -- introspection -------------------------------------------------------------------

    def data_path(self) -> Path:
        return self.dir.path
