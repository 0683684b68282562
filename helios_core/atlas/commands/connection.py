"""Connection commands: PING ECHO QUIT AUTH HELLO CLIENT RESET, transactions, pub/sub (SELECT is
in databases.py).

These act on the client connection (`ctx.conn`, set by the RESP server before
each command; None for in-process callers).  State lives on the connection and
the server; the handlers here parse arguments and shape replies as Redis does.

MULTI/EXEC: while a connection is in MULTI, its commands are queued by the
connection itself (see `Connection.special`), and EXEC runs the queue there,
not through this table: EXEC must not nest inside `Engine.execute`.  The
table entries below answer the out-of-MULTI cases ("EXEC without MULTI").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

from helios_core.atlas.commands.server import subcommand_error
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
from helios_core.atlas.resp import OrderedSet, Replies
from helios_core.atlas.tracking import check_prefixes

if TYPE_CHECKING:
    from helios_core.atlas.client_connection import Connection

__all__ = ["PONG", "QUEUED", "check_password", "valid_client_name", "client_line"]

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


@command("echo", 2, "loading stale fast", keys=(0, 0, 0))
def echo(ctx: Ctx, args: list[bytes]) -> Any:
    return args[0]


@command("quit", -1, "noscript loading stale fast no_auth allow_busy", keys=(0, 0, 0),
         conn="subscribed_ok multi_control")
def quit_(ctx: Ctx, args: list[bytes]) -> Any:
    if ctx.conn is not None:
        ctx.conn.closing = True
    return OK


def _log_failed_auth(ctx: Ctx, conn: Connection, name: bytes, user: bytes) -> None:
    """ACL LOG's entry for a failed AUTH (acl.py; imported here, on the failure path, because acl.py
    uses this module's client_line).  The password is not passed: it is never recorded."""
    from helios_core.atlas.commands.acl import record_auth_failure

    record_auth_failure(ctx, conn, name, user)


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
        _log_failed_auth(ctx, conn, b"auth", user)
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
            _log_failed_auth(ctx, conn, b"hello", user)
            raise err(WRONGPASS)
        conn.set_authed(True)
    elif not conn.authed:
        raise err("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                  "HELLO AUTH <user> <pass> option can be used to authenticate the client and "
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

# Redis 7.0's text, byte for byte (SETINFO, which atlasd accepts too, came with 7.2 and is not listed).
_CLIENT_HELP = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)", "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR", "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME", "    Return the name of the current connection.",
    "ID", "    Return the ID of the current connection.",
    "INFO", "    Return information about the current client connection.",
    "KILL <ip:port>", "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]", "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)", "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)", "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)", "      Kill connections by type.",
    "    * USER <username>", "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)", "      Skip killing current connection (default: yes).",
    "LIST [options ...]", "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)", "      Return clients of specified type.",
    "UNPAUSE", "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]", "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)", "    Control the replies sent to the current connection.",
    "SETNAME <name>", "    Assign the name <name> to the current connection.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]", "    Unblock the specified blocked client.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]", "    Control server assisted client side caching.",
    "TRACKINGINFO", "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)", "    Protect current client connection from eviction.",
    "HELP", "    Prints this help.",
]
# Commands with subcommands: CLIENT LIST shows them as `name|sub`, as Redis 7 does.
_CONTAINERS = frozenset({b"client", b"config", b"command", b"memory", b"slowlog", b"latency", b"pubsub", b"script",
                         b"function", b"object", b"acl", b"cluster", b"module", b"xinfo"})


@command("client", -2, "noscript loading stale", keys=(0, 0, 0))
def client(ctx: Ctx, args: list[bytes]) -> Any:
    sub = args[0].upper()
    rest = args[1:]
    if sub == b"HELP" and not rest:
        return [Simple(line) for line in _CLIENT_HELP]
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
        return client_line(conn, conn).encode() + b"\n"
    if sub == b"LIST":
        return _client_list(conn, rest)
    if sub == b"KILL" and rest:
        return _client_kill(conn, rest)
    if sub == b"REPLY" and len(rest) == 1:
        return _client_reply(conn, rest[0].upper())
    if sub == b"PAUSE" and len(rest) in (1, 2):
        return _client_pause(conn, rest)
    if sub == b"UNPAUSE" and not rest:
        _unpause(server)
        return OK
    if sub == b"UNBLOCK" and len(rest) in (1, 2):
        cid = parse_int(rest[0])
        mode = rest[1].upper() if len(rest) == 2 else b"TIMEOUT"
        if mode not in (b"TIMEOUT", b"ERROR"):
            raise err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
        target = server.clients.get(cid)
        return int(target is not None and target.unblock(mode == b"ERROR"))
    if sub == b"TRACKING" and rest:
        return _client_tracking(ctx, conn, rest)
    if sub == b"TRACKINGINFO" and not rest:
        t = conn.tracking
        if t is None:
            return {b"flags": OrderedSet([b"off"]), b"redirect": -1, b"prefixes": []}
        return {b"flags": OrderedSet(t.flags()), b"redirect": t.redirect, b"prefixes": sorted(t.prefixes)}
    if sub == b"GETREDIR" and not rest:
        return conn.tracking.redirect if conn.tracking is not None else -1
    if sub == b"CACHING" and len(rest) == 1:
        return _client_caching(conn, rest[0].lower())
    if sub in (b"NO-EVICT", b"NO-TOUCH") and len(rest) == 1:
        if rest[0].upper() not in (b"ON", b"OFF"):
            raise err(SYNTAX)
        return OK  # atlasd never evicts clients (maxmemory-clients is not implemented)
    raise subcommand_error("CLIENT", args[0], "caching getredir getname id info kill list unpause pause reply "
                                              "setname setinfo unblock tracking trackinginfo no-evict no-touch help")


