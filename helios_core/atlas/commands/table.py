"""The one command table.

Every ATLAS command is defined once here (name, arity, flags, key positions,
handler).  The RESP server, the JSON-lines protocol, the embedded Store and
the CLI all dispatch through `TABLE`; nothing else implements a command.

A handler gets a `Ctx` and the arguments after the command name.  It
validates everything first, then emits effects through `ctx.emit` (which the
engine logs to the AOF and applies), and returns the reply as plain Python:
bytes (bulk), int, float (a score: bulk in RESP2, double in RESP3), None
(nil), list, dict, `Simple` (status line), or raises `CommandError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from helios_core.atlas.zset import ZSet
from helios_core.errors import CommandError

if TYPE_CHECKING:
    from helios_core.atlas.keyspace import Keyspace

__all__ = [
    "TABLE", "Command", "Ctx", "Simple", "OK", "Refused", "command", "err", "exec_abort", "unknown_command",
    "WRONGTYPE", "NOT_INT", "SYNTAX", "parse_int", "parse_int32", "parse_float",
]


class Simple(str):
    """A status reply (`+OK`), as opposed to a bulk string."""


OK = Simple("OK")

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"


def err(text: str) -> CommandError:
    return CommandError(text)


def exec_abort(refusal: CommandError | str) -> str:
    """EXECABORT for a refused EXEC, as Redis's rejectCommand words it (execCommandAbort): the
    refusal's text, its ERR dropped."""
    text = str(refusal)
    return "EXECABORT Transaction discarded because of: " + (text[4:] if text.startswith("ERR ") else text)


class Refused(CommandError):
    """A handler's refusal that Redis makes before running the command (a protected call: DEBUG,
    MODULE LOAD): the engine counts it as rejected, not failed, and does not show it to MONITOR."""


def unknown_command(argv: list[bytes]) -> CommandError:
    """Redis's error for a name not in the table: each argument quoted and followed by a space,
    128 characters in all."""
    shown = ""
    for a in argv[1:]:
        if len(shown) >= 128:
            break
        shown += f"'{a.decode(errors='replace')[:128 - len(shown)]}' "
    return CommandError(f"ERR unknown command '{argv[0].decode(errors='replace')[:128]}', "
                        f"with args beginning with: {shown}")


# INFO keyspace_hits/misses count the key lookups Redis makes with lookupKeyRead: every lookup of a
# command flagged readonly, and those of these writes; and none of these reads' (Redis looks their
# keys up without counting).
READ_LOOKUPS = frozenset({
    "getset", "getdel", "getex", "copy", "object", "sort", "bitop", "pfmerge",
    "sinterstore", "sunionstore", "sdiffstore", "zunionstore", "zinterstore", "zdiffstore", "zrangestore",
    "georadius", "georadiusbymember", "geosearchstore", "xreadgroup", "xack", "xclaim", "xautoclaim", "xinfo",
})
NO_STATS_LOOKUPS = frozenset({"keys", "scan", "randomkey", "memory"})


@dataclass(frozen=True, slots=True)
class Command:
    name: str                     # lower case, as COMMAND reports it
    arity: int                    # Redis convention: N exact, -N at least N (name included)
    flags: frozenset[str]
    handler: Callable[[Ctx, list[bytes]], Any]
    first_key: int = 1
    last_key: int = 1
    step: int = 1
    doc: str = ""
    # How a connection dispatches it, beyond Redis's own flags (which COMMAND reports as Redis 7 does):
    #   subscribed_ok  may run on a RESP2 connection in subscribed mode
    #   multi_control  runs at once inside MULTI instead of being queued (EXEC, DISCARD, ...)
    #   no_multi       refused inside MULTI (where Redis has no flag saying so, e.g. SUBSCRIBE)
    #   writes         a container whose subcommands write (XGROUP CREATE): it runs as a write (refused
    #                  while the AOF fails, its reply waits for its record) though COMMAND reports no
    #                  flags for it, as Redis 7.0 does for containers
    conn: frozenset[str] = frozenset()

    @property
    def is_write(self) -> bool:
        return "write" in self.flags or "writes" in self.conn


@dataclass
class CommandTable:
    commands: dict[bytes, Command] = field(default_factory=dict)

    def get(self, name: bytes) -> Command | None:
        cmd = self.commands.get(name)
        if cmd is None:
            cmd = self.commands.get(name.lower())
        return cmd

    def names_with(self, flag: str) -> frozenset[bytes]:
        """Names of the commands carrying `flag`, a Redis flag or a `conn` one (for set lookups)."""
        return frozenset(k for k, c in self.commands.items() if flag in c.flags or flag in c.conn)

    def register(self, cmd: Command) -> None:
        key = cmd.name.encode()
        if key in self.commands:
            raise ValueError(f"command {cmd.name} defined twice")
        self.commands[key] = cmd


TABLE = CommandTable()


def command(name: str, arity: int, flags: str = "", keys: tuple[int, int, int] = (1, 1, 1), doc: str = "",
            conn: str = "") -> Callable[[Callable[[Ctx, list[bytes]], Any]], Callable[[Ctx, list[bytes]], Any]]:
    """Register the decorated handler as command `name` in TABLE."""

    def deco(fn: Callable[[Ctx, list[bytes]], Any]) -> Callable[[Ctx, list[bytes]], Any]:
        TABLE.register(Command(name.lower(), arity, frozenset(flags.split()), fn, *keys, doc=doc or (fn.__doc__ or ""),
                               conn=frozenset(conn.split())))
        return fn

    return deco


