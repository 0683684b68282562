"""HyperLogLog values in Redis 7.0's exact byte layout (no I/O; the PF* commands are in commands/hyperloglog.py).

An HLL is a plain string: a 16-byte header ("HYLL", the encoding byte, three unused bytes, the cached
cardinality as a little-endian uint64 whose top bit set means "stale"), then 16384 registers of 6 bits,
either dense (12288 bytes, register i at bit 6*i, least significant bits first) or sparse (a run-length
code: ZERO 00xxxxxx, XZERO 01xxxxxx yyyyyyyy, VAL 1vvvvvxx).  A value copied from a real Redis works
here and the other way round, so every operation follows Redis's own steps, not merely its results: a
sparse value is edited in place opcode by opcode (the split, the five-opcode merge pass, the promotion
to dense at `hll-sparse-max-bytes`), since two sparse encodings of the same registers are different
strings and GET must show Redis's one.

Speed, in Python: a sparse value is held while a command runs as a list of opcodes (an XZERO as one
int >= 0x4000) beside the list of the first register each covers, so finding a register is a bisect and
an edit a list splice; dense registers are unpacked to one byte each with bytes.translate and big-int
ORs, never register by register, and merged (MAX) with big-int lane arithmetic.

Corrupt values are refused as Redis refuses them (`Corrupt`, the INVALIDOBJ error), with one rule of
our own: a run is never expanded past the 16384th register, so a hostile value costs at most its own
length to read.
"""

from __future__ import annotations

import math
import re
import struct
from bisect import bisect_right
from collections import Counter
from itertools import accumulate

__all__ = [
    "Corrupt", "DENSE", "SPARSE", "HDR", "REGISTERS", "DENSE_SIZE", "EMPTY", "is_hll", "murmur64a", "pat_len",
    "Sparse", "dense_add", "dense_registers", "pack_registers", "raw_max", "sparse_registers", "count_raw",
    "count_value", "to_dense", "estimate", "decode", "registers_of", "dense_hist", "cached_hist",
    "remember_hist",
]

HDR = 16
REGISTERS = 16384
Q = 50                      # hash bits left after the 14 index bits
DENSE_BYTES = REGISTERS * 6 // 8
DENSE_SIZE = HDR + DENSE_BYTES
DENSE, SPARSE = 0, 1
ZERO_MAX, VAL_MAX_LEN, VAL_MAX = 64, 4, 32
ALPHA_INF = 0.721347520444481703680
_M64 = (1 << 64) - 1
_MUL = 0xC6A4A7935BD1E995
_SEED = 0xADC83B19

# An empty HLL as PFADD creates it: sparse, one XZERO of 16384, the cache marked stale.
EMPTY = b"HYLL\x01\x00\x00\x00" + b"\x00" * 7 + b"\x80" + b"\x7f\xff"


class Corrupt(Exception):
    """The value says HYLL but its registers cannot be read (Redis's INVALIDOBJ)."""


def is_hll(value: bytes) -> bool:
    """Redis's isHLLObjectOrReply for a string: header, magic, known encoding, a dense one's exact size."""
    if len(value) < HDR or value[:4] != b"HYLL" or value[4] > SPARSE:
        return False
    return value[4] != DENSE or len(value) == DENSE_SIZE


# -- hashing ------------------------------------------------------------------------------

def murmur64a(data: bytes, seed: int = _SEED) -> int:
    """MurmurHash64A as Redis runs it (little-endian blocks, the tail folded in low bytes first)."""
    n = len(data)
    h = (seed ^ (n * _MUL)) & _M64
    blocks = n >> 3
    if blocks:
        for k in struct.unpack_from(f"<{blocks}Q", data):
            k = (k * _MUL) & _M64
            k ^= k >> 47
            h ^= (k * _MUL) & _M64
            h = (h * _MUL) & _M64
    if n & 7:
        h ^= int.from_bytes(data[blocks << 3:], "little")
        h = (h * _MUL) & _M64
    h ^= h >> 47
    h = (h * _MUL) & _M64
    return h ^ (h >> 47)


def pat_len(element: bytes) -> tuple[int, int]:
    """(register index, run length of the 000..1 pattern in the hash's other 50 bits, 1..51)."""
    h = murmur64a(element)
    rest = (h >> 14) | (1 << Q)
    return h & (REGISTERS - 1), (rest & -rest).bit_length()


# -- the estimator ------------------------------------------------------------------------

def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        zp = z
        z += x * y
        y += y
        if zp == z:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        zp = z
        y *= 0.5
        z -= math.pow(1 - x, 2) * y
        if zp == z:
            return z / 3


