"""Where a command line's keys are, and how the command uses each: COMMAND GETKEYS / GETKEYSANDFLAGS,
COMMAND INFO's key specs, and client tracking's reads.

As Redis 7.0 does it (`getKeysFromCommandWithSpecs`): the command's key specs (`keyspecs.KEY_SPECS`,
generated from redis-server) are walked first; where a spec does not fit the line (a numkeys out of
range, no STREAMS keyword) or its flags depend on the arguments (SET ... GET, BITFIELD), the command's
own getkeys function below decides, as Redis's `getkeys_proc` does.  No key found is an error unless
the command may have none (`no_mandatory_keys`: EVAL, FCALL).
"""

from __future__ import annotations

from collections.abc import Callable

from helios_core.atlas.commands.keyspecs import KEY_SPECS, SUBCOMMANDS
from helios_core.atlas.commands.sort import sort_keys, sort_ro_keys
from helios_core.atlas.commands.table import TABLE, Command, err
from helios_core.errors import CommandError

__all__ = ["keys_and_flags", "command_keys", "key_spec_reply"]

# (position in the command line, the key spec's flags)
Found = list[tuple[int, tuple[str, ...]]]

_VARIABLE = "variable_flags"
_INCOMPLETE = "incomplete"


def _c_str(arg: bytes) -> bytes:
    """An argument as Redis's strcasecmp sees it: up to its first NUL."""
    return arg.split(b"\0", 1)[0]


def _by_specs(specs: tuple[tuple, ...], argv: list[bytes]) -> Found | None:
    """Redis's getKeysUsingKeySpecs: None where a spec does not fit (Redis's invalid_spec)."""
    argc = len(argv)
    found: Found = []
    for _notes, flags, begin, find in specs:
        if _INCOMPLETE in flags:
            return None
        if begin[0] == "index":
            first = begin[1]
            if first >= argc:
                continue
        elif begin[0] == "keyword":
            keyword, startfrom = begin[1].encode(), begin[2]
            if startfrom > 0:
                candidates = range(startfrom, argc - 1)
            else:
                candidates = range(argc + startfrom, 0, -1)
            first = next((i + 1 for i in candidates if 1 <= i < argc and _c_str(argv[i]).upper() == keyword), 0)
            if not first:
                continue
        else:
            return None
        if find[0] == "range":
            lastkey, step, limit = find[1], find[2], find[3]
            if lastkey >= 0:
                last = first + lastkey
            elif not limit:
                last = argc + lastkey
            else:
                last = first + (argc - first) // limit + lastkey
        elif find[0] == "keynum":
            keynumidx, firstkey, step = find[1], find[2], find[3]
            if keynumidx >= argc - first:
                return None
            try:
                numkeys = int(_c_str(argv[first + keynumidx]))
            except ValueError:
                return None
            if numkeys < 0:
                return None
            first += firstkey
            last = first + numkeys - 1
        else:
            return None
        if last >= argc or last < first or first >= argc:
            return None
        found += [(i, flags) for i in range(first, last + 1, step)]
    return found


# -- the commands' own getkeys functions (Redis's getkeys_proc) ------------------------------------------

_RW_ACCESS_UPDATE = ("RW", "access", "update")


def _set_keys(argv: list[bytes]) -> Found:
    """setGetKeys: the key is read too when GET is among the options."""
    if any(_c_str(a).upper() == b"GET" for a in argv[3:]):
        return [(1, _RW_ACCESS_UPDATE)]
    return [(1, ("OW", "update"))]


def _bitfield_keys(argv: list[bytes]) -> Found:
    """bitfieldGetKeys: read-only when every subcommand is a GET (or OVERFLOW)."""
    i, argc = 2, len(argv)
    while i < argc:
        rem, arg = argc - i - 1, _c_str(argv[i]).lower()
        if arg == b"get" and rem >= 2:
            i += 3
        elif arg == b"overflow" and rem >= 1:
            i += 2
        else:
            return [(1, _RW_ACCESS_UPDATE)]
    return [(1, ("RO", "access"))]


def _numkeys_keys(name: str, at: int, dest: bool) -> Callable[[list[bytes]], Found]:
    """The getkeys function of command `name`, whose key count is at `at` (EVAL, ZUNIONSTORE, LMPOP,
    ...), with a destination key before it when `dest`: what Redis's answers when the spec does not
    fit (a count out of range: no keys)."""
    specs = KEY_SPECS.get(name, ())

    def keys(argv: list[bytes]) -> Found:
        try:
            numkeys = int(_c_str(argv[at]))
        except (ValueError, IndexError):
            return []
        if numkeys <= 0 or at + 1 + numkeys > len(argv):
            return []
        src = specs[-1][1] if specs else ()
        found = [(i, src) for i in range(at + 1, at + 1 + numkeys)]
        return [(1, specs[0][1]), *found] if dest and specs else found
    return keys


