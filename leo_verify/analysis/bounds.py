"""Sound bounds on every node's value over a box: interval and symbolic.

Both analyses run in float64 and carry an *outward* rounding margin, so the
returned intervals contain the exact real values of the network (with the
exact rationals of its stored weights) for every input in the box.

Rounding model (Higham, "Accuracy and Stability of Numerical Algorithms",
Thm 3.1 / 3.5): a computed dot product of length k, in *any* summation order
(BLAS blocking, FMA), satisfies ``|fl(a.b) - a.b| <= gamma_k |a|.|b|`` with
``gamma_k = k u / (1 - k u)``, ``u = 2^-53``.  We use the larger ``2 (k + 2) u``
and add an absolute term for underflow (each product can lose at most half
the smallest subnormal).

Symbolic bounds are CROWN / DeepPoly back-substitution: a target node's value
is bounded by linear functions of earlier nodes, pushing coefficient matrices
backwards through affine maps and through the linear relaxations of the
ReLUs, down to the input box.  Every float product along the way adds its
error bound, evaluated with sound interval magnitudes of the node it
multiplies, to a running error term; so the final bound is rigorous even
though the coefficients themselves are only approximately those of an ideal
CROWN run (any coefficients give a valid bound once their error is counted).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..domain import Box
from ..graph import Graph

__all__ = ["interval_bounds", "symbolic_bounds", "compute_bounds", "preactivation_nodes",
           "gamma", "relu_relaxation"]

U = 2.0 ** -53
#: absolute slack per product for underflow
TINY = 2.0 ** -1070


def gamma(k: int) -> float:
    """A generous bound on the relative error of a length-k dot product."""
    return 2.0 * (k + 2) * U


def _absmax(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(lo), np.abs(hi))


def _affine_interval(op, lo, hi):
    w, b = op.weight, op.bias
    wp, wn = np.maximum(w, 0.0), np.minimum(w, 0.0)
    up = wp @ hi + wn @ lo + b
    dn = wp @ lo + wn @ hi + b
    k = w.shape[1] + 1
    margin = gamma(k) * (np.abs(w) @ _absmax(lo, hi) + np.abs(b)) + k * TINY
    return dn - margin, up + margin


def _add_interval(los, his):
    lo = np.sum(los, axis=0)
    hi = np.sum(his, axis=0)
    k = len(los)
    margin = gamma(k) * np.sum([_absmax(l, h) for l, h in zip(los, his)], axis=0)
    return lo - margin, hi + margin


def _interval_step(graph: Graph, name: str, bounds: Mapping):
    op = graph.op(name)
    args = graph.args(name)
    if op.kind == "affine":
        return _affine_interval(op, *bounds[args[0]])
    if op.kind == "relu":
        lo, hi = bounds[args[0]]
        return np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    if op.kind == "add":
        return _add_interval([bounds[a][0] for a in args], [bounds[a][1] for a in args])
    if op.kind == "output":
        return bounds[args[0]]
    from ..errors import UnsupportedOp
    raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no bound rule")


def preactivation_nodes(graph: Graph) -> list[str]:
    """Nodes whose value feeds a ReLU, in topological order (no duplicates)."""
    seen, out = set(), []
    for _, (name, op) in enumerate(graph.items()):
        if op.kind == "relu":
            a = graph.args(name)[0]
            if a not in seen:
                seen.add(a)
                out.append(a)
    return out


def interval_bounds(graph: Graph, box: Box, *, known: Mapping | None = None) -> dict:
    """Sound interval bounds ``{node: (lo, hi)}``; ``known`` bounds are intersected in."""
    return compute_bounds(graph, box, method="interval", known=known)


def relu_relaxation(lo: np.ndarray, hi: np.ndarray):
    """Per-unit linear relaxation of ``y = relu(z)`` for ``z in [lo, hi]``.

    Returns ``(s, t, alpha)`` with ``alpha z <= y <= s z + t`` valid on the
    interval.  For unstable units the upper line is the chord, with slope and
    intercept rounded *up* so the line stays above relu at both ends (relu is
    convex, so both ends suffice); ``alpha`` is 0 or 1 (exact), chosen as in
    CROWN to minimise the relaxation area.
    """
    n = lo.shape[0]
    s = np.zeros(n)
    t = np.zeros(n)
    alpha = np.zeros(n)
    active = lo >= 0.0
    s[active] = 1.0
    alpha[active] = 1.0
    unst = (lo < 0.0) & (hi > 0.0)
    if np.any(unst):
        l, h = lo[unst], hi[unst]
        slope = h / (h - l)
        slope = np.minimum(np.nextafter(slope * (1 + 4 * U), np.inf), 1.0 + 8 * U)
        # y <= slope*(z - l): need slope >= h/(h-l) (right end) and t >= -slope*l (left end)
        s[unst] = slope
        t[unst] = np.nextafter(-slope * l * (1 + 4 * U), np.inf)
        alpha[unst] = (h >= -l).astype(float)
    return s, t, alpha


class _Backsub:
    """Accumulates coefficient matrices per node plus a rigorous error term."""

    def __init__(self, bounds: Mapping, m: int):
        self.bounds = bounds
        self.coef: dict = {}
        self.const = np.zeros(m)
        self.err = np.zeros(m)

    def absmax(self, node):
        return _absmax(*self.bounds[node])

    def push(self, node, mat):
        if node in self.coef:
            mat = self.coef[node] + mat
            # one rounding per entry of the sum
            self.err += U * (np.abs(mat) @ self.absmax(node))
        self.coef[node] = mat

    def add_const(self, vec, k):
        self.const = self.const + vec
        self.err += gamma(k) * np.abs(self.const) + TINY


def _backsub(graph: Graph, target: str, bounds: Mapping, upper: bool):
    """Upper (or lower) linear bound of ``target`` pushed to the input.

    Returns ``(A, c, err)``: for all x in the box, target(x) <= A x + c + err
    (upper) or >= A x + c - err (lower).
    """
    m = graph.size_of(target)
    st = _Backsub(bounds, m)
    st.coef[target] = np.eye(m)
    order = [n for n in reversed(graph.nodes())]
    for name in order:
        if name not in st.coef:
            continue
        op = graph.op(name)
        if op.kind == "input":
            continue
        a = st.coef.pop(name)
        args = graph.args(name)
        if op.kind == "affine":
            w = op.weight
            new = a @ w
            st.err += gamma(w.shape[0]) * ((np.abs(a) @ np.abs(w)) @ st.absmax(args[0])) + TINY * w.shape[0]
            st.add_const(a @ op.bias, w.shape[0] + 1)
            st.push(args[0], new)
        elif op.kind == "relu":
            lo, hi = bounds[args[0]]
            s, t, alpha = relu_relaxation(lo, hi)
            pos = a >= 0.0
            # upper bound: positive coefficients take the upper line, negative the lower line
            if upper:
                new = np.where(pos, a * s, a * alpha)
                const = np.where(pos, a, 0.0) @ t
            else:
                new = np.where(pos, a * alpha, a * s)
                const = np.where(pos, 0.0, a) @ t
            st.err += U * (np.abs(new) @ st.absmax(args[0])) + gamma(len(t)) * (np.abs(a) @ t)
            st.add_const(const, len(t) + 1)
            st.push(args[0], new)
        elif op.kind in ("add", "output"):
            for arg in args:
                st.push(arg, a.copy())
        else:
            from ..errors import UnsupportedOp
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no symbolic bound rule")
    inp = graph.input_name
    a = st.coef.get(inp, np.zeros((m, graph.input_size)))
    return a, st.const, st.err


def _concretize(a, c, err, box: Box, upper: bool):
    lo, hi = box.lower, box.upper
    ap, an = np.maximum(a, 0.0), np.minimum(a, 0.0)
    k = a.shape[1] + 1
    margin = gamma(k) * (np.abs(a) @ _absmax(lo, hi) + np.abs(c)) + err + k * TINY
    if upper:
        return ap @ hi + an @ lo + c + margin
    return ap @ lo + an @ hi + c - margin


def symbolic_bounds(graph: Graph, box: Box, bounds: Mapping, target: str):
    """Sound CROWN-style bounds of ``target`` given sound bounds of its ancestors."""
    au, cu, eu = _backsub(graph, target, bounds, upper=True)
    al, cl, el = _backsub(graph, target, bounds, upper=False)
    return _concretize(al, cl, el, box, upper=False), _concretize(au, cu, eu, box, upper=True)


def compute_bounds(graph: Graph, box: Box, *, method: str = "symbolic",
                   known: Mapping | None = None, upto: str | None = None) -> dict:
    """Sound bounds of every node: interval propagation, and for pre-activations
    (and, with ``method="symbolic"``) the CROWN bound, whichever is tighter.

    ``known``: extra proven bounds (e.g. from LP/MILP) intersected in; they
    tighten every later node.  ``upto``: stop after this node (deeper nodes
    are left out of the result).
    """
    if method not in ("interval", "symbolic"):
        raise ValueError(f"unknown bound method {method!r}")
    box.check_size(graph.input_size)
    pre = set(preactivation_nodes(graph)) if method == "symbolic" else set()
    bounds: dict = {}
    for name in graph.nodes():
        op = graph.op(name)
        if op.kind == "input":
            lo, hi = box.lower.copy(), box.upper.copy()
        else:
            lo, hi = _interval_step(graph, name, bounds)
            if name in pre:
                bounds[name] = (lo, hi)  # provisional, read by nothing upstream
                slo, shi = symbolic_bounds(graph, box, bounds, name)
                lo, hi = np.maximum(lo, slo), np.minimum(hi, shi)
        if known and name in known:
            klo, khi = known[name]
            lo, hi = np.maximum(lo, klo), np.minimum(hi, khi)
        bounds[name] = (lo, hi)
        if name == upto:
            break
    return bounds


def _exact_affine(op, lo, hi):
    w, b = op.rational()
    out_lo, out_hi = [], []
    for row, bi in zip(w, b):
        a = c = bi
        for wij, l, h in zip(row, lo, hi):
            if wij > 0:
                a += wij * l
                c += wij * h
            elif wij < 0:
                a += wij * h
                c += wij * l
        out_lo.append(a)
        out_hi.append(c)
    return out_lo, out_hi


def exact_interval_bounds(graph: Graph, box: Box, *, known: Mapping | None = None) -> dict:
    """Interval bounds in exact rational arithmetic ``{node: (lo, hi)}`` (lists of Fraction).

    No rounding at all, so a bound that is exactly 0 stays 0 (a float bound
    needs a margin and cannot show ``z <= 0`` when ``max z == 0``).  ``known``
    float bounds (sound) are intersected in as the exact rationals of the floats.
    """
    from fractions import Fraction
    bounds: dict = {}
    for name in graph.nodes():
        op = graph.op(name)
        args = graph.args(name)
        if op.kind == "input":
            lo, hi = box.exact_bounds()
        elif op.kind == "affine":
            lo, hi = _exact_affine(op, *bounds[args[0]])
        elif op.kind == "relu":
            alo, ahi = bounds[args[0]]
            zero = Fraction(0)
            lo, hi = [max(v, zero) for v in alo], [max(v, zero) for v in ahi]
        elif op.kind == "add":
            lo = [sum(vs, Fraction(0)) for vs in zip(*(bounds[a][0] for a in args))]
            hi = [sum(vs, Fraction(0)) for vs in zip(*(bounds[a][1] for a in args))]
        else:
            lo, hi = bounds[args[0]]
        if known and name in known:
            klo, khi = known[name]
            lo = [max(v, Fraction(float(k))) if np.isfinite(k) else v for v, k in zip(lo, klo)]
            hi = [min(v, Fraction(float(k))) if np.isfinite(k) else v for v, k in zip(hi, khi)]
        bounds[name] = (lo, hi)
    return bounds
