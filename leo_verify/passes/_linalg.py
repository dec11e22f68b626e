"""Matrix arithmetic for the passes, exact (Fractions) or float64.

Exact products scale each operand to integers by the common denominator of
its entries and multiply Python integers (``numpy`` object dot), which is an
order of magnitude faster than multiplying :class:`Fraction` objects; weights
read from floats have power-of-two denominators, so the scaling is cheap.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["mm", "mv", "zeros", "eye", "as_matrix", "independent_rows", "solve_left"]

_to_q = np.frompyfunc(lambda v: v if isinstance(v, Fraction) else Fraction(v), 1, 1)


def as_matrix(a, *, exact: bool) -> np.ndarray:
    """A writable copy of ``a``: object array of Fractions, or float64."""
    if exact:
        arr = np.array(a, dtype=object, copy=True)
        return _to_q(arr).astype(object) if arr.size else arr
    return np.array(a, dtype=np.float64, copy=True)


def zeros(shape, *, exact: bool) -> np.ndarray:
    if exact:
        out = np.empty(shape, dtype=object)
        out.fill(Fraction(0))
        return out
    return np.zeros(shape)


def eye(n: int, *, exact: bool) -> np.ndarray:
    out = zeros((n, n), exact=exact)
    for i in range(n):
        out[i, i] = Fraction(1) if exact else 1.0
    return out


def _scaled(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Integers ``n`` and ``d`` with ``a == n / d`` (entries Fractions)."""
    d = math.lcm(*(q.denominator for q in a.flat)) if a.size else 1
    ints = np.frompyfunc(lambda q: q.numerator * (d // q.denominator), 1, 1)(a)
    return np.asarray(ints, dtype=object).reshape(a.shape), d


def mm(a, b, *, exact: bool) -> np.ndarray:
    """``a @ b``; exact over the rationals when ``exact``."""
    if not exact:
        return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)
    a, b = as_matrix(a, exact=True), as_matrix(b, exact=True)
    if a.shape[1] == 0:  # an empty sum is zero, whatever numpy thinks
        return zeros((a.shape[0], b.shape[1]), exact=True)
    na, da = _scaled(a)
    nb, db = _scaled(b)
    prod = na.dot(nb)
    den = da * db
    out = np.frompyfunc(lambda n: Fraction(int(n), den), 1, 1)(prod)
    return np.asarray(out, dtype=object).reshape(a.shape[0], b.shape[1])


def mv(a, v, *, exact: bool) -> np.ndarray:
    """``a @ v`` for a vector ``v``."""
    v = np.asarray(v, dtype=object if exact else np.float64)
    return mm(a, v.reshape(-1, 1), exact=exact).reshape(-1)


def independent_rows(rows: np.ndarray, *, rtol: float = 1e-9) -> list[int]:
    """Indices (ascending) of a maximal set of linearly independent rows.

    Float64 Gram-Schmidt with pivoting: each step takes the row with the
    largest component orthogonal to the rows chosen so far, and stops when
    every remaining row's component is at most ``rtol * |row|``.  Pivoting
    keeps the coefficients that express the other rows in the chosen ones
    small (a tiny row is never the basis of a large one), which keeps merged
    float weights well conditioned.  This is only a *candidate* decision;
    callers verify dependencies exactly before relying on them.
    """
    rows = np.asarray(rows, dtype=np.float64)
    floor = rtol * np.linalg.norm(rows, axis=1)
    if 0 < rows.shape[0] <= rows.shape[1]:
        # common case, full row rank: each row is at least sigma_min away from
        # the span of the others, so no selection is needed
        if np.linalg.svd(rows, compute_uv=False)[-1] > floor.max():
            return list(range(rows.shape[0]))
    resid = rows.copy()
    chosen: list[int] = []
    free = np.ones(rows.shape[0], dtype=bool)
    for _ in range(min(rows.shape)):
        size = np.linalg.norm(resid, axis=1)
        open_ = free & (size > floor) & (size > 0)
        if not open_.any():
            break
        i = int(np.argmax(np.where(open_, size, -1.0)))
        q = resid[i] / size[i]
        for _ in range(2):  # project twice: once is not enough in floating point
            resid -= np.outer(resid @ q, q)
        free[i] = False
        chosen.append(i)
    return sorted(chosen)


def solve_left(m: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """Exact ``X`` with ``X @ m == rhs`` for square ``m`` (Fractions); None if singular.

    Gauss-Jordan elimination on ``m.T X.T = rhs.T``.
    """
    r = m.shape[0]
    a = as_matrix(m, exact=True).T.copy()
    x = as_matrix(rhs, exact=True).T.copy()
    for col in range(r):
        piv = next((i for i in range(col, r) if a[i, col] != 0), None)
        if piv is None:
            return None
        if piv != col:
            a[[col, piv]] = a[[piv, col]]
            x[[col, piv]] = x[[piv, col]]
        p = a[col, col]
        a[col] = a[col] / p
        x[col] = x[col] / p
        for i in range(r):
            if i != col and a[i, col] != 0:
                f = a[i, col]
                a[i] = a[i] - f * a[col]
                x[i] = x[i] - f * x[col]
    return x.T.copy()
