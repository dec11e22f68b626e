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

Numbers stay short because coefficients are *block floating point*: a row
is ``m 2^e / g`` with int64 mantissas ``|m| <= 2^(PA-1)`` (``PA`` = 39), one
exponent per row and one odd denominator ``g`` (1 unless a weight is not
dyadic).  Every product is exact (:mod:`.blockfloat`: limbs through float64
BLAS with partial sums below ``2^53``); when a result needs more bits it is
rounded *down* to ``m' 2^e'`` and the dropped part ``0 <= D < 2^e' / g``
(entry-wise) is charged against the proven bounds ``[l_h, u_h]`` of the
node ``h`` it multiplies: ``D h <= 2^e'/g sum_j max(u_h, 0)`` for an upper
bound, ``D h >= 2^e'/g sum_j min(l_h, 0)`` for a lower one.  Constants are
exact sums rounded outwards onto the grid ``2^-GRID_BITS``.  Nothing else is
rounded; every step is an inequality valid for every input in the box, so
the result is a proven bound, whatever the rounding.

Many boxes (pieces) are bounded at once (:func:`crown_bounds_many`): the
intervals are matrices with one row per box, and the back-substitution
stacks the rows of every box and both directions.  Every step is row-wise, so
a box's bounds do not depend on the batch it was computed in -- the prover
and the re-checker may batch differently and still compute the same numbers.
Measured on ACAS Xu 1_1/prop_1 (1,822 pieces, 2 cores): object-integer
arithmetic one piece at a time spent 34 s (profiled) on the pieces' exact
bounds; block floating point one piece at a time 28.6 s; in rounds of 16, 9.8 s.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from .blockfloat import PA, floor_shift, limbs, matmul_floor, plan, rowdot_exact
from .exact import Q, floor_to_grid
from .intervals import GRID_BITS, _clip_phase, _round, node_bounds

__all__ = ["crown_bounds", "crown_bounds_many", "preactivations"]

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


