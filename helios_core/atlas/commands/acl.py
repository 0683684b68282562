"""ACL, for atlasd's one user, answered as a redis-server 7.0 with no ACL file and only its `default`
user answers.

atlasd has one user, `default`: its password is `atlasd.requirepass` (on TCP; the unix socket relies
on its file mode).  So WHOAMI, USERS, LIST, GETUSER, CAT, GENPASS, DRYRUN, LOG and HELP say what such a
Redis says, byte for byte: LIST and GETUSER show the password as Redis keeps it, its SHA-256 in hex
(`#<hex>` in LIST; `nopass` when there is none), to any authenticated client, as Redis's default user
sees it (the unauthenticated get NOAUTH, before anything runs).  DELUSER answers as Redis does for
the only user there is ("cannot be removed") or one that does not exist (0 removed).  SETUSER, LOAD
and SAVE would make or load other users: atlasd refuses them, saying why (`ONE_USER`), and they stay
in COMMAND's list because they exist, with Redis's arity, as MODULE LOAD does (refused, listed).

ACL LOG holds what Redis 7.0 logs for this user: failed AUTH and HELLO AUTH attempts (no command is
ever denied to `default`), with Redis's fields (count, reason, context, object, username,
age-seconds, client-info), newest first, a repeat within a minute folded into its entry (Redis's
grouping), at most `ACLLOG_MAX_LEN` entries (Redis's acllog-max-len default).  The password tried is
never recorded: an entry holds the user name given, the command's name and the client's CLIENT LIST
line, which has no arguments in it.
"""

from __future__ import annotations

import hashlib
import secrets
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from helios_core.atlas.commands.connection import client_line
from helios_core.atlas.commands.docs import acl_categories
from helios_core.atlas.commands.keyspecs import SUBCOMMAND_INFO
from helios_core.atlas.commands.subcommands import BY_CONTAINER, find_sub
from helios_core.atlas.commands.table import NOT_INT, OK, TABLE, Ctx, Simple, command, err, parse_int
from helios_core.atlas.resp import OrderedSet

if TYPE_CHECKING:
    from helios_core.atlas.client_connection import Connection

__all__ = ["ACLLOG_MAX_LEN", "ONE_USER", "record_auth_failure"]

ACLLOG_MAX_LEN = 128        # Redis's acllog-max-len default (not settable in atlasd)
_GROUPING_MS = 60_000       # Redis's ACL_LOG_GROUPING_MAX_TIME_DELTA
_GROUPING_SCAN = 10         # how many recent entries Redis looks through for one to fold into

ONE_USER = "ERR atlasd has one user, 'default' (its password is atlasd.requirepass): ACL {} is not supported"

# Redis 7.0's categories, in its order (ACL CAT).
_CATEGORIES = ("keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap", "hyperloglog",
               "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous", "connection",
               "transaction", "scripting")

# Redis 7.0's text, byte for byte.
_ACL_HELP = (
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]", "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>", "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST", "    Show users details in config file format.",
    "LOAD", "    Reload users from the ACL file.",
    "LOG [<count> | RESET]", "    Show the ACL log entries.",
    "SAVE", "    Save the current config to the ACL file.",
    "SETUSER <username> <attribute> [<attribute> ...]", "    Create or modify a user with the specified attributes.",
    "USERS", "    List all the registered usernames.",
    "WHOAMI", "    Return the current connection username.",
    "HELP", "    Prints this help.",
)


# -- ACL LOG ---------------------------------------------------------------------------

@dataclass(slots=True)
class _Entry:
    count: int
    context: str     # "toplevel" or "multi" (inside MULTI/EXEC)
    object: bytes    # the command's name as sent: AUTH, auth, HELLO
    username: bytes  # as given (never the password)
    ctime_ms: int
    client_info: str


# server -> its entries, newest first (weak: a server's log goes with it; tests run several servers)
_LOGS: weakref.WeakKeyDictionary[Any, list[_Entry]] = weakref.WeakKeyDictionary()


def record_auth_failure(ctx: Ctx, conn: Connection, name: bytes, username: bytes) -> None:
    """A failed AUTH or HELLO AUTH (`name`: b"auth" or b"hello") on `conn`, as Redis 7.0's
    addACLLogEntry records one: folded into a recent entry with the same context, object and user
    (its count goes up, it moves to the front), else a new entry in front, the oldest dropped past
    ACLLOG_MAX_LEN.  The object is the command's name as the client spelled it when it is the
    connection's own top-level command; inside EXEC (where only EXEC's spelling is kept) it is
    upper case."""
    log = _LOGS.setdefault(conn.server, [])
    now = ctx.now_ms
    current = conn.current
    obj = current[0] if current and current[0].lower() == name else name.upper()
    context = "multi" if ctx.engine is not None and ctx.engine.in_batch else "toplevel"
    info = client_line(conn, conn)
    for i, e in enumerate(log[:_GROUPING_SCAN]):
        if (e.context == context and e.object == obj and e.username == username
                and now - e.ctime_ms < _GROUPING_MS):
            e.count += 1
            e.ctime_ms = now
            e.client_info = info
            log.insert(0, log.pop(i))
            return
    log.insert(0, _Entry(1, context, bytes(obj), bytes(username), now, info))
    del log[ACLLOG_MAX_LEN:]


