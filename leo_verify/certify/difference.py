"""``max |f - g|`` over a box for two networks whose weights differ slightly (not a kernel check).

The structural prover of ``check`` (:mod:`.structural`) matches every ReLU unit
of ``g`` to the unit of ``f`` with the nearest pre-activation form (a float
heuristic) and bounds the difference *exactly*: the forms of
:mod:`leo_verify.kernel.identity`, column bounds from proven bounds, and
propagation of the per-unit form error (ReLU is 1-Lipschitz).  The result is a
proven bound whatever the matching, so the heuristic only affects tightness.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from ..kernel.exact import Q
from ..kernel.identity import FORM_OPS, _Forms, forms, key_row
from ..kernel.intervals import affine_q

__all__ = ["bound_difference"]


def _maxabs_columns(st: _Forms, box, bounds: Mapping, original: Graph) -> Q:
    """Per column, a bound on |value|: inputs from the box, ``Y_u`` in ``[0, hi_u]``, 1."""
    lo, hi = box.exact_bounds()
    vals = [max(abs(a), abs(b)) for a, b in zip(lo, hi)]
    his = {}
    for relu, op in original.relus():
        pre = original.args(relu)[0]
        if pre in bounds:
            h = bounds[pre][1].fractions()
            for i, nid in enumerate(op.neurons):
                his[nid] = max(h[i], Fraction(0))
    for nid, c in sorted(st.col.items(), key=lambda t: t[1]):
        if nid not in his:
            raise ValueError(f"no proven upper bound for unit {nid!r}")
        vals.append(his[nid])
    vals.append(Fraction(1))
    return Q.of(vals)


def bound_difference(original: Graph, other: Graph, phase: Mapping[str, str], bounds: Mapping,
                     box) -> tuple[Fraction | None, str]:
    """A proven bound on ``max_x |other(x) - original(x)|`` over ``box``, or ``(None, why)``.

    Like :func:`check_identity`, but each ReLU unit of ``other`` is matched to
    the unit of ``original`` with the *nearest* pre-activation form, and the
    mismatch is carried as an error bound: with ``M`` the column bounds
    (inputs from the box, ``Y_u`` in ``[0, hi_u]`` from the proven ``bounds``),
    a unit whose form differs by ``D`` from its match's, plus an incoming error
    ``e``, outputs ``Y_u + err`` with ``|err| <= |D|.M + e`` (ReLU is
    1-Lipschitz).  Affine maps carry ``|W| e``.  Exact rationals throughout;
    rounding of the float weights in either network is what this absorbs.
    """
    if original.input_size != other.input_size or original.output_size != other.output_size:
        return None, "input or output sizes differ"
    st, fvals, table = forms(original, phase)
    try:
        m = _maxabs_columns(st, box, bounds, original)
    except ValueError as e:
        return None, str(e)
    # float copies of the original's unit forms for the nearest-form search
    keys = list(table)
    ref = np.array([key_row(k).floats() for k in keys]) if keys else np.zeros((0, st.width))
    mf = m.floats()
    err: dict = {}
    failure = []

    def relu(st_, op, name, pre: Q) -> Q:
        e_in = err.get(name + "#pre")
        out = np.zeros((op.size, st_.width), dtype=object)
        rows, errs = [], []
        pref = np.array([pre[i].floats() for i in range(op.size)]) if op.size else np.zeros((0, st_.width))
        for i in range(op.size):
            if not len(ref):
                failure.append(f"{name}: the original has no ReLU unit")
                return Q(out, 1)
            j = int(np.argmin(np.abs(ref - pref[i]) @ mf))
            nid, post = table[keys[j]]
            diff = key_row(keys[j]) - pre[i]
            d = (abs(diff) * m).sum()
            e = Fraction(int(d.num), d.den) + (e_in.fraction(i) if e_in is not None else 0)
            rows.append(post)
            errs.append(e)
        den = 1
        for _, dd in rows:
            den = den * dd // math.gcd(den, dd)
        for i, (num, dd) in enumerate(rows):
            out[i] = num * (den // dd)
        err[name] = Q.of(errs)
        return Q(out, den)

    # errors through non-ReLU nodes: run a parallel pass over `other`
    ctx = {"relu": relu}
    vals: dict = {}
    for name in other.nodes():
        op = other.op(name)
        fn = FORM_OPS.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no symbolic rule")
        args = other.args(name)
        if op.kind == "relu":
            err[name + "#pre"] = err.get(args[0])
        vals[name] = fn(st, op, name, [vals[a] for a in args], ctx)
        if op.kind == "input":
            ctx["identity_input"] = vals[name]
        elif op.kind == "affine":
            e = err.get(args[0])
            if e is not None:
                wq = affine_q(op)[0]
                err[name] = (abs(wq) @ e).reduce()
        elif op.kind == "add":
            es = [err[a] for a in args if a in err]
            if es:
                acc = es[0]
                for x in es[1:]:
                    acc = acc + x
                err[name] = acc
        elif op.kind == "output" and args[0] in err:
            err[name] = err[args[0]]
        if failure:
            return None, failure[0]
    fo, go = fvals[original.output_name], vals[other.output_name]
    d = (abs(fo - go) @ m)
    if other.output_name in err:
        d = d + err[other.output_name]
    return max(d.fractions()), ""
