"""Functions commands: FUNCTION LOAD/LIST/DELETE/FLUSH/DUMP/RESTORE/STATS/KILL/HELP, FCALL and
FCALL_RO, with Redis 7.0's replies and error texts (FUNCTION DUMP's payload is Redis's: each
library's code in RDB form, see dump.py, so payloads move both ways between atlasd and Redis).

The libraries and their registration are in helios_core/atlas/functions.py.
A FUNCTION LOAD, DELETE, FLUSH or RESTORE is logged as an effect holding the library's
code (FLOAD, FDEL, FFLUSH), in a record of its own whose reply waits for it as
any write's does; an FCALL runs like EVAL (commands/scripting.py): its writes
are logged as the effects they made, in one record, never as the call.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.scripting import run_step, scripting_of, split_keys
from helios_core.atlas.commands.server import subcommand_error
from helios_core.atlas.commands.table import OK, Ctx, Simple, command, err
from helios_core.atlas.dump import BadFormat, PayloadError, dump_functions, load_functions
from helios_core.atlas.functions import Library, Registry, parse_metadata
from helios_core.atlas.glob import compile_glob
from helios_core.errors import CommandError

__all__ = ["registry_of", "stats_reply"]

_FCALL_FLAGS = "noscript stale skip_monitor no_mandatory_keys movablekeys"
_FCALL_RO_FLAGS = "noscript stale skip_monitor no_mandatory_keys readonly movablekeys"


def registry_of(engine: Any) -> Registry:
    """The engine's function registry, following the stored libraries."""
    scripting = scripting_of(engine)
    registry: Registry | None = scripting.registry
    if registry is None:
        registry = scripting.registry = Registry(scripting)
    registry.sync(engine.ks)
    return registry


# -- FCALL -------------------------------------------------------------------------------

def _fcall(ctx: Ctx, args: list[bytes], readonly: bool) -> Any:
    fn = registry_of(ctx.engine).functions.get(args[0].lower())
    if fn is None:
        raise err("ERR Function not found")
    keys, argv = split_keys(args, "ERR Bad number of keys provided")
    if readonly and not fn.no_writes:
        raise err("ERR Can not execute a script with write flag using *_ro command.")
    scripting = scripting_of(ctx.engine)
    name = fn.name.decode(errors="replace")
    return run_step(ctx, lambda: scripting.call_function(name, fn.callback, keys, argv, readonly=fn.no_writes))


@command("fcall", -3, _FCALL_FLAGS, keys=(0, 0, 0))
def fcall(ctx: Ctx, args: list[bytes]) -> Any:
    return _fcall(ctx, args, False)


@command("fcall_ro", -3, _FCALL_RO_FLAGS, keys=(0, 0, 0))
def fcall_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _fcall(ctx, args, True)


# -- FUNCTION ----------------------------------------------------------------------------

_FUNCTION_HELP = [
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION "
    "RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
]

# Subcommand arities as Redis 7.0 has them (the container's name included).
_ARITY = {b"load": -3, b"delete": 3, b"list": -2, b"flush": -2, b"dump": 2, b"restore": -3, b"stats": 2,
          b"kill": 2, b"help": 2}


class _Flags(frozenset):
    """A function's flags: a set reply (RESP3 `~`) of status strings, listed in Redis's order
    rather than hash order."""

    order: tuple[Simple, ...]

    def __new__(cls, flags: tuple[str, ...]) -> _Flags:
        order = tuple(Simple(f) for f in flags)
        obj = super().__new__(cls, order)
        obj.order = order
        return obj

    def __iter__(self) -> Any:
        return iter(self.order)


def _store(ctx: Ctx, effects: list[tuple]) -> None:
    """Apply library effects, refused while the AOF cannot be written.  FUNCTION is no `write`
    command in Redis's table (LIST and DUMP are reads), but the engine commits and awaits any
    command's effects beyond lazy-expiry DELs as a write's: one record, durable before the reply."""
    engine = ctx.engine
    if engine.aof_error is not None:
        raise err(engine.writer.misconf())
    for eff in effects:
        ctx.emit(eff)


def _load(ctx: Ctx, args: list[bytes]) -> bytes:
    replace = False
    for opt in args[1:-1]:
        if opt.lower() != b"replace":
            raise err(f"ERR Unknown option given: {opt.decode(errors='replace')}")
        replace = True
    code = args[-1]
    ctx.engine.check_value_size(len(code))  # a library is stored like a value: the same cap
    registry = registry_of(ctx.engine)
    # (the metadata's checks come first, then whether the library exists, then its code runs)
    name, _ = parse_metadata(code)
    if name in ctx.ks.functions and not replace:
        raise err(f"ERR Library '{name.decode(errors='replace')}' already exists")
    lib = registry.compile(code)
    registry.check_load(lib, replace)
    _store(ctx, [("FLOAD", name, code)])
    registry.adopt(lib)
    return name


