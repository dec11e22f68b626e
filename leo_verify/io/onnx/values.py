"""Symbolic values of the ONNX tracer (:class:`_Pending`, :class:`_Lin`), the size
limits it enforces while tracing, and exact float64 constant arithmetic.
"""
from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from .. import limits


_FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
_DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE)}


# ---------------------------------------------------------------------------
# symbolic values
# ---------------------------------------------------------------------------
class _Pending:
    """``flat(tensor) = W @ value(src) + b``, a tensor of shape ``shape``.

    ``perm`` is set when ``W`` is a partial permutation: ``perm[i]`` is the
    column of the single 1.0 in row i (-1 for a zero row), the columns being
    distinct.  ``bzero`` says ``b == 0``.  These flags make the exactness
    checks O(1) instead of scanning matrices.  When ``perm`` is set, the
    dense ``W`` is only built on demand (an identity on a 3072-pixel input
    would cost 75 MB).  The graph node holding the value, once materialized,
    is cached in a cell shared with reshaped copies (same ``W``, ``b``), so a
    tensor used twice becomes one node.
    """

    def __init__(self, src: str, n_src: int, W, b, shape, perm, bzero: bool, label: str):
        self.src, self.n_src, self._W, self.b = src, int(n_src), W, b
        self.shape, self.perm, self.bzero, self.label = tuple(shape), perm, bool(bzero), label
        self.cell = [None]
        self.layout = None  # the ConvLayout of W, b when they are a convolution (see conv_ops)

    @property
    def size(self) -> int:
        return int(self.b.shape[0])

    @property
    def W(self) -> np.ndarray:
        if self._W is None:
            _need_dense(self.size, self.n_src, "a permutation matrix")
            W = np.zeros((self.size, self.n_src))
            rows = np.nonzero(self.perm >= 0)[0]
            W[rows, self.perm[rows]] = 1.0
            self._W = W
        return self._W

    @property
    def node(self) -> str | None:
        return self.cell[0]

    def reshaped(self, shape: tuple) -> "_Pending":
        q = _Pending(self.src, self.n_src, self._W, self.b, shape, self.perm, self.bzero, self.label)
        q.cell = self.cell  # same flat value
        q.layout = self.layout
        return q

    @classmethod
    def identity(cls, node: str, size: int, shape: tuple, label: str) -> "_Pending":
        p = cls(node, size, None, np.zeros(size), shape, np.arange(size), True, label)
        p.cell[0] = node
        return p

    def is_identity(self) -> bool:
        n = self.n_src
        return (self.bzero and self.perm is not None and len(self.perm) == n
                and bool(np.all(self.perm == np.arange(n))))


@dataclass
class _Lin:
    """A linear op ``flat(out) = M @ flat(in) + c`` producing a tensor of ``shape``.

    ``M`` is either a row selection (``select[i]`` is the input entry row i
    copies) or a dense ``matrix``; ``offset`` is ``c`` (None means zero).
    """

    shape: tuple
    select: np.ndarray | None = None
    matrix: np.ndarray | None = None
    offset: np.ndarray | None = None


def _size(shape) -> int:
    # Python integers: a product of hostile dims must not wrap around in int64
    return math.prod(int(s) for s in shape)


class _Limit(Exception):
    """A size limit of :mod:`leo_verify.io.limits` would be exceeded; the tracer
    turns it into a :class:`ModelFormatError` naming the file and node."""


#: the running totals of the load in progress (see :class:`limits.Budget`)
_BUDGET: contextvars.ContextVar = contextvars.ContextVar("leo_verify_onnx_budget", default=None)


def _spend(kind: str, n: int, what: str) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        msg = budget.add(kind, n)
        if msg:
            raise _Limit(f"{what}: {msg}")


def _need_dense(rows: int, cols: int, what: str) -> None:
    """Refuse to build a ``rows x cols`` matrix beyond ``limits.MAX_ELEMENTS``
    (or beyond ``MAX_TOTAL_ELEMENTS`` for the whole model)."""
    n = int(rows) * int(cols)
    if n > limits.MAX_ELEMENTS:
        raise _Limit(f"{what} would need a {rows} x {cols} matrix ({limits.describe(n)} entries), "
                     f"more than the limit of {limits.MAX_ELEMENTS} (leo_verify.io.limits."
                     f"MAX_ELEMENTS)")
    _spend("elements", n, what)


def _need_rational(rows: int, cols: int, what: str) -> None:
    n = int(rows) * int(cols)
    if n > limits.MAX_RATIONAL_ENTRIES:
        raise _Limit(f"{what} would need a {rows} x {cols} matrix of exact rationals "
                     f"({limits.describe(n)} entries), more than the limit of "
                     f"{limits.MAX_RATIONAL_ENTRIES} (leo_verify.io.limits.MAX_RATIONAL_ENTRIES)")
    _spend("rational", n, what)


def _need_value(shape, what: str = "a network value") -> None:
    """Refuse a tensor computed by the network beyond ``limits.MAX_VALUE_SIZE`` values."""
    n = _size(shape)
    if n > limits.MAX_VALUE_SIZE:
        raise _Limit(f"{what} of shape {_shape_text(shape)} has {limits.describe(n)} values, more "
                     f"than the limit of {limits.MAX_VALUE_SIZE} (leo_verify.io.limits."
                     f"MAX_VALUE_SIZE)")


def _need_const(shape, what: str = "a constant") -> None:
    n = _size(shape)
    if n > limits.MAX_ELEMENTS:
        raise _Limit(f"{what} of shape {_shape_text(shape)} has {limits.describe(n)} elements, "
                     f"more than the limit of {limits.MAX_ELEMENTS} "
                     f"(leo_verify.io.limits.MAX_ELEMENTS)")


def _shape_text(shape, limit: int = 12) -> str:
    dims = [str(d) for d in shape]
    return "[" + ", ".join(dims if len(dims) <= limit else dims[:limit] + ["..."]) + "]"


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_const(v) -> bool:
    return isinstance(v, np.ndarray)


def _unique(idx: np.ndarray) -> bool:
    return len(np.unique(idx)) == len(idx)


# ---------------------------------------------------------------------------
# exact float64 constant arithmetic
# ---------------------------------------------------------------------------
def _split(a):
    # Veltkamp split: a = hi + lo with 26-bit halves, so hi*hi etc. are exact.
    c = 134217729.0 * a  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _exact_mul(a, b):
    """``a * b`` in float64, or None if some product rounds (Dekker's TwoProduct)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        p = a * b
        ah, al = _split(a)
        bh, bl = _split(b)
        err = (((ah * bh - p) + ah * bl) + al * bh) + al * bl
        # the error-free transform needs no overflow in the split and no
        # underflow in the product; outside that range be conservative.
        safe = (np.abs(a) < 2.0 ** 995) & (np.abs(b) < 2.0 ** 995) & (
            (np.abs(p) >= 2.0 ** -969) | (a == 0) | (b == 0))
    ok = np.isfinite(p) & safe & (err == 0)
    return p if bool(np.all(ok)) else None


def _exact_add(a, b):
    """``a + b`` in float64, or None if some sum rounds (Knuth's TwoSum)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
    return s if bool(np.all(np.isfinite(s) & (err == 0))) else None


def _is_pow2(d: np.ndarray) -> bool:
    m, _ = np.frexp(d)
    return bool(np.all(np.abs(m) == 0.5))
