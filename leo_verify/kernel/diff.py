"""Differential bounds of two ReLU chains over a box, in exact arithmetic.

The checker's half of ``check``'s differential prover (issue 16).  Two
networks ``f`` and ``g`` that are chains ``Affine (ReLU Affine)*`` of the same
depth are *aligned* layer by layer (hidden layers of different widths are
padded with units whose weights and bias are 0: such a unit computes
``relu(0) = 0`` and feeds nothing, so padding changes no function).  Over a box
``[lo, hi]`` we propagate, for every layer, *symbolic* linear bounds (affine
functions of ``x``, matrices ``[coefficients | constant]``) of

* ``z_f`` and ``z_g``, each network's own pre-activations (ReluVal-style symbolic
  intervals with triangle relaxations), and
* ``d = z_f - z_g``, their *difference* (ReluDiff / NeuroDiff): with
  ``W_f a_f - W_g a_g = W_g (a_f - a_g) + (W_f - W_g) a_f`` the difference of the
  next layer is bounded from the difference of this layer's activations and
  the (small, for pruned pairs) weight difference, instead of from two
  independent bounds that cancel nothing.

The difference of the activations ``relu(z_f) - relu(z_g)`` is bounded case by
case on the proven phases (exact comparisons of exact bounds):

==========================  ===============================  =======================
phases (f, g)               lower bound                      upper bound
==========================  ===============================  =======================
f inactive (``u_f <= 0``)   ``-upper(relu z_g)``             ``-lower(relu z_g)``
g inactive (``u_g <= 0``)   ``lower(relu z_f)``              ``upper(relu z_f)``
both active                 ``L_d``                          ``U_d``
f active, g unstable        ``L_d + l_g``                    ``U_d``
f unstable, g active        ``L_d``                          ``U_d - l_f``
both unstable               ``-upper(relu(-L_d))``           ``upper(relu(U_d))``
==========================  ===============================  =======================

(f active, g unstable: ``relu z_f - relu z_g = d + min(z_g, 0)`` and
``l_g <= min(z_g, 0) <= 0``; both unstable: ``relu`` is monotone and
1-Lipschitz, so ``min(d, 0) <= relu z_f - relu z_g <= max(d, 0)``.)
``upper(relu(E))`` of an affine ``E`` with range ``[m, M]`` on the box is ``E``
if ``m >= 0``, ``0`` if ``M <= 0``, else ``s (E - m)`` with ``s >= M / (M - m)``
(the chord; ``s`` rounded *up* to the grid).  ``lower(relu(E))`` is ``E``,
``0``, or ``a E`` with ``a`` in ``{0, 1}``.

Every quantity is an exact rational.  To keep the integers short, symbolic
coefficients are rounded to the grid ``2^-GRID_BITS`` *soundly* (a lower
bound's coefficient ``c`` becomes ``c' = floor(c)`` and its constant gains
``(c - c') . lo``, which is ``<=`` the change on the box; an upper bound's
rounding is the mirror image), and concrete bounds are rounded outwards.

What a leaf proves (:func:`leaf_proves`), on the outputs (logits):

* ``"epsilon"``: ``-eps <= L_d`` and ``U_d <= eps`` on the box, for every output;
* ``"exact"``: the same with ``eps = 0``;
* ``"top1-confidence"`` with ``delta`` (VeryDiff's delta-top-1: wherever
  ``softmax(f(x))_c > delta``, ``argmax g(x) = c``): every class ``c`` either has
  ``softmax(f)_c <= delta`` on the whole leaf (exact lower bounds of ``exp``) or
  beats every other class strictly in ``g`` on the whole leaf;
* ``"top1"``: the difference is exactly 0 on the leaf (the bounds of ``d`` are
  ``[0, 0]``: the same function, so the same argmax, ties included), or some
  class ``c`` beats every other class ``j`` *strictly* in both networks on the whole leaf (``f_c - f_j > 0`` from ``f``'s own bounds;
  ``g_c - g_j > 0`` from ``g``'s own bounds or from ``(f_c - f_j) - (d_c - d_j)``),
  so both argmaxes are ``c`` (no ties can occur).

A proof is a *split tree* over the box (:func:`.diff_tree.check_tree`): an inner node
``{"dim": i, "at": "p/q", "children": [left, right]}`` cuts the box at
``x_i = at`` (strictly inside), a leaf is ``{}`` and must prove the claim on
its sub-box.
"""
from __future__ import annotations

