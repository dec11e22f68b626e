"""wrong_drop_active: dropping a stably ACTIVE unit is wrong -- z3 finds a counterexample.

The deliberately wrong rule: apply drop_inactive's rewrite (delete row k of
``(W, b)`` and column k of ``V``) to a unit that is stably active,

    y  = V relu(W x + b) + c,      y' = V[:, -k] relu(W[-k] x + b[-k]) + c,

under the hypothesis W_k . x + b_k >= 0.  The query "hypothesis AND
y'(x) != y(x)" is expected to be SAT; the script prints the model as concrete
weights, biases and input, and re-evaluates both networks on it with exact
Fractions outside z3 (the counterexample counts only if that re-evaluation
shows z_k >= 0 and y != y').

Dimensions: n = 3 inputs, m = 3 hidden units, p = 2 outputs, k = 1 (as in
drop_inactive.py).

Why it generalises: the difference is y - y' = V[:, k] relu(z_k) = V[:, k] z_k,
non-zero whenever z_k > 0 and V[:, k] != 0, in any dimension; a
counterexample in these dimensions embeds in larger ones (pad with zero
weights).

Side checks: an unstable unit (no hypothesis at all) can't be dropped
either (sat), and with the correct hypothesis z_k <= 0 added the same query
becomes unsat (the encoding agrees with drop_inactive.py).
"""
from __future__ import annotations

from fractions import Fraction

import z3

from _proof import Check, affine, fmt, main_exit, mat, named, relu, run, value, vec

N, M, P, K = 3, 3, 2, 1


def _relu(q: Fraction) -> Fraction:
    return q if q > 0 else Fraction(0)


def _affine(w, x, b):
    return [sum((wi[j] * x[j] for j in range(len(x))), Fraction(0)) + bi for wi, bi in zip(w, b)]


def build():
    x, w, b = vec("x", N), mat("W", M, N), vec("b", M)
    v, c = mat("V", P, M), vec("c", P)
    z, defs = named("z", affine(w, x, b))          # z_i == W_i . x + b_i
    keep = [i for i in range(M) if i != K]
    y = affine(v, [relu(zi) for zi in z], c)
    y_drop = affine([[vo[i] for i in keep] for vo in v], [relu(z[i]) for i in keep], c)
    same = z3.And([p == q for p, q in zip(y, y_drop)])
    hyps = [z[K] >= 0]
    checks = [
        Check("unstable unit (no hypothesis) dropped", [z3.Not(same)], "sat"),
        Check("control: with z_k <= 0 added it is sound", hyps + [z[K] <= 0, z3.Not(same)],
              "unsat"),
    ]

    def on_model(model: z3.ModelRef) -> bool:
        val = lambda t: value(model, t)
        X = [val(t) for t in x]
        Wv, bv = [[val(t) for t in row] for row in w], [val(t) for t in b]
        Vv, cv = [[val(t) for t in row] for row in v], [val(t) for t in c]
        zz = _affine(Wv, X, bv)
        out = _affine(Vv, [_relu(q) for q in zz], cv)
        out_drop = _affine([[row[i] for i in keep] for row in Vv],
                           [_relu(zz[i]) for i in keep], cv)
        show = lambda xs: "[" + ", ".join(fmt(q) for q in xs) + "]"
        print(f"counterexample (z3 model, unit k = {K} dropped although active):")
        print(f"  x = {show(X)}")
        for i in range(M):
            print(f"  W[{i}] = {show(Wv[i])}   b[{i}] = {fmt(bv[i])}")
        for o in range(P):
            print(f"  V[{o}] = {show(Vv[o])}   c[{o}] = {fmt(cv[o])}")
        print("re-evaluated with exact Fractions:")
        print(f"  pre-activations z = {show(zz)}   (z_k = {fmt(zz[K])} >= 0)")
        print(f"  original   y  = {show(out)}")
        print(f"  dropped    y' = {show(out_drop)}")
        good = zz[K] >= 0 and out != out_drop
        print("  the outputs differ: counterexample confirmed" if good
              else "  re-evaluation does NOT confirm the counterexample")
        return good

    return defs, hyps, same, checks, on_model


if __name__ == "__main__":
    defs, hyps, goal, checks, on_model = build()
    main_exit(run(rule="wrong_drop_active", doc=__doc__, definitions=defs, hypotheses=hyps,
                  goal=goal, expected="sat", checks=checks, on_model=on_model))
