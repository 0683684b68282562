"""COMMAND and the command metadata it reports: COMMAND COUNT/INFO/DOCS/LIST/GETKEYS.

`DOCS` holds each command's group, first version, syntax and summary (what
COMMAND DOCS answers and redis-cli builds its help from); a container's docs are
Redis's own, subcommands included (container_docs.py, generated).  `command_info`
shapes a COMMAND INFO entry from the command table and that group, with Redis
7.0's ACL categories, and a container's subcommands from keyspecs.py (generated
from redis-server: flags, key specs, ACL categories and tips as Redis reports them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helios_core.atlas.commands.container_docs import CONTAINER_DOCS
from helios_core.atlas.commands.keyfind import command_keys, key_spec_reply, keys_and_flags
from helios_core.atlas.commands.keyspecs import KEY_SPECS, SUBCOMMAND_INFO, SUBCOMMANDS, TIPS
from helios_core.atlas.commands.server import subcommand_error
from helios_core.atlas.commands.subcommands import BY_CONTAINER
from helios_core.atlas.commands.table import SYNTAX, TABLE, Command, Ctx, Simple, command, err
from helios_core.atlas.glob import compile_glob
from helios_core.atlas.resp import OrderedSet

__all__ = ["DOCS", "command_info", "acl_categories", "command_keys"]


# -- COMMAND ---------------------------------------------------------------------------

# ACL categories, as Redis 7.0 reports them in COMMAND INFO: the ones a command's group gives it
# (`_GROUP_ACL`) and a few more named per command (`_EXTRA_ACL`, from Redis's command table), plus
# the ones its flags imply (write, readonly, admin, pubsub, fast, blocking; @slow when not @fast),
# listed in Redis's order of categories.
_GROUP_ACL = {"hyperloglog": "@hyperloglog",
              "string": "@string", "generic": "@keyspace", "sorted-set": "@sortedset", "hash": "@hash", "set": "@set",
              "list": "@list", "bitmap": "@bitmap", "connection": "@connection", "transactions": "@transaction",
              "pubsub": "@pubsub", "scripting": "@scripting", "stream": "@stream", "geo": "@geo"}
_EXTRA_ACL: dict[str, tuple[str, ...]] = {
    "dbsize": ("@keyspace",), "swapdb": ("@keyspace", "@dangerous"), "flushall": ("@keyspace", "@dangerous"),
    "flushdb": ("@keyspace", "@dangerous"),
    "keys": ("@dangerous",), "restore": ("@dangerous",), "info": ("@dangerous",),
    "lastsave": ("@admin", "@dangerous"), "role": ("@admin", "@dangerous"), "command": ("@connection",),
    "wait": ("@connection",), "readonly": ("@connection",), "readwrite": ("@connection",),
    "asking": ("@connection",),
    "sort": ("@set", "@sortedset", "@list", "@dangerous"), "sort_ro": ("@set", "@sortedset", "@list", "@dangerous"),
}
# Commands whose group gives them no category: WAIT and SORT are "generic" in COMMAND DOCS but not
# @keyspace.
_NO_GROUP_ACL = frozenset({"wait", "sort", "sort_ro"})
# Container commands: in Redis 7.0 their flags and categories are their subcommands'; the container
# itself reports no flags and only @slow.
_CONTAINERS = frozenset({"client", "config", "latency", "memory", "slowlog", "object", "pubsub", "script", "xgroup",
                         "xinfo", "function", "module", "cluster", "acl"})
_ACL_ORDER = ("@keyspace", "@read", "@write", "@set", "@sortedset", "@list", "@hash", "@string", "@bitmap",
              "@hyperloglog", "@geo", "@stream", "@pubsub", "@admin", "@fast", "@slow", "@blocking", "@dangerous",
              "@connection", "@transaction", "@scripting")


def acl_categories(cmd: Command) -> list[str]:
    """The ACL categories COMMAND INFO lists for `cmd`, in Redis's order."""
    if cmd.name in _CONTAINERS:
        return ["@slow"]
    group = DOCS.get(cmd.name, ("generic",))[0]
    cats = set(_EXTRA_ACL.get(cmd.name, ()))
    if group in _GROUP_ACL and cmd.name not in _NO_GROUP_ACL:
        cats.add(_GROUP_ACL[group])
    flags = cmd.flags
    if "write" in flags:
        cats.add("@write")
    if "readonly" in flags and "@scripting" not in cats:  # (EVAL_RO is not @read in Redis)
        cats.add("@read")
    if "admin" in flags:
        cats.update(("@admin", "@dangerous"))
    if "pubsub" in flags:
        cats.add("@pubsub")
    if "blocking" in flags:
        cats.add("@blocking")
    cats.add("@fast" if "fast" in flags else "@slow")
    return [c for c in _ACL_ORDER if c in cats]


# The order Redis 7.0 lists a command's flags in (addReplyCommandFlags).
_FLAG_ORDER = ("write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking", "loading",
               "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth", "no_mandatory_keys",
               "no_async_loading", "no_multi", "movablekeys", "allow_busy")


# A container's subcommands as atlasd has them ("config" -> ["config|get", ...]), in name order: the
# generated tables leave out the ones atlasd does not implement (scripts/gen_keyspecs.py UNIMPLEMENTED).
_SUBS: dict[str, list[str]] = {name: [full for full, _ in subs.values()] for name, subs in BY_CONTAINER.items()}


def _tips_and_specs(name: str) -> tuple[OrderedSet, OrderedSet]:
    return (OrderedSet(t.encode() for t in TIPS.get(name, ())),
            OrderedSet(key_spec_reply(s, Simple, OrderedSet) for s in KEY_SPECS.get(name, ())))


