"""Numbered databases: SELECT, MOVE, SWAPDB, FLUSHDB, FLUSHALL (DBSIZE, KEYS, SCAN, RANDOMKEY and
COPY ... DB work on `ctx.ks`, the running command's database, in keys.py).

A connection's database is `conn.db`; the engine works in it for each of the connection's
commands (Engine.select).  What these write reaches the AOF as effects (databases.py): MOVE is a
DEL in the source database and the value written again after a SELECT of the destination,
SWAPDB and FLUSHDB are effects of their own, FLUSHALL empties every database.  Errors are Redis
7.0's, byte for byte.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.blocking import signal_databases
from helios_core.atlas.commands.keys import log_value
from helios_core.atlas.commands.table import OK, SYNTAX, Ctx, command, err, parse_int32
from helios_core.atlas.databases import DB_OUT_OF_RANGE

__all__ = ["SAME_OBJECT", "db_index"]

SAME_OBJECT = "ERR source and destination objects are the same"


def db_index(ctx: Ctx, raw: bytes, what: str | None = None) -> int:
    """A database index argument: an int (Redis's errors otherwise), and one this server has."""
    index = parse_int32(raw, what)
    if not 0 <= index < ctx.engine.dbs.count:
        raise err(DB_OUT_OF_RANGE)
    return index


@command("select", 2, "loading stale fast", keys=(0, 0, 0))
def select(ctx: Ctx, args: list[bytes]) -> Any:
    index = db_index(ctx, args[0])
    conn = ctx.conn
    if conn is None:
        if index:
            raise err("ERR SELECT needs a client connection (in-process callers work in database 0)")
        return OK
    # (inside a script this changes the database of the script's own commands; EVAL and FCALL
    # give the caller its database back afterwards, as Redis 7 does)
    conn.db = index
    ctx.engine.conn_db_changed(conn)
    return OK


@command("move", 3, "write fast")
def move(ctx: Ctx, args: list[bytes]) -> Any:
    key = args[0]
    engine = ctx.engine
    dst = db_index(ctx, args[1])
    if dst == engine.db:
        raise err(SAME_OBJECT)
    value = ctx.lookup(key)
    if value is None:
        return 0
    exp = ctx.expiry(key)
    seen = ctx.ks.access.get(key)  # (LRU/LFU data: Redis moves the object, which holds it)
    with engine.in_db(dst):
        if ctx.lookup(key) is not None:
            return 0
        log_value(ctx, key, value, exp)
        evictor = engine.evictor
        if evictor.tracks_access:  # the moved key's record, touched as Redis's lookup touches it
            if seen is not None:
                ctx.ks.access[key] = seen
            evictor.touch(ctx.ks.access, key, ctx.now_ms)
    ctx.emit(("DEL", key))
    return 1


@command("swapdb", 3, "write fast", keys=(0, 0, 0))
def swapdb(ctx: Ctx, args: list[bytes]) -> Any:
    # (each index is checked for being an int before either is checked for being in range)
    a = parse_int32(args[0], "ERR invalid first DB index")
    b = parse_int32(args[1], "ERR invalid second DB index")
    count = ctx.engine.dbs.count
    if not (0 <= a < count and 0 <= b < count):
        raise err(DB_OUT_OF_RANGE)
    if a != b:
        ctx.emit(("SWAPDB", a, b))
        signal_databases(ctx, (a, b))  # clients blocked on a key that now exists are served
    return OK


def _flush_option(args: list[bytes]) -> None:
    if len(args) > 1 or (args and args[0].upper() not in (b"ASYNC", b"SYNC")):
        raise err(SYNTAX)


@command("flushdb", -1, "write", keys=(0, 0, 0))
def flushdb(ctx: Ctx, args: list[bytes]) -> Any:
    _flush_option(args)
    ctx.emit(("FLUSHDB",))
    return OK


@command("flushall", -1, "write", keys=(0, 0, 0))
def flushall(ctx: Ctx, args: list[bytes]) -> Any:
    _flush_option(args)
    ctx.emit(("FLUSHALL",))
    return OK
