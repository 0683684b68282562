"""INCRBYFLOAT's arithmetic: C `long double` as Redis computes it on x86-64.

Redis parses both operands with strtold, adds them as 80-bit x87 long doubles
(64-bit significand) and prints the sum with "%.17Lf", trailing zeros cut.
Python floats are binary64, which gives different digits for the most common
case (Redis answers 0.1 + 0.2 with "0.3", binary64 with
"0.30000000000000004"), so the values are kept exact as Fractions and rounded
to the long double grid after every step, ties to even, as the FPU does.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

from helios_core.atlas.commands.table import C_FLOAT_RE, C_SPACE, NOT_FLOAT, err

__all__ = ["ld_parse", "ld_add", "ld_format"]

MANT_BITS = 64
EMIN = -16382                    # exponent of the smallest normal long double
OVERFLOW = Fraction(1 << 16384)  # the first value past the largest finite one
MAX_CHARS = 5 * 1024             # Redis's MAX_LONG_DOUBLE_CHARS

LongDouble = Fraction | float    # a float only for +-inf


def ld_round(x: Fraction) -> LongDouble:
    """`x` rounded to the nearest long double (ties to even); +-inf past the largest."""
    if x == 0:
        return x
    n, d = abs(x.numerator), x.denominator
    e = n.bit_length() - d.bit_length()
    if (n << max(-e, 0)) < (d << max(e, 0)):   # |x| < 2**e
        e -= 1
    q = max(e, EMIN) - (MANT_BITS - 1)         # the spacing of long doubles near x
    num, den = (n, d << q) if q >= 0 else (n << -q, d)
    m, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and m & 1):
        m += 1
    v = Fraction(m << q) if q >= 0 else Fraction(m, 1 << -q)
    if v >= OVERFLOW:
        return math.inf if x > 0 else -math.inf
    return v if x > 0 else -v


def _exponent(raw: bytes) -> int:
    """A literal's exponent, clamped (a 5,000-digit exponent is simply out of range)."""
    digits = raw.lstrip(b"+-").lstrip(b"0")
    if len(digits) > 9:
        return -(10 ** 9) if raw.startswith(b"-") else 10 ** 9
    return int(raw or b"0")


def _exact(m: re.Match[bytes]) -> Fraction | None:
    """The exact value of a matched finite literal; None when far outside the long double range."""
    if m["hex"] is not None:
        mant, _, exp = m["hex"].lower().partition(b"p")
        whole, _, frac = mant.partition(b".")
        digits = (whole + frac).lstrip(b"0")
        shift = _exponent(exp) - 4 * len(frac)
        if not digits:
            return Fraction(0)
        if not -16600 < shift + 4 * len(digits) < 16600:
            return None
        return Fraction(int(digits, 16)) * Fraction(2) ** shift
    mant, _, exp = m["dec"].lower().partition(b"e")
    whole, _, frac = mant.partition(b".")
    digits = (whole + frac).lstrip(b"0")
    if not digits:
        return Fraction(0)
    if not -5000 < _exponent(exp) - len(frac) + len(digits) < 5000:
        return None
    # Through Decimal: int/str conversion of more than 4,300 digits is refused by Python.
    return Fraction(Decimal(m["dec"].decode()))


def ld_parse(raw: bytes) -> LongDouble:
    """A long double as Redis's string2ld reads one; NOT_FLOAT if it is none."""
    if not raw or len(raw) >= MAX_CHARS or raw[:1] in C_SPACE:
        raise err(NOT_FLOAT)
    m = C_FLOAT_RE.match(raw)
    if m is None or m["nan"] is not None:
        raise err(NOT_FLOAT)
    if m["inf"] is not None:
        return -math.inf if m["sign"] == b"-" else math.inf
    exact = _exact(m)
    v = ld_round(exact) if exact is not None else None
    if v is None or isinstance(v, float) or (v == 0 and exact != 0):
        raise err(NOT_FLOAT)  # strtold's ERANGE: overflow, or underflow to zero
    return -v if m["sign"] == b"-" else v


def ld_add(a: LongDouble, b: LongDouble) -> LongDouble:
    """a + b as the FPU computes it; inf or nan (a float) when it leaves the finite range."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return ld_round(a + b)
    # An infinity is involved; the finite operand may be beyond float's range: never convert it.
    infs = [x for x in (a, b) if isinstance(x, float)]
    return math.nan if len(infs) == 2 and infs[0] != infs[1] else infs[0]


def ld_format(v: Fraction) -> bytes:
    """C's "%.17Lf" with trailing zeros (and a bare '.') cut, and "-0" shown as "0"."""
    q = round(v * 10 ** 17)  # the exact value rounded half to even, as glibc's printf does
    digits = str(Decimal(abs(q))).encode().rjust(18, b"0")
    text = (digits[:-17] + b"." + digits[-17:]).rstrip(b"0").rstrip(b".")
    return b"-" + text if q < 0 else text