def _client_tracking(ctx: Ctx, conn: Connection, rest: list[bytes]) -> Any:
    """CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT] [NOLOOP]: the
    checks of Redis 7.0's clientCommand in its order (and its words); the table is tracking.py's."""
    redirect = 0
    bcast = optin = optout = noloop = False
    prefixes: list[bytes] = []
    j, n = 1, len(rest)
    while j < n:
        opt = rest[j].lower()
        more = j + 1 < n
        if opt == b"redirect" and more:
            j += 1
            if redirect:
                raise err("ERR A client can only redirect to a single other client")
            redirect = parse_int(rest[j])
            if redirect not in conn.server.clients:
                raise err("ERR The client ID you want redirect to does not exist")
        elif opt == b"bcast":
            bcast = True
        elif opt == b"optin":
            optin = True
        elif opt == b"optout":
            optout = True
        elif opt == b"noloop":
            noloop = True
        elif opt == b"prefix" and more:
            j += 1
            prefixes.append(rest[j])
        else:
            raise err(SYNTAX)
        j += 1
    mode = rest[0].lower()
    tracking = ctx.engine.tracking
    t = conn.tracking
    if mode == b"on":
        if prefixes and not bcast:
            raise err("ERR PREFIX option requires BCAST mode to be enabled")
        if t is not None and t.bcast != bcast:
            raise err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, "
                      "and then re-enabling it with a different mode.")
        if bcast and (optin or optout):
            raise err("ERR OPTIN and OPTOUT are not compatible with BCAST")
        if optin and optout:
            raise err("ERR You can't specify both OPTIN mode and OPTOUT mode")
        if t is not None and ((optin and t.optout) or (optout and t.optin)):
            raise err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, "
                      "and then re-enabling it with a different mode.")
        if bcast:
            collision = check_prefixes(t.prefixes if t is not None else [], prefixes)
            if collision is not None:
                raise err(collision)
        tracking.enable(conn, redirect, bcast, optin, optout, noloop, prefixes)
    elif mode == b"off":
        tracking.disable(conn)
    else:
        raise err(SYNTAX)
    return OK


def _client_caching(conn: Connection, opt: bytes) -> Any:
    t = conn.tracking
    if t is None:
        raise err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or "
                  "OPTOUT mode enabled")
    if opt == b"yes":
        if not t.optin:
            raise err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
    elif opt == b"no":
        if not t.optout:
            raise err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
    else:
        raise err(SYNTAX)
    t.caching = True
    return OK


def client_line(c: Connection, caller: Connection) -> str:
    """One CLIENT LIST / CLIENT INFO line with Redis 7.0's fields (then 7.2's lib-name and lib-ver)."""
    now = time.monotonic()
    t = c.tracking
    flags = ("P" if c.subscribed else "") + ("x" if c.multi is not None else "") + \
            ("b" if c.blocked is not None else "") + \
            (("t" + ("R" if t.broken else "") + ("B" if t.bcast else "")) if t is not None else "") + \
            ("U" if c.is_unix else "")
    current = c.current if c is caller else None
    if current:
        name = current[0].lower()
        cmd = (name + b"|" + current[1].lower() if name in _CONTAINERS and len(current) > 1 else name).decode(
            errors="replace")
    else:
        cmd = "NULL" if c.last_cmd == b"NULL" else c.last_cmd.decode(errors="replace").lower()
    transport = c.transport
    qbuf = c.parser.buffered()
    omem = transport.get_write_buffer_size() if transport is not None else 0
    sock = transport.get_extra_info("socket") if transport is not None else None
    try:
        fd = sock.fileno() if sock is not None else -1
    except (OSError, ValueError):
        fd = -1
    events = "r" + ("w" if omem else "")
    return (f"id={c.id} addr={c.addr} laddr={c.laddr} fd={fd} name={c.name.decode(errors='replace')} "
            f"age={int(now - c.created)} idle={max(0, int(now - max(c.last_active, c.created)))} "
            f"flags={flags or 'N'} db={c.db} sub={len(c.channels)} psub={len(c.patterns)} ssub={len(c.shard_channels)} "
            f"multi={len(c.multi) if c.multi is not None else -1} qbuf={qbuf} qbuf-free=0 argv-mem=0 "
            f"multi-mem=0 rbs=0 rbp=0 obl=0 oll={len(c.queue)} omem={omem} tot-mem={omem + qbuf} "
            f"events={events} cmd={cmd} user=default redir={t.redirect if t is not None else -1} "
            f"resp={3 if c.resp3 else 2} "
            f"lib-name={c.lib_name.decode(errors='replace')} lib-ver={c.lib_ver.decode(errors='replace')}")


