"""Float64 mirrors of the kernel's differential bounds (:mod:`leo_verify.kernel.diff` and
:mod:`leo_verify.kernel.diff_back`): fast and *not* sound, used only to steer the search.

Every leaf the search believes proven is re-proved by the kernel in exact arithmetic; a
disagreement costs a split, never soundness.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FloatNets", "float_bounds", "float_back_bounds", "rng_rows"]


class FloatNets:
    """The aligned chains in float64: per layer ``(Wf, bf, Wg, bg, dW, db)``."""

    def __init__(self, al):
        self.layers = []
        for wf, bf, wg, bg in al.layers:
            wf_, wg_ = wf.floats(), wg.floats()
            self.layers.append((wf_, bf.floats(), wg_, bg.floats(), wf_ - wg_, bf.floats() - bg.floats()))
        self.n = al.n_in
        # [a_f | da] -> [z_f | d]: z_f = Wf a_f + bf; d = dW a_f + Wg da + db
        self.stacked = [np.block([[wf, np.zeros_like(wg)], [dw, wg]])
                        for wf, _, wg, _, dw, _ in self.layers]


def rng_rows(e: np.ndarray, lo: np.ndarray, hi: np.ndarray, upper: bool) -> np.ndarray:
    """``max`` (``upper``) or ``min`` over the box of each row ``[c | d]``."""
    c, d = e[:, :-1], e[:, -1]
    cp, cn = np.maximum(c, 0), np.minimum(c, 0)
    return (cp @ hi + cn @ lo + d) if upper else (cp @ lo + cn @ hi + d)


# -- forward symbolic bounds (kernel.diff.propagate) --------------------------------------------

def _aff(w, b, lower, upper):
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    lo = wp @ lower + wn @ upper
    hi = wp @ upper + wn @ lower
    lo[:, -1] += b
    hi[:, -1] += b
    return lo, hi


def _r_up(e, lo, hi):
    m, M = rng_rows(e, lo, hi, False), rng_rows(e, lo, hi, True)
    out = e.copy()
    neg = M <= 0
    mid = (m < 0) & ~neg
    out[neg] = 0.0
    if mid.any():
        s = M[mid] / (M[mid] - m[mid])
        ch = e[mid].copy()
        ch[:, -1] -= m[mid]
        out[mid] = ch * s[:, None]
    return out


def _r_lo(e, lo, hi):
    m, M = rng_rows(e, lo, hi, False), rng_rows(e, lo, hi, True)
    keep = (m >= 0) | ((M > 0) & (M > -m))
    return np.where(keep[:, None], e, 0.0)


def _pick(cands: list, lo, hi, upper: bool) -> np.ndarray:
    vals = np.stack([rng_rows(c, lo, hi, upper) for c in cands])
    k = vals.argmin(0) if upper else vals.argmax(0)
    return np.stack(cands)[k, np.arange(cands[0].shape[0])]


def float_bounds(nets: FloatNets, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Forward symbolic bounds of both logits and their difference (rows ``[coefficients | constant]``)."""
    n = nets.n
    ident = np.concatenate([np.eye(n), np.zeros((n, 1))], axis=1)
    la_f = ua_f = la_g = ua_g = ident
    lda = uda = np.zeros((n, n + 1))
    last = len(nets.layers) - 1
    for k, (wf, bf, wg, bg, dw, db) in enumerate(nets.layers):
        lf, uf = _aff(wf, bf, la_f, ua_f)
        lg, ug = _aff(wg, bg, la_g, ua_g)
        gp, gn, dp, dn = np.maximum(wg, 0), np.minimum(wg, 0), np.maximum(dw, 0), np.minimum(dw, 0)
        ld = gp @ lda + gn @ uda + dp @ la_f + dn @ ua_f
        ud = gp @ uda + gn @ lda + dp @ ua_f + dn @ la_f
        ld[:, -1] += db
        ud[:, -1] += db
        ld = _pick([ld, lf - ug], lo, hi, False)
        ud = _pick([ud, uf - lg], lo, hi, True)
        if k == last:
            return {"Lf": lf, "Uf": uf, "Lg": lg, "Ug": ug, "Ld": ld, "Ud": ud}
        la_f, ua_f, la_g, ua_g = _r_lo(lf, lo, hi), _r_up(uf, lo, hi), _r_lo(lg, lo, hi), _r_up(ug, lo, hi)
        lof, upf = rng_rows(lf, lo, hi, False), rng_rows(uf, lo, hi, True)
        log_, upg = rng_rows(lg, lo, hi, False), rng_rows(ug, lo, hi, True)
        f_off, g_off, f_on, g_on = upf <= 0, upg <= 0, lof >= 0, log_ >= 0
        bu_up = _r_up(ud, lo, hi)
        bu_lo = -_r_up(-ld, lo, hi)
        sh_ld = ld.copy()
        sh_ld[:, -1] += log_
        sh_ud = ud.copy()
        sh_ud[:, -1] -= lof
        conds = [f_off, g_off, f_on & g_on, f_on, g_on]
        lda = _pick([np.select([c[:, None] for c in conds], [-ua_g, la_f, ld, sh_ld, ld], bu_lo), bu_lo],
                    lo, hi, False)
        uda = _pick([np.select([c[:, None] for c in conds], [-la_g, ua_f, ud, ud, sh_ud], bu_up), bu_up],
                    lo, hi, True)
    raise AssertionError("unreachable")


