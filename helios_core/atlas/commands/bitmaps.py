"""Bitmap commands: SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO, as Redis 7.0 runs them.

A bitmap is a string; bit 0 is the most significant bit of byte 0.  Writes that
touch a few bytes (SETBIT, BITFIELD) log a SETRANGE effect of just those bytes,
so a SETBIT on a 1 MB bitmap writes a record of a few dozen bytes to the AOF,
not the whole value; BITOP, which computes a whole new value, logs a SET.
Argument checks come in Redis's order (bitops.c), so the same error wins.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.table import NOT_INT, SYNTAX, Ctx, command, err, parse_int
from helios_core.errors import CommandError

__all__ = ["max_bulk"]

BAD_OFFSET = "ERR bit offset is not an integer or out of range"
BAD_TYPE = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is."
DEFAULT_MAX_BULK = 512 * 1024 * 1024
U64 = 1 << 64
_NOT = bytes(255 - i for i in range(256))


def max_bulk(ctx: Ctx) -> int:
    """proto-max-bulk-len: atlasd's `max_value_bytes` (512 MB by default, as Redis)."""
    engine = ctx.engine
    return engine.config.max_value_bytes if engine is not None else DEFAULT_MAX_BULK


def _i64(x: int) -> int:
    """x as C's int64_t after unsigned wrap-around."""
    return ((x + (1 << 63)) % U64) - (1 << 63)


def _bit_offset(ctx: Ctx, raw: bytes, hash_ok: bool = False, bits: int = 0) -> int:
    """Redis's getBitOffsetFromArgument: '#n' means n * bits (BITFIELD); under max_bulk bytes."""
    use_hash = hash_ok and raw[:1] == b"#"
    try:
        off = parse_int(raw[1:] if use_hash else raw)
    except CommandError:
        raise err(BAD_OFFSET) from None
    if use_hash:
        off = _i64(off * bits)
    if off < 0 or (off >> 3) >= max_bulk(ctx):
        raise err(BAD_OFFSET)
    return off


@command("setbit", 4, "write denyoom")
def setbit(ctx: Ctx, args: list[bytes]) -> Any:
    offset = _bit_offset(ctx, args[1])
    try:
        on = parse_int(args[2])
    except CommandError:
        raise err("ERR bit is not an integer or out of range") from None
    if on & ~1:
        raise err("ERR bit is not an integer or out of range")
    cur = ctx.get_str(args[0])
    byte, shift = offset >> 3, 7 - (offset & 7)
    old_byte = cur[byte] if cur is not None and byte < len(cur) else 0
    old = (old_byte >> shift) & 1
    new_byte = (old_byte | (1 << shift)) if on else (old_byte & ~(1 << shift))
    # Redis creates or zero-extends the string even when the bit does not change.
    if cur is None or byte >= len(cur) or new_byte != old_byte:
        ctx.emit(("SETRANGE", args[0], byte, bytes((new_byte,))))
    return old


@command("getbit", 3, "readonly fast")
def getbit(ctx: Ctx, args: list[bytes]) -> Any:
    offset = _bit_offset(ctx, args[1])
    cur = ctx.get_str(args[0])
    byte = offset >> 3
    if cur is None or byte >= len(cur):
        return 0
    return (cur[byte] >> (7 - (offset & 7))) & 1


def _unit(raw: bytes) -> bool:
    """BYTE or BIT (True)."""
    unit = raw.upper()
    if unit == b"BIT":
        return True
    if unit == b"BYTE":
        return False
    raise err(SYNTAX)


def _clamp(start: int, end: int, total: int) -> tuple[int, int]:
    if start < 0:
        start += total
    if end < 0:
        end += total
    start, end = max(start, 0), max(end, 0)
    return start, min(end, total - 1)


def _bits_of(value: bytes, first: int, last: int) -> tuple[int, int]:
    """Bits first..last (inclusive, MSB-first numbering) as (integer, width)."""
    chunk = value[first >> 3:(last >> 3) + 1]
    n = int.from_bytes(chunk, "big") >> (7 - (last & 7))
    width = last - first + 1
    return n & ((1 << width) - 1), width


@command("bitcount", -2, "readonly")
def bitcount(ctx: Ctx, args: list[bytes]) -> Any:
    # Redis 7.0 looks the key up before it reads the range: a missing key is 0 whatever follows.
    cur = ctx.get_str(args[0])
    if cur is None:
        return 0
    if len(args) in (3, 4):
        start, end = parse_int(args[1]), parse_int(args[2])
        isbit = _unit(args[3]) if len(args) == 4 else False
        total = len(cur) * 8 if isbit else len(cur)
        if start < 0 and end < 0 and start > end:
            return 0
        start, end = _clamp(start, end, total)
    elif len(args) == 1:
        isbit, start, end = False, 0, len(cur) - 1
    else:
        raise err(SYNTAX)
    if start > end:
        return 0
    if not isbit:
        start, end = start * 8, end * 8 + 7
    return _bits_of(cur, start, end)[0].bit_count()


