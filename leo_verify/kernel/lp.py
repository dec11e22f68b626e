"""Exact LP-dual certificates for bounds on a ReLU network's pre-activations.

The LP is the *triangle relaxation* of the network over an input box (or a
piece of it), built by one table ``op kind -> encoder`` (:data:`LP_ENCODERS`)
from exact rational data: the network's weights (``Affine.rational()``), the
box, and bounds ``l <= z <= u`` already *proven* for earlier pre-activations.

A floating-point LP solver (HiGHS, :mod:`leo_verify.certify.lp`) only
proposes multipliers; this module never calls it.  The bound is recomputed exactly by weak duality, which holds for *any* multipliers,
so the float solver need not be trusted.  For ``min c.v`` subject to
``rlo <= A v <= rhi`` and ``vlo <= v <= vhi`` and any vector ``lam``::

    c.v = lam.(A v) + r.v,   r = c - A^T lam
        >= sum_i min(lam_i rlo_i, lam_i rhi_i) + sum_j min(r_j vlo_j, r_j vhi_j)

(a multiplier whose needed row bound is infinite is set to 0 first).  Every
term is computed with integer numerators over one denominator
(:class:`~leo_verify.kernel.exact.Q`), so the result is an exact rational.
With ``c = 0`` and the solver's Farkas ray, a positive bound proves the LP
infeasible (a vacuous branch).

Encoding of one ReLU unit with pre-activation variable ``z`` and proven
bounds ``[l, u]``:

* phase ``active`` (proven ``z >= 0``, or ``l >= 0``): the output *is* ``z``;
* phase ``inactive`` (proven ``z <= 0``, or ``u <= 0``): the output is the
  constant 0 and ``z <= 0`` tightens ``z``'s bound;
* otherwise a variable ``y`` in ``[0, u]`` with ``y >= z`` and
  ``(u - l) y - u z <= -u l`` (the triangle).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from .exact import ProofInvalid, Q, to_float

__all__ = ["LinearProgram", "LP_ENCODERS", "build_lp", "verify_multipliers", "bound_from_multipliers", "fixings"]


@dataclass
class LinearProgram:
    """An LP with exact rational data: rows ``lo <= sum coef v <= hi`` (a bound may be absent).

    Stored in blocks of exact :class:`Q` vectors (variables, row bounds) and
    COO coefficient blocks, so building the relaxation of a 6 x 50 network
    costs a few numpy operations per layer rather than a Python object per
    coefficient.
    """

    node_vars: dict = field(default_factory=dict)  # node -> list[int | None]; None = constant 0
    tri_rows: dict = field(default_factory=dict)  # triangle row -> (neuron id, -l u / (u - l), y, z)
    units: dict = field(default_factory=dict)  # relaxed unit id -> (y, z, row of y - z >= 0)
    num_vars: int = 0
    num_rows: int = 0
    _vlo: list = field(default_factory=list)  # Q chunks
    _vhi: list = field(default_factory=list)
    _var_override: dict = field(default_factory=dict)  # var -> ("lo" | "hi", Fraction 0)
    _rlo: list = field(default_factory=list)  # (Q chunk, ok mask)
    _rhi: list = field(default_factory=list)
    _coo: list = field(default_factory=list)  # (rows, cols, coef Q)
    _exact: tuple | None = None
    _highs: object = None  # the float solver's model (certify.lp), never read here

    def add_vars(self, lo: Q, hi: Q) -> np.ndarray:
        n = len(lo)
        self._vlo.append(lo)
        self._vhi.append(hi)
        idx = np.arange(self.num_vars, self.num_vars + n)
        self.num_vars += n
        self._exact = None
        return idx

    def add_var(self, lo, hi) -> int:
        return int(self.add_vars(Q.of([lo]), Q.of([hi]))[0])

    def add_rows(self, lo: Q | None, hi: Q | None, n: int) -> np.ndarray:
        zero = Q.zeros(n)
        self._rlo.append((lo if lo is not None else zero, np.full(n, lo is not None)))
        self._rhi.append((hi if hi is not None else zero, np.full(n, hi is not None)))
        idx = np.arange(self.num_rows, self.num_rows + n)
        self.num_rows += n
        self._exact = None
        return idx

    def add_coefs(self, rows, cols, coef: Q) -> None:
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        keep = coef.num != 0
        if not np.all(keep):
            rows, cols, coef = rows[keep], cols[keep], Q(coef.num[keep], coef.den)
        self._coo.append((rows, cols, coef))
        self._exact = None

    def add_row(self, coefs: Mapping[int, Fraction], lo, hi) -> int:
        r = int(self.add_rows(None if lo is None else Q.of([lo]), None if hi is None else Q.of([hi]), 1)[0])
        items = [(int(k), Fraction(v)) for k, v in coefs.items() if v != 0]
        if items:
            self.add_coefs([r] * len(items), [k for k, _ in items], Q.of([v for _, v in items]))
        return r

    def set_var_bound(self, v: int, side: str, value: Fraction) -> None:
        """Tighten one variable's bound to ``value`` (only 0 is used: a phase)."""
        self._var_override[int(v)] = (side, Fraction(value))
        self._exact = None

    # -- exact arrays -----------------------------------------------------------
    def exact(self):
        """``(rows, cols, coef Q, rlo Q, rhi Q, rlo_ok, rhi_ok, vlo Q, vhi Q)`` (cached)."""
        if self._exact is None:
            from .exact import concat
            vlo, vhi = concat(self._vlo), concat(self._vhi)
            for v, (side, val) in self._var_override.items():
                target = vlo if side == "lo" else vhi
                q = Q.of([val])
                if target.den % q.den:
                    raise ValueError("variable bound override not representable")  # only 0 is used
                cur = Fraction(int(target.num[v]), target.den)
                if (side == "lo" and val > cur) or (side == "hi" and val < cur):
                    target.num[v] = q.num[0] * (target.den // q.den)
            # an empty range (lo > hi) only arises on a vacuous branch: keep it;
            # weak duality over an empty set proves anything, which is right
            rlo = concat([c for c, _ in self._rlo])
            rhi = concat([c for c, _ in self._rhi])
            rlo_ok = np.concatenate([m for _, m in self._rlo]) if self._rlo else np.zeros(0, bool)
            rhi_ok = np.concatenate([m for _, m in self._rhi]) if self._rhi else np.zeros(0, bool)
            if self._coo:
                rows = np.concatenate([r for r, _, _ in self._coo])
                cols = np.concatenate([c for _, c, _ in self._coo])
                coef = concat([q for _, _, q in self._coo])
            else:
                rows = cols = np.zeros(0, dtype=np.int64)
                coef = Q.zeros(0)
            self._exact = (rows, cols, coef, rlo, rhi, rlo_ok, rhi_ok, vlo, vhi)
        return self._exact

    def float_bounds(self):
        """``(var lo, var hi, row lo, row hi)`` as floats (``+-inf`` for absent row bounds)."""
        rows, cols, coef, rlo, rhi, rlo_ok, rhi_ok, vlo, vhi = self.exact()
        flo, fhi = rlo.floats(), rhi.floats()
        flo[~rlo_ok] = -np.inf
        fhi[~rhi_ok] = np.inf
        return vlo.floats(), vhi.floats(), flo, fhi


# -- encoders ------------------------------------------------------------------------
@dataclass
class _Ctx:
    lp: LinearProgram
    bounds: Mapping  # node -> (lo Q, hi Q)
    phase: Mapping  # neuron id -> "active" | "inactive"
    box: tuple  # (lo list[Fraction], hi list[Fraction])


def _enc_input(ctx: _Ctx, name, op, graph):
    lo, hi = ctx.box
    return list(ctx.lp.add_vars(Q.of(list(lo)), Q.of(list(hi))))


def _enc_affine(ctx: _Ctx, name, op, graph):
    from .intervals import weights_q
    src = ctx.lp.node_vars[graph.args(name)[0]]
    wp, wn, b = weights_q(op)
    w = wp + wn
    lo, hi = ctx.bounds[name]
    z = ctx.lp.add_vars(lo, hi)
    rows = ctx.lp.add_rows(b, b, op.size)
    # z_i - sum_j W_ij a_j = b_i  (a_j a constant 0: no term)
    ctx.lp.add_coefs(rows, z, Q(np.ones(op.size, dtype=object), 1))
    live = np.array([j for j, v in enumerate(src) if v is not None], dtype=np.int64)
    if live.size:
        vars_ = np.array([src[j] for j in live], dtype=np.int64)
        sub = -w.num[:, live]
        rr, cc = np.meshgrid(rows, np.arange(live.size), indexing="ij")
        ctx.lp.add_coefs(rr.ravel(), vars_[cc.ravel()], Q(sub.ravel(), w.den))
    return [int(v) for v in z]


def _enc_relu(ctx: _Ctx, name, op, graph):
    pre = graph.args(name)[0]
    src = ctx.lp.node_vars[pre]
    lo, hi = ctx.bounds[pre]
    lof, hif = lo.fractions(), hi.fractions()
    out = []
    for i, nid in enumerate(op.neurons):
        z, l, u = src[i], lof[i], hif[i]
        phase = ctx.phase.get(nid)
        if z is None:  # a constant-zero input stays zero
            out.append(None)
        elif phase == "active" or (phase is None and l >= 0):
            ctx.lp.set_var_bound(z, "lo", Fraction(0))
            out.append(z)
        elif phase == "inactive" or (phase is None and u <= 0):
            ctx.lp.set_var_bound(z, "hi", Fraction(0))
            out.append(None)
        else:
            y = ctx.lp.add_var(Fraction(0), max(u, Fraction(0)))
            r = ctx.lp.add_row({y: 1, z: -1}, Fraction(0), None)
            ctx.lp.units[nid] = (y, z, r)
            r = ctx.lp.add_row({y: u - l, z: -u}, None, -u * l)
            ctx.lp.tri_rows[r] = (nid, to_float(-l * u / (u - l)), y, z)  # a branching score only
            out.append(y)
    return out


def _enc_add(ctx: _Ctx, name, op, graph):
    srcs = [ctx.lp.node_vars[a] for a in graph.args(name)]
    lo, hi = ctx.bounds[name]
    s_vars = ctx.lp.add_vars(lo, hi)
    zero = Q.zeros(op.size)
    rows = ctx.lp.add_rows(zero, zero, op.size)
    ctx.lp.add_coefs(rows, s_vars, Q(np.ones(op.size, dtype=object), 1))
    for src in srcs:
        live = [i for i in range(op.size) if src[i] is not None]
        if live:
            ctx.lp.add_coefs(rows[live], [src[i] for i in live], Q(-np.ones(len(live), dtype=object), 1))
    return [int(v) for v in s_vars]


def _enc_output(ctx: _Ctx, name, op, graph):
    return list(ctx.lp.node_vars[graph.args(name)[0]])


#: op kind -> LP encoder ``(ctx, node name, op, graph) -> list of variable | None``
LP_ENCODERS = {"input": _enc_input, "affine": _enc_affine, "relu": _enc_relu,
               "add": _enc_add, "output": _enc_output}


def build_lp(graph: Graph, box: tuple, bounds: Mapping, *, upto: str,
             phase: Mapping | None = None) -> LinearProgram:
    """The triangle-relaxation LP of the ancestors of node ``upto`` (inclusive).

    Parameters
    ----------
    graph : the network.
    box : ``(lo, hi)`` lists of Fractions: the input box (or a piece of it).
    bounds : node -> ``(lo, hi)`` :class:`Q` vectors, *proven* bounds for every
        affine/add node encoded (pre-activations and sums).
    upto : the node whose values the objective will use.
    phase : neuron id -> ``"active"`` | ``"inactive"``: proven phases (or the
        hypothesis of a branch).
    """
    import networkx as nx
    keep = nx.ancestors(graph.nx, upto) | {upto}
    ctx = _Ctx(LinearProgram(), bounds, dict(phase or {}), box)
    for name in graph.nodes():
        if name not in keep:
            continue
        op = graph.op(name)
        fn = LP_ENCODERS.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no LP encoding")
        ctx.lp.node_vars[name] = fn(ctx, name, op, graph)
    return ctx.lp


def fixings(lp: LinearProgram, fix: Mapping[str, str]) -> tuple[dict, dict, dict]:
    """Bound changes that restrict ``lp`` to a branch: relaxed unit -> phase.

    ``active``: ``z >= 0`` and the row ``y - z >= 0`` becomes ``y - z = 0``;
    ``inactive``: ``z <= 0`` and ``y <= 0`` (so ``y = 0``).  The triangle rows
    stay: they are valid in both branches.  Every new bound is 0.
    Returns ``(var_lo_zero, var_hi_zero, row_hi_zero)``: sets of indices whose
    bound becomes 0 (a tightening: callers keep the tighter of old and 0).
    """
    vlo, vhi, rhi = set(), set(), set()
    for nid, p in fix.items():
        if nid not in lp.units:
            raise ProofInvalid(f"branch fixes {nid!r}, which is not a relaxed unit of this LP")
        y, z, row = lp.units[nid]
        if p == "active":
            vlo.add(z)
            rhi.add(row)
        elif p == "inactive":
            vhi.update((y, z))
        else:
            raise ValueError(f"branch phase of {nid!r} must be active/inactive, not {p!r}")
    return vlo, vhi, rhi


def _with_fixings(lp: LinearProgram, fix: Mapping[str, str]):
    rows, cols, coef, rlo, rhi, rlo_ok, rhi_ok, vlo, vhi = lp.exact()
    if not fix:
        return rows, cols, coef, rlo, rhi, rlo_ok, rhi_ok, vlo, vhi
    zlo, zhi, zrow = fixings(lp, fix)
    vlo_n, vhi_n, rhi_n, rhi_ok = vlo.num.copy(), vhi.num.copy(), rhi.num.copy(), rhi_ok.copy()
    for v in zlo:
        if vlo_n[v] < 0:
            vlo_n[v] = 0
    for v in zhi:
        if vhi_n[v] > 0:
            vhi_n[v] = 0
    for r in zrow:
        if not rhi_ok[r] or rhi_n[r] > 0:
            rhi_n[r] = 0
            rhi_ok[r] = True
    return rows, cols, coef, rlo, Q(rhi_n, rhi.den), rlo_ok, rhi_ok, Q(vlo_n, vlo.den), Q(vhi_n, vhi.den)


def verify_multipliers(lp: LinearProgram, c: Q, lam: Q, *, fix: Mapping[str, str] | None = None) -> Fraction:
    """Exact weak-duality lower bound on ``min c.v`` over ``lp`` from multipliers ``lam``.

    ``fix``: a branch's phases (see :func:`fixings`); the bound then holds on the branch.
    """
    rows, cols, coef, rlo, rhi, rlo_ok, rhi_ok, vlo, vhi = _with_fixings(lp, fix or {})
    # an empty variable range means the branch is vacuous; the multipliers
    # must still prove it (no shortcut)
    # a multiplier whose row bound is infinite in the direction it needs is useless: 0
    num = lam.num.copy()
    num[(num > 0) & ~rlo_ok] = 0
    num[(num < 0) & ~rhi_ok] = 0
    lam = Q(num, lam.den)
    at_lam = np.zeros(lp.num_vars, dtype=object)
    if rows.size:
        np.add.at(at_lam, cols, coef.num * lam.num[rows])
    r = c - Q(at_lam, coef.den * lam.den)
    total = (lam.pos() * rlo).sum() + (lam.neg_part() * rhi).sum() + \
        (r.pos() * vlo).sum() + (r.neg_part() * vhi).sum()
    return Fraction(int(total.num), total.den)


def _objective(lp: LinearProgram, objective: Mapping[int, Fraction]) -> Q:
    c = [Fraction(0)] * lp.num_vars
    for v, a in objective.items():
        c[v] += Fraction(a)
    return Q.of(c)


def bound_from_multipliers(lp: LinearProgram, objective: Mapping[int, Fraction], *, sense: str,
                           multipliers, fix: Mapping[str, str] | None = None) -> Fraction:
    """Re-check a stored certificate: the exact bound its multipliers prove.

    ``multipliers``: row -> rational (string or number), the non-zero ones.
    ``sense="feasibility"`` with an empty objective: a result > 0 proves the
    LP infeasible.
    """
    sign = 1 if sense in ("min", "feasibility") else -1
    c = _objective(lp, {v: sign * Fraction(a) for v, a in objective.items()})
    dense = [Fraction(0)] * lp.num_rows
    for k, m in multipliers.items():
        i = int(k)
        if not 0 <= i < lp.num_rows:
            raise ProofInvalid(f"certificate multiplier for row {i}: the LP has {lp.num_rows} rows")
        dense[i] = Fraction(m)
    lam = Q.of(dense) if dense else Q.zeros(0)
    return sign * verify_multipliers(lp, c, lam, fix=fix)
