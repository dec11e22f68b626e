"""Backward (CROWN-style) differential bounds of two aligned chains, in exact arithmetic.

The forward symbolic bounds of :func:`~.diff.propagate` lose precision with depth
(measured on ACAS Xu 1_1 over prop_3 against its float16 rounding: the bound
on ``|A - B|`` grows 0.0005, 0.0014, 0.011, 0.054, 0.85, 19 layer by layer,
while the true maximum is 0.0016).  This module back-substitutes instead
(CROWN / DeepPoly), on a *differential* state: a linear objective of layer
``k`` is written over ``(z_f, d)``, ``f``'s pre-activations and the difference
``d = z_f - z_g``, and over ``(a_f, da)`` after the ReLUs, with
``da = relu(z_f) - relu(z_g)``.  An affine layer maps exactly,

    ``z_f = W_f a_f + b_f``,  ``d = (W_f - W_g) a_f + W_g da + (b_f - b_g)``,

so a coefficient on ``d`` stays on the *difference* of the next layer down
(it never splits into two large opposite coefficients on ``a_f`` and
``a_g`` that cancel nothing).  A ReLU layer is replaced, unit by unit, by
lines valid on the unit's proven ranges ``[lf, uf]`` of ``z_f``, ``[lg, ug]`` of
``z_g`` and ``[ld, ud]`` of ``d``:

* ``a_f``: the usual lines ``sl z_f <= a_f <= su z_f + tu`` (:func:`~.crown._relaxation`);
* ``da``, whichever of two line pairs has the better interval range on the box
  ``[lf, uf] x [ld, ud]`` (compared exactly):

  - *independent*: ``da <= upper(a_f) - lower(a_g)`` and ``da >= lower(a_f) - upper(a_g)``
    with ``z_g = z_f - d`` (exact when both units are stable);
  - *through d*: ``relu`` is monotone and 1-Lipschitz, so ``min(d, 0) <= da <= max(d, 0)``,
    and ``max(d, 0) <= sd (d - ld)``, ``min(d, 0) >= sn (d - ud)`` (chords, slopes rounded up).

A positive coefficient takes the upper line, a negative one the lower line.
At the input (``a_f = x``, ``da = 0``) the objective is an affine function of
``x`` whose coefficients and constant are the bound.  Lower bounds are upper
bounds of the negated objective.  Each layer's ranges come from the same
back-substitution, intersected with interval arithmetic on the layer below
(and with ``d = z_f - z_g``): rows for ``z_f`` and ``d`` of every unit that
interval arithmetic leaves possibly positive in ``f`` or ``g`` (an unstable unit
for its lines, an active one for the next layer's intervals); ``z_g``'s range
is ``z_f``'s minus ``d``'s (on the first layer, its own interval).

Rounding (every step keeps the bound valid): ranges are rounded outwards to
the grid ``2^-GRID_BITS``; after each ReLU layer's lines the coefficients on
``(z_f, d)`` are floored to the grid ``2^-COEF_BITS`` and the error
``0 <= D < 2^-COEF_BITS`` is charged as ``2^-COEF_BITS * sum max(upper(v), 0)``
with the proven upper bounds of ``v = (z_f, d)``; the constant is rounded up.
"""
from __future__ import annotations

import numpy as np

from .crown import _relaxation
from .diff import Aligned, _Box, _coarsen, _lcm, _range, _stack
from .exact import Q, floor_to_grid, int_matmul, limbs_of

__all__ = ["back_bounds", "GRID_BITS"]

#: ranges and constants live on the grid 2^-GRID_BITS
GRID_BITS = 40
#: back-substituted coefficients are floored to the grid 2^-COEF_BITS before each product with a
#: weight matrix (short integers: two float64 limbs instead of four or five in the exact product)
COEF_BITS = 32


def _floor(q: Q) -> Q:
    return floor_to_grid(q, GRID_BITS)


