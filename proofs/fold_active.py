"""fold_active: a ReLU layer whose units are all stably active is linear and folds.

Rule (leo_verify/passes/fold.py, the all-active case).  ``x -> A -> relu -> U``
with ``A = (W, b)``, ``W`` (m x n), and the user ``U = (V, c)``, ``V`` (p x m),
computes ``y = V relu(W x + b) + c``.  Folding replaces ``A``, the ReLU and
``U`` by one affine reading x:

    y' = (V W) x + (V b + c).

Theorem.  For all real W, b, V, c and every x in R^n with

    W_i . x + b_i >= 0   for every unit i = 1..m           (all stably active)

we have y'(x) = y(x).

Dimensions: n = 3 inputs, m = 3 hidden units, p = 2 outputs.  The products
V W and V b are expanded as polynomials in the symbolic weights, exactly as the
pass computes them entrywise.

Why it generalises: relu(z_i) = z_i for z_i >= 0 (one scalar fact per unit), so
y = V (W x + b) + c, and V (W x + b) + c = (V W) x + (V b + c) is
associativity/distributivity of matrix products, true in every dimension.
The hypotheses are pointwise (any domain; x may be the output of earlier
layers) and later layers read y = y'.

Side checks: the hypotheses hold with every z_i > 0 and V, W non-zero
(not vacuous); mutants that forget the bias term V b, or that lose the
activity hypothesis of one unit, are sat.
"""
from __future__ import annotations

import z3

from _proof import Check, affine, main_exit, mat, named, relu, run, vec

N, M, P = 3, 3, 2


def matmul(a, b):
    return [[z3.Sum([a[i][k] * b[k][j] for k in range(len(b))]) for j in range(len(b[0]))]
            for i in range(len(a))]


def build():
    x, w, b = vec("x", N), mat("W", M, N), vec("b", M)
    v, c = mat("V", P, M), vec("c", P)
    z, defs = named("z", affine(w, x, b))          # z_i == W_i . x + b_i
    y = affine(v, [relu(zi) for zi in z], c)
    vw = matmul(v, w)
    vb_c = [vo + co for vo, co in zip(affine(v, b, [0] * P), c)]
    y_fold = affine(vw, x, vb_c)
    y_nobias = affine(vw, x, c)
    hyps = [zi >= 0 for zi in z]
    same = lambda a, a2: z3.And([p == q for p, q in zip(a, a2)])
    goal = same(y, y_fold)
    checks = [
        Check("non-vacuous: hyps with every z_i > 0, V[0,0] != 0, W[0,0] != 0",
              hyps + [zi > 0 for zi in z] + [v[0][0] != 0, w[0][0] != 0], "sat"),
        Check("mutant: fold without the bias term V b",
              hyps + [z3.Not(same(y, y_nobias))], "sat"),
        Check("mutant: unit 0 not known active",
              hyps[1:] + [z3.Not(goal)], "sat"),
    ]
    return defs, hyps, goal, checks


if __name__ == "__main__":
    defs, hyps, goal, checks = build()
    main_exit(run(rule="fold_active", doc=__doc__, definitions=defs, hypotheses=hyps, goal=goal,
                  expected="unsat", checks=checks))