def _subcommand_info(full: str) -> list:
    """A subcommand's entry (element 10 of its container's, or COMMAND INFO config|get), from
    redis-server's own (keyspecs.SUBCOMMAND_INFO)."""
    flags, first, last, step, cats = SUBCOMMAND_INFO[full]
    tips, specs = _tips_and_specs(full)
    return [full.encode(), SUBCOMMANDS[full], OrderedSet(Simple(f) for f in flags), first, last, step,
            OrderedSet(Simple(c) for c in cats), tips, specs, OrderedSet()]


def command_info(cmd: Command) -> list:
    """One COMMAND / COMMAND INFO entry, shaped as Redis 7 sends it (its sets are RESP3 sets).

    A container's subcommands (element 10) are in name order; Redis's follow its dict's order, which
    changes from one redis-server process to the next, so no client can rely on it."""
    flags = OrderedSet(Simple(f) for f in _FLAG_ORDER if f in cmd.flags and cmd.name not in _CONTAINERS)
    acl = OrderedSet(Simple(c) for c in acl_categories(cmd))
    tips, specs = _tips_and_specs(cmd.name)
    # Redis's addReplyCommandSubCommands: an array of entries, or an empty *set* for a plain command.
    subs: list = [_subcommand_info(full) for full in _SUBS.get(cmd.name, ())] or OrderedSet()
    return [cmd.name.encode(), cmd.arity, flags, cmd.first_key, cmd.last_key, cmd.step, acl, tips, specs, subs]


def _lookup(name: bytes) -> tuple[Command, str | None] | None:
    """Redis's lookupCommandBySds, as COMMAND INFO and DOCS use it: a command, or `container|sub`
    (one level, case-insensitive) with the subcommand's full name."""
    parts = name.split(b"|")
    cmd = TABLE.get(parts[0])
    if cmd is None or len(parts) > 2:
        return None
    if len(parts) == 1:
        return cmd, None
    full = f"{cmd.name}|{parts[1].decode('utf-8', 'replace').lower()}"
    return (cmd, full) if full in SUBCOMMAND_INFO else None


