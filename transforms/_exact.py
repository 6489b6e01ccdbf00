"""Exact, order-independent sums of float64 values.

Floating-point addition is not associative, so a mean computed over Spark partitions,
Beam bundles or one Python list would differ in the last bits. Instead every finite
double is split into an integer mantissa and an exponent; mantissas are summed exactly
(in 18-bit limbs, which numpy's float64 ``bincount`` adds without rounding) and the
result is a Python integer scaled by ``2**-SHIFT``. Sums merge by integer addition, so
any partitioning gives the same bits, and the final statistics are correctly rounded.
"""

from __future__ import annotations

import math

import numpy as np

SHIFT = 1126  # frexp exponent - 53 >= -1126 for every finite double, subnormals included
_LIMB = 18
_MASK = (1 << _LIMB) - 1
_SQUARE_CHUNK = 1 << 14  # 2**14 terms below 2**38 each keep a float64 bincount exact


def _limbs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split finite doubles into |mantissa| limbs a, b, c (18 bits each), sign and shift."""
    m, e = np.frexp(x)
    mi = np.ldexp(m, 53).astype(np.int64)
    sign = np.where(mi < 0, -1.0, 1.0)
    u = np.abs(mi)
    a = (u >> (2 * _LIMB)).astype(np.float64)
    b = ((u >> _LIMB) & _MASK).astype(np.float64)
    c = (u & _MASK).astype(np.float64)
    return a, b, c, sign, (e.astype(np.int64) + (SHIFT - 53))


def exact_sums(x: np.ndarray) -> tuple[int, int]:
    """Return (S1, S2) with sum(x) == S1 * 2**-SHIFT and sum(x*x) == S2 * 2**-(2*SHIFT), exactly.

    ``x`` must hold finite values only.
    """
    if x.size == 0:
        return 0, 0
    a, b, c, sign, sh = _limbs(x)
    base = int(sh.min())
    g = sh - base
    size = int(g.max()) + 1
    present = np.flatnonzero(np.bincount(g, minlength=size)).tolist()
    s1 = 0
    sums = [np.bincount(g, weights=w * sign, minlength=size) for w in (a, b, c)]
    for k in present:
        v = (int(sums[0][k]) << (2 * _LIMB)) + (int(sums[1][k]) << _LIMB) + int(sums[2][k])
        s1 += v << (base + k)
    s2 = 0
    for start in range(0, x.size, _SQUARE_CHUNK):
        sl = slice(start, start + _SQUARE_CHUNK)
        aa, bb, cc, gg = a[sl], b[sl], c[sl], g[sl]
        terms = (aa * aa, 2 * aa * bb, 2 * aa * cc + bb * bb, 2 * bb * cc, cc * cc)
        parts = [np.bincount(gg, weights=t, minlength=size) for t in terms]
        for k in np.flatnonzero(np.bincount(gg, minlength=size)).tolist():
            v = 0
            for i, p in enumerate(parts):
                v += int(p[k]) << ((4 - i) * _LIMB)
            s2 += v << (2 * (base + k))
    return s1, s2


def exact_mean(s1: int, n: int) -> float:
    """Correctly rounded mean from an exact scaled sum (Python int division rounds exactly)."""
    return s1 / (n << SHIFT)


def exact_variance(s1: int, s2: int, n: int, ddof: int) -> float | None:
    """Correctly rounded variance: (n*S2 - S1**2) / (n * (n - ddof) * 2**(2*SHIFT)).

    None when it overflows float64 (the artifact stores null; transforms see NaN).
    """
    try:
        return (n * s2 - s1 * s1) / ((n * (n - ddof)) << (2 * SHIFT))
    except OverflowError:
        return None


def exact_std(s1: int, s2: int, n: int, ddof: int) -> float | None:
    """Correctly rounded square root of the exact variance (not of its rounded value).

    An integer square root with over 110 bits plus a sticky bit leaves the final
    int / int division (correctly rounded in Python) the only rounding step.
    """
    num, den = n * s2 - s1 * s1, n * (n - ddof)
    k = max(0, (230 - (num.bit_length() - den.bit_length())) // 2 + 1)
    q, rem = divmod(num << (2 * k), den)
    r = math.isqrt(q)
    r = 2 * r + (1 if rem or r * r != q else 0)
    try:
        return r / (1 << (SHIFT + k + 1))
    except OverflowError:
        return None
