"""Scripting commands: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT, with Redis 7.0's replies.

The Lua runtime is helios_core/atlas/scripting.py.  Here a script becomes one
engine step (`Engine.script_step`): every command it calls runs through the
engine as usual, their effects join one AOF record (the script itself is never
logged, so replay is deterministic), and the reply waits for that record, or
for the newest pending record the script read, by the engine's reveal rule.

A script that fails keeps the writes it made before failing, as in Redis; one
killed by the hard time limit (atlas.script_kill_after_ms), the memory cap or
SHUTDOWN NOSAVE has them undone.  SCRIPT KILL and FUNCTION KILL reach a script
only while it is busy (past busy-reply-threshold, served by busy.py); outside
that no script is running, so here they answer NOTBUSY.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import helios_core.atlas.scripting as lua  # (a module reference: the runtime imports this package too)
from helios_core.atlas.commands.table import NOT_INT, OK, Ctx, Simple, command, err, parse_int
from helios_core.errors import CommandError

__all__ = ["scripting_of", "run_step", "split_keys", "busy_after_ms"]

_EVAL_FLAGS = "noscript stale skip_monitor no_mandatory_keys movablekeys"
_EVAL_RO_FLAGS = "noscript stale skip_monitor no_mandatory_keys readonly movablekeys"


def scripting_of(engine: Any) -> lua.Scripting:
    """The engine's Lua runtime, made on first use (an engine that never runs a script pays nothing)."""
    s: lua.Scripting | None = engine.scripting
    if s is None:
        cfg = engine.config
        # (AtlasConfig has no lua_max_memory yet: the default applies until it does.)
        s = lua.Scripting(engine.execute, engine.pending_seq, kill_after_ms=cfg.script_kill_after_ms,
                          busy_after_ms=busy_after_ms(engine),
                          max_memory=int(getattr(cfg, "lua_max_memory", lua.DEFAULT_MAX_MEMORY)),
                          reject=engine.reject, count_error=engine.stats.commands.errors.add)
        engine.scripting = s
    return s


def busy_after_ms(engine: Any) -> int:
    """busy-reply-threshold (alias lua-time-limit), CONFIG SET's or the default."""
    return int(engine.settings.get("busy-reply-threshold", b"%d" % lua.DEFAULT_BUSY_AFTER_MS))


# numkeys as clients send it, parsed once (parse_int's regex is most of _split's cost).
_SMALL_COUNTS = {b"%d" % i: i for i in range(64)}


def split_keys(args: list[bytes], not_int: str = NOT_INT) -> tuple[list[bytes], list[bytes]]:
    """KEYS and ARGV from `script numkeys key... arg...`, with Redis's checks in Redis's order
    (`not_int`: the error for a numkeys that is no integer; FCALL's has its own words)."""
    numkeys = _SMALL_COUNTS.get(args[1])
    if numkeys is None:
        numkeys = parse_int(args[1], not_int)
    if numkeys > len(args) - 2:
        raise err("ERR Number of keys can't be greater than number of args")
    if numkeys < 0:
        raise err("ERR Number of keys can't be negative")
    return args[2:2 + numkeys], args[2 + numkeys:]


def _keeps_writes(error: BaseException) -> bool:
    """A failed script's writes stand (as in Redis), except those of one killed by the hard limit,
    the memory cap or SHUTDOWN NOSAVE (ScriptKilled).  One SCRIPT KILL ended (ScriptKilledByUser)
    had called no write command: it has nothing to undo but the expired keys its reads deleted."""
    return not isinstance(error, lua.ScriptKilled)


def run_script(ctx: Ctx, sha: str, keys: list[bytes], argv: list[bytes], readonly: bool) -> Any:
    """Run a loaded script as one engine step; its reply, or raise its error."""
    scripting = scripting_of(ctx.engine)
    return run_step(ctx, lambda: scripting.run(sha, keys, argv, readonly=readonly))