def _client_list(conn: Connection, rest: list[bytes]) -> bytes:
    conns = list(conn.server.clients.values())
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
    return "".join(client_line(c, conn) + "\n" for c in conns).encode()


def _kill(c: Connection, caller: Connection) -> None:
    if c is caller:
        c.closing = True  # its reply goes out first, then the connection closes (as Redis)
    else:
        c.kill()


def _client_kill(conn: Connection, rest: list[bytes]) -> Any:
    server = conn.server
    if len(rest) == 1:  # old form: CLIENT KILL addr:port
        addr = rest[0].decode(errors="replace")
        for c in list(server.clients.values()):
            if c.addr == addr:
                _kill(c, conn)
                return OK
        raise err("ERR No such client")
    if len(rest) % 2:
        raise err(SYNTAX)
    targets = list(server.clients.values())
    skipme = True
    now = time.monotonic()
    for i in range(0, len(rest), 2):
        opt, val = rest[i].upper(), rest[i + 1]
        if opt == b"ID":
            try:
                cid = parse_int(val)
            except Exception:
                raise err("ERR client-id should be greater than 0") from None
            if cid <= 0:
                raise err("ERR client-id should be greater than 0")
            targets = [c for c in targets if c.id == cid]
        elif opt == b"ADDR":
            targets = [c for c in targets if c.addr == val.decode(errors="replace")]
        elif opt == b"LADDR":
            targets = [c for c in targets if c.laddr == val.decode(errors="replace")]
        elif opt == b"TYPE":
            kind = val.lower()
            if kind not in (b"normal", b"pubsub", b"master", b"replica", b"slave"):
                raise err(f"ERR Unknown client type '{val.decode(errors='replace')}'")
            targets = ([c for c in targets if c.subscribed == (kind == b"pubsub")]
                       if kind in (b"normal", b"pubsub") else [])
        elif opt == b"USER":
            if val != b"default":
                raise err(f"ERR No such user '{val.decode(errors='replace')}'")
        elif opt == b"MAXAGE":
            age = parse_int(val)
            targets = [c for c in targets if now - c.created >= age]
        elif opt == b"SKIPME":
            if val.lower() not in (b"yes", b"no"):
                raise err(SYNTAX)
            skipme = val.lower() == b"yes"
        else:
            raise err(SYNTAX)
    if skipme:
        targets = [c for c in targets if c is not conn]
    for c in targets:
        _kill(c, conn)
    return len(targets)


class _ReplyMode:
    """CLIENT REPLY OFF / SKIP: the connection's reply encoders swapped for ones that send nothing
    (for every reply, or for the next command's); ON, or the SKIP's end, puts them back.  Pub/sub
    messages are silenced too, as in Redis.  The connection encodes each reply with its encoder
    of the moment, after the command ran: the switch holds for the commands pipelined behind it,
    and OFF's and SKIP's own (empty) replies already pass through the swapped encoder."""

    __slots__ = ("conn", "enc", "enc_err", "left", "active")

    def __init__(self, conn: Connection, left: int | None) -> None:
        self.conn, self.enc, self.enc_err, self.left = conn, conn.enc, conn.enc_err, left
        self.active = True
        conn.enc = self.reply
        conn.enc_err = self.error

    def _drop(self) -> bytes:
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                self.restore()
        return b""

    def reply(self, value: Any, resp3: bool) -> bytes:
        # Still the encoder of a read that began before ON: that read's replies are sent again.
        return self._drop() if self.active else self.enc(value, resp3)

    def error(self, e: Any) -> bytes:
        return self._drop() if self.active else self.enc_err(e)

    def restore(self) -> None:
        self.active = False
        self.conn.enc, self.conn.enc_err = self.enc, self.enc_err


