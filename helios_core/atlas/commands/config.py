"""CONFIG GET/SET/RESETSTAT/REWRITE/HELP and the parameter table behind them.

`_get_params` maps each parameter CONFIG GET knows to a reader; `_setters`
maps each one CONFIG SET may change to a validator that returns the change,
so a SET of several parameters is all or nothing.  The `timeout` parameter is
enforced here too (`start_idle_reaper`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from helios_core.atlas.commands.scripting import busy_after_ms
from helios_core.atlas.commands.server import subcommand_error
from helios_core.atlas.commands.table import OK, Ctx, Simple, command, err
from helios_core.atlas.evict import POLICIES, parse_bytes
from helios_core.atlas.glob import compile_glob
from helios_core.atlas.notify import flags_to_string, parse_flags
from helios_core.atlas.packed import pin_set_encodings, set_limit
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from helios_core.atlas.engine import Engine

__all__ = ["idle_timeout", "start_idle_reaper"]

log = get_logger("atlasd")


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
        "databases": lambda: b"%d" % engine.dbs.count,
        "hz": lambda: b"%d" % cfg.active_expire_hz,
        "maxmemory": lambda: b"%d" % engine.evictor.maxmemory,
        "maxmemory-policy": lambda: engine.evictor.policy.encode(),
        "maxmemory-samples": lambda: b"%d" % engine.evictor.samples,
        "tracking-table-max-keys": lambda: b"%d" % engine.tracking.max_keys,
        "notify-keyspace-events": lambda: flags_to_string(engine.notifier.flags).encode(),
        "slowlog-log-slower-than": lambda: b"%d" % engine.slowlog.slower_than_us,
        "slowlog-max-len": lambda: b"%d" % engine.slowlog.max_len,
        "latency-monitor-threshold": lambda: b"0",
        "timeout": lambda: b"%d" % idle_timeout(engine),
        "daemonize": lambda: b"no",
        "cluster-enabled": lambda: b"no",
        "busy-reply-threshold": lambda: b"%d" % busy_after_ms(engine),
        "lua-time-limit": lambda: b"%d" % busy_after_ms(engine),  # (its 7.0 alias, listed under its own name)
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
            "client-output-buffer-limit": lambda: output_limits(engine, server.pubsub_limit),
        })
    return params


# Encoding parameters: stored and returned; the hash-*, list-* and set-* ones set packed.LIMITS, which the
# hash, list and set types convert by (hashtype.py, listvalue.py, packed.py), the others have no effect.
# name -> (min, max, default); the ziplist names are aliases of the listpack ones, as in Redis 7.0.
_LONG_MAX = (1 << 63) - 1
PROTO_MIN_BULK = 1024 * 1024  # proto-max-bulk-len's least, as Redis 7.0 has it
# max-value-bytes (atlasd's own name for the same limit) may go lower, for tests and small values, but
# not below what the CONFIG SET raising it again needs: every argument of a request is held to it.
MIN_MAX_VALUE_BYTES = 64
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
# The ones Redis 7.0 declares MEMORY_CONFIG: they take its memory notation (1kb, 2k, 5mb).
_MEMORY_PARAMS = frozenset({"hash-max-listpack-value", "zset-max-listpack-value", "stream-node-max-bytes",
                            "hll-sparse-max-bytes"})
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


def _memory_in(v: bytes, hi: int) -> int:
    """A size parameter in Redis's memory notation (memtoull: digits, then b/k/kb/m/mb/g/gb; "" is 0)."""
    m = re.fullmatch(rb"([0-9]*)(b|kb?|mb?|gb?)?", v, re.IGNORECASE)
    if m is None or len(m[1]) >= 128:
        raise ValueError("argument must be a memory value")
    unit = (m[2] or b"b").lower()
    mul = {b"b": 1, b"k": 1000, b"kb": 1024, b"m": 1000**2, b"mb": 1024**2, b"g": 1000**3, b"gb": 1024**3}[unit]
    n = (min(int(m[1] or b"0"), (1 << 64) - 1) * mul) & ((1 << 64) - 1)  # (strtoull saturates, C wraps)
    if n > hi:
        raise ValueError(f"argument must be between 0 and {hi} inclusive")
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
            raise ValueError("argument(s) must be one of the following: everysec, always, no")  # (Redis's order)

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
        n = _int_in(v, MIN_MAX_VALUE_BYTES, _LONG_MAX)
        return max_bulk_apply(n)

    def proto_max_bulk_len(v: bytes) -> Callable[[], None]:
        # Redis's proto-max-bulk-len: memory notation, at least 1mb (a smaller one could refuse the
        # very CONFIG SET that raises it again)
        n = _memory_in(v, (1 << 64) - 1)
        if not PROTO_MIN_BULK <= n <= _LONG_MAX:
            raise ValueError(f"argument must be between {PROTO_MIN_BULK} and {_LONG_MAX} inclusive")
        return max_bulk_apply(n)

    def max_bulk_apply(n: int) -> Callable[[], None]:
        def apply() -> None:
            replace_config(max_value_bytes=n)
            if server is not None:
                server.set_max_bulk(n)
        return apply

    def encoding(name: str) -> Callable[[bytes], Callable[[], None]]:
        lo, hi, _ = _ENCODING[name]

        def check(v: bytes) -> Callable[[], None]:
            n = _memory_in(v, hi) if _ALIASES.get(name, name) in _MEMORY_PARAMS else _int_in(v, lo, hi)
            def apply() -> None:
                engine.settings[_ALIASES.get(name, name)] = b"%d" % n
                if name == "set-max-intset-entries":  # (no existing set converts: Redis's do at their next SADD)
                    pin_set_encodings((v for _, db in engine.dbs.made() for v in db.data.values() if type(v) is set), n)
                set_limit(name, n)  # the hash, list and set encodings follow (packed.py)
            return apply
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
        return lambda: engine.evictor.set_policy(name, engine.clock(), (db for _, db in engine.dbs.made()))

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

    def tracking_max_keys(v: bytes) -> Callable[[], None]:
        n = _int_in(v, 0, _LONG_MAX)
        return lambda: setattr(engine.tracking, "max_keys", n)

    def busy_threshold(v: bytes) -> Callable[[], None]:
        n = _int_in(v, 0, _LONG_MAX)

        def apply() -> None:
            engine.settings["busy-reply-threshold"] = b"%d" % n
            if engine.scripting is not None:
                engine.scripting.busy_after_ms = n
        return apply

    def hz(v: bytes) -> Callable[[], None]:
        # Redis takes 0..INT_MAX and keeps it within 1..500 (CONFIG GET shows what it kept); atlasd's
        # active expiry runs that many cycles a second (Engine._active_expire_tick follows the change)
        n = _int_in(v, 0, _INT_MAX)
        return lambda: replace_config(active_expire_hz=min(max(n, 1), 500))

    def latency_threshold(v: bytes) -> Callable[[], None]:
        _int_in(v, 0, _LONG_MAX)
        return lambda: None  # latency monitoring is not implemented: LATENCY answers empty

    setters: dict[str, Callable[[bytes], Callable[[], None]]] = {
        "appendfsync": appendfsync,
        "save": save_points,
        "max-value-bytes": max_bulk,
        "proto-max-bulk-len": proto_max_bulk_len,
        "notify-keyspace-events": notify_events,
        "maxmemory": maxmemory,
        "maxmemory-policy": policy,
        "maxmemory-samples": samples,
        "slowlog-log-slower-than": slower_than,
        "slowlog-max-len": slow_len,
        "timeout": timeout,
        "latency-monitor-threshold": latency_threshold,
        "hz": hz,
        "busy-reply-threshold": busy_threshold,
        "lua-time-limit": busy_threshold,
        "tracking-table-max-keys": tracking_max_keys,
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

        def output_limit(v: bytes) -> Callable[[], None]:
            classes = parse_output_limits(v)

            def apply() -> None:
                current = _output_classes(engine, server.pubsub_limit)
                current.update(classes)
                engine.settings["client-output-buffer-limit"] = b" ".join(
                    b"%s %d %d %d" % (name, *current[name]) for name in (b"normal", b"slave", b"pubsub"))
                server.pubsub_limit = current[b"pubsub"][0]
            return apply

        setters.update({"requirepass": requirepass, "maxclients": maxclients, "protected-mode": protected,
                        "client-output-buffer-limit": output_limit})
    return setters


# client-output-buffer-limit: Redis 7.0's classes (CONFIG GET names the replica class "slave", as 7.0
# does), each "hard soft soft_seconds".  atlasd enforces the pubsub class's hard limit (a subscriber
# that does not read is disconnected past it, atlasd.pubsub_output_limit); the rest is kept and
# reported (normal clients are paused, not dropped, when they do not read; there are no replicas).
_OUTPUT_CLASSES = {b"normal": b"normal", b"slave": b"slave", b"replica": b"slave", b"pubsub": b"pubsub"}


def _output_classes(engine: Engine, pubsub_limit: int) -> dict[bytes, tuple[int, int, int]]:
    stored = engine.settings.get("client-output-buffer-limit")
    if stored is None:
        return {b"normal": (0, 0, 0), b"slave": (268435456, 67108864, 60), b"pubsub": (pubsub_limit, 0, 0)}
    words = stored.split()
    return {words[i]: (int(words[i + 1]), int(words[i + 2]), int(words[i + 3])) for i in range(0, len(words), 4)}


def output_limits(engine: Engine, pubsub_limit: int) -> bytes:
    classes = _output_classes(engine, pubsub_limit)
    pubsub = classes[b"pubsub"]
    classes[b"pubsub"] = (pubsub_limit, pubsub[1], pubsub[2])  # (the limit in force)
    return b" ".join(b"%s %d %d %d" % (name, *classes[name]) for name in (b"normal", b"slave", b"pubsub"))


def parse_output_limits(v: bytes) -> dict[bytes, tuple[int, int, int]]:
    """Redis's `class hard soft soft_seconds ...` (sizes in its memory notation), with its errors."""
    words = v.split()
    if len(words) % 4:
        raise ValueError("Wrong number of arguments in buffer limit configuration.")
    out: dict[bytes, tuple[int, int, int]] = {}
    for i in range(0, len(words), 4):
        name = _OUTPUT_CLASSES.get(words[i].lower())
        if name is None:
            raise ValueError("Invalid client class specified in buffer limit configuration.")
        try:
            hard = _memory_in(words[i + 1], (1 << 64) - 1)
            soft = _memory_in(words[i + 2], (1 << 64) - 1)
            if re.fullmatch(rb"[+-]?[0-9]{1,18}", words[i + 3]) is None:  # (strtoll, all of it)
                raise ValueError
            secs = int(words[i + 3])
        except ValueError:
            raise ValueError("Error in hard, soft or soft_seconds setting in buffer limit configuration.") from None
        if secs < 0:
            raise ValueError("Error in hard, soft or soft_seconds setting in buffer limit configuration.")
        out[name] = (hard, soft, secs)
    return out


def _positive(v: bytes) -> int:
    try:
        n = int(v)
    except ValueError:
        raise ValueError("argument couldn't be parsed into an integer") from None
    if n < 1:
        raise ValueError("argument must be between 1 and 9223372036854775807 inclusive")
    return n


# Redis 7.0's text, byte for byte (REWRITE is listed although atlasd refuses it, with its reason).
_CONFIG_HELP = (
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
    "RESETSTAT", "    Reset statistics reported by the INFO command.",
    "REWRITE", "    Rewrite the configuration file.",
    "HELP", "    Prints this help.",
)


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
        stats.expired_keys = stats.evicted_keys = stats.forks = stats.last_fork_usec = 0
        stats.keyspace[:] = [0, 0]  # (in place: the engine's Ctx holds this list)
        return OK
    if sub == b"REWRITE" and not rest:
        raise err("ERR CONFIG REWRITE is not supported: atlasd settings come from the HELIOS config file "
                  "and its command-line options")
    if sub == b"HELP" and not rest:
        return [Simple(s) for s in _CONFIG_HELP]
    raise subcommand_error("CONFIG", args[0], "get set resetstat rewrite help")


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