import math
from fractions import Fraction
import numpy as np

from ..graph import Graph
from .exact import ProofInvalid, Q, int_matmul, limbs_of

__all__ = ["GRID_BITS", "chain", "align", "Aligned", "propagate", "leaf_proves", "leaf_proves_batch",
           "stack_boxes"]

#: symbolic coefficients and concrete bounds live on the grid 2^-GRID_BITS
GRID_BITS = 32
_GRID = 1 << GRID_BITS
_MODES = ("epsilon", "exact", "top1", "top1-confidence")


# -- the two networks as aligned chains ----------------------------------------------------

def chain(graph: Graph) -> list | str:
    """``[(W, b), ...]`` (exact :class:`~fractions.Fraction` arrays) of a chain
    ``Input -> Affine (-> Relu -> Affine)* -> Output``, or the reason it is not one."""
    name = graph.input_name
    layers: list = []
    expect = "affine"
    while True:
        users = graph.users(name)
        if len(users) != 1:
            return f"node {name!r} has {len(users)} users (a chain has one)"
        name = users[0]
        op = graph.op(name)
        if op.kind == "output":
            if expect != "relu":
                return "the network does not end with an affine layer"
            return layers
        if op.kind != expect:
            return f"node {name!r} is {op.kind}, a chain expects {expect} there"
        if op.kind == "affine":
            layers.append(op.rational())
            expect = "relu"
        else:
            expect = "affine"


class Aligned:
    """Two aligned chains: per layer ``(Wf, bf, Wg, bg)`` as exact :class:`Q` (hidden widths padded)."""

    def __init__(self, layers: list, n_in: int, widths: tuple):
        self.layers = layers
        self.n_in, self.widths = n_in, widths
        self._packed = None

    def packed(self) -> list:
        """Per layer the stacked matrices the propagation multiplies with (cached)."""
        if self._packed is None:
            out = []
            for wf, bf, wg, bg in self.layers:
                dw = wf - wg
                out.append({
                    "f": _Mat(Q(np.concatenate([wf.pos().num * 1, wf.neg_part().num * 1], axis=1), wf.den)),
                    "g": _Mat(Q(np.concatenate([wg.pos().num * 1, wg.neg_part().num * 1], axis=1), wg.den)),
                    "d": _Mat(_hstack([wg.pos(), wg.neg_part(), dw.pos(), dw.neg_part()])),
                    "bf": bf, "bg": bg, "db": bf - bg})
            self._packed = out
        return self._packed


class _Mat:
    """A fixed left factor ``W`` whose limbs (:func:`~.exact.limbs_of`) are computed once:
    ``W @ X`` is computed as ``(X^T @ W^T)^T`` with ``W^T``'s limbs cached."""

    def __init__(self, w: Q):
        self.w = w
        self.wt = np.ascontiguousarray(w.num.T)
        self.limbs = limbs_of(self.wt, self.wt.shape[0]) if self.wt.size else None

    def __matmul__(self, x: Q) -> Q:
        """``W @ x`` for ``x`` of shape ``(k, c)`` or a batch ``(B, k, c)``."""
        if x.num.ndim == 3:
            bsz, k, c = x.num.shape
            flat = np.ascontiguousarray(x.num.transpose(0, 2, 1).reshape(bsz * c, k))
            out = self._mul(flat, x.den).num  # (B c, m)
            return Q(out.reshape(bsz, c, -1).transpose(0, 2, 1), self.w.den * x.den)
        return Q(self._mul(np.ascontiguousarray(x.num.T), x.den).num.T, self.w.den * x.den)

    def _mul(self, xt: np.ndarray, den: int) -> Q:
        if not self.wt.size or not xt.size:
            return Q(np.zeros((xt.shape[0], self.wt.shape[1]), dtype=object) * 0, 1)
        return Q(int_matmul(xt, self.wt, b_limbs=self.limbs), 1)


def _lcm(parts: list) -> int:
    den = 1
    for p in parts:
        if den % p.den:
            den = den * p.den // math.gcd(den, p.den)
    return den


