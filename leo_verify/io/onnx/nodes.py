"""Graph-building helpers of the op tables (:mod:`.ops`, :mod:`.conv_ops`): an exact rational
division, and the residual ``Add`` of two network values.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ...graph import Add, Affine
from .values import _Lin, _need_dense, _need_rational, _need_value, _Pending


def _broadcast_select(t, x: _Pending, shape: tuple) -> np.ndarray:
    """Row selection broadcasting the pending ``x`` to ``shape``."""
    _need_value(shape, "the broadcast result")
    return np.broadcast_to(np.arange(x.size).reshape(x.shape), shape).ravel()


def _exact_division(t, var: _Pending, sel, d, shape) -> _Pending:
    """``x / d``: 1/d is not a float, so emit an Affine with exact rational weights."""
    _need_rational(len(sel), var.size, "this exact division")
    src = t.materialize(var)
    zero = Fraction(0)
    W = np.full((len(sel), var.size), zero, dtype=object)
    for i, (j, di) in enumerate(zip(sel, d)):
        W[i, j] = 1 / Fraction(float(di))
    b = np.full(len(sel), zero, dtype=object)
    name = t.graph.add(t.graph.fresh_name(t.label), Affine.from_rational(W, b), [src])
    return t.fresh(name, shape)


def _add_values(t, a: _Pending, b: _Pending, *, negate: bool) -> _Pending:
    """``a + b`` (or ``a - b``) of two network values: a residual Add node."""
    try:
        shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    except ValueError:
        raise t.error(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
    if a.shape != shape:
        a = t.apply(a, _Lin(shape, select=_broadcast_select(t, a, shape)))
    if b.shape != shape:
        b = t.apply(b, _Lin(shape, select=_broadcast_select(t, b, shape)))
    if negate:
        b = t.negate(b)
    na, nb = t.materialize(a), t.materialize(b)
    if na == nb:
        # x + x (networkx has no parallel edges): 2x, exact; x - x is not possible here
        # since -x is materialized as a distinct node.
        n = t.graph.size_of(na)
        _need_dense(n, n, "x + x")
        return t.apply(t.fresh(na, shape), _Lin(shape, matrix=2.0 * np.eye(n)))
    name = t.graph.add(t.graph.fresh_name(t.label), Add(a.size, 2), [na, nb])
    return t.fresh(name, shape)
