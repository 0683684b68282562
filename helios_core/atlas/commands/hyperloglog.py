"""HyperLogLog commands: PFADD PFCOUNT PFMERGE PFDEBUG PFSELFTEST, as Redis 7.0 runs them (hyperloglog.c).

An HLL is a string in Redis's own layout (hll.py), so GET, SET, DUMP and the AOF see plain bytes.  What
a command logs:

  * an edit of a dense value (PFADD, PFMERGE into a dense key) logs SETRANGE effects of just the bytes
    that changed (a register is 1-2 bytes, plus the cache byte), so a PFADD to a 12 KiB HLL writes a
    record of a few dozen bytes; many scattered changes become one SET when that is smaller;
  * a sparse value (at most `hll-sparse-max-bytes`, 3000 by default) and a new dense one (a promotion,
    PFDEBUG TODENSE/GETREG's conversion) are logged whole, as a SET keeping the key's TTL;
  * PFCOUNT of one key whose cached cardinality is stale writes the fresh one into the value's header
    as Redis does (it propagates the PFCOUNT itself, marking the key modified): here it is a SETRANGE of
    those 8 bytes, so WATCH sees it and a restart holds the same bytes.  It publishes no keyspace event
    (Redis sends none), and is skipped while the AOF refuses writes (the count is still answered).

A PFADD that meets a corrupt sparse value after it changed some registers answers INVALIDOBJ as Redis
does, but keeps none of the changes (an error rolls a command back here; Redis leaves them in memory
unpropagated).  PFSELFTEST runs Redis's checks on a smaller scale (100 rounds of registers, not 1000;
ten thousand adds, not ten million), so it answers in well under a second instead of stalling.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from helios_core.atlas import hll
from helios_core.atlas.commands.table import OK, WRONGTYPE, Ctx, Simple, command, err
from helios_core.errors import CommandError

__all__ = ["NOT_HLL", "INVALID"]

NOT_HLL = "WRONGTYPE Key is not a valid HyperLogLog string value."
INVALID = "INVALIDOBJ Corrupted HLL object detected"
DEFAULT_SPARSE_MAX = 3000
_NONZERO = re.compile(rb"[^\x00]")
_CHANGED = re.compile(rb"[^\x00]+")
_LOW6 = bytes(b & 63 for b in range(256))
_RANGE_COST = 48  # an AOF SETRANGE's bytes besides its data (JSON, key, base64 growth aside)


def _sparse_max(ctx: Ctx) -> int:
    engine = ctx.engine
    if engine is None:
        return DEFAULT_SPARSE_MAX
    return int(engine.settings.get("hll-sparse-max-bytes", b"%d" % DEFAULT_SPARSE_MAX))


def _hll(ctx: Ctx, key: bytes) -> bytes | None:
    value = ctx.lookup(key)
    if value is None:
        return None
    if type(value) is not bytes:
        raise CommandError(WRONGTYPE)
    if not hll.is_hll(value):
        raise err(NOT_HLL)
    return value


def _registers(value: bytes) -> bytes:
    try:
        return hll.registers_of(value)
    except hll.Corrupt:
        raise err(INVALID) from None


def _write(ctx: Ctx, key: bytes, old: bytes | None, new: bytes, touched: list[int] | None = None,
           always: bool = False) -> None:
    """Log `new` replacing `old` at key: the changed byte ranges of a same-length value (`touched`, the
    positions written, when the caller knows them), else a SET.  `always`: log a write even when
    nothing changed (PFMERGE, which Redis counts as a write whatever it merged: "pfadd", WATCH)."""
    if old is not None and len(old) == len(new):
        if touched is None:
            diff = (int.from_bytes(old, "big") ^ int.from_bytes(new, "big")).to_bytes(len(new), "big")
            spans = [(m.start(), m.end()) for m in _CHANGED.finditer(diff)]
        else:
            spans = [(pos, pos + 1) for pos in sorted(set(touched))]
        runs: list[list[int]] = []
        for start, end in spans:
            if runs and start - runs[-1][1] <= _RANGE_COST:
                runs[-1][1] = end
            else:
                runs.append([start, end])
        if sum(end - start + _RANGE_COST for start, end in runs) < len(new):
            if not runs and always:
                runs.append([hll.HDR - 1, hll.HDR])  # (the cache byte, rewritten as it is)
            for start, end in runs:
                ctx.emit(("SETRANGE", key, start, new[start:end]))
            return
    ctx.emit(("SET", key, new, ctx.expiry(key) if old is not None else None))


def _dense_from(sparse: hll.Sparse) -> bytearray:
    """hllSparseToDense of a value being edited (header kept, encoding byte set to dense)."""
    try:
        raw = sparse.registers()
    except hll.Corrupt:
        raise err(INVALID) from None
    header = bytearray(sparse.header)
    header[4] = hll.DENSE
    return header + hll.pack_registers(raw)


@command("pfadd", -2, "write denyoom fast")
def pfadd(ctx: Ctx, args: list[bytes]) -> Any:
    key = args[0]
    old = _hll(ctx, key)
    value = old if old is not None else hll.EMPTY
    updated = 0 if old is not None else 1
    todo = [hll.pat_len(e) for e in args[1:]]
    buf: bytearray | None = None
    if value[4] == hll.SPARSE:
        sparse = hll.Sparse(value)
        limit = _sparse_max(ctx)
        for i, (index, count) in enumerate(todo):
            r = sparse.set(index, count, limit)
            if r == 2:  # promoted: this element and the rest go to the dense value
                buf = _dense_from(sparse)
                todo = todo[i:]
                break
            if r < 0:
                raise err(INVALID)
            updated += r
        else:
            if updated:
                sparse.header[15] |= 0x80
                ctx.emit(("SET", key, sparse.written(), ctx.expiry(key) if old is not None else None))
            return 1 if updated else 0
    else:
        buf = bytearray(value)
    hist = hll.cached_hist(value) if value[4] == hll.DENSE else None
    touched: list[int] = []
    for index, count in todo:
        updated += hll.dense_add(buf, index, count, touched, hist)
    if updated:
        buf[15] |= 0x80
        touched.append(15)
        _write(ctx, key, old, bytes(buf), touched if old is not None and old[4] == hll.DENSE else None)
        if hist is not None:
            hll.remember_hist(ctx.ks.data.get(key), hist)
    return 1 if updated else 0


@command("pfcount", -2, "readonly", keys=(1, -1, 1))
def pfcount(ctx: Ctx, args: list[bytes]) -> Any:
    if len(args) > 1:
        # The union's count, nothing written: registers merged one byte each.
        raw: bytes | None = None
        for key in args:
            value = _hll(ctx, key)
            if value is None:
                continue
            regs = _registers(value)
            raw = regs if raw is None else hll.raw_max(raw, regs)
        card = hll.count_raw(raw) if raw is not None else 0
        return card - (1 << 64) if card >> 63 else card
    key = args[0]
    value = _hll(ctx, key)
    if value is None:
        return 0
    if not value[15] & 0x80:
        return int.from_bytes(value[8:16], "little")
    hist = None
    try:
        if value[4] == hll.DENSE:
            hist = hll.dense_hist(value)
            card = hll.estimate(hist)
        else:
            card = hll.count_value(value)
    except hll.Corrupt:
        raise err(INVALID) from None
    if ctx.writable:
        ctx.emit(("SETRANGE", key, 8, card.to_bytes(8, "little")))
        if hist is not None:
            hll.remember_hist(ctx.ks.data.get(key), hist)
    return card - (1 << 64) if card >> 63 else card  # (Redis replies with the uint64 as a long long)


@command("pfmerge", -2, "write denyoom", keys=(1, -1, 1))
def pfmerge(ctx: Ctx, args: list[bytes]) -> Any:
    raw: bytes | None = None
    dense = False
    for key in args:
        value = _hll(ctx, key)
        if value is None:
            continue
        dense = dense or value[4] == hll.DENSE
        regs = _registers(value)
        raw = regs if raw is None else hll.raw_max(raw, regs)
    if raw is None:
        raw = bytes(hll.REGISTERS)
    dest = args[0]
    old = ctx.lookup_write(dest)  # (checked above, as a source)
    base = old if old is not None else hll.EMPTY
    new: bytes | bytearray
    if dense:
        # Every register of the destination ends at the union's (the destination is a source).
        new = bytearray(base[:hll.HDR]) + hll.pack_registers(raw)
        new[4] = hll.DENSE
    else:
        sparse = hll.Sparse(base)
        limit = _sparse_max(ctx)
        for m in _NONZERO.finditer(raw):
            j = m.start()
            if sparse.set(j, raw[j], limit) == 2:
                # Promoted: the registers set so far and those still to come all end at the union's.
                new = bytearray(sparse.header) + hll.pack_registers(raw)
                new[4] = hll.DENSE
                break
        else:
            new = bytearray(sparse.value())  # (its cache byte changes below: not remembered)
    new[15] |= 0x80
    _write(ctx, dest, old, bytes(new), always=True)
    return OK


@command("pfdebug", 3, "write denyoom admin", keys=(2, 2, 1))
def pfdebug(ctx: Ctx, args: list[bytes]) -> Any:
    sub, key = args[0], args[1]
    value = _hll(ctx, key)
    if value is None:
        raise err("ERR The specified key does not exist")
    name = sub.lower()
    if name == b"getreg" or name == b"todense":
        converted = value[4] == hll.SPARSE
        if converted:
            dense = _dense_from(hll.Sparse(value))
            value = bytes(dense)
            ctx.emit(("SET", key, value, ctx.expiry(key)))
        if name == b"todense":
            return 1 if converted else 0
        return list(hll.dense_registers(value))
    if name == b"decode":
        if value[4] != hll.SPARSE:
            raise err("ERR HLL encoding is not sparse")
        return hll.decode(value)
    if name == b"encoding":
        return Simple("dense" if value[4] == hll.DENSE else "sparse")
    shown = sub.split(b"\0", 1)[0].decode(errors="replace").replace("\r", " ").replace("\n", " ")
    raise err(f"ERR Unknown PFDEBUG subcommand '{shown}'")


_SELFTEST_ROUNDS = 100     # Redis: 1000 rounds of register writes and reads
_SELFTEST_ADDS = 10_000    # Redis: ten million adds; a Python server would stall for minutes


@command("pfselftest", 1, "admin", keys=(0, 0, 0))
def pfselftest(ctx: Ctx, args: list[bytes]) -> Any:
    """Redis's self-test of the register code and the estimator, on a smaller scale (see above)."""
    rnd = random.Random()
    empty = hll.to_dense(hll.EMPTY)
    for _ in range(_SELFTEST_ROUNDS):
        raw = rnd.randbytes(hll.REGISTERS).translate(_LOW6)
        got = hll.dense_registers(empty[:hll.HDR] + hll.pack_registers(raw))
        if got != raw:
            i = next(i for i in range(hll.REGISTERS) if got[i] != raw[i])
            raise err(f"TESTFAILED Register {i} should be {raw[i]} but is {got[i]}")
    dense, touched = bytearray(empty), list[int]()
    sparse: hll.Sparse | None = hll.Sparse(hll.EMPTY)
    limit = _sparse_max(ctx)
    seed = rnd.getrandbits(64)
    relerr = 1.04 / math.sqrt(hll.REGISTERS)
    checkpoint = 1
    for j in range(1, _SELFTEST_ADDS + 1):
        index, count = hll.pat_len(((j ^ seed) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
        hll.dense_add(dense, index, count, touched)
        if sparse is not None and sparse.set(index, count, limit) == 2:
            sparse = None  # promoted: Redis's object goes on dense, the same registers as `dense`
        if j != checkpoint:
            continue
        if j < limit // 2 and sparse is None:
            raise err("TESTFAILED sparse encoding not used")
        card = hll.count_value(bytes(dense))
        if sparse is not None and hll.count_value(sparse.value()) != card:
            raise err("TESTFAILED dense/sparse disagree")
        maxerr = 1 if j == 10 else math.ceil(relerr * 6 * checkpoint)
        if abs(checkpoint - card) > maxerr:
            raise err(f"TESTFAILED Too big error. card:{checkpoint} abserr:{abs(checkpoint - card)}")
        checkpoint *= 10
    return OK