# -- backward (CROWN-style) differential bounds (kernel.diff_back) -----------------------------

def _relu_lines(l, u):
    """``(su, tu, sl)``: ``sl z <= relu(z) <= su z + tu`` on ``[l, u]`` (per unit)."""
    on, off = l >= 0, u <= 0
    mid = ~on & ~off
    span = np.where(mid, u - l, 1.0)
    su = np.where(on, 1.0, np.where(mid, u / span, 0.0))
    tu = np.where(mid, -su * l, 0.0)
    sl = np.where(on, 1.0, np.where(mid & (u >= -l), 1.0, 0.0))
    return su, tu, sl


def relaxation(lf, uf, lg, ug, ld, ud):
    """Per unit the lines of ``a_f = relu(z_f)`` and ``da = relu(z_f) - relu(z_f - d)`` in ``(z_f, d)``.

    Returns ``(upper, lower)``, each ``(p, q, r, s, t)``: ``a_f <= s z_f + t`` and
    ``da <= p z_f + q d + r`` (the lower lines likewise)."""
    fsu, ftu, fsl = _relu_lines(lf, uf)
    gsu, gtu, gsl = _relu_lines(lg, ug)
    # independent: upper(a_f) - lower(a_g), with z_g = z_f - d
    ind_u = (fsu - gsl, gsl, ftu)
    ind_l = (fsl - gsu, gsu, -gtu)
    # through d: min(d, 0) <= da <= max(d, 0)
    dsu, dtu, _ = _relu_lines(ld, ud)
    nsu, ntu, _ = _relu_lines(-ud, -ld)  # relu(-d) <= nsu (-d) + ntu
    dd_u = (np.zeros_like(dsu), dsu, dtu)
    dd_l = (np.zeros_like(nsu), nsu, -ntu)
    # choose per unit by the interval maximum (minimum) of each line over [lf, uf] x [ld, ud]
    def top(p, q, r):
        return np.maximum(p * lf, p * uf) + np.maximum(q * ld, q * ud) + r

    def bot(p, q, r):
        return np.minimum(p * lf, p * uf) + np.minimum(q * ld, q * ud) + r
    use_du = top(*dd_u) < top(*ind_u)
    use_dl = bot(*dd_l) > bot(*ind_l)
    up = tuple(np.where(use_du, a, b) for a, b in zip(dd_u, ind_u)) + (fsu, ftu)
    lo = tuple(np.where(use_dl, a, b) for a, b in zip(dd_l, ind_l)) + (fsl, np.zeros_like(fsl))
    return up, lo


