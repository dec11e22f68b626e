"""merge_proportional: a unit whose weights and bias are c > 0 times another's is merged into it.

Rule (leo_verify/passes/proportional.py).  Layer L is ``h = relu(W x + b)``;
units u and v with ``(W_v, b_v) = c (W_u, b_u)``, so ``z_v = c z_u`` at every
input.  The user ``y = V h + d`` becomes ``y' = V' h' + d`` where v is deleted
and column u of V' is ``V[:, u] + c V[:, v]``.

Theorem.  For all real V, d, all z_u and every c > 0 with z_v = c z_u,
y'(x) = y(x): ``relu(c z) = c relu(z)`` for c > 0, so
``V_u relu(z_u) + V_v relu(z_v) = (V_u + c V_v) relu(z_u)``.  No stability
hypothesis: u may be unstable.  The other units' terms are the same terms, so
n, the layer width and p do not matter; the statement is pointwise (any domain,
any earlier layers).  Here: two outputs, u, v and one other unit w.

Side checks: non-vacuous (c > 0, z_u > 0, V[0, v] != 0; and z_u < 0); the
mutant with c < 0 (``relu(-z) != -relu(z)``) is sat, so a negative multiple
must never be merged.
"""
from __future__ import annotations

import z3

from _proof import Check, main_exit, relu, run

P = 2


def build():
    zu, zw, c = z3.Real("z_u"), z3.Real("z_w"), z3.Real("c")
    zv = z3.Real("z_v")
    V = [[z3.Real(f"V_{i}_{j}") for j in ("u", "v", "w")] for i in range(P)]
    d = [z3.Real(f"d_{i}") for i in range(P)]
    defs = []
    y = [V[i][0] * relu(zu) + V[i][1] * relu(zv) + V[i][2] * relu(zw) + d[i] for i in range(P)]
    y2 = [(V[i][0] + c * V[i][1]) * relu(zu) + V[i][2] * relu(zw) + d[i] for i in range(P)]
    same = z3.And([a == b for a, b in zip(y, y2)])
    hyps = [c > 0, zv == c * zu]               # (W_v, b_v) = c (W_u, b_u): z_v = c z_u
    checks = [
        Check("non-vacuous: c > 0, z_u > 0, V[0,v] != 0", defs + hyps + [zu > 0, V[0][1] != 0], "sat"),
        Check("non-vacuous: c > 0, z_u < 0", defs + hyps + [zu < 0], "sat"),
        Check("mutant: c < 0 merged the same way", [c < 0, zv == c * zu, z3.Not(same)], "sat"),
    ]
    return defs, hyps, same, checks


if __name__ == "__main__":
    defs, hyps, goal, checks = build()
    main_exit(run(rule="merge_proportional", doc=__doc__, definitions=defs, hypotheses=hyps, goal=goal,
                  expected="unsat", checks=checks))
