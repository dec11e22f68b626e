"""Exact integer kernels for block-floating coefficient rows (used by :mod:`.crown`).

A coefficient row is ``m[j] 2^e / g`` with ``m`` an int64 vector, ``e`` an
integer per row and ``g`` an odd integer per matrix.  Products are computed
*exactly*: the wide operand (weights, bounds) is cut into limbs of ``L`` bits
and multiplied by ``m`` with float64 BLAS, where every partial sum is an
integer below ``2^53`` (``|m| <= 2^(pa-1)``, ``|limb| < 2^L``, inner
dimension ``n <= 2^bitlen(n)``, and ``pa - 1 + L + bitlen(n) <= 52``), so the
float result *is* the integer, in any summation order, with or without FMA.
The dot products cut wider mantissas into chunks that satisfy the same bound
(:func:`_chunks`); the matrix product refuses them.
Limb products are recombined either into Python ints (vectors) or, for
matrices, straight into a rounded-down int64 mantissa (:func:`floor_shift`):
the result is rounded *down*, never to nearest, and the caller charges the
dropped part ``0 <= D < 2^s`` against proven bounds.

Nothing here rounds silently: every function returns the exact value, or a
floor together with the shift it dropped.
"""
from __future__ import annotations

import numpy as np

from .exact import _limbs

__all__ = ["PA", "plan", "limbs", "floor_shift", "rowdot_exact", "matmul_floor"]

#: coefficient mantissas are kept to ``|m| <= 2^(PA-1)`` (relative precision ~2^-38; with
#: 36 bits the ACAS Xu bounds were up to 7e-5 looser than exact rationals, with 39 6e-6)
PA = 39
#: limbs are at least this wide (fewer BLAS calls); wide inner dimensions get shorter mantissas
MIN_LIMB = 8


def plan(n: int) -> tuple[int, int]:
    """``(pa, L)`` for an exact float64 product with inner dimension ``n``.

    ``pa - 1 + L + bitlen(n) <= 52``: a partial sum of ``n`` products of an
    ``|m| <= 2^(pa-1)`` by a limb ``< 2^L`` stays below ``2^52``.
    """
    bits = max(1, int(n).bit_length())
    pa = min(PA, 53 - bits - MIN_LIMB)
    if pa < 16:
        raise ValueError(f"inner dimension {n} too large for exact limb products")
    return pa, 53 - pa - bits


def limbs(x: np.ndarray, bits: int) -> np.ndarray:
    """Object ints ``x`` (any shape) as float64 limbs stacked on a new last axis:
    ``x = sum_k out[..., k] 2^(bits k)`` exactly; each limb below ``2^bits`` in magnitude."""
    parts = _limbs(np.asarray(x, dtype=object), bits)
    return np.stack(parts, axis=-1)


def _carries(parts: list, bits: int) -> list:
    """``C_k = parts[k] + floor(C_(k-1) / 2^bits)``, i.e. ``floor(sum_(j<=k) parts[j] 2^(bits j) /
    2^(bits k))``: ``C_(K-1)`` is the signed top word, ``C_k mod 2^bits`` (``k < K-1``) the
    nonnegative digits below it (int64; ``|C_k| < 2^63`` when every ``|part| < 2^62``)."""
    carry = [parts[0]]
    for p in parts[1:]:
        carry.append(p + (carry[-1] >> bits))
    return carry