def _stack(parts: list, axis: int) -> Q:
    """Concatenate :class:`Q` arrays along ``axis`` (exactly, to a common denominator)."""
    den = _lcm(parts)
    return Q(np.concatenate([p.num * (den // p.den) for p in parts], axis=axis), den)


def _hstack(parts: list) -> Q:
    return _stack(parts, 1)


def _pad(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.empty((rows, cols), dtype=object)
    out[...] = Fraction(0)
    out[: w.shape[0], : w.shape[1]] = w
    return out


def align(f: Graph, g: Graph) -> Aligned | str:
    """The two networks aligned for :func:`propagate`, or why they cannot be."""
    cf, cg = chain(f), chain(g)
    if isinstance(cf, str):
        return f"A: {cf}"
    if isinstance(cg, str):
        return f"B: {cg}"
    if len(cf) != len(cg):
        return f"A has {len(cf)} affine layers, B {len(cg)}: not aligned layer by layer"
    n_in = cf[0][0].shape[1]
    if cg[0][0].shape[1] != n_in or cf[-1][0].shape[0] != cg[-1][0].shape[0]:
        return "the networks' input or output sizes differ"
    layers, prev, widths = [], n_in, []
    for k, ((wf, bf), (wg, bg)) in enumerate(zip(cf, cg)):
        rows = max(wf.shape[0], wg.shape[0])
        widths.append(rows)
        pf, pg = _pad(wf, rows, prev), _pad(wg, rows, prev)
        bfp, bgp = _pad(bf.reshape(-1, 1), rows, 1).ravel(), _pad(bg.reshape(-1, 1), rows, 1).ravel()
        layers.append((Q.of(pf), Q.of(bfp), Q.of(pg), Q.of(bgp)))
        prev = rows
    return Aligned(layers, n_in, tuple(widths[:-1]))


# -- exact symbolic bounds ---------------------------------------------------------------------

def _floor_grid(num: np.ndarray, den: int) -> np.ndarray:
    """Numerators on the grid (denominator 2^GRID_BITS) of ``floor(num/den)`` on that grid."""
    return (num * _GRID) // den


def _ceil_grid(num: np.ndarray, den: int) -> np.ndarray:
    return -((-num * _GRID) // den)


class _Box:
    """``lo``, ``hi``: :class:`Q` of shape ``(n,)`` (one box) or ``(B, n)`` (a batch of boxes)."""

    def __init__(self, lo: Q, hi: Q):
        self.lo, self.hi = lo, hi


# Every function below works on one box (eqs ``(m, n + 1)``) or on a batch of boxes (eqs
# ``(B, m, n + 1)``): the leading axes broadcast (numpy ``...``), so a batch pays numpy's
# per-call overhead once.

def _dot_box(c: Q, v: Q) -> Q:
    """``sum_i c[..., j, i] v[..., i]`` (``c``: (..., m, n); ``v``: (..., n))."""
    return Q((c.num * v.num[..., None, :]).sum(axis=-1), c.den * v.den)


def _range(e: Q, box: _Box, *, upper: bool) -> Q:
    """``max`` (``upper``) or ``min`` over the box of each row of ``e`` ([C | d]), exact."""
    c, d = Q(e.num[..., :-1], e.den), Q(e.num[..., -1], e.den)
    if upper:
        return _dot_box(c.pos(), box.hi) + _dot_box(c.neg_part(), box.lo) + d
    return _dot_box(c.pos(), box.lo) + _dot_box(c.neg_part(), box.hi) + d


def _ranges(e: Q, box: _Box) -> tuple[Q, Q]:
    """``(min, max)`` over the box of each row of ``e``, exact (one split into signs)."""
    c, d = Q(e.num[..., :-1], e.den), Q(e.num[..., -1], e.den)
    cp, cn = c.pos(), c.neg_part()
    return (_dot_box(cp, box.lo) + _dot_box(cn, box.hi) + d,
            _dot_box(cp, box.hi) + _dot_box(cn, box.lo) + d)


def _coarsen(e: Q, box: _Box, *, upper: bool) -> Q:
    """``e`` with coefficients on the grid, still a valid lower (upper) bound on the box.

    Lower: ``c' = floor(c)``, ``c - c' >= 0`` so ``(c - c') x >= (c - c') lo`` on the box; the
    constant becomes ``d + (c - c') lo`` rounded down.  Upper: ``c' = ceil(c)``, ``c - c' <= 0``
    so ``(c - c') x <= (c - c') lo``; the constant ``d + (c - c') lo`` rounded up.
    """
    if e.den == _GRID:
        return e
    c = e.num[..., :-1]
    cg = _ceil_grid(c, e.den) if upper else _floor_grid(c, e.den)
    rest = Q(c * _GRID - cg * e.den, e.den * _GRID)  # c - c', exactly
    const = Q(e.num[..., -1], e.den) + _dot_box(rest, box.lo)
    cn = _ceil_grid(const.num, const.den) if upper else _floor_grid(const.num, const.den)
    return Q(np.concatenate([cg, cn[..., None]], axis=-1), _GRID)


def _grid_vec(v: Q, *, up: bool) -> Q:
    return Q(_ceil_grid(v.num, v.den) if up else _floor_grid(v.num, v.den), _GRID)


def _affine(w, b: Q, lower: Q, upper: Q, box: _Box) -> tuple[Q, Q]:
    """Bounds of ``W a + b`` from bounds ``lower <= a <= upper``; ``w`` = ``[W+ | W-]``."""
    lo = w @ _vstack([lower, upper])
    hi = w @ _vstack([upper, lower])
    lo, hi = _add_const(lo, b), _add_const(hi, b)
    return _coarsen(lo, box, upper=False), _coarsen(hi, box, upper=True)


def _vstack(parts: list) -> Q:
    """Concatenate along the row axis (``-2``)."""
    return _stack(parts, -2)


def _add_const(e: Q, b: Q) -> Q:
    a, bb, den = e._align(b)
    a = a.copy()
    a[..., -1] = a[..., -1] + bb
    return Q(a, den)


def _bool(a) -> np.ndarray:
    return np.asarray(a, dtype=bool)


def _scale_rows(e: Q, s: Q) -> Q:
    return Q(e.num * s.num[..., None], e.den * s.den)


def _zeros_like(e: Q) -> Q:
    return Q(np.zeros(e.shape, dtype=object) * 0, 1)


def _select(masks: list, options: list) -> Q:
    """Row ``j`` from ``options[k]`` for the first ``k`` whose mask holds at ``j`` (the last is the default)."""
    den = _lcm(options)
    out = options[-1].num * (den // options[-1].den)
    for m, o in reversed(list(zip(masks, options[:-1]))):
        out = np.where(m[..., None], o.num * (den // o.den), out)
    return Q(out, den)


def _relu_upper(e: Q, box: _Box, rng: tuple | None = None) -> Q:
    """Per row an affine ``>= max(e(x), 0)`` on the box (``rng``: :func:`_ranges` of ``e``)."""
    m, mm = rng or _ranges(e, box)
    pos, neg = _bool(m.num >= 0), _bool(mm.num <= 0)
    # chord s (e - m) with s >= M / (M - m), rounded up on the grid (only where m < 0 < M)
    a, bb, den = mm._align(m)
    span = a - bb
    safe = np.where(pos | neg, 1, span)
    s = Q(np.where(pos | neg, 0, -((-a * _GRID) // safe)), _GRID)
    chord = _scale_rows(_add_const(e, -m), s)
    return _coarsen(_select([pos, neg], [e, _zeros_like(e), chord]), box, upper=True)


def _relu_lower(e: Q, box: _Box, rng: tuple | None = None) -> Q:
    """Per row an affine ``<= max(e(x), 0)`` on the box (``e``, ``0`` or ``a e`` with a in {0, 1})."""
    m, mm = rng or _ranges(e, box)
    a, bb, _ = mm._align(m)
    keep = _bool(m.num >= 0) | (_bool(mm.num > 0) & _bool(a > -bb))  # stable active, or unstable with M > -m
    return _select([keep], [e, _zeros_like(e)])


def _pick(cands: list, box: _Box, *, upper: bool) -> Q:
    """Per row the candidate bound whose range on the box is best (smallest max / largest min)."""
    vals = [_range(c, box, upper=upper) for c in cands]
    den = _lcm(vals)
    v = [x.num * (den // x.den) for x in vals]
    best = np.zeros(v[0].shape, dtype=np.int64)
    cur = v[0]
    for k in range(1, len(v)):
        better = _bool(v[k] < cur) if upper else _bool(v[k] > cur)
        best = np.where(better, k, best)
        cur = np.where(better, v[k], cur)
    masks = [best == k for k in range(len(cands) - 1)]
    return _select(masks, cands)


def propagate(al: Aligned, lo: Q, hi: Q) -> dict:
    """Exact symbolic bounds of both networks' logits and their difference on ``[lo, hi]``.

    Returns ``{"Lf", "Uf", "Lg", "Ug", "Ld", "Ud"}`` (each an :class:`Q` matrix
    ``[coefficients | constant]``, one row per output) and ``"box"``.  ``lo``, ``hi`` of shape
    ``(B, n)`` bound a batch of ``B`` boxes at once (the matrices get a leading axis ``B``):
    the same arithmetic, numpy's per-call overhead paid once.
    """
    box = _Box(lo, hi)
    n = al.n_in
    lead = lo.num.shape[:-1]  # () for one box, (B,) for a batch
    eye = np.concatenate([np.eye(n, dtype=object) * 1, np.zeros((n, 1), dtype=object) * 0], axis=1)
    ident = Q(np.broadcast_to(eye, lead + eye.shape).copy(), 1)
    packed = al.packed()
    la_f = ua_f = la_g = ua_g = ident
    lda = uda = Q(np.zeros(lead + (n, n + 1), dtype=object) * 0, 1)
    out = None
    for k, p in enumerate(packed):
        lf, uf = _affine(p["f"], p["bf"], la_f, ua_f, box)
        lg, ug = _affine(p["g"], p["bg"], la_g, ua_g, box)
        # d' = W_g (a_f - a_g) + (W_f - W_g) a_f + (b_f - b_g)
        ld = p["d"] @ _vstack([lda, uda, la_f, ua_f])
        ud = p["d"] @ _vstack([uda, lda, ua_f, la_f])
        ld = _coarsen(_add_const(ld, p["db"]), box, upper=False)
        ud = _coarsen(_add_const(ud, p["db"]), box, upper=True)
        # the difference of the two networks' own bounds is also a bound on d: keep the better
        ld = _pick([ld, lf - ug], box, upper=False)
        ud = _pick([ud, uf - lg], box, upper=True)
        if k == len(packed) - 1:
            out = {"Lf": lf, "Uf": uf, "Lg": lg, "Ug": ug, "Ld": ld, "Ud": ud}
            break
        r_lf, r_uf, r_lg, r_ug = (_ranges(e, box) for e in (lf, uf, lg, ug))
        la_f, ua_f = _relu_lower(lf, box, r_lf), _relu_upper(uf, box, r_uf)
        la_g, ua_g = _relu_lower(lg, box, r_lg), _relu_upper(ug, box, r_ug)
        lo_f, up_f = _grid_vec(r_lf[0], up=False), r_uf[1]
        lo_g, up_g = _grid_vec(r_lg[0], up=False), r_ug[1]
        f_off, g_off = _bool(up_f.num <= 0), _bool(up_g.num <= 0)
        f_on, g_on = _bool(lo_f.num >= 0), _bool(lo_g.num >= 0)
        neg_lo_f = Q(-lo_f.num, lo_f.den)
        # always valid (relu is monotone and 1-Lipschitz): min(d, 0) <= a_f - a_g <= max(d, 0)
        gen_up = _relu_upper(ud, box)
        gen_lo = -_relu_upper(-ld, box)
        case_lo = _select(
            [f_off, g_off, f_on & g_on, f_on, g_on],
            [Q(-ua_g.num, ua_g.den), la_f, ld, _add_const(ld, lo_g), ld, gen_lo])
        case_up = _select(
            [f_off, g_off, f_on & g_on, f_on, g_on],
            [Q(-la_g.num, la_g.den), ua_f, ud, ud, _add_const(ud, neg_lo_f), gen_up])
        lda = _pick([case_lo, gen_lo], box, upper=False)
        uda = _pick([case_up, gen_up], box, upper=True)
    out["box"] = box
    return out


def _positive(e: Q, box: _Box) -> bool:
    """The one-row affine ``e`` is strictly positive on the whole box."""
    return _range(e, box, upper=False).num[0] > 0


def _zero_difference(bounds: dict) -> bool:
    box = bounds["box"]
    top = _range(bounds["Ud"], box, upper=True)
    bot = _range(bounds["Ld"], box, upper=False)
    return bool(all(v <= 0 for v in top.num) and all(v >= 0 for v in bot.num))


def leaf_proves(bounds: dict, mode: str, epsilon: Fraction) -> bool:
    """Does the leaf's :func:`propagate` result prove the question (see the module docstring)?

    ``epsilon``: the tolerance of ``"epsilon"``; ``delta`` of ``"top1-confidence"``; ignored otherwise."""
    box = bounds["box"]
    if mode in ("epsilon", "exact"):
        eps = Fraction(0) if mode == "exact" else Fraction(epsilon)
        top = _range(bounds["Ud"], box, upper=True)
        bot = _range(bounds["Ld"], box, upper=False)
        return all(Fraction(int(v), top.den) <= eps for v in top.num) and \
            all(Fraction(int(v), bot.den) >= -eps for v in bot.num)
    if mode not in ("top1", "top1-confidence"):
        raise ProofInvalid(f"unknown mode {mode!r}")
    lf, uf, lg, ug, ld, ud = (bounds[k] for k in ("Lf", "Uf", "Lg", "Ug", "Ld", "Ud"))
    if _zero_difference(bounds):
        return True  # f = g on the whole leaf: the same argmax, ties included
    m = lf.shape[0]
    if mode == "top1-confidence":
        return all(_confidence_below(lf, uf, box, c, Fraction(epsilon)) or _g_wins(bounds, c)
                   for c in range(m))
    return any(_f_wins(bounds, c) and _g_wins(bounds, c) for c in range(m))


#: exp(t) >= (1 + t / EXP_K)^EXP_K wherever 1 + t / EXP_K >= 0 (and exp(t) > 0 everywhere)
EXP_K = 8


def _exp_lower(t: Fraction) -> Fraction:
    """An exact rational lower bound of ``exp(t)``."""
    base = 1 + t / EXP_K
    return base ** EXP_K if base > 0 else Fraction(0)


def _confidence_below(lf: Q, uf: Q, box: _Box, c: int, delta: Fraction) -> bool:
    """``softmax(f)_c <= delta`` on the whole leaf.

    ``softmax_c = 1 / (1 + sum_j exp(f_j - f_c))`` is at most ``delta`` iff
    ``sum_j exp(f_j - f_c) >= 1/delta - 1``; each ``f_j - f_c`` is at least the
    minimum of ``Lf_j - Uf_c`` on the leaf, and ``exp`` is bounded below exactly
    (:func:`_exp_lower`)."""
    if delta >= 1:
        return True
    if delta <= 0:
        return False
    total = Fraction(0)
    for j in range(lf.shape[0]):
        if j != c:
            low = _range(lf[j:j + 1] - uf[c:c + 1], box, upper=False)
            total += _exp_lower(Fraction(int(low.num[0]), low.den))
    return total >= 1 / delta - 1


def _f_wins(bounds: dict, c: int) -> bool:
    """``f_c > f_j`` for every ``j != c`` on the whole leaf (f's own bounds)."""
    lf, uf, box = bounds["Lf"], bounds["Uf"], bounds["box"]
    return all(_positive(lf[c:c + 1] - uf[j:j + 1], box) for j in range(lf.shape[0]) if j != c)


def _g_wins(bounds: dict, c: int) -> bool:
    """``g_c > g_j`` for every ``j != c`` on the whole leaf (g's own bounds, or f's minus the difference)."""
    lf, uf, lg, ug, ld, ud, box = (bounds[k] for k in ("Lf", "Uf", "Lg", "Ug", "Ld", "Ud", "box"))
    return all(_positive(lg[c:c + 1] - ug[j:j + 1], box)
               or _positive(lf[c:c + 1] - uf[j:j + 1] - ud[c:c + 1] + ld[j:j + 1], box)
               for j in range(lf.shape[0]) if j != c)


def leaf_proves_batch(bounds: dict, mode: str, epsilon: Fraction) -> list:
    """:func:`leaf_proves` for every box of a batch :func:`propagate` result."""
    box = bounds["box"]
    out = []
    for i in range(box.lo.num.shape[0]):
        one = {k: Q(v.num[i], v.den) for k, v in bounds.items() if k != "box"}
        one["box"] = _Box(Q(box.lo.num[i], box.lo.den), Q(box.hi.num[i], box.hi.den))
        out.append(leaf_proves(one, mode, epsilon))
    return out


def stack_boxes(boxes: list) -> tuple[Q, Q]:
    """``[(lo, hi), ...]`` (lists of Fractions) as two ``(B, n)`` :class:`Q` arrays."""
    return Q.of([b[0] for b in boxes]), Q.of([b[1] for b in boxes])
