"""The ATLAS engine: the keyspace, command execution and effects.

A handler validates, then emits effects; each effect is applied with an undo
record and the command's effects become one AOF record.  Durability is the
AOF writer's concern (aof_writer.py: append, group commit, the fsync policy,
rotation, the error state, and what "durable up to seq N" means); snapshots
are the snapshotter's (snapshotter.py).  What stays here is deciding which
record a reply may reveal: a write reveals its own record, a read the newest
pending record of the keys it looked at (every record, for keyless commands),
and an error the same as the read it did.  A lazy-expiry DEL reveals nothing
new (the key expired by time, on replay too), so nobody waits for it.

Without a loop (CLI tools, tests) the same engine runs synchronously and the
caller calls `flush_sync()`.

Databases (databases.py): `ks` is the database the running command works in,
chosen per command from its connection's SELECT (`db`; in-process callers
have no connection and always work in database 0).  A record holds a
("SELECT", n) before the first effect made outside database 0, so replay
never needs to know which connection wrote it; the undo log holds a
("ks", keyspace) entry at the same place, so a rollback knows which database
each undo entry belongs to.  The engine remembers whose database is selected
(`_db_conn`), so commands of the same client cost one identity test, and an
effect one integer comparison; SELECT, RESET and a script's end tell it
(`conn_db_changed`).

Introspection rides on `execute` too: one perf_counter_ns pair around the
handler times the command (its execution, not the network's time) for INFO
commandstats and latencystats (cmdstats.py: the record sits in the dispatch
cache beside the command, so counting is three list increments) and the slow
log; a command refused before its handler counts as rejected, one whose
handler raised as failed.  Each of those error replies counts in INFO errorstats
(cmdstats.ErrorStats), on the error path only; `reject` does both for the refusals
a connection or a script makes before `execute`.  MONITOR is fed after the handler, failed commands
included, except EVAL/FCALL (skip_monitor), fed before it so their script's
commands follow them, as in Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios_core.atlas.aof import AofFile
from helios_core.atlas.aof_writer import AofWriter, WriterStats
from helios_core.atlas.blocking import Block
from helios_core.atlas.cmdstats import FAILED, REJECTED, CommandStats, CountedError, add, new_record
from helios_core.atlas.commands import TABLE, Command, Ctx
from helios_core.atlas.commands.keys import ScanCursors
from helios_core.atlas.commands.modules import protected_refusal
from helios_core.atlas.commands.subcommands import ADMIN as ADMIN_SUBS
from helios_core.atlas.commands.subcommands import BY_CONTAINER, find_sub
from helios_core.atlas.commands.table import NO_STATS_LOOKUPS, READ_LOOKUPS, Refused, exec_abort, unknown_command
from helios_core.atlas.databases import MAX_DATABASES, Databases
from helios_core.atlas.datadir import DataDir, DirLock
from helios_core.atlas.effects import LIBRARY_CMDS, apply_effect, effect_keys, undo_effects, undo_start
from helios_core.atlas.evict import OOM, Evictor, Memory
from helios_core.atlas.fsops import REAL_FS, Fs
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.lean import LeanPath
from helios_core.atlas.meminfo import rss_bytes
from helios_core.atlas.notify import EVICTED, EXPIRED, Notifier
from helios_core.atlas.recovery import RecoveryReport, recover
from helios_core.atlas.slowlog import SlowLog
from helios_core.atlas.snapshot import SnapshotInfo
from helios_core.atlas.snapshotter import SnapshotStats, Snapshotter
from helios_core.atlas.tracking import Tracking
from helios_core.clock import wall_ms
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError
from helios_core.observability.logging import get_logger

__all__ = ["Engine", "EngineStats"]

log = get_logger("atlas.engine")

# Effects that name one key in eff[1] (all but FLUSHALL and MULTI): _commit's fast path.
_ONE_KEY = frozenset({"SET", "DEL", "EXPIRE", "PERSIST", "ZADD", "ZREM", "HSET", "HDEL", "SADD", "SREM",
                      "LPUSH", "RPUSH", "LPOP", "RPOP", "LSET", "LINSERT", "LREM", "LTRIM", "SETRANGE"})
_DISPATCH_CACHE = 512  # most command-name spellings remembered by `execute`
_clock_ns = time.perf_counter_ns  # times each command: INFO commandstats, latencystats, the slow log
_UNKNOWN = object()  # Engine._db_conn: no client's database is known to be selected
_Entry = tuple[Command, int, bool, dict[bytes, tuple[str, int]] | None, list[int], bool]
_PROTECTED = frozenset({"debug", "module"})  # commands with calls Redis flags protected (modules.py)
_NOT_MONITORED = frozenset({"admin", "skip_monitor"})  # MONITOR never shows these after they run
# Subcommands a handler takes beyond Redis 7.0's table (CLIENT SETINFO came with 7.2; client libraries
# send it): MULTI queues them, as the handler takes them outside MULTI.
_EXTRA_SUBS = frozenset({("client", b"setinfo")})


@dataclass
class EngineStats(WriterStats, SnapshotStats):
    """One object the writer, the snapshotter and INFO share."""

    started_ms: int = 0
    commands: CommandStats = field(default_factory=CommandStats)  # INFO commandstats (cmdstats.py)
    expired_keys: int = 0
    evicted_keys: int = 0
    keyspace: list[int] = field(default_factory=lambda: [0, 0])  # [keyspace_hits, keyspace_misses], in place
    startup_memory: int = 0  # resident bytes before the data directory was loaded (used_memory_startup)
    # The active-expiry cycle (INFO expired_stale_perc, expired_time_cap_reached_count,
    # expire_cycle_cpu_milliseconds): a moving average of the share of keys with a TTL found
    # due, the cycles that stopped at their budget with keys perhaps still due, and their time.
    expired_stale_perc: float = 0.0
    expire_cycle_cap_reached: int = 0
    expire_cycle_seconds: float = 0.0

    def reset_expire_cycle(self) -> None:
        self.expired_stale_perc = self.expire_cycle_seconds = 0.0
        self.expire_cycle_cap_reached = 0


class Engine:
    writer: AofWriter
    snapshots: Snapshotter

    def __init__(self, data_dir: str | os.PathLike[str], config: AtlasConfig | None = None, *,
                 clock: Callable[[], int] = wall_ms, fs: Fs = REAL_FS, databases: int = MAX_DATABASES) -> None:
        self.dir = DataDir(data_dir)
        self.config = config or AtlasConfig()
        self.clock = clock
        self.fs = fs
        self.dbs = Databases(databases, Keyspace())
        self.ks = self.dbs[0]  # the running command's database
        self.db = 0            # its index
        self._rec_db = 0       # the database the record being built is in (its last SELECT, else 0)
        self._db_conn: Any = None  # the connection (None: in process) whose database `db` is
        self.ctx = Ctx(self.ks, self._emit, self)
        # Keys whose newest record is not durable yet -> that record's seq (shared with ctx, which
        # notes what a command read), and the seq of a pending FLUSHALL: a reply waits only for
        # the records it may have seen ("a read that saw it waits too"), not for every write.
        self._pending_keys: dict[bytes, int] = {}
        self.ctx.pending = self._pending_keys
        self._all_seq = 0
        self._reply_seq = 0
        self._reveal_top = 0  # the newest record that reveals something (not a lazy-expiry DEL)
        self.scan_cursors = ScanCursors()
        self.stats = EngineStats(started_ms=clock())
        self.ctx.hits = self.stats.keyspace  # (INFO keyspace_hits/misses)
        self.recovery: RecoveryReport | None = None
        self._lock: DirLock | None = None
        self._effects: list[tuple] = []
        # command name as sent -> (table entry, arity, writes?, its subcommands if a container,
        # its INFO commandstats record)
        self._dispatch: dict[bytes, _Entry] = {}
        self._uncounted = new_record()  # an unknown subcommand's numbers: counted here, shown nowhere
        self._undo: list = []          # undo log of the command (or batch) running now
        self._batch_depth = 0
        self._listeners: list[tuple[bytes, Callable[[bytes | None], None]]] = []
        # Called synchronously with each committed record's effects (atlasd's WATCH and client
        # tracking need to see a change before the next command runs; `subscribe` is deferred).
        # Installed only while someone watches or tracks, so plain traffic pays nothing.
        self.commit_hooks: list[Callable[[list[tuple]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: ThreadPoolExecutor | None = None
        # The pending tick of each periodic task (`_every`), replaced at every tick: one handle per
        # task, not one per tick (a list of every tick grew ~0.15 MiB a minute for as long as it ran).
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = itertools.count()
        self._closed = False
        self._expire_hz = 0  # the rate the active-expiry timer runs at (config.active_expire_hz when it started)
        self.scripting: Any = None  # the Lua runtime (atlas/scripting.py), made by the first EVAL
        self.blocks: Any = None     # the clients parked by blocking commands (blocking.registry)
        # Introspection, keyspace notifications and maxmemory (slowlog.py, notify.py, evict.py).
        # `_observe` sees each effect before it applies; it is installed only while notifications
        # or memory accounting are on (`observers_changed`), so by default effects pay nothing.
        self.slowlog = SlowLog()
        self.notifier = Notifier()
        self.tracking = Tracking(self)  # CLIENT TRACKING's table (tracking.py)
        self.memory = Memory(dbs=self.dbs)
        self.evictor = Evictor()
        self._on_effect: Callable[[tuple], None] | None = None
        self._accounting = False
        self.settings: dict[str, bytes] = {}  # CONFIG parameters stored for clients (commands/server.py)
        self.monitor: Callable[[list[bytes], Any, int], None] | None = None  # MONITOR's feed, while someone watches
        self.retrying = False  # a blocked client's command runs again (MONITOR saw it, and its lookups counted, once)
        # A connection's bare SET and GET, while nothing observes the keyspace (lean.py): name -> function
        self.lean = LeanPath(self).table

    # -- opening and closing --------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], config: AtlasConfig | None = None, *,
             clock: Callable[[], int] = wall_ms, fs: Fs = REAL_FS, databases: int = MAX_DATABASES,
             **lock_info: Any) -> Engine:
        """Lock the data dir (one owner), recover, and open the AOF for appending.

        `databases`: how many SELECT may reach (atlasd passes its setting); tools and the embedded
        Store work in database 0 and take the most, so they load any data directory whole."""
        eng = cls(data_dir, config, clock=clock, fs=fs, databases=databases)
        eng.stats.startup_memory = rss_bytes()
        eng._lock = eng.dir.lock(**lock_info)
        try:
            eng.dir.remove_stale_temp_files()
            rep = recover(eng.dir, eng.ks, now_ms=clock(), truncate_torn_tail=eng.config.aof_truncate_torn_tail)
            eng.recovery = rep
            aof = AofFile(eng.dir.aof_path, fs)
            eng.writer = AofWriter(eng.dir, aof, eng.config.appendfsync, fs=fs, seq=rep.last_seq,
                                   on_lost=eng._undo_lost, on_durable=eng._durable_to, stats=eng.stats)
            eng.snapshots = Snapshotter(eng.dir, eng.dbs, eng.writer, fs=fs, clock=clock, stats=eng.stats)
            eng.writer.on_rewrite_needed = eng._rewrite
            if rep.needs_newline:
                aof.write(b"\n")
                aof.fsync()
            fs.fsync_dir(eng.dir.path)
            snap = eng.dir.snapshot_path
            eng.stats.last_snapshot_ms = int(snap.stat().st_mtime * 1000) if snap.exists() else eng.stats.started_ms
            eng.stats.last_snapshot_bytes = snap.stat().st_size if snap.exists() else 0
        except BaseException:
            eng._lock.release()
            raise
        log.info("atlas ready", data=str(eng.dir.path), keys=eng.dbs.keys(), seq=eng.seq,
                 snapshot_seq=rep.snapshot_seq, replayed=rep.records_replayed,
                 seconds=round(rep.seconds, 3), appendfsync=eng.policy)
        return eng

    def close(self) -> None:
        """Flush, fsync (every policy) and release the directory (synchronous; the loop must be idle)."""
        if self._closed:
            return
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self.snapshots.reap_sync()
        try:
            self.writer.close()
        finally:
            self._closed = True
            if self._io is not None:
                self._io.shutdown(wait=True)
            if self._lock is not None:
                self._lock.release()
            self._loop = None

    async def aclose(self) -> None:
        """Close from the loop: wait for a running fsync, rotation, probe and snapshot first."""
        while self.writer.busy or self.snapshots.in_progress:
            await asyncio.sleep(0.005)
        self.close()

    # -- executing commands -----------------------------------------------------------

    def execute(self, args: list[bytes]) -> Any:
        """Run one command; returns its reply or raises CommandError.

        The reply may not be shown to anyone before `pending_seq()` is durable
        (see `add_waiter`).  The call is counted in INFO commandstats under its
        command's or subcommand's name (`config|get`): rejected when refused here
        (arity, MISCONF, OOM, the value size limit), else timed, and failed if it raised.
        """
        # The hot path of every protocol: one dict hit on the name as sent ("SET", "get")
        # instead of a case-folding table lookup and a property per call.
        try:
            cmd, arity, is_write, subs, rec, reads = self._dispatch[args[0]]
        except (KeyError, IndexError):
            cmd, arity, is_write, subs, rec, reads = self._resolve(args)
        n = len(args)
        if n != arity and (arity > 0 or n < -arity):
            raise self._refuse(rec, self._arity_error(cmd))
        if subs is not None and n > 1:  # a container: CONFIG GET counts as config|get
            rec = self._subcommand(subs, args)
        ctx = self.ctx
        conn = ctx.conn
        if conn is not self._db_conn:  # (one identity test while the same client goes on)
            # Commands now come from `conn` (None: in-process callers, database 0).
            self._db_conn = conn
            db = conn.db if conn is not None else 0
            if db != self.db:
                self.select(db)
        writer = self.writer
        # (the writer's attributes, not the engine's properties over them: this runs per command)
        aof_error = writer.error
        if is_write:
            if aof_error is not None:
                raise self._refuse(rec, self._misconf())
            if max(map(len, args)) > self.config.max_value_bytes:
                limit = self.config.max_value_bytes
                raise self._refuse(rec, _too_big(next(len(a) for a in args if len(a) > limit), limit))
        ctx.now_ms = self.clock()
        ctx.writable = aof_error is None
        ctx.seen = 0
        # (a blocked client's command served after a wake-up looks its keys up again without
        # counting them: Redis serves it with LOOKUP_NOSTATS)
        ctx.reads = reads and not self.retrying
        evictor = self.evictor
        if evictor.maxmemory and self.memory.used > evictor.maxmemory:
            try:
                self._make_room(cmd)
            except CommandError as e:
                raise self._refuse(rec, e) from None
        mark, undo_mark = len(self._effects), len(self._undo)
        seq_before = writer.seq
        notifier = self.notifier
        pending = notifier.pending
        nmark = len(pending)
        if self.monitor is not None and "skip_monitor" in cmd.flags:
            # A script's EVAL/FCALL line goes before the lines of the commands it runs (Redis's
            # scripts feed MONITOR themselves before running; call() skips them afterwards).
            self.monitor(args, conn, ctx.now_ms)
        ctx.name = args[0]
        t0 = _clock_ns()
        try:
            reply = cmd.handler(ctx, args[1:])
        except BaseException as e:
            refused = type(e) is Refused  # (refused before running, in Redis: not a call, nor MONITOR's)
            if refused:
                rec[REJECTED] += 1
            else:
                add(rec, _clock_ns() - t0, True)
            if type(e) is not CountedError:  # (a script's error that one of its calls made is counted)
                self.stats.commands.errors.add(e)
            if self.monitor is not None and not self.retrying and not refused and _monitored(cmd, subs, args):
                self.monitor(args, ctx.conn, ctx.now_ms)
            self._rollback(mark, undo_mark)
            del pending[nmark:]
            if self.tracking.readers and "readonly" in cmd.flags:  # (Redis tracks a failed read too)
                self.tracking.read(ctx.conn, cmd, args)
            self._reply_seq = self._seen_seq(cmd)  # an error may reveal state too (WRONGTYPE)
            if notifier.outbox and self._batch_depth == 0:  # (a failed script keeps its writes)
                self._release_notifications()
            raise
        took = _clock_ns() - t0
        if type(reply) is not Block:  # (a parked command counts once, when served or timed out)
            # cmdstats.add, inlined: this runs per command (0: CALLS, 1: NS, 4: HIST, as literals)
            rec[0] += 1
            rec[1] += took
            rec[4 + (took * took).bit_length()] += 1
        if self.tracking.readers and "readonly" in cmd.flags:
            self.tracking.read(ctx.conn, cmd, args)
        slower_us = self.slowlog.slower_than_us
        if took >= slower_us * 1000 and slower_us >= 0 and "skip_slowlog" not in cmd.flags:
            conn = ctx.conn
            self.slowlog.maybe_record(args, took // 1000, ctx.now_ms, conn.addr if conn is not None else "",
                                      conn.name if conn is not None else b"")
        if len(pending) > nmark:
            notifier.command_done(nmark, cmd.name, self.ks.data)
        if self.monitor is not None and not self.retrying and _monitored(cmd, subs, args):
            self.monitor(args, ctx.conn, ctx.now_ms)
        if evictor.tracks_access:
            evictor.touch_command(ctx.ks, cmd.first_key, cmd.last_key, cmd.step, args[1:], ctx.now_ms)
        if self._effects and self._batch_depth == 0:  # (a handler that batches has committed already)
            if is_write or not _only_dels(self._effects):
                # (a command not flagged as a write that wrote anyway, a table mistake as XGROUP's
                # was, still makes its reply wait for its record: memory never ahead of disk)
                self._commit(False)
                self._reply_seq = writer.seq
            else:  # a read's effects are lazy-expiry DELs: they reveal nothing new
                self._commit(True)
                self._reply_seq = self._seen_seq(cmd)
        elif writer.seq != seq_before:
            self._reply_seq = writer.seq
        else:
            self._reply_seq = self._seen_seq(cmd)
        if notifier.outbox and self._batch_depth == 0:
            self._release_notifications()
        return reply

    def _release_notifications(self) -> None:
        """Publish the keyspace notifications gathered once what the last reply waits for is durable."""
        notifier = self.notifier
        messages = notifier.take()
        seq = self.pending_seq()
        if not seq:
            notifier.deliver(messages)
        else:
            self.add_waiter(seq, lambda error: notifier.deliver(messages) if error is None else None)

    def _subcommand(self, subs: dict[bytes, tuple[str, int]], args: list[bytes]) -> list[int]:
        """The commandstats record of a container's call (`config|get`'s; an unknown subcommand's
        goes nowhere), after Redis's arity check of the subcommand, which refuses before running."""
        found = find_sub(subs, args[1])
        if found is None:
            return self._uncounted
        name, arity = found
        rec = self.stats.commands.record_for(name)
        n = len(args)
        if n != arity and (arity > 0 or n < -arity):
            raise self._refuse(rec, f"ERR wrong number of arguments for '{name}' command")
        return rec

    def _arity_error(self, cmd: Command) -> str:
        """Redis's refusal of a wrong arity.  EXEC's aborts the transaction even outside MULTI, as
        Redis's rejectCommand does (execCommandAbort): the keys are unwatched and the reply is EXECABORT
        (inside MULTI and before AUTH the connection refuses it: Connection._reject)."""
        if cmd.name != "exec":
            return f"ERR wrong number of arguments for '{cmd.name}' command"
        conn = self.ctx.conn
        if conn is not None:
            conn.server.unwatch(conn)
        return exec_abort("wrong number of arguments for 'exec' command")

    def _refuse(self, rec: list[int], error: CommandError | str) -> CommandError:
        """A command refused before its handler ran: counted as rejected and its error reply counted."""
        rec[REJECTED] += 1
        self.stats.commands.errors.add(error)
        return error if isinstance(error, CommandError) else CommandError(error)

    def reject(self, args: list[bytes], error: CommandError | str) -> CommandError:
        """A call refused before it reached `execute` (NOAUTH, while MULTI queues, from a script):
        counted in INFO commandstats' rejected_calls, under the command's or subcommand's name (an
        unknown name counts nowhere), and its error reply in INFO errorstats.  Returns the error,
        for the caller to raise or reply with."""
        self.stats.commands.errors.add(error)
        name = _stats_name(args)
        if name is not None:
            self.stats.commands.reject(name)
        return error if isinstance(error, CommandError) else CommandError(error)

    def returned_error(self, args: list[bytes], error: CommandError) -> None:
        """A command inside EXEC whose reply is an error it returned instead of raising (a script's:
        raising would undo the transaction's writes): failed in INFO commandstats, as one that raised,
        and its error counted in INFO errorstats unless the script's call counted it already."""
        name = _stats_name(args)
        if name is not None:
            self.stats.commands.record_for(name)[FAILED] += 1
        if type(error) is not CountedError:
            self.stats.commands.errors.add(error)

    def queue_refusal(self, cmd: Command, args: list[bytes]) -> str | None:
        """Why Redis refuses a call before running it, after the command's own arity check (before
        authentication, as MULTI queues it): a container's unknown subcommand or a known one's wrong
        arity, then a protected call (DEBUG, MODULE LOAD: modules.py).  None: none of them."""
        refusal = self._sub_refusal(cmd, args)
        if refusal is None and cmd.name in _PROTECTED:
            return protected_refusal(args)
        return refusal

    def _sub_refusal(self, cmd: Command, args: list[bytes]) -> str | None:
        subs = BY_CONTAINER.get(cmd.name)
        if subs is None or len(args) < 2:
            return None
        found = find_sub(subs, args[1])
        if found is None and len(args[1]) <= 16 and (cmd.name, args[1].lower()) in _EXTRA_SUBS:
            return None
        if found is None:  # (Redis shows the first 128 bytes of the subcommand as sent)
            return (f"ERR unknown subcommand '{args[1][:128].decode(errors='replace')}'. "
                    f"Try {cmd.name.upper()} HELP.")
        name, arity = found
        n = len(args)
        if n != arity and (arity > 0 or n < -arity):
            return f"ERR wrong number of arguments for '{name}' command"
        return None

    def ran(self, args: list[bytes], took_ns: int, failed: bool, conn: Any = _UNKNOWN) -> None:
        """A command run outside `execute` (EXEC and DISCARD inside MULTI, a blocked command's
        timeout): count it, and show it to MONITOR (`conn`: who ran it)."""
        cmd = TABLE.get(args[0])
        if cmd is None:
            return
        add(self.stats.commands.record_for(cmd.name), took_ns, failed)
        if conn is not _UNKNOWN and self.monitor is not None and cmd.flags.isdisjoint(_NOT_MONITORED):
            self.monitor(args, conn, self.clock())

    def _seen_seq(self, cmd: Command) -> int:
        """The newest not-yet-durable record a read may have seen."""
        # Keyless (KEYS, SCAN, DBSIZE, ...): it may have seen anything.  A command whose keys move
        # (EVAL: its script's commands) notes in ctx.seen what it looked at, as keyed ones do.
        if cmd.first_key == 0 and "movablekeys" not in cmd.flags:
            return self._reveal_top
        seen = self.ctx.seen
        return seen if seen > self._all_seq else self._all_seq

    def _resolve(self, args: list[bytes]) -> _Entry:
        """The table entry for args[0] (remembered under that spelling), or Redis's error."""
        if not args:
            raise self.reject(args, "ERR empty command")
        cmd = TABLE.get(args[0])
        if cmd is None:
            raise self.reject(args, unknown_command(args))
        entry = (cmd, cmd.arity, cmd.is_write, BY_CONTAINER.get(cmd.name), self.stats.commands.record_for(cmd.name),
                 cmd.name in READ_LOOKUPS or ("readonly" in cmd.flags and cmd.name not in NO_STATS_LOOKUPS))
        if len(self._dispatch) < _DISPATCH_CACHE:  # bounded: clients may spell names in any case
            self._dispatch[bytes(args[0])] = entry
        return entry

    def _rollback(self, mark: int, undo_mark: int) -> None:
        undo = self._undo
        if len(undo) > undo_mark:
            undone = self._effects[mark:]
            start = undo_start(self.dbs[0], undo, undo_mark)  # the database the first undone entry is in
            if self.evictor.maxmemory:  # the estimate follows: recount the keys the undo puts back
                self.memory.rollback(start, undone, lambda: undo_effects(start, undo[undo_mark:]))
            else:
                undo_effects(start, undo[undo_mark:])
            del undo[undo_mark:]
        effects = self._effects
        if len(effects) > mark and any(e[0] == "SELECT" for e in effects[mark:]):
            # The record goes on from the database it was in before the undone part.
            self._rec_db = next((e[1] for e in reversed(effects[:mark]) if e[0] == "SELECT"), 0)
        del effects[mark:]

    # -- databases ------------------------------------------------------------------------

    def conn_db_changed(self, conn: Any) -> None:
        """`conn.db` changed (SELECT, RESET, the end of a script): its next command selects it."""
        if self._db_conn is conn:
            self._db_conn = _UNKNOWN

    def select(self, index: int) -> None:
        """Make database `index` the one commands work in (the caller checked the index)."""
        ks = self.dbs[index]
        self.db = index
        self.ks = ks
        self.ctx.ks = ks
        self.notifier.db = index

    @contextmanager
    def in_db(self, index: int) -> Iterator[Keyspace]:
        """Work in database `index` for a while (MOVE's and COPY ... DB's destination, active
        expiry): effects emitted meanwhile are logged after a SELECT of it."""
        before = self.db
        self.select(index)
        try:
            yield self.ks
        finally:
            self.select(before)

    def _record_select(self) -> None:
        """The record being built moves to the running command's database."""
        self._rec_db = db = self.db
        self._effects.append(("SELECT", db))
        self._undo.append(("ks", self.ks))

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
        if self._batch_depth == 0 and self.notifier.outbox:
            self._release_notifications()

    @property
    def in_batch(self) -> bool:
        """Inside batch() (MULTI/EXEC): the enclosing record will hold what runs now."""
        return self._batch_depth > 0

    def script_step(self, keep: Callable[[BaseException], bool]) -> _ScriptStep:
        """Group a script's effects into one AOF record, like batch(); but an error for which
        `keep(error)` is true keeps the writes made before it (Redis does not undo a failed
        script's writes), and any other error (a killed script) undoes them.  (A class, not a
        generator: EVALSHA enters one per call.)"""
        return _ScriptStep(self, keep)

    def _script_enter(self) -> tuple[int, int, Callable[[], int]]:
        self._batch_depth += 1
        mark, undo_mark = len(self._effects), len(self._undo)
        # Time stands still while a script runs, as in Redis 7: a key cannot expire between two
        # of its commands, and every command sees the same now.
        clock = self.clock
        now = clock()
        self.clock = lambda: now
        return mark, undo_mark, clock

    def _script_exit(self, state: tuple[int, int, Callable[[], int]], error: BaseException | None,
                     keep: Callable[[BaseException], bool]) -> None:
        mark, undo_mark, clock = state
        try:
            if error is not None and not keep(error):
                self._rollback(mark, undo_mark)
        finally:
            self.clock = clock
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._effects:
                self._commit()
                self._reply_seq = self.seq
                # An error reply after writes must wait for them too (execute() reads ctx.seen).
                self.ctx.seen = self.seq

    def check_value_size(self, n: int) -> None:
        limit = self.config.max_value_bytes
        if n > limit:
            raise CommandError(_too_big(n, limit))

    def _misconf(self) -> str:
        return self.writer.misconf()

    def _emit(self, eff: tuple) -> None:
        if self._rec_db != self.db:
            self._record_select()
        if self._on_effect is not None:
            self._on_effect(eff)
            apply_effect(self.ks, eff, self._undo)
            self._effects.append(eff)
            if self.memory.after or self.memory.recount_after:  # the estimate's second half (evict.py)
                self.memory.settle(self.ks.data, self.ks.expires)
            return
        apply_effect(self.ks, eff, self._undo)
        self._effects.append(eff)

    # -- notifications and maxmemory (notify.py, evict.py) ---------------------------------

    def observers_changed(self) -> None:
        """Install `_observe` if notifications or accounting are on (call after changing them);
        turning accounting on counts the keyspace once."""
        accounting = bool(self.evictor.maxmemory)
        if accounting and not self._accounting:
            self.memory.recount(self.ks.data, self.ks.expires)
        self._accounting = accounting
        self._on_effect = self._observe if accounting or self.notifier.on else None

    def _observe(self, eff: tuple) -> None:
        ks = self.ks
        if self._accounting:
            self.memory.effect(eff, ks.data, ks.expires)
        if self.notifier.on:
            self.notifier.before(eff, ks.data, ks.expires, self.ctx.now_ms)

    def _make_room(self, cmd: Command) -> None:
        """Evict until the estimate is under maxmemory; Redis's OOM error for a denyoom command
        if the policy cannot get there."""
        ev, mem = self.evictor, self.memory
        victims: list[bytes] = []
        while mem.used > ev.maxmemory and self.aof_error is None:
            choice = ev.choose_across(list(self.dbs.made()), self.ctx.now_ms)
            if choice is None:
                break
            index, key = choice
            with self.in_db(index):
                self.internal_effects([("DEL", key)], ("evicted", EVICTED))
            victims.append(key)
        self.stats.evicted_keys += len(victims)
        if mem.used > ev.maxmemory and "denyoom" in cmd.flags:
            raise CommandError(OOM)

    def _commit(self, lazy: bool = False) -> None:
        """Hand the command's effects to the writer as one record (lazy: only expiry DELs)."""
        effects = self._effects
        self._effects = []
        undo, self._undo = self._undo, []
        if self._rec_db:
            # The next record starts in database 0 (on replay too); so does an undo of several
            # records (the writer's, when the disk loses them) at this record's end.
            self._rec_db = 0
            undo.append(("ks", self.dbs[0]))
        seq = self.writer.append(effects, undo)
        self.snapshots.dirty += 1
        if not lazy:
            self._reveal_top = seq
            if len(effects) == 1 and effects[0][0] in _ONE_KEY:  # most records: one keyed effect
                self._pending_keys[effects[0][1]] = seq
            else:
                self._mark_pending(effects, seq)
        if self._listeners:
            self._notify(effects)
        for hook in self.commit_hooks:
            hook(effects)

    def _mark_pending(self, effects: list[tuple], seq: int) -> None:
        pending = self._pending_keys
        for eff in effects:
            op = eff[0]
            if op == "SELECT":
                continue
            if op == "FLUSHALL" or op == "FLUSHDB" or op == "SWAPDB" or op in LIBRARY_CMDS:
                # (a function library is no key: every reply may reveal it, through FCALL or LIST;
                # keys are marked by name, so a database-wide change may reveal any of them)
                self._all_seq = seq
            elif op == "MULTI":
                self._mark_pending(eff[1], seq)
            else:
                pending[eff[1]] = seq

    def internal_effects(self, effects: list[tuple], event: tuple[str, int] | None = None) -> None:
        """Apply and log effects the engine itself decides on (active expiry, eviction: nothing to
        wait for); `event` is the keyspace notification they make ("expired", "evicted")."""
        notifier = self.notifier
        nmark = len(notifier.pending)
        for eff in effects:
            self._emit(eff)
        del notifier.pending[nmark:]
        if event is not None and notifier.on:
            notifier.internal(event[0], event[1], effects)
        if self._batch_depth == 0 and self._effects:
            self._commit(lazy=True)
        if self._batch_depth == 0 and notifier.outbox:
            notifier.deliver(notifier.take())  # expiry and eviction reveal nothing to wait for

    # -- durability: the writer's (aof_writer.py), seen from here -------------------------

    @property
    def seq(self) -> int:
        return self.writer.seq

    @property
    def written_seq(self) -> int:
        return self.writer.written_seq

    @property
    def synced_seq(self) -> int:
        return self.writer.synced_seq

    @property
    def released_seq(self) -> int:
        """Durable up to this seq (AofWriter.durable_seq)."""
        return self.writer.durable_seq

    @property
    def aof(self) -> AofFile:
        return self.writer.aof

    @property
    def aof_error(self) -> str | None:
        return self.writer.error

    @property
    def policy(self) -> str:
        return self.writer.policy

    @property
    def dirty(self) -> int:
        return self.snapshots.dirty

    def pending_seq(self) -> int:
        """The seq the reply of the last command must wait for (0: it may be sent at once).

        A write waits for its own record; a read for the newest pending record
        of the keys it looked at (all records, for keyless commands).
        """
        seq = self._reply_seq
        return seq if seq > self.writer.durable_seq else 0

    def add_waiter(self, seq: int, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(None)` once `seq` is durable, or `callback(error)` if it never will be."""
        self.writer.add_waiter(seq, callback)

    def wait_durable(self, seq: int | None = None) -> asyncio.Future:
        seq = self.pending_seq() if seq is None else seq
        fut = asyncio.get_running_loop().create_future()

        def done(err: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(err) if err else fut.set_result(None)

        self.add_waiter(seq, done)
        return fut

    def _durable_to(self, rel: int) -> None:
        """The writer's durable_seq moved: forget pending marks it covers."""
        if self._reveal_top > self.writer.seq:
            # Records undone after a failed write: their seqs are free again, and a keyless read
            # must not wait for one (it would hang until the next write became durable).
            self._reveal_top = self.writer.seq
        pending = self._pending_keys
        if rel >= self.writer.seq:
            pending.clear()
            self._all_seq = 0
        elif pending:
            for key in [k for k, s in pending.items() if s <= rel]:
                del pending[key]

    def _undo_lost(self, undo: list) -> None:
        """The writer gave up on records: memory goes back to what is on disk."""
        if undo:
            undo_effects(self.dbs[0], undo)  # (each record's undo starts and ends in database 0)
            if self._accounting:
                self.memory.recount(self.ks.data, self.ks.expires)
        self._pending_keys.clear()
        self._all_seq = self._reply_seq = 0
        self._reveal_top = min(self._reveal_top, self.writer.written_seq)

    def flush_sync(self) -> None:
        """Write and (unless appendfsync no) fsync the buffer on this thread."""
        self.writer.flush_sync()

    def set_policy(self, policy: str) -> None:
        """Change appendfsync at run time (CONFIG SET); the caller updates `config` too."""
        self.writer.set_policy(policy)

    def _probe_disk(self) -> bool:
        """While writes are refused: probe the disk now, on this thread (tests, tools)."""
        if self.writer.error is None:
            return False
        if self.writer.probe_sync():
            self.writer._recovered()
        return self.writer.error is not None

    # -- the loop -----------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Drive flushing, fsync, expiry and automatic snapshots from an asyncio loop."""
        self._loop = loop or asyncio.get_running_loop()
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="atlas-io")
        self._expire_hz = self.config.active_expire_hz
        self._every(1.0 / self._expire_hz, self._active_expire_tick)
        self._every(1.0, self._cron)
        self.writer.attach(self._loop, self._io, self._every)
        self.snapshots.attach(self._loop)

    def _every(self, seconds: float, fn: Callable[[], Any]) -> None:
        loop = self._loop
        assert loop is not None

        slot = next(self._timer_ids)

        def tick() -> None:
            self._timers.pop(slot, None)
            if self._closed or self._loop is None:
                return
            if fn() is False:
                return
            self._timers[slot] = loop.call_later(seconds, tick)

        self._timers[slot] = loop.call_later(seconds, tick)

    def _active_expire_tick(self) -> bool:
        """One active-expiry cycle; after CONFIG SET hz the timer starts over at the new rate."""
        self._active_expire()
        hz = self.config.active_expire_hz
        if hz != self._expire_hz and not self._closed and self._loop is not None:
            self._expire_hz = hz
            self._every(1.0 / hz, self._active_expire_tick)
            return False  # (this timer stops: _every)
        return True

    def _active_expire(self) -> None:
        if self.aof_error is not None:
            return
        t0 = time.perf_counter()
        budget = self.config.active_expire_budget
        now = self.clock()
        volatile = due = 0
        for index, ks in list(self.dbs.made()):
            if not ks.expires:
                continue
            volatile += len(ks.expires)
            keys = ks.due_keys(now, budget)
            if keys:
                due += len(keys)
                self.stats.expired_keys += len(keys)
                with self.in_db(index):
                    self.internal_effects([("DEL", k) for k in keys], ("expired", EXPIRED))
                budget -= len(keys)
                if budget <= 0:
                    self.stats.expire_cycle_cap_reached += 1
                    break
        if volatile:
            # Redis estimates the share of its keys with a TTL that are expired but still there
            # by sampling them, and keeps a moving average (5% new, 95% old); here the heap gives
            # the due ones themselves, a lower bound when the budget stopped the cycle.
            stats = self.stats
            stats.expired_stale_perc = due / volatile * 0.05 + stats.expired_stale_perc * 0.95
            stats.expire_cycle_seconds += time.perf_counter() - t0

    def _cron(self) -> None:
        snaps = self.snapshots
        since = (self.clock() - self.stats.last_snapshot_ms) / 1000
        due = any(snaps.dirty >= changes and since >= secs for secs, changes in self.config.save)
        limit = self.config.snapshot_on_aof_bytes
        if not due and limit and self.aof.size >= limit:
            due = True
        snaps.cron(since, due)

    def _rewrite(self) -> None:
        """Acknowledged AOF pages may be lost: rewrite everything from memory with a snapshot."""
        if not self.snapshots.in_progress and self._loop is not None:
            self.snapshots.request().add_done_callback(lambda f: f.cancelled() or f.exception())

    # -- change notification ------------------------------------------------------------

    def subscribe(self, prefix: bytes, callback: Callable[[bytes | None], None]) -> Callable[[], None]:
        """Call `callback(key)` after each committed change under `prefix` (None: everything went)."""
        entry = (prefix, callback)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry) if entry in self._listeners else None

    def _notify(self, effects: list[tuple]) -> None:
        db = 0
        for eff in effects:
            op = eff[0]
            # (in-process listeners, the embedded Store's, watch database 0 only)
            if op == "SELECT":
                db = eff[1]
                continue
            if op == "SWAPDB" and 0 in eff[1:] and eff[1] != eff[2]:
                keys: list[bytes | None] = [None]
            elif db != 0 and op != "FLUSHALL":
                continue
            else:
                keys = [None] if op == "FLUSHALL" or op == "FLUSHDB" else list(effect_keys(eff))
            for key in keys:
                for prefix, cb in list(self._listeners):
                    if key is None or key.startswith(prefix):
                        if self._loop is not None:
                            self._loop.call_soon(cb, key)
                        else:
                            cb(key)

    # -- snapshots: the snapshotter's (snapshotter.py) ------------------------------------

    @property
    def snapshot_in_progress(self) -> bool:
        return self.snapshots.in_progress

    def bgsave(self, rederive: bool = False) -> asyncio.Future:
        """Start a background snapshot; the future gives SnapshotInfo, or SnapshotError (rederive:
        a rewrite's image, Snapshotter.request)."""
        return self.snapshots.request(rederive)

    def snapshot_sync(self) -> SnapshotInfo:
        """Snapshot in this process and thread (no loop): for tools working on an unowned dir."""
        if self._loop is not None:
            raise RuntimeError("snapshot_sync on an attached engine; use bgsave()")
        return self.snapshots.snapshot_sync()

    # -- introspection -------------------------------------------------------------------

    def data_path(self) -> Path:
        return self.dir.path


class _ScriptStep:
    """Engine.script_step's context manager."""

    __slots__ = ("engine", "keep", "state")

    def __init__(self, engine: Engine, keep: Callable[[BaseException], bool]) -> None:
        self.engine = engine
        self.keep = keep

    def __enter__(self) -> None:
        self.state = self.engine._script_enter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.engine._script_exit(self.state, exc, self.keep)


def _stats_name(args: list[bytes]) -> str | None:
    """The name INFO commandstats counts a call under (`config|get`); None for an unknown command
    or subcommand, which count nowhere."""
    cmd = TABLE.get(args[0]) if args else None
    if cmd is None:
        return None
    subs = BY_CONTAINER.get(cmd.name)
    if subs is None or len(args) < 2:
        return cmd.name
    found = find_sub(subs, args[1])
    return found[0] if found is not None else None


def _too_big(n: int, limit: int) -> str:
    return (f"ERR value of {n} bytes exceeds the maximum of {limit} bytes (atlas.max_value_bytes); "
            f"send a smaller value or raise the limit")


def _monitored(cmd: Command, subs: dict[bytes, tuple[str, int]] | None, args: list[bytes]) -> bool:
    """Whether MONITOR shows a call once it ran: not admin nor skip_monitor, a container's call
    judged by its subcommand (an unknown one was refused: not shown): CLIENT ID shows and CLIENT
    LIST, an admin one, does not."""
    if subs is not None and len(args) > 1:
        found = find_sub(subs, args[1])
        return found is not None and found[0] not in ADMIN_SUBS
    return cmd.flags.isdisjoint(_NOT_MONITORED)


def _only_dels(effects: list[tuple]) -> bool:
    """Whether a read's effects are what a read may make: DELs of keys it found expired."""
    for eff in effects:
        if eff[0] != "DEL" and eff[0] != "SELECT":
            return False
    return True
