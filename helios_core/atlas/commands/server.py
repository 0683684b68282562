"""Server commands: INFO COMMAND CONFIG TIME SAVE BGSAVE BGREWRITEAOF LASTSAVE SHUTDOWN.

Most read the engine (`ctx.engine`) and, through the connection, the RESP
server (`ctx.conn.server`): client counts, limits, the password.  SAVE and
SHUTDOWN finish later than they return; they hand the connection a future
(`conn.defer`) and the connection sends the reply, in order, once it is done.
"""

from __future__ import annotations

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
from helios_core.atlas.glob import compile_glob
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from helios_core.atlas.engine import Engine

__all__ = ["REDIS_COMPAT_VERSION", "info_text", "command_info", "DOCS"]

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

_DEFAULT_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "keyspace")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return str(n)


def info_text(engine: Engine, server: Any, sections: list[str]) -> str:
    """INFO's text: `# Section` headers and `field:value` lines, Redis field names where they exist."""
    want = {s.lower() for s in sections} or set(_DEFAULT_SECTIONS)
    if want & {"all", "everything", "default"}:
        want = set(_DEFAULT_SECTIONS)
    now = time.time()
    stats = engine.stats
    out: list[str] = []

    def section(name: str, fields: list[tuple[str, Any]]) -> None:
        if name.lower() in want:
            out.append(f"# {name}")
            out.extend(f"{k}:{v}" for k, v in fields)
            out.append("")

    uptime = max(0, int(now - stats.started_ms / 1000))
    section("Server", [
        ("redis_version", REDIS_COMPAT_VERSION),
        ("atlas_version", __version__),
        ("redis_mode", "standalone"),
        ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("arch_bits", 64 if sys.maxsize > 2**32 else 32),
        ("python_version", platform.python_version()),
        ("process_id", os.getpid()),
        ("run_id", getattr(server, "run_id", "")),
        ("tcp_port", getattr(server, "port", 0)),
        ("unix_socket", getattr(server, "socket_path", "")),
        ("server_time_usec", int(now * 1_000_000)),
        ("uptime_in_seconds", uptime),
        ("uptime_in_days", uptime // 86400),
        ("executable", sys.executable),
        ("data_dir", engine.data_path()),
    ])
    clients = getattr(server, "clients", {})
    section("Clients", [
        ("connected_clients", len(clients)),
        ("maxclients", getattr(server, "maxclients", 0)),
        ("blocked_clients", blocked_count(engine)),
        ("pubsub_clients", sum(1 for c in clients.values() if c.subscribed)),
        ("watching_clients", len({c for conns in getattr(server, "watched", {}).values() for c in conns})),
    ])
    rss = _rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    section("Memory", [
        ("used_memory", rss),
        ("used_memory_human", _human(rss)),
        ("used_memory_rss", rss),
        ("used_memory_rss_human", _human(rss)),
        ("used_memory_peak", max(peak, rss)),
        ("used_memory_peak_human", _human(max(peak, rss))),
        ("maxmemory", 0),
        ("maxmemory_human", "0B"),
        ("maxmemory_policy", "noeviction"),
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
        ("rdb_saves", stats.snapshots),
        ("rdb_last_cow_size", stats.last_cow_size),
        ("rdb_last_bgsave_error", stats.last_snapshot_error),
        ("aof_enabled", 1),
        ("aof_rewrite_in_progress", in_progress),
        ("aof_rewrite_scheduled", 0),
        ("aof_last_write_status", "ok" if engine.aof_error is None else "err"),
        ("aof_last_error", engine.aof_error or ""),
        ("aof_current_size", aof.size if aof is not None else 0),
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
        ("expired_keys", stats.expired_keys),
        ("evicted_keys", 0),
        ("pubsub_channels", len(getattr(server, "channels", {}))),
        ("pubsub_patterns", len(getattr(server, "patterns", {}))),
        ("total_aof_bytes", stats.aof_bytes_total),
    ])
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
    if sub == b"GETKEYS" and rest:
        c = TABLE.get(rest[0])
        if c is None:
            raise err("ERR Invalid command specified")
        if c.first_key <= 0:
            raise err("ERR The command has no key arguments")
        last = c.last_key if c.last_key >= 0 else len(rest) + c.last_key
        return rest[c.first_key:last + 1:c.step]
    if sub == b"HELP" and not rest:
        return [Simple(s) for s in ("COMMAND [<subcommand>]", "COUNT", "INFO [<command-name> ...]",
                                    "DOCS [<command-name> ...]", "LIST [FILTERBY PATTERN <pattern>]",
                                    "GETKEYS <full-command>", "HELP")]
    raise err(f"ERR unknown subcommand or wrong number of arguments for '{args[0].decode(errors='replace')}'. "
              f"Try COMMAND HELP.")


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
        "maxmemory": lambda: b"0",
        "maxmemory-policy": lambda: b"noeviction",
    }
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

    setters: dict[str, Callable[[bytes], Callable[[], None]]] = {
        "appendfsync": appendfsync,
        "save": save_points,
        "max-value-bytes": max_bulk,
        "proto-max-bulk-len": max_bulk,
    }
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
                if name in known:
                    raise _set_failed(name, "can't set immutable config")
                raise err(f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
            try:
                applies.append(setters[name](rest[i + 1]))
            except ValueError as e:
                raise _set_failed(name, str(e)) from None
        for apply in applies:
            apply()
        return OK
    if sub == b"SET":
        raise err("ERR wrong number of arguments for 'config|set' command")
    if sub == b"RESETSTAT" and not rest:
        server = ctx.conn.server if ctx.conn is not None else None
        if server is not None:
            server.reset_stats()
        return OK
    if sub == b"REWRITE" and not rest:
        raise err("ERR CONFIG REWRITE is not supported: atlasd settings come from the HELIOS config file "
                  "and its command-line options")
    if sub == b"HELP" and not rest:
        return [Simple(s) for s in ("CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                                    "GET <pattern>", "SET <directive> <value>", "RESETSTAT", "HELP")]
    raise err(f"ERR unknown subcommand or wrong number of arguments for '{args[0].decode(errors='replace')}'. "
              f"Try CONFIG HELP.")


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
    "client": ("connection", "2.4.0", "ID|GETNAME|SETNAME name|SETINFO attr value|INFO|LIST|KILL",
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
    "shutdown": ("server", "1.0.0", "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]",
                 "Synchronously saves the database(s) to disk and shuts down the server."),
}
