"""drop_inactive: deleting a stably inactive ReLU unit preserves the outputs.

Rule (leo_verify/passes/drop.py).  Layer L is ``h = relu(W x + b)`` with
``W`` (m x n), ``b`` (m); its user is the affine ``y = V h + c`` with ``V``
(p x m), ``c`` (p).  Dropping unit k deletes row k of ``(W, b)`` and column k
of ``V``:  ``y' = V[:, -k] relu(W[-k] x + b[-k]) + c``.

Theorem.  For all real W, b, V, c and every x in R^n with

    W_k . x + b_k <= 0                                  (k stably inactive)

we have y'(x) = y(x).  No hypothesis on the other units (they may be unstable).

Dimensions: n = 3 inputs, m = 3 hidden units, p = 2 outputs, k = 1 (a middle
unit, so that a misaligned row/column deletion would show).

Why it generalises: y - y' = V[:, k] relu(z_k) exactly (the other terms are the
same terms), and relu(z_k) = 0 when z_k <= 0; x enters only through the scalar
z_k, so neither n, m, p nor k matter.  The hypothesis is pointwise, so it covers
any domain (box or not) on which the fact holds, and x may be the output of any
earlier layers; a later layer reads y = y' and so computes the same values.
Dropping a set of units is this rule applied once per unit (removing a unit
changes no other unit's pre-activation).

Side checks: the hypotheses hold with V[:, k] != 0, z_k < 0 and the other
units active (not vacuous); a mutant that deletes row k but column k+1 is sat.
"""
from __future__ import annotations

import z3

from _proof import Check, affine, main_exit, mat, named, relu, run, vec

N, M, P, K = 3, 3, 2, 1


def build():
    x, w, b = vec("x", N), mat("W", M, N), vec("b", M)
    v, c = mat("V", P, M), vec("c", P)
    z, defs = named("z", affine(w, x, b))          # z_i == W_i . x + b_i

    def dropped(row, column):
        """Delete row ``row`` of (W, b) and column ``column`` of V."""
        rows = [i for i in range(M) if i != row]   # the units left: pre-activations z_rows
        cols = [i for i in range(M) if i != column]
        return affine([[vo[i] for i in cols] for vo in v], [relu(z[i]) for i in rows], c)

    y = affine(v, [relu(zi) for zi in z], c)
    same = lambda a, a2: z3.And([p == q for p, q in zip(a, a2)])
    hyps = [z[K] <= 0]
    goal = same(y, dropped(K, K))
    checks = [
        Check("non-vacuous: hyps, z_k < 0, V[0,k] != 0, other units > 0",
              hyps + [z[K] < 0, v[0][K] != 0] + [z[i] > 0 for i in range(M) if i != K], "sat"),
        Check("mutant: delete row k but column k+1",
              hyps + [z3.Not(same(y, dropped(K, K + 1)))], "sat"),
    ]
    return defs, hyps, goal, checks


if __name__ == "__main__":
    defs, hyps, goal, checks = build()
    main_exit(run(rule="drop_inactive", doc=__doc__, definitions=defs, hypotheses=hyps, goal=goal,
                  expected="unsat", checks=checks))
