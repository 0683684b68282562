"""Server commands: INFO COMMAND CONFIG SLOWLOG MEMORY LATENCY ROLE MONITOR TIME SAVE BGSAVE BGREWRITEAOF
LASTSAVE SHUTDOWN.

Most read the engine (`ctx.engine`) and, through the connection, the RESP
server (`ctx.conn.server`): client counts, limits, the password.  SAVE and
SHUTDOWN finish later than they return; they hand the connection a future
(`conn.defer`) and the connection sends the reply, in order, once it is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    TABLE,
    Command,
    Ctx,
    Simple,
    command,
    err,
)
from helios_core.atlas.evict import POLICIES, estimate, parse_bytes
from helios_core.atlas.glob import compile_glob
from helios_core.atlas.notify import flags_to_string, parse_flags
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from helios_core.atlas.engine import Engine

__all__ = ["REDIS_COMPAT_VERSION", "info_text", "command_info", "DOCS", "subcommand_error", "idle_timeout",
           "start_idle_reaper"]

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
    if engine.snapshot_in_progress:
        if what == "bgsave" and not (args and args[0].upper() == b"SCHEDULE"):
            raise err("ERR Background save already in progress")
        def then_start(fut: Any) -> None:  # the running snapshot ended: start the scheduled one
            _log_failure(what)(fut)
            engine.bgsave().add_done_callback(_log_failure(what))

        engine.bgsave().add_done_callback(then_start)
        return Simple(scheduled)
    engine.bgsave().add_done_callback(_log_failure(what))
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


@command("shutdown", -1, "admin noscript loading stale no_multi allow_busy", keys=(0, 0, 0))
def shutdown(ctx: Ctx, args: list[bytes]) -> Any:
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


@command("time", 1, "loading stale fast", keys=(0, 0, 0))
def time_(ctx: Ctx, args: list[bytes]) -> Any:
    us = time.time_ns() // 1000
    return [b"%d" % (us // 1_000_000), b"%d" % (us % 1_000_000)]


# -- INFO ----------------------------------------------------------------------------

# Redis 7.0's sections: INFO / INFO default, then what "all" and "everything" add.
_DEFAULT_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules",
                     "errorstats", "cluster", "keyspace")
_ALL_SECTIONS = (*_DEFAULT_SECTIONS, "commandstats", "latencystats")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return str(n)


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
        ("tracking_clients", 0),
        ("clients_in_timeout_table", 0),
        ("pubsub_clients", sum(1 for c in clients.values() if c.subscribed)),
        ("watching_clients", len({c for conns in getattr(server, "watched", {}).values() for c in conns})),
    ])
    rss = _rss_bytes()
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss)
    ev = engine.evictor
    dataset = engine.memory.used if ev.maxmemory else None
    total_mem = _system_memory()
    scripts = engine.scripting
    section("Memory", [
        ("used_memory", rss),
        ("used_memory_human", _human(rss)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", _human(rss)),
        ("used_memory_peak", peak),
        ("used_memory_peak_human", _human(peak)),
        ("used_memory_peak_perc", f"{100 * rss / peak:.2f}%" if peak else "0.00%"),
        # The keyspace estimate (evict.py) maxmemory limits; counted only while maxmemory is set.
        ("used_memory_dataset", dataset if dataset is not None else 0),
        ("used_memory_dataset_perc", f"{100 * dataset / rss:.2f}%" if dataset is not None and rss else "0.00%"),
        ("total_system_memory", total_mem),
        ("total_system_memory_human", _human(total_mem)),
        ("number_of_cached_scripts", len(getattr(scripts, "scripts", {}) or {}) if scripts is not None else 0),
        ("maxmemory", ev.maxmemory),
        ("maxmemory_human", _human(ev.maxmemory)),
        ("maxmemory_policy", ev.policy),
        ("mem_fragmentation_ratio", "1.00"),
        ("mem_allocator", "libc"),
        ("lazyfree_pending_objects", 0),
    ])
    aof = engine.aof
    in_progress = int(engine.snapshot_in_progress)
    section("Persistence", [
        ("loading", 0),
        ("async_loading", 0),
        ("rdb_changes_since_last_save", engine.dirty),
        ("rdb_bgsave_in_progress", in_progress),
        ("rdb_last_save_time", stats.last_snapshot_ms // 1000),
        ("rdb_last_bgsave_status", stats.last_snapshot_status),
        ("rdb_last_bgsave_time_sec", round(stats.last_snapshot_seconds) if stats.snapshots else -1),
        ("rdb_current_bgsave_time_sec", -1),
        ("rdb_saves", stats.snapshots),
        ("rdb_last_cow_size", stats.last_cow_size),
        ("rdb_last_bgsave_error", stats.last_snapshot_error),
        ("aof_enabled", 1),
        ("aof_rewrite_in_progress", in_progress),
        ("aof_rewrite_scheduled", 0),
        ("aof_last_rewrite_time_sec", -1),
        ("aof_current_rewrite_time_sec", -1),
        ("aof_last_bgrewrite_status", "ok"),
        ("aof_rewrites", stats.snapshots),
        ("aof_last_write_status", "ok" if engine.aof_error is None else "err"),
        ("aof_last_error", engine.aof_error or ""),
        ("aof_current_size", aof.size if aof is not None else 0),
        ("aof_buffer_length", 0),
        ("aof_fsync_policy", engine.policy),
        ("aof_fsyncs", stats.fsync_count),
        ("aof_fsync_seconds_total", round(stats.fsync_seconds_total, 6)),
        ("aof_delayed_fsync", stats.delayed_fsync),
        ("aof_last_seq", engine.seq),
    ])
    counters = getattr(server, "counters", None)
    net_in, net_out = server.net_bytes() if server is not None else (0, 0)
    section("Stats", [
        ("total_connections_received", getattr(counters, "connections", 0)),
        ("total_commands_processed", sum(stats.commands.values())),
        ("instantaneous_ops_per_sec", server.ops_per_sec() if server is not None else 0),
        ("total_net_input_bytes", net_in),
        ("total_net_output_bytes", net_out),
        ("rejected_connections", getattr(counters, "rejected", 0)),
        ("sync_full", 0),
        ("sync_partial_ok", 0),
        ("sync_partial_err", 0),
        ("expired_keys", stats.expired_keys),
        ("evicted_keys", stats.evicted_keys),
        ("evicted_clients", 0),
        # Hits and misses are not counted (a lookup does not know who asked): always 0.
        ("keyspace_hits", 0),
        ("keyspace_misses", 0),
        ("pubsub_channels", len(getattr(server, "channels", {}))),
        ("pubsub_patterns", len(getattr(server, "patterns", {}))),
        ("latest_fork_usec", 0),
        ("total_forks", 0),
        ("tracking_total_keys", 0),
        ("total_error_replies", 0),
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
    section("Commandstats", [(f"cmdstat_{name}", f"calls={n},usec=0,usec_per_call=0.00,rejected_calls=0,"
                                                 f"failed_calls=0") for name, n in sorted(stats.commands.items())])
    section("Errorstats", [])
    section("Latencystats", [])
    section("Cluster", [("cluster_enabled", 0)])
    ks = engine.ks
    section("Keyspace", [("db0", f"keys={len(ks)},expires={len(ks.expires)},avg_ttl=0")] if len(ks) else [])
    return "\r\n".join(out)


@command("info", -1, "loading stale", keys=(0, 0, 0))
def info(ctx: Ctx, args: list[bytes]) -> Any:
    server = ctx.conn.server if ctx.conn is not None else None
    return info_text(ctx.engine, server, [a.decode(errors="replace") for a in args]).encode()


# -- COMMAND ---------------------------------------------------------------------------

_ACL = {"string": "@string", "generic": "@keyspace", "sorted-set": "@sortedset", "hash": "@hash", "set": "@set",
        "connection": "@connection",
        "transactions": "@transaction", "pubsub": "@pubsub", "server": "@admin"}


def command_info(cmd: Command) -> list:
    """One COMMAND / COMMAND INFO entry, shaped as Redis 7 sends it."""
    flags = [Simple(f) for f in sorted(cmd.flags)]
    group = DOCS.get(cmd.name, ("generic",))[0]
    acl = [Simple("@write" if cmd.is_write else "@read")] if cmd.first_key else []
    acl.append(Simple(_ACL.get(group, "@keyspace")))
    if "fast" in cmd.flags:
        acl.append(Simple("@fast"))
    return [cmd.name.encode(), cmd.arity, flags, cmd.first_key, cmd.last_key, cmd.step, acl, [], [], []]


def _command_docs(cmd: Command) -> dict:
    group, since, syntax, summary = DOCS.get(cmd.name, ("generic", "1.0.0", "", cmd.doc.strip()))
    doc: dict[bytes, Any] = {b"summary": summary.encode(), b"since": since.encode(), b"group": group.encode(),
                             b"complexity": b"", b"doc_flags": set()}
    if syntax:
        doc[b"arguments"] = [{b"name": syntax.encode(), b"type": b"string"}]
    return doc


@command("command", -1, "loading stale", keys=(0, 0, 0))
def command_(ctx: Ctx, args: list[bytes]) -> Any:
    cmds = TABLE.commands
    if not args:
        return [command_info(c) for c in cmds.values()]
    sub, rest = args[0].upper(), args[1:]
    if sub == b"COUNT" and not rest:
        return len(cmds)
    if sub == b"INFO":
        if not rest:
            return [command_info(c) for c in cmds.values()]
        found = [TABLE.get(name) for name in rest]
        return [command_info(c) if c is not None else None for c in found]
    if sub == b"DOCS":
        names = rest or list(cmds)
        out: dict[bytes, Any] = {}
        for name in names:
            c = TABLE.get(name)
            if c is not None:
                out[c.name.encode()] = _command_docs(c)
        return out
    if sub == b"LIST":
        names = [c.encode() for c in (cmd.name for cmd in cmds.values())]
        if len(rest) == 3 and rest[0].upper() == b"FILTERBY" and rest[1].upper() == b"PATTERN":
            rx = compile_glob(rest[2], nocase=True)
            names = [n for n in names if rx.match(n)]
        elif rest:
            raise err(SYNTAX)
        return names
    if sub == b"GETKEYS" and len(rest) >= 2:
        return _getkeys(rest)
    if sub == b"GETKEYS":
        raise err("ERR wrong number of arguments for 'command|getkeys' command")
    if sub == b"HELP" and not rest:
        return [Simple(s) for s in ("COMMAND [<subcommand>]", "COUNT", "INFO [<command-name> ...]",
                                    "DOCS [<command-name> ...]", "LIST [FILTERBY PATTERN <pattern>]",
                                    "GETKEYS <full-command>", "HELP")]
    raise subcommand_error("COMMAND", args[0], "count info docs list getkeys getkeysandflags help")


# Where the keys are in commands whose key count is an argument: name -> (index of numkeys in the
# command line, keys before it (a destination)).
_NUMKEYS: dict[str, tuple[int, int]] = {
    "eval": (2, 0), "evalsha": (2, 0), "eval_ro": (2, 0), "evalsha_ro": (2, 0), "fcall": (2, 0),
    "fcall_ro": (2, 0), "zunion": (1, 0), "zinter": (1, 0), "zdiff": (1, 0), "zintercard": (1, 0),
    "sintercard": (1, 0), "lmpop": (1, 0), "zmpop": (1, 0), "blmpop": (2, 0), "bzmpop": (2, 0),
    "zunionstore": (2, 1), "zinterstore": (2, 1), "zdiffstore": (2, 1),
}


def _getkeys(argv: list[bytes]) -> list[bytes]:
    """COMMAND GETKEYS: the key arguments of `argv` (a whole command line)."""
    c = TABLE.get(argv[0])
    if c is None:
        raise err("ERR Invalid command specified")
    movable = _NUMKEYS.get(c.name)
    if c.first_key <= 0 and movable is None:
        raise err("ERR The command has no key arguments")
    n = len(argv)
    if (c.arity > 0 and n != c.arity) or n < -c.arity:
        raise err("ERR Invalid number of arguments specified for command")
    if movable is not None:
        at, before = movable
        try:
            numkeys = int(argv[at])
        except ValueError:
            return []
        if numkeys < 0 or at + 1 + numkeys > n:
            return []
        return [*argv[at - before:at], *argv[at + 1:at + 1 + numkeys]]
    last = c.last_key if c.last_key >= 0 else n + c.last_key
    return argv[c.first_key:last + 1:c.step]


# -- CONFIG -----------------------------------------------------------------------------

def _yesno(v: bool) -> bytes:
    return b"yes" if v else b"no"


def _get_params(ctx: Ctx) -> dict[str, Callable[[], bytes]]:
    engine: Engine = ctx.engine
    server = ctx.conn.server if ctx.conn is not None else None
    cfg = engine.config
    params: dict[str, Callable[[], bytes]] = {
        "appendonly": lambda: b"yes",
        "appendfsync": lambda: engine.policy.encode(),
        "save": lambda: " ".join(f"{s} {c}" for s, c in cfg.save).encode(),
        "max-value-bytes": lambda: b"%d" % cfg.max_value_bytes,
        "proto-max-bulk-len": lambda: b"%d" % cfg.max_value_bytes,
        "dir": lambda: str(engine.data_path()).encode(),
        "dbfilename": lambda: b"dump.rdb",
        "appendfilename": lambda: b"appendonly.aof",
        "databases": lambda: b"1",
        "hz": lambda: b"%d" % cfg.active_expire_hz,
        "maxmemory": lambda: b"%d" % engine.evictor.maxmemory,
        "maxmemory-policy": lambda: engine.evictor.policy.encode(),
        "maxmemory-samples": lambda: b"%d" % engine.evictor.samples,
        "notify-keyspace-events": lambda: flags_to_string(engine.notifier.flags).encode(),
        "slowlog-log-slower-than": lambda: b"%d" % engine.slowlog.slower_than_us,
        "slowlog-max-len": lambda: b"%d" % engine.slowlog.max_len,
        "latency-monitor-threshold": lambda: b"0",
        "timeout": lambda: b"%d" % idle_timeout(engine),
        "daemonize": lambda: b"no",
        "cluster-enabled": lambda: b"no",
    }
    settings = engine.settings
    def stored(name: str) -> Callable[[], bytes]:
        return lambda: settings.get(_ALIASES.get(name, name), _ENCODING[name][2])

    for name in _ENCODING:
        params[name] = stored(name)
    if server is not None:
        params.update({
            "requirepass": lambda: (server.requirepass or b""),
            "maxclients": lambda: b"%d" % server.maxclients,
            "bind": lambda: server.bind.encode(),
            "port": lambda: b"%d" % server.port,
            "unixsocket": lambda: str(server.socket_path).encode(),
            "unixsocketperm": lambda: b"600",
            "protected-mode": lambda: _yesno(server.protected_mode),
            "client-output-buffer-limit": lambda: (
                b"normal 0 0 0 replica 0 0 0 pubsub %d %d 0" % (server.pubsub_limit, server.pubsub_limit)),
        })
    return params


# Encoding parameters: stored and returned, no effect (ATLAS has one encoding per type).
# name -> (min, max, default); the ziplist names are aliases of the listpack ones, as in Redis 7.0.
_LONG_MAX = (1 << 63) - 1
_INT_MAX = (1 << 31) - 1
_ENCODING: dict[str, tuple[int, int, bytes]] = {
    "hash-max-listpack-entries": (0, _LONG_MAX, b"512"),
    "hash-max-listpack-value": (0, _LONG_MAX, b"64"),
    "zset-max-listpack-entries": (0, _LONG_MAX, b"128"),
    "zset-max-listpack-value": (0, _LONG_MAX, b"64"),
    "list-max-listpack-size": (-_INT_MAX - 1, _INT_MAX, b"-2"),
    "list-compress-depth": (0, _INT_MAX, b"0"),
    "set-max-intset-entries": (0, _LONG_MAX, b"512"),
    "stream-node-max-bytes": (0, _LONG_MAX, b"4096"),
    "stream-node-max-entries": (0, _LONG_MAX, b"100"),
    "hll-sparse-max-bytes": (0, _LONG_MAX, b"3000"),
    "active-expire-effort": (1, 10, b"1"),
}
_ALIASES = {"hash-max-ziplist-entries": "hash-max-listpack-entries",
            "hash-max-ziplist-value": "hash-max-listpack-value",
            "zset-max-ziplist-entries": "zset-max-listpack-entries",
            "zset-max-ziplist-value": "zset-max-listpack-value",
            "list-max-ziplist-size": "list-max-listpack-size"}
_ENCODING.update({alias: _ENCODING[name] for alias, name in _ALIASES.items()})
# Redis parameters that exist but cannot change at run time (CONFIG SET says so, in Redis's words).
_IMMUTABLE = frozenset({"daemonize", "databases", "io-threads", "supervised", "pidfile", "logfile", "syslog-enabled",
                        "syslog-ident", "cluster-enabled", "aclfile", "always-show-logo", "appendfilename",
                        "appenddirname", "tcp-backlog", "set-proc-title", "disable-thp", "cluster-config-file",
                        "enable-protected-configs", "enable-debug-command", "enable-module-command"})


def idle_timeout(engine: Engine) -> int:
    """The `timeout` parameter: seconds a client may idle before atlasd closes it (0: never)."""
    return int(engine.settings.get("timeout", b"0"))


def _int_in(v: bytes, lo: int, hi: int) -> int:
    try:
        n = int(v)
    except ValueError:
        raise ValueError("argument couldn't be parsed into an integer") from None
    if not lo <= n <= hi:
        raise ValueError(f"argument must be between {lo} and {hi} inclusive")
    return n


def _set_failed(name: str, why: str) -> Exception:
    return err(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")


def _setters(ctx: Ctx) -> dict[str, Callable[[bytes], Callable[[], None]]]:
    """name -> validate(value) returning the function that applies it (so a multi-SET is all or nothing)."""
    engine: Engine = ctx.engine
    server = ctx.conn.server if ctx.conn is not None else None

    def replace_config(**changes: Any) -> None:
        engine.config = dataclasses.replace(engine.config, **changes)

    def appendfsync(v: bytes) -> Callable[[], None]:
        policy = v.decode(errors="replace").lower()
        if policy not in ("always", "everysec", "no"):
            raise ValueError("argument(s) must be one of the following: always, everysec, no")

        def apply() -> None:
            engine.set_policy(policy)
            replace_config(appendfsync=policy)
        return apply

    def save_points(v: bytes) -> Callable[[], None]:
        parts = v.split()
        if len(parts) % 2:
            raise ValueError("Invalid save parameters")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError("Invalid save parameters") from None
        if any(n < 1 for n in nums):
            raise ValueError("Invalid save parameters")
        pairs = tuple((nums[i], nums[i + 1]) for i in range(0, len(nums), 2))
        return lambda: replace_config(save=pairs)

    def max_bulk(v: bytes) -> Callable[[], None]:
        n = _positive(v)

        def apply() -> None:
            replace_config(max_value_bytes=n)
            if server is not None:
                server.set_max_bulk(n)
        return apply

    def encoding(name: str) -> Callable[[bytes], Callable[[], None]]:
        lo, hi, _ = _ENCODING[name]

        def check(v: bytes) -> Callable[[], None]:
            n = _int_in(v, lo, hi)
            return lambda: engine.settings.__setitem__(_ALIASES.get(name, name), b"%d" % n)
        return check

    def notify_events(v: bytes) -> Callable[[], None]:
        flags = parse_flags(v.decode(errors="replace"))

        def apply() -> None:
            engine.notifier.flags = flags
            if server is not None and engine.notifier.publish is None:
                engine.notifier.publish = server.publish
            engine.observers_changed()
        return apply

    def maxmemory(v: bytes) -> Callable[[], None]:
        n = parse_bytes(v.decode(errors="replace"))

        def apply() -> None:
            engine.evictor.maxmemory = n
            engine.observers_changed()
        return apply

    def policy(v: bytes) -> Callable[[], None]:
        name = v.decode(errors="replace").lower()
        if name not in POLICIES:
            raise ValueError("argument(s) must be one of the following: volatile-lru, volatile-lfu, "
                             "volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction")
        return lambda: engine.evictor.set_policy(name, engine.clock())

    def samples(v: bytes) -> Callable[[], None]:
        n = _int_in(v, 1, _INT_MAX)
        return lambda: setattr(engine.evictor, "samples", n)

    def slower_than(v: bytes) -> Callable[[], None]:
        n = _int_in(v, -1, _LONG_MAX)
        return lambda: setattr(engine.slowlog, "slower_than_us", n)

    def slow_len(v: bytes) -> Callable[[], None]:
        n = _int_in(v, 0, _LONG_MAX)
        return lambda: engine.slowlog.set_max_len(n)

    def timeout(v: bytes) -> Callable[[], None]:
        n = _int_in(v, 0, _INT_MAX)

        def apply() -> None:
            engine.settings["timeout"] = b"%d" % n
            if server is not None and n:
                start_idle_reaper(server)
        return apply

    def latency_threshold(v: bytes) -> Callable[[], None]:
        _int_in(v, 0, _LONG_MAX)
        return lambda: None  # latency monitoring is not implemented: LATENCY answers empty

    setters: dict[str, Callable[[bytes], Callable[[], None]]] = {
        "appendfsync": appendfsync,
        "save": save_points,
        "max-value-bytes": max_bulk,
        "proto-max-bulk-len": max_bulk,
        "notify-keyspace-events": notify_events,
        "maxmemory": maxmemory,
        "maxmemory-policy": policy,
        "maxmemory-samples": samples,
        "slowlog-log-slower-than": slower_than,
        "slowlog-max-len": slow_len,
        "timeout": timeout,
        "latency-monitor-threshold": latency_threshold,
    }
    for name in _ENCODING:
        setters[name] = encoding(name)
    if server is not None:
        def requirepass(v: bytes) -> Callable[[], None]:
            return lambda: server.set_requirepass(v or None)

        def maxclients(v: bytes) -> Callable[[], None]:
            n = _positive(v)
            return lambda: setattr(server, "maxclients", n)

        def protected(v: bytes) -> Callable[[], None]:
            if v.lower() not in (b"yes", b"no"):
                raise ValueError("argument must be 'yes' or 'no'")
            return lambda: setattr(server, "protected_mode", v.lower() == b"yes")

        setters.update({"requirepass": requirepass, "maxclients": maxclients, "protected-mode": protected})
    return setters


def _positive(v: bytes) -> int:
    try:
        n = int(v)
    except ValueError:
        raise ValueError("argument couldn't be parsed into an integer") from None
    if n < 1:
        raise ValueError("argument must be between 1 and 9223372036854775807 inclusive")
    return n


@command("config", -2, "admin noscript loading stale", keys=(0, 0, 0))
def config(ctx: Ctx, args: list[bytes]) -> Any:
    sub, rest = args[0].upper(), args[1:]
    if sub == b"GET" and rest:
        params = _get_params(ctx)
        out: dict[bytes, bytes] = {}
        for raw in rest:
            rx = compile_glob(raw, nocase=True)
            for name, get in params.items():
                if rx.match(name.encode()) and name.encode() not in out:
                    out[name.encode()] = get()
        return out
    if sub == b"SET" and rest and len(rest) % 2 == 0:
        setters = _setters(ctx)
        known = _get_params(ctx)
        applies = []
        seen = set()
        for i in range(0, len(rest), 2):
            name = rest[i].decode(errors="replace").lower()
            if name in seen:
                raise _set_failed(name, "duplicate parameter")
            seen.add(name)
            if name not in setters:
                if name in known or name in _IMMUTABLE:
                    raise _set_failed(name, "can't set immutable config")
                raise err(f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
            try:
                applies.append(setters[name](rest[i + 1]))
            except ValueError as e:
                raise _set_failed(name, str(e)) from None
        for apply in applies:
            apply()
        return OK
    if sub == b"RESETSTAT" and not rest:
        server = ctx.conn.server if ctx.conn is not None else None
        if server is not None:
            server.reset_stats()
        stats = ctx.engine.stats
        stats.commands.clear()
        stats.expired_keys = stats.evicted_keys = 0
        return OK
    if sub == b"REWRITE" and not rest:
        raise err("ERR CONFIG REWRITE is not supported: atlasd settings come from the HELIOS config file "
                  "and its command-line options")
    if sub == b"HELP" and not rest:
        return [Simple(s) for s in ("CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                                    "GET <pattern>", "SET <directive> <value>", "RESETSTAT", "HELP")]
    raise subcommand_error("CONFIG", args[0], "get set resetstat rewrite help")


# -- SLOWLOG MEMORY LATENCY ROLE ------------------------------------------------------------



def _help(name: str, lines: list[str]) -> list[Simple]:
    return [Simple(f"{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
            *(Simple(line) for line in lines), Simple("HELP"), Simple("    Print this help.")]


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
        rss = _rss_bytes()
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
    empty and RESET resets nothing (0), as in a Redis with latency-monitor-threshold 0."""
    sub, rest = args[0].upper(), args[1:]
    if sub == b"LATEST" and not rest:
        return []
    if sub == b"HISTORY" and len(rest) == 1:
        return []
    if sub == b"RESET":
        return 0
    if sub == b"DOCTOR" and not rest:
        return (b"I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. "
                b"You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. "
                b"If we weren't in a deep space mission I'd suggest to take a look at "
                b"https://redis.io/topics/latency-monitor.\n")
    if sub == b"HISTOGRAM":
        return {}
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
    if sub in (b"LATEST", b"HISTORY", b"DOCTOR", b"HELP"):
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
    """Stream every command the server runs to this connection, as Redis's MONITOR lines (admin
    commands are not shown, as in Redis).  A monitor stops when its connection closes."""
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
        where = "lua" if who is None else who.addr
        us = time.time_ns() // 1000
        if argv[0].lower() in (b"auth", b"hello"):  # never show a password (Redis redacts them too)
            argv = [argv[0], *(b"(redacted)" for _ in argv[1:])]
        line = Simple(f"{us // 1_000_000}.{us % 1_000_000:06d} [0 {where}] " + " ".join(_repr_arg(a) for a in argv))
        for c in live:
            c.push(c.enc(line, c.resp3))

    engine.monitor = feed
    return OK