def _relaxation(lo: Q, hi: Q) -> tuple[Q, Q, np.ndarray]:
    """``(s, t, alpha)`` with ``alpha v <= relu(v) <= s v + t`` on ``[lo, hi]``, exactly
    (entry-wise, any shape).

    ``lo``/``hi`` share the denominator ``2^GRID_BITS`` (pre-activation
    bounds are on that grid).  ``s`` is on the grid ``2^-SLOPE_BITS``; ``t = -s l``.
    Stable active (``l >= 0``): ``s = 1, t = 0, alpha = 1``; stable inactive (``u <= 0``):
    all 0; unstable: ``s = ceil(u / (u - l))`` on the grid, ``alpha = 1`` iff ``u >= -l``.
    """
    ln, hn = lo.num, hi.num
    act = ln >= 0
    unst = ~act & (hn > 0)
    # s = ceil(u / (u - l) on the grid); both share the denominator
    chord = -((-hn * _S) // np.where(unst, hn - ln, 1))
    s = np.where(act, _S, np.where(unst, chord, 0))
    t = np.where(unst, -s * ln, 0)  # over _S * lo.den
    alpha = np.where(act | (unst & (hn >= -ln)), 1, 0)
    return Q(s.astype(object), _S), Q(t.astype(object), _S * lo.den), alpha.astype(object)


class _Rows:
    """Coefficient rows ``m[i, j] 2^e[i] / g`` (``m`` int64, ``|m| <= 2^(PA-1)``; ``g`` odd)."""

    __slots__ = ("m", "e", "g")

    def __init__(self, m: np.ndarray, e: np.ndarray, g: int):
        self.m, self.e, self.g = m, e, int(g)


class _Memo:
    """Values derived from bound arrays, shared by the back-substitutions of one batch
    (keyed by the arrays' identity; the arrays are kept alive with the value)."""

    def __init__(self):
        self._d: dict = {}

    def get(self, arrays: tuple, tag, make):
        key = (tuple(id(a) for a in arrays), tag)
        hit = self._d.get(key)
        if hit is None or any(a is not b for a, b in zip(hit[0], arrays)):
            hit = (arrays, make())
            self._d[key] = hit
        return hit[1]


class _Back:
    """Coefficients of linear bounds over earlier nodes, plus a constant per row (numerators
    over ``2^GRID_BITS``).

    The rows are a stack: row ``i`` bounds unit ``unit[i]`` of the target on piece
    ``piece[i]`` (a row of the batch's bound matrices), from above if ``up[i]``, else
    from below.  Every step is row-wise, so a row's result does not depend on the others.
    """

    def __init__(self, graph: Graph, bounds: Mapping, target: str, piece: np.ndarray,
                 unit: np.ndarray, up: np.ndarray, memo: _Memo):
        m = graph.size_of(target)
        self.graph, self.bounds, self.memo = graph, bounds, memo
        self.piece, self.up = piece, np.asarray(up, dtype=bool)
        self.coef = {target: _Rows(np.eye(m, dtype=np.int64)[unit], np.zeros(len(unit), dtype=np.int64), 1)}
        self.const = np.zeros(len(unit), dtype=object) * 0

    def add(self, ints, e: np.ndarray, den: int, rows) -> None:
        """``const[rows[k]] += ints[k] 2^e[k] / den``, rounded outwards (up for an upper
        bound, down for a lower one) onto the grid (object-int arithmetic, row-wise)."""
        rows = np.asarray(rows)
        if not len(rows):
            return
        sh = np.asarray(e, dtype=np.int64) + GRID_BITS
        n = np.asarray(ints, dtype=object) << np.maximum(sh, 0).astype(object)
        d = np.full(len(rows), den, dtype=object) << np.maximum(-sh, 0).astype(object)
        self.const[rows] += np.where(self.up[rows], -((-n) // d), n // d)

    def add_dot(self, x: np.ndarray, e: np.ndarray, g: int, rows, node: str, *, high: bool,
                extra: tuple | None = None) -> None:
        """Add ``x[k] . v`` (``2^e[k] / g`` each) to ``const[rows[k]]``, exactly, where ``v`` is
        ``node``'s upper bound on the row's piece for upper rows if ``high`` (its lower bound
        otherwise), and the other bound for lower rows.  ``extra``: per-piece integers added
        to the dot product (over the same denominator), for the rows that take the upper
        bound and for those that take the lower one."""
        lo, hi = self.bounds[node]
        rows = np.asarray(rows)
        up = self.up[rows] == high
        _, bits = plan(x.shape[1])
        for which, (side, q) in enumerate(((up, hi), (~up, lo))):
            k = np.flatnonzero(side)
            if len(k):
                lv = self.memo.get((q.num,), bits, lambda: limbs(q.num, bits))
                pk = self.piece[rows[k]]
                ints = rowdot_exact(x[k], lv, pk, bits)
                self.add(ints if extra is None else ints + extra[which][pk], e[k], g * q.den, rows[k])

    def charge(self, node: str, rest: list, bits: int, e: np.ndarray, g: int) -> None:
        """Charge the part ``D = sum_k rest[k] 2^(bits k) 2^e / g >= 0`` (row-wise) dropped
        from ``node``'s coefficients: ``D h <= D u_h`` (upper rows), ``>= D l_h`` (lower rows).

        ``D`` is floored once more to ``d 2^s`` (``d`` short, charged exactly); the last
        ``0 <= D' < 2^s`` per entry costs ``2^s sum max(u_h, 0)`` (``sum min(l_h, 0)``).
        """
        rows = np.flatnonzero(np.any([np.any(r != 0, axis=1) for r in rest], axis=0))
        if not len(rows):
            return
        d, s, _, _ = floor_shift([r[rows] for r in rest], bits, PA)
        lo, hi = self.bounds[node]
        slack = self.memo.get((lo.num, hi.num), "slack", lambda: tuple(
            np.sum(q.num, axis=-1).reshape(-1) for q in (hi.pos(), lo.neg_part())))
        self.add_dot(d, e[rows] + s, g, rows, node, high=True, extra=slack)

    def interval(self, node: str, a: _Rows, rows) -> None:
        """Add ``a h`` bounded by ``h``'s interval to ``const[rows]`` (``a``: those rows only)."""
        self.add_dot(np.maximum(a.m, 0), a.e, a.g, rows, node, high=True)
        self.add_dot(np.minimum(a.m, 0), a.e, a.g, rows, node, high=False)

    def fit(self, node: str, a: _Rows) -> _Rows:
        """``a`` with mantissas short enough for exact products over ``node`` (:func:`plan`)."""
        pa, _ = plan(a.m.shape[1])
        if pa >= PA:
            return a
        m, s, rest, base = floor_shift([a.m], 0, pa)
        self.charge(node, rest, base, a.e, a.g)
        return _Rows(m, a.e + s, a.g)

    def push(self, node: str, a: _Rows) -> None:
        old = self.coef.get(node)
        self.coef[node] = a if old is None else self._sum(node, old, a)

    def _sum(self, node: str, a: _Rows, b: _Rows) -> _Rows:
        """``a + b`` (two paths into ``node``) on one exponent per row: the one that gives the
        larger of the two ``PA - 2`` bits (the other is shifted left exactly, or right with
        the dropped part charged; one ``2^62`` times smaller is bounded by its interval)."""
        g = a.g * b.g // math.gcd(a.g, b.g)
        a, b = self._scale(node, a, g // a.g), self._scale(node, b, g // b.g)

        def top(x):  # exponent just above the row's largest entry
            big = np.max(np.abs(x.m), axis=1) if x.m.shape[1] else np.zeros(len(x.e), dtype=np.int64)
            return x.e + np.frexp(big.astype(np.float64))[1].astype(np.int64) + 1
        e = np.maximum(top(a), top(b)) - (PA - 2)
        parts = []
        for x in (a, b):
            right = np.clip(e - x.e, 0, 62)[:, None]
            left = np.clip(x.e - e, 0, 62)[:, None]  # |m| 2^left < 2^(PA-2): no overflow
            m = (x.m << left) >> right
            rest = np.where(right > 0, x.m - (m << right), 0)
            far = np.flatnonzero(e - x.e > 62)
            if len(far):  # a row 2^62 below the other path: bound it by its interval instead
                self.interval(node, _Rows(x.m[far], x.e[far], g), far)
                m[far] = rest[far] = 0
            self.charge(node, [rest], 0, x.e, g)
            parts.append(m)
        return _Rows(parts[0] + parts[1], e, g)  # |sum| < 2^(PA-1)

    def _scale(self, node: str, a: _Rows, f: int) -> _Rows:
        """``a`` with denominator ``a.g f`` (the same values; exact up to the charged floor)."""
        if f == 1:
            return a
        chunks = []
        while f:
            chunks.append(f & 0xFFFF)
            f >>= 16
        m, s, rest, base = floor_shift([a.m * c for c in chunks], 16, PA)
        g = a.g * sum(c << (16 * k) for k, c in enumerate(chunks))
        self.charge(node, rest, base, a.e, g)
        return _Rows(m, a.e + s, g)


def _weights(op) -> tuple:
    """``(W num, b, kw, odd, limbs by width)``: ``W = num / (2^kw odd)`` (cached on the op)."""
    cached = op.__dict__.get("_crown_bf")
    if cached is None:
        from .intervals import affine_q
        w, b = affine_q(op)
        kw = (w.den & -w.den).bit_length() - 1
        cached = (w.num, b, kw, w.den >> kw, {})
        object.__setattr__(op, "_crown_bf", cached)
    return cached


def _back_affine(st: _Back, op, name, a: _Rows):
    wnum, b, kw, odd, by_bits = _weights(op)
    arg = st.graph.args(name)[0]
    pa, bits = plan(a.m.shape[1])
    if bits not in by_bits:  # the limbs of W and of b, once per op and width
        by_bits[bits] = (limbs(wnum, bits), limbs(b.num[None, :], bits))
    wl, bl = by_bits[bits]
    rows = np.arange(len(st.const))
    st.add(rowdot_exact(a.m, bl, np.zeros(len(rows), dtype=np.int64), bits), a.e, a.g * b.den, rows)  # a . b
    m, s, rest, base = matmul_floor(a.m, wl, bits, pa)
    e, g = a.e - kw, a.g * odd
    st.charge(arg, rest, base, e, g)
    st.push(arg, _Rows(m, e + s, g))


def _back_relu(st: _Back, op, name, a: _Rows):
    arg = st.graph.args(name)[0]
    lo, hi = st.bounds[arg]
    s, t, alpha = st.memo.get((lo.num, hi.num), "relax", lambda: _relaxation(_floor_grid(lo), _ceil_grid(hi)))
    rows = np.arange(len(st.const))
    piece = st.piece
    # the upper line for coefficients >= 0 (upper bound), for negative ones (lower bound)
    take = np.where(st.up[:, None], a.m >= 0, a.m < 0)
    snum = np.atleast_2d(s.num.astype(np.int64))[piece]  # <= 2^SLOPE_BITS
    al = np.atleast_2d(alpha.astype(np.int64))[piece] << (SLOPE_BITS - 16)
    # m s exactly as two products below 2^(PA-1+16) each: s = s_hi 2^16 + s_lo
    p0 = np.where(take, a.m * (snum & 0xFFFF), 0)
    p1 = np.where(take, a.m * (snum >> 16), a.m * al)
    m, sh, rest, base = floor_shift([p0, p1], 16, PA)
    st.charge(arg, rest, base, a.e - SLOPE_BITS, a.g)
    _, bits = plan(a.m.shape[1])
    tl = st.memo.get((t.num,), bits, lambda: limbs(np.atleast_2d(t.num), bits))
    st.add(rowdot_exact(np.where(take, a.m, 0), tl, piece, bits), a.e, a.g * t.den, rows)
    st.push(arg, _Rows(m, a.e - SLOPE_BITS + sh, a.g))


def _back_sum(st: _Back, op, name, a: _Rows):
    for arg in st.graph.args(name):
        st.push(arg, a)


#: op kind -> back-substitution step ``(state, op, name, coefficients of name) -> None``
BACK_OPS = {"affine": _back_affine, "relu": _back_relu, "add": _back_sum, "output": _back_sum}


def _backsub(graph: Graph, bounds: Mapping, target: str, piece: np.ndarray, unit: np.ndarray,
             memo: _Memo) -> tuple[Q, Q]:
    """Lower and upper bounds of ``target[piece[k], unit[k]]`` over each piece's box
    (:class:`Q` vectors on the grid), computed as one stack of rows."""
    r = len(unit)
    st = _Back(graph, bounds, target, np.concatenate([piece, piece]), np.concatenate([unit, unit]),
               np.arange(2 * r) >= r, memo)
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
        fn(st, op, name, st.fit(name, a))
    a = st.coef.get(inp)
    if a is not None:
        st.interval(inp, st.fit(inp, a), np.arange(len(st.const)))
    return Q(st.const[:r], 1 << GRID_BITS), Q(st.const[r:], 1 << GRID_BITS)


def crown_bounds_many(graph: Graph, boxes: list, *, lemmas: Mapping | None = None,
                      phase: Mapping | None = None, upto: str | None = None,
                      target_rows: list | None = None) -> dict:
    """:func:`crown_bounds` of several boxes at once: ``{node: (lo Q, hi Q)}`` with one row per
    box (``boxes``: ``(lo, hi)`` pairs; ``target_rows``: one set per box, or None).

    Every row is exactly what :func:`crown_bounds` gives for its box alone (intervals are
    exact; every back-substitution step is row-wise); batching only shares the numpy calls.
    """
    pre = preactivations(graph)
    inp = graph.input_name
    phase = dict(phase or {})
    box = ([list(b[0]) for b in boxes], [list(b[1]) for b in boxes])
    memo = _Memo()

    def refine(name, lo, hi, out):
        op = graph.op(name)
        if name not in pre or (op.kind == "affine" and graph.args(name)[0] == inp):
            return lo, hi
        # every unit that may be positive: unstable units for their
        # relaxation, active ones because the next layer's *interval* uses
        # their range (intervals over tight bounds can beat back-substitution);
        # an inactive unit outputs 0 whatever its bounds
        a, b, den = lo._align(hi)
        want = np.asarray(b > 0, dtype=bool)
        if name == upto and target_rows is not None:
            mask = np.zeros(want.shape, dtype=bool)
            for p, rows in enumerate(target_rows):
                mask[p, np.asarray(sorted(rows), dtype=np.int64)] = True
            want &= mask
        piece, unit = np.nonzero(want)
        if not len(unit):
            return lo, hi
        out[name] = (lo, hi)
        clo, chi = _round(*_backsub(graph, out, name, piece, unit, memo))
        lo, hi = _round(lo, hi)
        lnum, hnum = lo.num.copy(), hi.num.copy()
        lnum[piece, unit] = np.maximum(lnum[piece, unit], clo.num)
        hnum[piece, unit] = np.minimum(hnum[piece, unit], chi.num)
        return _clip_phase(graph, name, Q(lnum, lo.den), Q(hnum, hi.den), phase)

    return node_bounds(graph, box, lemmas=lemmas, phase=phase, upto=upto, refine=refine)


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
    relaxation, rounding and charges are per coefficient row), so the rows computed
    are the same whichever others are: a piece that proves a few claims of the deepest
    layer pays for those rows only.
    """
    many = crown_bounds_many(graph, [box], lemmas=lemmas, phase=phase, upto=upto,
                             target_rows=None if target_rows is None else [target_rows])
    return {n: (Q(lo.num[0], lo.den), Q(hi.num[0], hi.den)) for n, (lo, hi) in many.items()}