class Ctx:
    """What a handler sees: the keyspace, the time, and a way to emit effects.

    `emit` is bound by the engine: it applies the effect (recording undo) and
    queues it for the AOF record of the current command or batch.
    """

    __slots__ = ("ks", "now_ms", "emit", "writable", "engine", "conn", "pending", "seen", "name", "reads", "hits")

    def __init__(self, ks: Keyspace, emit: Callable[[tuple], None], engine: Any = None) -> None:
        self.ks = ks
        self.now_ms = 0
        self.emit = emit
        self.writable = True
        self.engine = engine
        self.conn: Any = None
        # Set by the engine: keys with records not durable yet -> seq; `seen` is the newest of
        # those a command looked at, so its reply waits for exactly what it may reveal.
        self.pending: dict[bytes, int] = {}
        self.seen = 0
        # The command's name as the caller typed it (set by the engine): a few of Redis's error
        # texts quote c->argv[0] (GEOSEARCH's "... can be specified for geosearch").
        self.name = b""
        # INFO keyspace_hits/keyspace_misses: [hits, misses], counted by `lookup` while `reads` (set
        # by the engine per command: a read command's lookups are Redis's lookupKeyRead, a write's
        # its lookupKeyWrite, which counts nothing)
        self.reads = False
        self.hits = [0, 0]

    def lookup(self, key: bytes) -> Any:
        """The live value at key, or None; a key found expired is deleted (a logged DEL)."""
        ks = self.ks
        seq = self.pending.get(key)
        if seq is not None and seq > self.seen:  # (a pending DEL is revealed by absence, too)
            self.seen = seq
        value = ks.data.get(key)
        if value is None:
            if self.reads:
                self.hits[1] += 1
            return None
        exp = ks.expires.get(key)
        if exp is not None and exp <= self.now_ms:
            if self.writable:
                self.emit(("DEL", key))
            if self.reads:
                self.hits[1] += 1
            return None
        if self.reads:
            self.hits[0] += 1
        return value

    def lookup_write(self, key: bytes) -> Any:
        """`lookup` as Redis's lookupKeyWrite: a destination's, which counts no keyspace hit or miss."""
        reads, self.reads = self.reads, False
        try:
            return self.lookup(key)
        finally:
            self.reads = reads

    def get_str(self, key: bytes) -> bytes | None:
        value = self.lookup(key)
        if value is not None and type(value) is not bytes:
            raise CommandError(WRONGTYPE)
        return value

    def get_zset(self, key: bytes) -> ZSet | None:
        value = self.lookup(key)
        if value is not None and type(value) is not ZSet:
            raise CommandError(WRONGTYPE)
        return value

    def expiry(self, key: bytes) -> int | None:
        return self.ks.expires.get(key)


# -- argument parsing shared by the command modules ----------------------------------

_INT_RE = re.compile(rb"-?(0|[1-9][0-9]*)\Z")


def parse_int(raw: bytes, what: str = NOT_INT) -> int:
    """Strict 64-bit signed integer, as Redis's string2ll."""
    if not _INT_RE.match(raw) or raw == b"-0":
        raise CommandError(what)
    v = int(raw)
    if not -(1 << 63) <= v < (1 << 63):
        raise CommandError(what)
    return v


def parse_int32(raw: bytes, what: str | None = None) -> int:
    """Redis's getIntFromObjectOrReply: a C int, with `what` (when given) as the error for anything
    else, or Redis's two texts (not an integer / out of int range)."""
    try:
        v = parse_int(raw)
    except CommandError:
        raise CommandError(what or NOT_INT) from None
    if not -(1 << 31) <= v < 1 << 31:
        raise CommandError(what or "ERR value is out of range, value must between -2147483648 and 2147483647")
    return v


# C's strtod grammar in the C locale: decimal, hexadecimal, inf/infinity, nan[(chars)].
C_FLOAT_RE = re.compile(
    rb"(?P<sign>[+-]?)(?:(?P<dec>(?P<dm>[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)"
    rb"|0x(?P<hex>(?P<hm>[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?)"
    rb"|(?P<inf>inf(?:inity)?)|(?P<nan>nan(?:\([0-9a-z_]*\))?))\Z", re.IGNORECASE)
_NONZERO_DIGIT = re.compile(rb"[1-9a-f]", re.IGNORECASE)
C_SPACE = b" \t\n\v\f\r"


def c_strtod(text: bytes) -> tuple[float, bool] | None:
    """C strtod over all of `text`: (value, ERANGE to zero or infinity), or None when not a number."""
    m = C_FLOAT_RE.match(text)
    if m is None:
        return None
    if m["nan"] is not None:
        v = math.nan
    elif m["inf"] is not None:
        v = math.inf
    elif m["hex"] is not None:
        try:
            v = float.fromhex(m["hex"].decode())
        except OverflowError:
            v = math.inf
    else:
        v = float(m["dec"])
    mantissa = m["dm"] or m["hm"] or b""
    out_of_range = (math.isinf(v) and m["inf"] is None) or (v == 0 and bool(_NONZERO_DIGIT.search(mantissa)))
    return (-v if m["sign"] == b"-" else v), out_of_range


def parse_float(raw: bytes, what: str = NOT_FLOAT) -> float:
    """A double as Redis's string2d reads one: all of it, no leading space, no overflow, no NaN."""
    got = c_strtod(raw) if raw and raw[:1] not in C_SPACE else None
    if got is None or got[1] or math.isnan(got[0]):
        raise CommandError(what)
    return got[0]


def literal_prefix(pattern: bytes) -> bytes:
    """The part of a glob before its first special character (for index range scans)."""
    for i, c in enumerate(pattern):
        if c in b"*?[\\":
            return pattern[:i]
    return pattern
