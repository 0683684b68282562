"""Server commands: INFO SLOWLOG MEMORY LATENCY ROLE MONITOR TIME SAVE BGSAVE BGREWRITEAOF LASTSAVE
SHUTDOWN.  (COMMAND and its docs table are in docs.py, CONFIG in config.py.)

Most read the engine (`ctx.engine`) and, through the connection, the RESP
server (`ctx.conn.server`): client counts, limits, the password.  SAVE and
SHUTDOWN finish later than they return; they hand the connection a future
(`conn.defer`) and the connection sends the reply, in order, once it is done.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from helios_core import __version__
from helios_core.atlas.blocking import blocked_count
from helios_core.atlas.commands.table import (
    OK,
    SYNTAX,
    Ctx,
    Simple,
    command,
    err,
    parse_int,
)
from helios_core.atlas.evict import estimate
from helios_core.atlas.meminfo import human as _human
from helios_core.atlas.meminfo import peak_rss_bytes, rss_bytes
from helios_core.atlas.resp import Verbatim
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from helios_core.atlas.engine import Engine

__all__ = ["REDIS_COMPAT_VERSION", "info_text", "subcommand_error", "shutdown_options"]

log = get_logger("atlasd")

# The Redis version whose commands and replies ATLAS follows; reported where
# clients look for `redis_version` (some pick features by it).
REDIS_COMPAT_VERSION = "7.0.0"


def _log_failure(what: str) -> Callable[[Any], None]:
    """A done-callback for a background snapshot nobody awaits: log (and so retrieve) its error."""
    def done(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error(f"{what} failed", error=str(fut.exception()))
    return done


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    head = text.split(" ", 1)[0]
    return text if head.isupper() and head.isalpha() else f"ERR {text}"


def _function_count(engine: Any) -> int:
    """Functions registered (commands/functions.py); none to count when no library is stored."""
    if not engine.ks.functions:
        return 0
    from helios_core.atlas.commands.functions import registry_of  # (it imports this module)

    return len(registry_of(engine).functions)


def subcommand_error(container: str, sub: bytes, known: str) -> Exception:
    """Redis 7's error for a container command (CLIENT, CONFIG, ...): the wrong arity of a known
    subcommand (`known`: its names, space-separated), else an unknown subcommand."""
    name = sub.decode(errors="replace")
    if name.lower() in known.split():
        return err(f"ERR wrong number of arguments for '{container.lower()}|{name.lower()}' command")
    return err(f"ERR unknown subcommand '{name}'. Try {container} HELP.")


def _unknown_sub(name: str, sub: bytes) -> Exception:
    return err(f"ERR unknown subcommand '{sub.decode(errors='replace')}'. Try {name} HELP.")


# -- persistence -------------------------------------------------------------------

@command("save", 1, "admin noscript no_async_loading no_multi", keys=(0, 0, 0))
def save(ctx: Ctx, args: list[bytes]) -> Any:
    conn = ctx.conn
    if conn is None:
        raise err("ERR SAVE needs a client connection; in process use Engine.bgsave() or snapshot_sync()")
    engine: Engine = ctx.engine
    if engine.snapshot_in_progress:
        raise err("ERR Background save already in progress")
    conn.defer(engine.bgsave(), lambda info: OK)
    return None


def _background(ctx: Ctx, args: list[bytes], started: str, scheduled: str, what: str) -> Simple:
    engine: Engine = ctx.engine
    if ctx.conn is None:
        raise err(f"ERR {what.upper()} needs a client connection")
    # A rewrite's image chooses every encoding by content, as Redis's rewritten AOF loads; a
    # BGSAVE's keeps their history, as Redis with appendonly yes restarts from its AOF.
    rederive = what == "bgrewriteaof"
    if engine.snapshot_in_progress:
        if what == "bgsave" and not (args and args[0].upper() == b"SCHEDULE"):
            raise err("ERR Background save already in progress")
        def then_start(fut: Any) -> None:  # the running snapshot ended: start the scheduled one
            _log_failure(what)(fut)
            engine.bgsave(rederive=rederive).add_done_callback(_log_failure(what))

        engine.bgsave(rederive=rederive).add_done_callback(then_start)
        return Simple(scheduled)
    engine.bgsave(rederive=rederive).add_done_callback(_log_failure(what))
    return Simple(started)


@command("bgsave", -1, "admin noscript no_async_loading", keys=(0, 0, 0))
def bgsave(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) > 1 or (args and args[0].upper() != b"SCHEDULE"):
        raise err(SYNTAX)
    return _background(ctx, args, "Background saving started", "Background saving scheduled", "bgsave")


@command("bgrewriteaof", 1, "admin noscript no_async_loading", keys=(0, 0, 0))
def bgrewriteaof(ctx: Ctx, args: list[bytes]) -> Any:
    # The AOF is compacted by snapshotting and rotating it (datadir.py), so a
    # rewrite is a snapshot here.
    return _background(ctx, args, "Background append only file rewriting started",
                       "Background append only file rewriting scheduled", "bgrewriteaof")


@command("lastsave", 1, "fast loading stale", keys=(0, 0, 0))
def lastsave(ctx: Ctx, args: list[bytes]) -> Any:
    return ctx.engine.stats.last_snapshot_ms // 1000


def shutdown_options(args: list[bytes]) -> tuple[bool | None, bool, bool]:
    """SHUTDOWN's options as Redis 7.0 checks them: (SAVE, NOSAVE or neither: True/False/None, ABORT,
    FORCE); a syntax error for anything else or a bad mix."""
    save_opt: bool | None = None
    abort = force = False
    for raw in args:
        opt = raw.upper()
        if opt == b"NOSAVE" and save_opt is None:
            save_opt = False
        elif opt == b"SAVE" and save_opt is None:
            save_opt = True
        elif opt == b"FORCE":
            force = True
        elif opt == b"NOW":
            pass
        elif opt == b"ABORT" and len(args) == 1:
            abort = True
        else:
            raise err(SYNTAX)
    return save_opt, abort, force


@command("shutdown", -1, "admin noscript loading stale no_multi allow_busy", keys=(0, 0, 0))
def shutdown(ctx: Ctx, args: list[bytes]) -> Any:
    save_opt, abort, force = shutdown_options(args)
    conn = ctx.conn
    if conn is None:
        raise err("ERR SHUTDOWN needs a client connection; stop the process instead")
    if abort:
        raise err("ERR No shutdown in progress.")
    if conn.server.owner is not None:
        raise err(f"ERR this socket is served by {conn.server.owner}, which owns the data: stop that process "
                  f"(SIGTERM) to shut it down")
    # On success the connection closes without a reply (as Redis); the future
    # only ever resolves with an error.  SHUTDOWN SAVE snapshots first and, as Redis,
    # stays up with "Errors trying to SHUTDOWN" if that fails (FORCE: shut down anyway).
    if save_opt:
        conn.defer(conn.server.shutdown_after_snapshot(force), lambda _: None)
    else:
        conn.defer(conn.server.request_shutdown(False), lambda _: None)
    return None


@command("lolwut", -1, "readonly fast", keys=(0, 0, 0))
def lolwut(ctx: Ctx, args: list[bytes]) -> Any:
    """Redis 7.0's default LOLWUT: the version line.  VERSION 5 and 6 are Redis's generative art,
    random on every call; atlasd checks their arguments as Redis does and answers the line."""
    version = None
    if len(args) >= 2 and args[0].split(b"\0", 1)[0].lower() == b"version":
        version = parse_int(args[1]) & 0xFFFFFFFF  # (Redis prints it as an unsigned int)
        args = args[2:]
        if version == 5 or version == 6:
            for raw in args[:3 if version == 5 else 2]:  # (columns, squares per row and column | rows)
                parse_int(raw)
    return Verbatim(b"Redis ver. %s\n" % REDIS_COMPAT_VERSION.encode(), b"txt")


@command("time", 1, "loading stale fast", keys=(0, 0, 0))
def time_(ctx: Ctx, args: list[bytes]) -> Any:
    us = time.time_ns() // 1000
    return [b"%d" % (us // 1_000_000), b"%d" % (us % 1_000_000)]


# -- INFO ----------------------------------------------------------------------------

# Redis 7.0's sections: INFO / INFO default, then what "all" and "everything" add.
_DEFAULT_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules",
                     "errorstats", "cluster", "keyspace")
_ALL_SECTIONS = (*_DEFAULT_SECTIONS, "commandstats", "latencystats")


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _client_buffers(clients: Any) -> int:
    """Bytes the clients' connections hold: requests not parsed yet, replies not sent yet (queued
    behind durability, or in the transport's buffer) (INFO mem_clients_normal)."""
    total = 0
    for c in clients.values():
        total += c.parser.buffered() + sum(len(p) for _, p in c.queue if type(p) is bytes)
        if c.transport is not None:
            total += c.transport.get_write_buffer_size()
    return total


