"""Connection commands: PING ECHO QUIT SELECT AUTH HELLO CLIENT RESET, transactions, pub/sub.

These act on the client connection (`ctx.conn`, set by the RESP server before
each command; None for in-process callers).  State lives on the connection and
the server; the handlers here parse arguments and shape replies as Redis does.

MULTI/EXEC: while a connection is in MULTI, its commands are queued by the
connection itself (see `Connection.special`), and EXEC runs the queue there,
not through this table: EXEC must not nest inside `Engine.execute`.  The
table entries below answer the out-of-MULTI cases ("EXEC without MULTI").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from helios_core.atlas.commands.table import (
    OK,
    SYNTAX,
    Ctx,
    Simple,
    command,
    err,
    parse_int,
)
from helios_core.atlas.glob import compile_glob

if TYPE_CHECKING:
    from helios_core.atlas.client_connection import Connection

__all__ = ["PONG", "QUEUED", "check_password", "valid_client_name"]

PONG = Simple("PONG")
QUEUED = Simple("QUEUED")
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
NOAUTH = "NOAUTH Authentication required."


def _conn(ctx: Ctx) -> Connection:
    conn: Connection | None = ctx.conn
    if conn is None:
        raise err("ERR this command needs a client connection")
    return conn


def check_password(required: bytes | None, user: bytes, password: bytes) -> bool:
    """Redis's default user: any password when none is set, else a constant-time match."""
    if user != b"default":
        return False
    if not required:
        return True
    # Hash both sides first so the comparison does not leak the length either.
    return hmac.compare_digest(hashlib.sha256(password).digest(), hashlib.sha256(required).digest())


def valid_client_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


def _set_name(conn: Connection, name: bytes) -> None:
    if not valid_client_name(name):
        raise err("ERR Client names cannot contain spaces, newlines or special characters.")
    conn.name = name


# -- basics ------------------------------------------------------------------------

@command("ping", -1, "fast sentinel", keys=(0, 0, 0), conn="subscribed_ok")
def ping(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) > 1:
        raise err("ERR wrong number of arguments for 'ping' command")
    conn = ctx.conn
    if conn is not None and conn.subscribed and not conn.resp3 and not conn.is_json:
        return [b"pong", args[0] if args else b""]  # RESP2 subscribed mode: a reply shaped like a message
    return args[0] if args else PONG


@command("echo", 2, "fast", keys=(0, 0, 0))
def echo(ctx: Ctx, args: list[bytes]) -> Any:
    return args[0]


@command("quit", -1, "noscript loading stale fast no_auth allow_busy", keys=(0, 0, 0),
         conn="subscribed_ok multi_control")
def quit_(ctx: Ctx, args: list[bytes]) -> Any:
    if ctx.conn is not None:
        ctx.conn.closing = True
    return OK


@command("select", 2, "loading stale fast", keys=(0, 0, 0))
def select(ctx: Ctx, args: list[bytes]) -> Any:
    if parse_int(args[0]) != 0:
        raise err("ERR DB index is out of range")
    return OK


@command("auth", -2, "noscript loading stale fast no_auth allow_busy", keys=(0, 0, 0))
def auth(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) > 2:
        raise err(SYNTAX)
    conn = _conn(ctx)
    required = conn.server.requirepass
    if len(args) == 1 and not required:
        raise err("ERR AUTH <password> called without any password configured for the default user. "
                  "Are you sure your configuration is correct?")
    user = args[0] if len(args) == 2 else b"default"
    if not conn.try_auth(user, args[-1]):
        raise err(WRONGPASS)
    conn.set_authed(True)
    return OK