def _log_reply(ctx: Ctx, conn: Connection, rest: list[bytes]) -> Any:
    log = _LOGS.get(conn.server, [])
    count = 10
    if rest:
        if rest[0].lower() == b"reset":
            log.clear()
            return OK
        count = parse_int(rest[0], NOT_INT)
    return [{b"count": e.count, b"reason": b"auth", b"context": e.context.encode(), b"object": e.object,
             b"username": e.username, b"age-seconds": (ctx.now_ms - e.ctime_ms) / 1000,
             b"client-info": e.client_info.encode()}
            for e in log[:max(count, 0)]]


# -- the user --------------------------------------------------------------------------

def _password_hash(conn: Connection) -> str | None:
    """The default user's password as Redis keeps it (SHA-256, hex), or None: nopass."""
    required: bytes | None = conn.server.requirepass
    return hashlib.sha256(required).hexdigest() if required else None


def _getuser(conn: Connection) -> dict[bytes, Any]:
    digest = _password_hash(conn)
    flags = [b"on"] if digest else [b"on", b"nopass"]
    return {b"flags": OrderedSet(flags), b"passwords": [digest.encode()] if digest else [],
            b"commands": b"+@all", b"keys": b"~*", b"channels": b"&*", b"selectors": []}


def _category_members(category: str) -> list[bytes]:
    """Every command and subcommand in `category` (a name without '@'), as Redis's aclCatWithFlags
    walks them: a command, then its subcommands."""
    cat = "@" + category
    out: list[bytes] = []
    for cmd in TABLE.commands.values():
        if cat in acl_categories(cmd):
            out.append(cmd.name.encode())
        for full, _ in sorted(BY_CONTAINER.get(cmd.name, {}).values()):
            if cat in SUBCOMMAND_INFO[full][4]:
                out.append(full.encode())
    return out


def _dryrun(rest: list[bytes]) -> Any:
    """DRYRUN user command [arg ...]: `default` may run every command atlasd has; Redis's errors for
    an unknown user, an unknown command and a wrong arity."""
    user, argv = rest[0], rest[1:]
    if user != b"default":
        raise err(f"ERR User '{user.decode(errors='replace')}' not found")
    cmd = TABLE.get(argv[0])
    name, arity = (cmd.name, cmd.arity) if cmd is not None else ("", 0)
    subs = BY_CONTAINER.get(name)
    if cmd is not None and subs is not None and len(argv) > 1:
        found = find_sub(subs, argv[1])
        cmd = cmd if found is not None else None
        if found is not None:
            name, arity = found
    if cmd is None:
        raise err(f"ERR Command '{argv[0].decode(errors='replace')}' not found")
    n = len(argv)
    if (arity > 0 and n != arity) or n < -arity:
        raise err(f"ERR wrong number of arguments for '{name}' command")
    return OK


def _genpass(rest: list[bytes]) -> bytes:
    bits = parse_int(rest[0]) if rest else 256
    if not 0 < bits <= 4096:
        raise err("ERR ACL GENPASS argument must be the number of bits for the output password, "
                  "a positive number up to 4096")
    return secrets.token_hex((bits + 7) // 8)[:(bits + 3) // 4].encode()


def _deluser(rest: list[bytes]) -> int:
    """Redis's answers for the users atlasd has: `default` cannot be removed (checked before
    anything is), and no other user exists, so none is removed."""
    if b"default" in rest:
        raise err("ERR The 'default' user cannot be removed")
    return 0


@command("acl", -2, "noscript", keys=(0, 0, 0))  # (a container: COMMAND reports no flags)
def acl(ctx: Ctx, args: list[bytes]) -> Any:
    """ACL for atlasd's one user (see the module docstring); the engine has already refused an unknown
    subcommand's wrong arity, with Redis's text."""
    conn: Connection | None = ctx.conn
    if conn is None:
        raise err("ERR this command needs a client connection")
    if find_sub(BY_CONTAINER["acl"], args[0]) is None:
        raise err(f"ERR unknown subcommand '{args[0][:128].decode(errors='replace')}'. Try ACL HELP.")
    sub, rest = args[0].lower(), args[1:]
    if len(rest) > 1 and sub in (b"cat", b"genpass", b"log"):  # (arity -2 lets these through)
        raise err(f"ERR unknown subcommand or wrong number of arguments for '{args[0].decode(errors='replace')}'. "
                  f"Try ACL HELP.")
    if sub == b"whoami":
        return b"default"
    if sub == b"users":
        return [b"default"]
    if sub == b"list":
        digest = _password_hash(conn)
        return [f"user default on {'#' + digest if digest else 'nopass'} ~* &* +@all".encode()]
    if sub == b"getuser":
        return _getuser(conn) if rest[0] == b"default" else None
    if sub == b"cat":
        if not rest:
            return [c.encode() for c in _CATEGORIES]
        category = rest[0].decode(errors="replace")
        if category.lower() not in _CATEGORIES:
            raise err(f"ERR Unknown category '{category}'")
        return _category_members(category.lower())
    if sub == b"genpass":
        return _genpass(rest)
    if sub == b"dryrun":
        return _dryrun(rest)
    if sub == b"log":
        return _log_reply(ctx, conn, rest)
    if sub == b"help":
        return [Simple(line) for line in _ACL_HELP]
    if sub == b"deluser":
        return _deluser(rest)
    raise err(ONE_USER.format(sub.decode().upper()))  # SETUSER, LOAD, SAVE