def run_step(ctx: Ctx, run: Callable[[], Any], command: list[bytes] | None = None) -> Any:
    """`run()` a script or function (FCALL) as one engine step; its reply, or raise its error.
    `command`: what FUNCTION STATS shows it runs, if the connection's command is not it."""
    engine = ctx.engine
    scripting = scripting_of(engine)
    nested = engine.in_batch  # inside MULTI/EXEC: the transaction's record holds the effects
    conn, db = ctx.conn, engine.db
    # With a server to serve (atlasd), other clients are served while the script is busy; with
    # none (an embedded engine, a test) it runs until it ends or the hard limit kills it.
    # (a connection with no server, an in-process caller or a test's, has no one else to serve)
    scripting.host = getattr(getattr(conn, "server", None), "busy", None)
    scripting.caller = conn
    scripting.command = command or (conn.current if conn is not None and conn.current else [])
    with engine.script_step(keep=_keeps_writes):
        try:
            reply = run()
        except lua.ScriptKilled:
            raise
        except CommandError as e:
            reply = e  # the script failed: the writes before the error stand, as in Redis
        finally:
            scripting.host = scripting.caller = None
            ctx.seen = max(ctx.seen, scripting.seen)
            if engine.db != db:  # a script's SELECT was its own: the caller keeps its database (Redis 7)
                if conn is not None:
                    conn.db = db
                    engine.conn_db_changed(conn)
                engine.select(db)
        # Raising would undo the enclosing transaction's part of them: there the error is
        # EXEC's reply item instead.
        if isinstance(reply, CommandError) and not nested:
            raise reply
    return reply


def _eval(ctx: Ctx, args: list[bytes], readonly: bool) -> Any:
    keys, argv = split_keys(args)
    sha = scripting_of(ctx.engine).load(args[0])
    return run_script(ctx, sha, keys, argv, readonly)


def _evalsha(ctx: Ctx, args: list[bytes], readonly: bool) -> Any:
    keys, argv = split_keys(args)
    sha = args[0].decode(errors="replace").lower()
    if len(sha) != 40:
        raise err(lua.NOSCRIPT)
    return run_script(ctx, sha, keys, argv, readonly)


@command("eval", -3, _EVAL_FLAGS, keys=(0, 0, 0))
def eval_(ctx: Ctx, args: list[bytes]) -> Any:
    return _eval(ctx, args, False)


@command("evalsha", -3, _EVAL_FLAGS, keys=(0, 0, 0))
def evalsha(ctx: Ctx, args: list[bytes]) -> Any:
    return _evalsha(ctx, args, False)


@command("eval_ro", -3, _EVAL_RO_FLAGS, keys=(0, 0, 0))
def eval_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _eval(ctx, args, True)


@command("evalsha_ro", -3, _EVAL_RO_FLAGS, keys=(0, 0, 0))
def evalsha_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _evalsha(ctx, args, True)


_SCRIPT_HELP = [
    b"SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"DEBUG (YES|SYNC|NO)",
    b"    Set the debug mode for subsequent scripts executed.",
    b"EXISTS <sha1> [<sha1> ...]",
    b"    Return information about the existence of the scripts in the script cache.",
    b"FLUSH [ASYNC|SYNC]",
    b"    Flush the Lua scripts cache. Very dangerous on replicas.",
    b"    When called without the optional mode argument, the behavior is determined by the",
    b"    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    b"    * ASYNC: Asynchronously flush the scripts cache.",
    b"    * SYNC: Synchronously flush the scripts cache.",
    b"KILL",
    b"    Kill the currently executing Lua script.",
    b"LOAD <script>",
    b"    Load a script into the scripts cache without executing it.",
    b"HELP",
    b"    Prints this help.",
]


@command("script", -2, "", keys=(0, 0, 0))  # (no flags, as Redis 7.0: its subcommands are noscript)
def script(ctx: Ctx, args: list[bytes]) -> Any:
    sub = args[0].lower()
    n = len(args)
    name = sub.decode(errors="replace")
    if sub == b"load" and n == 2:
        return scripting_of(ctx.engine).load(args[1]).encode()
    if sub == b"exists" and n >= 2:
        s = scripting_of(ctx.engine)
        return [int(s.exists(sha)) for sha in args[1:]]
    if sub == b"flush" and n <= 2:
        if n == 2 and args[1].upper() not in (b"ASYNC", b"SYNC"):
            raise err("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
        scripting_of(ctx.engine).flush()
        return OK
    if sub == b"kill" and n == 1:
        # A busy script's SCRIPT KILL is answered by busy.py, from inside the script: here none runs.
        raise err("NOTBUSY No scripts in execution right now.")
    if sub == b"help" and n == 1:
        return [Simple(line.decode()) for line in _SCRIPT_HELP]  # status lines, as Redis sends them
    if sub in (b"load", b"exists", b"flush", b"kill", b"help"):
        raise err(f"ERR wrong number of arguments for 'script|{name}' command")
    raise CommandError(f"ERR unknown subcommand '{args[0].decode(errors='replace')}'. Try SCRIPT HELP.")
