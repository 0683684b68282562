"""Redis 7.0 Functions: libraries of Lua functions, loaded by FUNCTION LOAD and called by FCALL.

The durable state is each library's code, kept in the keyspace
(`Keyspace.functions`, name -> code) by the FLOAD/FDEL/FFLUSH effects, live and
on AOF replay, and written into snapshots.  What runs is made from that code by
the engine's Lua runtime (scripting.py): a library's top-level code runs once
and registers its functions (`redis.register_function`).  `Registry.sync`
registers any library whose code it has not seen yet, so one that replay or a
snapshot brought back is registered on first use; replay itself never runs Lua,
and never a function.

The commands are in commands/functions.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from helios_core.errors import CommandError
from helios_core.observability.logging import get_logger

__all__ = ["Function", "Library", "Registry", "FLAG_ORDER", "parse_metadata"]

log = get_logger("atlas.functions")

# The function flags, in the order Redis 7.0 lists them (its scripts_flags_def).
FLAG_ORDER = ("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")
_NAME = re.compile(rb"[A-Za-z0-9_]+\Z")
BAD_NAME = ("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least "
            "one character long")


@dataclass(frozen=True, slots=True)
class Function:
    name: bytes
    library: bytes
    callback: Any                  # the Lua function
    description: bytes | None
    flags: tuple[str, ...]         # in FLAG_ORDER

    @property
    def no_writes(self) -> bool:
        return "no-writes" in self.flags


@dataclass(slots=True)
class Library:
    name: bytes
    code: bytes
    functions: dict[bytes, Function] = field(default_factory=dict)


def parse_metadata(code: bytes) -> tuple[bytes, bytes]:
    """A library's `#!lua name=<name>` first line: (name, the Lua source to compile), with Redis
    7.0's errors in its order.  The source keeps the first line's place (empty) so error lines
    count from the shebang, as Redis's do."""
    if not code.startswith(b"#!"):
        raise CommandError("ERR Missing library metadata")
    line, nl, rest = code.partition(b"\n")
    if not nl:
        raise CommandError("ERR Invalid library metadata")
    from helios_core.atlas.resp import split_inline  # (resp imports the command package, which imports this)

    parts = split_inline(line)  # (sdssplitargs, as Redis splits it: name="x" is name=x)
    if not parts:
        raise CommandError("ERR Invalid library metadata")
    engine, name = parts[0][2:], None
    for part in parts[1:]:
        if part[:5].lower() == b"name=":
            if name is not None:
                raise CommandError("ERR Invalid metadata value, name argument was given multiple times")
            name = part[5:]
            continue
        raise CommandError(f"ERR Invalid metadata value given: {part.decode(errors='replace')}")
    if name is None:
        raise CommandError("ERR Library name was not given")
    if not _NAME.match(name):
        raise CommandError(BAD_NAME)
    if engine.lower() != b"lua":
        raise CommandError(f"ERR Engine '{engine.decode(errors='replace')}' not found")
    return name, nl + rest


class Registry:
    """The registered libraries and functions of one engine, following `Keyspace.functions`.

    Library names are case-sensitive, function names are not (FCALL, and a name taken by another
    library), as in Redis 7.0: `functions` is keyed by the lower-cased name.
    """

    def __init__(self, scripting: Any) -> None:
        self.scripting = scripting  # scripting.Scripting: compiles and runs the Lua
        self.libraries: dict[bytes, Library] = {}
        self.functions: dict[bytes, Function] = {}  # lower-cased name -> function
        self._version = -1

    def compile(self, code: bytes, stored: bool = False) -> Library:
        """Run a library's code (its registration only): the library, or Redis's error.  A stored
        library (loaded before, now brought back by replay or a snapshot) gets the whole hard
        script limit rather than FUNCTION LOAD's 500 ms: a busy machine must not lose it."""
        name, src = parse_metadata(code)
        registered = self.scripting.load_library(src, self.scripting.kill_after_ms if stored else None)
        lib = Library(name, code)
        for fname, callback, desc, flags in registered:
            lib.functions[fname] = Function(fname, name, callback, desc,
                                            tuple(f for f in FLAG_ORDER if f.encode() in flags))
        return lib

    def check_load(self, lib: Library, replace: bool) -> None:
        """Whether `lib` may join the libraries (FUNCTION LOAD's checks after compiling it)."""
        if not lib.functions:
            raise CommandError("ERR No functions registered")
        for fname in lib.functions:
            other = self.functions.get(fname.lower())
            if other is not None and not (replace and other.library == lib.name):
                raise CommandError(f"ERR Function {fname.decode(errors='replace')} already exists")

    def adopt(self, lib: Library) -> None:
        """`lib` was just stored (an FLOAD effect): use it as compiled, rather than run its code again."""
        self.libraries[lib.name] = lib

    def sync(self, ks: Any) -> None:
        """Follow the stored libraries: register new code, forget what went."""
        if ks.functions_version == self._version:
            return
        libraries: dict[bytes, Library] = {}
        for name, code in ks.functions.items():
            lib = self.libraries.get(name)
            if lib is None or lib.code != code:
                try:
                    lib = self.compile(code, stored=True)
                except CommandError as e:  # (it registered when it was loaded: out of Lua memory now?)
                    log.warning("a stored function library does not register", library=name.decode(errors="replace"),
                                error=str(e))
                    continue
            libraries[name] = lib
        self.libraries = libraries
        self.functions = {f.lower(): fn for lib in libraries.values() for f, fn in lib.functions.items()}
        self._version = ks.functions_version