def _client_reply(conn: Connection, mode: bytes) -> Any:
    current = getattr(conn.enc, "__self__", None)
    silenced = current if isinstance(current, _ReplyMode) and current.active else None
    if mode == b"ON":
        if silenced is not None:
            silenced.restore()
        return OK
    if mode == b"OFF":
        if silenced is None:
            _ReplyMode(conn, None)
        else:
            silenced.left = None
        return Replies()  # no reply at all
    if mode == b"SKIP":
        if silenced is None:
            _ReplyMode(conn, 2)  # SKIP's own empty reply, then the next command's
        return Replies()
    raise err(SYNTAX)


def _client_pause(conn: Connection, rest: list[bytes]) -> Any:
    """CLIENT PAUSE: the other connections stop being read for `timeout` ms (WRITE pauses them
    as ALL does: atlasd does not hold back writes alone).  Connections made during the pause are
    not paused."""
    try:
        ms = parse_int(rest[0])
    except Exception:
        raise err("ERR timeout is not an integer or out of range") from None
    if ms < 0:
        raise err("ERR timeout is negative")
    if len(rest) == 2 and rest[1].upper() not in (b"WRITE", b"ALL"):
        raise err("ERR CLIENT PAUSE mode must be WRITE or ALL")
    server: Any = conn.server
    _unpause(server)
    paused = [c for c in server.clients.values() if c is not conn and not c.closing and c.transport is not None]
    for c in paused:
        c.transport.pause_reading()
    handle = asyncio.get_running_loop().call_later(ms / 1000, _unpause, server)
    server._client_pause = (paused, handle)
    return OK


def _unpause(server: Any) -> None:
    state = getattr(server, "_client_pause", None)
    if state is None:
        return
    server._client_pause = None
    paused, handle = state
    handle.cancel()
    for c in paused:
        if c.closing or c.transport is None or c.transport.is_closing():
            continue
        if not (c.read_paused or c.write_paused or c.auth_paused or c.blocked is not None):
            c.transport.resume_reading()


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


# Sharded pub/sub on a server that is not a cluster, as Redis 7.0 has it: one shard holding every
# shard channel, a namespace apart from PUBLISH/SUBSCRIBE's.  SSUBSCRIBE runs queued in MULTI and then
# refuses (Redis's DENY BLOCKING client); SUNSUBSCRIBE runs there.

@command("ssubscribe", -2, "pubsub noscript loading stale", keys=(1, -1, 1), conn="subscribed_ok")
def ssubscribe(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    if ctx.engine is not None and ctx.engine.in_batch:
        raise err("ERR SSUBSCRIBE isn't allowed for a DENY BLOCKING client")
    return conn.server.subscribe(conn, args, shard=True)


@command("sunsubscribe", -1, "pubsub noscript loading stale", keys=(1, -1, 1), conn="subscribed_ok")
def sunsubscribe(ctx: Ctx, args: list[bytes]) -> Any:
    conn = _conn(ctx)
    return conn.server.unsubscribe(conn, args, shard=True)


@command("spublish", 3, "pubsub loading stale fast", keys=(1, 1, 1))
def spublish(ctx: Ctx, args: list[bytes]) -> Any:
    conn = ctx.conn
    if conn is None:
        return 0
    return conn.server.spublish(args[0], args[1])


@command("publish", 3, "pubsub loading stale fast may_replicate", keys=(0, 0, 0))
def publish(ctx: Ctx, args: list[bytes]) -> Any:
    conn = ctx.conn
    if conn is None:
        return 0
    return conn.server.publish(args[0], args[1])


_PUBSUB_HELP = [
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]", "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT", "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]", "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP", "    Prints this help.",
]


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
    if sub == b"SHARDCHANNELS" and len(args) <= 2:
        names = list(server.shard_channels)
        if len(args) == 2:
            rx = compile_glob(args[1])
            names = [c for c in names if rx.match(c)]
        return names
    if sub == b"SHARDNUMSUB":
        out = []
        for ch in args[1:]:
            out += [ch, len(server.shard_channels.get(ch, ()))]
        return out
    if sub == b"HELP" and len(args) == 1:
        return [Simple(line) for line in _PUBSUB_HELP]
    if sub in (b"CHANNELS", b"SHARDCHANNELS"):  # (too many arguments: Redis's addReplySubcommandSyntaxError)
        raise err(f"ERR unknown subcommand or wrong number of arguments for "
                  f"'{args[0][:128].decode(errors='replace')}'. Try PUBSUB HELP.")
    raise subcommand_error("PUBSUB", args[0], "channels numsub numpat shardchannels shardnumsub help")