@command("bitpos", -3, "readonly")
def bitpos(ctx: Ctx, args: list[bytes]) -> Any:
    bit = parse_int(args[1])
    if bit not in (0, 1):
        raise err("ERR The bit argument must be 1 or 0.")
    cur = ctx.get_str(args[0])
    if cur is None:
        return -1 if bit else 0  # an endless run of zeros
    end_given = len(args) >= 4
    isbit = False
    if 3 <= len(args) <= 5:
        start = parse_int(args[2])
        if len(args) == 5:
            isbit = _unit(args[4])
        end = parse_int(args[3]) if end_given else len(cur) - 1
        total = len(cur) * 8 if isbit else len(cur)
        start, end = _clamp(start, end, total)
    elif len(args) == 2:
        start, end = 0, len(cur) - 1
    else:
        raise err(SYNTAX)
    if start > end:
        return -1
    if not isbit:
        start, end = start * 8, end * 8 + 7
    n, width = _bits_of(cur, start, end)
    if not bit:
        n ^= (1 << width) - 1
    if n:
        return start + width - n.bit_length()
    if bit or end_given:
        return -1
    return end + 1  # looking for a 0 past the end of the string, which is zero-padded


@command("bitop", -4, "write denyoom", keys=(2, -1, 1))
def bitop(ctx: Ctx, args: list[bytes]) -> Any:
    op = args[0].upper()
    if op not in (b"AND", b"OR", b"XOR", b"NOT"):
        raise err(SYNTAX)
    if op == b"NOT" and len(args) != 3:
        raise err("ERR BITOP NOT must be called with a single source key.")
    dst = args[1]
    values = [ctx.get_str(k) for k in args[2:]]
    maxlen = max(len(v or b"") for v in values)
    if maxlen == 0:
        if ctx.lookup_write(dst) is not None:  # (dbDelete: no keyspace hit or miss)
            ctx.emit(("DEL", dst))
        return 0
    if op == b"NOT":
        out = (values[0] or b"").translate(_NOT)
    else:
        # Shorter strings count as zero-padded, as Redis does.
        nums = [int.from_bytes((v or b"").ljust(maxlen, b"\0"), "big") for v in values]
        acc = nums[0]
        for n in nums[1:]:
            if op == b"AND":
                acc &= n
            elif op == b"OR":
                acc |= n
            else:
                acc ^= n
        out = acc.to_bytes(maxlen, "big")
    ctx.lookup_write(dst)  # setKey's lookupKeyWrite: a destination whose TTL ran out is "expired" first
    ctx.emit(("SET", dst, out, None))
    return maxlen


# -- BITFIELD ---------------------------------------------------------------------------------

def _bf_type(raw: bytes) -> tuple[bool, int]:
    """(signed, bits) from i1..i64 / u1..u63 (case-sensitive, as Redis)."""
    if raw[:1] not in (b"i", b"u"):
        raise err(BAD_TYPE)
    signed = raw[:1] == b"i"
    try:
        bits = parse_int(raw[1:].split(b"\0", 1)[0])
    except CommandError:
        raise err(BAD_TYPE) from None
    if bits < 1 or bits > (64 if signed else 63):
        raise err(BAD_TYPE)
    return signed, bits


def _get_field(buf: bytes | bytearray, offset: int, bits: int, signed: bool) -> int:
    first, last = offset, offset + bits - 1
    need = (last >> 3) + 1
    chunk = bytes(buf[first >> 3:need]).ljust(need - (first >> 3), b"\0")
    n = (int.from_bytes(chunk, "big") >> (7 - (last & 7))) & ((1 << bits) - 1)
    if signed and n >> (bits - 1):
        n -= 1 << bits
    return n