def estimate(hist: list[int]) -> int:
    """Redis 7's cardinality from the register histogram (Ertl's improved estimator), the same float
    operations in the same order, rounded half away from zero as llroundl does."""
    m = float(REGISTERS)
    z = m * _tau((m - hist[Q + 1]) / m)
    for j in range(Q, 0, -1):
        z += hist[j]
        z *= 0.5
    z += m * _sigma(hist[0] / m)
    e = ALPHA_INF * m * m / z if z else math.inf
    if not e < 2.0**63:
        # Registers no hash can produce (a crafted dense value): llroundl overflows to LLONG_MIN on
        # x86-64, which Redis caches (setting the stale bit) and answers as a negative count.
        return 1 << 63
    f = math.floor(e)
    return int(f) + (1 if e - f >= 0.5 else 0)


def _hist_raw(raw: bytes) -> list[int]:
    """Histogram of one-byte registers: one C count per value present (registers are small)."""
    hist = [0] * 64
    left = len(raw)
    for v in range(64):
        c = raw.count(v)
        if c:
            hist[v] = c
            left -= c
            if not left:
                break
    return hist


def count_raw(raw: bytes) -> int:
    return estimate(_hist_raw(raw))


# -- dense registers ----------------------------------------------------------------------

def _table(f: object) -> bytes:
    return bytes(f(b) for b in range(256))  # type: ignore[operator]


_LO6 = _table(lambda b: b & 63)
_HI2 = _table(lambda b: b >> 6)
_LO4_UP2 = _table(lambda b: (b & 15) << 2)
_HI4 = _table(lambda b: b >> 4)
_LO2_UP4 = _table(lambda b: (b & 3) << 4)
_HI6 = _table(lambda b: b >> 2)
_LO2_UP6 = _table(lambda b: (b & 3) << 6)
_UP4 = _table(lambda b: (b << 4) & 255)
_UP2 = _table(lambda b: (b << 2) & 255)


def _or(a: bytes, b: bytes) -> bytes:
    """Bytewise OR of two equal-length strings whose set bits never collide per byte."""
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def dense_registers(value: bytes) -> bytes:
    """The 16384 registers of a dense value, one byte each (3 bytes hold 4 registers)."""
    regs = value[HDR:HDR + DENSE_BYTES]
    b0, b1, b2 = regs[0::3], regs[1::3], regs[2::3]
    out = bytearray(REGISTERS)
    out[0::4] = b0.translate(_LO6)
    out[1::4] = _or(b0.translate(_HI2), b1.translate(_LO4_UP2))
    out[2::4] = _or(b1.translate(_HI4), b2.translate(_LO2_UP4))
    out[3::4] = b2.translate(_HI6)
    return bytes(out)


def pack_registers(raw: bytes) -> bytes:
    """One-byte registers (each < 64) back to the 12288 dense bytes."""
    r0, r1, r2, r3 = raw[0::4], raw[1::4], raw[2::4], raw[3::4]
    out = bytearray(DENSE_BYTES)
    out[0::3] = _or(r0, r1.translate(_LO2_UP6))
    out[1::3] = _or(r1.translate(_HI6), r2.translate(_UP4))
    out[2::3] = _or(r2.translate(_HI4), r3.translate(_UP2))
    return bytes(out)


def dense_add(buf: bytearray, index: int, count: int, touched: list[int], hist: list[int] | None = None) -> int:
    """Raise register `index` of a dense value (whole value, header included) to `count`: 1 if it
    changed.  The bytes written go to `touched` (the AOF logs only those), the change to `hist`."""
    pos = HDR + index * 6 // 8
    fb = index * 6 & 7
    b0 = buf[pos]
    b1 = buf[pos + 1] if fb > 2 else 0
    old = ((b0 >> fb) | (b1 << (8 - fb))) & 63
    if old >= count:
        return 0
    buf[pos] = (b0 & ~(63 << fb) & 255) | ((count << fb) & 255)
    touched.append(pos)
    if fb > 2:  # (the register spills into the next byte)
        buf[pos + 1] = (b1 & ~(63 >> (8 - fb))) | (count >> (8 - fb))
        touched.append(pos + 1)
    if hist is not None:
        hist[old] -= 1
        hist[count] += 1
    return 1


# The register histogram of the dense value counted or edited last: (value, histogram).  Counting a
# dense value's registers is ~150 us in Python, and PFADD then PFCOUNT on one key is the common
# pattern: PFADD moves the histogram along with the registers it raises, so the PFCOUNT after it
# costs the estimator only.  Checked by identity, as Sparse's cache.
_last_hist: tuple[bytes, list[int]] | None = None


def dense_hist(value: bytes) -> list[int]:
    """The register histogram of a dense value (a copy: the caller may change it)."""
    last = _last_hist
    if last is not None and last[0] is value:
        return last[1][:]
    return _hist_raw(dense_registers(value))


def cached_hist(value: bytes) -> list[int] | None:
    last = _last_hist
    return last[1][:] if last is not None and last[0] is value else None