def _sections(names: list[str]) -> list[str]:
    want = [s.lower() for s in names]
    if not want or "default" in want:
        return [*_DEFAULT_SECTIONS, *(w for w in want if w not in _DEFAULT_SECTIONS and w != "default")]
    if "all" in want or "everything" in want:
        return list(_ALL_SECTIONS)
    return want


def info_text(engine: Engine, server: Any, sections: list[str]) -> str:
    """INFO's text: `# Section` headers and `field:value` lines, with Redis 7.0's sections and field
    names (fields with no meaning here, such as replication offsets, report what a lone primary does)."""
    want = set(_sections(sections))
    now = time.time()
    stats = engine.stats
    out: list[str] = []

    def section(name: str, fields: list[tuple[str, Any]]) -> None:
        if name.lower() in want:
            out.append(f"# {name}")
            out.extend(f"{k}:{v}" for k, v in fields)
            out.append("")

    uptime = max(0, int(now - stats.started_ms / 1000))
    hz = engine.config.active_expire_hz
    section("Server", [
        ("redis_version", REDIS_COMPAT_VERSION),
        ("redis_git_sha1", "00000000"),
        ("redis_git_dirty", 0),
        ("redis_build_id", "0"),
        ("atlas_version", __version__),
        ("redis_mode", "standalone"),
        ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("arch_bits", 64 if sys.maxsize > 2**32 else 32),
        ("monotonic_clock", "POSIX clock_gettime"),
        ("multiplexing_api", "epoll" if sys.platform.startswith("linux") else "kqueue"),
        ("atomicvar_api", "c11-builtin"),
        ("gcc_version", "0.0.0"),
        ("python_version", platform.python_version()),
        ("process_id", os.getpid()),
        ("process_supervised", "no"),
        ("run_id", getattr(server, "run_id", "")),
        ("tcp_port", getattr(server, "port", 0)),
        ("unix_socket", getattr(server, "socket_path", "")),
        ("server_time_usec", int(now * 1_000_000)),
        ("uptime_in_seconds", uptime),
        ("uptime_in_days", uptime // 86400),
        ("hz", hz),
        ("configured_hz", hz),
        ("lru_clock", int(now) & ((1 << 24) - 1)),
        ("executable", sys.executable),
        ("config_file", ""),
        ("io_threads_active", 0),
        ("data_dir", engine.data_path()),
    ])
    clients = getattr(server, "clients", {})
    section("Clients", [
        ("connected_clients", len(clients)),
        ("cluster_connections", 0),
        ("maxclients", getattr(server, "maxclients", 0)),
        ("client_recent_max_input_buffer", 0),
        ("client_recent_max_output_buffer", 0),
        ("blocked_clients", blocked_count(engine)),
        ("tracking_clients", len(engine.tracking.trackers)),
        ("clients_in_timeout_table", 0),
        ("pubsub_clients", sum(1 for c in clients.values() if c.subscribed)),
        ("watching_clients", len({c for conns in getattr(server, "watched", {}).values() for c in conns})),
    ])
    rss = rss_bytes()
    peak = peak_rss_bytes()
    ev = engine.evictor
    dataset = engine.memory.used if ev.maxmemory else None
    total_mem = _system_memory()
    scripts = engine.scripting
    lua = scripts.memory_used() if scripts is not None else 0  # (no Lua state until the first script)
    scripts_eval = scripts.scripts_bytes if scripts is not None else 0
    functions = sum(len(name) + len(code) for name, code in engine.ks.functions.items())
    clients_mem = _client_buffers(clients)
    writer = engine.writer
    startup = stats.startup_memory
    # Redis's overhead: its memory at startup, client and AOF buffers, the scripts' caches.
    overhead = min(rss, startup + clients_mem + writer.buffered + scripts_eval + functions)
    # Python's allocator gives no allocated/active/resident split: these are what Redis reports
    # with an allocator that has none (libc), the resident size for all three, so every ratio
    # between them is 1.00 and every difference 0.
    section("Memory", [
        ("used_memory", rss),
        ("used_memory_human", _human(rss)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", _human(rss)),
        ("used_memory_peak", peak),
        ("used_memory_peak_human", _human(peak)),
        ("used_memory_peak_perc", f"{100 * rss / peak:.2f}%" if peak else "0.00%"),
        ("used_memory_overhead", overhead),
        ("used_memory_startup", startup),
        # The keyspace estimate (evict.py) maxmemory limits; counted only while maxmemory is set.
        ("used_memory_dataset", dataset if dataset is not None else 0),
        ("used_memory_dataset_perc", f"{100 * dataset / rss:.2f}%" if dataset is not None and rss else "0.00%"),
        ("allocator_allocated", rss),
        ("allocator_active", rss),
        ("allocator_resident", rss),
        ("total_system_memory", total_mem),
        ("total_system_memory_human", _human(total_mem)),
        # One Lua state runs both EVAL's scripts and the function libraries: all of it is counted
        # as EVAL's (Redis 7.0 has a second state for functions).
        ("used_memory_lua", lua),
        ("used_memory_vm_eval", lua),
        ("used_memory_lua_human", _human(lua)),
        ("used_memory_scripts_eval", scripts_eval),
        ("number_of_cached_scripts", len(getattr(scripts, "scripts", {}) or {}) if scripts is not None else 0),
        ("number_of_functions", _function_count(engine)),
        ("number_of_libraries", len(engine.ks.functions)),
        ("used_memory_vm_functions", 0),
        ("used_memory_vm_total", lua),
        ("used_memory_vm_total_human", _human(lua)),
        ("used_memory_functions", functions),
        ("used_memory_scripts", scripts_eval + functions),
        ("used_memory_scripts_human", _human(scripts_eval + functions)),
        ("maxmemory", ev.maxmemory),
        ("maxmemory_human", _human(ev.maxmemory)),
        ("maxmemory_policy", ev.policy),
        ("allocator_frag_ratio", "1.00"),
        ("allocator_frag_bytes", 0),
        ("allocator_rss_ratio", "1.00"),
        ("allocator_rss_bytes", 0),
        ("rss_overhead_ratio", "1.00"),
        ("rss_overhead_bytes", 0),
        ("mem_fragmentation_ratio", "1.00"),
        ("mem_fragmentation_bytes", 0),
        ("mem_not_counted_for_evict", 0),
        ("mem_replication_backlog", 0),
        ("mem_total_replication_buffers", 0),
        ("mem_clients_slaves", 0),
        ("mem_clients_normal", clients_mem),
        ("mem_cluster_links", 0),
        ("mem_aof_buffer", writer.buffered),
        ("mem_allocator", "libc"),
        ("active_defrag_running", 0),
        ("lazyfree_pending_objects", 0),
        ("lazyfreed_objects", 0),
    ])
    aof = engine.aof
    snaps = engine.snapshots
    in_progress = int(engine.snapshot_in_progress)
    recovery = engine.recovery
    section("Persistence", [
        ("loading", 0),
        ("async_loading", 0),
        # The snapshot child reports its copy-on-write size once, when it ends (rdb_last_cow_size),
        # and not its progress.
        ("current_cow_peak", 0),
        ("current_cow_size", 0),
        ("current_cow_size_age", 0),
        ("current_fork_perc", "0.00"),
        ("current_save_keys_processed", 0),
        ("current_save_keys_total", snaps.keys_at_fork),
        ("rdb_changes_since_last_save", engine.dirty),
        ("rdb_bgsave_in_progress", in_progress),
        ("rdb_last_save_time", stats.last_snapshot_ms // 1000),
        ("rdb_last_bgsave_status", stats.last_snapshot_status),
        ("rdb_last_bgsave_time_sec", round(stats.last_snapshot_seconds) if stats.snapshots else -1),
        ("rdb_current_bgsave_time_sec", -1),
        ("rdb_saves", stats.snapshots),
        ("rdb_last_cow_size", stats.last_cow_size),
        # At startup: expired keys in the snapshot are loaded (and expire after), none dropped.
        ("rdb_last_load_keys_expired", 0),
        ("rdb_last_load_keys_loaded", recovery.snapshot_keys if recovery is not None else 0),
        ("rdb_last_bgsave_error", stats.last_snapshot_error),
        ("aof_enabled", 1),
        ("aof_rewrite_in_progress", in_progress),
        ("aof_rewrite_scheduled", 0),
        ("aof_last_rewrite_time_sec", -1),
        ("aof_current_rewrite_time_sec", -1),
        ("aof_last_bgrewrite_status", "ok"),
        ("aof_rewrites", stats.snapshots),
        ("aof_rewrites_consecutive_failures", stats.consecutive_failures),
        ("aof_last_write_status", "ok" if engine.aof_error is None else "err"),
        ("aof_last_error", engine.aof_error or ""),
        ("aof_last_cow_size", stats.last_cow_size),  # (a rewrite is a snapshot here)
        ("module_fork_in_progress", 0),
        ("module_fork_last_cow_size", 0),
        ("aof_current_size", aof.size if aof is not None else 0),
        ("aof_base_size", stats.last_snapshot_bytes),  # the snapshot the AOF parts replay onto
        ("aof_pending_rewrite", int(snaps.pending)),
        ("aof_buffer_length", writer.buffered),
        ("aof_pending_bio_fsync", writer.fsync_pending),
        ("aof_fsync_policy", engine.policy),
        ("aof_fsyncs", stats.fsync_count),
        ("aof_fsync_seconds_total", round(stats.fsync_seconds_total, 6)),
        ("aof_delayed_fsync", stats.delayed_fsync),
        ("aof_last_seq", engine.seq),
    ])
    counters = getattr(server, "counters", None)
    net_in, net_out = server.net_bytes() if server is not None else (0, 0)
    kbps_in, kbps_out = server.net_kbps() if server is not None else (0.0, 0.0)
    reads, writes = server.io_counts() if server is not None else (0, 0)
    section("Stats", [
        ("total_connections_received", getattr(counters, "connections", 0)),
        ("total_commands_processed", sum(stats.commands.values())),
        ("instantaneous_ops_per_sec", server.ops_per_sec() if server is not None else 0),
        ("total_net_input_bytes", net_in),
        ("total_net_output_bytes", net_out),
        ("total_net_repl_input_bytes", 0),
        ("total_net_repl_output_bytes", 0),
        ("instantaneous_input_kbps", f"{kbps_in:.2f}"),
        ("instantaneous_output_kbps", f"{kbps_out:.2f}"),
        ("instantaneous_input_repl_kbps", "0.00"),
        ("instantaneous_output_repl_kbps", "0.00"),
        ("rejected_connections", getattr(counters, "rejected", 0)),
        ("sync_full", 0),
        ("sync_partial_ok", 0),
        ("sync_partial_err", 0),
        ("expired_keys", stats.expired_keys),
        ("expired_stale_perc", f"{stats.expired_stale_perc * 100:.2f}"),
        ("expired_time_cap_reached_count", stats.expire_cycle_cap_reached),
        ("expire_cycle_cpu_milliseconds", int(stats.expire_cycle_seconds * 1000)),
        ("evicted_keys", stats.evicted_keys),
        ("evicted_clients", 0),
        ("total_eviction_exceeded_time", 0),
        ("current_eviction_exceeded_time", 0),
        ("keyspace_hits", stats.keyspace[0]),
        ("keyspace_misses", stats.keyspace[1]),
        ("pubsub_channels", len(getattr(server, "channels", {}))),
        ("pubsub_patterns", len(getattr(server, "patterns", {}))),
        ("pubsubshard_channels", len(getattr(server, "shard_channels", {}))),
        ("latest_fork_usec", stats.last_fork_usec),  # (each snapshot forks its child)
        ("total_forks", stats.forks),
        ("migrate_cached_sockets", 0),
        ("slave_expires_tracked_keys", 0),
        ("active_defrag_hits", 0),
        ("active_defrag_misses", 0),
        ("active_defrag_key_hits", 0),
        ("active_defrag_key_misses", 0),
        ("total_active_defrag_time", 0),
        ("current_active_defrag_time", 0),
        *engine.tracking.info().items(),
        ("unexpected_error_replies", 0),
        ("total_error_replies", stats.commands.errors.total),
        ("dump_payload_sanitizations", 0),
        ("total_reads_processed", reads),
        ("total_writes_processed", writes),
        ("io_threaded_reads_processed", 0),
        ("io_threaded_writes_processed", 0),
        ("reply_buffer_shrinks", 0),
        ("reply_buffer_expands", 0),
        ("total_aof_bytes", stats.aof_bytes_total),
    ])
    section("Replication", [
        ("role", "master"),
        ("connected_slaves", 0),
        ("master_failover_state", "no-failover"),
        ("master_replid", getattr(server, "run_id", "0" * 40)),
        ("master_replid2", "0" * 40),
        ("master_repl_offset", 0),
        ("second_repl_offset", -1),
        ("repl_backlog_active", 0),
        ("repl_backlog_size", 1048576),
        ("repl_backlog_first_byte_offset", 0),
        ("repl_backlog_histlen", 0),
    ])
    ru, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    section("CPU", [
        ("used_cpu_sys", f"{ru.ru_stime:.6f}"),
        ("used_cpu_user", f"{ru.ru_utime:.6f}"),
        ("used_cpu_sys_children", f"{ch.ru_stime:.6f}"),
        ("used_cpu_user_children", f"{ch.ru_utime:.6f}"),
        ("used_cpu_sys_main_thread", f"{ru.ru_stime:.6f}"),
        ("used_cpu_user_main_thread", f"{ru.ru_utime:.6f}"),
    ])
    section("Modules", [])
    # (cmdstats.py: per command and subcommand, the handler's own time; Redis lists them in its
    # hash table's order, ATLAS by name)
    if "commandstats" in want:
        section("Commandstats", stats.commands.info())
    section("Errorstats", stats.commands.errors.info())  # (cmdstats.ErrorStats)
    if "latencystats" in want:
        section("Latencystats", stats.commands.latency())
    section("Cluster", [("cluster_enabled", 0)])
    now = engine.clock()
    section("Keyspace", [(f"db{i}", f"keys={len(ks)},expires={len(ks.expires)},avg_ttl={ks.avg_ttl(now)}")
                         for i, ks in engine.dbs.non_empty()])
    return "\r\n".join(out)


@command("info", -1, "loading stale", keys=(0, 0, 0))
def info(ctx: Ctx, args: list[bytes]) -> Any:
    server = ctx.conn.server if ctx.conn is not None else None
    return info_text(ctx.engine, server, [a.decode(errors="replace") for a in args]).encode()


# -- SLOWLOG MEMORY LATENCY ROLE ------------------------------------------------------------



def _help(name: str, lines: list[str]) -> list[Simple]:
    return [Simple(f"{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
            *(Simple(line) for line in lines), Simple("HELP"), Simple("    Prints this help.")]


@command("slowlog", -2, "admin loading stale", keys=(0, 0, 0))
def slowlog(ctx: Ctx, args: list[bytes]) -> Any:
    log_ = ctx.engine.slowlog
    sub, rest = args[0].upper(), args[1:]
    if sub == b"GET" and len(rest) <= 1:
        count = 10
        if rest:
            try:
                count = int(rest[0])
            except ValueError:
                raise err("ERR count should be greater than or equal to -1") from None
            if count < -1:
                raise err("ERR count should be greater than or equal to -1")
        return log_.get(count)
    if sub == b"LEN" and not rest:
        return len(log_)
    if sub == b"RESET" and not rest:
        log_.reset()
        return OK
    if sub == b"HELP" and not rest:
        return _help("SLOWLOG", ["GET [<count>]",
                                 "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                                 "    Entries are made of:",
                                 "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                                 "    client name", "LEN", "    Return the length of the slowlog.", "RESET",
                                 "    Reset the slowlog."])
    if sub in (b"GET", b"LEN", b"RESET", b"HELP"):
        raise err(f"ERR wrong number of arguments for 'slowlog|{sub.decode().lower()}' command")
    raise _unknown_sub("SLOWLOG", args[0])


@command("memory", -2, "readonly", keys=(0, 0, 0))
def memory(ctx: Ctx, args: list[bytes]) -> Any:
    """MEMORY USAGE answers the estimate maxmemory counts (evict.py), not allocator bytes."""
    sub, rest = args[0].upper(), args[1:]
    if sub == b"USAGE" and rest:
        if len(rest) not in (1, 3) or (len(rest) == 3 and rest[1].upper() != b"SAMPLES"):
            raise err(SYNTAX)
        if len(rest) == 3:
            try:
                int(rest[2])
            except ValueError:
                raise err("ERR value is not an integer or out of range") from None
        value = ctx.lookup(rest[0])
        if value is None:
            return None
        return estimate(rest[0], value, rest[0] in ctx.ks.expires)
    if sub == b"DOCTOR" and not rest:
        return b"Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs " \
               b"on this base."
    if sub == b"PURGE" and not rest:
        return OK
    if sub == b"MALLOC-STATS" and not rest:
        return b"Stats not supported for the current allocator"
    if sub == b"STATS" and not rest:
        engine: Engine = ctx.engine
        rss = rss_bytes()
        return {b"peak.allocated": rss, b"total.allocated": rss, b"dataset.bytes": engine.memory.used,
                b"keys.count": len(ctx.ks)}
    if sub == b"HELP" and not rest:
        return _help("MEMORY", ["DOCTOR", "    Return memory problems reports.", "MALLOC-STATS",
                                "    Return internal statistics report from the memory allocator.", "PURGE",
                                "    Attempt to purge dirty pages for reclamation by the allocator.", "STATS",
                                "    Return information about the memory usage of the server.",
                                "USAGE <key> [SAMPLES <count>]",
                                "    Return memory in bytes used by <key> and its value. Nested values are",
                                "    sampled up to <count> times (default: 5, 0 means sample all)."])
    if sub in (b"USAGE", b"DOCTOR", b"PURGE", b"MALLOC-STATS", b"STATS", b"HELP"):
        raise err(f"ERR wrong number of arguments for 'memory|{sub.decode().lower()}' command")
    raise _unknown_sub("MEMORY", args[0])


@command("latency", -2, "admin noscript loading stale", keys=(0, 0, 0))
def latency(ctx: Ctx, args: list[bytes]) -> Any:
    """Latency monitoring is not implemented: no event is ever recorded, so LATEST and HISTORY are
    empty, GRAPH has no samples and RESET resets nothing (0), as in a Redis with
    latency-monitor-threshold 0.  HISTOGRAM
    is latency tracking, the per-command histograms of INFO latencystats (cmdstats.py)."""
    sub, rest = args[0].upper(), args[1:]
    if sub == b"LATEST" and not rest:
        return []
    if sub == b"HISTORY" and len(rest) == 1:
        return []
    if sub == b"RESET":
        return 0
    if sub == b"GRAPH" and len(rest) == 1:
        raise err(f"ERR No samples available for event '{rest[0].decode(errors='replace')}'")
    if sub == b"DOCTOR" and not rest:
        return (b"I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. "
                b"You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. "
                b"If we weren't in a deep space mission I'd suggest to take a look at "
                b"https://redis.io/topics/latency-monitor.\n")
    if sub == b"HISTOGRAM":
        names = [a.decode(errors="replace").lower() for a in rest] if rest else None
        return ctx.engine.stats.commands.histograms(names)
    if sub == b"HELP" and not rest:
        return _help("LATENCY", ["DOCTOR", "    Return a human readable latency analysis report.", "GRAPH <event>",
                                 "    Return an ASCII latency graph for the <event> class.", "HISTORY <event>",
                                 "    Return time-latency samples for the <event> class.", "LATEST",
                                 "    Return the latest latency samples for all events.",
                                 "RESET [<event> ...]",
                                 "    Reset latency data of one or more <event> classes.",
                                 "    (default: reset all data for all event classes)",
                                 "HISTOGRAM [COMMAND ...]",
                                 "    Return a cumulative distribution of latencies in the format of a histogram "
                                 "for the specified command names.",
                                 "    If no commands are specified then all histograms are replied."])
    if sub in (b"LATEST", b"HISTORY", b"GRAPH", b"DOCTOR", b"HELP"):
        raise err(f"ERR wrong number of arguments for 'latency|{sub.decode().lower()}' command")
    raise _unknown_sub("LATENCY", args[0])


@command("role", 1, "noscript loading stale fast", keys=(0, 0, 0))
def role(ctx: Ctx, args: list[bytes]) -> Any:
    return [b"master", 0, []]


def _repr_arg(a: bytes) -> str:
    """An argument as MONITOR shows it (Redis's sdscatrepr): quoted, with C escapes."""
    out = ['"']
    for c in a:
        ch = chr(c)
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch in "\n\r\t\a\b":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b"}[ch])
        elif 32 <= c < 127:
            out.append(ch)
        else:
            out.append(f"\\x{c:02x}")
    out.append('"')
    return "".join(out)


@command("monitor", 1, "admin noscript loading stale", keys=(0, 0, 0), conn="no_multi")
def monitor(ctx: Ctx, args: list[bytes]) -> Any:
    """Stream every command the server runs to this connection, as Redis 7.0's MONITOR lines.

    As in Redis: a line is fed once the command ran (failed ones too; refused ones, and admin
    commands, never), so EXEC's line follows its commands'; EVAL, EVALSHA and FCALL (flagged
    skip_monitor) are fed as they start, so their line comes first and the commands their script
    runs follow as `[<db> lua]` lines.  A blocked command shows once, when it blocks.  A monitor
    stops when its connection closes."""
    conn = ctx.conn
    if conn is None:
        raise err("ERR MONITOR needs a client connection")
    engine: Engine = ctx.engine
    watchers: list[Any] = getattr(engine, "monitors", [])
    engine.monitors = watchers  # type: ignore[attr-defined]
    if conn not in watchers:
        watchers.append(conn)

    def feed(argv: list[bytes], who: Any, now_ms: int) -> None:
        live = [c for c in watchers if not c.closing and c.transport is not None and not c.transport.is_closing()]
        watchers[:] = live
        if not live:
            engine.monitor = None
            return
        # A command a script runs: "[<db> lua]", in the database the script is in after it (its
        # SELECT's: the connection's, until the script ends).  The script's own line came before
        # it: EVAL and FCALL are fed as they start.
        scripting = engine.scripting
        in_lua = who is None or (scripting is not None and scripting.running)
        where = "lua" if in_lua else who.addr
        us = time.time_ns() // 1000
        if argv[0].lower() in (b"auth", b"hello"):  # never show a password (Redis redacts them too)
            argv = [argv[0], *(b"(redacted)" for _ in argv[1:])]
        db = who.db if who is not None else engine.db  # (after the command, as Redis 7.0: SELECT's new one)
        line = Simple(f"{us // 1_000_000}.{us % 1_000_000:06d} [{db} {where}] " + " ".join(_repr_arg(a) for a in argv))
        for c in live:
            c.push(c.enc(line, c.resp3))

    engine.monitor = feed
    return OK