def _ceil(q: Q) -> Q:
    return -_floor(-q)


def _relu(q: Q) -> Q:
    return q.pos()


class _Layer:
    """One aligned layer: ``S = [[W_f, 0], [W_f - W_g, W_g]]`` maps ``(a_f, da)`` to ``(z_f, d)``."""

    def __init__(self, wf: Q, bf: Q, wg: Q, bg: Q):
        self.m, self.w = wf.shape
        dw = wf - wg
        s = _stack([_stack([wf, Q.zeros(wg.shape)], 1), _stack([dw, wg], 1)], 0)
        first = _stack([wf, dw], 0)  # the input layer: (z_f, d) = [W_f; dW] x + (b_f, db)
        self.b2 = _stack([bf, bf - bg], 0)
        # [S | b] and [first | b]: one exact product gives the coefficients and the bias term
        col = Q(self.b2.num[:, None], self.b2.den)
        self.s_ext, self.first_ext = _stack([s, col], 1), _stack([first, col], 1)
        self.s_limbs = limbs_of(self.s_ext.num, 2 * self.m)
        self.s_pos, self.s_neg = s.pos(), s.neg_part()
        self.first_pos, self.first_neg = first.pos(), first.neg_part()
        # z_g's own interval on the input box (the first layer only)
        self.wg_pos, self.wg_neg, self.bg = wg.pos(), wg.neg_part(), bg


def _layers(al: Aligned) -> list:
    cached = getattr(al, "_back_layers", None)
    if cached is None:
        cached = [_Layer(*layer) for layer in al.layers]
        al._back_layers = cached
    return cached


def _line_pick(cands: list, lf: Q, uf: Q, ld: Q, ud: Q, *, upper: bool) -> tuple:
    """Per unit the candidate ``(p, q, r)`` (``p z_f + q d + r``) with the best interval range."""
    def value(p, q, r):
        a, b = p * lf, p * uf
        c, d = q * ld, q * ud
        if upper:
            return a.maximum(b) + c.maximum(d) + r
        return a.minimum(b) + c.minimum(d) + r
    v0, v1 = value(*cands[0]), value(*cands[1])
    x, y, _ = v1._align(v0)
    better = np.asarray((x < y) if upper else (x > y), dtype=bool)
    out = []
    for a, b in zip(cands[1], cands[0]):
        na, nb, den = a._align(b)
        out.append(Q(np.where(better, na, nb), den))
    return tuple(out)


def _relax(lf: Q, uf: Q, lg: Q, ug: Q, ld: Q, ud: Q) -> dict:
    """The lines of one ReLU layer (see the module docstring), and ``(a_f, da)``'s upper bounds."""
    fsu, ftu, fal = _relaxation(lf, uf)
    gsu, gtu, gal = _relaxation(lg, ug)
    fsl, gsl = Q(fal, 1), Q(gal, 1)
    zero = Q.zeros(fsu.shape)
    ind_u = (fsu - gsl, gsl, ftu)
    ind_l = (fsl - gsu, gsu, -gtu)
    dsu, dtu, _ = _relaxation(ld, ud)
    nsu, ntu, _ = _relaxation(-ud, -ld)  # relu(-d) <= nsu (-d) + ntu
    dd_u = (zero, dsu, dtu)
    dd_l = (zero, nsu, -ntu)
    pu, qu, ru = _line_pick([ind_u, dd_u], lf, uf, ld, ud, upper=True)
    pl, ql, rl = _line_pick([ind_l, dd_l], lf, uf, ld, ud, upper=False)
    # proven upper bounds of the post-activation state (the next layer's interval ranges)
    af_up = _relu(uf)
    da_up = _relu(ud).minimum(af_up - _relu(lg))
    # slopes on one denominator, intercepts on another: the back-substitution then multiplies
    # and adds plain integer arrays
    slopes = _common([fsu, fsl, pu, pl, qu, ql])
    icpt = _common([ftu, Q.zeros(ftu.shape), ru, rl])
    zd_up = _stack([uf, ud], 0)
    return {"slopes": slopes, "icpt": icpt, "v_up": _stack([af_up, da_up], 0),
            # the rounding charge of :func:`_upper_rows`: D < 2^-COEF_BITS entry-wise, D >= 0
            "charge": _ceil(Q(zd_up.pos().num.sum(), zd_up.den * (1 << COEF_BITS)))}