@command("hello", -1, "noscript loading stale fast no_auth allow_busy", keys=(0, 0, 0))
def hello(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    version = None
    if args:
        try:
            version = parse_int(args[0])
        except Exception:
            raise err("ERR Protocol version is not an integer or out of range") from None
        if version not in (2, 3):
            raise err("NOPROTO unsupported protocol version")
    user = password = name = None
    i, n = 1, len(args)
    while i < n:
        opt = args[i].upper()
        if opt == b"AUTH" and n - i > 2:
            user, password = args[i + 1], args[i + 2]
            i += 3
        elif opt == b"SETNAME" and n - i > 1:
            name = args[i + 1]
            i += 2
        else:
            raise err(f"ERR Syntax error in HELLO option '{args[i].decode(errors='replace')}'")
    if user is not None and password is not None:
        if not conn.try_auth(user, password):
            raise err(WRONGPASS)
        conn.set_authed(True)
    elif not conn.authed:
        raise err("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                  "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                  "select the RESP protocol version at the same time")
    if name is not None:
        _set_name(conn, name)
    if version is not None:
        conn.set_resp3(version == 3)
    return conn.server.hello_info(conn)


@command("reset", 1, "noscript loading stale fast no_auth allow_busy", keys=(0, 0, 0),
         conn="subscribed_ok multi_control")
def reset(ctx: Ctx, args: list[bytes]) -> Any:
    _conn(ctx).reset()
    return Simple("RESET")


# -- CLIENT ------------------------------------------------------------------------

_CLIENT_HELP = [
    b"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"ID", b"    Return the ID of the current connection.",
    b"GETNAME", b"    Return the name of the current connection.",
    b"SETNAME <name>", b"    Assign the name <name> to the current connection.",
    b"SETINFO <LIB-NAME|LIB-VER> <value>", b"    Record the client library's name or version.",
    b"INFO", b"    Return information about the current connection.",
    b"LIST [TYPE (NORMAL|PUBSUB)] [ID <id> [<id> ...]]", b"    Return information about connections.",
    b"KILL ID <id> | KILL <ip:port>", b"    Close a connection.",
    b"HELP", b"    Print this help.",
]


@command("client", -2, "noscript loading stale", keys=(0, 0, 0))
def client(ctx: Ctx, args: list[bytes]) -> Any:
    sub = args[0].upper()
    rest = args[1:]
    if sub == b"HELP" and not rest:
        return [Simple(line.decode()) for line in _CLIENT_HELP]
    conn = _conn(ctx)
    server = conn.server
    if sub == b"ID" and not rest:
        return conn.id
    if sub == b"GETNAME" and not rest:
        return conn.name or None
    if sub == b"SETNAME" and len(rest) == 1:
        _set_name(conn, rest[0])
        return OK
    if sub == b"SETINFO" and len(rest) == 2:
        attr = rest[0].upper()
        if attr not in (b"LIB-NAME", b"LIB-VER"):
            raise err(f"ERR Unrecognized option '{rest[0].decode(errors='replace')}'")
        if not valid_client_name(rest[1]):
            raise err(f"ERR {attr.decode()} cannot contain spaces, newlines or special characters.")
        if attr == b"LIB-NAME":
            conn.lib_name = rest[1]
        else:
            conn.lib_ver = rest[1]
        return OK
    if sub == b"INFO" and not rest:
        return conn.describe().encode() + b"\n"
    if sub == b"LIST":
        return _client_list(server, rest)
    if sub == b"KILL" and rest:
        return _client_kill(conn, rest)
    if sub in (b"NO-EVICT", b"NO-TOUCH") and len(rest) == 1 and rest[0].upper() in (b"ON", b"OFF"):
        return OK
    raise err(f"ERR unknown subcommand or wrong number of arguments for '{args[0].decode(errors='replace')}'. "
              f"Try CLIENT HELP.")


def _client_list(server: Any, rest: list[bytes]) -> bytes:
    conns = list(server.clients.values())
    i = 0
    while i < len(rest):
        opt = rest[i].upper()
        if opt == b"TYPE" and i + 1 < len(rest):
            kind = rest[i + 1].lower()
            if kind not in (b"normal", b"pubsub", b"master", b"replica", b"slave"):
                raise err(f"ERR Unknown client type '{rest[i + 1].decode(errors='replace')}'")
            want_pubsub = kind == b"pubsub"
            conns = [c for c in conns if c.subscribed == want_pubsub] if kind in (b"normal", b"pubsub") else []
            i += 2
        elif opt == b"ID" and i + 1 < len(rest):
            ids = set()
            for raw in rest[i + 1:]:
                try:
                    ids.add(parse_int(raw))
                except Exception:
                    raise err("ERR Invalid client ID") from None
            conns = [c for c in conns if c.id in ids]
            i = len(rest)
        else:
            raise err(SYNTAX)
    return "".join(c.describe() + "\n" for c in conns).encode()


def _client_kill(conn: Connection, rest: list[bytes]) -> Any:
    server = conn.server
    if len(rest) == 1:  # old form: CLIENT KILL addr:port
        addr = rest[0].decode(errors="replace")
        for c in list(server.clients.values()):
            if c.addr == addr:
                c.kill()
                return OK
        raise err("ERR No such client")
    killed = 0
    i = 0
    targets = list(server.clients.values())
    while i + 1 < len(rest):
        opt, val = rest[i].upper(), rest[i + 1]
        if opt == b"ID":
            try:
                cid = parse_int(val)
            except Exception:
                raise err("ERR client-id should be greater than 0") from None
            targets = [c for c in targets if c.id == cid]
        elif opt == b"ADDR":
            targets = [c for c in targets if c.addr == val.decode(errors="replace")]
        elif opt == b"SKIPME":
            if val.lower() == b"yes":
                targets = [c for c in targets if c is not conn]
        else:
            raise err(SYNTAX)
        i += 2
    if i != len(rest):
        raise err(SYNTAX)
    for c in targets:
        c.kill()
        killed += 1
    return killed


# -- transactions --------------------------------------------------------------------
# Inside MULTI the connection queues commands and runs EXEC/DISCARD itself.

@command("multi", 1, "noscript loading stale fast allow_busy", keys=(0, 0, 0), conn="multi_control")
def multi(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    if conn.multi is not None:
        raise err("ERR MULTI calls can not be nested")
    conn.begin_multi()
    return OK


@command("exec", 1, "noscript loading stale skip_slowlog", keys=(0, 0, 0), conn="multi_control")
def exec_(ctx: Ctx, args: list[bytes]) -> Any:
    raise err("ERR EXEC without MULTI")


@command("discard", 1, "noscript loading stale fast allow_busy", keys=(0, 0, 0), conn="multi_control")
def discard(ctx: Ctx, args: list[bytes]) -> Any:
    raise err("ERR DISCARD without MULTI")


@command("watch", -2, "noscript loading stale fast allow_busy", keys=(1, -1, 1), conn="multi_control")
def watch(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    if conn.multi is not None:
        raise err("ERR WATCH inside MULTI is not allowed")
    conn.server.watch(conn, args, ctx.now_ms)
    return OK


@command("unwatch", 1, "noscript loading stale fast allow_busy", keys=(0, 0, 0))
def unwatch(ctx: Ctx, args: list[bytes]) -> Any:
    conn = ctx.conn
    if conn is not None:
        conn.server.unwatch(conn)
    return OK


# -- pub/sub -------------------------------------------------------------------------

@command("subscribe", -2, "pubsub noscript loading stale", keys=(0, 0, 0), conn="subscribed_ok no_multi")
def subscribe(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    return conn.server.subscribe(conn, args, pattern=False)


@command("psubscribe", -2, "pubsub noscript loading stale", keys=(0, 0, 0), conn="subscribed_ok no_multi")
def psubscribe(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    return conn.server.subscribe(conn, args, pattern=True)


@command("unsubscribe", -1, "pubsub noscript loading stale", keys=(0, 0, 0), conn="subscribed_ok no_multi")
def unsubscribe(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    return conn.server.unsubscribe(conn, args, pattern=False)


@command("punsubscribe", -1, "pubsub noscript loading stale", keys=(0, 0, 0), conn="subscribed_ok no_multi")
def punsubscribe(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    return conn.server.unsubscribe(conn, args, pattern=True)


@command("publish", 3, "pubsub loading stale fast may_replicate", keys=(0, 0, 0))
def publish(ctx: Ctx, args: list[bytes]) -> Any:
    conn = ctx.conn
    if conn is None:
        return 0
    return conn.server.publish(args[0], args[1])


@command("pubsub", -2, "pubsub loading stale", keys=(0, 0, 0))
def pubsub(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    server = conn.server
    sub = args[0].upper()
    if sub == b"CHANNELS" and len(args) <= 2:
        names = list(server.channels)
        if len(args) == 2:
            rx = compile_glob(args[1])
            names = [c for c in names if rx.match(c)]
        return names
    if sub == b"NUMSUB":
        out: list[Any] = []
        for ch in args[1:]:
            out += [ch, len(server.channels.get(ch, ()))]
        return out
    if sub == b"NUMPAT" and len(args) == 1:
        return len(server.patterns)
    raise err(f"ERR unknown subcommand or wrong number of arguments for '{args[0].decode(errors='replace')}'. "
              f"Try PUBSUB HELP.")
