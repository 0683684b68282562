"""String commands: GET SET MGET MSET INCR* DECR* and friends, with Redis's semantics."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from helios_core.atlas.commands.longdouble import ld_add, ld_format, ld_parse
from helios_core.atlas.commands.table import (
    NOT_INT,
    OK,
    SYNTAX,
    Ctx,
    command,
    err,
    parse_int,
)

MAX_MS = (1 << 63) - 1


def check_string_length(ctx: Ctx, n: int) -> None:
    """Redis's checkStringLength (SETRANGE): no string past proto-max-bulk-len."""
    limit = ctx.engine.config.max_value_bytes if ctx.engine is not None else 512 * 1024 * 1024
    if n > limit:
        raise err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")


def _expire_ms(ctx: Ctx, opt: bytes, raw: bytes, cmd: str) -> int:
    """Absolute expiry (ms) for EX/PX/EXAT/PXAT `raw`; Redis's errors for bad values."""
    v = parse_int(raw)
    if v <= 0:
        raise err(f"ERR invalid expire time in '{cmd}' command")
    if opt == b"EX":
        ms = v * 1000 + ctx.now_ms
    elif opt == b"PX":
        ms = v + ctx.now_ms
    elif opt == b"EXAT":
        ms = v * 1000
    else:
        ms = v
    if ms > MAX_MS or (opt == b"EX" and v > MAX_MS // 1000):
        raise err(f"ERR invalid expire time in '{cmd}' command")
    return ms


def set_value(ctx: Ctx, key: bytes, value: bytes, exp: int | None) -> None:
    """Emit the SET, or a DEL when the expiry is already past (as Redis does)."""
    if exp is not None and exp <= ctx.now_ms:
        if key in ctx.ks.data:
            ctx.emit(("DEL", key))
    else:
        ctx.emit(("SET", key, value, exp))


@command("get", 2, "readonly fast")
def get(ctx: Ctx, args: list[bytes]) -> Any:
    return ctx.get_str(args[0])


@command("set", -3, "write denyoom")
def set_(ctx: Ctx, args: list[bytes]) -> Any:
    key, value = args[0], args[1]
    if len(args) == 2:  # no options, the common case: what the general path below does for it
        ctx.lookup(key)  # (a key found expired is deleted first, as Redis's lookupKeyWrite does)
        ctx.emit(("SET", key, value, None))
        return OK
    nx = xx = want_get = keepttl = False
    exp: int | None = None
    exp_opt: bytes | None = None
    exp_raw = b""
    i, n = 2, len(args)
    # Options first, the expire time after (as Redis: a syntax error wins over a bad
    # time); one kind of expiry may be repeated, the last value counts.
    while i < n:
        opt = args[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            want_get = True
        elif opt == b"KEEPTTL" and exp_opt is None:
            keepttl = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and exp_opt in (None, opt) and not keepttl and i + 1 < n:
            exp_opt = opt
            i += 1
            exp_raw = args[i]
        else:
            raise err(SYNTAX)
        i += 1
    if exp_opt is not None:
        exp = _expire_ms(ctx, exp_opt, exp_raw, "set")
    if want_get:  # (getGenericCommand's lookupKeyRead: a keyspace hit or miss)
        ctx.reads = True
        try:
            old = ctx.get_str(key)
        finally:
            ctx.reads = False
    else:
        old = ctx.lookup(key)
    exists = old is not None
    if (nx and exists) or (xx and not exists):
        return old if want_get else None
    if keepttl and exists:
        exp = ctx.expiry(key)
    set_value(ctx, key, value, exp)
    return old if want_get else OK


@command("setnx", 3, "write denyoom fast")
def setnx(ctx: Ctx, args: list[bytes]) -> Any:
    if ctx.lookup(args[0]) is not None:
        return 0
    ctx.emit(("SET", args[0], args[1], None))
    return 1


def _setex(ctx: Ctx, args: list[bytes], opt: bytes, name: str) -> Any:
    exp = _expire_ms(ctx, opt, args[1], name)
    ctx.emit(("SET", args[0], args[2], exp))
    return OK


@command("setex", 4, "write denyoom")
def setex(ctx: Ctx, args: list[bytes]) -> Any:
    return _setex(ctx, args, b"EX", "setex")


@command("psetex", 4, "write denyoom")
def psetex(ctx: Ctx, args: list[bytes]) -> Any:
    return _setex(ctx, args, b"PX", "psetex")


@command("getset", 3, "write denyoom fast")
def getset(ctx: Ctx, args: list[bytes]) -> Any:
    old = ctx.get_str(args[0])
    ctx.emit(("SET", args[0], args[1], None))
    return old


@command("getdel", 2, "write fast")
def getdel(ctx: Ctx, args: list[bytes]) -> Any:
    old = ctx.get_str(args[0])
    if old is not None:
        ctx.emit(("DEL", args[0]))
    return old


@command("getex", -2, "write fast")
def getex(ctx: Ctx, args: list[bytes]) -> Any:
    key = args[0]
    exp: int | None = None
    exp_opt: bytes | None = None
    exp_raw = b""
    persist = False
    i, n = 1, len(args)
    while i < n:
        opt = args[i].upper()
        if opt == b"PERSIST" and exp_opt is None:
            persist = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and exp_opt in (None, opt) and not persist and i + 1 < n:
            exp_opt = opt
            i += 1
            exp_raw = args[i]
        else:
            raise err(SYNTAX)
        i += 1
    value = ctx.get_str(key)
    if value is None:
        return None  # Redis checks the time only for a key that exists
    if exp_opt is not None:
        exp = _expire_ms(ctx, exp_opt, exp_raw, "getex")
    if exp is not None:
        if exp <= ctx.now_ms:
            ctx.emit(("DEL", key))
        else:
            ctx.emit(("EXPIRE", key, exp))
    elif persist and ctx.expiry(key) is not None:
        ctx.emit(("PERSIST", key))
    return value


@command("mget", -2, "readonly fast", keys=(1, -1, 1))
def mget(ctx: Ctx, args: list[bytes]) -> Any:
    out = []
    for key in args:
        v = ctx.lookup(key)
        out.append(v if type(v) is bytes else None)
    return out


@command("mset", -3, "write denyoom", keys=(1, -1, 2))
def mset(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) % 2:
        raise err("ERR wrong number of arguments for 'mset' command")
    for i in range(0, len(args), 2):
        ctx.emit(("SET", args[i], args[i + 1], None))
    return OK


@command("msetnx", -3, "write denyoom", keys=(1, -1, 2))
def msetnx(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) % 2:
        raise err("ERR wrong number of arguments for 'msetnx' command")
    if any(ctx.lookup(args[i]) is not None for i in range(0, len(args), 2)):
        return 0
    for i in range(0, len(args), 2):
        ctx.emit(("SET", args[i], args[i + 1], None))
    return 1


def _incr(ctx: Ctx, key: bytes, by: int) -> int:
    cur = ctx.get_str(key)
    if cur is None:
        n = 0
    else:
        if len(cur) > 20:
            raise err(NOT_INT)
        n = parse_int(cur)
    n += by
    if not -(1 << 63) <= n < (1 << 63):
        raise err("ERR increment or decrement would overflow")
    # INCR keeps the key's TTL; the effect carries it as an absolute time.
    ctx.emit(("SET", key, b"%d" % n, ctx.expiry(key) if cur is not None else None))
    return n


@command("incr", 2, "write denyoom fast")
def incr(ctx: Ctx, args: list[bytes]) -> Any:
    return _incr(ctx, args[0], 1)


@command("decr", 2, "write denyoom fast")
def decr(ctx: Ctx, args: list[bytes]) -> Any:
    return _incr(ctx, args[0], -1)


@command("incrby", 3, "write denyoom fast")
def incrby(ctx: Ctx, args: list[bytes]) -> Any:
    return _incr(ctx, args[0], parse_int(args[1]))


@command("decrby", 3, "write denyoom fast")
def decrby(ctx: Ctx, args: list[bytes]) -> Any:
    by = parse_int(args[1])
    if by == -(1 << 63):
        raise err("ERR decrement would overflow")
    return _incr(ctx, args[0], -by)


@command("incrbyfloat", 3, "write denyoom fast")
def incrbyfloat(ctx: Ctx, args: list[bytes]) -> Any:
    key = args[0]
    cur = ctx.get_str(key)
    base = ld_parse(cur) if cur is not None else Fraction(0)
    n = ld_add(base, ld_parse(args[1]))
    if isinstance(n, float):
        raise err("ERR increment would produce NaN or Infinity")
    out = ld_format(n)
    ctx.emit(("SET", key, out, ctx.expiry(key) if cur is not None else None))
    return out


@command("append", 3, "write denyoom fast")
def append(ctx: Ctx, args: list[bytes]) -> Any:
    cur = ctx.get_str(args[0])
    if cur is None:
        ctx.emit(("SET", args[0], args[1], None))
        return len(args[1])
    n = len(cur) + len(args[1])
    # (Redis answers checkStringLength's text here too, as SETRANGE does below; APPEND keeps the
    # ATLAS message that tests/unit/test_engine_durability.py and test_commands_strings.py expect.)
    ctx.engine.check_value_size(n)
    if args[1]:
        # Only the appended bytes are logged (the effect keeps the TTL): a string grown by many
        # APPENDs costs its length once in the AOF, not once per APPEND.
        ctx.emit(("SETRANGE", args[0], len(cur), args[1]))
    return n


@command("strlen", 2, "readonly fast")
def strlen(ctx: Ctx, args: list[bytes]) -> Any:
    v = ctx.get_str(args[0])
    return 0 if v is None else len(v)


@command("getrange", 4, "readonly")
def getrange(ctx: Ctx, args: list[bytes]) -> Any:
    start, end = parse_int(args[1]), parse_int(args[2])
    v = ctx.get_str(args[0]) or b""
    n = len(v)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(n + start, 0)
    if end < 0:
        end = max(n + end, 0)
    end = min(end, n - 1)
    if start > end or n == 0:
        return b""
    return v[start:end + 1]


@command("setrange", 4, "write denyoom")
def setrange(ctx: Ctx, args: list[bytes]) -> Any:
    offset = parse_int(args[1])
    if offset < 0:
        raise err("ERR offset is out of range")
    cur = ctx.get_str(args[0])
    piece = args[2]
    existed = cur is not None
    if not existed and not piece:
        return 0
    cur = cur or b""
    if not piece:
        return len(cur)
    check_string_length(ctx, offset + len(piece))
    # Only the piece is logged (the effect pads and keeps the TTL), however long the string.
    ctx.emit(("SETRANGE", args[0], offset, piece))
    return max(len(cur), offset + len(piece))


@command("substr", 4, "readonly")
def substr(ctx: Ctx, args: list[bytes]) -> Any:
    """GETRANGE's old name, kept by Redis."""
    return getrange(ctx, args)


class _LcsRows:
    """LCS lengths of a[:i] and b[:j] for every i, j, in the bit-parallel form (Allison-Dix/Hyyro):
    row i is one integer V_i of len(b) bits, and LCS(i, j) = j - popcount(V_i & (2**j - 1)).

    Each row costs a few big-integer operations (C speed, 64 bits a step), where the plain table
    would be a Python loop over every cell: 10k x 10k bytes take well under a second instead of
    a minute, and the rows hold 1/32 of the memory of Redis's uint32 table.
    """

    __slots__ = ("rows",)

    def __init__(self, a: bytes, b: bytes) -> None:
        masks: dict[int, int] = {}
        for j, c in enumerate(b):
            masks[c] = masks.get(c, 0) | (1 << j)
        full = (1 << len(b)) - 1
        v = full
        rows = [v]
        for c in a:
            u = v & masks.get(c, 0)
            v = ((v + u) | (v - u)) & full
            rows.append(v)
        self.rows = rows

    def __call__(self, i: int, j: int) -> int:
        return j - (self.rows[i] & ((1 << j) - 1)).bit_count()


@command("lcs", -3, "readonly", keys=(1, 2, 1))
def lcs(ctx: Ctx, args: list[bytes]) -> Any:
    va, vb = ctx.lookup(args[0]), ctx.lookup(args[1])
    if (va is not None and type(va) is not bytes) or (vb is not None and type(vb) is not bytes):
        raise err("ERR The specified keys must contain string values")
    a, b = va or b"", vb or b""
    getidx = getlen = withmatchlen = False
    minmatchlen = 0
    j = 2
    while j < len(args):
        opt = args[j].upper()
        if opt == b"IDX":
            getidx = True
        elif opt == b"LEN":
            getlen = True
        elif opt == b"WITHMATCHLEN":
            withmatchlen = True
        elif opt == b"MINMATCHLEN" and j + 1 < len(args):
            minmatchlen = max(parse_int(args[j + 1]), 0)
            j += 1
        else:
            raise err(SYNTAX)
        j += 1
    if getidx and getlen:
        raise err("ERR If you want both the length and indexes, please just use IDX.")
    limit = ctx.engine.config.max_value_bytes if ctx.engine is not None else 512 * 1024 * 1024
    if (len(a) + 1) * (len(b) + 1) * 4 > limit:
        raise err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
    table = _LcsRows(a, b)
    total = table(len(a), len(b))
    if getlen and not getidx:
        return total
    # Walk back from the end as Redis does, collecting the string and the matching ranges
    # (newest first, which is the order Redis replies them in).
    out = bytearray()
    matches: list[list] = []
    i, k = len(a), len(b)
    a_start = a_end = b_start = b_end = -1
    while i > 0 and k > 0:
        emit = False
        if a[i - 1] == b[k - 1]:
            out.append(a[i - 1])
            if a_start == -1:
                a_start = a_end = i - 1
                b_start = b_end = k - 1
            elif a_start == i and b_start == k:
                a_start -= 1
                b_start -= 1
            else:
                emit = True
            if a_start == 0 or b_start == 0:
                emit = True
            i -= 1
            k -= 1
        else:
            if table(i - 1, k) > table(i, k - 1):
                i -= 1
            else:
                k -= 1
            emit = a_start != -1
        if emit:
            match_len = a_end - a_start + 1
            if minmatchlen == 0 or match_len >= minmatchlen:
                entry: list = [[a_start, a_end], [b_start, b_end]]
                if withmatchlen:
                    entry.append(match_len)
                matches.append(entry)
            a_start = -1
    if not getidx:
        return bytes(reversed(out))
    return {b"matches": matches, b"len": total}