def _syntax(sub: bytes) -> CommandError:
    return err(f"ERR unknown subcommand or wrong number of arguments for '{sub.decode(errors='replace')}'. "
               f"Try FUNCTION HELP.")


def _restore(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) > 3:
        raise _syntax(args[0])
    ctx.engine.check_value_size(len(args[1]))
    policy = args[2].lower() if len(args) == 3 else b"append"
    if policy not in (b"append", b"replace", b"flush"):
        raise err("ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.")
    try:
        codes = load_functions(args[1])
    except PayloadError:
        raise err("ERR DUMP payload version or checksum are wrong") from None
    except BadFormat as e:
        raise err(f"ERR {e}") from None
    registry = registry_of(ctx.engine)
    # The payload's libraries on their own first (as FUNCTION LOAD checks one), then joined.
    new: dict[bytes, Library] = {}
    names: set[bytes] = set()
    for code in codes:
        name, _ = parse_metadata(code)
        if name in new:
            raise err(f"ERR Library '{name.decode(errors='replace')}' already exists")
        lib = registry.compile(code)
        if not lib.functions:
            raise err("ERR No functions registered")
        for fname in lib.functions:
            if fname.lower() in names:
                raise err(f"ERR Function {fname.decode(errors='replace')} already exists")
            names.add(fname.lower())
        new[name] = lib
    effects: list[tuple] = [("FFLUSH",)] if policy == b"flush" and ctx.ks.functions else []
    if policy != b"flush":
        for name in new:
            if name in registry.libraries and policy == b"append":
                raise err(f"ERR Library {name.decode(errors='replace')} already exists")
        for fname, fn in registry.functions.items():
            if fname in names and not (policy == b"replace" and fn.library in new):
                raise err(f"ERR Function {fn.name.decode(errors='replace')} already exists")
    effects += [("FLOAD", name, lib.code) for name, lib in new.items()]
    if effects:
        _store(ctx, effects)
    for lib in new.values():
        registry.adopt(lib)
    return OK


def _list(ctx: Ctx, args: list[bytes]) -> list:
    with_code, pattern = False, None
    i = 1
    while i < len(args):
        a = args[i].lower()
        if not with_code and a == b"withcode":
            with_code = True
        elif pattern is None and a == b"libraryname":
            if i >= len(args) - 1:
                raise err("ERR library name argument was not given")
            i += 1
            pattern = compile_glob(args[i], nocase=True)
        else:
            raise err(f"ERR Unknown argument {args[i].decode(errors='replace')}")
        i += 1
    out = []
    for lib in registry_of(ctx.engine).libraries.values():
        if pattern is not None and not pattern.match(lib.name):
            continue
        out.append(_library_info(lib, with_code))
    return out


def _library_info(lib: Library, with_code: bool) -> dict:
    info: dict[bytes, Any] = {
        b"library_name": lib.name,
        b"engine": b"LUA",
        b"functions": [{b"name": f.name, b"description": f.description, b"flags": _Flags(f.flags)}
                       for f in lib.functions.values()],
    }
    if with_code:
        info[b"library_code"] = lib.code
    return info


def _stats(ctx: Ctx) -> dict:
    # Functions run on the loop thread, one command at a time: none is running when this is read
    # (a busy one's FUNCTION STATS is answered by busy.py, from inside it).
    return stats_reply(registry_of(ctx.engine), None)


def stats_reply(registry: Registry, running: dict | None) -> dict:
    """FUNCTION STATS's reply: the running function ({name, command, duration_ms}) and the counts."""
    return {b"running_script": running,
            b"engines": {b"LUA": {b"libraries_count": len(registry.libraries),
                                  b"functions_count": len(registry.functions)}}}


@command("function", -2, "", keys=(0, 0, 0))  # (no flags, as Redis 7.0: a container)
def function(ctx: Ctx, args: list[bytes]) -> Any:
    sub = args[0].lower()
    n = len(args) + 1
    arity = _ARITY.get(sub)
    if arity is None or (n != arity if arity > 0 else n < -arity):
        raise subcommand_error("FUNCTION", args[0], " ".join(k.decode() for k in _ARITY))
    if sub == b"load":
        return _load(ctx, args)
    if sub == b"list":
        return _list(ctx, args)
    if sub == b"delete":
        if args[1] not in ctx.ks.functions:
            raise err("ERR Library not found")
        _store(ctx, [("FDEL", args[1])])
        return OK
    if sub == b"flush":
        if n > 3:
            raise _syntax(args[0])
        if n == 3 and args[1].upper() not in (b"ASYNC", b"SYNC"):
            raise err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        if ctx.ks.functions:
            _store(ctx, [("FFLUSH",)])
        return OK
    if sub == b"dump":
        return dump_functions(list(ctx.ks.functions.values()))
    if sub == b"restore":
        return _restore(ctx, args)
    if sub == b"stats":
        return _stats(ctx)
    if sub == b"kill":
        raise err("NOTBUSY No scripts in execution right now.")
    return [Simple(line) for line in _FUNCTION_HELP]  # help: status lines, as Redis sends them