def _set_field(buf: bytearray, offset: int, bits: int, value: int) -> None:
    first, last = offset >> 3, (offset + bits - 1) >> 3
    shift = 7 - ((offset + bits - 1) & 7)
    width = (last - first + 1) * 8
    cur = int.from_bytes(buf[first:last + 1], "big")
    mask = ((1 << bits) - 1) << shift
    cur = (cur & ~mask & ((1 << width) - 1)) | ((value & ((1 << bits) - 1)) << shift)
    buf[first:last + 1] = cur.to_bytes(width // 8, "big")


def _overflow_unsigned(value: int, incr: int, bits: int, how: bytes) -> tuple[int, int | None]:
    """Redis's checkUnsignedBitfieldOverflow: (overflow direction, replacement value or None)."""
    top = (1 << bits) - 1
    maxincr = _i64(top - value)
    minincr = _i64(-value)
    if value > top or (incr > 0 and incr > maxincr):
        direction, sat = 1, top
    elif incr < 0 and incr < minincr:
        direction, sat = -1, 0
    else:
        return 0, None
    if how == b"WRAP":
        return direction, ((value + incr) % U64) & top
    return direction, sat if how == b"SAT" else None


def _overflow_signed(value: int, incr: int, bits: int, how: bytes) -> tuple[int, int | None]:
    """Redis's checkSignedBitfieldOverflow, including its int64 wrap-arounds."""
    top = (1 << 63) - 1 if bits == 64 else (1 << (bits - 1)) - 1
    bottom = -top - 1
    maxincr = _i64(top - value)
    minincr = _i64(bottom - value)
    if value > top or (bits != 64 and incr > maxincr) or (value >= 0 and incr > 0 and incr > maxincr):
        direction, sat = 1, top
    elif value < bottom or (bits != 64 and incr < minincr) or (value < 0 and incr < 0 and incr < minincr):
        direction, sat = -1, bottom
    else:
        return 0, None
    if how == b"WRAP":
        c = (value + incr) % U64
        if bits < 64:
            c = c | (U64 - (1 << bits)) if c & (1 << (bits - 1)) else c & ((1 << bits) - 1)
        return direction, _i64(c)
    return direction, sat if how == b"SAT" else None


def _bitfield(ctx: Ctx, args: list[bytes], readonly_cmd: bool) -> Any:
    key = args[0]
    ops: list[tuple[bytes, bool, int, int, int, bytes]] = []
    how = b"WRAP"
    readonly = True
    highest = 0
    j = 1
    while j < len(args):
        remaining = len(args) - j - 1
        sub = args[j].upper()
        if sub == b"GET" and remaining >= 2:
            pass
        elif sub in (b"SET", b"INCRBY") and remaining >= 3:
            pass
        elif sub == b"OVERFLOW" and remaining >= 1:
            how = args[j + 1].upper()
            if how not in (b"WRAP", b"SAT", b"FAIL"):
                raise err("ERR Invalid OVERFLOW type specified")
            j += 2
            continue
        else:
            raise err(SYNTAX)
        signed, bits = _bf_type(args[j + 1])
        offset = _bit_offset(ctx, args[j + 2], True, bits)
        value = 0
        if sub != b"GET":
            readonly = False
            highest = max(highest, offset + bits - 1)
            value = parse_int(args[j + 3], NOT_INT)
        ops.append((sub, signed, bits, offset, value, how))
        j += 4 if sub != b"GET" else 3
    if readonly:
        cur = ctx.get_str(key)
        return [_get_field(cur or b"", offset, bits, signed) for _, signed, bits, offset, _, _ in ops]
    if readonly_cmd:
        raise err("ERR BITFIELD_RO only supports the GET subcommand")
    cur = ctx.get_str(key)
    buf = bytearray(cur or b"")
    if len(buf) < (highest >> 3) + 1:  # grown up front, as Redis does, even when FAIL writes nothing
        buf.extend(bytes((highest >> 3) + 1 - len(buf)))
    reply: list[int | None] = []
    lo = min(offset >> 3 for sub, _, _, offset, _, _ in ops if sub != b"GET")
    for sub, signed, bits, offset, value, how_ in ops:
        if sub == b"GET":
            reply.append(_get_field(buf, offset, bits, signed))
            continue
        old = _get_field(buf, offset, bits, signed)
        if signed:
            if sub == b"INCRBY":
                over, repl = _overflow_signed(old, value, bits, how_)
                new = repl if over else old + value
                ret = new
            else:
                over, repl = _overflow_signed(value, 0, bits, how_)
                new = repl if over else value
                ret = old
        else:
            if sub == b"INCRBY":
                over, repl = _overflow_unsigned(old, value, bits, how_)
                new = repl if over else old + value
                ret = new
            else:
                over, repl = _overflow_unsigned(value % U64, 0, bits, how_)
                new = repl if over else value % U64
                ret = old
        if new is None:  # overflow under FAIL: nothing written, a nil reply
            reply.append(None)
            continue
        reply.append(ret)
        _set_field(buf, offset, bits, new)
    # Only the bytes the writes reach: SETRANGE zero-fills any gap when the string grew.
    ctx.emit(("SETRANGE", key, lo, bytes(buf[lo:(highest >> 3) + 1])))
    return reply


@command("bitfield", -2, "write denyoom")
def bitfield(ctx: Ctx, args: list[bytes]) -> Any:
    return _bitfield(ctx, args, False)


@command("bitfield_ro", -2, "readonly fast")
def bitfield_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _bitfield(ctx, args, True)