def _xread_keys(argv: list[bytes]) -> Found:
    """xreadGetKeys: the first half of what follows the STREAMS its options lead to (BLOCK/COUNT take
    one argument, GROUP two, NOACK none; anything else ends the search)."""
    at = 0
    i = 1
    while i < len(argv):
        opt = _c_str(argv[i]).lower()
        if opt in (b"block", b"count"):
            i += 1
        elif opt == b"group":
            i += 2
        elif opt == b"streams":
            at = i
            break
        elif opt != b"noack":
            break
        i += 1
    rest = len(argv) - at - 1
    if not at or not rest or rest % 2:
        return []
    flags = KEY_SPECS["xread"][0][1]
    return [(p, flags) for p in range(at + 1, at + 1 + rest // 2)]


_PROCS: dict[str, Callable[[list[bytes]], Found]] = {
    "set": _set_keys, "bitfield": _bitfield_keys, "xread": _xread_keys, "xreadgroup": _xread_keys,
    "sort": sort_keys, "sort_ro": sort_ro_keys,
    **{name: _numkeys_keys(name, 2, False) for name in ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall",
                                                        "fcall_ro", "blmpop", "bzmpop")},
    **{name: _numkeys_keys(name, 1, False) for name in ("zunion", "zinter", "zdiff", "zintercard", "sintercard",
                                                        "lmpop", "zmpop")},
    **{name: _numkeys_keys(name, 2, True) for name in ("zunionstore", "zinterstore", "zdiffstore")},
}


# "object|", "xinfo|", ...: the containers Redis 7.0 has subcommands for
_CONTAINERS = frozenset(name.split("|", 1)[0] + "|" for name in SUBCOMMANDS)


def _has_keys(name: str, c: Command) -> bool:
    specs = KEY_SPECS.get(name)
    if specs is not None and all("not_key" in s[1] for s in specs):  # (SPUBLISH: its channels are no keys)
        return False
    return name in KEY_SPECS or name in _PROCS or (name == c.name and c.first_key > 0)


def _find(name: str, c: Command, argv: list[bytes]) -> Found:
    specs = KEY_SPECS.get(name)
    if specs is not None and not any(_VARIABLE in s[1] for s in specs):
        found = _by_specs(specs, argv)
        if found is not None:
            return found
    proc = _PROCS.get(name)
    if proc is not None:
        return proc(argv)
    if specs is None and name == c.name and c.first_key > 0:  # a command Redis 7.0 lacks: its table positions
        last = c.last_key if c.last_key >= 0 else len(argv) + c.last_key
        return [(i, ()) for i in range(c.first_key, min(last, len(argv) - 1) + 1, c.step)]
    return []


def keys_and_flags(argv: list[bytes]) -> list[tuple[bytes, tuple[str, ...]]]:
    """COMMAND GETKEYS(ANDFLAGS): the keys of the command line `argv`, each with its key spec's flags;
    a CommandError with Redis's text where Redis answers one."""
    c = TABLE.get(argv[0])
    if c is None:
        raise err("ERR Invalid command specified")
    name, arity = c.name, c.arity
    if len(argv) > 1 and f"{name}|" in _CONTAINERS:  # OBJECT ENCODING k: the subcommand's specs
        name = f"{name}|{argv[1].decode('utf-8', 'replace').lower()}"
        if name not in SUBCOMMANDS:
            raise err("ERR Invalid command specified")
        arity = SUBCOMMANDS[name]
    if not _has_keys(name, c):
        raise err("ERR The command has no key arguments")
    n = len(argv)
    if (arity > 0 and n != arity) or n < -arity:
        raise err("ERR Invalid number of arguments specified for command")
    found = _find(name, c, argv)
    if not found:
        if "no_mandatory_keys" in c.flags:
            return []
        raise err("ERR Invalid arguments specified for command")
    return [(argv[i], tuple(f for f in flags if f not in (_VARIABLE, _INCOMPLETE))) for i, flags in found]


def command_keys(c: Command, argv: list[bytes]) -> list[bytes]:
    """The key arguments of a command line `c` accepted (client tracking's reads); [] where
    COMMAND GETKEYS would answer an error."""
    if c.first_key > 0 and "movablekeys" not in c.flags:
        last = c.last_key if c.last_key >= 0 else len(argv) + c.last_key
        return argv[c.first_key:last + 1:c.step]
    try:
        return [k for k, _ in keys_and_flags(argv)]
    except CommandError:
        return []


def key_spec_reply(spec: tuple, simple: Callable[[str], object], ordered: Callable[[list], object]) -> dict:
    """One key spec as COMMAND INFO shows it (`simple` makes a status string, `ordered` a RESP3 set)."""
    notes, flags, begin, find = spec
    out: dict[bytes, object] = {}
    if notes:
        out[b"notes"] = notes.encode()
    out[b"flags"] = ordered([simple(f) for f in flags])
    if begin[0] == "index":
        bspec: dict[bytes, object] = {b"index": begin[1]}
    elif begin[0] == "keyword":
        bspec = {b"keyword": begin[1].encode(), b"startfrom": begin[2]}
    else:
        bspec = {}
    out[b"begin_search"] = {b"type": begin[0].encode(), b"spec": bspec}
    if find[0] == "range":
        fspec: dict[bytes, object] = {b"lastkey": find[1], b"keystep": find[2], b"limit": find[3]}
    elif find[0] == "keynum":
        fspec = {b"keynumidx": find[1], b"firstkey": find[2], b"keystep": find[3]}
    else:
        fspec = {}
    out[b"find_keys"] = {b"type": find[0].encode(), b"spec": fspec}
    return out
