"""I32F32 fixed point exactly as the chain computes it (spec §1, §5), scalar and vectorised.

A value is its raw two's-complement integer: ``raw = value · 2**32``.

* multiply: exact product, arithmetic shift right (floor toward −∞), saturating;
* divide: ``(a << 32) / b`` truncating toward zero; the epoch's *safe* division returns 0 on
  division by zero **or** overflow, the *saturating* one clamps;
* conversion to an integer floors, then clamps.

The vector functions work on int64 numpy arrays without Python integers: a product of two raw
values can need 128 bits, so it is assembled from 32-bit limbs; a quotient is estimated in float64
and corrected exactly with wrapping 64-bit arithmetic (the remainder is small, so its value mod 2**64
is its true value).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FRAC_BITS",
    "ONE",
    "Q_MAX",
    "Q_MIN",
    "exp_q",
    "from_int",
    "q_div",
    "q_div_sat",
    "q_mul",
    "ratio_u16",
    "to_u16",
    "v_div",
    "v_div_signed",
    "v_exp",
    "v_mul",
    "v_mul_signed",
    "v_to_u16",
]

FRAC_BITS = 32
ONE = 1 << FRAC_BITS
Q_MAX = (1 << 63) - 1
Q_MIN = -(1 << 63)
U16_MAX = 65535
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
# ⌊e · 2^32⌋: the chain special-cases exp(1) (spec §5.1).
_EXP_ONE_RAW = 11674931554


def _saturate(x: int) -> int:
    return Q_MAX if x > Q_MAX else Q_MIN if x < Q_MIN else x


def from_int(x: int) -> int:
    return _saturate(x << FRAC_BITS)


def q_mul(a: int, b: int) -> int:
    """Floor of the exact product (Python's ``>>`` floors negatives), saturating."""
    return _saturate((a * b) >> FRAC_BITS)


def _q_div_exact(a: int, b: int) -> int:
    quotient = abs(a << FRAC_BITS) // abs(b)
    return -quotient if (a < 0) != (b < 0) else quotient


def q_div(a: int, b: int) -> int:
    """Safe division: 0 on division by zero or overflow, else truncated toward zero."""
    if b == 0:
        return 0
    quotient = _q_div_exact(a, b)
    return quotient if Q_MIN <= quotient <= Q_MAX else 0


def q_div_sat(a: int, b: int) -> int:
    """Saturating division (liquid-alpha sigmoid)."""
    if b == 0:
        return Q_MAX if a >= 0 else Q_MIN
    return _saturate(_q_div_exact(a, b))


def ratio_u16(value: int) -> int:
    """Decode a u16 proportion: Q(u) / Q(65535), truncating (kappa, bonds penalty, alphas, bonds)."""
    return q_div(from_int(value), from_int(U16_MAX))


def to_u16(raw: int) -> int:
    """``floor(x · 65535)`` clamped to u16."""
    return min(U16_MAX, max(0, (raw * U16_MAX) >> FRAC_BITS))


def exp_q(x: int) -> int:
    """exp as the chain computes it: clamp to [−20, 20], 30-term Taylor series in Q (spec §5.1)."""
    x = max(-20 * ONE, min(20 * ONE, x))
    if x == 0:
        return ONE
    if x < 0:
        return q_div(ONE, exp_q(-x))
    if x == ONE:
        return _EXP_ONE_RAW
    result, term = ONE + x, x
    for i in range(2, 32):
        term = q_mul(term, x)
        term = q_div(term, from_int(i))
        result += term
    return _saturate(result)


# ---------------------------------------------------------------------------------------------
# Vectorised (int64 arrays)


def v_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Floor(a·b / 2^32) for non-negative int64 arrays (results below 2^63)."""
    au, bu = np.asarray(a).astype(np.uint64), np.asarray(b).astype(np.uint64)
    a1, a0 = au >> _SHIFT32, au & _MASK32
    b1, b0 = bu >> _SHIFT32, bu & _MASK32
    out = ((a1 * b1) << _SHIFT32) + a1 * b0 + a0 * b1 + ((a0 * b0) >> _SHIFT32)
    return out.astype(np.int64)


def v_mul_signed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Floor toward −∞ of the exact product, for int64 arrays of any sign."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    negative = (a < 0) != (b < 0)
    au, bu = np.abs(a).astype(np.uint64), np.abs(b).astype(np.uint64)
    a1, a0 = au >> _SHIFT32, au & _MASK32
    b1, b0 = bu >> _SHIFT32, bu & _MASK32
    low = a0 * b0
    magnitude = ((a1 * b1) << _SHIFT32) + a1 * b0 + a0 * b1 + (low >> _SHIFT32)
    # The product's low 32 bits are zero iff the low limbs' product's low 32 bits are: the cross
    # terms are multiples of 2^32.
    inexact = (low & _MASK32) != 0
    magnitude = magnitude.astype(np.int64)
    return np.where(negative, -magnitude - inexact.astype(np.int64), magnitude)


def _v_floor_div_shifted(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(⌊(a << 32) / b⌋, overflow) for a ≥ 0, b > 0 (int64 arrays, b already non-zero)."""
    estimate = np.floor(a.astype(np.float64) * float(ONE) / b.astype(np.float64))
    overflow = estimate >= float(1 << 63)
    q0 = np.where(overflow, 0.0, estimate).astype(np.uint64)
    au, bu = a.astype(np.uint64), b.astype(np.uint64)
    remainder = ((au << _SHIFT32) - q0 * bu).view(np.int64)
    quotient = q0.view(np.int64) + np.floor_divide(remainder, b)
    return quotient, overflow


def v_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Safe division for non-negative int64 arrays: 0 where b == 0 or the quotient overflows."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = np.broadcast_arrays(a, b)
    zero = b == 0
    quotient, overflow = _v_floor_div_shifted(a, np.where(zero, 1, b))
    return np.where(zero | overflow, 0, quotient)


def v_div_signed(a: np.ndarray, b: np.ndarray, *, saturate: bool = False) -> np.ndarray:
    """Division truncating toward zero for int64 arrays of any sign (safe or saturating)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    a, b = np.broadcast_arrays(a, b)
    zero = b == 0
    negative = (a < 0) != (b < 0)
    magnitude, overflow = _v_floor_div_shifted(np.abs(a), np.where(zero, 1, np.abs(b)))
    out = np.where(negative, -magnitude, magnitude)
    if saturate:
        limit = np.where(negative, Q_MIN, Q_MAX)
        return np.where(zero | overflow, limit, out)
    return np.where(zero | overflow, 0, out)


def v_to_u16(raw: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(raw, dtype=np.int64) * U16_MAX) >> FRAC_BITS, 0, U16_MAX)


def v_exp(x: np.ndarray) -> np.ndarray:
    """Vectorised ``exp_q``: identical raw results, element by element."""
    x = np.clip(np.asarray(x, dtype=np.int64), -20 * ONE, 20 * ONE)
    magnitude = np.abs(x)
    result = ONE + magnitude
    term = magnitude.copy()
    for i in range(2, 32):
        term = v_mul(term, magnitude)
        # Q division by the integer i: ⌊(t·2^32)/(i·2^32)⌋ == ⌊t/i⌋ for t ≥ 0, and it cannot
        # overflow, so a plain integer division is the chain's result without the general path.
        term //= i
        result = result + term
    result = np.where(magnitude == ONE, _EXP_ONE_RAW, result)
    inverse = v_div(np.full_like(result, ONE), result)
    return np.where(x == 0, ONE, np.where(x < 0, inverse, result))
