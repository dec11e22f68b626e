"""fold_mixed: a layer of stable units, some active and some inactive, folds.

Rule (leo_verify/passes/fold.py as it runs in practice: every unit proven
stable, at least one active).  ``x -> A -> relu -> U`` with ``A = (W, b)``,
``W`` (m x n), user ``U = (V, c)``, ``V`` (p x m): ``y = V relu(W x + b) + c``.
With ``act`` the active units, ``dead`` the inactive ones and ``D`` the 0/1
diagonal of ``act``, the pass does one of (all three are checked here):

* composed into users:  y1 = (V[:, act] W[act]) x + (V[:, act] b[act] + c)
  (drop + fold in one step: the inactive units vanish with the ReLU);
* relu removed, inactive rows of A zeroed:  y2 = V (D W x + D b) + c;
* relu replaced by the exact 0/1 diagonal affine:  y3 = V (D (W x + b)) + c.

Theorem.  For all real W, b, V, c and every x in R^n with

    W_i . x + b_i >= 0  for i in act,    W_i . x + b_i <= 0  for i in dead,

we have y1(x) = y2(x) = y3(x) = y(x).

Dimensions: n = 3 inputs, m = 3 hidden units with act = {0, 2}, dead = {1}
(interleaved, so that a misaligned selection would show), p = 2 outputs.

Why it generalises: per unit, relu(z_i) = z_i (active) or 0 (inactive), i.e.
relu(z) = D z; the rest is matrix algebra (V D W = V[:, act] W[act],
V D b = V[:, act] b[act]) that holds in every dimension and for every split
act/dead.  Hypotheses are pointwise; later layers read y = y1 = y2 = y3.

Side checks: the hypotheses hold with strict signs and non-zero weights on
the dead unit's column (not vacuous); mutants that fold the dead unit as if
it were active, or forget the bias term, are sat.
"""
from __future__ import annotations

import z3

from _proof import Check, affine, dot, main_exit, mat, named, relu, run, vec

N, M, P = 3, 3, 2
ACT, DEAD = [0, 2], [1]


def compose(v, c, w, b, act, *, bias=True):
    """fold.py's composed user ``(V[:, act] W[act], V[:, act] b[act] + c)``.

    z3 terms or Fractions alike; ``bias=False`` leaves out ``V[:, act] b[act]``.
    """
    va = [[vo[i] for i in act] for vo in v]
    wa, ba = [w[i] for i in act], [b[i] for i in act]
    w_new = [[dot(vo, [row[j] for row in wa]) for j in range(len(w[0]))] for vo in va]
    c_new = [co + dot(vo, ba) if bias else co for vo, co in zip(va, c)]
    return w_new, c_new


def _apply(wc, x):
    w_new, c_new = wc
    return affine(w_new, x, c_new)


def build():
    x, w, b = vec("x", N), mat("W", M, N), vec("b", M)
    v, c = mat("V", P, M), vec("c", P)
    z, defs = named("z", affine(w, x, b))          # z_i == W_i . x + b_i
    y = affine(v, [relu(zi) for zi in z], c)

    zero = z3.RealVal(0)
    wz = [w[i] if i in ACT else [zero] * N for i in range(M)]       # inactive rows zeroed
    bz = [b[i] if i in ACT else zero for i in range(M)]
    y1 = _apply(compose(v, c, w, b, ACT), x)
    y2 = affine(v, affine(wz, x, bz), c)
    y3 = affine(v, [z[i] if i in ACT else zero * z[i] for i in range(M)], c)
    y_all = _apply(compose(v, c, w, b, range(M)), x)
    y_nobias = _apply(compose(v, c, w, b, ACT, bias=False), x)

    hyps = [z[i] >= 0 for i in ACT] + [z[i] <= 0 for i in DEAD]
    same = lambda a, a2: z3.And([p == q for p, q in zip(a, a2)])
    goal = z3.And(same(y, y1), same(y, y2), same(y, y3))
    checks = [
        Check("non-vacuous: strict signs, V[:,dead] != 0, W[act] != 0",
              [z[i] > 0 for i in ACT] + [z[i] < 0 for i in DEAD]
              + [v[o][i] != 0 for o in range(P) for i in DEAD]
              + [w[i][0] != 0 for i in ACT], "sat"),
        Check("mutant: dead unit folded as if active",
              hyps + [z3.Not(same(y, y_all))], "sat"),
        Check("mutant: composed without the bias term V[:,act] b[act]",
              hyps + [z3.Not(same(y, y_nobias))], "sat"),
    ]
    return defs, hyps, goal, checks


if __name__ == "__main__":
    defs, hyps, goal, checks = build()
    main_exit(run(rule="fold_mixed", doc=__doc__, definitions=defs, hypotheses=hyps, goal=goal,
                  expected="unsat", checks=checks))