def floor_shift(parts: list, bits: int, pa: int) -> tuple[np.ndarray, np.ndarray, list, int]:
    """``(m, s, rest, base)``: ``m = floor(V / 2^s)`` row-wise with ``|m| <= 2^(pa-1)``, one
    shift ``s >= 0`` per row, and the dropped part ``V - m 2^s = sum_k rest[k] 2^(base k)``
    with every ``rest[k] >= 0`` (so it can be bounded without cancellation).

    ``V = sum_k parts[k] 2^(bits k)`` (int64 arrays ``(r, n)``, each ``|.| < 2^62``) is the
    exact value.  The carries ``C_k = parts[k] + floor(C_(k-1) / 2^bits)`` are
    ``floor(sum_(j<=k) parts[j] 2^(bits j) / 2^(bits k))``, so ``V = H 2^B + sum_(k<K-1)
    (C_k mod 2^bits) 2^(bits k)`` with ``H = C_(K-1)``, ``B = bits (K-1)`` and nonnegative
    low digits.  ``s`` comes from a float64 upper bound of ``max_j |V|`` (evaluated with its
    rounding error added), so ``|V| / 2^s < 2^(pa-1)``, and at most ~4 bits more than needed.
    """
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    carry = _carries(parts, bits)
    last = len(parts) - 1
    mask = (1 << bits) - 1
    big = bits * last
    if big > 62:
        return _floor_shift_wide(parts, carry, bits, pa)
    h = carry[last]
    low = np.zeros(h.shape, dtype=np.int64)
    for k in range(last):
        low += (carry[k] & mask) << (bits * k)  # < 2^big <= 2^62
    r = h.shape[0]
    # |fl(H 2^B + low)| is within 2^-52 (|V| + 2^B) of |V|: with 2^(B-51) added it is an
    # upper bound of |V| (1 - 2^-52), so top < 2^e gives |V| < 2^(e+1)
    est = np.abs(h.astype(np.float64) * float(2.0 ** big) + low.astype(np.float64)) + float(2.0 ** (big - 51))
    top = np.max(est, axis=1) if h.shape[1] else np.zeros(r)
    _, e = np.frexp(top)
    s = np.maximum(0, e.astype(np.int64) + 2 - pa)
    coarse = (s >= big)[:, None]
    up = np.clip(s - big, 0, 63)[:, None]    # rows with s >= B: floor(V / 2^s) = floor(H / 2^(s-B))
    down = np.clip(big - s, 0, 62)[:, None]  # rows with s < B: H 2^(B-s) + floor(low / 2^s)
    sl = np.minimum(s, 62)[:, None]
    m = np.where(coarse, h >> up, (h << down) + (low >> sl))
    rest_hi = np.where(coarse, h - (m << up), 0)
    rest_lo = np.where(coarse, low, low & ((np.int64(1) << sl) - 1))
    return m, s, [rest_lo, rest_hi], big


