"""Interpreters: batched float64 (numpy) and exact (``fractions.Fraction``).

Both interpreters compute the *logits*: the output node's value before any
output head (:mod:`leo_verify.heads`); :func:`evaluate` applies the head on
request.

Each interpreter is one table ``op kind -> function(op, args)``; an op kind
missing from a table raises :class:`UnsupportedOp` naming the node.  The exact
interpreter uses :meth:`Affine.rational`, i.e. the exact rationals of the
stored floats (or the op's exact weights when a rewrite produced them).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import DataError, UnsupportedOp
from .graph import Graph
from .kernel.exact import Q
from .kernel.intervals import affine_q

__all__ = ["FLOAT_OPS", "EXACT_OPS", "evaluate", "evaluate_all", "evaluate_exact",
           "evaluate_exact_all", "as_points", "to_fractions"]


def _float_affine(op, args):
    return args[0] @ op.weight.T + op.bias


def _float_add(op, args):
    out = args[0]
    for a in args[1:]:
        out = out + a
    return out


FLOAT_OPS: Mapping[str, Callable] = {
    "affine": _float_affine,
    "relu": lambda op, args: np.maximum(args[0], 0.0),
    "add": _float_add,
    "output": lambda op, args: args[0],
}


def _integer_weights(op):
    """``[W | b] * D`` as an object array of Python ints and the common denominator ``D`` of
    ``op``'s exact weights (cached on the op: one Fraction-free product per evaluation)."""
    cached = op.__dict__.get("_int_weights")
    if cached is None:
        wq, bq = affine_q(op)  # the kernel's exact weights, converted once per op
        wn, bn, den = wq._align(bq)
        cached = (wn, bn, den, _sparse(op, wn))
        object.__setattr__(op, "_int_weights", cached)
    return cached


#: an exact affine product skips the zeros of a weight with at most this share of nonzeros
#: (an unrolled convolution has a few percent: each output reads one kernel window)
SPARSE_SHARE = 0.25


def _sparse(op, wn: np.ndarray):
    """(rows with a nonzero, first nonzero of each such row, columns, values) of the integer
    weights ``wn`` when they are sparse enough, else None."""
    if wn.size < 10_000:
        return None
    nz = op.weight != 0 if op.exact is None else (wn != 0)  # exact zeros: the exact weights decide
    if nz.sum() > SPARSE_SHARE * wn.size:
        return None
    rows, cols = np.nonzero(nz)
    present, starts = np.unique(rows, return_index=True)
    return present, starts, cols, wn[rows, cols]


def _exact_affine(op, args):
    # exact: W x + b = (Wn xn + bn dx) / (D dx) with integer numerators over common denominators
    wn, bn, den, sparse = _integer_weights(op)
    xq = Q.of(args[0])
    if sparse is not None and len(args[0]):
        present, starts, cols, vals = sparse
        prod = np.zeros(len(bn), dtype=object)
        if len(vals):
            prod[present] = np.add.reduceat(vals * xq.num[cols], starts)
        out = prod + bn * xq.den
    else:
        out = (wn.dot(xq.num) if len(args[0]) else np.zeros(len(bn), dtype=object)) + bn * xq.den
    total = den * xq.den
    return [Fraction(int(v), total) for v in out]


EXACT_OPS: Mapping[str, Callable] = {
    "affine": _exact_affine,
    "relu": lambda op, args: [v if v > 0 else Fraction(0) for v in args[0]],
    "add": lambda op, args: [sum(vs, Fraction(0)) for vs in zip(*args)],
    "output": lambda op, args: list(args[0]),
}


def as_points(graph: Graph, x, *, what: str = "input") -> np.ndarray:
    """``x`` as a float64 array of shape (batch, n); a single point may be 1-D."""
    arr = np.asarray(x, dtype=np.float64)
    n = graph.input_size
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise DataError(f"{what}: expected points with {n} values each, got shape {np.shape(x)}")
    return arr


def _run(graph: Graph, table: Mapping, x0, keep: bool):
    values = {}
    order = graph.nodes()
    remaining = {n: len(graph.users(n)) for n in order}
    for name in order:
        op = graph.op(name)
        if op.kind == "input":
            values[name] = x0
            continue
        fn = table.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no interpreter rule")
        args = graph.args(name)
        values[name] = fn(op, [values[a] for a in args])
        if not keep:  # free intermediate values as soon as their last user ran
            for a in args:
                remaining[a] -= 1
                if remaining[a] == 0:
                    del values[a]
    return values


def evaluate(graph: Graph, x, *, apply_head: bool = False) -> np.ndarray:
    """Outputs of ``graph`` at the points ``x`` (batch, n), float64.

    By default the *logits* (the output node's value, before any output head);
    ``apply_head=True`` applies the network's head (:mod:`leo_verify.heads`):
    softmax / log-softmax / sigmoid / tanh give (batch, m) floats, argmax a
    (batch, 1) int64 array.
    """
    pts = as_points(graph, x)
    logits = _run(graph, FLOAT_OPS, pts, keep=False)[graph.output_name]
    if apply_head:
        op = graph.op(graph.output_name)
        if op.head != "none":
            from .heads import apply_head as _apply
            return _apply(op.head, dict(op.head_attrs), logits)
    return logits


def evaluate_all(graph: Graph, x) -> dict:
    """Value of every node at the points ``x``: ``{node: (batch, size)}``."""
    return _run(graph, FLOAT_OPS, as_points(graph, x), keep=True)


def to_fractions(point: Sequence) -> list:
    """Exact rationals of a point's coordinates (floats taken exactly)."""
    return [v if isinstance(v, Fraction) else Fraction(float(v)) for v in point]


def _exact_point(graph: Graph, point):
    vec = to_fractions(np.asarray(point, dtype=object).ravel().tolist()
                       if not isinstance(point, list) else point)
    if len(vec) != graph.input_size:
        raise DataError(f"input: expected {graph.input_size} values, got {len(vec)}")
    return vec


def evaluate_exact(graph: Graph, point) -> list:
    """Exact output (a list of Fractions) at one point; floats are taken exactly."""
    return _run(graph, EXACT_OPS, _exact_point(graph, point), keep=False)[graph.output_name]


def evaluate_exact_all(graph: Graph, point) -> dict:
    """Exact value of every node at one point."""
    return _run(graph, EXACT_OPS, _exact_point(graph, point), keep=True)


def backprop(graph: Graph, vals: Mapping, seeds: np.ndarray, *, start: str | None = None) -> np.ndarray:
    """``d (seeds[b] . value(start)) / d x`` for each point ``b`` (float64, one backward pass).

    ``vals`` are the forward values of every node (:func:`evaluate_all`);
    ``start`` defaults to the output.  A ReLU passes the gradient where its
    input is > 0.  Returns zeros when ``start`` does not depend on the input.
    """
    from .errors import UnsupportedOp
    grads = {start or graph.output_name: seeds}
    for name in reversed(graph.nodes()):
        gr = grads.pop(name, None)
        if gr is None:
            continue
        op = graph.op(name)
        args = graph.args(name)
        if op.kind == "input":
            return gr
        if op.kind == "affine":
            contrib = [(args[0], gr @ op.weight)]
        elif op.kind == "relu":
            contrib = [(args[0], gr * (vals[args[0]] > 0.0))]
        elif op.kind in ("add", "output"):
            contrib = [(a, gr) for a in args]
        else:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no gradient rule")
        for a, c in contrib:
            grads[a] = grads[a] + c if a in grads else c
    return np.zeros((seeds.shape[0], graph.input_size))