def _docs_reply(v: Any) -> Any:
    """A generated docs value (container_docs.py) as a reply: tuples are sets, their str members
    status replies (flags); other str are bulk strings."""
    if isinstance(v, dict):
        return {k.encode(): _docs_reply(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return OrderedSet(Simple(x) if isinstance(x, str) else _docs_reply(x) for x in v)
    if isinstance(v, list):
        return [_docs_reply(x) for x in v]
    if isinstance(v, str):
        return v.encode()
    return v


def _command_docs(cmd: Command) -> dict:
    if cmd.name in CONTAINER_DOCS:
        doc: dict = _docs_reply(CONTAINER_DOCS[cmd.name])
        return doc
    group, since, syntax, summary = DOCS.get(cmd.name, ("generic", "1.0.0", "", cmd.doc.strip()))
    doc = {b"summary": summary.encode(), b"since": since.encode(), b"group": group.encode(),
           b"complexity": b"", b"doc_flags": set()}
    if syntax:
        doc[b"arguments"] = [{b"name": syntax.encode(), b"type": b"string"}]
    return doc


# Redis 7.0's text, byte for byte.
_COMMAND_HELP = (
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)", "    Return details about all Redis commands.",
    "COUNT", "    Return the total number of commands in this Redis server.",
    "LIST", "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]", "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all", "    commands are returned.",
    "DOCS [<command-name> ...]", "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all", "    commands are returned.",
    "GETKEYS <full-command>", "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>", "    Return the keys and the access flags from a full Redis command.",
    "HELP", "    Prints this help.",
)


@command("command", -1, "loading stale", keys=(0, 0, 0))
def command_(ctx: Ctx, args: list[bytes]) -> Any:
    cmds = TABLE.commands
    if not args:
        return [command_info(c) for c in cmds.values()]
    sub, rest = args[0].upper(), args[1:]
    if sub == b"COUNT" and not rest:
        return len(cmds)
    if sub == b"INFO":
        if not rest:
            return [command_info(c) for c in cmds.values()]
        out_info: list[Any] = []
        for name in rest:
            found = _lookup(name)
            if found is None:
                out_info.append(None)
            else:
                out_info.append(command_info(found[0]) if found[1] is None else _subcommand_info(found[1]))
        return out_info
    if sub == b"DOCS":
        out: dict[bytes, Any] = {}
        if not rest:
            for c in cmds.values():
                out[c.name.encode()] = _command_docs(c)
            return out
        for name in rest:
            found = _lookup(name)
            if found is None:
                continue
            c, full = found
            if full is None:
                out[c.name.encode()] = _command_docs(c)
            else:
                out[full.encode()] = _docs_reply(CONTAINER_DOCS[c.name]["subcommands"][full])
        return out
    if sub == b"LIST":
        return _command_list(rest)
    if sub in (b"GETKEYS", b"GETKEYSANDFLAGS") and len(rest) >= 2:
        keys = keys_and_flags(rest)
        if sub == b"GETKEYS":
            return [k for k, _ in keys]
        return [[k, OrderedSet(Simple(f) for f in flags)] for k, flags in keys]
    if sub in (b"GETKEYS", b"GETKEYSANDFLAGS"):
        raise err(f"ERR wrong number of arguments for 'command|{sub.decode().lower()}' command")
    if sub == b"HELP" and not rest:
        return [Simple(s) for s in _COMMAND_HELP]
    raise subcommand_error("COMMAND", args[0], "count info docs list getkeys getkeysandflags help")


def _command_list(rest: list[bytes]) -> list[bytes]:
    """COMMAND LIST [FILTERBY MODULE name|ACLCAT category|PATTERN pattern]: every command and, after
    each container, its subcommands (`config|get`), as Redis 7.0's commandListWithFilter walks them."""
    keep: Any = None
    if rest:
        if len(rest) != 3 or rest[0].upper() != b"FILTERBY":
            raise err(SYNTAX)
        kind, arg = rest[1].upper(), rest[2]
        if kind == b"MODULE":  # atlasd loads no modules: no command is a module's
            return []
        if kind == b"ACLCAT":
            cat = "@" + arg.decode("utf-8", "replace").lower()  # (Redis: strcasecmp with a name, no '@')
            keep = lambda name, cats: cat in cats  # noqa: E731
        elif kind == b"PATTERN":
            rx = compile_glob(arg, nocase=True)
            keep = lambda name, cats: rx.match(name)  # noqa: E731
        else:
            raise err(SYNTAX)
    names: list[bytes] = []
    for cmd in TABLE.commands.values():
        entries: list[tuple[str, Sequence[str]]] = [(cmd.name, acl_categories(cmd))]
        entries += [(full, SUBCOMMAND_INFO[full][4]) for full in _SUBS.get(cmd.name, ())]
        names += [n.encode() for n, cats in entries if keep is None or keep(n.encode(), cats)]
    return names


# -- COMMAND DOCS data ----------------------------------------------------------------
# redis-cli (7.x) builds its help and inline hints from COMMAND DOCS.  Each
# command's syntax goes out as one argument of type "string" whose name is the
# whole syntax line: exactly what redis-cli shows as the hint.

# name: (group, since, syntax, summary)
DOCS: dict[str, tuple[str, str, str, str]] = {
    # strings
    "get": ("string", "1.0.0", "key", "Returns the string value of a key."),
    "set": ("string", "1.0.0",
            "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|"
            "PXAT unix-time-milliseconds|KEEPTTL]",
            "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."),
    "setnx": ("string", "1.0.0", "key value", "Set the string value of a key only when the key doesn't exist."),
    "setex": ("string", "2.0.0", "key seconds value", "Sets the string value and expiration time of a key."),
    "psetex": ("string", "2.6.0", "key milliseconds value",
               "Sets both string value and expiration time in milliseconds of a key."),
    "getset": ("string", "1.0.0", "key value", "Returns the previous string value of a key after setting it."),
    "getdel": ("string", "6.2.0", "key", "Returns the string value of a key after deleting the key."),
    "getex": ("string", "6.2.0",
              "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]",
              "Returns the string value of a key after setting its expiration time."),
    "mget": ("string", "1.0.0", "key [key ...]", "Atomically returns the string values of one or more keys."),
    "mset": ("string", "1.0.1", "key value [key value ...]", "Atomically creates or modifies the string values "
             "of one or more keys."),
    "msetnx": ("string", "1.0.1", "key value [key value ...]", "Atomically sets the values of one or more keys "
               "only when all keys don't exist."),
    "append": ("string", "2.0.0", "key value", "Appends a string to the value of a key. Creates the key if it "
               "doesn't exist."),
    "strlen": ("string", "2.2.0", "key", "Returns the length of a string value."),
    "getrange": ("string", "2.4.0", "key start end", "Returns a substring of the string stored at a key."),
    "setrange": ("string", "2.2.0", "key offset value", "Overwrites a part of a string value with another by an "
                 "offset. Creates the key if it doesn't exist."),
    "incr": ("string", "1.0.0", "key", "Increments the integer value of a key by one."),
    "incrby": ("string", "1.0.0", "key increment", "Increments the integer value of a key by a number."),
    "decr": ("string", "1.0.0", "key", "Decrements the integer value of a key by one."),
    "decrby": ("string", "1.0.0", "key decrement", "Decrements a number from the integer value of a key."),
    "incrbyfloat": ("string", "2.6.0", "key increment", "Increment the floating point value of a key by a number."),
    # keys
    "del": ("generic", "1.0.0", "key [key ...]", "Deletes one or more keys."),
    "unlink": ("generic", "4.0.0", "key [key ...]", "Asynchronously deletes one or more keys."),
    "exists": ("generic", "1.0.0", "key [key ...]", "Determines whether one or more keys exist."),
    "touch": ("generic", "3.2.1", "key [key ...]",
              "Alters the last access time of a key(s). Returns the number of existing keys specified."),
    "sort": ("generic", "1.0.0", "key [BY pattern] [LIMIT offset count] [GET pattern [GET pattern ...]] [ASC|DESC] "
             "[ALPHA] [STORE destination]", "Sort the elements in a list, set or sorted set"),
    "sort_ro": ("generic", "7.0.0", "key [BY pattern] [LIMIT offset count] [GET pattern [GET pattern ...]] "
                "[ASC|DESC] [ALPHA]", "Sort the elements in a list, set or sorted set. Read-only variant of SORT."),
    "type": ("generic", "1.0.0", "key", "Determines the type of value stored at a key."),
    "expire": ("generic", "1.0.0", "key seconds [NX|XX|GT|LT]", "Sets the expiration time of a key in seconds."),
    "pexpire": ("generic", "2.6.0", "key milliseconds [NX|XX|GT|LT]",
                "Sets the expiration time of a key in milliseconds."),
    "expireat": ("generic", "1.2.0", "key unix-time-seconds [NX|XX|GT|LT]",
                 "Sets the expiration time of a key to a Unix timestamp."),
    "pexpireat": ("generic", "2.6.0", "key unix-time-milliseconds [NX|XX|GT|LT]",
                  "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    "ttl": ("generic", "1.0.0", "key", "Returns the expiration time in seconds of a key."),
    "pttl": ("generic", "2.6.0", "key", "Returns the expiration time in milliseconds of a key."),
    "expiretime": ("generic", "7.0.0", "key", "Returns the expiration time of a key as a Unix timestamp."),
    "pexpiretime": ("generic", "7.0.0", "key",
                    "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    "persist": ("generic", "2.2.0", "key", "Removes the expiration time of a key."),
    "keys": ("generic", "1.0.0", "pattern", "Returns all key names that match a pattern."),
    "scan": ("generic", "2.8.0", "cursor [MATCH pattern] [COUNT count] [TYPE type]",
             "Iterates over the key names in the database."),
    "rename": ("generic", "1.0.0", "key newkey", "Renames a key and overwrites the destination."),
    "renamenx": ("generic", "1.0.0", "key newkey", "Renames a key only when the target key name doesn't exist."),
    "randomkey": ("generic", "1.0.0", "", "Returns a random key name from the database."),
    "dbsize": ("server", "1.0.0", "", "Returns the number of keys in the database."),
    "flushdb": ("server", "1.0.0", "[ASYNC|SYNC]", "Remove all keys from the current database."),
    "flushall": ("server", "1.0.0", "[ASYNC|SYNC]", "Removes all keys from all databases."),
    "move": ("generic", "1.0.0", "key db", "Moves a key to another database."),
    "swapdb": ("server", "4.0.0", "index1 index2", "Swaps two Redis databases."),
    # sorted sets
    "zadd": ("sorted-set", "1.2.0", "key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]",
             "Adds one or more members to a sorted set, or updates their scores."),
    "zincrby": ("sorted-set", "1.2.0", "key increment member",
                "Increments the score of a member in a sorted set."),
    "zrem": ("sorted-set", "1.2.0", "key member [member ...]", "Removes one or more members from a sorted set."),
    "zscore": ("sorted-set", "1.2.0", "key member", "Returns the score of a member in a sorted set."),
    "zmscore": ("sorted-set", "6.2.0", "key member [member ...]",
                "Returns the score of one or more members in a sorted set."),
    "zcard": ("sorted-set", "1.2.0", "key", "Returns the number of members in a sorted set."),
    "zcount": ("sorted-set", "2.0.0", "key min max",
               "Returns the count of members in a sorted set that have scores within a range."),
    "zrank": ("sorted-set", "2.0.0", "key member", "Returns the index of a member in a sorted set ordered by "
              "ascending scores."),
    "zrevrank": ("sorted-set", "2.0.0", "key member", "Returns the index of a member in a sorted set ordered by "
                 "descending scores."),
    "zrange": ("sorted-set", "1.2.0", "key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]",
               "Returns members in a sorted set within a range of indexes."),
    "zrevrange": ("sorted-set", "1.2.0", "key start stop [WITHSCORES]",
                  "Returns members in a sorted set within a range of indexes in reverse order."),
    "zrangebyscore": ("sorted-set", "1.0.5", "key min max [WITHSCORES] [LIMIT offset count]",
                      "Returns members in a sorted set within a range of scores."),
    "zrevrangebyscore": ("sorted-set", "2.2.0", "key max min [WITHSCORES] [LIMIT offset count]",
                         "Returns members in a sorted set within a range of scores in reverse order."),
    "zremrangebyscore": ("sorted-set", "1.2.0", "key min max",
                         "Removes members in a sorted set within a range of scores."),
    "zremrangebyrank": ("sorted-set", "2.0.0", "key start stop",
                        "Removes members in a sorted set within a range of indexes."),
    "zpopmin": ("sorted-set", "5.0.0", "key [count]",
                "Returns the lowest-scoring members from a sorted set after removing them."),
    "zpopmax": ("sorted-set", "5.0.0", "key [count]",
                "Returns the highest-scoring members from a sorted set after removing them."),
    # hashes
    "hset": ("hash", "2.0.0", "key field value [field value ...]",
             "Creates or modifies the value of a field in a hash."),
    "hsetnx": ("hash", "2.0.0", "key field value", "Sets the value of a field in a hash only when the field "
               "doesn't exist."),
    "hget": ("hash", "2.0.0", "key field", "Returns the value of a field in a hash."),
    "hmget": ("hash", "2.0.0", "key field [field ...]", "Returns the values of all fields in a hash."),
    "hmset": ("hash", "2.0.0", "key field value [field value ...]", "Sets the values of multiple fields."),
    "hgetall": ("hash", "2.0.0", "key", "Returns all fields and values in a hash."),
    "hdel": ("hash", "2.0.0", "key field [field ...]", "Deletes one or more fields and their values from a "
             "hash. Deletes the hash if no fields remain."),
    "hexists": ("hash", "2.0.0", "key field", "Determines whether a field exists in a hash."),
    "hlen": ("hash", "2.0.0", "key", "Returns the number of fields in a hash."),
    "hkeys": ("hash", "2.0.0", "key", "Returns all fields in a hash."),
    "hvals": ("hash", "2.0.0", "key", "Returns all values in a hash."),
    "hincrby": ("hash", "2.0.0", "key field increment", "Increments the integer value of a field in a hash by a "
                "number. Uses 0 as initial value if the field doesn't exist."),
    "hincrbyfloat": ("hash", "2.6.0", "key field increment", "Increments the floating point value of a field by "
                     "a number. Uses 0 as initial value if the field doesn't exist."),
    "hstrlen": ("hash", "3.2.0", "key field", "Returns the length of the value of a field."),
    "hrandfield": ("hash", "6.2.0", "key [count [WITHVALUES]]", "Returns one or more random fields from a hash."),
    "hscan": ("hash", "2.8.0", "key cursor [MATCH pattern] [COUNT count]",
              "Iterates over fields and values of a hash."),
    # sets
    "sadd": ("set", "1.0.0", "key member [member ...]", "Adds one or more members to a set. Creates the key if "
             "it doesn't exist."),
    "srem": ("set", "1.0.0", "key member [member ...]", "Removes one or more members from a set. Deletes the "
             "set if the last member was removed."),
    "smembers": ("set", "1.0.0", "key", "Returns all members of a set."),
    "sismember": ("set", "1.0.0", "key member", "Determines whether a member belongs to a set."),
    "smismember": ("set", "6.2.0", "key member [member ...]", "Determines whether multiple members belong to a "
                   "set."),
    "scard": ("set", "1.0.0", "key", "Returns the number of members in a set."),
    "spop": ("set", "1.0.0", "key [count]", "Returns one or more random members from a set after removing them. "
             "Deletes the set if the last member was popped."),
    "srandmember": ("set", "1.0.0", "key [count]", "Get one or multiple random members from a set"),
    "smove": ("set", "1.0.0", "source destination member", "Moves a member from one set to another."),
    "sinter": ("set", "1.0.0", "key [key ...]", "Returns the intersect of multiple sets."),
    "sintercard": ("set", "7.0.0", "numkeys key [key ...] [LIMIT limit]",
                   "Returns the number of members of the intersect of multiple sets."),
    "sunion": ("set", "1.0.0", "key [key ...]", "Returns the union of multiple sets."),
    "sdiff": ("set", "1.0.0", "key [key ...]", "Returns the difference of multiple sets."),
    "sinterstore": ("set", "1.0.0", "destination key [key ...]", "Stores the intersect of multiple sets in a "
                    "key."),
    "sunionstore": ("set", "1.0.0", "destination key [key ...]", "Stores the union of multiple sets in a key."),
    "sdiffstore": ("set", "1.0.0", "destination key [key ...]", "Stores the difference of multiple sets in a "
                   "key."),
    "sscan": ("set", "2.8.0", "key cursor [MATCH pattern] [COUNT count]", "Iterates over members of a set."),
    # connection
    "ping": ("connection", "1.0.0", "[message]", "Returns the server's liveliness response."),
    "echo": ("connection", "1.0.0", "message", "Returns the given string."),
    "quit": ("connection", "1.0.0", "", "Closes the connection."),
    "select": ("connection", "1.0.0", "index", "Changes the selected database."),
    "auth": ("connection", "1.0.0", "[username] password", "Authenticates the connection."),
    "hello": ("connection", "6.0.0", "[protover [AUTH username password] [SETNAME clientname]]",
              "Handshakes with the server."),
    "reset": ("connection", "6.2.0", "", "Resets the connection."),
    "client": ("connection", "2.4.0", "ID|GETNAME|SETNAME name|SETINFO attr value|INFO|LIST|KILL|REPLY|PAUSE|"
               "UNPAUSE|UNBLOCK|TRACKING|NO-EVICT",
               "A container for client connection commands."),
    # transactions
    "multi": ("transactions", "1.2.0", "", "Starts a transaction."),
    "exec": ("transactions", "1.2.0", "", "Executes all commands in a transaction."),
    "discard": ("transactions", "2.0.0", "", "Discards a transaction."),
    "watch": ("transactions", "2.2.0", "key [key ...]", "Monitors changes to keys to determine the execution "
              "of a transaction."),
    "unwatch": ("transactions", "2.2.0", "", "Forgets about watched keys of a transaction."),
    # pub/sub
    "subscribe": ("pubsub", "2.0.0", "channel [channel ...]", "Listens for messages published to channels."),
    "unsubscribe": ("pubsub", "2.0.0", "[channel [channel ...]]",
                    "Stops listening to messages posted to channels."),
    "psubscribe": ("pubsub", "2.0.0", "pattern [pattern ...]",
                   "Listens for messages published to channels that match one or more patterns."),
    "punsubscribe": ("pubsub", "2.0.0", "[pattern [pattern ...]]",
                     "Stops listening to messages published to channels that match one or more patterns."),
    "publish": ("pubsub", "2.0.0", "channel message", "Posts a message to a channel."),
    "spublish": ("pubsub", "7.0.0", "shardchannel message", "Post a message to a shard channel"),
    "ssubscribe": ("pubsub", "7.0.0", "shardchannel [shardchannel ...]",
                   "Listen for messages published to the given shard channels"),
    "sunsubscribe": ("pubsub", "7.0.0", "[shardchannel [shardchannel ...]]",
                     "Stop listening for messages posted to the given shard channels"),
    "pubsub": ("pubsub", "2.8.0", "CHANNELS [pattern]|NUMSUB [channel ...]|NUMPAT",
               "A container for Pub/Sub commands."),
    # server
    "info": ("server", "1.0.0", "[section [section ...]]", "Returns information and statistics about the server."),
    "command": ("server", "2.8.13", "[COUNT|INFO [command-name ...]|DOCS [command-name ...]|LIST]",
                "Returns detailed information about all commands."),
    "config": ("server", "2.0.0", "GET parameter [parameter ...]|SET parameter value [parameter value ...]|"
               "RESETSTAT", "A container for server configuration commands."),
    "time": ("server", "2.6.0", "", "Returns the server time."),
    "lolwut": ("server", "5.0.0", "[VERSION version]", "Display some computer art and the Redis version"),
    "save": ("server", "1.0.0", "", "Snapshots the dataset and waits until the snapshot is on disk."),
    "bgsave": ("server", "1.0.0", "[SCHEDULE]", "Asynchronously saves the database(s) to disk."),
    "bgrewriteaof": ("server", "1.0.0", "", "Asynchronously compacts the append-only file (a snapshot "
                     "plus AOF rotation here)."),
    "lastsave": ("server", "1.0.0", "", "Returns the Unix timestamp of the last successful save to disk."),
    "slowlog": ("server", "2.2.12", "GET [count]|LEN|RESET", "A container for slow log commands."),
    "memory": ("server", "4.0.0", "USAGE key [SAMPLES count]|STATS|DOCTOR|PURGE|MALLOC-STATS",
               "A container for memory diagnostics commands (USAGE: atlasd's estimate)."),
    "latency": ("server", "2.8.13", "LATEST|HISTORY event|RESET [event ...]|DOCTOR|HISTOGRAM",
                "A container for latency diagnostics commands (always empty here)."),
    "role": ("server", "2.8.12", "", "Returns the replication role."),
    "monitor": ("server", "1.0.0", "", "Listens for all requests received by the server in real-time."),
    "shutdown": ("server", "1.0.0", "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]",
                 "Synchronously saves the database(s) to disk and shuts down the server."),
    "module": ("server", "4.0.0", "LIST|LOAD path [arg ...]|LOADEX path|UNLOAD name",
               "A container for module commands (atlasd loads none: LOAD is refused)."),
    "debug": ("server", "1.0.0", "", "A container for debugging commands (refused, as with enable-debug-command no)."),
    "wait": ("generic", "3.0.0", "numreplicas timeout", "Blocks until the asynchronous replication of all preceding "
             "write commands sent by the connection is completed (atlasd has no replicas: it answers 0)."),
    "readonly": ("cluster", "3.0.0", "", "Enables read-only queries for a connection to a Redis Cluster replica "
                 "node (refused: cluster support disabled)."),
    "readwrite": ("cluster", "3.0.0", "", "Enables read-write queries for a connection to a Redis Cluster replica "
                  "node (refused: cluster support disabled)."),
    "asking": ("cluster", "3.0.0", "", "Signals that a cluster client is following an -ASK redirect (refused: "
               "cluster support disabled)."),
    # -- added with issue 15: groups, versions, syntax and summaries as Redis 7.0's COMMAND DOCS has them
    # lists
    "blmove": ("list", "6.2.0", "source destination LEFT|RIGHT LEFT|RIGHT timeout",
               "Pop an element from a list, push it to another list and return it; or block until one is available"),
    "blmpop": ("list", "7.0.0", "timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]",
               "Pop elements from a list, or block until one is available"),
    "blpop": ("list", "2.0.0", "key [key ...] timeout",
              "Remove and get the first element in a list, or block until one is available"),
    "brpop": ("list", "2.0.0", "key [key ...] timeout",
              "Remove and get the last element in a list, or block until one is available"),
    "brpoplpush": ("list", "2.2.0", "source destination timeout",
                   "Pop an element from a list, push it to another list and return it; or block until one is "
                   "available"),
    "lindex": ("list", "1.0.0", "key index", "Get an element from a list by its index"),
    "linsert": ("list", "2.2.0", "key BEFORE|AFTER pivot element",
                "Insert an element before or after another element in a list"),
    "llen": ("list", "1.0.0", "key", "Get the length of a list"),
    "lmove": ("list", "6.2.0", "source destination LEFT|RIGHT LEFT|RIGHT",
              "Pop an element from a list, push it to another list and return it"),
    "lmpop": ("list", "7.0.0", "numkeys key [key ...] LEFT|RIGHT [COUNT count]", "Pop elements from a list"),
    "lpop": ("list", "1.0.0", "key [count]", "Remove and get the first elements in a list"),
    "lpos": ("list", "6.0.6", "key element [RANK rank] [COUNT num-matches] [MAXLEN len]",
             "Return the index of matching elements on a list"),
    "lpush": ("list", "1.0.0", "key element [element ...]", "Prepend one or multiple elements to a list"),
    "lpushx": ("list", "2.2.0", "key element [element ...]", "Prepend an element to a list, only if the list exists"),
    "lrange": ("list", "1.0.0", "key start stop", "Get a range of elements from a list"),
    "lrem": ("list", "1.0.0", "key count element", "Remove elements from a list"),
    "lset": ("list", "1.0.0", "key index element", "Set the value of an element in a list by its index"),
    "ltrim": ("list", "1.0.0", "key start stop", "Trim a list to the specified range"),
    "rpop": ("list", "1.0.0", "key [count]", "Remove and get the last elements in a list"),
    "rpoplpush": ("list", "1.2.0", "source destination",
                  "Remove the last element in a list, prepend it to another list and return it"),
    "rpush": ("list", "1.0.0", "key element [element ...]", "Append one or multiple elements to a list"),
    "rpushx": ("list", "2.2.0", "key element [element ...]", "Append an element to a list, only if the list exists"),
    # bitmaps
    "bitcount": ("bitmap", "2.6.0", "key [start end [BYTE|BIT]]", "Count set bits in a string"),
    "bitfield": ("bitmap", "3.2.0", "key [GET encoding offset|[OVERFLOW WRAP|SAT|FAIL] SET encoding offset "
                 "value|INCRBY encoding offset increment ...]",
                 "Perform arbitrary bitfield integer operations on strings"),
    "bitfield_ro": ("bitmap", "6.0.0", "key [GET encoding offset [GET encoding offset ...]]",
                    "Perform arbitrary bitfield integer operations on strings. Read-only variant of BITFIELD"),
    "bitop": ("bitmap", "2.6.0", "operation destkey key [key ...]", "Perform bitwise operations between strings"),
    "bitpos": ("bitmap", "2.8.7", "key bit [start [end [BYTE|BIT]]]", "Find first bit set or clear in a string"),
    "getbit": ("bitmap", "2.2.0", "key offset", "Returns the bit value at offset in the string value stored at key"),
    "setbit": ("bitmap", "2.2.0", "key offset value",
               "Sets or clears the bit at offset in the string value stored at key"),
    # hyperloglog
    "pfadd": ("hyperloglog", "2.8.9", "key [element [element ...]]",
              "Adds the specified elements to the specified HyperLogLog."),
    "pfcount": ("hyperloglog", "2.8.9", "key [key ...]",
                "Return the approximated cardinality of the set(s) observed by the HyperLogLog at key(s)."),
    "pfmerge": ("hyperloglog", "2.8.9", "destkey [sourcekey [sourcekey ...]]",
                "Merge N different HyperLogLogs into a single one."),
    "pfdebug": ("hyperloglog", "2.8.9", "subcommand key", "Internal commands for debugging HyperLogLog values"),
    "pfselftest": ("hyperloglog", "2.8.9", "", "An internal command for testing HyperLogLog values"),
    # geo
    "geoadd": ("geo", "3.2.0", "key [NX|XX] [CH] longitude latitude member [longitude latitude member ...]",
               "Add one or more geospatial items in the geospatial index represented using a sorted set"),
    "geodist": ("geo", "3.2.0", "key member1 member2 [M|KM|FT|MI]",
                "Returns the distance between two members of a geospatial index"),
    "geohash": ("geo", "3.2.0", "key member [member ...]",
                "Returns members of a geospatial index as standard geohash strings"),
    "geopos": ("geo", "3.2.0", "key member [member ...]",
               "Returns longitude and latitude of members of a geospatial index"),
    "georadius": ("geo", "3.2.0", "key longitude latitude radius M|KM|FT|MI [WITHCOORD] [WITHDIST] [WITHHASH] "
                  "[COUNT count [ANY]] [ASC|DESC] [STORE key] [STOREDIST key]",
                  "Query a sorted set representing a geospatial index to fetch members matching a given maximum "
                  "distance from a point"),
    "georadius_ro": ("geo", "3.2.10", "key longitude latitude radius M|KM|FT|MI [WITHCOORD] [WITHDIST] [WITHHASH] "
                     "[COUNT count [ANY]] [ASC|DESC]", "A read-only variant for GEORADIUS"),
    "georadiusbymember": ("geo", "3.2.0", "key member radius M|KM|FT|MI [WITHCOORD] [WITHDIST] [WITHHASH] "
                          "[COUNT count [ANY]] [ASC|DESC] [STORE key] [STOREDIST key]",
                          "Query a sorted set representing a geospatial index to fetch members matching a given "
                          "maximum distance from a member"),
    "georadiusbymember_ro": ("geo", "3.2.10", "key member radius M|KM|FT|MI [WITHCOORD] [WITHDIST] [WITHHASH] "
                             "[COUNT count [ANY]] [ASC|DESC]", "A read-only variant for GEORADIUSBYMEMBER"),
    "geosearch": ("geo", "6.2.0", "key FROMMEMBER member|FROMLONLAT longitude latitude BYRADIUS radius M|KM|FT|MI|"
                  "BYBOX width height M|KM|FT|MI [ASC|DESC] [COUNT count [ANY]] [WITHCOORD] [WITHDIST] [WITHHASH]",
                  "Query a sorted set representing a geospatial index to fetch members inside an area of a box or a "
                  "circle."),
    "geosearchstore": ("geo", "6.2.0", "destination source FROMMEMBER member|FROMLONLAT longitude latitude "
                       "BYRADIUS radius M|KM|FT|MI|BYBOX width height M|KM|FT|MI [ASC|DESC] [COUNT count [ANY]] "
                       "[STOREDIST]",
                       "Query a sorted set representing a geospatial index to fetch members inside an area of a box "
                       "or a circle, and store the result in another key."),
    # streams
    "xack": ("stream", "5.0.0", "key group id [id ...]",
             "Marks a pending message as correctly processed, effectively removing it from the pending entries list "
             "of the consumer group. Return value of the command is the number of messages successfully "
             "acknowledged, that is, the IDs we were actually able to resolve in the PEL."),
    "xadd": ("stream", "5.0.0", "key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value "
             "[field value ...]", "Appends a new entry to a stream"),
    "xautoclaim": ("stream", "6.2.0", "key group consumer min-idle-time start [COUNT count] [JUSTID]",
                   "Changes (or acquires) ownership of messages in a consumer group, as if the messages were "
                   "delivered to the specified consumer."),
    "xclaim": ("stream", "5.0.0", "key group consumer min-idle-time id [id ...] [IDLE ms] "
               "[TIME unix-time-milliseconds] [RETRYCOUNT count] [FORCE] [JUSTID] [LASTID lastid]",
               "Changes (or acquires) ownership of a message in a consumer group, as if the message was delivered to "
               "the specified consumer."),
    "xdel": ("stream", "5.0.0", "key id [id ...]",
             "Removes the specified entries from the stream. Returns the number of items actually deleted, that may "
             "be different from the number of IDs passed in case certain IDs do not exist."),
    "xgroup": ("stream", "5.0.0", "", "A container for consumer groups commands"),
    "xinfo": ("stream", "5.0.0", "", "A container for stream introspection commands"),
    "xlen": ("stream", "5.0.0", "key", "Return the number of entries in a stream"),
    "xpending": ("stream", "5.0.0", "key group [[IDLE min-idle-time] start end count [consumer]]",
                 "Return information and entries from a stream consumer group pending entries list, that are messages "
                 "fetched but never acknowledged."),
    "xrange": ("stream", "5.0.0", "key start end [COUNT count]",
               "Return a range of elements in a stream, with IDs matching the specified IDs interval"),
    "xread": ("stream", "5.0.0", "[COUNT count] [BLOCK milliseconds] STREAMS key [key ...] id [id ...]",
              "Return never seen elements in multiple streams, with IDs greater than the ones reported by the caller "
              "for each stream. Can block."),
    "xreadgroup": ("stream", "5.0.0", "GROUP group consumer [COUNT count] [BLOCK milliseconds] [NOACK] STREAMS key "
                   "[key ...] id [id ...]",
                   "Return new entries from a stream using a consumer group, or access the history of the pending "
                   "entries for a given consumer. Can block."),
    "xrevrange": ("stream", "5.0.0", "key end start [COUNT count]",
                  "Return a range of elements in a stream, with IDs matching the specified IDs interval, in reverse "
                  "order (from greater to smaller IDs) compared to XRANGE"),
    "xsetid": ("stream", "5.0.0", "key last-id [ENTRIESADDED entries_added] [MAXDELETEDID max_deleted_entry_id]",
               "An internal command for replicating stream values"),
    "xtrim": ("stream", "5.0.0", "key MAXLEN|MINID [=|~] threshold [LIMIT count]",
              "Trims the stream to (approximately if '~' is passed) a certain size"),
    # sorted sets (added with the blocking, set-algebra and lex families)
    "bzmpop": ("sorted-set", "7.0.0", "timeout numkeys key [key ...] MIN|MAX [COUNT count]",
               "Remove and return members with scores in a sorted set or block until one is available"),
    "bzpopmax": ("sorted-set", "5.0.0", "key [key ...] timeout",
                 "Remove and return the member with the highest score from one or more sorted sets, or block until "
                 "one is available"),
    "bzpopmin": ("sorted-set", "5.0.0", "key [key ...] timeout",
                 "Remove and return the member with the lowest score from one or more sorted sets, or block until one "
                 "is available"),
    "zdiff": ("sorted-set", "6.2.0", "numkeys key [key ...] [WITHSCORES]", "Subtract multiple sorted sets"),
    "zdiffstore": ("sorted-set", "6.2.0", "destination numkeys key [key ...]",
                   "Subtract multiple sorted sets and store the resulting sorted set in a new key"),
    "zinter": ("sorted-set", "6.2.0", "numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE SUM|MIN|MAX] "
               "[WITHSCORES]",
               "Intersect multiple sorted sets"),
    "zintercard": ("sorted-set", "7.0.0", "numkeys key [key ...] [LIMIT limit]",
                   "Intersect multiple sorted sets and return the cardinality of the result"),
    "zinterstore": ("sorted-set", "2.0.0", "destination numkeys key [key ...] [WEIGHTS weight [weight ...]] "
                    "[AGGREGATE SUM|MIN|MAX]",
                    "Intersect multiple sorted sets and store the resulting sorted set in a new key"),
    "zlexcount": ("sorted-set", "2.8.9", "key min max",
                  "Count the number of members in a sorted set between a given lexicographical range"),
    "zmpop": ("sorted-set", "7.0.0", "numkeys key [key ...] MIN|MAX [COUNT count]",
              "Remove and return members with scores in a sorted set"),
    "zrandmember": ("sorted-set", "6.2.0", "key [count [WITHSCORES]]",
                    "Get one or multiple random elements from a sorted set"),
    "zrangebylex": ("sorted-set", "2.8.9", "key min max [LIMIT offset count]",
                    "Return a range of members in a sorted set, by lexicographical range"),
    "zrangestore": ("sorted-set", "6.2.0", "dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]",
                    "Store a range of members from sorted set into another key"),
    "zremrangebylex": ("sorted-set", "2.8.9", "key min max",
                       "Remove all members in a sorted set between the given lexicographical range"),
    "zrevrangebylex": ("sorted-set", "2.8.9", "key max min [LIMIT offset count]",
                       "Return a range of members in a sorted set, by lexicographical range, ordered from higher to "
                       "lower strings."),
    "zscan": ("sorted-set", "2.8.0", "key cursor [MATCH pattern] [COUNT count]",
              "Incrementally iterate sorted sets elements and associated scores"),
    "zunion": ("sorted-set", "6.2.0", "numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE SUM|MIN|MAX] "
               "[WITHSCORES]",
               "Add multiple sorted sets"),
    "zunionstore": ("sorted-set", "2.0.0", "destination numkeys key [key ...] [WEIGHTS weight [weight ...]] "
                    "[AGGREGATE SUM|MIN|MAX]",
                    "Add multiple sorted sets and store the resulting sorted set in a new key"),
    # strings and keys
    "copy": ("generic", "6.2.0", "source destination [DB destination-db] [REPLACE]", "Copy a key"),
    "dump": ("generic", "2.6.0", "key", "Return a serialized version of the value stored at the specified key."),
    "lcs": ("string", "7.0.0", "key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]",
            "Find longest common substring"),
    "object": ("generic", "2.2.3", "ENCODING|FREQ|IDLETIME|REFCOUNT", "A container for object introspection commands"),
    "restore": ("generic", "2.6.0", "key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]",
                "Create a key using the provided serialized value, previously obtained using DUMP."),
    "substr": ("string", "1.0.0", "key start end", "Get a substring of the string stored at a key"),
    # scripting
    "eval": ("scripting", "2.6.0", "script numkeys [key [key ...]] [arg [arg ...]]",
             "Execute a Lua script server side"),
    "eval_ro": ("scripting", "7.0.0", "script numkeys [key [key ...]] [arg [arg ...]]",
                "Execute a read-only Lua script server side"),
    "evalsha": ("scripting", "2.6.0", "sha1 numkeys [key [key ...]] [arg [arg ...]]",
                "Execute a Lua script server side"),
    "evalsha_ro": ("scripting", "7.0.0", "sha1 numkeys [key [key ...]] [arg [arg ...]]",
                   "Execute a read-only Lua script server side"),
    "script": ("scripting", "2.6.0", "DEBUG|EXISTS|FLUSH|KILL|LOAD", "A container for Lua scripts management commands"),
    "fcall": ("scripting", "7.0.0", "function numkeys [key [key ...]] [arg [arg ...]]", "Invoke a function"),
    "fcall_ro": ("scripting", "7.0.0", "function numkeys [key [key ...]] [arg [arg ...]]",
                 "Invoke a read-only function"),
    "function": ("scripting", "7.0.0", "DELETE|FLUSH|HELP|KILL|LIST|LOAD|STATS", "A container for function commands"),
}
