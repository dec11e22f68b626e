"""Exact CROWN / DeepPoly bounds: back-substitution in rational arithmetic.

The float analysis proves deep ACAS Xu claims by splitting the input box into
hundreds of pieces and bounding each with CROWN.  This module computes the
same kind of bound *exactly*, so a piece needs no solver and no multipliers:
the bound is a deterministic function of the network, the piece, and the
facts it is given, and a re-checker simply recomputes it.

For a pre-activation ``z`` (a node feeding a ReLU) the upper bound is built
backwards: start from ``z = I z``, replace each node by what feeds it --
an affine map exactly, a ReLU output ``y = relu(v)`` by a linear line valid
on ``v``'s proven interval ``[l, u]``:

* stable active (``l >= 0`` or phase active): ``y = v``;
* stable inactive (``u <= 0`` or phase inactive): ``y = 0``;
* unstable: ``alpha v <= y <= s (v - l)`` with ``alpha`` in {0, 1} (the
  CROWN choice: 1 when ``u >= -l``) and ``s >= u / (u - l)`` (the chord's
  slope rounded *up* to a grid; any such ``s`` gives a line above ``relu``
  at both ends of ``[l, u]``, hence on all of it, relu being convex);

a coefficient ``>= 0`` takes the upper line, a negative one the lower line
(the other way round for the lower bound).  At the input the linear function
is maximised over the box in closed form.

Numbers stay short because the coefficient matrix is rounded *down* to the
grid ``2^-GRID_BITS`` after every affine step, and the rounding error
``D = A - floor(A) >= 0`` is charged exactly: ``A h = floor(A) h + D h``
with ``D h <= D u_h`` (upper bound) or ``>= D l_h`` (lower bound), ``[l_h,
u_h]`` the proven bounds of ``h``.  Nothing else is rounded; every step is an
inequality valid for every input in the box, so the result is a proven
bound, whatever the rounding grid.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from .exact import Q, floor_to_grid, int_matmul, limbs_of
from .intervals import GRID_BITS, _clip_phase, _round, node_bounds

__all__ = ["crown_bounds", "preactivations"]

#: ReLU chord slopes are rounded up to multiples of 2^-SLOPE_BITS (short integers;
#: the line moves up by at most 2^-SLOPE_BITS (u - l))
SLOPE_BITS = 32
_S = 1 << SLOPE_BITS


def preactivations(graph: Graph) -> set:
    """Nodes that feed a ReLU."""
    return {graph.args(r)[0] for r, _ in graph.relus()}


def _floor_grid(q: Q) -> Q:
    return floor_to_grid(q, GRID_BITS)


def _ceil_grid(q: Q) -> Q:
    return -_floor_grid(-q)


def _scale_cols(a: Q, s: Q) -> Q:
    """``a * s`` with ``s`` a vector multiplying the columns of ``a``."""
    return Q(a.num * s.num[None, :], a.den * s.den)


def _relaxation(lo: Q, hi: Q) -> tuple[Q, Q, np.ndarray]:
    """``(s, t, alpha)`` with ``alpha v <= relu(v) <= s v + t`` on ``[lo, hi]``, exactly.

    ``lo``/``hi`` share the denominator ``2^GRID_BITS`` (pre-activation
    bounds are on that grid).  ``s`` is on the grid ``2^-SLOPE_BITS``; ``t = -s l``.
    """
    ln, hn = lo.num, hi.num
    n = len(ln)
    s = np.zeros(n, dtype=object) * 0
    t = np.zeros(n, dtype=object) * 0
    alpha = np.zeros(n, dtype=object) * 0
    for i in range(n):
        l, u = int(ln[i]), int(hn[i])
        if l >= 0:
            s[i], alpha[i] = _S, 1
        elif u > 0:
            # s = ceil(u / (u - l) on the grid); both share the denominator
            s[i] = -((-u * _S) // (u - l))
            t[i] = -s[i] * l  # over _S * lo.den
            alpha[i] = 1 if u >= -l else 0
    return Q(s, _S), Q(t, _S * lo.den), alpha


class _Back:
    """Coefficients of a linear bound over earlier nodes, plus a constant."""

    def __init__(self, graph: Graph, bounds: Mapping, target: str, rows: np.ndarray, upper: bool):
        m = graph.size_of(target)
        self.graph, self.bounds, self.upper = graph, bounds, upper
        self.coef = {target: Q(np.eye(m, dtype=np.int64)[rows].astype(object), 1)}
        self.const = Q(np.zeros(len(rows), dtype=object) * 0, 1)

    def push(self, node: str, a: Q) -> None:
        self.coef[node] = self.coef[node] + a if node in self.coef else a

    def add_const(self, c: Q) -> None:
        c = self.const + c
        # keep the constant short: round it the way that keeps the bound valid
        self.const = _ceil_grid(c) if self.upper else _floor_grid(c)

    def charge_rounding(self, node: str, a: Q) -> Q:
        """``floor(a)`` on the grid; the exact error ``D h`` goes into the constant."""
        fa = _floor_grid(a)
        d = a - fa  # >= 0 entry-wise
        lo, hi = self.bounds[node]
        self.add_const(d @ (hi if self.upper else lo))
        return fa


def _weights(op) -> tuple[Q, Q]:
    """``(W, b)`` as :class:`Q` (cached on the op)."""
    cached = op.__dict__.get("_crown_q")
    if cached is None:
        from .intervals import weights_q
        wp, wn, b = weights_q(op)
        w = wp + wn
        cached = (w, b, limbs_of(w.num, w.shape[0]))
        object.__setattr__(op, "_crown_q", cached)
    return cached


def _back_affine(st: _Back, op, name, a):
    w, b, (bits, limbs) = _weights(op)
    arg = st.graph.args(name)[0]
    st.add_const(a @ b)
    # columns of units whose coefficient is 0 everywhere (inactive units) cost nothing
    cols = np.flatnonzero(np.any(a.num != 0, axis=0))
    if len(cols):
        prod = Q(int_matmul(a.num[:, cols], w.num[cols, :], b_limbs=(bits, [x[cols] for x in limbs])),
                 a.den * w.den)
    else:
        prod = Q(np.zeros((a.shape[0], w.shape[1]), dtype=object) * 0, a.den * w.den)
    st.push(arg, st.charge_rounding(arg, prod))


def _back_relu(st: _Back, op, name, a):
    arg = st.graph.args(name)[0]
    lo, hi = st.bounds[arg]
    s, t, alpha = _relaxation(_floor_grid(lo), _ceil_grid(hi))
    pos = a.num >= 0
    # the upper line for coefficients >= 0 (upper bound), for negative ones (lower bound)
    take_s = pos if st.upper else ~pos
    sa = _scale_cols(a, s)
    al = a.num * alpha[None, :] * s.den
    new = Q(np.where(take_s, sa.num, al), sa.den)
    picked = Q(np.where(take_s, a.num, 0), a.den)
    st.add_const(picked @ t)
    # back onto the grid before the next (costly) product with a weight matrix
    st.push(arg, st.charge_rounding(arg, new))


def _back_sum(st: _Back, op, name, a):
    for arg in st.graph.args(name):
        st.push(arg, a)


#: op kind -> back-substitution step ``(state, op, name, coefficients of name) -> None``
BACK_OPS = {"affine": _back_affine, "relu": _back_relu, "add": _back_sum, "output": _back_sum}


def _backsub(graph: Graph, bounds: Mapping, target: str, rows: np.ndarray, upper: bool) -> Q:
    """The upper (lower) bound of ``target[rows]`` over the box: a :class:`Q` vector."""
    st = _Back(graph, bounds, target, rows, upper)
    inp = graph.input_name
    for name in reversed(graph.nodes()):
        a = st.coef.pop(name, None)
        if a is None or name == inp:
            if a is not None:
                st.coef[name] = a
            continue
        op = graph.op(name)
        fn = BACK_OPS.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no exact back-substitution rule")
        fn(st, op, name, a)
    a = st.coef.get(inp)
    lo, hi = bounds[inp]
    if a is None:
        return st.const
    if upper:
        return a.pos() @ hi + a.neg_part() @ lo + st.const
    return a.pos() @ lo + a.neg_part() @ hi + st.const


def crown_bounds(graph: Graph, box: tuple, *, lemmas: Mapping | None = None,
                 phase: Mapping | None = None, upto: str | None = None,
                 target_rows=None) -> dict:
    """Exact bounds ``{node: (lo Q, hi Q)}``: intervals, tightened by exact CROWN at pre-activations.

    Same contract as :func:`~.intervals.node_bounds` (``lemmas`` and
    ``phase`` are proven facts and are intersected in; a bound may come out
    empty only if they are not); every pre-activation that is not an affine
    map of the input itself also gets the back-substitution bound.

    ``target_rows``: only these rows of ``upto`` get the back-substitution bound (the
    others keep their interval bound).  Each row's bound is computed on its own (the
    relaxation, grid rounding and charges are per coefficient row), so the rows computed
    are the same whichever others are: a piece that proves a few claims of the deepest
    layer pays for those rows only.
    """
    pre = preactivations(graph)
    inp = graph.input_name
    phase = dict(phase or {})

    def refine(name, lo, hi, out):
        op = graph.op(name)
        if name not in pre or (op.kind == "affine" and graph.args(name)[0] == inp):
            return lo, hi
        # every unit that may be positive: unstable units for their
        # relaxation, active ones because the next layer's *interval* uses
        # their range (intervals over tight bounds can beat back-substitution);
        # an inactive unit outputs 0 whatever its bounds
        a, b, den = lo._align(hi)
        rows = np.flatnonzero(b > 0)
        if name == upto and target_rows is not None:
            rows = np.intersect1d(rows, np.asarray(sorted(target_rows), dtype=np.int64))
        if not rows.size:
            return lo, hi
        out[name] = (lo, hi)
        clo, chi = _round(_backsub(graph, out, name, rows, upper=False),
                          _backsub(graph, out, name, rows, upper=True))
        lo, hi = _round(lo, hi)
        lnum, hnum = lo.num.copy(), hi.num.copy()
        lnum[rows] = np.maximum(lnum[rows], clo.num)
        hnum[rows] = np.minimum(hnum[rows], chi.num)
        return _clip_phase(graph, name, Q(lnum, lo.den), Q(hnum, hi.den), phase)

    return node_bounds(graph, box, lemmas=lemmas, phase=phase, upto=upto, refine=refine)