def remember_hist(value: object, hist: list[int]) -> None:
    """`hist` is the histogram of `value` (the object the keyspace holds now)."""
    global _last_hist
    if type(value) is bytes and len(value) == DENSE_SIZE:
        _last_hist = (value, hist[:])


_LANES_HI = int.from_bytes(b"\x80" * REGISTERS, "little")


def raw_max(a: bytes, b: bytes) -> bytes:
    """Bytewise MAX of two register strings (values < 64), as lane arithmetic on two big ints:
    128 + a - b keeps its top bit exactly where a >= b, and that bit picks a or b."""
    x, y = int.from_bytes(a, "little"), int.from_bytes(b, "little")
    ge = (((x | _LANES_HI) - y) & _LANES_HI) >> 7
    return (y ^ ((x ^ y) & (ge * 255))).to_bytes(REGISTERS, "little")


# -- sparse -------------------------------------------------------------------------------
#
# Opcodes as ints: a byte for ZERO and VAL, (first << 8) | second for XZERO (0x4000..0x7fff).

_SPAN = [(c & 0x3F) + 1 if c < 0x40 else (c & 3) + 1 if 0x80 <= c < 0x100 else (c & 0x3FFF) + 1
         for c in range(0x8000)]
_XZERO_RE = re.compile(rb"([\x40-\x7f].)", re.S)
_BYTE = [bytes((b,)) for b in range(256)]
# The registers a one-byte opcode stands for (ZERO: zeros, VAL: its value repeated).
_RUN = [bytes(((c >> 2) & 0x1F) + 1 for _ in range((c & 3) + 1)) if c & 0x80 else bytes((c & 0x3F) + 1)
        for c in range(256)]


def _zero(n: int) -> int:
    return (0x4000 | (n - 1)) if n > ZERO_MAX else n - 1


def _val(v: int, n: int) -> int:
    return 0x80 | ((v - 1) << 2) | (n - 1)


def _is_val(op: int) -> bool:
    return 0x80 <= op < 0x100


# The last sparse value written, with its opcodes: (value, ops, starts, nbytes, cut).  Checked by
# identity, never by content, and holding the value keeps its identity from being reused.
_last_written: tuple[bytes, list[int], list[int], int, bool] | None = None