def start_idle_reaper(server: Any) -> None:
    """Close clients idle longer than `timeout` seconds, checked once a second while it is set.
    As Redis: subscribers and blocked clients are exempt; the close is silent."""
    if getattr(server, "_idle_reaper", None) is not None:
        return
    loop = asyncio.get_running_loop()

    def tick() -> None:
        limit = idle_timeout(server.engine)
        if not limit or server.closing:
            server._idle_reaper = None
            return
        now = time.monotonic()
        for conn in list(server.clients.values()):
            if conn.subscribed or conn.blocked is not None or conn.closing:
                continue
            if now - conn.last_active > limit and now - conn.created > limit:
                log.info("closing an idle client", id=conn.id, addr=conn.addr, timeout=limit)
                conn.close_after_replies()
        server._idle_reaper = loop.call_later(1.0, tick)

    server._idle_reaper = loop.call_later(1.0, tick)


# -- COMMAND DOCS data ----------------------------------------------------------------
# redis-cli (7.x) builds its help and inline hints from COMMAND DOCS.  Each
# command's syntax goes out as one argument of type "string" whose name is the
# whole syntax line: exactly what redis-cli shows as the hint.

# name: (group, since, syntax, summary)
DOCS: dict[str, tuple[str, str, str, str]] = {
    # strings
    "get": ("string", "1.0.0", "key", "Returns the string value of a key."),
    "set": ("string", "1.0.0",
            "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|"
            "PXAT unix-time-milliseconds|KEEPTTL]",
            "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."),
    "setnx": ("string", "1.0.0", "key value", "Set the string value of a key only when the key doesn't exist."),
    "setex": ("string", "2.0.0", "key seconds value", "Sets the string value and expiration time of a key."),
    "psetex": ("string", "2.6.0", "key milliseconds value",
               "Sets both string value and expiration time in milliseconds of a key."),
    "getset": ("string", "1.0.0", "key value", "Returns the previous string value of a key after setting it."),
    "getdel": ("string", "6.2.0", "key", "Returns the string value of a key after deleting the key."),
    "getex": ("string", "6.2.0",
              "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]",
              "Returns the string value of a key after setting its expiration time."),
    "mget": ("string", "1.0.0", "key [key ...]", "Atomically returns the string values of one or more keys."),
    "mset": ("string", "1.0.1", "key value [key value ...]", "Atomically creates or modifies the string values "
             "of one or more keys."),
    "msetnx": ("string", "1.0.1", "key value [key value ...]", "Atomically sets the values of one or more keys "
               "only when all keys don't exist."),
    "append": ("string", "2.0.0", "key value", "Appends a string to the value of a key. Creates the key if it "
               "doesn't exist."),
    "strlen": ("string", "2.2.0", "key", "Returns the length of a string value."),
    "getrange": ("string", "2.4.0", "key start end", "Returns a substring of the string stored at a key."),
    "setrange": ("string", "2.2.0", "key offset value", "Overwrites a part of a string value with another by an "
                 "offset. Creates the key if it doesn't exist."),
    "incr": ("string", "1.0.0", "key", "Increments the integer value of a key by one."),
    "incrby": ("string", "1.0.0", "key increment", "Increments the integer value of a key by a number."),
    "decr": ("string", "1.0.0", "key", "Decrements the integer value of a key by one."),
    "decrby": ("string", "1.0.0", "key decrement", "Decrements a number from the integer value of a key."),
    "incrbyfloat": ("string", "2.6.0", "key increment", "Increment the floating point value of a key by a number."),
    # keys
    "del": ("generic", "1.0.0", "key [key ...]", "Deletes one or more keys."),
    "unlink": ("generic", "4.0.0", "key [key ...]", "Asynchronously deletes one or more keys."),
    "exists": ("generic", "1.0.0", "key [key ...]", "Determines whether one or more keys exist."),
    "type": ("generic", "1.0.0", "key", "Determines the type of value stored at a key."),
    "expire": ("generic", "1.0.0", "key seconds [NX|XX|GT|LT]", "Sets the expiration time of a key in seconds."),
    "pexpire": ("generic", "2.6.0", "key milliseconds [NX|XX|GT|LT]",
                "Sets the expiration time of a key in milliseconds."),
    "expireat": ("generic", "1.2.0", "key unix-time-seconds [NX|XX|GT|LT]",
                 "Sets the expiration time of a key to a Unix timestamp."),
    "pexpireat": ("generic", "2.6.0", "key unix-time-milliseconds [NX|XX|GT|LT]",
                  "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    "ttl": ("generic", "1.0.0", "key", "Returns the expiration time in seconds of a key."),
    "pttl": ("generic", "2.6.0", "key", "Returns the expiration time in milliseconds of a key."),
    "expiretime": ("generic", "7.0.0", "key", "Returns the expiration time of a key as a Unix timestamp."),
    "pexpiretime": ("generic", "7.0.0", "key",
                    "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    "persist": ("generic", "2.2.0", "key", "Removes the expiration time of a key."),
    "keys": ("generic", "1.0.0", "pattern", "Returns all key names that match a pattern."),
    "scan": ("generic", "2.8.0", "cursor [MATCH pattern] [COUNT count] [TYPE type]",
             "Iterates over the key names in the database."),
    "rename": ("generic", "1.0.0", "key newkey", "Renames a key and overwrites the destination."),
    "renamenx": ("generic", "1.0.0", "key newkey", "Renames a key only when the target key name doesn't exist."),
    "randomkey": ("generic", "1.0.0", "", "Returns a random key name from the database."),
    "dbsize": ("server", "1.0.0", "", "Returns the number of keys in the database."),
    "flushdb": ("server", "1.0.0", "[ASYNC|SYNC]", "Remove all keys from the current database."),
    "flushall": ("server", "1.0.0", "[ASYNC|SYNC]", "Removes all keys from all databases."),
    # sorted sets
    "zadd": ("sorted-set", "1.2.0", "key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]",
             "Adds one or more members to a sorted set, or updates their scores."),
    "zincrby": ("sorted-set", "1.2.0", "key increment member",
                "Increments the score of a member in a sorted set."),
    "zrem": ("sorted-set", "1.2.0", "key member [member ...]", "Removes one or more members from a sorted set."),
    "zscore": ("sorted-set", "1.2.0", "key member", "Returns the score of a member in a sorted set."),
    "zmscore": ("sorted-set", "6.2.0", "key member [member ...]",
                "Returns the score of one or more members in a sorted set."),
    "zcard": ("sorted-set", "1.2.0", "key", "Returns the number of members in a sorted set."),
    "zcount": ("sorted-set", "2.0.0", "key min max",
               "Returns the count of members in a sorted set that have scores within a range."),
    "zrank": ("sorted-set", "2.0.0", "key member", "Returns the index of a member in a sorted set ordered by "
              "ascending scores."),
    "zrevrank": ("sorted-set", "2.0.0", "key member", "Returns the index of a member in a sorted set ordered by "
                 "descending scores."),
    "zrange": ("sorted-set", "1.2.0", "key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]",
               "Returns members in a sorted set within a range of indexes."),
    "zrevrange": ("sorted-set", "1.2.0", "key start stop [WITHSCORES]",
                  "Returns members in a sorted set within a range of indexes in reverse order."),
    "zrangebyscore": ("sorted-set", "1.0.5", "key min max [WITHSCORES] [LIMIT offset count]",
                      "Returns members in a sorted set within a range of scores."),
    "zrevrangebyscore": ("sorted-set", "2.2.0", "key max min [WITHSCORES] [LIMIT offset count]",
                         "Returns members in a sorted set within a range of scores in reverse order."),
    "zremrangebyscore": ("sorted-set", "1.2.0", "key min max",
                         "Removes members in a sorted set within a range of scores."),
    "zremrangebyrank": ("sorted-set", "2.0.0", "key start stop",
                        "Removes members in a sorted set within a range of indexes."),
    "zpopmin": ("sorted-set", "5.0.0", "key [count]",
                "Returns the lowest-scoring members from a sorted set after removing them."),
    "zpopmax": ("sorted-set", "5.0.0", "key [count]",
                "Returns the highest-scoring members from a sorted set after removing them."),
    # hashes
    "hset": ("hash", "2.0.0", "key field value [field value ...]",
             "Creates or modifies the value of a field in a hash."),
    "hsetnx": ("hash", "2.0.0", "key field value", "Sets the value of a field in a hash only when the field "
               "doesn't exist."),
    "hget": ("hash", "2.0.0", "key field", "Returns the value of a field in a hash."),
    "hmget": ("hash", "2.0.0", "key field [field ...]", "Returns the values of all fields in a hash."),
    "hmset": ("hash", "2.0.0", "key field value [field value ...]", "Sets the values of multiple fields."),
    "hgetall": ("hash", "2.0.0", "key", "Returns all fields and values in a hash."),
    "hdel": ("hash", "2.0.0", "key field [field ...]", "Deletes one or more fields and their values from a "
             "hash. Deletes the hash if no fields remain."),
    "hexists": ("hash", "2.0.0", "key field", "Determines whether a field exists in a hash."),
    "hlen": ("hash", "2.0.0", "key", "Returns the number of fields in a hash."),
    "hkeys": ("hash", "2.0.0", "key", "Returns all fields in a hash."),
    "hvals": ("hash", "2.0.0", "key", "Returns all values in a hash."),
    "hincrby": ("hash", "2.0.0", "key field increment", "Increments the integer value of a field in a hash by a "
                "number. Uses 0 as initial value if the field doesn't exist."),
    "hincrbyfloat": ("hash", "2.6.0", "key field increment", "Increments the floating point value of a field by "
                     "a number. Uses 0 as initial value if the field doesn't exist."),
    "hstrlen": ("hash", "3.2.0", "key field", "Returns the length of the value of a field."),
    "hrandfield": ("hash", "6.2.0", "key [count [WITHVALUES]]", "Returns one or more random fields from a hash."),
    "hscan": ("hash", "2.8.0", "key cursor [MATCH pattern] [COUNT count]",
              "Iterates over fields and values of a hash."),
    # sets
    "sadd": ("set", "1.0.0", "key member [member ...]", "Adds one or more members to a set. Creates the key if "
             "it doesn't exist."),
    "srem": ("set", "1.0.0", "key member [member ...]", "Removes one or more members from a set. Deletes the "
             "set if the last member was removed."),
    "smembers": ("set", "1.0.0", "key", "Returns all members of a set."),
    "sismember": ("set", "1.0.0", "key member", "Determines whether a member belongs to a set."),
    "smismember": ("set", "6.2.0", "key member [member ...]", "Determines whether multiple members belong to a "
                   "set."),
    "scard": ("set", "1.0.0", "key", "Returns the number of members in a set."),
    "spop": ("set", "1.0.0", "key [count]", "Returns one or more random members from a set after removing them. "
             "Deletes the set if the last member was popped."),
    "srandmember": ("set", "1.0.0", "key [count]", "Get one or multiple random members from a set"),
    "smove": ("set", "1.0.0", "source destination member", "Moves a member from one set to another."),
    "sinter": ("set", "1.0.0", "key [key ...]", "Returns the intersect of multiple sets."),
    "sintercard": ("set", "7.0.0", "numkeys key [key ...] [LIMIT limit]",
                   "Returns the number of members of the intersect of multiple sets."),
    "sunion": ("set", "1.0.0", "key [key ...]", "Returns the union of multiple sets."),
    "sdiff": ("set", "1.0.0", "key [key ...]", "Returns the difference of multiple sets."),
    "sinterstore": ("set", "1.0.0", "destination key [key ...]", "Stores the intersect of multiple sets in a "
                    "key."),
    "sunionstore": ("set", "1.0.0", "destination key [key ...]", "Stores the union of multiple sets in a key."),
    "sdiffstore": ("set", "1.0.0", "destination key [key ...]", "Stores the difference of multiple sets in a "
                   "key."),
    "sscan": ("set", "2.8.0", "key cursor [MATCH pattern] [COUNT count]", "Iterates over members of a set."),
    # connection
    "ping": ("connection", "1.0.0", "[message]", "Returns the server's liveliness response."),
    "echo": ("connection", "1.0.0", "message", "Returns the given string."),
    "quit": ("connection", "1.0.0", "", "Closes the connection."),
    "select": ("connection", "1.0.0", "index", "Changes the selected database (only 0 exists)."),
    "auth": ("connection", "1.0.0", "[username] password", "Authenticates the connection."),
    "hello": ("connection", "6.0.0", "[protover [AUTH username password] [SETNAME clientname]]",
              "Handshakes with the server."),
    "reset": ("connection", "6.2.0", "", "Resets the connection."),
    "client": ("connection", "2.4.0", "ID|GETNAME|SETNAME name|SETINFO attr value|INFO|LIST|KILL|REPLY|PAUSE|"
               "UNPAUSE|UNBLOCK|TRACKING|NO-EVICT",
               "A container for client connection commands."),
    # transactions
    "multi": ("transactions", "1.2.0", "", "Starts a transaction."),
    "exec": ("transactions", "1.2.0", "", "Executes all commands in a transaction."),
    "discard": ("transactions", "2.0.0", "", "Discards a transaction."),
    "watch": ("transactions", "2.2.0", "key [key ...]", "Monitors changes to keys to determine the execution "
              "of a transaction."),
    "unwatch": ("transactions", "2.2.0", "", "Forgets about watched keys of a transaction."),
    # pub/sub
    "subscribe": ("pubsub", "2.0.0", "channel [channel ...]", "Listens for messages published to channels."),
    "unsubscribe": ("pubsub", "2.0.0", "[channel [channel ...]]",
                    "Stops listening to messages posted to channels."),
    "psubscribe": ("pubsub", "2.0.0", "pattern [pattern ...]",
                   "Listens for messages published to channels that match one or more patterns."),
    "punsubscribe": ("pubsub", "2.0.0", "[pattern [pattern ...]]",
                     "Stops listening to messages published to channels that match one or more patterns."),
    "publish": ("pubsub", "2.0.0", "channel message", "Posts a message to a channel."),
    "pubsub": ("pubsub", "2.8.0", "CHANNELS [pattern]|NUMSUB [channel ...]|NUMPAT",
               "A container for Pub/Sub commands."),
    # server
    "info": ("server", "1.0.0", "[section [section ...]]", "Returns information and statistics about the server."),
    "command": ("server", "2.8.13", "[COUNT|INFO [command-name ...]|DOCS [command-name ...]|LIST]",
                "Returns detailed information about all commands."),
    "config": ("server", "2.0.0", "GET parameter [parameter ...]|SET parameter value [parameter value ...]|"
               "RESETSTAT", "A container for server configuration commands."),
    "time": ("server", "2.6.0", "", "Returns the server time."),
    "save": ("server", "1.0.0", "", "Snapshots the dataset and waits until the snapshot is on disk."),
    "bgsave": ("server", "1.0.0", "[SCHEDULE]", "Asynchronously saves the database(s) to disk."),
    "bgrewriteaof": ("server", "1.0.0", "", "Asynchronously compacts the append-only file (a snapshot "
                     "plus AOF rotation here)."),
    "lastsave": ("server", "1.0.0", "", "Returns the Unix timestamp of the last successful save to disk."),
    "slowlog": ("server", "2.2.12", "GET [count]|LEN|RESET", "A container for slow log commands."),
    "memory": ("server", "4.0.0", "USAGE key [SAMPLES count]|STATS|DOCTOR|PURGE|MALLOC-STATS",
               "A container for memory diagnostics commands (USAGE: atlasd's estimate)."),
    "latency": ("server", "2.8.13", "LATEST|HISTORY event|RESET [event ...]|DOCTOR|HISTOGRAM",
                "A container for latency diagnostics commands (always empty here)."),
    "role": ("server", "2.8.12", "", "Returns the replication role."),
    "monitor": ("server", "1.0.0", "", "Listens for all requests received by the server in real-time."),
    "shutdown": ("server", "1.0.0", "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]",
                 "Synchronously saves the database(s) to disk and shuts down the server."),
}