def _floor_shift_wide(parts: list, carry: list, bits: int, pa: int) -> tuple:
    """:func:`floor_shift` when the low digits need more than 62 bits: row by row shift
    class ``q = floor(s / bits)``, ``floor(V / 2^(bits q))`` being ``C_q`` plus the higher
    parts, added in wrapping 64-bit arithmetic (exact: that value is below ``2^(pa+bits)
    <= 2^62`` in magnitude, which callers guarantee)."""
    if pa + bits > 62:
        raise ValueError(f"floor_shift: {pa}-bit mantissas with {bits}-bit limbs overflow int64")
    r = parts[0].shape[0]
    est = np.zeros(parts[0].shape, dtype=np.float64)
    for k, p in enumerate(parts):
        est += np.abs(p.astype(np.float64)) * float(2.0 ** (bits * k))
    top = np.max(est, axis=1) if est.shape[1] else np.zeros(r)
    _, e = np.frexp(top)  # a sum of nonnegative terms: |V| < 2^e (1 + 2^-45) < 2^(e+1)
    s = np.maximum(0, e.astype(np.int64) + 2 - pa)
    last = len(parts) - 1
    mask = (1 << bits) - 1
    q = np.minimum(s // bits, last)
    m = np.empty(parts[0].shape, dtype=np.int64)
    rest = [np.zeros(parts[0].shape, dtype=np.int64) for _ in parts]
    for qv in np.unique(q):
        qv = int(qv)
        rows = np.flatnonzero(q == qv)
        v = carry[qv][rows].view(np.uint64).copy()
        for j in range(qv + 1, len(parts)):
            v += parts[j][rows].view(np.uint64) * np.uint64((1 << (bits * (j - qv))) & (2 ** 64 - 1))
        v = v.view(np.int64)
        sh = (s[rows] - bits * qv)[:, None]
        m[rows] = v >> sh
        rest[qv][rows] = v - (m[rows] << sh)
        for k in range(qv):
            rest[k][rows] = carry[k][rows] & mask
    return m, s, rest, bits


def _chunks(m: np.ndarray, n: int, bits: int) -> list:
    """``m`` (int64) as ``[(c, shift)]`` with ``m = sum c 2^shift`` and every ``|c| < 2^A``,
    ``A = 53 - bits - bitlen(n)``: a float64 product of ``c`` with ``bits``-bit limbs over an
    inner dimension ``n`` then has every partial sum below ``2^53`` (exact in any order).
    Low chunks are nonnegative (``&``), the top one carries the sign (``>>`` floors)."""
    width = 53 - bits - max(1, int(n).bit_length())
    if width < 2:
        raise ValueError(f"no exact float64 product with {bits}-bit limbs over {n} terms")
    out, shift = [], 0
    while True:
        top = int(np.max(np.abs(m))) if m.size else 0
        if top < 1 << (width - 1):
            out.append((m, shift))
            return out
        out.append((m & ((1 << (width - 1)) - 1), shift))
        m = m >> (width - 1)
        shift += width - 1


def rowdot_exact(m: np.ndarray, v_limbs: np.ndarray, which: np.ndarray, bits: int) -> np.ndarray:
    """Row-wise exact dot products ``sum_j m[i, j] v[which[i], j]``: ``m`` int64 ``(r, n)``,
    ``v`` given as its float64 limbs ``(p, n, K)`` of ``bits`` bits (:func:`limbs`); returns
    object ints ``(r,)``.  One BLAS product of each :func:`_chunks` part of ``m`` against
    every ``v`` (each partial sum an integer below ``2^53``: exact in any order), then each
    row keeps its own."""
    r = m.shape[0]
    if not m.size:
        return np.zeros(r, dtype=object) * 0
    p, n, k = v_limbs.shape
    flat = np.ascontiguousarray(v_limbs.transpose(1, 0, 2)).reshape(n, p * k)
    out = np.zeros(r, dtype=object) * 0
    for c, shift in _chunks(m, n, bits):
        y = (c.astype(np.float64) @ flat).reshape(r, p, k)[np.arange(r), which].astype(np.int64)
        out = out + (_to_ints([y[:, j] for j in range(k)], bits) << shift)
    return out


def _to_ints(parts: list, bits: int) -> np.ndarray:
    """``sum_k parts[k] 2^(bits k)`` as object ints (int64 ``parts``, ``|.| < 2^62``): carried
    into a signed top word and nonnegative ``bits``-bit digits, packed into int64 words of
    at most 62 bits, so only a few object operations remain."""
    carry = _carries(parts, bits)
    mask = (1 << bits) - 1
    per = max(1, 62 // bits)  # digits per word
    out = carry[-1].astype(object)
    for top in range(len(parts) - 2, -1, -per):
        ks = list(range(top, max(-1, top - per), -1))  # digits top, top-1, ... of this word
        word = np.zeros(carry[0].shape, dtype=np.int64)
        for k in ks:
            word = (word << bits) + (carry[k] & mask)
        out = (out << (bits * len(ks))) + word.astype(object)
    return out


def matmul_floor(m: np.ndarray, w_limbs: np.ndarray, bits: int, pa: int) -> tuple:
    """:func:`floor_shift` of ``m @ W``, where ``W = sum_k w_limbs[..., k] 2^(bits k)``
    (float64 limbs, ``(n, c, K)``) and ``|m| <= 2^(pa-1)`` with ``(pa, bits) = plan(n)``."""
    n, c, kk = w_limbs.shape
    if m.size and int(np.max(np.abs(m))) > 1 << (pa - 1) or pa - 1 + bits + max(1, n.bit_length()) > 53:
        raise ValueError("matmul_floor: mantissas too wide for an exact float64 product")
    flat = w_limbs.reshape(n, c * kk)
    p = (m.astype(np.float64) @ flat).astype(np.int64).reshape(m.shape[0], c, kk)
    return floor_shift([p[:, :, k] for k in range(kk)], bits, pa)