class Sparse:
    """A sparse value being edited: `ops`, the register each starts at (`starts`), and its byte length
    as Redis counts it (`nbytes`: a value cut inside its last XZERO is one byte shorter than its ops)."""

    __slots__ = ("header", "ops", "starts", "nbytes", "cut")

    def __init__(self, value: bytes) -> None:
        self.header = bytearray(value[:HDR])
        last = _last_written
        if last is not None and last[0] is value:
            # The value this process wrote last (a run of PFADDs to one key): its opcodes are known.
            _, ops, starts, self.nbytes, self.cut = last
            self.ops, self.starts = ops[:], starts[:]
        else:
            self._parse(value[HDR:])

    def _parse(self, payload: bytes) -> None:
        # The XZEROs split the payload into runs of one-byte opcodes.
        parts = _XZERO_RE.split(payload)
        ops = list(parts[0])
        it = iter(parts)
        next(it)
        for xzero, run in zip(it, it, strict=True):
            ops.append((xzero[0] << 8) | xzero[1])
            ops += run
        # A last byte 01xxxxxx is an XZERO whose second byte is missing: Redis reads the string's
        # terminating NUL there.
        self.cut = bool(ops) and 0x40 <= ops[-1] < 0x80
        if self.cut:
            ops[-1] <<= 8
        self.ops = ops
        self.starts = list(accumulate(map(_SPAN.__getitem__, ops), initial=0))
        self.starts.pop()
        self.nbytes = len(payload)

    def written(self) -> bytes:
        """The value, remembered with its opcodes for the next command on it (`Sparse(value)` then
        copies two lists instead of parsing): the keyspace holds this very object until it changes."""
        global _last_written
        value = self.value()
        _last_written = (value, self.ops[:], self.starts[:], self.nbytes, self.cut)
        return value

    def payload(self) -> bytes:
        ops = self.ops
        if not ops or max(ops) <= 0xFF:
            return bytes(ops)
        out = b"".join([_BYTE[op] if op <= 0xFF else op.to_bytes(2, "big") for op in ops])
        return out[:self.nbytes] if self.cut else out

    def value(self) -> bytes:
        return bytes(self.header) + self.payload()

    def total(self) -> int:
        return self.starts[-1] + _SPAN[self.ops[-1]] if self.ops else 0

    def set(self, index: int, count: int, max_bytes: int) -> int:
        """hllSparseSet: 1 updated, 0 not needed, -1 corrupt, 2 the value must go dense first (the
        caller promotes and sets the register there)."""
        if count > VAL_MAX:
            return 2
        ops, starts = self.ops, self.starts
        if not ops or index >= starts[-1] + _SPAN[ops[-1]]:
            return -1
        k = bisect_right(starts, index) - 1
        op = ops[k]
        first = starts[k]
        runlen = _SPAN[op]
        is_val = 0x80 <= op < 0x100
        if is_val and ((op >> 2) & 0x1F) + 1 >= count:
            return 0
        if runlen == 1 and op < 0x100:  # a VAL or ZERO of one register: rewritten in place
            ops[k] = 0x80 | ((count - 1) << 2)
            self._merge(k)
            self.header[15] |= 0x80
            return 1
        # Split the run into (before, our register, after): VALs of the old value around a VAL, or
        # zero runs (ZERO up to 64, XZERO beyond) around it.
        last = first + runlen - 1
        seq: list[int] = []
        seq_starts: list[int] = []
        size = 1
        if index != first:
            n = index - first
            seq.append(0x80 | (op & 0x7C) | (n - 1) if is_val else _zero(n))
            seq_starts.append(first)
            size += 2 if n > ZERO_MAX and not is_val else 1
        seq.append(0x80 | ((count - 1) << 2))
        seq_starts.append(index)
        if index != last:
            n = last - index
            seq.append(0x80 | (op & 0x7C) | (n - 1) if is_val else _zero(n))
            seq_starts.append(index + 1)
            size += 2 if n > ZERO_MAX and not is_val else 1
        delta = size - (2 if op > 0xFF else 1)
        if delta > 0 and HDR + self.nbytes + delta > max_bytes:
            return 2
        ops[k:k + 1] = seq
        starts[k:k + 1] = seq_starts
        self.nbytes += delta
        if self.cut and k + len(seq) == len(ops):
            # The edit was in the cut XZERO: Redis's string keeps only nbytes of what it wrote.
            self._parse(self.payload())
        self._merge(k)
        self.header[15] |= 0x80
        return 1

    def _merge(self, k: int) -> None:
        """Redis's pass over up to five opcodes from the one before the edit: two adjacent VALs of the
        same value whose runs fit one VAL become one."""
        ops, starts = self.ops, self.starts
        p = k - 1 if k > 0 else 0
        end = len(ops)
        scan = 5
        while p < end and scan:
            scan -= 1
            op = ops[p]
            if 0x80 <= op < 0x100 and p + 1 < end:
                nxt = ops[p + 1]
                if 0x80 <= nxt < 0x100 and (op >> 2) == (nxt >> 2) and (op & 3) + (nxt & 3) < VAL_MAX_LEN - 1:
                    ops[p:p + 2] = [(op & 0xFC) | ((op & 3) + (nxt & 3) + 1)]
                    del starts[p + 1]
                    self.nbytes -= 1
                    end -= 1
                    continue
            p += 1

    def registers(self) -> bytes:
        """The one-byte registers (hllSparseToDense, hllMerge): refused unless the runs cover exactly
        16384 registers, checked before anything is expanded."""
        if self.total() != REGISTERS:
            raise Corrupt
        return b"".join([_RUN[op] if op <= 0xFF else bytes(_SPAN[op]) for op in self.ops])

    def histogram(self) -> list[int]:
        """hllSparseRegHisto: every run counted, valid only if they add up to 16384."""
        if self.total() != REGISTERS:
            raise Corrupt
        hist = [0] * 64
        for op, n in Counter(self.ops).items():
            hist[((op >> 2) & 0x1F) + 1 if _is_val(op) else 0] += _SPAN[op] * n
        return hist


def sparse_registers(value: bytes) -> bytes:
    return Sparse(value).registers()


def to_dense(value: bytes) -> bytes:
    """hllSparseToDense: the header kept (cached cardinality and unused bytes too), encoding dense."""
    if value[4] == DENSE:
        return value
    raw = Sparse(value).registers()
    return value[:4] + b"\x00" + value[5:HDR] + pack_registers(raw)


def registers_of(value: bytes) -> bytes:
    return dense_registers(value) if value[4] == DENSE else sparse_registers(value)


def count_value(value: bytes) -> int:
    """hllCount of one value (the cache not consulted)."""
    if value[4] == DENSE:
        return estimate(dense_hist(value))
    return estimate(Sparse(value).histogram())


def decode(value: bytes) -> bytes:
    """PFDEBUG DECODE's text of a sparse value."""
    s = Sparse(value)
    parts = []
    for op in s.ops:
        if op > 0xFF:
            parts.append(b"Z:%d" % _SPAN[op])
        elif op & 0x80:
            parts.append(b"v:%d,%d" % (((op >> 2) & 0x1F) + 1, _SPAN[op]))
        else:
            parts.append(b"z:%d" % _SPAN[op])
    return b" ".join(parts)