def _upper_rows(nets: FloatNets, k: int, coef: np.ndarray, relax: list) -> np.ndarray:
    """Rows ``[c | const]`` with ``coef . (z_f^k, d^k) <= c x + const`` on the box."""
    const = np.zeros(coef.shape[0])
    for j in range(k, -1, -1):
        wf, bf, wg, bg, dw, db = nets.layers[j]
        m = wf.shape[0]
        alpha, beta = coef[:, :m], coef[:, m:]
        const = const + alpha @ bf + beta @ db
        if j == 0:
            return np.concatenate([alpha @ wf + beta @ dw, const[:, None]], axis=1)
        co = coef @ nets.stacked[j]
        w = wf.shape[1]
        ca, cd = co[:, :w], co[:, w:]  # on a_f and da of layer j - 1
        (pu, qu, ru, su, tu), (pl, ql, rl, sl, tl) = relax[j - 1]
        cap, cdp = ca >= 0, cd >= 0
        alpha = ca * np.where(cap, su, sl) + cd * np.where(cdp, pu, pl)
        beta = cd * np.where(cdp, qu, ql)
        const = const + (ca * np.where(cap, tu, tl) + cd * np.where(cdp, ru, rl)).sum(1)
        coef = np.concatenate([alpha, beta], axis=1)
    raise AssertionError("unreachable")


def float_back_bounds(nets: FloatNets, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Backward differential bounds: same result format as :func:`float_bounds` (the steps of
    :func:`leo_verify.kernel.diff_back.back_bounds`, without its rounding)."""
    relax: list = []
    last = len(nets.layers) - 1
    v_lo = v_up = None
    r = lambda v: np.maximum(v, 0.0)  # noqa: E731
    for k, layer in enumerate(nets.layers):
        wf, bf, wg, bg, dw, db = layer
        m = wf.shape[0]
        eye, zero = np.eye(m), np.zeros((m, m))
        if k == last:
            obj = np.block([[eye, zero], [eye, -eye], [zero, eye]])  # z_f, z_g = z_f - d, d
            rows = _upper_rows(nets, k, np.vstack([obj, -obj]), relax)
            up, low = rows[:3 * m], -rows[3 * m:]
            return {"Uf": up[:m], "Ug": up[m:2 * m], "Ud": up[2 * m:],
                    "Lf": low[:m], "Lg": low[m:2 * m], "Ld": low[2 * m:]}
        w, a_lo, a_hi = (np.vstack([wf, dw]), lo, hi) if k == 0 else (nets.stacked[k], v_lo, v_up)
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        b = np.concatenate([bf, db])
        il, iu = wp @ a_lo + wn @ a_hi + b, wp @ a_hi + wn @ a_lo + b
        lf, uf, ld, ud = il[:m], iu[:m], il[m:], iu[m:]
        if k == 0:
            wgp, wgn = np.maximum(wg, 0), np.minimum(wg, 0)
            lg, ug = wgp @ lo + wgn @ hi + bg, wgp @ hi + wgn @ lo + bg
        else:
            lg, ug = lf - ud, uf - ld
            need = np.flatnonzero((uf > 0) | (ug > 0))
            if need.size:
                obj = np.vstack([np.hstack([eye[need], zero[need]]), np.hstack([zero[need], eye[need]])])
                rows = _upper_rows(nets, k, np.vstack([obj, -obj]), relax)
                top = rng_rows(rows, lo, hi, True)
                c = need.size
                ub, lb = top[:2 * c], -top[2 * c:]
                lf[need], uf[need] = np.maximum(lf[need], lb[:c]), np.minimum(uf[need], ub[:c])
                ld[need], ud[need] = np.maximum(ld[need], lb[c:]), np.minimum(ud[need], ub[c:])
        ld, ud = np.maximum(ld, lf - ug), np.minimum(ud, uf - lg)
        lg, ug = np.maximum(lg, lf - ud), np.minimum(ug, uf - ld)
        relax.append(relaxation(lf, uf, lg, ug, ld, ud))
        v_lo = np.concatenate([r(lf), np.maximum(np.minimum(ld, 0.0), r(lf) - r(ug))])
        v_up = np.concatenate([r(uf), np.minimum(r(ud), r(uf) - r(lg))])
    raise AssertionError("unreachable")