def _common(parts: list) -> tuple:
    """``(den, [numerator arrays])`` of :class:`Q` arrays on one denominator."""
    den = _lcm(parts)
    return den, [p.num * (den // p.den) for p in parts]


def _upper_rows(layers: list, k: int, coef: Q, relax: list) -> Q:
    """Rows ``[c | const]`` with ``coef . (z_f^k, d^k) <= c . x + const`` on the box.

    ``coef``: ``(r, 2 m_k)`` exact coefficients on ``(z_f, d)`` of layer ``k``."""
    r = coef.shape[0]
    const = Q.zeros(r)
    for j in range(k, -1, -1):
        lay = layers[j]
        if j == 0:
            rows = coef @ lay.first_ext
            return _stack([rows[:, :-1], Q(rows.num[:, -1:], rows.den) + Q(const.num[:, None], const.den)], 1)
        # onto (a_f, da) of layer j - 1 (the last column: the bias term); units with no
        # coefficient cost nothing
        cols = np.flatnonzero(np.any(coef.num != 0, axis=0))
        bits, limbs = lay.s_limbs
        if len(cols):
            prod = int_matmul(coef.num[:, cols], lay.s_ext.num[cols, :],
                              b_limbs=(bits, [x[cols] for x in limbs]))
        else:
            prod = np.zeros((r, lay.s_ext.shape[1]), dtype=object) * 0
        pden = coef.den * lay.s_ext.den
        const = _ceil(const + Q(prod[:, -1], pden))
        prod = prod[:, :-1]
        rx = relax[j - 1]
        w = lay.w
        ca, cd = prod[:, :w], prod[:, w:]
        ca_pos, cd_pos = ca >= 0, cd >= 0
        # a positive coefficient takes the upper line, a negative one the lower line
        sden, (su, sl, pu, pl, qu, ql) = rx["slopes"]
        alpha = ca * np.where(ca_pos, su, sl) + cd * np.where(cd_pos, pu, pl)
        beta = cd * np.where(cd_pos, qu, ql)
        iden, (tu, tl, ru, rl) = rx["icpt"]
        icpt = (ca * np.where(ca_pos, tu, tl) + cd * np.where(cd_pos, ru, rl)).sum(axis=1)
        const = _ceil(const + Q(icpt, pden * iden))
        # short coefficients before the next (costly) product: floor them onto the coarser grid
        # 2^-COEF_BITS; the error D (0 <= D < 2^-COEF_BITS) costs at most D . upper(z_f, d)
        coef = floor_to_grid(Q(np.concatenate([alpha, beta], axis=1), pden * sden), COEF_BITS)
        const = const + rx["charge"]
    raise AssertionError("unreachable")


def _interval(lay: _Layer, rx: dict | None, box: _Box, lo_v: Q | None) -> tuple:
    """Interval ranges of ``(z_f, d)`` of ``lay`` from the proven ranges of its inputs."""
    if rx is None:  # the input layer: x in the box, da = 0
        wp, wn, lo_in, hi_in = lay.first_pos, lay.first_neg, box.lo, box.hi
    else:
        wp, wn, lo_in, hi_in = lay.s_pos, lay.s_neg, lo_v, rx["v_up"]
    low = wp @ lo_in + wn @ hi_in
    up = wp @ hi_in + wn @ lo_in
    return _floor(low + lay.b2), _ceil(up + lay.b2)


def back_bounds(al: Aligned, lo: Q, hi: Q) -> dict:
    """Exact backward differential bounds of both logits and their difference on one box.

    Same result format as :func:`~.diff.propagate` (one box only): rows
    ``[coefficients | constant]`` ``"Lf", "Uf", "Lg", "Ug", "Ld", "Ud"`` and ``"box"``."""
    box = _Box(lo, hi)
    layers = _layers(al)
    relax: list = []
    lo_v = None
    last = len(layers) - 1
    for k, lay in enumerate(layers):
        m = lay.m
        eye = np.eye(m, dtype=np.int64).astype(object)
        zero = np.zeros((m, m), dtype=object) * 0
        if k == last:
            obj = np.block([[eye, zero], [eye, -eye], [zero, eye]])  # z_f, z_g = z_f - d, d
            both = Q(np.concatenate([obj, -obj]), 1)
            rows = _upper_rows(layers, k, both, relax)
            up = rows[:3 * m]
            low = -rows[3 * m:]
            up = _coarsen(up, box, upper=True)
            low = _coarsen(low, box, upper=False)
            return {"Uf": up[:m], "Ug": up[m:2 * m], "Ud": up[2 * m:],
                    "Lf": low[:m], "Lg": low[m:2 * m], "Ld": low[2 * m:], "box": box}
        ilo, ihi = _interval(lay, relax[-1] if relax else None, box, lo_v)
        lf, ld = ilo[:m], ilo[m:]
        uf, ud = ihi[:m], ihi[m:]
        if k == 0:  # z_g's own interval on the box (tighter than lf - ud)
            lg = _floor(lay.wg_pos @ box.lo + lay.wg_neg @ box.hi + lay.bg)
            ug = _ceil(lay.wg_pos @ box.hi + lay.wg_neg @ box.lo + lay.bg)
        else:
            lg, ug = _floor(lf - ud), _ceil(uf - ld)
            # back-substituted rows for every unit that may be positive in f or g: unstable units
            # for their lines, active ones because the next layer's interval ranges use theirs
            need = np.flatnonzero(np.asarray((uf.num > 0) | (ug.num > 0), dtype=bool))
            if len(need):
                obj = np.concatenate([np.concatenate([eye[need], zero[need]], 1),
                                      np.concatenate([zero[need], eye[need]], 1)])
                rows = _upper_rows(layers, k, Q(np.concatenate([obj, -obj]), 1), relax)
                top = _ceil(_range(rows, box, upper=True))
                n_obj, c = obj.shape[0], len(need)
                ub, lb = top[:n_obj], -top[n_obj:]
                lf, uf = _tighten(lf, uf, need, lb[:c], ub[:c])
                ld, ud = _tighten(ld, ud, need, lb[c:], ub[c:])
        # d = z_f - z_g and z_g = z_f - d: each pair of ranges tightens the third
        ld, ud = ld.maximum(lf - ug), ud.minimum(uf - lg)
        lg, ug = lg.maximum(lf - ud), ug.minimum(uf - ld)
        rx = _relax(lf, uf, lg, ug, ld, ud)
        relax.append(rx)
        # proven lower bounds of (a_f, da), for the next layer's interval ranges
        lo_v = _stack([_relu(lf), ld.neg_part().maximum(_relu(lf) - _relu(ug))], 0)
    raise AssertionError("unreachable")


def _tighten(lo: Q, hi: Q, idx: np.ndarray, new_lo: Q, new_hi: Q) -> tuple[Q, Q]:
    """``lo``/``hi`` with entries ``idx`` replaced by the better of old and new (all on the grid)."""
    if not len(idx):
        return lo, hi
    a, b, den = lo._align(new_lo)
    ln = a.copy()
    ln[idx] = np.maximum(ln[idx], b)
    c, d, den2 = hi._align(new_hi)
    hn = c.copy()
    hn[idx] = np.minimum(hn[idx], d)
    return Q(ln, den), Q(hn, den2)
