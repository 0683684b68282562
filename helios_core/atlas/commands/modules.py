"""MODULE and DEBUG, answered as a default redis-server 7.0 answers them.

atlasd loads no native code, ever: there is no module loader and no debug
command behind these names.  They exist because client libraries send
`MODULE LIST` when they connect (to find RedisJSON or RediSearch) and test
suites send DEBUG; an unknown-command error breaks both.  A default Redis 7.0
(`enable-module-command no`, `enable-debug-command no`) refuses MODULE LOAD,
LOADEX, UNLOAD and every DEBUG call with the texts below, so atlasd's
refusal is the one those clients already handle.

`protected_refusal` is Redis's refusal of a protected call.  Redis makes it in
processCommand, after the lookup and arity checks and before asking for
authentication (an unauthenticated DEBUG SLEEP 0 gets it, not NOAUTH) and
before MULTI queues (EXEC then aborts): atlasd's connection asks it there too
(Engine.queue_refusal), and otherwise the handlers raise it as `Refused`, so
it counts as a rejected call, as in Redis.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.table import Ctx, Refused, Simple, command, err

__all__ = ["protected_refusal", "DEBUG_NOT_ALLOWED", "MODULE_NOT_ALLOWED"]


def _not_allowed(what: str, option: str) -> str:
    # Redis 7.0's rejectCommandFormat text (server.c), for an option left at its default "no".
    return (f"ERR {what} command not allowed. If the {option} option is set to \"local\", you can run it from a "
            f"local connection, otherwise you need to set this option in the configuration file, and then "
            f"restart the server.")


DEBUG_NOT_ALLOWED = _not_allowed("DEBUG", "enable-debug-command")
MODULE_NOT_ALLOWED = _not_allowed("MODULE", "enable-module-command")

# MODULE's subcommands Redis 7.0 flags CMD_PROTECTED (LIST and HELP are not).
_PROTECTED_SUBS = frozenset({b"load", b"loadex", b"unload"})

# Redis 7.0's text, byte for byte.
_MODULE_HELP = (
    "MODULE <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LIST", "    Return a list of loaded modules.",
    "LOAD <path> [<arg> ...]", "    Load a module library from <path>, passing to it any optional arguments.",
    "LOADEX <path> [[CONFIG NAME VALUE] [CONFIG NAME VALUE]] [ARGS ...]",
    "    Load a module library from <path>, while passing it module configurations and optional arguments.",
    "UNLOAD <name>", "    Unload a module.",
    "HELP", "    Prints this help.",
)


def protected_refusal(args: list[bytes]) -> str | None:
    """Redis 7.0's refusal of a protected call (`args`: the command line, name first, arity already
    checked), or None: every DEBUG, and MODULE LOAD, LOADEX and UNLOAD, as a default server refuses
    them.  Nothing is looked at but the names: no path is ever opened."""
    if len(args) < 2:
        return None
    name = args[0].lower()
    if name == b"debug":
        return DEBUG_NOT_ALLOWED
    if name == b"module" and args[1].lower() in _PROTECTED_SUBS:
        return MODULE_NOT_ALLOWED
    return None


@command("module", -2, "admin noscript", keys=(0, 0, 0))  # (a container: COMMAND reports no flags)
def module(ctx: Ctx, args: list[bytes]) -> Any:
    """MODULE LIST is empty: atlasd loads no modules.  LOAD, LOADEX and UNLOAD are refused as a
    default Redis 7.0 refuses them (enable-module-command no), whatever they name: atlasd never
    loads native code, and the path is never opened, read or even checked."""
    sub, n = args[0].lower(), len(args)
    if sub == b"list" and n == 1:
        return []
    if sub == b"help" and n == 1:
        return [Simple(line) for line in _MODULE_HELP]
    refusal = protected_refusal([b"module", *args])
    if refusal is not None:
        raise Refused(refusal)
    if sub in (b"list", b"help", b"load", b"loadex", b"unload"):  # (the engine checks arity first: a fallback)
        raise err(f"ERR wrong number of arguments for 'module|{sub.decode()}' command")
    raise err(f"ERR unknown subcommand '{args[0][:128].decode(errors='replace')}'. Try MODULE HELP.")


@command("debug", -2, "admin noscript loading stale", keys=(0, 0, 0))
def debug(ctx: Ctx, args: list[bytes]) -> Any:
    """Refused, every subcommand, as a default Redis 7.0 refuses DEBUG (enable-debug-command no).
    atlasd has no such setting and implements none of DEBUG's subcommands."""
    raise Refused(DEBUG_NOT_ALLOWED)  # (protected_refusal's answer for every DEBUG call)
